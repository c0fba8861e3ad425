use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;

use super::*;
use crate::api::{
    ApiKeyRef, Quota, SecretKeyRef, Throttle, UsagePlan, UsagePlanSpec, UsagePlanStage,
};

fn secret(name: &str, data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: (!data.is_empty()).then(|| {
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>()
        }),
        string_data: (!string_data.is_empty()).then(|| {
            string_data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..Default::default()
    }
}

fn plan(name: &str, stages: &[(&str, &str)], keys: &[(&str, &str)]) -> UsagePlan {
    let mut p = UsagePlan::new(
        name,
        UsagePlanSpec {
            stages: stages
                .iter()
                .map(|(a, s)| UsagePlanStage {
                    api: a.to_string(),
                    stage: s.to_string(),
                })
                .collect(),
            throttle: Some(Throttle {
                rate_limit: 10.0,
                burst_limit: 5,
            }),
            quota: Some(Quota {
                limit: 100,
                period: "DAY".into(),
                offset: 0,
            }),
            api_keys: keys
                .iter()
                .map(|(id, secret)| ApiKeyRef {
                    id: id.to_string(),
                    secret_ref: SecretKeyRef {
                        name: secret.to_string(),
                        key: "apiKey".into(),
                    },
                })
                .collect(),
        },
    );
    p.metadata.namespace = Some("default".into());
    p
}

#[test]
fn keys_are_found_by_value_and_valid_only_on_their_plans_stages() {
    let plans = [plan(
        "gold",
        &[("shop", "prod")],
        &[("alice", "s-alice"), ("bob", "s-bob")],
    )];
    let secrets = [
        secret("s-alice", &[("apiKey", "alice-secret-value\n")], &[]),
        secret("s-bob", &[], &[("apiKey", "bob-secret-value")]),
    ];
    let (store, warnings) = ApiKeyStore::build(&plans, &secrets);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(store.len(), 2);

    let alice = store.lookup("alice-secret-value").expect("alice");
    assert_eq!(alice.id, "alice");
    assert_eq!(alice.plan, "default/gold");
    assert_eq!(alice.quota.map(|q| q.limit), Some(100));
    assert_eq!(
        store.lookup("bob-secret-value").map(|k| k.id.as_str()),
        Some("bob")
    );
    assert!(store.lookup("alice-secret-valu").is_none());
    assert!(store.lookup("").is_none());

    let grant = store
        .authorize(Some("alice-secret-value"), "default/shop", "prod")
        .expect("covered");
    assert_eq!(grant.key_id(), "alice");
    assert_eq!((grant.api(), grant.stage()), ("default/shop", "prod"));
    assert!(grant.limit_id().contains("alice"));

    for (presented, api, stage) in [
        (None, "default/shop", "prod"),
        (Some(""), "default/shop", "prod"),
        (Some("wrong"), "default/shop", "prod"),
        (Some("alice-secret-value"), "default/shop", "dev"),
        (Some("alice-secret-value"), "default/other", "prod"),
        // The same API and stage names in another namespace are another API.
        (Some("alice-secret-value"), "team-b/shop", "prod"),
    ] {
        assert_eq!(
            store.authorize(presented, api, stage).map(|g| g.key_id()),
            Err(Refusal::Forbidden),
            "{presented:?} {api} {stage}"
        );
    }
}

#[test]
fn the_store_holds_no_key_value() {
    let plans = [plan("p", &[("a", "s")], &[("k", "sec")])];
    let secrets = [secret("sec", &[("apiKey", "very-secret-api-key")], &[])];
    let (store, _) = ApiKeyStore::build(&plans, &secrets);
    let dump = format!("{store:?}");
    assert!(!dump.contains("very-secret-api-key"));
}

#[test]
fn build_problems_are_warnings_naming_the_object() {
    let mut bad_quota = plan("bad", &[("a", "s")], &[("k3", "s-ok")]);
    if let Some(q) = bad_quota.spec.quota.as_mut() {
        q.period = "YEAR".into();
    }
    let plans = [
        plan(
            "p",
            &[("a", "s")],
            &[("k1", "missing"), ("k2", "s-empty"), ("k4", "s-ok")],
        ),
        bad_quota,
    ];
    let secrets = [
        secret("s-empty", &[("apiKey", "  ")], &[]),
        secret("s-ok", &[("apiKey", "fine-key")], &[]),
    ];
    let (store, warnings) = ApiKeyStore::build(&plans, &secrets);
    assert_eq!(store.len(), 1);
    let objects: Vec<&str> = warnings.iter().map(|w| w.object.as_str()).collect();
    assert_eq!(
        objects,
        [
            "UsagePlan/default/bad",
            "Secret/default/missing",
            "Secret/default/s-empty"
        ]
    );
    assert!(warnings[0].message.contains("YEAR"));
    assert!(warnings[1].message.contains("k1"));
    assert_eq!(store.keys_per_plan().get("default/p"), Some(&1));
}

#[test]
fn one_value_in_two_plans_serves_each_plans_stages() {
    let plans = [
        plan("a", &[("shop", "prod")], &[("k-prod", "same")]),
        plan("b", &[("shop", "dev")], &[("k-dev", "same")]),
        plan("c", &[("shop", "dev")], &[("k-clash", "same")]),
    ];
    let secrets = [secret("same", &[("apiKey", "shared")], &[])];
    let (store, warnings) = ApiKeyStore::build(&plans, &secrets);
    assert_eq!(store.len(), 2);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].object, "UsagePlan/default/c");
    let prod = store
        .authorize(Some("shared"), "default/shop", "prod")
        .expect("prod");
    let dev = store
        .authorize(Some("shared"), "default/shop", "dev")
        .expect("dev");
    assert_eq!((prod.key_id(), dev.key_id()), ("k-prod", "k-dev"));
    assert_ne!(prod.limit_id(), dev.limit_id());
    assert_eq!(store.limit_ids().count(), 2);
}
