//! The policies applied in the gateway's order to one simulated request, as the handler will.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use serde_json::json;

use super::*;
use crate::{
    api::{
        ApiKeyRef, IpRules, JwtAuthorizer, SecretKeyRef, Throttle, UsagePlan, UsagePlanSpec,
        UsagePlanStage,
    },
    gateway::policy::{
        Refusal,
        cache::CacheLookup,
        clock::{Clock, ManualClock},
        jwks::tests::{FakeFetcher, JWKS},
    },
};

const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");

fn stage_spec() -> StageSpec {
    StageSpec {
        api: "shop".into(),
        throttle: Some(Throttle {
            rate_limit: 100.0,
            burst_limit: 100,
        }),
        ip_rules: Some(IpRules {
            allow: vec!["198.51.100.0/24".into()],
            deny: vec!["198.51.100.66".into()],
            trusted_proxies: vec!["10.0.0.0/8".into()],
        }),
        ..Default::default()
    }
}

fn route_auth() -> RouteAuth {
    RouteAuth {
        kind: AuthType::Jwt,
        api_key_required: true,
        jwt: Some(JwtAuthorizer {
            issuer: "https://issuer.example".into(),
            audiences: vec!["api://shop".into()],
            jwks_uri: Some("http://issuer.example/jwks".into()),
            jwks_secret: None,
            scopes: vec!["orders:read".into()],
            identity_source: None,
        }),
        authorizer: None,
    }
}

fn keys() -> ApiKeyStore {
    let mut plan = UsagePlan::new(
        "gold",
        UsagePlanSpec {
            stages: vec![UsagePlanStage {
                api: "shop".into(),
                stage: "prod".into(),
            }],
            throttle: Some(Throttle {
                rate_limit: 1.0,
                burst_limit: 2,
            }),
            quota: None,
            api_keys: vec![ApiKeyRef {
                id: "alice".into(),
                secret_ref: SecretKeyRef {
                    name: "alice".into(),
                    key: "apiKey".into(),
                },
            }],
        },
    );
    plan.metadata.namespace = Some("default".into());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("alice".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "apiKey".into(),
                ByteString(b"alice-key-0123456789".to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let (store, warnings) = ApiKeyStore::build(&[plan], &[secret]);
    assert!(warnings.is_empty(), "{warnings:?}");
    store
}

fn token(now: i64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let claims = json!({
        "iss": "https://issuer.example", "aud": "api://shop", "sub": "u1",
        "exp": now + 3600, "scope": "orders:read",
    });
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test key");
    encode(&header, &claims, &key).expect("signs")
}

struct World {
    clock: Arc<ManualClock>,
    state: PolicyState,
    stage: StagePolicies,
    route: RoutePolicies,
}

fn world() -> World {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap());
    let fetcher = FakeFetcher::with(vec![Ok(Bytes::from_static(JWKS))]);
    let state = PolicyState::new(clock.clone(), fetcher, PolicyLimits::default());
    let stage = StagePolicies::build("default", "shop", "prod", &stage_spec()).expect("stage");
    state.set_api_keys(keys(), [stage.id.as_str()]);
    let cache = RouteCache {
        ttl_seconds: 30,
        key_headers: vec!["authorization".into()],
        ..Default::default()
    };
    let cors = Cors {
        allow_origins: vec!["https://app.example".into()],
        allow_methods: vec!["GET".into()],
        ..Default::default()
    };
    let route =
        RoutePolicies::build(&route_auth(), Some(&cors), Some(&cache), "default").expect("route");
    World {
        clock,
        state,
        stage,
        route,
    }
}

/// The handler's sequence for a GET, up to the point where it would invoke the function.
async fn admit(w: &World, peer: &str, headers: &HeaderMap) -> Result<CacheLookup, Refusal> {
    let source = w
        .stage
        .ip
        .source_ip(peer.parse::<IpAddr>().expect("ip"), headers);
    w.stage.ip.check(source)?;
    if let Some(jwt) = &w.route.jwt {
        let value = headers.get("authorization").and_then(|v| v.to_str().ok());
        w.state
            .jwt
            .authorize(jwt, value)
            .await
            .map_err(|e| e.refusal())?;
    }
    let store = w.state.api_keys.load();
    let presented = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let grant = if w.route.api_key_required {
        Some(store.authorize(presented, "default/shop", "prod")?)
    } else {
        None
    };
    w.state
        .limiter
        .check(&w.stage.id, w.stage.throttle.as_ref(), grant.as_ref())?;
    let Some(cache) = &w.route.cache else {
        return Ok(CacheLookup::Bypass);
    };
    let key = ResponseCache::key(
        &w.stage.id,
        "GET /orders",
        &Method::GET,
        cache,
        headers,
        None,
        &[],
    );
    Ok(w.state.responses.lookup(cache, &Method::GET, headers, &key))
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("value"));
    }
    h
}

