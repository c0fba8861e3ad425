//! Client-side validation with the CRDs' own CEL rules, so `kfaas local` and the tests reject
//! exactly what the API server would, with the same messages.
//!
//! Each kind's rules are compiled once (compiling them per object made loading 10,000 objects
//! take tens of seconds).

use std::sync::LazyLock;

use kube::{
    CustomResourceExt,
    core::cel::{CompiledSchema, Validator, compile_schema},
};
use serde::Serialize;

use super::KfaasObject;
use crate::api::{Function, Route, Stage, UsagePlan};

/// The rules an object broke.
#[derive(Debug, thiserror::Error)]
#[error("{object} is invalid: {}", messages.join("; "))]
pub struct ValidationError {
    /// `Kind/name`.
    pub object: String,
    /// One entry per broken rule: `field path: message`.
    pub messages: Vec<String>,
}

fn compile<K: CustomResourceExt>() -> CompiledSchema {
    let crd = K::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default();
    compile_schema(&schema)
}

static FUNCTION: LazyLock<CompiledSchema> = LazyLock::new(compile::<Function>);
static ROUTE: LazyLock<CompiledSchema> = LazyLock::new(compile::<Route>);
static STAGE: LazyLock<CompiledSchema> = LazyLock::new(compile::<Stage>);
static USAGE_PLAN: LazyLock<CompiledSchema> = LazyLock::new(compile::<UsagePlan>);

thread_local! {
    static VALIDATOR: Validator = Validator::new();
}

fn check<K: Serialize>(compiled: &CompiledSchema, object: &K) -> Result<(), Vec<String>> {
    let value = serde_json::to_value(object).map_err(|e| vec![e.to_string()])?;
    VALIDATOR
        .with(|v| v.validate_compiled(compiled, &value, None))
        .map_err(|errors| {
            errors
                .as_slice()
                .iter()
                .map(|e| {
                    if e.field_path.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{}: {}", e.field_path, e.message)
                    }
                })
                .collect()
        })
}

/// Checks an object against the CEL rules of its CRD.
pub fn validate(object: &KfaasObject) -> Result<(), ValidationError> {
    let result = match object {
        KfaasObject::Function(o) => check(&FUNCTION, o),
        KfaasObject::Route(o) => check(&ROUTE, o),
        KfaasObject::Stage(o) => check(&STAGE, o),
        KfaasObject::UsagePlan(o) => check(&USAGE_PLAN, o),
        KfaasObject::Secret(_) | KfaasObject::ConfigMap(_) => Ok(()),
    };
    result.map_err(|messages| ValidationError {
        object: object.describe(),
        messages,
    })
}
