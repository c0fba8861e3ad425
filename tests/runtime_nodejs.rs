//! `kfaas runtime` with Node.js handlers through `runtimes/nodejs`: real processes, real HTTP.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::time::Duration;

use support::{Runtime, assert_one_trace_per_invocation, fixture, get_status};

fn node_args(handler: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--runtime",
        "nodejs",
        "--code",
        fixture("node").to_str().expect("path"),
        "--handler",
        handler,
        "--function-name",
        "node-test",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

async fn node(handler: &str, extra: &[&str]) -> Runtime {
    let args = node_args(handler, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Runtime::ready(&refs).await
}

#[tokio::test]
async fn each_invocation_sees_its_own_trace_id_in_the_environment() {
    let rt = node("handlers.traceEnv", &["--env", "GREETING=hi"]).await;
    let first = rt.invoke("{}").await.ok();
    let second = rt.invoke("{}").await.ok();
    assert_one_trace_per_invocation(&first, &second);
    for body in [&first, &second] {
        assert_eq!(body["setByHandler"], "kept");
        assert_eq!(body["greeting"], "hi");
    }
}

#[tokio::test]
async fn result_context_env_and_log_frame() {
    let rt = node(
        "handlers.info",
        &[
            "--memory-mb",
            "256",
            "--timeout-seconds",
            "5",
            "--env",
            "GREETING=hi there",
        ],
    )
    .await;
    let out = rt
        .invoke_with_id(r#"{"answer":42}"#, Some("req-node-1"))
        .await;
    assert_eq!(out.header("x-amz-request-id"), Some("req-node-1"));
    let body = out.ok();
    assert_eq!(body["event"]["answer"], 42);
    assert_eq!(body["awsRequestId"], "req-node-1");
    assert_eq!(body["functionName"], "node-test");
    assert_eq!(body["functionVersion"], "$LATEST");
    assert_eq!(body["memoryLimitInMB"], "256");
    assert_eq!(body["logGroupName"], "/aws/lambda/node-test");
    assert!(
        body["invokedFunctionArn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":function:node-test"))
    );
    let remaining = body["remaining"].as_i64().expect("remaining");
    assert!(remaining > 0 && remaining <= 5000, "remaining {remaining}");
    assert_eq!(body["env"]["GREETING"], "hi there");
    assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_NAME"], "node-test");
    assert_eq!(body["env"]["TZ"], "UTC");
    assert_eq!(
        body["env"]["LAMBDA_TASK_ROOT"].as_str(),
        fixture("node").to_str()
    );

    let report = rt
        .stdout
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("REPORT RequestId: req-node-1")
        })
        .await
        .expect("REPORT line");
    for field in [
        "Duration: ",
        "Billed Duration: ",
        "Memory Size: 256 MB",
        "Max Memory Used: ",
        "Init Duration: ",
    ] {
        assert!(report.contains(field), "{field} missing in {report}");
    }
    let lines = rt.stdout.snapshot();
    let pos =
        |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l)).expect("line present");
    let start = pos(&|l| l == "START RequestId: req-node-1 Version: $LATEST");
    let log = pos(&|l| l.contains("\treq-node-1\tINFO\tinfo handler ran"));
    let end = pos(&|l| l == "END RequestId: req-node-1");
    assert!(start < log && log < end, "frame out of order: {lines:?}");

    // A warm invocation reports no init duration.
    rt.invoke_with_id("{}", Some("req-node-2")).await.ok();
    let warm = rt
        .stdout
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("REPORT RequestId: req-node-2")
        })
        .await
        .expect("second REPORT");
    assert!(!warm.contains("Init Duration"), "{warm}");
}

