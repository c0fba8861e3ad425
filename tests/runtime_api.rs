//! The Runtime API contract, driven by hand in sidecar mode (`--external`): the test is the
//! handler, so every status, header and byte of the exchange is checked directly.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use support::{Runtime, get_status};

struct Handler {
    base: String,
    client: reqwest::Client,
}

impl Handler {
    fn url(&self, path: &str) -> String {
        format!("{}/2018-06-01/runtime{path}", self.base)
    }

    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("post");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    fn next(&self) -> tokio::task::JoinHandle<reqwest::Response> {
        let (client, url) = (self.client.clone(), self.url("/invocation/next"));
        tokio::spawn(async move { client.get(url).send().await.expect("next") })
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn sidecar(timeout: &str) -> (Runtime, Handler) {
    let api = format!("127.0.0.1:{}", free_port());
    let rt = Runtime::start(&[
        "--external",
        "--runtime-api-listen",
        &api,
        "--timeout-seconds",
        timeout,
    ])
    .await;
    let handler = Handler {
        base: format!("http://{api}"),
        client: reqwest::Client::new(),
    };
    (rt, handler)
}

async fn wait_ready(rt: &Runtime) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_status(&rt.url("/readyz")).await != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn next_response_and_error_follow_the_emulator() {
    let (rt, h) = sidecar("3").await;
    assert_eq!(
        get_status(&rt.url("/readyz")).await,
        503,
        "not ready before the first /next"
    );
    let (status, body) = h
        .post("/invocation/nope/response", b"1".to_vec(), &[])
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (403, Some("InvalidStateTransition"))
    );

    let next = h.next();
    wait_ready(&rt).await;
    let client_context = base64::engine::general_purpose::STANDARD.encode(r#"{"custom":{"k":1}}"#);
    let addr = rt.addr;
    let invoke = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{addr}{}", support::INVOKE_PATH))
            .header("x-kfaas-request-id", "api-1")
            .header(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
            )
            .header("x-amz-client-context", client_context)
            .body(r#"{"k":"v"}"#)
            .send()
            .await
            .expect("invoke")
    });
    let event = next.await.expect("join");
    assert_eq!(event.status(), 200);
    let headers = event.headers().clone();
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("lambda-runtime-aws-request-id").as_deref(),
        Some("api-1")
    );
    assert_eq!(
        header("lambda-runtime-trace-id").as_deref(),
        Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    );
    assert_eq!(
        header("lambda-runtime-client-context").as_deref(),
        Some(r#"{"custom":{"k":1}}"#)
    );
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert!(
        header("lambda-runtime-invoked-function-arn")
            .is_some_and(|a| a.starts_with("arn:aws:lambda:") && a.ends_with(":function:function"))
    );
    assert_eq!(
        header("lambda-runtime-cognito-identity"),
        None,
        "absent when empty"
    );
    let deadline: u128 = header("lambda-runtime-deadline-ms")
        .and_then(|d| d.parse().ok())
        .expect("deadline");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    assert!(
        deadline > now && deadline <= now + 3000,
        "deadline {deadline} now {now}"
    );
    assert_eq!(event.text().await.expect("event body"), r#"{"k":"v"}"#);

    let (status, body) = h
        .post("/invocation/other/response", b"1".to_vec(), &[])
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("InvalidRequestID"))
    );
    let exact = "\"exact bytes \u{e9}\"   ".as_bytes().to_vec();
    let (status, body) = h
        .post("/invocation/api-1/response", exact.clone(), &[])
        .await;
    assert_eq!((status, body), (202, serde_json::json!({"status": "OK"})));
    let answer = invoke.await.expect("join");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-amz-request-id"], "api-1");
    assert_eq!(
        answer.bytes().await.expect("body").as_ref(),
        exact.as_slice()
    );
    let (status, _) = h
        .post("/invocation/api-1/response", b"again".to_vec(), &[])
        .await;
    assert_eq!(status, 403, "one response per invocation");

    // An error with an empty body is made from the error-type header.
    let next = h.next();
    let invoke = tokio::spawn(async move { support::invoke(addr, "{}", Some("api-2")).await });
    assert_eq!(next.await.expect("join").status(), 200);
    let (status, _) = h
        .post(
            "/invocation/api-2/error",
            Vec::new(),
            &[("lambda-runtime-function-error-type", "Custom.Error")],
        )
        .await;
    assert_eq!(status, 202);
    let answer = invoke.await.expect("join");
    answer.failed("function");
    assert_eq!(answer.json()["errorType"], "Custom.Error");

    let (status, _) = h.post("/init/error", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 403, "init errors only before the first /next");

    // A response above 6 MiB is refused and the caller gets Lambda's error.
    let next = h.next();
    let invoke = tokio::spawn(async move { support::invoke(addr, "{}", Some("api-3")).await });
    assert_eq!(next.await.expect("join").status(), 200);
    let (status, body) = h
        .post(
            "/invocation/api-3/response",
            vec![b'x'; 7 * 1024 * 1024],
            &[],
        )
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    let answer = invoke.await.expect("join");
    answer.failed("function");
    assert_eq!(answer.json()["errorType"], "Function.ResponseSizeTooLarge");
}

#[tokio::test]
async fn sidecar_timeout_answers_the_caller_and_accepts_the_late_response() {
    let (rt, h) = sidecar("1").await;
    let next = h.next();
    wait_ready(&rt).await;
    let addr = rt.addr;
    let invoke = tokio::spawn(async move { support::invoke(addr, "{}", Some("late")).await });
    assert_eq!(next.await.expect("join").status(), 200);
    let answer = invoke.await.expect("join");
    answer.failed("timeout");
    assert_eq!(answer.body, "Task timed out after 1.00 seconds");
    let (status, _) = h
        .post("/invocation/late/response", b"1".to_vec(), &[])
        .await;
    assert_eq!(status, 202, "a late response is accepted and dropped");
    let next = h.next();
    let invoke = tokio::spawn(async move { support::invoke(addr, "{}", Some("after")).await });
    assert_eq!(next.await.expect("join").status(), 200);
    assert_eq!(
        h.post("/invocation/after/response", b"2".to_vec(), &[])
            .await
            .0,
        202
    );
    assert_eq!(invoke.await.expect("join").ok(), 2);
}
