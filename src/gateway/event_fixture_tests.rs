//! The events we build, against AWS's published sample events (tests/fixtures/apigw/README.md):
//! same keys both ways, and the same values once both are parsed with `aws_lambda_events`.

use std::collections::BTreeSet;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use serde_json::Value;

use super::{tests::Req, *};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/apigw/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every key path of a JSON document, not descending into maps whose keys are request data.
fn key_paths(v: &Value) -> BTreeSet<String> {
    const DATA_MAPS: [&str; 9] = [
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "stageVariables",
        "requestContext.authorizer",
        // mTLS client certificates: kfaas terminates no mTLS.
        "requestContext.authentication",
        "requestContext.identity.clientCert",
    ];
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        let Value::Object(map) = v else { return };
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.insert(path.clone());
            if !DATA_MAPS.contains(&path.as_str()) {
                walk(child, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out.retain(|p| !p.starts_with("requestContext.authentication"));
    out
}

/// Our event has every key of the fixture, and no key beyond it except `allowed_extra`.
fn assert_same_keys(ours: &Value, theirs: &Value, allowed_extra: &[&str]) {
    let (ours, theirs) = (key_paths(ours), key_paths(theirs));
    let missing: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        missing.is_empty(),
        "keys missing from our event: {missing:?}"
    );
    let extra: Vec<_> = ours
        .difference(&theirs)
        .filter(|k| !allowed_extra.contains(&k.as_str()))
        .collect();
    assert!(extra.is_empty(), "keys AWS does not send: {extra:?}");
}

/// The request a 1.0 fixture describes, as the gateway would see it.
fn req_from_v1_fixture(raw: &Value) -> Req {
    let f: ApiGatewayProxyRequest = serde_json::from_value(raw.clone()).unwrap();
    let c = &f.request_context;
    let mut query: Vec<String> = Vec::new();
    // `iter` yields a name once per value.
    for (name, value) in f.multi_value_query_string_parameters.iter() {
        query.push(format!("{name}={value}"));
    }
    let mut r = Req::bare();
    r.method = f.http_method.clone();
    r.headers = f.multi_value_headers.clone();
    r.query = Some(query.join("&"));
    r.body = f.body.clone().unwrap_or_default().into_bytes();
    r.path = f.path.clone().unwrap();
    r.raw_path = c.path.clone().unwrap_or_else(|| r.path.clone());
    r.resource_path = f.resource.clone().unwrap();
    r.path_parameters = f.path_parameters.clone().into_iter().collect();
    r.stage = c.stage.clone().unwrap();
    r.stage_variables = f.stage_variables.clone().into_iter().collect();
    r.request_id = c.request_id.clone().unwrap();
    r.request_time = DateTime::from_timestamp_millis(c.request_time_epoch).unwrap();
    r.api_id = c.apiid.clone().unwrap();
    r.domain_name = c.domain_name.clone();
    r.source_ip = c.identity.source_ip.as_deref().unwrap().parse().unwrap();
    r.protocol = "HTTP/1.1".into();
    r.api_key_id = c.identity.api_key_id.clone();
    r.authorizer = raw["requestContext"].get("authorizer").cloned();
    r
}

fn check_v1_fixture(name: &str) -> (ApiGatewayProxyRequest, ApiGatewayProxyRequest) {
    let raw = fixture(name);
    let ours_json = req_from_v1_fixture(&raw).v1();
    // Keys AWS sends that a hand-made sample may lack (all in AWS's documented 1.0 example).
    let documented = [
        "isBase64Encoded",
        "requestContext.path",
        "requestContext.protocol",
        "requestContext.extendedRequestId",
        "requestContext.identity.principalOrgId",
    ];
    assert_same_keys(&ours_json, &raw, &documented);
    let ours: ApiGatewayProxyRequest = serde_json::from_value(ours_json).unwrap();
    let theirs: ApiGatewayProxyRequest = serde_json::from_value(raw).unwrap();
    assert_eq!(ours.resource, theirs.resource);
    assert_eq!(ours.path, theirs.path);
    assert_eq!(ours.http_method, theirs.http_method);
    assert_eq!(ours.headers, theirs.headers);
    assert_eq!(ours.multi_value_headers, theirs.multi_value_headers);
    assert_eq!(
        ours.multi_value_query_string_parameters,
        theirs.multi_value_query_string_parameters
    );
    assert_eq!(ours.path_parameters, theirs.path_parameters);
    assert_eq!(ours.stage_variables, theirs.stage_variables);
    assert_eq!(ours.body, theirs.body);
    assert_eq!(ours.is_base64_encoded, theirs.is_base64_encoded);
    let (o, t) = (&ours.request_context, &theirs.request_context);
    assert_eq!(o.stage, t.stage);
    assert_eq!(o.request_id, t.request_id);
    assert_eq!(o.resource_path, t.resource_path);
    assert_eq!(o.http_method, t.http_method);
    assert_eq!(o.request_time, t.request_time);
    assert_eq!(o.request_time_epoch, t.request_time_epoch);
    assert_eq!(o.apiid, t.apiid);
    assert_eq!(o.domain_name, t.domain_name);
    assert_eq!(o.authorizer, t.authorizer);
    assert_eq!(o.identity.source_ip, t.identity.source_ip);
    assert_eq!(o.identity.user_agent, t.identity.user_agent);
    assert_eq!(o.identity.api_key_id, t.identity.api_key_id);
    (ours, theirs)
}

#[test]
fn v1_matches_aws_lambda_go_fixture() {
    let (ours, theirs) = check_v1_fixture("go-apigw-request.json");
    assert_eq!(ours.query_string_parameters, theirs.query_string_parameters);
}

#[test]
fn v1_matches_rust_runtime_multi_value_fixture() {
    let (ours, _) = check_v1_fixture("rust-example-apigw-request-multi-value-parameters.json");
    // The sample keeps the first repeated value here; AWS's documentation, the last.
    assert_eq!(ours.query_string_parameters.first("name"), Some("me2"));
}

/// The request a 2.0 fixture describes, as the gateway would see it.
fn req_from_v2_fixture(raw: &Value) -> Req {
    let f: ApiGatewayV2httpRequest = serde_json::from_value(raw.clone()).unwrap();
    let c = &f.request_context;
    let mut r = Req::bare();
    r.method = c.http.method.clone();
    r.headers = f.headers.clone();
    if let Some(cookies) = &f.cookies {
        r.header("cookie", &cookies.join("; "));
    }
    if !r.headers.contains_key(header::USER_AGENT) {
        r.header("user-agent", c.http.user_agent.as_deref().unwrap());
    }
    r.query = f.raw_query_string.clone();
    r.body = f.body.clone().unwrap_or_default().into_bytes();
    if r.body.first() == Some(&b'{') {
        r.header("content-type", "application/json");
    }
    r.raw_path = f.raw_path.clone().unwrap();
    r.path = r.raw_path.clone();
    r.route_key = f.route_key.clone().unwrap();
    r.path_parameters = f.path_parameters.clone().into_iter().collect();
    r.stage = c.stage.clone().unwrap();
    r.stage_variables = f.stage_variables.clone().into_iter().collect();
    r.request_id = c.request_id.clone().unwrap();
    r.request_time = DateTime::from_timestamp_millis(c.time_epoch).unwrap();
    r.api_id = c.apiid.clone().unwrap();
    r.domain_name = c.domain_name.clone();
    r.protocol = c.http.protocol.clone().unwrap();
    r.authorizer = raw["requestContext"].get("authorizer").cloned();
    r
}

fn check_v2_fixture(name: &str) {
    let raw = fixture(name);
    let req = req_from_v2_fixture(&raw);
    let ours_json = req.v2();
    assert_same_keys(&ours_json, &raw, &[]);
    let ours: ApiGatewayV2httpRequest = serde_json::from_value(ours_json).unwrap();
    let theirs: ApiGatewayV2httpRequest = serde_json::from_value(raw).unwrap();
    assert_eq!(ours.version, theirs.version);
    assert_eq!(ours.route_key, theirs.route_key);
    assert_eq!(ours.raw_path, theirs.raw_path);
    assert_eq!(ours.raw_query_string, theirs.raw_query_string);
    assert_eq!(ours.cookies, theirs.cookies);
    let mut our_headers = ours.headers.clone();
    for extra in [header::USER_AGENT, header::CONTENT_TYPE] {
        if !theirs.headers.contains_key(&extra) {
            our_headers.remove(extra);
        }
    }
    assert_eq!(our_headers, theirs.headers);
    assert_eq!(ours.query_string_parameters, theirs.query_string_parameters);
    assert_eq!(ours.path_parameters, theirs.path_parameters);
    assert_eq!(ours.stage_variables, theirs.stage_variables);
    assert_eq!(ours.body, theirs.body);
    assert_eq!(ours.is_base64_encoded, theirs.is_base64_encoded);
    let (o, t) = (&ours.request_context, &theirs.request_context);
    assert_eq!(o.route_key, t.route_key);
    assert_eq!(o.stage, t.stage);
    assert_eq!(o.request_id, t.request_id);
    assert_eq!(o.authorizer, t.authorizer);
    assert_eq!(o.apiid, t.apiid);
    assert_eq!(o.domain_name, t.domain_name);
    assert_eq!(o.domain_prefix, t.domain_prefix);
    assert_eq!(o.time_epoch, t.time_epoch);
    assert_eq!(o.http.method, t.http.method);
    assert_eq!(o.http.path, t.http.path);
    assert_eq!(o.http.protocol, t.http.protocol);
    assert_eq!(o.http.user_agent, t.http.user_agent);
    // The samples' times disagree with their epochs (and one lacks the space before +0000).
    assert_eq!(
        o.time.as_deref(),
        Some(
            req.request_time
                .format(REQUEST_TIME_FORMAT)
                .to_string()
                .as_str()
        )
    );
}

#[test]
fn v2_matches_aws_lambda_go_no_authorizer_fixture() {
    check_v2_fixture("go-apigw-v2-request-no-authorizer.json");
}

#[test]
fn v2_matches_aws_lambda_go_jwt_authorizer_fixture() {
    check_v2_fixture("go-apigw-v2-request-jwt-authorizer.json");
}

#[test]
fn v2_matches_rust_runtime_multi_value_fixture() {
    check_v2_fixture("rust-example-apigw-v2-request-multi-value-parameters.json");
}
