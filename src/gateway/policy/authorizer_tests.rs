use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequest, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayV2CustomAuthorizerV2Request,
};
use chrono::{TimeZone, Utc};
use http::{HeaderValue, Method};
use serde_json::json;

use super::*;
use crate::gateway::policy::clock::ManualClock;

fn spec(
    kind: AuthorizerType,
    format: PayloadFormat,
    simple: bool,
    sources: &[&str],
) -> FunctionAuthorizer {
    FunctionAuthorizer {
        function: "auth".into(),
        kind,
        identity_sources: sources.iter().map(|s| s.to_string()).collect(),
        result_ttl_seconds: 300,
        payload_format: format,
        simple_responses: simple,
    }
}

fn config(
    kind: AuthorizerType,
    format: PayloadFormat,
    simple: bool,
    sources: &[&str],
) -> AuthorizerConfig {
    AuthorizerConfig::from_spec(&spec(kind, format, simple, sources), "ns").expect("valid")
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn identity_sources_parse_in_both_spellings() {
    assert_eq!(
        IdentitySource::parse("$request.header.Authorization"),
        Ok(IdentitySource::Header("authorization".into()))
    );
    assert_eq!(
        IdentitySource::parse("method.request.querystring.token"),
        Ok(IdentitySource::Query("token".into()))
    );
    assert_eq!(
        IdentitySource::parse("$stageVariables.key"),
        Ok(IdentitySource::StageVariable("key".into()))
    );
    assert_eq!(
        IdentitySource::parse("$context.sourceIp"),
        Ok(IdentitySource::Context("sourceIp".into()))
    );
    assert!(IdentitySource::parse("$request.body.x").is_err());
    assert!(IdentitySource::parse("$request.header.").is_err());
    let token_with_query = spec(
        AuthorizerType::Token,
        PayloadFormat::V1,
        false,
        &["$request.querystring.t"],
    );
    assert!(AuthorizerConfig::from_spec(&token_with_query, "ns").is_err());
}

#[test]
fn every_identity_value_must_be_present_and_non_empty() {
    let cfg = config(
        AuthorizerType::Request,
        PayloadFormat::V2,
        true,
        &[
            "$request.header.X-Token",
            "$request.querystring.user",
            "$stageVariables.tenant",
            "$context.sourceIp",
        ],
    );
    let vars = BTreeMap::from([("tenant".to_string(), "acme".to_string())]);
    let h = headers(&[("x-token", "a"), ("x-token", "b")]);
    let context = [("sourceIp", "10.0.0.1")];
    let inputs = IdentityInputs {
        headers: &h,
        query: Some("user=j%20d&x=1&user=k"),
        stage_variables: &vars,
        context: &context,
    };
    assert_eq!(
        cfg.identity(&inputs),
        Ok(vec![
            "a,b".into(),
            "j d,k".into(),
            "acme".into(),
            "10.0.0.1".into()
        ])
    );
    let empty = headers(&[("x-token", "")]);
    let missing = IdentityInputs {
        headers: &empty,
        ..inputs
    };
    let err = cfg.identity(&missing).expect_err("missing");
    assert_eq!(err.refusal(), Refusal::Unauthorized);
    assert!(err.to_string().contains("x-token"));
    let no_query = IdentityInputs {
        query: None,
        ..inputs
    };
    assert!(cfg.identity(&no_query).is_err());
}

struct Request {
    method: Method,
    headers: HeaderMap,
    vars: BTreeMap<String, String>,
    params: Vec<(String, String)>,
}

fn request() -> Request {
    Request {
        method: Method::GET,
        headers: headers(&[("authorization", "tok-1"), ("cookie", "a=1")]),
        vars: BTreeMap::from([("v".to_string(), "1".to_string())]),
        params: vec![("id".into(), "7".into())],
    }
}

fn input(r: &Request) -> EventInput<'_> {
    EventInput {
        method: &r.method,
        headers: &r.headers,
        query: Some("q=1"),
        body: b"secret body",
        raw_path: "/prod/orders/7",
        path: "/orders/7",
        resource_path: "/orders/{id}",
        route_key: "GET /orders/{id}",
        path_parameters: &r.params,
        stage: "prod",
        stage_variables: &r.vars,
        request_id: "req-1",
        request_time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        api_id: "shop",
        domain_name: Some("api.example"),
        source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        protocol: "HTTP/1.1",
        api_key_id: None,
        authorizer: None,
    }
}

