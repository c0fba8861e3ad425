//! Leader election over a `coordination.k8s.io` Lease, as client-go's leaderelection does it:
//! the holder renews `renewTime`; anyone may take a lease whose renewal is older than its
//! duration. Writes carry the resourceVersion read, so two candidates never both win.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};

/// What a candidate does with the lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and renews it.
    Follow { holder: String },
}

/// Decides from the lease as read at `now`.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Acquire;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(h) if h == me => return Decision::Renew,
        Some(h) => h,
    };
    let Some(last) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Decision::Acquire;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    if now.duration_since(last.0) > duration {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_owned(),
        }
    }
}

/// The lease spec to write after `decision` (None for [`Decision::Follow`]).
pub fn next_spec(
    previous: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    duration: Duration,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    let previous = previous.cloned().unwrap_or_default();
    match decision {
        Decision::Follow { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..previous
        }),
        Decision::Acquire => {
            let changed_hands = previous
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty() && h != me);
            Some(LeaseSpec {
                holder_identity: Some(me.to_owned()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(seconds),
                lease_transitions: Some(
                    previous.lease_transitions.unwrap_or(0) + i32::from(changed_hands),
                ),
                ..previous
            })
        }
    }
}

/// The spec that gives the lease up at once: no holder, so the next candidate takes it
/// without waiting for it to expire.
pub fn released_spec(previous: &LeaseSpec, me: &str, now: Timestamp) -> Option<LeaseSpec> {
    (previous.holder_identity.as_deref() == Some(me)).then(|| LeaseSpec {
        holder_identity: None,
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(1),
        ..previous.clone()
    })
}

/// The outcome of one read-decide-write round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// The lease is ours (acquired or renewed).
    Leading,
    /// Another candidate holds it.
    Following,
    /// Our write lost a race with another write: read again.
    Conflict,
}

