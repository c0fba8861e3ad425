//! UsagePlan: how many of its API keys can be read from their Secrets.
//!
//! The status is shared: the gateway writes usage counts into it with its own field manager, so
//! this controller applies only `observedGeneration`, `conditions` and `keys`.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{Api, ResourceExt, runtime::controller::Action};

use super::{
    Context,
    condition::{Readiness, with_ready},
    error::Error,
    status::apply_status,
};
use crate::api::{ApiKeyRef, UsagePlan};

/// Why one API key cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    SecretNotFound {
        id: String,
        secret: String,
    },
    KeyNotInSecret {
        id: String,
        secret: String,
        key: String,
    },
    SecretUnreadable {
        id: String,
        secret: String,
        error: String,
    },
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretNotFound { id, secret } => {
                write!(f, "key {id}: Secret {secret} not found")
            }
            Self::KeyNotInSecret { id, secret, key } => {
                write!(f, "key {id}: Secret {secret} has no key {key}")
            }
            Self::SecretUnreadable { id, secret, error } => {
                write!(f, "key {id}: cannot read Secret {secret}: {error}")
            }
        }
    }
}

/// Checks one key against its Secret (None when the Secret does not exist).
pub fn check_key(key: &ApiKeyRef, secret: Option<&Secret>) -> Result<(), KeyProblem> {
    let name = &key.secret_ref.name;
    let Some(secret) = secret else {
        return Err(KeyProblem::SecretNotFound {
            id: key.id.clone(),
            secret: name.clone(),
        });
    };
    let present = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key.secret_ref.key))
        .is_some_and(|v: &ByteString| !v.0.is_empty());
    if present {
        Ok(())
    } else {
        Err(KeyProblem::KeyNotInSecret {
            id: key.id.clone(),
            secret: name.clone(),
            key: key.secret_ref.key.clone(),
        })
    }
}

/// The `Ready` condition, given the problems found among `total` keys.
pub fn readiness(total: usize, problems: &[KeyProblem]) -> Readiness {
    if problems.is_empty() {
        return Readiness::ready("KeysLoaded", format!("{total} API keys loaded"));
    }
    let reason = if problems
        .iter()
        .all(|p| matches!(p, KeyProblem::KeyNotInSecret { .. }))
    {
        "SecretKeyNotFound"
    } else {
        "SecretNotFound"
    };
    let list = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Readiness::not_ready(
        reason,
        format!("{} of {total} API keys missing: {list}", problems.len()),
    )
}

/// The part of the status this controller owns.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedStatus {
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub keys: i32,
}

impl OwnedStatus {
    fn of(plan: &UsagePlan) -> Option<Self> {
        plan.status.as_ref().map(|s| Self {
            observed_generation: s.observed_generation,
            conditions: s.conditions.clone(),
            keys: s.keys,
        })
    }

    /// Only these three fields: a field left out of the apply stays with its owner.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "observedGeneration": self.observed_generation,
            "conditions": self.conditions,
            "keys": self.keys,
        })
    }
}

pub fn desired_status(plan: &UsagePlan, problems: &[KeyProblem], now: Timestamp) -> OwnedStatus {
    let total = plan.spec.api_keys.len();
    let previous = OwnedStatus::of(plan)
        .map(|s| s.conditions)
        .unwrap_or_default();
    let generation = plan.metadata.generation;
    OwnedStatus {
        observed_generation: generation,
        conditions: with_ready(&previous, &readiness(total, problems), generation, now),
        keys: i32::try_from(total.saturating_sub(problems.len())).unwrap_or(i32::MAX),
    }
}

