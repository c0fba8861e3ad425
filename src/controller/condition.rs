//! The `Ready` condition every kfaas kind carries.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Condition type kfaas writes.
pub const READY: &str = "Ready";

/// What a reconcile concluded about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// `existing` with its `Ready` condition replaced by `readiness`. The transition time moves
/// only when the status flips, so writing the same outcome twice changes nothing.
pub fn with_ready(
    existing: &[Condition],
    readiness: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if readiness.ready { "True" } else { "False" };
    let previous = existing.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let ready = Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: readiness.reason.to_owned(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    out.insert(0, ready);
    out
}

/// Whether `readiness` says something other than the `Ready` condition in `existing`: a
/// failure is announced (event, warning) once, not on every reconcile that meets it again.
pub fn ready_changed(existing: &[Condition], readiness: &Readiness) -> bool {
    let status = if readiness.ready { "True" } else { "False" };
    !existing.iter().any(|c| {
        c.type_ == READY
            && c.status == status
            && c.reason == readiness.reason
            && c.message == readiness.message
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid time")
    }

    #[test]
    fn same_status_keeps_the_transition_time() {
        let first = with_ready(&[], &Readiness::ready("Ready", "ok"), Some(1), at(100));
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        let again = with_ready(
            &first,
            &Readiness::ready("Ready", "1 of 1"),
            Some(2),
            at(200),
        );
        assert_eq!(again[0].last_transition_time, Time(at(100)));
        assert_eq!(again[0].message, "1 of 1");
        assert_eq!(again[0].observed_generation, Some(2));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn a_flip_moves_the_transition_time_and_other_types_stay() {
        let other = Condition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(5)),
        };
        let first = with_ready(
            std::slice::from_ref(&other),
            &Readiness::ready("Ready", "ok"),
            None,
            at(100),
        );
        let flipped = with_ready(&first, &Readiness::not_ready("Broken", "no"), None, at(300));
        assert_eq!(flipped[0].status, "False");
        assert_eq!(flipped[0].reason, "Broken");
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert_eq!(flipped[1], other);
    }

    #[test]
    fn only_a_different_outcome_counts_as_a_change() {
        let broken = Readiness::not_ready("Broken", "no");
        assert!(ready_changed(&[], &broken));
        let conditions = with_ready(&[], &broken, None, at(1));
        assert!(!ready_changed(&conditions, &broken));
        assert!(ready_changed(
            &conditions,
            &Readiness::not_ready("Broken", "other")
        ));
        assert!(ready_changed(
            &conditions,
            &Readiness::ready("Broken", "no")
        ));
    }
}