/// One candidate for the lease `namespace/name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Reads the lease and acquires or renews it when the decision says so.
    async fn try_lead(&self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let now = Timestamp::now();
        let decision = decide(spec, &self.identity, now);
        if let Decision::Follow { holder } = &decision {
            tracing::debug!(%holder, "another controller leads");
        }
        let Some(next) = next_spec(spec, &decision, &self.identity, self.duration, now) else {
            return Ok(Attempt::Following);
        };
        let written = match current {
            Some(mut lease) => {
                lease.spec = Some(next);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_lead().await {
                Ok(Attempt::Leading) => return,
                Ok(Attempt::Following | Attempt::Conflict) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.duration / 5).await;
        }
    }

    /// Keeps renewing; returns when leadership is lost: another holder, or no successful
    /// renewal within the renew deadline (two thirds of the lease, so this replica stops
    /// before another may take over).
    pub async fn hold(&self) {
        let deadline = self.duration * 2 / 3;
        let mut last_renewal = tokio::time::Instant::now();
        let mut pause = self.duration / 3;
        loop {
            tokio::time::sleep(pause).await;
            pause = self.duration / 3;
            match self.try_lead().await {
                Ok(Attempt::Leading) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::Following) => {
                    tracing::error!(lease = %self.name, "another controller took the lease");
                    return;
                }
                // Someone wrote the lease between our read and write: read again soon.
                Ok(Attempt::Conflict) => pause = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "cannot renew the lease");
                    pause = Duration::from_secs(1);
                }
            }
            if last_renewal.elapsed() > deadline {
                tracing::error!(lease = %self.name, "no renewal within the deadline");
                return;
            }
        }
    }

    /// Gives the lease up if this candidate holds it, so a successor starts at once.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let Some(spec) = lease
                .spec
                .as_ref()
                .and_then(|s| released_spec(s, &self.identity, Timestamp::now()))
            else {
                return Ok(());
            };
            lease.spec = Some(spec);
            self.api
                .replace(&lease.name_any(), &PostParams::default(), &lease)
                .await
                .map(drop)
        }
        .await;
        match result {
            Ok(()) => tracing::info!(lease = %self.name, "released the lease"),
            Err(e) => tracing::warn!(error = %e, lease = %self.name, "cannot release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("time")
    }

    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_or_empty_lease_is_taken() {
        assert_eq!(decide(None, "me", at(100)), Decision::Acquire);
        let empty = LeaseSpec::default();
        assert_eq!(decide(Some(&empty), "me", at(100)), Decision::Acquire);
    }

    #[test]
    fn a_fresh_lease_of_another_is_followed_an_expired_one_taken() {
        let lease = held("other", 100);
        assert_eq!(
            decide(Some(&lease), "me", at(110)),
            Decision::Follow {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&lease), "me", at(115)),
            Decision::Follow {
                holder: "other".into()
            },
            "exactly at the duration it still holds"
        );
        assert_eq!(decide(Some(&lease), "me", at(116)), Decision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed_even_late() {
        let lease = held("me", 100);
        assert_eq!(decide(Some(&lease), "me", at(500)), Decision::Renew);
        let next = next_spec(
            Some(&lease),
            &Decision::Renew,
            "me",
            Duration::from_secs(15),
            at(500),
        )
        .expect("renewal");
        assert_eq!(next.renew_time, Some(MicroTime(at(500))));
        assert_eq!(next.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(next.lease_transitions, Some(2));
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let lease = held("other", 100);
        let next = next_spec(
            Some(&lease),
            &Decision::Acquire,
            "me",
            Duration::from_secs(15),
            at(200),
        )
        .expect("acquired");
        assert_eq!(next.holder_identity.as_deref(), Some("me"));
        assert_eq!(next.acquire_time, Some(MicroTime(at(200))));
        assert_eq!(next.lease_transitions, Some(3));
        let first = next_spec(
            None,
            &Decision::Acquire,
            "me",
            Duration::from_secs(15),
            at(1),
        )
        .expect("created");
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.lease_duration_seconds, Some(15));
        assert!(
            next_spec(
                Some(&lease),
                &Decision::Follow {
                    holder: "other".into()
                },
                "me",
                Duration::from_secs(15),
                at(1)
            )
            .is_none()
        );
    }

    #[test]
    fn releasing_empties_only_our_own_lease() {
        let released = released_spec(&held("me", 100), "me", at(101)).expect("ours");
        assert_eq!(released.holder_identity, None);
        assert_eq!(decide(Some(&released), "next", at(101)), Decision::Acquire);
        assert!(released_spec(&held("other", 100), "me", at(101)).is_none());
    }

    mod against_a_scripted_api {
        use serde_json::{Value, json};

        use super::*;
        use crate::controller::fixtures::{MockApi, Step, not_found};

        const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/kfaas-controller";

        fn lease(holder: &str, renewed: Timestamp) -> Value {
            serde_json::to_value(Lease {
                metadata: ObjectMeta {
                    name: Some("kfaas-controller".into()),
                    namespace: Some("ops".into()),
                    resource_version: Some("7".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(holder.into()),
                    renew_time: Some(MicroTime(renewed)),
                    lease_duration_seconds: Some(15),
                    ..LeaseSpec::default()
                }),
            })
            .expect("lease JSON")
        }

        fn elector(mock: &MockApi) -> LeaderElector {
            LeaderElector::new(mock.client.clone(), "ops", "kfaas-controller", "me")
        }

        #[tokio::test]
        async fn a_missing_lease_is_created_with_us_as_holder() {
            let mock = MockApi::start(vec![
                Step::new("GET", LEASE, 404, not_found("kfaas-controller")),
                Step::new(
                    "POST",
                    "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
                    201,
                    Value::Null,
                ),
            ])
            .await;
            assert_eq!(
                elector(&mock).try_lead().await.expect("lead"),
                Attempt::Leading
            );
            let seen = mock.verify();
            assert_eq!(seen[1].body["spec"]["holderIdentity"], json!("me"));
            assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], json!(15));
        }

        #[tokio::test]
        async fn a_renewal_that_loses_a_race_is_a_conflict_not_a_loss() {
            let mock = MockApi::start(vec![
                Step::new("GET", LEASE, 200, lease("me", Timestamp::now())),
                Step::new("PUT", LEASE, 409, json!({"kind": "Status", "code": 409})),
            ])
            .await;
            assert_eq!(
                elector(&mock).try_lead().await.expect("lead"),
                Attempt::Conflict
            );
            let seen = mock.verify();
            // The write carries the version read: the API server refuses a stale one.
            assert_eq!(seen[1].body["metadata"]["resourceVersion"], json!("7"));
        }

        #[tokio::test]
        async fn a_lease_renewed_by_another_is_left_alone() {
            let mock = MockApi::start(vec![Step::new(
                "GET",
                LEASE,
                200,
                lease("other", Timestamp::now()),
            )])
            .await;
            assert_eq!(
                elector(&mock).try_lead().await.expect("read"),
                Attempt::Following
            );
            mock.verify();
        }
    }
}