#[tokio::test]
async fn a_request_passes_every_policy_or_gets_api_gateways_refusal() {
    let w = world();
    let now = w.clock.utc().timestamp();
    let bearer = format!("Bearer {}", token(now));
    let good = headers(&[
        ("authorization", bearer.clone()),
        ("x-api-key", "alice-key-0123456789".into()),
        ("x-forwarded-for", "198.51.100.7".into()),
    ]);
    assert!(matches!(
        admit(&w, "10.0.0.1", &good).await,
        Ok(CacheLookup::Miss)
    ));

    // Store the answer; the next identical request is a hit (and uses the key's second token).
    let cache = w.route.cache.as_ref().expect("cached route");
    let key = ResponseCache::key(
        &w.stage.id,
        "GET /orders",
        &Method::GET,
        cache,
        &good,
        None,
        &[],
    );
    let body = Bytes::from_static(b"[]");
    assert!(w.state.responses.store(
        cache,
        &Method::GET,
        key,
        StatusCode::OK,
        &HeaderMap::new(),
        &body
    ));
    assert!(matches!(
        admit(&w, "10.0.0.1", &good).await,
        Ok(CacheLookup::Hit(_))
    ));
    // The key's burst of 2 is spent.
    assert_eq!(
        admit(&w, "10.0.0.1", &good).await.map(|_| ()),
        Err(Refusal::Throttled)
    );
    w.clock.advance(Duration::from_secs(1));
    assert!(admit(&w, "10.0.0.1", &good).await.is_ok());

    // An address outside the allow list, a denied one, and a spoofed X-Forwarded-For.
    let mut h = good.clone();
    h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.66"));
    assert_eq!(
        admit(&w, "10.0.0.1", &h).await.map(|_| ()),
        Err(Refusal::Forbidden)
    );
    assert_eq!(
        admit(&w, "203.0.113.5", &good).await.map(|_| ()),
        Err(Refusal::Forbidden)
    );

    // No token: 401; no key: 403.
    let mut h = good.clone();
    h.remove("authorization");
    assert_eq!(
        admit(&w, "10.0.0.1", &h).await.map(|_| ()),
        Err(Refusal::Unauthorized)
    );
    let mut h = good.clone();
    h.remove("x-api-key");
    assert_eq!(
        admit(&w, "10.0.0.1", &h).await.map(|_| ()),
        Err(Refusal::Forbidden)
    );

    // CORS headers on the gateway's own refusal.
    let cors = w.route.cors.as_ref().expect("cors");
    let mut request = good.clone();
    request.insert("origin", HeaderValue::from_static("https://app.example"));
    let mut answer = HeaderMap::new();
    cors.apply(&request, &mut answer);
    assert_eq!(answer["access-control-allow-origin"], "https://app.example");
}

#[test]
fn bad_settings_leave_the_object_out() {
    let mut auth = route_auth();
    auth.jwt = None;
    assert_eq!(
        RoutePolicies::build(&auth, None, None, "ns"),
        Err(PolicyConfigError::MissingAuthSettings(AuthType::Jwt))
    );
    let auth = RouteAuth {
        kind: AuthType::Function,
        ..Default::default()
    };
    assert!(RoutePolicies::build(&auth, None, None, "ns").is_err());
    let mut spec = stage_spec();
    if let Some(rules) = spec.ip_rules.as_mut() {
        rules.deny.push("not-an-ip".into());
    }
    assert!(matches!(
        StagePolicies::build("default", "shop", "prod", &spec),
        Err(PolicyConfigError::IpRules(_))
    ));
    let open = RoutePolicies::build(
        &RouteAuth::default(),
        None,
        Some(&RouteCache::default()),
        "ns",
    )
    .expect("open route");
    assert!(open.cache.is_none(), "ttl 0 turns caching off");
    assert!(!open.api_key_required && open.jwt.is_none() && open.authorizer.is_none());
}

#[test]
fn replacing_the_keys_forgets_removed_keys_counters() {
    let w = world();
    let store = w.state.api_keys.load();
    let grant = store
        .authorize(Some("alice-key-0123456789"), "default/shop", "prod")
        .expect("grant");
    assert_eq!(
        w.state.limiter.check(&w.stage.id, None, Some(&grant)),
        Ok(())
    );
    assert_eq!(w.state.limiter.usage().len(), 1);
    w.state.set_api_keys(keys(), [w.stage.id.as_str()]);
    assert_eq!(
        w.state.limiter.usage().len(),
        1,
        "alice is still configured"
    );
    w.state
        .set_api_keys(ApiKeyStore::default(), [w.stage.id.as_str()]);
    assert!(w.state.limiter.usage().is_empty());
}