const ARN: &str = "arn:aws:execute-api:local:000000000000:shop/prod/GET/orders/7";

#[test]
fn events_match_the_aws_lambda_events_types() {
    let r = request();
    assert_eq!(method_arn("shop", "prod", "GET", "/orders/7"), ARN);

    let token = config(
        AuthorizerType::Token,
        PayloadFormat::V1,
        false,
        &["$request.header.Authorization"],
    );
    let bytes = build_event(&token, &input(&r), &["tok-1".into()]).expect("event");
    let event: ApiGatewayCustomAuthorizerRequest =
        serde_json::from_slice(&bytes).expect("TOKEN shape");
    assert_eq!(event.type_.as_deref(), Some("TOKEN"));
    assert_eq!(event.authorization_token.as_deref(), Some("tok-1"));
    assert_eq!(event.method_arn.as_deref(), Some(ARN));

    let v1 = config(
        AuthorizerType::Request,
        PayloadFormat::V1,
        false,
        &["$request.header.Authorization"],
    );
    let bytes = build_event(&v1, &input(&r), &["tok-1".into()]).expect("event");
    let raw: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(
        raw.get("body").is_none(),
        "an authorizer never sees the body"
    );
    assert_eq!(raw["identitySource"], "tok-1");
    let event: ApiGatewayCustomAuthorizerRequestTypeRequest =
        serde_json::from_slice(&bytes).expect("REQUEST 1.0 shape");
    assert_eq!(event.type_.as_deref(), Some("REQUEST"));
    assert_eq!(event.method_arn.as_deref(), Some(ARN));
    assert_eq!(event.resource.as_deref(), Some("/orders/{id}"));
    assert_eq!(
        event.path_parameters.get("id").map(String::as_str),
        Some("7")
    );
    assert_eq!(event.headers["authorization"], "tok-1");

    let v2 = config(
        AuthorizerType::Request,
        PayloadFormat::V2,
        true,
        &["$request.header.Authorization"],
    );
    let bytes = build_event(&v2, &input(&r), &["tok-1".into()]).expect("event");
    let raw: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(raw.get("body").is_none());
    let event: ApiGatewayV2CustomAuthorizerV2Request =
        serde_json::from_slice(&bytes).expect("REQUEST 2.0 shape");
    assert_eq!(event.version.as_deref(), Some("2.0"));
    assert_eq!(event.type_.as_deref(), Some("REQUEST"));
    assert_eq!(event.route_arn.as_deref(), Some(ARN));
    assert_eq!(event.identity_source, Some(vec!["tok-1".to_string()]));
    assert_eq!(event.route_key.as_deref(), Some("GET /orders/{id}"));
    assert_eq!(event.cookies, ["a=1"]);
}

fn policy(effect: &str, resource: Value) -> Vec<u8> {
    json!({
        "principalId": "user-1",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]
        },
        "context": {"tenant": "acme", "level": 3, "admin": false}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn policies_allow_only_the_arns_they_name() {
    let cfg = config(
        AuthorizerType::Token,
        PayloadFormat::V1,
        false,
        &["$request.header.Authorization"],
    );
    let allow = parse_response(&cfg, &policy("Allow", json!(ARN))).expect("parses");
    let decision = allow.decide(ARN);
    assert_eq!(decision.check(), Ok(()));
    let ctx = decision
        .event_authorizer(PayloadFormat::V1)
        .expect("allowed");
    assert_eq!(
        ctx,
        json!({"principalId": "user-1", "tenant": "acme", "level": 3, "admin": false})
    );
    let ctx = decision
        .event_authorizer(PayloadFormat::V2)
        .expect("allowed");
    assert_eq!(ctx["lambda"]["tenant"], "acme");
    // Implicit deny for a route the policy does not name.
    let other = "arn:aws:execute-api:local:000000000000:shop/prod/DELETE/orders/7";
    assert_eq!(allow.decide(other).check(), Err(Refusal::AccessDenied));

    let wildcard = parse_response(
        &cfg,
        &policy("Allow", json!(["arn:aws:execute-api:*:*:shop/prod/GET/*"])),
    )
    .expect("parses");
    assert_eq!(wildcard.decide(ARN).check(), Ok(()));
    assert_eq!(wildcard.decide(other).check(), Err(Refusal::AccessDenied));

    let deny = parse_response(&cfg, &policy("Deny", json!("*"))).expect("parses");
    assert_eq!(deny.decide(ARN), Decision::Deny);
    assert_eq!(Refusal::AccessDenied.status().as_u16(), 403);

    // An explicit deny wins over an allow.
    let both = json!({
        "principalId": "u",
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": ["execute-api:*"], "Effect": "Allow", "Resource": ["*"]},
            {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "arn:*/DELETE/*"}
        ]}
    });
    let both = parse_response(&cfg, both.to_string().as_bytes()).expect("parses");
    assert_eq!(both.decide(ARN).check(), Ok(()));
    assert_eq!(both.decide(other), Decision::Deny);
}

