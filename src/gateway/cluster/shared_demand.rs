//! Several gateway replicas scale the same Deployments, each from the demand it sees. So that
//! they never undo each other (one idle replica scaling to zero what another is serving), each
//! replica records what it wants in an annotation on the Deployment,
//! `demand.kfaas.dev/<gateway id>: "<replicas> <unix seconds>"`, and sets the replica count to
//! the largest fresh wish. A wish not refreshed within [`STALE_AFTER`] (its gateway is gone)
//! no longer counts and is removed by the next writer.

use std::{collections::BTreeMap, time::Duration};

/// Prefix of the annotations holding each gateway's wish.
pub const ANNOTATION_PREFIX: &str = "demand.kfaas.dev/";

/// A wish older than this is ignored: its gateway stopped refreshing it.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// How often a gateway rewrites a non-zero wish so it stays fresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(20);

/// What to write to a Deployment: the replica count and the annotation changes (`None`
/// removes an annotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleWrite {
    pub replicas: u32,
    pub annotations: BTreeMap<String, Option<String>>,
}

/// The annotation key of one gateway. Kubernetes limits the name part to 63 characters of
/// `[A-Za-z0-9._-]`; other characters become `-`, and long ids keep their end (pod names end
/// in their unique suffix).
pub fn annotation_key(gateway_id: &str) -> String {
    let cleaned: String = gateway_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tail = &cleaned[cleaned.len().saturating_sub(63)..];
    let trimmed = tail.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!(
        "{ANNOTATION_PREFIX}{}",
        if trimmed.is_empty() {
            "gateway"
        } else {
            trimmed
        }
    )
}

fn parse_wish(value: &str) -> Option<(u32, u64)> {
    let (replicas, at) = value.split_once(' ')?;
    Some((replicas.parse().ok()?, at.parse().ok()?))
}

/// Decides the write for this gateway's wish `desired`, given the Deployment's current
/// annotations and replica count, at `now` (unix seconds). Returns `None` when nothing needs
/// writing: the count is right, this gateway's wish is recorded and fresh enough, and no stale
/// wish lingers.
pub fn plan_write(
    gateway_id: &str,
    desired: u32,
    annotations: &BTreeMap<String, String>,
    current_replicas: Option<u32>,
    now: u64,
) -> Option<ScaleWrite> {
    let mine = annotation_key(gateway_id);
    let mut changes = BTreeMap::new();
    let mut others = 0;
    for (key, value) in annotations {
        if !key.starts_with(ANNOTATION_PREFIX) || *key == mine {
            continue;
        }
        match parse_wish(value) {
            Some((replicas, at)) if now.saturating_sub(at) <= STALE_AFTER.as_secs() => {
                others = others.max(replicas);
            }
            // Stale or unreadable: its gateway is gone; tidy it away.
            _ => {
                changes.insert(key.clone(), None);
            }
        }
    }
    let recorded = annotations.get(&mine).and_then(|v| parse_wish(v));
    let needs_record = match recorded {
        // A zero wish is recorded by removing the annotation.
        _ if desired == 0 => recorded.is_some(),
        Some((replicas, at)) => {
            replicas != desired || now.saturating_sub(at) >= REFRESH_EVERY.as_secs()
        }
        None => true,
    };
    if needs_record {
        let value = (desired > 0).then(|| format!("{desired} {now}"));
        changes.insert(mine, value);
    }
    let replicas = desired.max(others);
    if changes.is_empty() && current_replicas == Some(replicas) {
        return None;
    }
    Some(ScaleWrite {
        replicas,
        annotations: changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn an_idle_gateway_never_scales_below_what_another_gateway_wants() {
        let a = annotations(&[("demand.kfaas.dev/gw-b", "3 999990")]);
        let write = plan_write("gw-a", 0, &a, Some(3), NOW);
        assert_eq!(
            write, None,
            "count already right, nothing of gw-a to record"
        );
        let write = plan_write("gw-a", 1, &a, Some(3), NOW).expect("records its wish");
        assert_eq!(write.replicas, 3);
        assert_eq!(
            write.annotations.get("demand.kfaas.dev/gw-a"),
            Some(&Some(format!("1 {NOW}")))
        );
    }

    #[test]
    fn the_largest_fresh_wish_wins_and_stale_wishes_are_removed() {
        let a = annotations(&[
            ("demand.kfaas.dev/gw-b", "2 999990"),
            ("demand.kfaas.dev/gw-dead", "9 900000"),
            ("demand.kfaas.dev/gw-garbled", "many"),
            ("kfaas.dev/concurrency", "4"),
        ]);
        let write = plan_write("gw-a", 1, &a, Some(9), NOW).expect("write");
        assert_eq!(write.replicas, 2);
        assert_eq!(
            write.annotations.get("demand.kfaas.dev/gw-dead"),
            Some(&None)
        );
        assert_eq!(
            write.annotations.get("demand.kfaas.dev/gw-garbled"),
            Some(&None)
        );
        assert!(!write.annotations.contains_key("kfaas.dev/concurrency"));
    }

    #[test]
    fn a_zero_wish_removes_the_annotation_and_scales_to_zero_when_alone() {
        let a = annotations(&[("demand.kfaas.dev/gw-a", "2 999990")]);
        let write = plan_write("gw-a", 0, &a, Some(2), NOW).expect("write");
        assert_eq!(write.replicas, 0);
        assert_eq!(write.annotations.get("demand.kfaas.dev/gw-a"), Some(&None));
        assert_eq!(plan_write("gw-a", 0, &BTreeMap::new(), Some(0), NOW), None);
    }

    #[test]
    fn a_wish_is_refreshed_before_it_goes_stale() {
        let fresh = annotations(&[("demand.kfaas.dev/gw-a", &format!("2 {}", NOW - 5))]);
        assert_eq!(plan_write("gw-a", 2, &fresh, Some(2), NOW), None);
        let old = annotations(&[("demand.kfaas.dev/gw-a", &format!("2 {}", NOW - 25))]);
        let write = plan_write("gw-a", 2, &old, Some(2), NOW).expect("refresh");
        assert_eq!(
            write.annotations.get("demand.kfaas.dev/gw-a"),
            Some(&Some(format!("2 {NOW}")))
        );
    }

    #[test]
    fn annotation_keys_are_valid_names() {
        assert_eq!(
            annotation_key("kfaas-gateway-7d9f-x2k"),
            "demand.kfaas.dev/kfaas-gateway-7d9f-x2k"
        );
        assert_eq!(annotation_key("host:1234"), "demand.kfaas.dev/host-1234");
        let long = format!("{}-tail", "a".repeat(80));
        let key = annotation_key(&long);
        assert!(key.len() <= ANNOTATION_PREFIX.len() + 63);
        assert!(key.ends_with("-tail"));
        assert_eq!(annotation_key("::"), "demand.kfaas.dev/gateway");
    }
}
