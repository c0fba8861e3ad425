//! `event::build_v1` / `build_v2` on arbitrary request parts (header values, query string, body,
//! paths): the result must always be JSON that `aws_lambda_events` parses back, with the body
//! intact, whatever bytes the client sent.
#![no_main]

use std::{collections::BTreeMap, net::IpAddr};

use arbitrary::Arbitrary;
use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::DateTime;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use kfaas::gateway::event::{EventInput, build_v1, build_v2};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Request<'a> {
    headers: Vec<(u8, &'a [u8])>,
    query: Option<&'a str>,
    body: &'a [u8],
    path: &'a str,
    params: Vec<(String, String)>,
    stage_variables: BTreeMap<String, String>,
    millis: i64,
    ip: [u8; 16],
}

/// A few real names, so that content-type, cookie and user-agent handling are exercised.
const NAMES: [&str; 6] = [
    "content-type",
    "cookie",
    "user-agent",
    "host",
    "x-a",
    "accept",
];

fuzz_target!(|req: Request<'_>| {
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let name = HeaderName::from_static(NAMES[*name as usize % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let input = EventInput {
        method: &Method::POST,
        headers: &headers,
        query: req.query,
        body: req.body,
        raw_path: req.path,
        path: req.path,
        resource_path: "/{proxy+}",
        route_key: "POST /{proxy+}",
        path_parameters: &req.params,
        stage: "prod",
        stage_variables: &req.stage_variables,
        request_id: "id",
        request_time: DateTime::from_timestamp_millis(req.millis).unwrap_or_default(),
        api_id: "api",
        domain_name: None,
        source_ip: IpAddr::from(req.ip),
        protocol: "HTTP/1.1",
        api_key_id: None,
        authorizer: None,
    };
    let v1 = build_v1(&input).expect("1.0 event");
    let v1: ApiGatewayProxyRequest = serde_json::from_slice(&v1).expect("1.0 event parses");
    assert_eq!(body_of(v1.body, v1.is_base64_encoded), req.body);
    let v2 = build_v2(&input).expect("2.0 event");
    let v2: ApiGatewayV2httpRequest = serde_json::from_slice(&v2).expect("2.0 event parses");
    assert_eq!(body_of(v2.body, v2.is_base64_encoded), req.body);
});

fn body_of(body: Option<String>, base64: bool) -> Vec<u8> {
    let body = body.unwrap_or_default();
    if base64 {
        STANDARD.decode(body).expect("valid base64")
    } else {
        body.into_bytes()
    }
}
