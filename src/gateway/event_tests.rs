use std::net::Ipv4Addr;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use base64::Engine as _;
use http::HeaderValue;
use serde_json::{Value, json};

use super::*;

/// Owns everything an `EventInput` borrows.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
    pub(super) query: Option<String>,
    pub(super) body: Vec<u8>,
    pub(super) raw_path: String,
    pub(super) path: String,
    pub(super) resource_path: String,
    pub(super) route_key: String,
    pub(super) path_parameters: Vec<(String, String)>,
    pub(super) stage: String,
    pub(super) stage_variables: BTreeMap<String, String>,
    pub(super) request_id: String,
    pub(super) request_time: DateTime<Utc>,
    pub(super) api_id: String,
    pub(super) domain_name: Option<String>,
    pub(super) source_ip: IpAddr,
    pub(super) protocol: String,
    pub(super) api_key_id: Option<String>,
    pub(super) authorizer: Option<Value>,
}

impl Req {
    /// `GET /prod/orders/42` routed to `GET /orders/{id}`, with nothing optional set.
    pub(super) fn bare() -> Self {
        Req {
            method: Method::GET,
            headers: HeaderMap::new(),
            query: None,
            body: Vec::new(),
            raw_path: "/prod/orders/42".into(),
            path: "/orders/42".into(),
            resource_path: "/orders/{id}".into(),
            route_key: "GET /orders/{id}".into(),
            path_parameters: Vec::new(),
            stage: "prod".into(),
            stage_variables: BTreeMap::new(),
            request_id: "c6af9ac6-7b61-11e6-9a41-93e8deadbeef".into(),
            request_time: DateTime::from_timestamp_millis(1_583_348_638_390).unwrap(),
            api_id: "orders-api".into(),
            domain_name: None,
            source_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            protocol: "HTTP/1.1".into(),
            api_key_id: None,
            authorizer: None,
        }
    }

    pub(super) fn full() -> Self {
        let mut r = Req::bare();
        r.header("host", "api.example.com")
            .header("user-agent", "curl/8.5.0")
            .header("x-multi", "a")
            .header("x-multi", "b");
        r.path_parameters = vec![("id".into(), "42".into())];
        r.domain_name = Some("api.example.com".into());
        r
    }

    pub(super) fn header(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.headers
            .append(name, HeaderValue::from_str(value).unwrap());
        self
    }

    pub(super) fn input(&self) -> EventInput<'_> {
        EventInput {
            method: &self.method,
            headers: &self.headers,
            query: self.query.as_deref(),
            body: &self.body,
            raw_path: &self.raw_path,
            path: &self.path,
            resource_path: &self.resource_path,
            route_key: &self.route_key,
            path_parameters: &self.path_parameters,
            stage: &self.stage,
            stage_variables: &self.stage_variables,
            request_id: &self.request_id,
            request_time: self.request_time,
            api_id: &self.api_id,
            domain_name: self.domain_name.as_deref(),
            source_ip: self.source_ip,
            protocol: &self.protocol,
            api_key_id: self.api_key_id.as_deref(),
            authorizer: self.authorizer.as_ref(),
        }
    }

    pub(super) fn v1(&self) -> Value {
        serde_json::from_slice(&build_v1(&self.input()).unwrap()).unwrap()
    }

    pub(super) fn v2(&self) -> Value {
        serde_json::from_slice(&build_v2(&self.input()).unwrap()).unwrap()
    }
}

#[test]
fn v1_headers_keep_the_last_value_and_multi_value_headers_all() {
    let e = Req::full().v1();
    assert_eq!(e["headers"]["x-multi"], "b");
    assert_eq!(e["multiValueHeaders"]["x-multi"], json!(["a", "b"]));
    assert_eq!(e["headers"]["host"], "api.example.com");
}

#[test]
fn v1_query_last_value_wins_and_values_are_form_decoded() {
    let mut r = Req::bare();
    r.query = Some("a=1&a=2&b=x%20y&c=-+createdAt&d&&e=%2B%zz&caf%C3%A9=%E2%9C%93".into());
    let e = r.v1();
    assert_eq!(
        e["queryStringParameters"],
        json!({"a": "2", "b": "x y", "c": "- createdAt", "d": "", "e": "+%zz", "café": "✓"})
    );
    assert_eq!(e["multiValueQueryStringParameters"]["a"], json!(["1", "2"]));
    assert_eq!(e["multiValueQueryStringParameters"]["d"], json!([""]));
}

#[test]
fn v1_absent_maps_and_body_are_null() {
    let e = Req::bare().v1();
    for key in [
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "stageVariables",
        "body",
    ] {
        assert_eq!(e[key], Value::Null, "{key}");
        assert!(e.as_object().unwrap().contains_key(key), "{key} present");
    }
    assert_eq!(e["isBase64Encoded"], false);
    // An empty query string is no query.
    let mut r = Req::bare();
    r.query = Some(String::new());
    assert_eq!(r.v1()["queryStringParameters"], Value::Null);
}

