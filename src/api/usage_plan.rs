//! `UsagePlan`: per-API-key throttle and quota on stages.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::Throttle;

/// A usage plan: which stages it covers, its limits, and the API keys it holds.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "kfaas.dev",
    version = "v1alpha1",
    kind = "UsagePlan",
    namespaced,
    shortname = "up",
    category = "kfaas",
    status = "UsagePlanStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A usage plan: per-API-key throttle and quota on the stages it lists; key values come from Secrets.",
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.keys"),
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
pub struct UsagePlanSpec {
    /// Stages the plan applies to.
    #[schemars(length(min = 1, max = 64))]
    pub stages: Vec<UsagePlanStage>,
    /// Per-key request rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// Per-key request count per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// The API keys of the plan; their values live in Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub api_keys: Vec<ApiKeyRef>,
}

/// One stage of one API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePlanStage {
    /// API name.
    #[schemars(length(min = 1, max = 128))]
    pub api: String,
    /// Stage name (the Stage's `stageName`, or its object name).
    #[schemars(length(min = 1, max = 128))]
    pub stage: String,
}

/// A request budget per period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.limit > 0").message("quota.limit must be greater than 0"))]
#[x_kube(validation = Rule::new("self.offset >= 0").message("quota.offset must not be negative"))]
pub struct Quota {
    /// Requests allowed per period.
    pub limit: i64,
    /// `DAY`, `WEEK` or `MONTH` (UTC; weeks start on Monday).
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self in ['DAY', 'WEEK', 'MONTH']").message("quota.period must be DAY, WEEK or MONTH"))]
    pub period: String,
    /// Requests already counted in the first period.
    #[serde(default)]
    pub offset: i64,
}

/// An API key: its id and the Secret that holds its value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRef {
    /// Key id, shown in events and access logs (never the key itself).
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// The Secret holding the key's value.
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret; default `apiKey`.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

/// What the controller observed of a usage plan, and the gateway's count of each key's use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePlanStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is False (with a reason) when, for example, a Secret cannot be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// API keys loaded.
    #[serde(default)]
    pub keys: i32,
    /// Requests each API key has used in the current quota period, as the gateway counts them
    /// (written by the gateway every few seconds while the count changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub usage: Vec<ApiKeyUsage>,
}

/// One API key's use of a plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyUsage {
    /// The key's id from `spec.apiKeys` (never the key itself).
    pub key_id: String,
    /// Requests counted in the current quota period (all requests when the plan has no quota).
    pub used: i64,
    /// The quota's limit, when the plan has a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Requests left in the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    /// DAY, WEEK or MONTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// When the current period ends (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

fn default_secret_key() -> String {
    "apiKey".to_owned()
}
