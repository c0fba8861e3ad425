//! Parsing YAML documents into kfaas objects, with errors that name the file and document.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Deserialize;

use crate::api::{Function, GROUP, Route, Stage, UsagePlan, VERSION};

/// An object found in a YAML stream.
#[derive(Clone, Debug, PartialEq)]
pub enum KfaasObject {
    Function(Function),
    Route(Route),
    Stage(Stage),
    UsagePlan(UsagePlan),
    /// Secrets hold API key values (and JWKS documents) in local mode.
    Secret(Secret),
    /// ConfigMaps hold function code (`code.configMap`) in local mode, as on a cluster.
    ConfigMap(ConfigMap),
}

impl KfaasObject {
    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Self::Function(o) => ("Function", o.metadata.name.as_deref()),
            Self::Route(o) => ("Route", o.metadata.name.as_deref()),
            Self::Stage(o) => ("Stage", o.metadata.name.as_deref()),
            Self::UsagePlan(o) => ("UsagePlan", o.metadata.name.as_deref()),
            Self::Secret(o) => ("Secret", o.metadata.name.as_deref()),
            Self::ConfigMap(o) => ("ConfigMap", o.metadata.name.as_deref()),
        };
        format!("{kind}/{}", name.unwrap_or("<no name>"))
    }
}

/// One document of a file and what it held.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedDocument {
    /// 1-based position of the document in its file.
    pub index: usize,
    /// `None` for documents that are not kfaas objects (other kinds, empty documents).
    pub object: Option<KfaasObject>,
}

/// A document that could not be read as the kind it claims to be.
#[derive(Debug, thiserror::Error)]
#[error("{}: document {index}{}: {message}", file.display(), object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
pub struct ParseError {
    pub file: PathBuf,
    pub index: usize,
    /// `Kind/name` when the document got that far.
    pub object: Option<String>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeHeader {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: NameHeader,
}

#[derive(Default, Deserialize)]
struct NameHeader {
    #[serde(default)]
    name: Option<String>,
}

/// Parses every document of a YAML stream. Documents of other API groups are skipped (`None`);
/// a kfaas document that does not fit its kind is an error that says where and why.
pub fn parse_documents(file: &Path, text: &str) -> Vec<Result<ParsedDocument, ParseError>> {
    let kfaas_api_version = format!("{GROUP}/{VERSION}");
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let error = |object: Option<String>, message: String| ParseError {
            file: file.to_owned(),
            index,
            object,
            message,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                out.push(Err(error(None, format!("not valid YAML: {e}"))));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        if value.is_null() {
            out.push(Ok(ParsedDocument {
                index,
                object: None,
            }));
            continue;
        }
        let header: TypeHeader = match serde_yaml::from_value(value.clone()) {
            Ok(h) => h,
            Err(e) => {
                out.push(Err(error(None, format!("not a Kubernetes object: {e}"))));
                continue;
            }
        };
        let label = format!(
            "{}/{}",
            header.kind,
            header.metadata.name.as_deref().unwrap_or("<no name>")
        );
        let parsed = if header.api_version == kfaas_api_version {
            match header.kind.as_str() {
                "Function" => typed(value, KfaasObject::Function),
                "Route" => typed(value, KfaasObject::Route),
                "Stage" => typed(value, KfaasObject::Stage),
                "UsagePlan" => typed(value, KfaasObject::UsagePlan),
                other => Err(format!(
                    "unknown kind {other:?} in {kfaas_api_version}: expected Function, Route, Stage or UsagePlan"
                )),
            }
            .map(Some)
        } else if header.api_version.starts_with(GROUP) {
            Err(format!(
                "apiVersion {:?} is not served: use {kfaas_api_version}",
                header.api_version
            ))
        } else if header.api_version == "v1" && header.kind == "Secret" {
            typed(value, KfaasObject::Secret).map(Some)
        } else if header.api_version == "v1" && header.kind == "ConfigMap" {
            typed(value, KfaasObject::ConfigMap).map(Some)
        } else {
            Ok(None)
        };
        match parsed {
            Ok(object) => {
                let unnamed = object.as_ref().is_some_and(|o| {
                    !matches!(o, KfaasObject::Secret(_) | KfaasObject::ConfigMap(_))
                }) && header.metadata.name.is_none();
                if unnamed {
                    out.push(Err(error(Some(label), "metadata.name is required".into())));
                    continue;
                }
                out.push(Ok(ParsedDocument { index, object }));
            }
            Err(message) => out.push(Err(error(Some(label), message))),
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    wrap: fn(T) -> KfaasObject,
) -> Result<KfaasObject, String> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(wrap)
        .map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
}
