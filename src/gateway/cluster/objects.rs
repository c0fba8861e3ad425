//! Pure steps from what the watches hold to what the gateway serves: typed objects out of the
//! untyped ones (one bad object is a warning, never a broken stream), and the Secrets the
//! configuration refers to.

use std::{collections::BTreeSet, sync::Arc};

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use crate::{
    api::{Route, UsagePlan},
    gateway::config::ConfigWarning,
};

/// Converts watched objects to `K`; objects that do not fit `K` become warnings naming the
/// object and the field.
pub fn typed<K: DeserializeOwned>(
    kind: &str,
    objects: &[Arc<DynamicObject>],
) -> (Vec<K>, Vec<ConfigWarning>) {
    let mut out = Vec::with_capacity(objects.len());
    let mut warnings = Vec::new();
    for object in objects {
        let name = format!(
            "{kind}/{}/{}",
            object.metadata.namespace.as_deref().unwrap_or(""),
            object.metadata.name.as_deref().unwrap_or("")
        );
        let value = match serde_json::to_value(object.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(ConfigWarning {
                    object: name,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match serde_path_to_error::deserialize::<_, K>(value) {
            Ok(k) => out.push(k),
            Err(e) => warnings.push(ConfigWarning {
                object: name,
                message: format!("{}: {}", e.path(), e.inner()),
            }),
        }
    }
    (out, warnings)
}

/// `(namespace, name)` of every Secret the UsagePlans (API keys) and Routes (JWKS) refer to.
pub fn referenced_secrets(plans: &[UsagePlan], routes: &[Route]) -> BTreeSet<(String, String)> {
    let ns = |meta: &kube::api::ObjectMeta| meta.namespace.clone().unwrap_or_default();
    let from_plans = plans.iter().flat_map(|p| {
        p.spec
            .api_keys
            .iter()
            .map(move |k| (ns(&p.metadata), k.secret_ref.name.clone()))
    });
    let from_routes = routes.iter().filter_map(|r| {
        let secret = r.spec.auth.jwt.as_ref()?.jwks_secret.clone()?;
        Some((ns(&r.metadata), secret))
    });
    from_plans.chain(from_routes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Function, UsagePlan};
    use kube::api::ApiResource;
    use kube::core::Resource;

    fn dynamic(value: serde_json::Value) -> Arc<DynamicObject> {
        Arc::new(serde_json::from_value(value).expect("dynamic object"))
    }

    #[test]
    fn a_bad_object_is_a_warning_and_the_good_ones_still_convert() {
        let _ = ApiResource::erase::<Function>(&());
        let good = dynamic(serde_json::json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": "hello", "namespace": "shop"},
            "spec": {"runtime": "nodejs", "handler": "index.handler", "code": {"inline": {"index.js": "x"}}}
        }));
        let bad = dynamic(serde_json::json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": "broken", "namespace": "shop"},
            "spec": {"runtime": "cobol"}
        }));
        let (functions, warnings) = typed::<Function>("Function", &[bad, good]);
        assert_eq!(functions.len(), 1);
        assert_eq!(functions[0].metadata.name.as_deref(), Some("hello"));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].object, "Function/shop/broken");
        assert!(
            warnings[0].message.starts_with("spec.runtime:"),
            "{}",
            warnings[0].message
        );
        assert_eq!(Function::kind(&()), "Function");
    }

    #[test]
    fn secrets_of_api_keys_and_jwks_are_referenced_in_their_own_namespace() {
        let plan: UsagePlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "UsagePlan",
            "metadata": {"name": "gold", "namespace": "a"},
            "spec": {"stages": [{"api": "shop", "stage": "prod"}],
                     "apiKeys": [{"id": "k1", "secretRef": {"name": "keys"}},
                                 {"id": "k2", "secretRef": {"name": "keys", "key": "other"}}]}
        }))
        .expect("plan");
        let route: Route = serde_json::from_value(serde_json::json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "r", "namespace": "b"},
            "spec": {"api": "shop", "path": "/x", "function": "f",
                     "auth": {"type": "jwt", "jwt": {"issuer": "https://i", "audiences": ["a"], "jwksSecret": "jwks"}}}
        }))
        .expect("route");
        let secrets = referenced_secrets(&[plan], &[route]);
        let expected: BTreeSet<(String, String)> = [
            ("a".to_owned(), "keys".to_owned()),
            ("b".to_owned(), "jwks".to_owned()),
        ]
        .into();
        assert_eq!(secrets, expected);
    }
}
