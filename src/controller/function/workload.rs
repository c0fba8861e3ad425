//! A Function checked once and turned into what runs: the validated value the builders use.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::{
    api::{Function, FunctionProtocol, FunctionRuntime},
    controller::error::Error,
};

/// Where the code folder of a runtime function comes from on a cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum CodeSource {
    /// `code.inline`: files kept in the Function's own ConfigMap.
    Inline(BTreeMap<String, String>),
    /// `code.configMap`: a ConfigMap the user manages.
    ConfigMap(String),
}

/// What runs in each instance of a function.
#[derive(Clone, Debug, PartialEq)]
pub enum Program {
    /// `kfaas runtime` supervises handler processes (nodejs, python, provided, or `command`).
    RuntimeLambda {
        runtime: FunctionRuntime,
        handler: Option<String>,
        code: CodeSource,
        command: Vec<String>,
    },
    /// `command` is an HTTP server started in the code folder.
    RuntimeHttp {
        code: CodeSource,
        command: Vec<String>,
        port: i32,
    },
    /// A Lambda image beside a `kfaas runtime --external` sidecar.
    ImageLambda { image: String },
    /// An image serving HTTP on `port`.
    ImageHttp { image: String, port: i32 },
}

/// A Function that can be deployed.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub program: Program,
    pub environment: BTreeMap<String, String>,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    pub concurrency: i32,
    /// Instances a new Deployment starts with.
    pub initial_replicas: i32,
    /// A fixed instance count (`spec.replicas`), applied on every reconcile.
    pub pinned_replicas: Option<i32>,
    /// Bounds the instance count is kept within when it is not pinned.
    pub min_replicas: i32,
    pub max_replicas: i32,
}

impl Workload {
    /// The port the Service forwards to: the runtime's invoke endpoint or the user's server.
    pub fn invoke_port(&self) -> i32 {
        match &self.program {
            Program::RuntimeLambda { .. } | Program::ImageLambda { .. } => {
                i32::from(crate::workload::RUNTIME_INVOKE_PORT)
            }
            Program::RuntimeHttp { port, .. } | Program::ImageHttp { port, .. } => *port,
        }
    }

    /// The count to set on a Deployment that has `current` replicas, if it must change: the
    /// pin, else `current` kept within min..max. Inside the bounds the autoscaler decides.
    pub fn replicas_to_set(&self, current: i32) -> Option<i32> {
        let want = match self.pinned_replicas {
            Some(pin) => pin,
            None => current.clamp(self.min_replicas, self.max_replicas),
        };
        (want != current).then_some(want)
    }

    /// Whether the gateway calls the function with Lambda events.
    pub fn is_lambda(&self) -> bool {
        matches!(
            self.program,
            Program::RuntimeLambda { .. } | Program::ImageLambda { .. }
        )
    }

    /// The user ConfigMap the code comes from, if any (it must exist for pods to start).
    pub fn user_config_map(&self) -> Option<&str> {
        match &self.program {
            Program::RuntimeLambda {
                code: CodeSource::ConfigMap(name),
                ..
            }
            | Program::RuntimeHttp {
                code: CodeSource::ConfigMap(name),
                ..
            } => Some(name),
            _ => None,
        }
    }

    /// The inline code files, if any.
    pub fn inline_code(&self) -> Option<&BTreeMap<String, String>> {
        match &self.program {
            Program::RuntimeLambda {
                code: CodeSource::Inline(files),
                ..
            }
            | Program::RuntimeHttp {
                code: CodeSource::Inline(files),
                ..
            } => Some(files),
            _ => None,
        }
    }
}

impl TryFrom<&Function> for Workload {
    type Error = Error;

    fn try_from(function: &Function) -> Result<Self, Error> {
        let name = function.name_any();
        let namespace = function
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let uid = function.uid().ok_or(Error::MissingMetadata("uid"))?;
        let spec = &function.spec;
        let program = match (&spec.image, spec.runtime) {
            (Some(image), None) => match spec.protocol {
                FunctionProtocol::Lambda => Program::ImageLambda {
                    image: image.clone(),
                },
                FunctionProtocol::Http => Program::ImageHttp {
                    image: image.clone(),
                    port: spec.port,
                },
            },
            (None, Some(runtime)) => {
                let code = code_source(function)?;
                match spec.protocol {
                    FunctionProtocol::Lambda => Program::RuntimeLambda {
                        runtime,
                        handler: spec.handler.clone(),
                        code,
                        command: spec.command.clone(),
                    },
                    FunctionProtocol::Http if spec.command.is_empty() => {
                        return Err(Error::InvalidSpec(
                            "an http function with a runtime needs command (the server to start)"
                                .to_owned(),
                        ));
                    }
                    FunctionProtocol::Http => Program::RuntimeHttp {
                        code,
                        command: spec.command.clone(),
                        port: spec.port,
                    },
                }
            }
            // The CRD's CEL rules refuse these; an older object may still hold them.
            _ => {
                return Err(Error::InvalidSpec(
                    "set exactly one of image and runtime".to_owned(),
                ));
            }
        };
        let concurrency = spec.concurrency.unwrap_or(match spec.protocol {
            FunctionProtocol::Lambda => 1,
            FunctionProtocol::Http => 100,
        });
        Ok(Self {
            name,
            namespace,
            uid,
            program,
            environment: spec.environment.clone(),
            memory_mb: spec.memory_mb,
            timeout_seconds: spec.timeout_seconds,
            // A Lambda image's runtime client takes one event at a time, and the sidecar serves
            // it on one fixed Runtime API address.
            concurrency: if spec.image.is_some() && spec.protocol == FunctionProtocol::Lambda {
                1
            } else {
                concurrency
            },
            initial_replicas: spec.replicas.unwrap_or(spec.scaling.min_replicas).max(0),
            pinned_replicas: spec.replicas.map(|r| r.max(0)),
            min_replicas: spec.scaling.min_replicas.max(0),
            max_replicas: spec
                .scaling
                .max_replicas
                .max(spec.scaling.min_replicas.max(0)),
        })
    }
}

fn code_source(function: &Function) -> Result<CodeSource, Error> {
    let code = function.spec.code.as_ref().ok_or_else(|| {
        Error::InvalidSpec("runtime needs code (code.inline or code.configMap)".to_owned())
    })?;
    match (&code.inline, &code.config_map, &code.path) {
        (Some(files), None, None) => Ok(CodeSource::Inline(files.clone())),
        (None, Some(name), None) => Ok(CodeSource::ConfigMap(name.clone())),
        (None, None, Some(path)) => Err(Error::CodePathNotSupported(path.clone())),
        _ => Err(Error::InvalidSpec(
            "code needs exactly one of inline, configMap or path".to_owned(),
        )),
    }
}