pub async fn reconcile(plan: Arc<UsagePlan>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = plan
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut problems = Vec::new();
    for key in &plan.spec.api_keys {
        let checked = match secrets.get_opt(&key.secret_ref.name).await {
            Ok(secret) => check_key(key, secret.as_ref()),
            // Forbidden or similar: the gateway cannot read it either.
            Err(kube::Error::Api(status)) if status.code < 500 => {
                Err(KeyProblem::SecretUnreadable {
                    id: key.id.clone(),
                    secret: key.secret_ref.name.clone(),
                    error: status.message,
                })
            }
            Err(e) => return Err(e.into()),
        };
        if let Err(problem) = checked {
            problems.push(problem);
        }
    }
    let status = desired_status(&plan, &problems, Timestamp::now());
    if OwnedStatus::of(&plan).as_ref() != Some(&status) {
        let api: Api<UsagePlan> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &plan.name_any(), status.to_json()).await?;
    }
    // Secrets are not watched (that would mean watching every Secret): look again soon while
    // keys are missing.
    Ok(Action::requeue(Duration::from_secs(
        if problems.is_empty() { 300 } else { 15 },
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::api::{SecretKeyRef, UsagePlanSpec, UsagePlanStatus};

    fn key(id: &str, secret: &str) -> ApiKeyRef {
        ApiKeyRef {
            id: id.into(),
            secret_ref: SecretKeyRef {
                name: secret.into(),
                key: "apiKey".into(),
            },
        }
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_key_needs_its_secret_and_its_entry() {
        let k = key("alice", "alice-key");
        assert_eq!(
            check_key(&k, Some(&secret(&[("apiKey", "s3cret")]))),
            Ok(())
        );
        assert_eq!(
            check_key(&k, None),
            Err(KeyProblem::SecretNotFound {
                id: "alice".into(),
                secret: "alice-key".into()
            })
        );
        let wrong = check_key(&k, Some(&secret(&[("other", "x")]))).expect_err("no entry");
        assert_eq!(
            wrong.to_string(),
            "key alice: Secret alice-key has no key apiKey"
        );
    }

    #[test]
    fn each_missing_secret_is_named_and_keys_counts_the_loaded_ones() {
        let plan = UsagePlan {
            metadata: ObjectMeta {
                name: Some("gold".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: UsagePlanSpec {
                api_keys: vec![key("a", "sa"), key("b", "sb"), key("c", "sc")],
                ..UsagePlanSpec::default()
            },
            status: Some(UsagePlanStatus::default()),
        };
        let problems = vec![
            KeyProblem::SecretNotFound {
                id: "b".into(),
                secret: "sb".into(),
            },
            KeyProblem::SecretNotFound {
                id: "c".into(),
                secret: "sc".into(),
            },
        ];
        let now = Timestamp::from_second(1).expect("time");
        let status = desired_status(&plan, &problems, now);
        assert_eq!(status.keys, 1);
        assert_eq!(status.observed_generation, Some(3));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert!(
            ready.message.contains("Secret sb not found"),
            "{}",
            ready.message
        );
        assert!(
            ready.message.contains("Secret sc not found"),
            "{}",
            ready.message
        );
        let json = status.to_json();
        let mut fields: Vec<&String> = json.as_object().expect("object").keys().collect();
        fields.sort();
        assert_eq!(fields, vec!["conditions", "keys", "observedGeneration"]);
        let ok = desired_status(&plan, &[], now);
        assert_eq!(ok.keys, 3);
        assert_eq!(ok.conditions[0].reason, "KeysLoaded");
    }

    #[tokio::test]
    async fn the_status_apply_carries_only_the_fields_this_controller_owns() {
        use crate::controller::fixtures::{MockApi, Step, not_found};
        let plan = UsagePlan {
            metadata: ObjectMeta {
                name: Some("gold".into()),
                namespace: Some("apps".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: UsagePlanSpec {
                api_keys: vec![key("a", "sa"), key("b", "sb")],
                ..UsagePlanSpec::default()
            },
            status: None,
        };
        let secret_a = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sa"},
            "data": {"apiKey": "czNjcmV0"},
        });
        let echo = serde_json::to_value(&plan).expect("plan JSON");
        let mock = MockApi::start(vec![
            Step::new("GET", "/api/v1/namespaces/apps/secrets/sa", 200, secret_a),
            Step::new(
                "GET",
                "/api/v1/namespaces/apps/secrets/sb",
                404,
                not_found("sb"),
            ),
            Step::new(
                "PATCH",
                "/apis/kfaas.dev/v1alpha1/namespaces/apps/usageplans/gold/status",
                200,
                echo,
            ),
        ])
        .await;
        let action = reconcile(Arc::new(plan), mock.context())
            .await
            .expect("reconciled");
        assert_eq!(action, Action::requeue(Duration::from_secs(15)));
        let seen = mock.verify();
        let patch = &seen[2].body;
        assert!(
            seen[2].query.contains("fieldManager=kfaas-controller"),
            "{}",
            seen[2].query
        );
        assert_eq!(patch["kind"], serde_json::json!("UsagePlan"));
        let mut fields: Vec<&String> = patch["status"]
            .as_object()
            .expect("status")
            .keys()
            .collect();
        fields.sort();
        assert_eq!(fields, vec!["conditions", "keys", "observedGeneration"]);
        assert_eq!(patch["status"]["keys"], serde_json::json!(1));
        let message = patch["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("Secret sb not found"), "{message}");
    }
}