#[test]
fn v1_request_context() {
    let mut r = Req::full();
    r.api_key_id = Some("key-id-1".into());
    let e = r.v1();
    assert_eq!(e["resource"], "/orders/{id}");
    assert_eq!(e["path"], "/orders/42");
    assert_eq!(e["httpMethod"], "GET");
    assert_eq!(e["pathParameters"], json!({"id": "42"}));
    let c = &e["requestContext"];
    assert_eq!(c["stage"], "prod");
    assert_eq!(c["requestId"], "c6af9ac6-7b61-11e6-9a41-93e8deadbeef");
    assert_eq!(c["requestTimeEpoch"], 1_583_348_638_390_i64);
    assert_eq!(c["requestTime"], "04/Mar/2020:19:03:58 +0000");
    assert_eq!(c["resourcePath"], "/orders/{id}");
    assert_eq!(c["path"], "/prod/orders/42");
    assert_eq!(c["httpMethod"], "GET");
    assert_eq!(c["accountId"], LOCAL_ACCOUNT_ID);
    assert_eq!(c["apiId"], "orders-api");
    assert_eq!(c["protocol"], "HTTP/1.1");
    assert_eq!(c["domainName"], "api.example.com");
    assert_eq!(c["domainPrefix"], "api");
    assert_eq!(c["identity"]["sourceIp"], "203.0.113.7");
    assert_eq!(c["identity"]["userAgent"], "curl/8.5.0");
    assert_eq!(c["identity"]["apiKeyId"], "key-id-1");
    assert_eq!(c["identity"]["apiKey"], Value::Null, "never the key itself");
    assert!(c.get("authorizer").is_none());
}

#[test]
fn v1_authorizer_is_the_context_map() {
    let mut r = Req::full();
    r.authorizer = Some(json!({"principalId": "user-1", "tenant": "acme", "n": 3}));
    let e = r.v1();
    assert_eq!(
        e["requestContext"]["authorizer"],
        json!({"principalId": "user-1", "tenant": "acme", "n": 3})
    );
    let parsed: ApiGatewayProxyRequest = serde_json::from_value(e).unwrap();
    assert_eq!(
        parsed.request_context.authorizer.fields.get("principalId"),
        Some(&json!("user-1"))
    );
}

#[test]
fn greedy_path_parameter_keeps_its_slashes() {
    let mut r = Req::bare();
    r.resource_path = "/files/{proxy+}".into();
    r.route_key = "GET /files/{proxy+}".into();
    r.raw_path = "/prod/files/a/b/c.txt".into();
    r.path = "/files/a/b/c.txt".into();
    r.path_parameters = vec![("proxy".into(), "a/b/c.txt".into())];
    assert_eq!(r.v1()["pathParameters"]["proxy"], "a/b/c.txt");
    assert_eq!(r.v2()["pathParameters"]["proxy"], "a/b/c.txt");
    assert_eq!(r.v2()["rawPath"], "/prod/files/a/b/c.txt");
    assert_eq!(r.v1()["resource"], "/files/{proxy+}");
}

#[test]
fn stage_variables_in_both_formats() {
    let mut r = Req::bare();
    r.stage_variables
        .insert("tableName".into(), "orders-prod".into());
    r.stage_variables
        .insert("lambdaAlias".into(), "live".into());
    let expected = json!({"tableName": "orders-prod", "lambdaAlias": "live"});
    assert_eq!(r.v1()["stageVariables"], expected);
    assert_eq!(r.v2()["stageVariables"], expected);
}

#[test]
fn text_bodies_travel_as_text() {
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Text/HTML",
        "text/plain",
        "application/xml",
        "application/vnd.api+json",
        "application/atom+xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
    ] {
        let mut r = Req::bare();
        r.method = Method::POST;
        r.header("content-type", ct);
        r.body = br#"{"a": "caf\u00e9 \u2713"}"#.to_vec();
        for e in [r.v1(), r.v2()] {
            assert_eq!(e["isBase64Encoded"], false, "{ct}");
            assert_eq!(e["body"], r#"{"a": "caf\u00e9 \u2713"}"#, "{ct}");
        }
    }
}

#[test]
fn binary_bodies_travel_as_base64_and_decode_back() {
    let png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff];
    let cases: [(Option<&str>, Vec<u8>); 4] = [
        (Some("image/png"), png.clone()),
        // Not UTF-8: base64 whatever the content type says.
        (Some("text/plain"), png.clone()),
        (Some("application/octet-stream"), b"plain ascii".to_vec()),
        // No content type: not known to be text.
        (None, b"{\"a\":1}".to_vec()),
    ];
    for (ct, body) in cases {
        let mut r = Req::bare();
        r.method = Method::PUT;
        if let Some(ct) = ct {
            r.header("content-type", ct);
        }
        r.body = body.clone();
        for e in [r.v1(), r.v2()] {
            assert_eq!(e["isBase64Encoded"], true, "{ct:?}");
            let decoded = STANDARD.decode(e["body"].as_str().unwrap()).unwrap();
            assert_eq!(decoded, body, "{ct:?}");
        }
    }
}

