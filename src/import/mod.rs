//! `kfaas import sam`: an AWS SAM template → kfaas objects (Functions, Routes, Stages,
//! UsagePlans and the Secrets of their API keys).
//!
//! The conversion is pure (text in, objects and warnings out); the CLI reads and writes files.
//! What cannot be converted becomes a warning that names the resource and property, and the rest
//! still converts. Every object is checked with the CRDs' own rules before it is returned.

mod api;
mod code;
mod cors;
mod events;
mod function;
mod intrinsic;
mod names;
mod template;
#[cfg(test)]
mod tests;
mod usage_plan;

use std::{collections::BTreeMap, fmt, path::PathBuf};

pub use code::into_config_maps;
pub use intrinsic::Pseudo;
use serde_yaml::Value;
use template::get;

use crate::objects::{KfaasObject, validate};

/// Where the template is and where the objects will be written, and the values of parameters.
#[derive(Clone, Debug)]
pub struct Options {
    /// Absolute folder of the template (`CodeUri` is relative to it).
    pub template_dir: PathBuf,
    /// Absolute folder the YAML is written to (`code.path` is relative to it).
    pub output_dir: PathBuf,
    pub pseudo: Pseudo,
    /// `--parameter Name=Value`: wins over a parameter's `Default`.
    pub parameters: BTreeMap<String, String>,
}

/// Something in the template that did not convert, or converted with a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Logical ID of the resource (or `Globals`).
    pub resource: String,
    /// Property path inside it, e.g. `Events.Api.Properties.Auth`; empty for the whole resource.
    pub property: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.property.is_empty() {
            write!(f, "{}: {}", self.resource, self.message)
        } else {
            write!(f, "{}.{}: {}", self.resource, self.property, self.message)
        }
    }
}

/// The objects of a template and what did not convert.
#[derive(Clone, Debug)]
pub struct Conversion {
    pub objects: Vec<KfaasObject>,
    pub warnings: Vec<Warning>,
}

/// A template that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the template is not valid: {0}")]
    Template(String),
    #[error("the template has no Resources")]
    NoResources,
    #[error("cannot write {0} as YAML: {1}")]
    Render(String, String),
}

/// What the converters share: the resolver, options, Globals and the warnings so far.
pub(crate) struct Ctx<'a> {
    resolver: intrinsic::Resolver<'a>,
    options: &'a Options,
    globals: &'a Value,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn warn(&mut self, resource: &str, property: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            resource: resource.to_owned(),
            property: property.to_owned(),
            message: message.into(),
        });
    }
}

/// Converts a SAM template (YAML or JSON text).
pub fn convert_sam(text: &str, options: &Options) -> Result<Conversion, ImportError> {
    let template = template::parse(text).map_err(ImportError::Template)?;
    let resources = match get(&template, "Resources") {
        Some(Value::Mapping(r)) => r,
        _ => return Err(ImportError::NoResources),
    };
    let globals = get(&template, "Globals").cloned().unwrap_or(Value::Null);
    let mut ctx = Ctx {
        resolver: intrinsic::Resolver::new(
            &template,
            resources,
            &options.pseudo,
            &options.parameters,
        ),
        options,
        globals: &globals,
        warnings: Vec::new(),
    };

    // Resources in template order, without those whose Condition is false.
    let mut kept: Vec<(String, &str, &Value)> = Vec::new();
    for (id, resource) in resources {
        let Some(id) = id.as_str() else { continue };
        let kind = get(resource, "Type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(condition) = get(resource, "Condition").and_then(Value::as_str) {
            match ctx.resolver.condition(condition) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => ctx.warn(id, "Condition", format!("{e}: converted as if true")),
            }
        }
        kept.push((id.to_owned(), kind, resource));
    }

    let mut objects = Vec::new();
    let mut function_names = BTreeMap::new();
    let mut api_events = Vec::new();
    let mut apis: Vec<api::ApiDef> = Vec::new();
    let global_function = get(&globals, "Function").cloned().unwrap_or(Value::Null);
    for (id, kind, resource) in &kept {
        let props = get(resource, "Properties").cloned().unwrap_or(Value::Null);
        match *kind {
            "AWS::Serverless::Function" => {
                let props = template::merge_globals(&global_function, &props);
                if let Some(f) = function::convert(&mut ctx, id, &props) {
                    let name = f.metadata.name.clone().unwrap_or_default();
                    api_events.extend(events::api_events(&mut ctx, id, &name, &props));
                    function_names.insert(id.clone(), name);
                    objects.push(KfaasObject::Function(f));
                }
            }
            "AWS::Serverless::Api" => apis.push(api::define(&mut ctx, id, api::ApiKind::Rest, Some(&props))),
            "AWS::Serverless::HttpApi" => apis.push(api::define(&mut ctx, id, api::ApiKind::Http, Some(&props))),
            "AWS::Serverless::SimpleTable" => ctx.warn(id, "", "not converted: AWS::Serverless::SimpleTable (run a database and pass its address in the functions' environment)"),
            other => ctx.warn(id, "", format!("not converted: {other}")),
        }
    }

    // Events on an API the template does not declare create SAM's implicit API.
    for event in &api_events {
        if !apis.iter().any(|a| a.id == event.api_id) && event.api_id == event.kind.implicit_id() {
            let implicit = api::define(&mut ctx, &event.api_id, event.kind, None);
            apis.push(implicit);
        }
    }
    let settings: Vec<api::ApiSettings> = apis
        .iter()
        .map(|a| api::settings(&mut ctx, a, &function_names))
        .collect();

    let mut routes = Vec::new();
    for event in &api_events {
        let found = apis
            .iter()
            .zip(&settings)
            .find(|(a, _)| a.id == event.api_id);
        match found {
            Some((api, settings)) if api.kind == event.kind => {
                if let Some(route) = events::route(&mut ctx, event, api, settings) {
                    routes.push(route);
                }
            }
            _ => {
                let property = format!("Events.{}", event.event);
                let want = match event.kind {
                    api::ApiKind::Rest => "AWS::Serverless::Api",
                    api::ApiKind::Http => "AWS::Serverless::HttpApi",
                };
                ctx.warn(
                    &event.function_id,
                    &property,
                    format!(
                        "not converted: {} is not an {want} of this template",
                        event.api_id
                    ),
                );
            }
        }
    }
    events::unique_names(&mut routes);
    objects.extend(routes.into_iter().map(KfaasObject::Route));

    let mut stage_names = BTreeMap::new();
    for api in &apis {
        let stage = api::stage(&mut ctx, api);
        let stage_name = stage
            .spec
            .stage_name
            .clone()
            .or_else(|| stage.metadata.name.clone())
            .unwrap_or_default();
        stage_names.insert(api.id.clone(), stage_name);
        objects.push(KfaasObject::Stage(stage));
    }
    warn_shared_base_paths(&mut ctx, &objects);
    objects.extend(usage_plan::convert(&mut ctx, &apis, &stage_names));
    warn_keys_without_plan(&mut ctx, &objects);

    // A last check with the CRDs' rules, so that every emitted object applies.
    let mut valid = Vec::with_capacity(objects.len());
    for object in objects {
        match validate(&object) {
            Ok(()) => valid.push(object),
            Err(e) => ctx.warn(
                &object.describe(),
                "",
                format!("not converted: {}", e.messages.join("; ")),
            ),
        }
    }
    Ok(Conversion {
        objects: valid,
        warnings: ctx.warnings,
    })
}

