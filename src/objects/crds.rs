//! The CustomResourceDefinitions, generated from the Rust types (the single source of truth).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{Function, Route, Stage, UsagePlan};

/// Every kfaas CRD, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Function::crd(),
        Route::crd(),
        Stage::crd(),
        UsagePlan::crd(),
    ]
}

/// The file a CRD is committed under in `crds/` (and the chart's `crds/`).
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!(
        "{}.yaml",
        crd.spec
            .names
            .singular
            .as_deref()
            .unwrap_or(&crd.spec.names.plural)
    )
}

/// One CRD as a YAML document (with the leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    // Serialising a CRD we built ourselves cannot fail: every field is plain data.
    let body = serde_yaml::to_string(crd).expect("a CRD serialises to YAML");
    format!("---\n{body}")
}

/// Every CRD as one multi-document YAML stream, as `kfaas crds` prints it.
pub fn crds_yaml() -> String {
    crds().iter().map(crd_yaml).collect()
}
