//! The gateway over real HTTP and real function processes, through `kfaas local`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{LocalServer, metric_value, repo};
use serde_json::Value;

fn fixture() -> LocalServer {
    LocalServer::start(&repo().join("tests/fixtures/gateway"), &[])
}

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

#[tokio::test]
async fn hello_example_answers_through_the_gateway() {
    let server = LocalServer::start(&repo().join("examples/hello"), &[]);
    let client = reqwest::Client::new();
    let response = get(&client, server.url("/hello?name=kfaas")).await;
    let request_id = request_id_of(&response);
    let (status, body) = json(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "hello, kfaas");
    assert_eq!(body["stage"], "dev");
    assert_eq!(
        body["requestId"],
        request_id.as_str(),
        "the request id reaches the function"
    );

    let (status, body) = json(
        client
            .post(server.url("/hello"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body),
        (404, serde_json::json!({"message": "Not Found"}))
    );

    // One access-log line per request, with API Gateway's field names.
    let line = server.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&request_id) && l.contains("\"routeKey\"")
    });
    let record: Value = serde_json::from_str(&line).expect("access log is JSON");
    assert_eq!(record["status"], 200);
    assert_eq!(record["routeKey"], "GET /hello");
    assert_eq!(record["stage"], "dev");
    assert!(record["integrationLatency"].as_f64().is_some());
    assert_eq!(record["coldStart"], true);
    // The function's own log lines are prefixed with its name.
    server.wait_for_line(Duration::from_secs(5), |l| {
        l.starts_with("[hello] START RequestId: ")
    });
    // The route's URL was printed at start.
    server.wait_for_line(Duration::from_secs(1), |l| {
        l.contains("GET") && l.contains("/hello") && l.contains("-> hello")
    });
}

/// GETs `url`; only a failure to get any answer fails the test here.
async fn get(client: &reqwest::Client, url: String) -> reqwest::Response {
    client.get(url).send().await.expect("request")
}

fn request_id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("apigw-requestid")
        .and_then(|v| v.to_str().ok())
        .expect("apigw-requestid header")
        .to_owned()
}

#[tokio::test]
async fn a_stage_can_turn_its_access_log_off() {
    let server = fixture();
    let client = reqwest::Client::new();
    let quiet = get(&client, server.url("/quiet/echo/1")).await;
    assert_eq!(quiet.status(), 200);
    let quiet_id = request_id_of(&quiet);
    let logged = get(&client, server.url("/test/echo/2")).await;
    assert_eq!(logged.status(), 200);
    let logged_id = request_id_of(&logged);

    let is_access_line = |l: &str, id: &str| l.contains(id) && l.contains("\"routeKey\"");
    server.wait_for_line(Duration::from_secs(5), |l| is_access_line(l, &logged_id));
    // Lines are written in batches a few milliseconds apart; give a stray one time to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stray: Vec<String> = server
        .lines()
        .into_iter()
        .filter(|l| is_access_line(l, &quiet_id))
        .collect();
    assert!(
        stray.is_empty(),
        "the quiet stage's request was logged: {stray:?}"
    );
}