#[test]
fn v2_cookies_come_from_cookie_headers_and_leave_headers() {
    let mut r = Req::full();
    r.header("cookie", "session=abc; theme=dark")
        .header("cookie", "lang=en");
    let e = r.v2();
    assert_eq!(
        e["cookies"],
        json!(["session=abc", "theme=dark", "lang=en"])
    );
    assert!(e["headers"].get("cookie").is_none());
    // 1.0 has no cookies field: the header stays.
    let e1 = r.v1();
    assert!(e1.get("cookies").is_none());
    assert_eq!(
        e1["multiValueHeaders"]["cookie"],
        json!(["session=abc; theme=dark", "lang=en"])
    );
}

#[test]
fn v2_headers_are_lower_case_and_repeats_comma_joined() {
    let mut r = Req::full();
    r.headers
        .append("X-Mixed-Case", HeaderValue::from_static("v"));
    let e = r.v2();
    assert_eq!(e["headers"]["x-multi"], "a,b");
    assert_eq!(e["headers"]["x-mixed-case"], "v");
    assert!(e.get("multiValueHeaders").is_none());
}

#[test]
fn v2_query_parameters_comma_joined_and_raw_query_kept() {
    let mut r = Req::bare();
    r.query = Some("p=1&p=2&q=a+b%26c".into());
    let e = r.v2();
    assert_eq!(e["rawQueryString"], "p=1&p=2&q=a+b%26c");
    assert_eq!(
        e["queryStringParameters"],
        json!({"p": "1,2", "q": "a b&c"})
    );
    assert!(e.get("multiValueQueryStringParameters").is_none());
}

#[test]
fn v2_absent_maps_are_left_out() {
    let e = Req::bare().v2();
    for key in [
        "cookies",
        "queryStringParameters",
        "pathParameters",
        "stageVariables",
        "body",
    ] {
        assert!(e.get(key).is_none(), "{key}");
    }
    assert_eq!(e["headers"], json!({}));
    assert_eq!(e["rawQueryString"], "");
    assert_eq!(e["isBase64Encoded"], false);
}

#[test]
fn v2_request_context() {
    let mut r = Req::full();
    r.authorizer = Some(json!({"jwt": {"claims": {"sub": "u1"}, "scopes": ["read"]}}));
    let e = r.v2();
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["routeKey"], "GET /orders/{id}");
    assert_eq!(e["rawPath"], "/prod/orders/42");
    let c = &e["requestContext"];
    assert_eq!(c["routeKey"], "GET /orders/{id}");
    assert_eq!(c["stage"], "prod");
    assert_eq!(c["time"], "04/Mar/2020:19:03:58 +0000");
    assert_eq!(c["timeEpoch"], 1_583_348_638_390_i64);
    assert_eq!(c["domainPrefix"], "api");
    assert_eq!(
        c["http"],
        json!({"method": "GET", "path": "/prod/orders/42", "protocol": "HTTP/1.1",
               "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"})
    );
    let parsed: ApiGatewayV2httpRequest = serde_json::from_value(e).unwrap();
    let jwt = parsed.request_context.authorizer.unwrap().jwt.unwrap();
    assert_eq!(jwt.claims.get("sub").map(String::as_str), Some("u1"));
}

#[test]
fn non_utf8_header_values_do_not_fail_the_event() {
    let mut r = Req::bare();
    r.headers
        .insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    r.headers.insert(
        "x-utf8",
        HeaderValue::from_bytes("café".as_bytes()).unwrap(),
    );
    let e = r.v1();
    assert_eq!(e["headers"]["x-latin1"], "caf\u{fffd}");
    assert_eq!(e["headers"]["x-utf8"], "café");
    assert_eq!(r.v2()["headers"]["x-utf8"], "café");
}

#[test]
fn ipv6_source_ip() {
    let mut r = Req::bare();
    r.source_ip = "2001:db8::1".parse().unwrap();
    assert_eq!(
        r.v1()["requestContext"]["identity"]["sourceIp"],
        "2001:db8::1"
    );
    assert_eq!(r.v2()["requestContext"]["http"]["sourceIp"], "2001:db8::1");
}

#[test]
fn media_type_classification() {
    assert!(is_text_media_type(b"text/csv"));
    assert!(is_text_media_type(
        b" application/problem+json ; charset=utf-8"
    ));
    assert!(!is_text_media_type(b"application/octet-stream"));
    assert!(!is_text_media_type(b"image/svg"));
    assert!(!is_text_media_type(b"multipart/form-data; boundary=x"));
    assert!(!is_text_media_type(b"\xff\xfe"));
}
