//! Pure steps from what the watches hold to what the gateway serves: typed objects out of the
//! untyped ones (one bad object is a warning, never a broken stream), and the Secrets the
//! configuration refers to.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

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

/// Tells which watch events change what the gateway serves. Status writes (the controller's,
/// the gateway's own usage) bump an object's resourceVersion but not its `generation`, and must
/// not rebuild the routing table each time.
#[derive(Debug, Default)]
pub struct SpecGenerations {
    seen: HashMap<(String, String), Option<i64>>,
    relist: Option<HashMap<(String, String), Option<i64>>>,
}

fn object_key(object: &DynamicObject) -> (String, String) {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

impl SpecGenerations {
    /// An object was added or modified: true when it is new or its spec changed. Objects
    /// without a generation always count as changed.
    pub fn applied(&mut self, object: &DynamicObject) -> bool {
        let generation = object.metadata.generation;
        let previous = self.seen.insert(object_key(object), generation);
        generation.is_none() || previous != Some(generation)
    }

    /// An object was deleted: true when it was known.
    pub fn deleted(&mut self, object: &DynamicObject) -> bool {
        self.seen.remove(&object_key(object)).is_some()
    }

    /// A re-list starts (the watch restarted).
    pub fn relist_started(&mut self) {
        self.relist = Some(HashMap::new());
    }

    /// An object of the re-list.
    pub fn relisted(&mut self, object: &DynamicObject) {
        self.relist
            .get_or_insert_with(HashMap::new)
            .insert(object_key(object), object.metadata.generation);
    }

    /// The re-list is complete: true when it differs from what was known.
    pub fn relist_done(&mut self) -> bool {
        let fresh = self.relist.take().unwrap_or_default();
        let changed = fresh != self.seen || fresh.values().any(Option::is_none);
        self.seen = fresh;
        changed
    }
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

    fn route_object(name: &str, generation: Option<i64>) -> DynamicObject {
        let mut object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": name, "namespace": "shop"},
        }))
        .expect("object");
        object.metadata.generation = generation;
        object
    }

    #[test]
    fn only_spec_changes_and_deletions_count() {
        let mut g = SpecGenerations::default();
        g.relist_started();
        g.relisted(&route_object("a", Some(1)));
        assert!(g.relist_done(), "the first list is a change");
        assert!(!g.applied(&route_object("a", Some(1))), "a status write");
        assert!(g.applied(&route_object("a", Some(2))), "a spec change");
        assert!(g.applied(&route_object("b", Some(1))), "a new object");
        assert!(g.deleted(&route_object("b", Some(1))));
        assert!(!g.deleted(&route_object("b", Some(1))), "deleted once");
        assert!(g.applied(&route_object("c", None)), "no generation: always");
        g.relist_started();
        g.relisted(&route_object("a", Some(2)));
        assert!(g.relist_done(), "c is gone after the re-list");
        g.relist_started();
        g.relisted(&route_object("a", Some(2)));
        assert!(!g.relist_done(), "the same objects again");
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
