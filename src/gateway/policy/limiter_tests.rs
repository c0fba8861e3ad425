use std::{sync::Arc, time::Duration};

use chrono::TimeZone;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use proptest::prelude::*;

use super::*;
use crate::{
    api::{ApiKeyRef, SecretKeyRef, UsagePlan, UsagePlanSpec, UsagePlanStage},
    gateway::policy::{api_keys::ApiKeyStore, clock::ManualClock},
};

fn store(throttle: Option<Throttle>, quota: Option<Quota>) -> ApiKeyStore {
    let mut plan = UsagePlan::new(
        "plan",
        UsagePlanSpec {
            stages: vec![
                UsagePlanStage {
                    api: "shop".into(),
                    stage: "prod".into(),
                },
                UsagePlanStage {
                    api: "shop".into(),
                    stage: "dev".into(),
                },
            ],
            throttle,
            quota,
            api_keys: vec![ApiKeyRef {
                id: "k".into(),
                secret_ref: SecretKeyRef {
                    name: "s".into(),
                    key: "apiKey".into(),
                },
            }],
        },
    );
    plan.metadata.namespace = Some("ns".into());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        data: Some([("apiKey".to_string(), ByteString(b"key".to_vec()))].into()),
        ..Default::default()
    };
    let (store, warnings) = ApiKeyStore::build(&[plan], &[secret]);
    assert!(warnings.is_empty(), "{warnings:?}");
    store
}

fn quota(limit: i64, period: &str, offset: i64) -> Option<Quota> {
    Some(Quota {
        limit,
        period: period.into(),
        offset,
    })
}

#[test]
fn stage_throttle_admits_burst_then_refills_at_rate() {
    let clock = ManualClock::at_epoch();
    let limiter = UsagePlanLimiter::new(clock.clone());
    let spec = ThrottleSpec::new(2.0, 3).expect("valid");
    for _ in 0..3 {
        assert_eq!(limiter.check("shop/prod", Some(&spec), None), Ok(()));
    }
    assert_eq!(
        limiter.check("shop/prod", Some(&spec), None),
        Err(Refusal::Throttled)
    );
    // Another stage has its own bucket.
    assert_eq!(limiter.check("shop/dev", Some(&spec), None), Ok(()));
    clock.advance(Duration::from_millis(499));
    assert_eq!(
        limiter.check("shop/prod", Some(&spec), None),
        Err(Refusal::Throttled)
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(limiter.check("shop/prod", Some(&spec), None), Ok(()));
    assert_eq!(
        limiter.check("shop/prod", Some(&spec), None),
        Err(Refusal::Throttled)
    );
}

#[test]
fn fractional_rates_are_honoured() {
    let clock = ManualClock::at_epoch();
    let limiter = UsagePlanLimiter::new(clock.clone());
    let spec = ThrottleSpec::new(0.5, 1).expect("valid");
    assert_eq!(limiter.check("s", Some(&spec), None), Ok(()));
    clock.advance(Duration::from_millis(1999));
    assert_eq!(
        limiter.check("s", Some(&spec), None),
        Err(Refusal::Throttled)
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(limiter.check("s", Some(&spec), None), Ok(()));
}

#[test]
fn bad_throttles_and_quotas_are_rejected() {
    assert!(ThrottleSpec::new(0.0, 1).is_err());
    assert!(ThrottleSpec::new(f64::NAN, 1).is_err());
    assert!(ThrottleSpec::new(1.0, 0).is_err());
    assert!(
        QuotaSpec::try_from(&Quota {
            limit: 0,
            period: "DAY".into(),
            offset: 0
        })
        .is_err()
    );
    assert!(
        QuotaSpec::try_from(&Quota {
            limit: 1,
            period: "day".into(),
            offset: 0
        })
        .is_err()
    );
}

#[test]
fn key_limits_are_shared_by_the_plans_stages() {
    let clock = ManualClock::at_epoch();
    let limiter = UsagePlanLimiter::new(clock.clone());
    let keys = store(
        Some(Throttle {
            rate_limit: 1.0,
            burst_limit: 2,
        }),
        None,
    );
    let prod = keys
        .authorize(Some("key"), "ns/shop", "prod")
        .expect("prod");
    let dev = keys.authorize(Some("key"), "ns/shop", "dev").expect("dev");
    assert_eq!(limiter.check("shop/prod", None, Some(&prod)), Ok(()));
    assert_eq!(limiter.check("shop/prod", None, Some(&prod)), Ok(()));
    assert_eq!(
        limiter.check("shop/prod", None, Some(&prod)),
        Err(Refusal::Throttled)
    );
    // The same key on another stage of the plan draws on the same bucket.
    assert_eq!(prod.limit_id(), dev.limit_id());
    assert_eq!(
        limiter.check("shop/dev", None, Some(&dev)),
        Err(Refusal::Throttled)
    );
    // Without a quota there is nothing to report but the key is listed.
    assert_eq!(limiter.usage().len(), 1);
}

#[test]
fn quota_counts_per_day_and_resets_at_midnight_utc() {
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 23, 59, 0).unwrap();
    let clock = ManualClock::new(start);
    let limiter = UsagePlanLimiter::new(clock.clone());
    let keys = store(None, quota(3, "DAY", 1));
    let grant = keys
        .authorize(Some("key"), "ns/shop", "prod")
        .expect("grant");
    // The offset counts in the first period: 2 of 3 left.
    assert_eq!(limiter.check("shop/prod", None, Some(&grant)), Ok(()));
    assert_eq!(limiter.check("shop/prod", None, Some(&grant)), Ok(()));
    assert_eq!(
        limiter.check("shop/prod", None, Some(&grant)),
        Err(Refusal::QuotaExceeded)
    );
    let usage = limiter.usage();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].used, usage[0].remaining), (3, Some(0)));
    assert_eq!(
        usage[0].resets_at,
        Some(Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 0).unwrap())
    );
    let json = serde_json::to_value(&usage[0]).expect("json");
    assert_eq!(json["keyId"], "k");
    assert_eq!(json["period"], "DAY");

    clock.advance(Duration::from_secs(60));
    assert_eq!(limiter.usage()[0].used, 0);
    for _ in 0..3 {
        assert_eq!(limiter.check("shop/prod", None, Some(&grant)), Ok(()));
    }
    assert_eq!(
        limiter.check("shop/prod", None, Some(&grant)),
        Err(Refusal::QuotaExceeded)
    );
}

