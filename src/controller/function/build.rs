//! Pure builders: a [`Workload`] becomes the Deployment, Service and code ConfigMap it runs as.
//!
//! The gateway relies on what is built here (src/workload.rs): the function label on the
//! Service (its EndpointSlices inherit it), the port named `invoke`, and a Deployment it scales
//! through the `scale` subresource. The Deployment is built without `replicas`: the create path
//! sets the first count, and later applies leave the autoscaler's count alone.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
            HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use sha2::{Digest, Sha256};

use super::workload::{CodeSource, Program, Workload};
use crate::{
    api::FunctionRuntime,
    runtime::INVOKE_PATH,
    workload::{
        CONCURRENCY_ANNOTATION, FUNCTION_LABEL, INVOKE_PORT_NAME, MANAGED_BY, RUNTIME_INVOKE_PORT,
        code_config_map_name, deployment_name, service_name,
    },
};

/// Where the code folder is mounted in a function's container (LAMBDA_TASK_ROOT on AWS).
pub const CODE_DIR: &str = "/var/task";
/// Pod-template annotation holding a digest of the code, so a code change rolls the pods.
pub const CODE_HASH_ANNOTATION: &str = "kfaas.dev/code-hash";
/// Address a Lambda image's runtime client reaches the sidecar's Runtime API on.
pub const SIDECAR_RUNTIME_API: &str = "127.0.0.1:9001";

const CODE_VOLUME: &str = "code";

/// Settings of the controller that shape every function's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// Image holding `kfaas` and the language bootstraps.
    pub runtime_image: String,
}

/// Labels on every object made for a function.
pub fn labels(function: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FUNCTION_LABEL.to_owned(), function.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ])
}

