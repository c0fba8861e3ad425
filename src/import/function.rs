//! `AWS::Serverless::Function` → `Function`.

use std::{collections::BTreeMap, path::Path};

use serde_yaml::Value;

use super::{Ctx, names, template::get};
use crate::api::{Function, FunctionCode, FunctionRuntime, FunctionScaling, FunctionSpec};

/// Lambda's defaults, which SAM leaves to Lambda (kfaas's Function defaults are the same).
const DEFAULT_TIMEOUT_SECONDS: i32 = 3;
const DEFAULT_MEMORY_MB: i32 = 128;
const DEFAULT_PORT: i32 = 8080;
const DEFAULT_MAX_REPLICAS: i32 = 10;
const DEFAULT_IDLE_TIMEOUT_SECONDS: i32 = 60;

/// The kfaas object name of a function: its `FunctionName` when that resolves, else its
/// logical ID, as a DNS label.
pub fn object_name(ctx: &Ctx, id: &str, props: &Value) -> String {
    get(props, "FunctionName")
        .and_then(|v| ctx.resolver.string(v).ok())
        .map(|n| names::kebab(&n))
        .unwrap_or_else(|| names::kebab(id))
}

/// Converts one function; `None` (with a warning saying why) when it cannot run on kfaas.
pub fn convert(ctx: &mut Ctx, id: &str, props: &Value) -> Option<Function> {
    let name = object_name(ctx, id, props);
    let mut spec = FunctionSpec {
        port: DEFAULT_PORT,
        timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
        memory_mb: DEFAULT_MEMORY_MB,
        scaling: FunctionScaling {
            max_replicas: DEFAULT_MAX_REPLICAS,
            idle_timeout_seconds: DEFAULT_IDLE_TIMEOUT_SECONDS,
            ..FunctionScaling::default()
        },
        ..FunctionSpec::default()
    };

    let image = get(props, "PackageType")
        .and_then(|v| ctx.resolver.string(v).ok())
        .is_some_and(|p| p == "Image");
    if image {
        let Some(uri) = get(props, "ImageUri") else {
            ctx.warn(id, "ImageUri", "not converted: an Image function needs ImageUri (build and push the image, then pass its URI)");
            return None;
        };
        match ctx.resolver.string(uri) {
            Ok(uri) => spec.image = Some(uri),
            Err(e) => {
                ctx.warn(id, "ImageUri", format!("not converted: {e}"));
                return None;
            }
        }
    } else {
        let runtime = runtime(ctx, id, props)?;
        spec.runtime = Some(runtime);
        if runtime != FunctionRuntime::Provided {
            let Some(handler) = get(props, "Handler") else {
                ctx.warn(id, "Handler", "not converted: a zip function needs Handler");
                return None;
            };
            match ctx.resolver.string(handler) {
                Ok(h) => spec.handler = Some(h),
                Err(e) => {
                    ctx.warn(id, "Handler", format!("not converted: {e}"));
                    return None;
                }
            }
        }
        spec.code = Some(code(ctx, id, props, runtime, spec.handler.as_deref())?);
    }

    if let Some(v) = get(props, "Timeout") {
        match ctx.resolver.integer(v) {
            Ok(t) => spec.timeout_seconds = clamp(ctx, id, "Timeout", t, 1, 900),
            Err(e) => ctx.warn(id, "Timeout", format!("ignored: {e}")),
        }
    }
    if let Some(v) = get(props, "MemorySize") {
        match ctx.resolver.integer(v) {
            Ok(m) => spec.memory_mb = clamp(ctx, id, "MemorySize", m, 128, 10240),
            Err(e) => ctx.warn(id, "MemorySize", format!("ignored: {e}")),
        }
    }
    spec.environment = environment(ctx, id, props);
    scaling(ctx, id, props, &mut spec.scaling);

    for (property, why) in [
        (
            "Layers",
            "layers are not fetched: put the layer's files into the code folder",
        ),
        (
            "VpcConfig",
            "the function runs in the cluster's (or this machine's) network",
        ),
        (
            "EphemeralStorage",
            "the instance's /tmp is the pod's (or this machine's)",
        ),
        ("FileSystemConfigs", "EFS mounts are not converted"),
        ("SnapStart", "not converted"),
    ] {
        if get(props, property).is_some() {
            ctx.warn(id, property, format!("ignored: {why}"));
        }
    }
    Some(Function::new(&name, spec))
}

fn runtime(ctx: &mut Ctx, id: &str, props: &Value) -> Option<FunctionRuntime> {
    let Some(value) = get(props, "Runtime") else {
        ctx.warn(
            id,
            "Runtime",
            "not converted: no Runtime (set it on the function or in Globals.Function)",
        );
        return None;
    };
    let runtime = match ctx.resolver.string(value) {
        Ok(r) => r,
        Err(e) => {
            ctx.warn(id, "Runtime", format!("not converted: {e}"));
            return None;
        }
    };
    if runtime.starts_with("nodejs") {
        Some(FunctionRuntime::Nodejs)
    } else if runtime.starts_with("python3") {
        Some(FunctionRuntime::Python)
    } else if runtime.starts_with("provided") {
        if let Some(method) = get(props, "Metadata")
            .and_then(|m| get(m, "BuildMethod"))
            .and_then(Value::as_str)
        {
            ctx.warn(id, "Metadata.BuildMethod", format!("{method}: kfaas does not build code; put the built executable `bootstrap` into the code folder (sam build does)"));
        }
        Some(FunctionRuntime::Provided)
    } else {
        ctx.warn(id, "Runtime", format!("not converted: runtime {runtime} is not supported by kfaas (nodejs, python3.x, provided*); package it as an image or a provided bootstrap"));
        None
    }
}

