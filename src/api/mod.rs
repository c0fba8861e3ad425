//! The kfaas custom resources (group `kfaas.dev`, version `v1alpha1`). Types only, no logic:
//! their doc comments become `kubectl explain` text, their CEL rules the API server's checks.

// kube's `printcolumn(...)` attributes repeat the same keys once per column, by design.
#![allow(clippy::duplicated_attributes)]

mod common;
mod function;
mod route;
mod stage;
mod usage_plan;

pub use common::Throttle;
pub use function::{
    Function, FunctionCode, FunctionProtocol, FunctionRuntime, FunctionScaling, FunctionSpec,
    FunctionStatus,
};
pub use route::{
    AuthType, AuthorizerType, Cors, FunctionAuthorizer, JwtAuthorizer, PayloadFormat, Route,
    RouteAuth, RouteCache, RouteSpec, RouteStatus,
};
pub use stage::{AccessLog, Canary, IpRules, Stage, StageIngress, StageSpec, StageStatus};
pub use usage_plan::{
    ApiKeyRef, ApiKeyUsage, Quota, SecretKeyRef, UsagePlan, UsagePlanSpec, UsagePlanStage,
    UsagePlanStatus,
};

/// API group of every kfaas kind.
pub const GROUP: &str = "kfaas.dev";
/// API version of every kfaas kind.
pub const VERSION: &str = "v1alpha1";
