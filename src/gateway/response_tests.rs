use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::*;

fn ok_v1(result: &str) -> Response<Bytes> {
    map_v1(result.as_bytes()).unwrap_or_else(|e| panic!("{result}: {e}"))
}

fn ok_v2(result: &str) -> Response<Bytes> {
    map_v2(result.as_bytes()).unwrap_or_else(|e| panic!("{result}: {e}"))
}

fn values(r: &Response<Bytes>, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn v1_minimal_response() {
    let r = ok_v1(r#"{"statusCode": 201, "body": "created"}"#);
    assert_eq!(r.status(), 201);
    assert_eq!(r.body(), "created");
    assert_eq!(values(&r, "content-type"), ["application/json"]);
}

#[test]
fn v1_without_body_is_empty() {
    for result in [
        r#"{"statusCode": 204}"#,
        r#"{"statusCode": 204, "body": null}"#,
    ] {
        let r = ok_v1(result);
        assert_eq!(r.status(), 204);
        assert!(r.body().is_empty());
    }
}

#[test]
fn v1_headers_and_multi_value_headers_merge() {
    let r = ok_v1(
        r#"{"statusCode": 200,
            "headers": {"X-A": "1", "set-cookie": "a=1", "content-type": "text/html"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "x-b": ["x", "y"]},
            "body": "<p>hi</p>", "isBase64Encoded": false}"#,
    );
    assert_eq!(
        values(&r, "set-cookie"),
        ["a=1", "b=2"],
        "a pair in both maps appears once"
    );
    assert_eq!(values(&r, "x-a"), ["1"]);
    assert_eq!(values(&r, "x-b"), ["x", "y"]);
    assert_eq!(values(&r, "content-type"), ["text/html"]);
}

#[test]
fn v1_different_values_for_one_name_are_both_kept() {
    let r =
        ok_v1(r#"{"statusCode": 200, "headers": {"x": "1"}, "multiValueHeaders": {"x": ["2"]}}"#);
    assert_eq!(values(&r, "x"), ["2", "1"]);
}

#[test]
fn non_string_header_values_are_stringified() {
    let r = ok_v1(
        r#"{"statusCode": 200, "headers": {"x-n": 5, "x-t": true, "x-f": 1.5},
            "multiValueHeaders": {"x-m": [1, false, "s"], "x-single": "one"}}"#,
    );
    assert_eq!(values(&r, "x-n"), ["5"]);
    assert_eq!(values(&r, "x-t"), ["true"]);
    assert_eq!(values(&r, "x-f"), ["1.5"]);
    assert_eq!(values(&r, "x-m"), ["1", "false", "s"]);
    assert_eq!(values(&r, "x-single"), ["one"]);
}

#[test]
fn null_content_type_means_none_at_all() {
    let r = ok_v1(r#"{"statusCode": 204, "headers": {"Content-Type": null, "x-null": null}}"#);
    assert!(r.headers().get("content-type").is_none());
    assert!(r.headers().get("x-null").is_none());
    let r = ok_v1(r#"{"statusCode": 204, "multiValueHeaders": {"content-type": null}}"#);
    assert!(r.headers().get("content-type").is_none());
}

#[test]
fn status_code_as_numeric_string_or_whole_float() {
    assert_eq!(ok_v1(r#"{"statusCode": "404"}"#).status(), 404);
    assert_eq!(ok_v1(r#"{"statusCode": 200.0}"#).status(), 200);
    assert_eq!(
        ok_v2(r#"{"statusCode": "302", "headers": {"location": "/x"}}"#).status(),
        302
    );
}

#[test]
fn base64_body_is_decoded() {
    let bytes: Vec<u8> = (0..=255).collect();
    let encoded = STANDARD.encode(&bytes);
    let result = json_response(&encoded, true);
    assert_eq!(ok_v1(&result).body().as_ref(), bytes.as_slice());
    assert_eq!(ok_v2(&result).body().as_ref(), bytes.as_slice());
    // Python's base64.encodebytes wraps lines; unpadded input is accepted too.
    let wrapped = format!("{}\n{}\n", &encoded[..76], &encoded[76..]);
    assert_eq!(
        ok_v1(&json_response(&wrapped, true)).body().as_ref(),
        bytes.as_slice()
    );
    assert_eq!(ok_v1(&json_response("aGk", true)).body(), "hi");
}

fn json_response(body: &str, base64: bool) -> String {
    serde_json::json!({"statusCode": 200, "body": body, "isBase64Encoded": base64}).to_string()
}

#[test]
fn framing_headers_from_the_function_are_dropped() {
    let r = ok_v1(
        r#"{"statusCode": 200, "body": "abc",
            "headers": {"Content-Length": "999", "Transfer-Encoding": "chunked",
                        "Connection": "close", "x-kept": "1"}}"#,
    );
    for name in ["content-length", "transfer-encoding", "connection"] {
        assert!(r.headers().get(name).is_none(), "{name}");
    }
    assert_eq!(values(&r, "x-kept"), ["1"]);
}

#[track_caller]
fn malformed_v1(result: &[u8], reason_contains: &str) {
    match map_v1(result) {
        Ok(r) => panic!("{:?} accepted as {r:?}", String::from_utf8_lossy(result)),
        Err(e) => assert!(
            e.reason.contains(reason_contains),
            "{:?}: {e} should mention {reason_contains:?}",
            String::from_utf8_lossy(result)
        ),
    }
}

#[test]
fn v1_malformed_responses() {
    malformed_v1(br#"{"body": "no status"}"#, "statusCode is missing");
    malformed_v1(br#"{"statusCode": null}"#, "statusCode is missing");
    malformed_v1(br#"{"statusCode": "OK"}"#, "must be an integer");
    malformed_v1(br#"{"statusCode": " 200"}"#, "must be an integer");
    malformed_v1(br#"{"statusCode": "99"}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": 99}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": 600}"#, "not a final HTTP status");
    // A 1xx would make the client wait on for the real answer (and, pipelined, take the next one).
    malformed_v1(br#"{"statusCode": 103}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": "100"}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": -200}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": 200.5}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": 1e300}"#, "not a final HTTP status");
    malformed_v1(br#"{"statusCode": true}"#, "must be an integer");
    malformed_v1(br#"{"statusCode": [200]}"#, "must be an integer");
    malformed_v1(
        br#"{"statusCode": 200, "body": {"a": 1}}"#,
        "body must be a string",
    );
    malformed_v1(
        br#"{"statusCode": 200, "body": 42}"#,
        "body must be a string",
    );
    malformed_v1(
        br#"{"statusCode": 200, "body": "not base64!", "isBase64Encoded": true}"#,
        "not valid base64",
    );
    malformed_v1(
        br#"{"statusCode": 200, "body": "aGk=", "isBase64Encoded": "true"}"#,
        "must be a boolean",
    );
    malformed_v1(
        br#"{"statusCode": 200, "headers": ["x"]}"#,
        "headers must be an object",
    );
    malformed_v1(
        br#"{"statusCode": 200, "headers": {"x": {"a": 1}}}"#,
        "value of type object",
    );
    malformed_v1(
        br#"{"statusCode": 200, "headers": {"x": "a\nb"}}"#,
        "invalid value",
    );
    malformed_v1(
        br#"{"statusCode": 200, "headers": {"bad name": "v"}}"#,
        "header name",
    );
    malformed_v1(
        br#"{"statusCode": 200, "multiValueHeaders": {"x": [["nested"]]}}"#,
        "value of type array",
    );
    malformed_v1(
        br#"{"statusCode": 200, "error": null}"#,
        "unexpected key \"error\"",
    );
    malformed_v1(br#"{"statusCode": 200, "cookies": ["a=1"]}"#, "cookies");
    malformed_v1(b"", "not valid JSON");
    malformed_v1(b"Hello from Lambda!", "not valid JSON");
    malformed_v1(br#"{"statusCode": 200} trailing"#, "not valid JSON");
    malformed_v1(br#""a string""#, "not a JSON object");
    malformed_v1(br#"[{"statusCode": 200}]"#, "not a JSON object");
    malformed_v1(b"null", "not a JSON object");
    malformed_v1(b"\xff\xfe{}", "not valid JSON");
}

#[test]
fn malformed_response_message_and_category() {
    let e = map_v1(b"{}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "malformed Lambda proxy response: statusCode is missing"
    );
    assert_eq!(e.category(), "malformed_response");
}

#[test]
fn v2_bare_json_values_become_200_application_json() {
    // Documented: "Hello from Lambda!" → body `Hello from Lambda!`; an object → its JSON text.
    let cases = [
        (r#""Hello from Lambda!""#, "Hello from Lambda!"),
        (r#""esc\"aped\u00e9""#, "esc\"apedé"),
        (
            r#"{ "message": "Hello from Lambda!" }"#,
            r#"{ "message": "Hello from Lambda!" }"#,
        ),
        (" [1, 2, 3]\n", "[1, 2, 3]"),
        ("42", "42"),
        ("true", "true"),
        ("null", "null"),
        (
            r#"{"statusCode": null, "body": {"not": "a string"}}"#,
            r#"{"statusCode": null, "body": {"not": "a string"}}"#,
        ),
        (
            r#"{"body": "x", "headers": 5, "anything": []}"#,
            r#"{"body": "x", "headers": 5, "anything": []}"#,
        ),
    ];
    for (result, body) in cases {
        let r = ok_v2(result);
        assert_eq!(r.status(), 200, "{result}");
        assert_eq!(values(&r, "content-type"), ["application/json"], "{result}");
        assert_eq!(r.body(), body, "{result}");
    }
}

#[test]
fn v2_with_status_code_is_a_proxy_response_with_cookies() {
    let r = ok_v2(
        r#"{"statusCode": 200, "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
            "headers": {"content-type": "text/html", "set-cookie": "c=3"},
            "body": "<h1>hi</h1>"}"#,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        values(&r, "set-cookie"),
        ["c=3", "a=1; Path=/", "b=2; HttpOnly"]
    );
    assert_eq!(values(&r, "content-type"), ["text/html"]);
    assert_eq!(r.body(), "<h1>hi</h1>");
}

#[test]
fn v2_default_content_type_differs_from_v1() {
    let r = ok_v2(r#"{"statusCode": 200, "body": "plain"}"#);
    assert_eq!(values(&r, "content-type"), ["text/plain; charset=utf-8"]);
}

#[test]
fn v2_multi_value_headers_as_lambda_http_writes_them() {
    // lambda_http sends `headers` (first value of each name) and `multiValueHeaders` (all).
    let r = ok_v2(
        r#"{"statusCode": 200, "headers": {"x": "1", "y": "a"},
            "multiValueHeaders": {"x": ["1", "2"], "y": ["a"]}, "cookies": [],
            "isBase64Encoded": false}"#,
    );
    assert_eq!(values(&r, "x"), ["1", "2"]);
    assert_eq!(values(&r, "y"), ["a"]);
}

#[test]
fn v2_malformed_responses() {
    for result in [
        &b""[..],
        b"Hello from Lambda!",
        b"{\"unterminated\": ",
        br#"{"statusCode": 200, "extra": 1}"#,
        br#"{"statusCode": 200, "cookies": "a=1"}"#,
        br#"{"statusCode": 200, "cookies": [1]}"#,
        br#"{"statusCode": 200, "cookies": ["a\u0000"]}"#,
        br#"{"statusCode": "abc"}"#,
        br#"{"statusCode": 200, "body": ["x"]}"#,
        br#"{"statusCode": 200, "body": "!!", "isBase64Encoded": true}"#,
    ] {
        assert!(
            map_v2(result).is_err(),
            "{:?}",
            String::from_utf8_lossy(result)
        );
    }
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Thousands of random inputs, raw bytes and JSON-shaped ones, must never panic either mapper
/// (the cargo-fuzz target `response_mapping` explores the same property far longer).
#[test]
fn random_inputs_never_panic() {
    const PIECES: [&str; 24] = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"statusCode\"",
        "\"headers\"",
        "\"multiValueHeaders\"",
        "\"body\"",
        "\"isBase64Encoded\"",
        "\"cookies\"",
        "200",
        "\"200\"",
        "-1",
        "1e999",
        "true",
        "null",
        "\"aGk=\"",
        "\"x\\u0000y\"",
        "\"content-type\"",
        "\"\\ud800\"",
        " ",
        "0.5",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..6000 {
        let input: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            (0..rng.below(24))
                .flat_map(|_| PIECES[rng.below(PIECES.len())].bytes())
                .collect()
        };
        let _ = map_v1(&input);
        let _ = map_v2(&input);
    }
}
