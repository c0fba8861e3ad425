//! The kfaas custom resources (group `kfaas.dev`, version `v1alpha1`). Types only, no logic.

/// Every CRD as one multi-document YAML stream, as `kfaas crds` prints it.
pub fn crds_yaml() -> String {
    String::new()
}
