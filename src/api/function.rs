//! `Function`: code plus a runtime, or an image; becomes a scale-to-zero Deployment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A function: what runs, how it is called and how far it scales.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "kfaas.dev",
    version = "v1alpha1",
    kind = "Function",
    namespaced,
    shortname = "fn",
    category = "kfaas",
    status = "FunctionStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A function: code and a runtime (or an image) that kfaas runs, scales from zero and invokes with Lambda's contract.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Runtime", type_ = "string", json_path = ".spec.runtime"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.image) || has(self.runtime)").message("set either image, or runtime with code"))]
#[x_kube(validation = Rule::new("!(has(self.image) && has(self.runtime))").message("image and runtime are exclusive: set exactly one of them"))]
#[x_kube(validation = Rule::new("!has(self.runtime) || has(self.code)").message("runtime needs code (code.path, code.configMap or code.inline)"))]
#[x_kube(validation = Rule::new("!has(self.image) || !has(self.code)").message("code is only used with runtime; an image carries its own code"))]
#[x_kube(validation = Rule::new("!has(self.runtime) || self.runtime == 'provided' || self.protocol == 'http' || has(self.handler)").message("runtime nodejs and python need handler (file.export, for example index.handler)"))]
#[x_kube(validation = Rule::new("!has(self.handler) || self.handler.matches('^[A-Za-z0-9_./-]+[.][A-Za-z0-9_$]+$')").message("handler must look like file.export (for example index.handler or app/main.handler)"))]
#[x_kube(validation = Rule::new("self.scaling.minReplicas <= self.scaling.maxReplicas").message("scaling.minReplicas must not exceed scaling.maxReplicas"))]
#[x_kube(validation = Rule::new("self.timeoutSeconds >= 1 && self.timeoutSeconds <= 900").message("timeoutSeconds must be within 1..900"))]
#[x_kube(validation = Rule::new("self.memoryMb >= 128 && self.memoryMb <= 10240").message("memoryMb must be within 128..10240"))]
#[x_kube(validation = Rule::new("!has(self.concurrency) || (self.concurrency >= 1 && self.concurrency <= 1000)").message("concurrency must be within 1..1000"))]
#[x_kube(validation = Rule::new("!has(self.replicas) || self.replicas >= 0").message("replicas must not be negative"))]
pub struct FunctionSpec {
    /// Container image holding the function (an AWS Lambda base image works unchanged). Exclusive
    /// with `runtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Language runtime that runs `code`: `nodejs`, `python`, or `provided` (the code folder holds
    /// an executable `bootstrap`, as Go and Rust functions ship). Exclusive with `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<FunctionRuntime>,

    /// Where the code of a `runtime` function comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<FunctionCode>,

    /// Entry point as `file.export`, for example `index.handler` (nodejs, python).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub handler: Option<String>,

    /// Command that replaces the runtime's bootstrap (for example a custom runtime client, or the
    /// server of an `http` function).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// How the function is called: `lambda` (events through the Lambda Runtime API) or `http` (a
    /// plain HTTP server listening on `port`).
    #[serde(default)]
    pub protocol: FunctionProtocol,

    /// Port an `http` function listens on; it is also given as `PORT`.
    #[serde(default = "default_port")]
    pub port: i32,

    /// Environment variables of the function.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,

    /// Longest time one invocation may run, in seconds (1..900).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: i32,

    /// Memory of one instance in MiB (128..10240); the limit of its container.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: i32,

    /// Invocations one instance serves at once (1..1000); default 1 for `lambda` functions (as
    /// Lambda) and 100 for `http` functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,

    /// How many instances run, from zero up.
    #[serde(default)]
    pub scaling: FunctionScaling,

    /// A fixed number of instances. When set, the autoscaler leaves this function alone;
    /// `kubectl scale fn NAME --replicas N` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Language runtimes, as AWS names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FunctionRuntime {
    /// Node.js handlers (`index.handler` exports an async or callback function).
    Nodejs,
    /// Python handlers (`app.handler` is a plain function).
    Python,
    /// The code folder holds an executable `bootstrap` that speaks the Runtime API itself.
    Provided,
}

/// How the gateway calls a function.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FunctionProtocol {
    /// Events through the Lambda Runtime API, as on AWS Lambda.
    #[default]
    Lambda,
    /// A plain HTTP server; requests are reverse-proxied to it.
    Http,
}

/// The code of a `runtime` function: exactly one source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.path), has(self.configMap), has(self.inline)].filter(x, x).size() == 1").message("code needs exactly one of path, configMap or inline"))]
pub struct FunctionCode {
    /// Folder holding the code. In `kfaas local` it is relative to the file that holds the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// ConfigMap in the same namespace whose keys are the files of the code folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub config_map: Option<String>,
    /// Files of the code folder, written out in full: file name to content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<BTreeMap<String, String>>,
}

/// Scaling bounds and targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas >= 0").message("scaling.minReplicas must not be negative"))]
#[x_kube(validation = Rule::new("self.maxReplicas >= 1 && self.maxReplicas <= 1000").message("scaling.maxReplicas must be within 1..1000"))]
#[x_kube(validation = Rule::new("!has(self.targetConcurrency) || self.targetConcurrency >= 1").message("scaling.targetConcurrency must be at least 1"))]
#[x_kube(validation = Rule::new("self.idleTimeoutSeconds >= 1").message("scaling.idleTimeoutSeconds must be at least 1"))]
pub struct FunctionScaling {
    /// Fewest instances; 0 lets the function scale to zero when idle.
    #[serde(default)]
    pub min_replicas: i32,
    /// Most instances.
    #[serde(default = "default_max_replicas")]
    pub max_replicas: i32,
    /// In-flight invocations per instance the autoscaler aims for; defaults to `concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<i32>,
    /// Seconds without a request before the function scales down to `minReplicas`.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: i32,
}

impl Default for FunctionScaling {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            max_replicas: default_max_replicas(),
            target_concurrency: None,
            idle_timeout_seconds: default_idle_timeout_seconds(),
        }
    }
}

/// What the controller observed of a function.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state: `Ready` with `reason` and `message` when it is False.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Instances that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Instances that can take invocations.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the instances' pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Address that invokes the function inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn default_port() -> i32 {
    8080
}
fn default_timeout_seconds() -> i32 {
    3
}
fn default_memory_mb() -> i32 {
    128
}
fn default_max_replicas() -> i32 {
    10
}
fn default_idle_timeout_seconds() -> i32 {
    60
}