#[test]
fn weeks_start_on_monday_and_months_on_the_first() {
    let sunday = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
    let monday = Utc.with_ymd_and_hms(2026, 3, 16, 0, 0, 0).unwrap();
    assert_eq!(
        QuotaPeriod::Week.index(sunday) + 1,
        QuotaPeriod::Week.index(monday)
    );
    assert_eq!(QuotaPeriod::Week.end(sunday), Some(monday));
    assert_eq!(
        QuotaPeriod::Week.index(monday),
        QuotaPeriod::Week.index(Utc.with_ymd_and_hms(2026, 3, 22, 23, 0, 0).unwrap())
    );
    let dec = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();
    assert_eq!(
        QuotaPeriod::Month.end(dec),
        Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(
        QuotaPeriod::Month.index(dec) + 1,
        QuotaPeriod::Month.index(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
    );
}

#[test]
fn a_throttled_request_uses_no_quota_and_a_wall_clock_jump_back_resets_nothing() {
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
    let clock = ManualClock::new(start);
    let limiter = UsagePlanLimiter::new(clock.clone());
    let keys = store(
        Some(Throttle {
            rate_limit: 1.0,
            burst_limit: 1,
        }),
        quota(10, "MONTH", 0),
    );
    let grant = keys
        .authorize(Some("key"), "ns/shop", "prod")
        .expect("grant");
    assert_eq!(limiter.check("x", None, Some(&grant)), Ok(()));
    assert_eq!(
        limiter.check("x", None, Some(&grant)),
        Err(Refusal::Throttled)
    );
    assert_eq!(limiter.usage()[0].used, 1);
    clock.set_utc(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
    clock.advance(Duration::from_secs(1));
    assert_eq!(limiter.check("x", None, Some(&grant)), Ok(()));
    assert_eq!(limiter.usage()[0].used, 2);
}

#[test]
fn retain_forgets_deleted_keys() {
    let clock = ManualClock::at_epoch();
    let limiter = UsagePlanLimiter::new(clock);
    let keys = store(None, quota(10, "DAY", 0));
    let grant = keys
        .authorize(Some("key"), "ns/shop", "prod")
        .expect("grant");
    let spec = ThrottleSpec::new(1.0, 1).expect("valid");
    assert_eq!(limiter.check("st", Some(&spec), Some(&grant)), Ok(()));
    limiter.retain(|_| true, |id| keys.limit_ids().any(|k| k == id));
    assert_eq!(limiter.usage().len(), 1);
    limiter.retain(|_| false, |_| false);
    assert!(limiter.usage().is_empty());
    assert_eq!(limiter.check("st", Some(&spec), None), Ok(()));
}

proptest! {
    /// For any arrival pattern, in any window [a, b] the bucket admits at most
    /// rate × (b − a) + burst requests.
    #[test]
    fn bucket_never_admits_more_than_rate_times_elapsed_plus_burst(
        rate in 0.1f64..2000.0,
        burst in 1i64..40,
        gaps in proptest::collection::vec(0u64..50_000_000, 1..160),
    ) {
        let clock = ManualClock::at_epoch();
        let limiter = UsagePlanLimiter::new(clock.clone());
        let spec = ThrottleSpec::new(rate, burst).expect("valid");
        let mut admitted_at = Vec::new();
        let mut now = 0u64;
        for gap in gaps {
            clock.advance(Duration::from_nanos(gap));
            now += gap;
            if limiter.check("s", Some(&spec), None).is_ok() {
                admitted_at.push(now);
            }
        }
        for i in 0..admitted_at.len() {
            for j in i..admitted_at.len() {
                let elapsed = (admitted_at[j] - admitted_at[i]) as f64 / 1e9;
                let count = (j - i + 1) as f64;
                prop_assert!(
                    count <= rate * elapsed + burst as f64 + 1e-9,
                    "{count} admitted in {elapsed}s at rate {rate} burst {burst}"
                );
            }
        }
    }

    /// Requests spaced at the configured rate are never refused.
    #[test]
    fn steady_traffic_at_the_rate_is_admitted(rate in 0.1f64..1000.0, n in 1usize..100) {
        let clock = ManualClock::at_epoch();
        let limiter = UsagePlanLimiter::new(clock.clone());
        let spec = ThrottleSpec::new(rate, 1).expect("valid");
        let step = Duration::from_nanos((1e9 / rate).ceil() as u64);
        for _ in 0..n {
            prop_assert!(limiter.check("s", Some(&spec), None).is_ok());
            clock.advance(step);
        }
    }
}

#[test]
fn concurrent_checks_admit_exactly_the_burst() {
    let clock = ManualClock::at_epoch();
    let limiter = Arc::new(UsagePlanLimiter::new(clock));
    let spec = ThrottleSpec::new(1.0, 50).expect("valid");
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                s.spawn(move || {
                    (0..100)
                        .filter(|_| limiter.check("s", Some(&spec), None).is_ok())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    assert_eq!(admitted, 50);
}
