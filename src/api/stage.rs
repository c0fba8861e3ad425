//! `Stage`: a deployment of an API at a host and/or base path, with its variables and limits.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::Throttle;

/// A stage of an API: where it is served and with which variables, limits and canary.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "kfaas.dev",
    version = "v1alpha1",
    kind = "Stage",
    namespaced,
    shortname = "stg",
    category = "kfaas",
    status = "StageStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A stage of an API: the host and/or base path it is served at, its stage variables, throttle, canary and IP rules.",
    printcolumn(name = "API", type_ = "string", json_path = ".spec.api"),
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "BasePath", type_ = "string", json_path = ".spec.basePath"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Routes", type_ = "integer", json_path = ".status.routes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// Name of the API this stage serves.
    #[schemars(length(min = 1, max = 128))]
    pub api: String,

    /// Stage name as events and logs show it (`requestContext.stage`); defaults to the object's
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]+$')").message("stageName may only hold letters, digits, '-' and '_'"))]
    pub stage_name: Option<String>,

    /// Host name the stage answers on (any host when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub host: Option<String>,

    /// Path prefix the stage is served under, for example `/prod` (none when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$')").message("basePath must start with '/' and hold only path segments, without a trailing '/' (for example /prod)"))]
    pub base_path: Option<String>,

    /// Stage variables, as `${stageVariables.name}` in routes and `stageVariables` in events.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9_]+$'))").message("stage variable names may only hold letters, digits and '_'"))]
    pub variables: BTreeMap<String, String>,

    /// Stage-wide request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,

    /// A share of requests served with other stage variables (for example another function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,

    /// Source addresses allowed or denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_rules: Option<IpRules>,

    /// One JSON line per request.
    #[serde(default)]
    pub access_log: AccessLog,

    /// How the stage is exposed on a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<StageIngress>,
}

/// A canary: `weight` percent of requests get the `variables` overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.weight >= 0.0 && self.weight <= 100.0").message("canary.weight is a percentage: 0 to 100"))]
pub struct Canary {
    /// Percent of requests sent to the canary (0..100).
    pub weight: f64,
    /// Stage variables that replace the stage's own for canary requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9_]+$'))").message("canary variable names may only hold letters, digits and '_'"))]
    pub variables: BTreeMap<String, String>,
}

/// IP allow and deny lists (CIDR, IPv4 or IPv6).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpRules {
    /// When not empty, only these ranges may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These ranges may never call (deny wins over allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed; otherwise the peer address counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// Access-log settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessLog {
    /// Write one JSON line per request.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Ingress of a stage on a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageIngress {
    /// IngressClass to use (the cluster default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret holding the TLS certificate for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Annotations added to the Ingress.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the controller observed of a stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state: `Ready` with `reason` and `message` when it is False.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the stage is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Routes of the API this stage serves.
    #[serde(default)]
    pub routes: i32,
}

fn default_true() -> bool {
    true
}