#[tokio::test]
async fn callback_promise_and_plain_handlers() {
    let rt = node("handlers.callback", &[]).await;
    let out = rt.invoke_with_id("{}", Some("cb-1")).await.ok();
    assert_eq!(out["style"], "callback");
    assert_eq!(out["id"], "cb-1");

    let rt = node("handlers.promise", &[]).await;
    assert_eq!(rt.invoke(r#"{"n":7}"#).await.ok()["n"], 7);

    let rt = node("handlers.plain", &[]).await;
    assert_eq!(rt.invoke(r#"{"n":8}"#).await.ok()["style"], "plain");

    let rt = node("handlers.callbackError", &[]).await;
    let out = rt.invoke("{}").await;
    out.failed("function");
    assert_eq!(out.json()["errorType"], "TypeError");
    assert_eq!(out.json()["errorMessage"], "bad input");
}

#[tokio::test]
async fn thrown_error_has_lambdas_shape_and_the_process_survives() {
    let rt = node("handlers.throws", &[]).await;
    for _ in 0..2 {
        let out = rt.invoke("{}").await;
        out.failed("function");
        let body = out.json();
        assert_eq!(body["errorType"], "Error");
        assert_eq!(body["errorMessage"], "boom from node");
        let trace = body["stackTrace"].as_array().expect("stackTrace array");
        assert!(
            trace
                .iter()
                .any(|f| f.as_str().is_some_and(|f| f.contains("handlers.js"))),
            "{trace:?}"
        );
        assert_eq!(body["trace"], body["stackTrace"]);
    }
}

#[tokio::test]
async fn timeout_kills_the_process_and_the_instance_recovers() {
    let rt = node("handlers.sleep", &["--timeout-seconds", "1"]).await;
    let before = rt.invoke(r#"{"ms":0}"#).await.ok()["pid"].clone();
    let out = rt.invoke(r#"{"ms":10000}"#).await;
    out.failed("timeout");
    assert_eq!(out.body, "Task timed out after 1.00 seconds");
    let after = rt.invoke(r#"{"ms":0}"#).await.ok()["pid"].clone();
    assert_ne!(before, after, "the timed-out process must be replaced");
}

#[tokio::test]
async fn crash_mid_invocation_is_reported_and_the_instance_recovers() {
    let rt = node("handlers.crash", &[]).await;
    let before = rt.invoke("{}").await.ok()["pid"].clone();
    let out = rt.invoke(r#"{"crash":true}"#).await;
    out.failed("crash");
    let body = out.json();
    assert_eq!(body["errorType"], "Runtime.ExitError");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("exit status 3")),
        "{body}"
    );
    let after = rt.invoke("{}").await.ok()["pid"].clone();
    assert_ne!(before, after);
}

#[tokio::test]
async fn init_error_is_reported_to_every_invocation_and_never_ready() {
    let code = fixture("node-init-error");
    let rt = Runtime::start(&[
        "--runtime",
        "nodejs",
        "--code",
        code.to_str().expect("path"),
        "--handler",
        "index.handler",
    ])
    .await;
    assert!(
        rt.stdout
            .wait_for(Duration::from_secs(10), |l| l == "KFAAS_INIT_FAILED")
            .await
            .is_some(),
        "{:?}",
        rt.stdout.snapshot()
    );
    assert_eq!(get_status(&rt.url("/readyz")).await, 503);
    assert_eq!(get_status(&rt.url("/healthz")).await, 200);
    for _ in 0..2 {
        let out = rt.invoke("{}").await;
        out.failed("init");
        let body = out.json();
        assert_eq!(body["errorType"], "Error");
        assert_eq!(body["errorMessage"], "init boom from node");
    }

    let missing = node_failing("handlers.nope").await;
    let out = missing.invoke("{}").await;
    out.failed("init");
    assert_eq!(out.json()["errorType"], "Runtime.HandlerNotFound");
}

/// Starts a runtime expected to fail init: waits for `KFAAS_INIT_FAILED`, not `KFAAS_READY`.
async fn node_failing(handler: &str) -> Runtime {
    let args = node_args(handler, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let rt = Runtime::start(&refs).await;
    rt.stdout
        .wait_for(Duration::from_secs(10), |l| l == "KFAAS_INIT_FAILED")
        .await
        .expect("init failure line");
    rt
}

#[tokio::test]
async fn concurrency_runs_invocations_in_parallel_processes() {
    let rt = node("handlers.sleep", &["--concurrency", "3"]).await;
    let calls = (0..3).map(|_| rt.invoke(r#"{"ms":400}"#));
    let results: Vec<_> = futures::future::join_all(calls).await;
    let bodies: Vec<_> = results.iter().map(support::Invoked::ok).collect();
    let mut pids: Vec<_> = bodies.iter().map(|b| b["pid"].as_i64()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three handler processes: {bodies:?}");
    let latest_start = bodies.iter().filter_map(|b| b["start"].as_i64()).max();
    let earliest_end = bodies.iter().filter_map(|b| b["end"].as_i64()).min();
    assert!(
        latest_start < earliest_end,
        "the invocations must overlap: {bodies:?}"
    );
}

#[tokio::test]
async fn extra_invocations_queue_inside_the_runtime() {
    let rt = node("handlers.sleep", &["--concurrency", "1"]).await;
    let calls = (0..3).map(|_| rt.invoke(r#"{"ms":100}"#));
    let results: Vec<_> = futures::future::join_all(calls).await;
    let mut spans: Vec<(i64, i64)> = results
        .iter()
        .map(|r| {
            let b = r.ok();
            (
                b["start"].as_i64().unwrap_or(0),
                b["end"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "one at a time: {spans:?}");
    }
}

#[tokio::test]
async fn readiness_waits_for_the_handler_to_initialise() {
    let args = node_args("slowinit.handler", &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let rt = Runtime::start(&refs).await;
    assert_eq!(get_status(&rt.url("/readyz")).await, 503);
    assert_eq!(get_status(&rt.url("/healthz")).await, 200);
    rt.wait_ready().await;
    assert_eq!(get_status(&rt.url("/readyz")).await, 200);
    assert_eq!(rt.invoke("{}").await.ok(), "initialised");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_invocations_then_exits_zero() {
    let mut rt = node("handlers.sleep", &[]).await;
    let addr = rt.addr;
    let slow =
        tokio::spawn(async move { support::invoke(addr, r#"{"ms":600}"#, Some("draining")).await });
    rt.stdout
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("START RequestId: draining")
        })
        .await
        .expect("slow invocation started");
    rt.signal_term();
    let out = slow.await.expect("join");
    out.ok();
    let status = rt
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("runtime exited");
    assert!(status.success(), "{status:?}");
    assert!(
        support::invoke_result(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn bad_configuration_fails_fast_with_a_clear_error() {
    let code = fixture("node");
    let code = code.to_str().expect("path");
    for (args, expect) in [
        (
            vec![
                "--runtime",
                "nodejs",
                "--code",
                code,
                "--handler",
                "missing.handler",
            ],
            "not found",
        ),
        (vec!["--code", code], "nothing to run"),
        (
            vec![
                "--runtime",
                "nodejs",
                "--code",
                "/nonexistent/dir",
                "--handler",
                "a.b",
            ],
            "does not exist",
        ),
        (
            vec!["--code", code, "--", "no-such-program-kfaas"],
            "not found on PATH",
        ),
    ] {
        let out = std::process::Command::new(support::kfaas())
            .arg("runtime")
            .args(&args)
            .output()
            .expect("run kfaas");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn exit_with_parent_drains_and_exits_when_stdin_closes() {
    let mut args = node_args("handlers.sleep", &[]);
    args.push("--exit-with-parent".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut rt = Runtime::start_with_stdin(&refs, std::process::Stdio::piped()).await;
    rt.wait_ready().await;
    let parent_pipe = rt.child.stdin.take().expect("stdin pipe");
    let addr = rt.addr;
    let slow =
        tokio::spawn(async move { support::invoke(addr, r#"{"ms":500}"#, Some("orphaned")).await });
    rt.stdout
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("START RequestId: orphaned")
        })
        .await
        .expect("slow invocation started");
    drop(parent_pipe);
    slow.await.expect("join").ok();
    let status = rt
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("runtime exited after its parent's pipe closed");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn streamed_responses_arrive_as_they_are_written() {
    let rt = node("handlers.stream", &[]).await;
    let mut resp = reqwest::Client::new()
        .post(rt.url(support::INVOKE_PATH))
        .header("x-kfaas-request-id", "streamed")
        .body(r#"{"pauseMs":300}"#)
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-kfaas-response-mode"], "streaming");
    assert_eq!(resp.headers()["content-type"], "text/plain");
    let first = resp.chunk().await.expect("read").expect("a first chunk");
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("chunk 0"), "{first}");
    assert!(
        !first.contains("chunk 2"),
        "relayed before the handler finished: {first}"
    );
    let mut all = first;
    while let Some(chunk) = resp.chunk().await.expect("read") {
        all.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(all.contains("chunk 2"), "{all}");
    rt.stdout
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("REPORT RequestId: streamed")
        })
        .await
        .expect("REPORT after the stream ends");
    // The process serves the next invocation.
    let again = rt.invoke(r#"{"pauseMs":0}"#).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body.lines().count(), 3);

    let http = node("handlers.streamHttp", &[]).await;
    let out = http.invoke("{}").await;
    assert_eq!(
        out.header("content-type"),
        Some("application/vnd.awslambda.http-integration-response")
    );
    let (prelude, body) = out
        .body
        .split_once("\0\0\0\0\0\0\0\0")
        .expect("prelude separator");
    let prelude: serde_json::Value = serde_json::from_str(prelude).expect("prelude JSON");
    assert_eq!(prelude["statusCode"], 201);
    assert_eq!(body, "body");
}

#[tokio::test]
async fn a_mid_stream_error_ends_the_stream_with_lambdas_trailers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = node("handlers.stream", &[]).await;
    let event = r#"{"fail":true}"#;
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\nte: trailers\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{event}",
        support::INVOKE_PATH,
        event.len()
    );
    let mut stream = tokio::net::TcpStream::connect(rt.addr)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(raw.starts_with("http/1.1 200"), "{raw}");
    assert!(raw.contains("chunk 2"), "{raw}");
    assert!(
        raw.contains("lambda-runtime-function-error-type: error"),
        "{raw}"
    );
    assert!(raw.contains("x-kfaas-invoke-error: function"), "{raw}");
}

#[tokio::test]
async fn a_caller_that_answers_whole_bodies_gets_a_mid_stream_error_as_the_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = node("handlers.stream", &[]).await;
    // The gateway's ask: `x-kfaas-response-mode: buffered`, no trailers read.
    let send = |event: &'static str| {
        let addr = rt.addr;
        async move {
            let request = format!(
                "POST {} HTTP/1.1\r\nhost: x\r\nx-kfaas-response-mode: buffered\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{event}",
                support::INVOKE_PATH,
                event.len()
            );
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read");
            String::from_utf8_lossy(&raw).to_ascii_lowercase()
        }
    };
    let whole = send("{}").await;
    assert!(whole.starts_with("http/1.1 200"), "{whole}");
    assert!(!whole.contains("x-kfaas-invoke-error"), "{whole}");
    assert!(
        !whole.contains("transfer-encoding: chunked"),
        "gathered: {whole}"
    );
    assert!(whole.contains("chunk 2"), "{whole}");

    let broken = send(r#"{"fail":true}"#).await;
    assert!(
        broken.contains("x-kfaas-invoke-error: function"),
        "{broken}"
    );
    assert!(broken.contains("mid-stream boom"), "{broken}");
    assert!(
        !broken.contains("chunk 0"),
        "the cut body is not the answer: {broken}"
    );
}

#[tokio::test]
async fn an_init_that_never_finishes_is_cut_off() {
    let code = fixture("node-hang");
    let rt = Runtime::start(&[
        "--runtime",
        "nodejs",
        "--code",
        code.to_str().expect("path"),
        "--handler",
        "index.handler",
        "--init-timeout-seconds",
        "1",
    ])
    .await;
    for _ in 0..2 {
        let out = rt.invoke("{}").await;
        out.failed("init");
        let body = out.json();
        assert_eq!(body["errorType"], "Sandbox.Timedout");
        assert_eq!(
            body["errorMessage"],
            "Init phase timed out after 1.00 seconds"
        );
    }
    assert_eq!(get_status(&rt.url("/readyz")).await, 503);
}

#[tokio::test]
async fn configured_by_environment_alone_without_leaking_kfaas_variables() {
    let code = fixture("node");
    let rt = Runtime::start_with_env(&[
        ("KFAAS_RUNTIME", "nodejs20.x"),
        ("KFAAS_CODE", code.to_str().expect("path")),
        ("KFAAS_HANDLER", "handlers.info"),
        ("KFAAS_FUNCTION_NAME", "from-env"),
        ("KFAAS_ENV", "GREETING=first\nSECOND=two=2"),
    ])
    .await;
    rt.wait_ready().await;
    let body = rt.invoke("{}").await.ok();
    assert_eq!(body["functionName"], "from-env");
    assert_eq!(body["env"]["GREETING"], "first");
    assert_eq!(body["env"]["SECOND"], "two=2");
    assert_eq!(
        body["env"]["KFAAS_HANDLER"],
        serde_json::Value::Null,
        "KFAAS_* stays out"
    );
}