fn code(
    ctx: &mut Ctx,
    id: &str,
    props: &Value,
    runtime: FunctionRuntime,
    handler: Option<&str>,
) -> Option<FunctionCode> {
    if let Some(inline) = get(props, "InlineCode") {
        let source = match ctx.resolver.string(inline) {
            Ok(s) => s,
            Err(e) => {
                ctx.warn(id, "InlineCode", format!("not converted: {e}"));
                return None;
            }
        };
        // The handler `index.handler` loads file `index` with the runtime's extension.
        let module = handler
            .and_then(|h| h.rsplit_once('.'))
            .map(|(file, _)| file)
            .unwrap_or("index");
        let file = match runtime {
            FunctionRuntime::Nodejs => format!("{module}.js"),
            FunctionRuntime::Python => format!("{module}.py"),
            FunctionRuntime::Provided => "bootstrap".to_owned(),
        };
        return Some(FunctionCode {
            inline: Some(BTreeMap::from([(file, source)])),
            ..FunctionCode::default()
        });
    }
    let uri = match get(props, "CodeUri") {
        None => {
            ctx.warn(
                id,
                "CodeUri",
                "no CodeUri: using the template's folder as the code",
            );
            ".".to_owned()
        }
        Some(Value::Mapping(m)) if !super::template::is_intrinsic(&Value::Mapping(m.clone())) => {
            ctx.warn(id, "CodeUri", "not converted: code in S3 (Bucket/Key) cannot be fetched; point CodeUri at the code folder");
            return None;
        }
        Some(v) => match ctx.resolver.string(v) {
            Ok(u) => u,
            Err(e) => {
                ctx.warn(id, "CodeUri", format!("not converted: {e}"));
                return None;
            }
        },
    };
    if uri.starts_with("s3://") || uri.ends_with(".zip") || uri.ends_with(".jar") {
        ctx.warn(
            id,
            "CodeUri",
            format!(
                "not converted: {uri} is an archive or in S3; point CodeUri at the code folder"
            ),
        );
        return None;
    }
    let folder = ctx.options.template_dir.join(&uri);
    let path = relative(&ctx.options.output_dir, &folder);
    Some(FunctionCode {
        path: Some(path),
        ..FunctionCode::default()
    })
}

fn environment(ctx: &mut Ctx, id: &str, props: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(vars)) = get(props, "Environment").and_then(|e| get(e, "Variables"))
    else {
        return out;
    };
    for (key, value) in vars {
        let Some(key) = key.as_str() else { continue };
        let property = format!("Environment.Variables.{key}");
        match ctx.resolver.resolve(value) {
            Ok(Value::Null) => {}
            Ok(v) => match super::intrinsic::scalar_string(&v) {
                Ok(s) => {
                    out.insert(key.to_owned(), s);
                }
                Err(e) => ctx.warn(id, &property, format!("not converted: {e}")),
            },
            Err(e) => ctx.warn(id, &property, format!("not converted: {e}; set it by hand")),
        }
    }
    out
}

/// Lambda's concurrency settings as scaling bounds: a Lambda instance serves one invocation at a
/// time, so reserved concurrency caps instances (`maxReplicas`) and provisioned concurrency keeps
/// that many warm (`minReplicas`).
fn scaling(ctx: &mut Ctx, id: &str, props: &Value, scaling: &mut FunctionScaling) {
    if let Some(v) = get(props, "ReservedConcurrentExecutions") {
        match ctx.resolver.integer(v) {
            Ok(0) => {
                ctx.warn(
                    id,
                    "ReservedConcurrentExecutions",
                    "0 turns the function off on AWS; kfaas keeps maxReplicas 1",
                );
                scaling.max_replicas = 1;
            }
            Ok(n) => {
                scaling.max_replicas = clamp(ctx, id, "ReservedConcurrentExecutions", n, 1, 1000)
            }
            Err(e) => ctx.warn(id, "ReservedConcurrentExecutions", format!("ignored: {e}")),
        }
    }
    if let Some(v) = get(props, "ProvisionedConcurrencyConfig")
        .and_then(|p| get(p, "ProvisionedConcurrentExecutions"))
    {
        match ctx.resolver.integer(v) {
            Ok(n) => {
                let n = clamp(ctx, id, "ProvisionedConcurrencyConfig", n, 0, 1000);
                scaling.min_replicas = n;
                scaling.max_replicas = scaling.max_replicas.max(n);
            }
            Err(e) => ctx.warn(id, "ProvisionedConcurrencyConfig", format!("ignored: {e}")),
        }
    }
}

fn clamp(ctx: &mut Ctx, id: &str, property: &str, value: i64, min: i32, max: i32) -> i32 {
    let clamped = value.clamp(i64::from(min), i64::from(max));
    if clamped != value {
        ctx.warn(
            id,
            property,
            format!("{value} is outside {min}..{max}: using {clamped}"),
        );
    }
    i32::try_from(clamped).unwrap_or(min)
}

/// `to` relative to the folder `from` (both absolute), `./`-prefixed as kfaas examples write it.
pub fn relative(from: &Path, to: &Path) -> String {
    let normal = |p: &Path| -> Vec<String> {
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                std::path::Component::CurDir => {}
                other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
            }
        }
        parts
    };
    let (from, to) = (normal(from), normal(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(to[common..].iter().cloned());
    if parts.is_empty() {
        ".".into()
    } else if parts[0] == ".." {
        parts.join("/")
    } else {
        format!("./{}", parts.join("/"))
    }
}