#[test]
fn malformed_answers_are_authorizer_failures() {
    let cfg = config(
        AuthorizerType::Token,
        PayloadFormat::V1,
        false,
        &["$request.header.Authorization"],
    );
    for body in [
        &b"not json"[..],
        b"[]",
        b"{\"principalId\":\"u\"}",
        b"{\"policyDocument\":{\"Statement\":[{\"Effect\":\"Maybe\",\"Action\":\"*\",\"Resource\":\"*\"}]}}",
        b"{\"policyDocument\":{\"Statement\":[{\"Effect\":\"Allow\",\"Resource\":\"*\"}]}}",
        b"{\"policyDocument\":{\"Statement\":[]},\"context\":{\"nested\":{\"a\":1}}}",
    ] {
        let err = parse_response(&cfg, body).expect_err("malformed");
        assert_eq!(err.refusal(), Refusal::AuthorizerFailed, "{err}");
    }
    let simple = config(
        AuthorizerType::Request,
        PayloadFormat::V2,
        true,
        &["$request.header.Authorization"],
    );
    let err = parse_response(&simple, b"{\"isAuthorized\":\"yes\"}").expect_err("not a bool");
    assert_eq!(err.refusal(), Refusal::AuthorizerFailed);
    assert_eq!(
        AuthorizerError::from_function_error("Unauthorized").refusal(),
        Refusal::Unauthorized
    );
    assert_eq!(
        AuthorizerError::from_function_error("boom").refusal(),
        Refusal::AuthorizerFailed
    );
    assert_eq!(Refusal::AuthorizerFailed.status().as_u16(), 500);

    let thrown = |message: &str| LambdaOutcome::Failed {
        kind: "Unhandled".into(),
        body: Bytes::from(json!({"errorMessage": message, "errorType": "Error"}).to_string()),
    };
    assert_eq!(
        read_outcome(&cfg, &thrown("Unauthorized")).map_err(|e| e.refusal()),
        Err(Refusal::Unauthorized)
    );
    assert_eq!(
        read_outcome(&cfg, &thrown("database down")).map_err(|e| e.refusal()),
        Err(Refusal::AuthorizerFailed)
    );
    let timeout = LambdaOutcome::Failed {
        kind: "Sandbox.Timedout".into(),
        body: Bytes::new(),
    };
    assert_eq!(
        read_outcome(&cfg, &timeout).map_err(|e| e.refusal()),
        Err(Refusal::AuthorizerFailed)
    );
    let answered = LambdaOutcome::Result(Bytes::from(policy("Allow", json!(ARN))));
    assert!(read_outcome(&cfg, &answered).is_ok());
}