/// On AWS each API has its own host; on one kfaas gateway, two APIs' stages at the same base
/// path would compete for the same requests.
fn warn_shared_base_paths(ctx: &mut Ctx, objects: &[KfaasObject]) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for object in objects {
        let KfaasObject::Stage(stage) = object else {
            continue;
        };
        let base = stage.spec.base_path.clone().unwrap_or_else(|| "/".into());
        let this = object.describe();
        match seen.get(&base) {
            Some(first) => ctx.warn(
                &this,
                "basePath",
                format!("{first} is served at {base} too (on AWS each API has its own host): set spec.host on one of them"),
            ),
            None => {
                seen.insert(base, this);
            }
        }
    }
}

/// A route that requires an API key on an API no usage plan covers refuses every request.
fn warn_keys_without_plan(ctx: &mut Ctx, objects: &[KfaasObject]) {
    let covered: Vec<&str> = objects
        .iter()
        .filter_map(|o| match o {
            KfaasObject::UsagePlan(p) => Some(p.spec.stages.iter().map(|s| s.api.as_str())),
            _ => None,
        })
        .flatten()
        .collect();
    for object in objects {
        if let KfaasObject::Route(r) = object
            && r.spec.auth.api_key_required
            && !covered.contains(&r.spec.api.as_str())
        {
            ctx.warn(
                &object.describe(),
                "auth.apiKeyRequired",
                format!("no usage plan covers API {}: add a UsagePlan with an API key (Auth.UsagePlan in SAM), or every request gets 403", r.spec.api),
            );
        }
    }
}

/// The objects as one YAML stream.
pub fn render(objects: &[KfaasObject]) -> Result<String, ImportError> {
    let mut out = String::new();
    for object in objects {
        let text = match object {
            KfaasObject::Function(o) => serde_yaml::to_string(o),
            KfaasObject::Route(o) => serde_yaml::to_string(o),
            KfaasObject::Stage(o) => serde_yaml::to_string(o),
            KfaasObject::UsagePlan(o) => serde_yaml::to_string(o),
            KfaasObject::Secret(o) => serde_yaml::to_string(o),
            KfaasObject::ConfigMap(o) => serde_yaml::to_string(o),
        }
        .map_err(|e| ImportError::Render(object.describe(), e.to_string()))?;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&text);
    }
    Ok(out)
}

/// The objects as one file per kind: `(file name, YAML)`, only for kinds that occur.
pub fn render_files(objects: &[KfaasObject]) -> Result<Vec<(&'static str, String)>, ImportError> {
    let file_of = |o: &KfaasObject| match o {
        KfaasObject::Function(_) => "functions.yaml",
        KfaasObject::Route(_) => "routes.yaml",
        KfaasObject::Stage(_) => "stages.yaml",
        KfaasObject::UsagePlan(_) => "usage-plans.yaml",
        KfaasObject::Secret(_) => "secrets.yaml",
        KfaasObject::ConfigMap(_) => "config-maps.yaml",
    };
    let mut out = Vec::new();
    for file in [
        "functions.yaml",
        "routes.yaml",
        "stages.yaml",
        "usage-plans.yaml",
        "secrets.yaml",
        "config-maps.yaml",
    ] {
        let of_kind: Vec<KfaasObject> = objects
            .iter()
            .filter(|o| file_of(o) == file)
            .cloned()
            .collect();
        if !of_kind.is_empty() {
            out.push((file, render(&of_kind)?));
        }
    }
    Ok(out)
}