fn metadata(name: &str, w: &Workload, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(w.namespace.clone()),
        labels: Some(labels(&w.name)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap of a `code.inline` function (None for other code sources).
pub fn code_config_map(w: &Workload, owner: &OwnerReference) -> Option<ConfigMap> {
    let files = w.inline_code()?;
    let data = files
        .iter()
        .enumerate()
        .map(|(i, (path, content))| (config_map_key(i, path), content.clone()))
        .collect();
    Some(ConfigMap {
        metadata: metadata(&code_config_map_name(&w.name), w, owner),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// A ConfigMap key for a code file. Keys allow only `[-._a-zA-Z0-9]`, so a file in a subfolder
/// (`lib/util.js`) gets a numbered key and the volume's items map it back to its path.
fn config_map_key(index: usize, path: &str) -> String {
    let valid = !path.is_empty()
        && path.len() <= 253
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid {
        return path.to_owned();
    }
    let cleaned: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    format!("{index}.{cleaned}")
}

/// Digest of the code files, to roll the pods when the code changes.
pub fn code_hash<'a>(files: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut hasher = Sha256::new();
    for (path, content) in files {
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The function's Service: selects its pods, port `invoke`.
pub fn service(w: &Workload, owner: &OwnerReference) -> Service {
    Service {
        metadata: metadata(service_name(&w.name), w, owner),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                FUNCTION_LABEL.to_owned(),
                w.name.clone(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some(INVOKE_PORT_NAME.to_owned()),
                port: w.invoke_port(),
                target_port: Some(IntOrString::String(INVOKE_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where the function is invoked inside the cluster, through its Service.
pub fn invoke_url(w: &Workload) -> String {
    let host = format!("{}.{}.svc", service_name(&w.name), w.namespace);
    let port = w.invoke_port();
    if w.is_lambda() {
        format!("http://{host}:{port}{INVOKE_PATH}")
    } else {
        format!("http://{host}:{port}/")
    }
}

/// The function's Deployment, without `replicas` (see the module docs). `code_hash` is the
/// digest of the code when known; it goes on the pod template.
pub fn deployment(
    w: &Workload,
    config: &BuildConfig,
    owner: &OwnerReference,
    code_hash: Option<&str>,
) -> Deployment {
    let mut meta = metadata(deployment_name(&w.name), w, owner);
    meta.annotations = Some(BTreeMap::from([(
        CONCURRENCY_ANNOTATION.to_owned(),
        w.concurrency.to_string(),
    )]));
    let pod_annotations =
        code_hash.map(|h| BTreeMap::from([(CODE_HASH_ANNOTATION.to_owned(), h.to_owned())]));
    Deployment {
        metadata: meta,
        spec: DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    FUNCTION_LABEL.to_owned(),
                    w.name.clone(),
                )])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&w.name)),
                    annotations: pod_annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(w, config)),
            },
            // Every code or env change makes a ReplicaSet; keep a few for `kubectl rollout undo`.
            revision_history_limit: Some(3),
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_spec(w: &Workload, config: &BuildConfig) -> PodSpec {
    let containers = match &w.program {
        Program::RuntimeLambda {
            runtime,
            handler,
            command,
            ..
        } => vec![runtime_container(
            w,
            config,
            *runtime,
            handler.as_deref(),
            command,
        )],
        Program::RuntimeHttp { command, port, .. } => {
            vec![http_container(
                w,
                &config.runtime_image,
                command,
                *port,
                true,
            )]
        }
        Program::ImageLambda { image } => {
            vec![sidecar_container(w, config), image_container(w, image)]
        }
        Program::ImageHttp { image, port } => vec![http_container(w, image, &[], *port, false)],
    };
    let volumes = code_volume(w).map(|v| vec![v]);
    PodSpec {
        containers,
        volumes,
        // Service links would put every Service of the namespace into the function's env.
        enable_service_links: Some(false),
        // A function has no business with the cluster's API (nor has a Lambda with AWS's).
        automount_service_account_token: Some(false),
        // Long enough for an invocation in flight to finish after SIGTERM.
        termination_grace_period_seconds: Some(i64::from(w.timeout_seconds) + 5),
        ..PodSpec::default()
    }
}

fn code_volume(w: &Workload) -> Option<Volume> {
    let source = match &w.program {
        Program::RuntimeLambda { code, .. } | Program::RuntimeHttp { code, .. } => code,
        Program::ImageLambda { .. } | Program::ImageHttp { .. } => return None,
    };
    let config_map = match source {
        CodeSource::Inline(files) => ConfigMapVolumeSource {
            name: code_config_map_name(&w.name),
            items: Some(
                files
                    .keys()
                    .enumerate()
                    .map(|(i, path)| KeyToPath {
                        key: config_map_key(i, path),
                        path: path.clone(),
                        // A `bootstrap` (runtime provided) must be executable.
                        mode: Some(0o755),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            ..ConfigMapVolumeSource::default()
        },
        CodeSource::ConfigMap(name) => ConfigMapVolumeSource {
            name: name.clone(),
            default_mode: Some(0o755),
            ..ConfigMapVolumeSource::default()
        },
    };
    Some(Volume {
        name: CODE_VOLUME.to_owned(),
        config_map: Some(config_map),
        ..Volume::default()
    })
}

fn code_mount() -> VolumeMount {
    VolumeMount {
        name: CODE_VOLUME.to_owned(),
        mount_path: CODE_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Kubernetes expands `$(VAR)` in env values, command and args; `$$` keeps a user's `$` as is.
fn escape(value: &str) -> String {
    value.replace('$', "$$")
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// POD_IP from the downward API: the runtime binds the pod's address, never 0.0.0.0 (pods of a
/// process node share one network namespace).
fn pod_ip_env() -> EnvVar {
    EnvVar {
        name: "POD_IP".to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The env of `kfaas runtime` that every mode shares.
fn runtime_env(w: &Workload) -> Vec<EnvVar> {
    vec![
        pod_ip_env(),
        env("KFAAS_LISTEN", format!("$(POD_IP):{RUNTIME_INVOKE_PORT}")),
        env("KFAAS_FUNCTION_NAME", w.name.clone()),
        env("KFAAS_MEMORY_MB", w.memory_mb.to_string()),
        env("KFAAS_TIMEOUT_SECONDS", w.timeout_seconds.to_string()),
        env("KFAAS_CONCURRENCY", w.concurrency.to_string()),
    ]
}

fn invoke_port(port: i32) -> Vec<ContainerPort> {
    vec![ContainerPort {
        name: Some(INVOKE_PORT_NAME.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }]
}

fn readyz_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readyz".to_owned()),
            port: IntOrString::String(INVOKE_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        // Scale from zero waits for this: probe often.
        period_seconds: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn tcp_probe() -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(INVOKE_PORT_NAME.to_owned()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn memory_limit(w: &Workload) -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(format!("{}Mi", w.memory_mb)),
        )])),
        ..ResourceRequirements::default()
    }
}

fn runtime_name(runtime: FunctionRuntime) -> &'static str {
    match runtime {
        FunctionRuntime::Nodejs => "nodejs",
        FunctionRuntime::Python => "python",
        FunctionRuntime::Provided => "provided",
    }
}

/// `KFAAS_ENV`: the function's environment, one KEY=VALUE a line. It reaches the handler
/// after the runtime's Lambda variables, so a user's `AWS_REGION` wins. A value holding a
/// newline (a PEM key) cannot be a line: it goes into the container's own env instead, which
/// the handler inherits.
fn kfaas_env(environment: &BTreeMap<String, String>) -> (String, Vec<EnvVar>) {
    let (multiline, lines): (Vec<_>, Vec<_>) =
        environment.iter().partition(|(_, v)| v.contains('\n'));
    let lines = lines
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let inherited = multiline
        .into_iter()
        .map(|(k, v)| env(k, escape(v)))
        .collect();
    (lines, inherited)
}

fn runtime_container(
    w: &Workload,
    config: &BuildConfig,
    runtime: FunctionRuntime,
    handler: Option<&str>,
    command: &[String],
) -> Container {
    let mut env = runtime_env(w);
    env.push(self::env("KFAAS_RUNTIME", runtime_name(runtime)));
    if let Some(handler) = handler {
        env.push(self::env("KFAAS_HANDLER", escape(handler)));
    }
    env.push(self::env("KFAAS_CODE", CODE_DIR));
    let (lines, inherited) = kfaas_env(&w.environment);
    env.push(self::env("KFAAS_ENV", escape(&lines)));
    env.extend(inherited);
    let mut args = vec!["runtime".to_owned()];
    if !command.is_empty() {
        args.push("--".to_owned());
        args.extend(command.iter().map(|a| escape(a)));
    }
    Container {
        name: "function".to_owned(),
        image: Some(config.runtime_image.clone()),
        args: Some(args),
        env: Some(env),
        ports: Some(invoke_port(i32::from(RUNTIME_INVOKE_PORT))),
        readiness_probe: Some(readyz_probe()),
        resources: Some(memory_limit(w)),
        volume_mounts: Some(vec![code_mount()]),
        ..Container::default()
    }
}

/// An HTTP server: the user's image, or `command` run in the code folder of the runtime image.
fn http_container(
    w: &Workload,
    image: &str,
    command: &[String],
    port: i32,
    with_code: bool,
) -> Container {
    // POD_IP lets a server bind the pod's address rather than every interface.
    let mut env = vec![pod_ip_env(), env("PORT", port.to_string())];
    env.extend(w.environment.iter().map(|(k, v)| self::env(k, escape(v))));
    Container {
        name: "function".to_owned(),
        image: Some(image.to_owned()),
        command: (!command.is_empty()).then(|| command.iter().map(|a| escape(a)).collect()),
        working_dir: with_code.then(|| CODE_DIR.to_owned()),
        env: Some(env),
        ports: Some(invoke_port(port)),
        readiness_probe: Some(tcp_probe()),
        resources: Some(memory_limit(w)),
        volume_mounts: with_code.then(|| vec![code_mount()]),
        ..Container::default()
    }
}

/// A Lambda image: its own entrypoint runs the language runtime client against the sidecar.
fn image_container(w: &Workload, image: &str) -> Container {
    let mut env = vec![
        env("AWS_LAMBDA_RUNTIME_API", SIDECAR_RUNTIME_API),
        env("AWS_LAMBDA_FUNCTION_NAME", w.name.clone()),
        env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", w.memory_mb.to_string()),
    ];
    env.extend(w.environment.iter().map(|(k, v)| self::env(k, escape(v))));
    Container {
        name: "function".to_owned(),
        image: Some(image.to_owned()),
        env: Some(env),
        resources: Some(memory_limit(w)),
        ..Container::default()
    }
}

/// `kfaas runtime --external`: serves the invoke endpoint and the Runtime API, spawns nothing.
fn sidecar_container(w: &Workload, config: &BuildConfig) -> Container {
    let mut env = runtime_env(w);
    env.push(self::env("KFAAS_RUNTIME_API_LISTEN", SIDECAR_RUNTIME_API));
    Container {
        name: "runtime".to_owned(),
        image: Some(config.runtime_image.clone()),
        args: Some(vec!["runtime".to_owned(), "--external".to_owned()]),
        env: Some(env),
        ports: Some(invoke_port(i32::from(RUNTIME_INVOKE_PORT))),
        readiness_probe: Some(readyz_probe()),
        ..Container::default()
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