#[test]
fn simple_responses_allow_or_deny_with_context() {
    let cfg = config(
        AuthorizerType::Request,
        PayloadFormat::V2,
        true,
        &["$request.header.Authorization"],
    );
    let yes = parse_response(
        &cfg,
        br#"{"isAuthorized":true,"context":{"user":{"id":1}}}"#,
    )
    .expect("ok");
    let decision = yes.decide(ARN);
    assert_eq!(
        decision.event_authorizer(PayloadFormat::V2),
        Some(json!({"lambda": {"user": {"id": 1}}}))
    );
    let no = parse_response(&cfg, br#"{"isAuthorized":false}"#).expect("ok");
    assert_eq!(no.decide(ARN).check(), Err(Refusal::AccessDenied));
    // simpleResponses only exists with payload 2.0: a 1.0 authorizer answers with a policy.
    let v1 = config(
        AuthorizerType::Request,
        PayloadFormat::V1,
        true,
        &["$request.header.Authorization"],
    );
    assert!(parse_response(&v1, br#"{"isAuthorized":true}"#).is_err());
}

#[test]
fn wildcards_match_like_iam() {
    assert!(wildcard_match("*", ""));
    assert!(wildcard_match("a*c", "abbbc"));
    assert!(wildcard_match("a?c", "abc"));
    assert!(!wildcard_match("a?c", "ac"));
    assert!(wildcard_match("arn:*/GET/*", "arn:x/prod/GET/a/b"));
    assert!(!wildcard_match("arn:*/GET/*", "arn:x/prod/POST/a"));
    assert!(!wildcard_match("abc", "abcd"));
    assert!(action_matches("Execute-API:Invoke"));
    assert!(action_matches("execute-api:*"));
    assert!(!action_matches("execute-api:ManageConnections"));
}

#[test]
fn the_cache_never_serves_one_identity_to_another() {
    let clock = ManualClock::at_epoch();
    let cache = DecisionCache::new(clock.clone(), 1000);
    let cfg = config(
        AuthorizerType::Request,
        PayloadFormat::V2,
        true,
        &["$request.header.A", "$request.header.B"],
    );
    let allow = Arc::new(AuthorizerResponse::Simple {
        authorized: true,
        context: Map::new(),
    });
    let deny = Arc::new(AuthorizerResponse::Simple {
        authorized: false,
        context: Map::new(),
    });
    let alice = vec!["a,b".to_string(), "c".to_string()];
    let mallory = vec!["a".to_string(), "b,c".to_string()];
    cache.put(&cfg, &alice, allow.clone());
    assert_eq!(cache.get(&cfg, &alice).as_deref(), Some(&*allow));
    // Same joined text, different values: a different identity.
    assert!(cache.get(&cfg, &mallory).is_none());
    cache.put(&cfg, &mallory, deny.clone());
    assert_eq!(cache.get(&cfg, &alice).as_deref(), Some(&*allow));
    assert_eq!(cache.get(&cfg, &mallory).as_deref(), Some(&*deny));
    // Another authorizer with the same identity does not share answers.
    let mut other = cfg.clone();
    other.function = "ns/other".into();
    assert!(cache.get(&other, &alice).is_none());

    clock.advance(Duration::from_secs(299));
    assert!(cache.get(&cfg, &alice).is_some());
    clock.advance(Duration::from_secs(1));
    assert!(cache.get(&cfg, &alice).is_none(), "expired after the TTL");

    let mut uncached = cfg.clone();
    uncached.ttl = Duration::ZERO;
    cache.put(&uncached, &alice, allow.clone());
    assert!(cache.get(&uncached, &alice).is_none());
    cache.put(&cfg, &[], allow);
    assert!(cache.get(&cfg, &[]).is_none());
}

#[test]
fn a_cached_policy_is_still_evaluated_per_route() {
    let clock = ManualClock::at_epoch();
    let cache = DecisionCache::new(clock, 100);
    let cfg = config(
        AuthorizerType::Token,
        PayloadFormat::V1,
        false,
        &["$request.header.Authorization"],
    );
    let response = parse_response(&cfg, &policy("Allow", json!(ARN))).expect("parses");
    let identity = vec!["tok-1".to_string()];
    cache.put(&cfg, &identity, Arc::new(response));
    let cached = cache.get(&cfg, &identity).expect("cached");
    assert_eq!(cached.decide(ARN).check(), Ok(()));
    let other = "arn:aws:execute-api:local:000000000000:shop/prod/GET/admin";
    assert_eq!(cached.decide(other).check(), Err(Refusal::AccessDenied));
}
