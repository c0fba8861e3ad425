//! Writing status and reporting failures, the same way for every kind.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use serde::de::DeserializeOwned;

use super::{Context, FIELD_MANAGER, condition::ready_changed, error::Error};

/// Server-side applies `status` (a JSON object holding only the fields kfaas owns) to the
/// object's status subresource. Fields other managers own there (the gateway's usage counts)
/// stay as they are, and applying the same value again changes nothing.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Publishes a Warning event on `obj` for a failed reconcile, unless its `Ready` condition
/// (`previous`) already tells this failure; a failure to publish is logged, never returned
/// (the status carries the reason).
pub async fn report_failure<K>(ctx: &Context, obj: &K, previous: &[Condition], error: &Error)
where
    K: Resource<DynamicType = ()>,
{
    if !ready_changed(previous, &error.readiness()) {
        tracing::debug!(name = %obj.name_any(), reason = error.reason(), "still failing");
        return;
    }
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        reason = error.reason(),
        error = %error,
        "reconcile failed"
    );
    let event = Event {
        type_: EventType::Warning,
        reason: error.reason().to_owned(),
        note: Some(truncate(&error.to_string(), 1000)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (events refuse longer notes).
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("héllo", 3), "hé");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
