//! Client-side validation with the CRDs' own CEL rules, so `kfaas local` and the tests reject
//! exactly what the API server would, with the same messages.

use kube::core::cel::validate_cel;

use super::KfaasObject;

/// The rules an object broke.
#[derive(Debug, thiserror::Error)]
#[error("{object} is invalid: {}", messages.join("; "))]
pub struct ValidationError {
    /// `Kind/name`.
    pub object: String,
    /// One entry per broken rule: `field path: message`.
    pub messages: Vec<String>,
}

/// Checks an object against the CEL rules of its CRD.
pub fn validate(object: &KfaasObject) -> Result<(), ValidationError> {
    let result = match object {
        KfaasObject::Function(o) => validate_cel(o),
        KfaasObject::Route(o) => validate_cel(o),
        KfaasObject::Stage(o) => validate_cel(o),
        KfaasObject::UsagePlan(o) => validate_cel(o),
        KfaasObject::Secret(_) => Ok(()),
    };
    result.map_err(|errors| ValidationError {
        object: object.describe(),
        messages: errors
            .as_slice()
            .iter()
            .map(|e| {
                if e.field_path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.field_path, e.message)
                }
            })
            .collect(),
    })
}