#[tokio::test]
async fn payload_2_0_event_carries_the_request() {
    let server = fixture();
    let client = reqwest::Client::new();
    let (status, body) = json(
        client
            .post(server.url("/test/echo/a%20b?x=1&x=2&y=z"))
            .header("cookie", "c1=v1; c2=v2")
            .header("x-multi", "one")
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    let event = &body["event"];
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "ANY /echo/{id}");
    assert_eq!(event["rawPath"], "/test/echo/a%20b");
    assert_eq!(event["rawQueryString"], "x=1&x=2&y=z");
    assert_eq!(event["queryStringParameters"]["x"], "1,2");
    assert_eq!(event["pathParameters"]["id"], "a b");
    assert_eq!(event["stageVariables"]["greeting"], "hi");
    assert_eq!(event["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
    assert_eq!(event["requestContext"]["stage"], "test");
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["body"], "hello");
    assert_eq!(event["isBase64Encoded"], false);
    assert_eq!(event["requestContext"]["requestId"], body["requestId"]);
}

#[tokio::test]
async fn payload_1_0_event_carries_multi_values() {
    let server = fixture();
    let client = reqwest::Client::new();
    let (status, body) = json(
        client
            .get(server.url("/test/v1/echo/42?x=1&x=2"))
            .header("x-multi", "one")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200);
    let event = &body["event"];
    assert_eq!(event["resource"], "/v1/echo/{id}");
    assert_eq!(event["httpMethod"], "GET");
    assert_eq!(event["pathParameters"]["id"], "42");
    assert_eq!(
        event["multiValueQueryStringParameters"]["x"],
        serde_json::json!(["1", "2"])
    );
    assert_eq!(event["queryStringParameters"]["x"], "2");
    assert_eq!(event["stageVariables"]["greeting"], "hi");
    assert_eq!(event["requestContext"]["stage"], "test");
    assert_eq!(event["requestContext"]["resourcePath"], "/v1/echo/{id}");
    assert_eq!(event["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert!(
        event["body"].is_null(),
        "no body is null in 1.0: {}",
        event["body"]
    );
}

#[tokio::test]
async fn binary_bodies_travel_base64_both_ways() {
    let server = fixture();
    let client = reqwest::Client::new();
    let payload: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let response = client
        .post(server.url("/test/binary"))
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let bytes = response.bytes().await.expect("body");
    assert_eq!(
        bytes.as_ref(),
        payload.as_slice(),
        "bytes survive the round trip"
    );
    let _ = base64::engine::general_purpose::STANDARD.encode(&payload);
}

#[tokio::test]
async fn function_failures_get_api_gateway_answers() {
    let server = fixture();
    let client = reqwest::Client::new();
    let expect = |status: u16, message: &str| (status, serde_json::json!({ "message": message }));

    let got = json(get(&client, server.url("/test/throws")).await).await;
    assert_eq!(got, expect(502, "Internal server error"), "a thrown error");
    let got = json(get(&client, server.url("/test/malformed")).await).await;
    assert_eq!(
        got,
        expect(502, "Internal server error"),
        "a malformed 1.0 response"
    );
    // Warm first, so the 504 below is the invocation's own timeout, not a cold start's.
    let warm = get(&client, server.url("/test/slow?ms=10")).await;
    assert_eq!(warm.status(), 200);
    let got = json(get(&client, server.url("/test/slow-short?ms=600")).await).await;
    assert_eq!(
        got,
        expect(504, "Endpoint request timed out"),
        "the route's integration timeout"
    );
    let got = json(get(&client, server.url("/test/slow?ms=1500")).await).await;
    assert_eq!(
        got,
        expect(502, "Internal server error"),
        "the function's own timeout (1 s)"
    );
    let got = json(get(&client, server.url("/test/nothing-here")).await).await;
    assert_eq!(got, expect(404, "Not Found"));
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let got = json(
        client
            .post(server.url("/test/echo/1"))
            .body(big)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(got, expect(413, "Request Entity Too Large"));

    // After a timeout the function still serves.
    let response = get(&client, server.url("/test/slow?ms=10")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "slept 10");
    let metrics = server.metrics();
    assert!(
        metric_value(
            &metrics,
            &["kfaas_gateway_errors_total", "integration_timeout"]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn payload_2_0_response_shortcuts() {
    let server = fixture();
    let client = reqwest::Client::new();
    let response = get(&client, server.url("/test/bare")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (_, body) = json(response).await;
    assert_eq!(body, serde_json::json!({"hello": "bare"}));

    let response = get(&client, server.url("/test/cookies")).await;
    let cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    assert_eq!(cookies, vec!["a=1; Path=/", "b=2"]);
}

#[tokio::test]
async fn oversized_headers_and_admin_endpoints() {
    let server = fixture();
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/test/echo/1"))
        .header("x-big", "v".repeat(11 * 1024))
        .send()
        .await
        .expect("request");
    let (status, body) = json(response).await;
    assert_eq!(
        (status, body),
        (
            431,
            serde_json::json!({"message": "Request Header Fields Too Large"})
        )
    );

    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let status = client
            .get(format!("http://{}{path}", server.admin))
            .send()
            .await
            .expect("admin request")
            .status();
        assert_eq!(status.as_u16(), want, "{path}");
    }
    let metrics = server.metrics();
    for name in [
        "kfaas_gateway_requests_total",
        "kfaas_gateway_request_duration_seconds",
        "kfaas_gateway_errors_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_function_that_cannot_start_answers_502_at_once() {
    let server = fixture();
    let client = reqwest::Client::new();
    // Held until the route's deadline it would be a 504; a 502 means it was answered as soon
    // as the instance failed to start.
    let got = json(get(&client, server.url("/test/nobin")).await).await;
    assert_eq!(
        got,
        (502, serde_json::json!({"message": "Internal server error"}))
    );
    server.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("kfaas-test-no-such-binary") && l.contains("not on PATH")
    });
}

/// With several serving threads, a function's runtime runs on one of them while requests come in
/// on any: at a stop, the requests in flight on every thread are answered (a runtime finishes
/// its invocations before it stops its handlers, and is stopped only once every thread has
/// drained).
#[tokio::test]
async fn a_stop_answers_lambda_requests_in_flight_on_every_serving_thread() {
    let mut server = LocalServer::start(
        &repo().join("tests/fixtures/gateway"),
        &["--no-access-log", "--worker-threads", "2"],
    );
    let warm = reqwest::get(server.url("/test/slow?ms=1"))
        .await
        .expect("warm");
    assert_eq!(warm.status(), 200, "the function is up");
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url("/test/slow?ms=800");
            // A client (and connection) each, so that the requests spread over the threads.
            tokio::spawn(async move {
                let response = reqwest::Client::new().get(url).send().await?;
                let status = response.status().as_u16();
                response.text().await.map(|body| (status, body))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    for request in in_flight {
        let (status, body) = request.await.expect("join").expect("an answer");
        assert_eq!((status, body.as_str()), (200, "slept 800"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !server.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "kfaas local did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
