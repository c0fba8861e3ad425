//! `kfaas runtime` with Python handlers through `runtimes/python`: real processes, real HTTP.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::time::Duration;

use support::{Runtime, assert_one_trace_per_invocation, fixture, get_status};

fn python_args(code: &str, handler: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--runtime",
        "python",
        "--code",
        fixture(code).to_str().expect("path"),
        "--handler",
        handler,
        "--function-name",
        "py-test",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

async fn python(handler: &str, extra: &[&str]) -> Runtime {
    let args = python_args("python", handler, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Runtime::ready(&refs).await
}

#[tokio::test]
async fn each_invocation_sees_its_own_trace_id_in_the_environment() {
    let rt = python("handlers.trace_env", &[]).await;
    let first = rt.invoke("{}").await.ok();
    let second = rt.invoke("{}").await.ok();
    assert_one_trace_per_invocation(&first, &second);
}

#[tokio::test]
async fn result_context_env_and_log_frame() {
    let rt = python(
        "handlers.info",
        &["--env", "GREETING=hallo", "--timeout-seconds", "4"],
    )
    .await;
    let out = rt
        .invoke_with_id(r#"{"answer":42}"#, Some("req-py-1"))
        .await;
    assert_eq!(out.header("x-amz-request-id"), Some("req-py-1"));
    let body = out.ok();
    assert_eq!(body["event"]["answer"], 42);
    assert_eq!(body["aws_request_id"], "req-py-1");
    assert_eq!(body["function_name"], "py-test");
    assert_eq!(body["memory_limit_in_mb"], "128");
    assert!(
        body["invoked_function_arn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":function:py-test"))
    );
    let remaining = body["remaining"].as_i64().expect("remaining");
    assert!(remaining > 0 && remaining <= 4000, "remaining {remaining}");
    assert_eq!(body["env"]["GREETING"], "hallo");
    assert_eq!(body["env"]["TZ"], "UTC");

    rt.stdout
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("REPORT RequestId: req-py-1")
        })
        .await
        .expect("REPORT line");
    let lines = rt.stdout.snapshot();
    let pos =
        |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l)).expect("line present");
    let start = pos(&|l| l == "START RequestId: req-py-1 Version: $LATEST");
    let printed = pos(&|l| l.starts_with("info handler ran"));
    let end = pos(&|l| l == "END RequestId: req-py-1");
    assert!(
        start < printed && printed < end,
        "frame out of order: {lines:?}"
    );
}

#[tokio::test]
async fn thrown_error_has_lambdas_shape() {
    let rt = python("handlers.throws", &[]).await;
    let out = rt.invoke_with_id("{}", Some("py-err")).await;
    out.failed("function");
    let body = out.json();
    assert_eq!(body["errorType"], "ValueError");
    assert_eq!(body["errorMessage"], "boom from python");
    assert_eq!(body["requestId"], "py-err");
    let trace = body["stackTrace"].as_array().expect("stackTrace");
    assert!(
        trace
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.contains("handlers.py"))),
        "{trace:?}"
    );
    // The process survives a handler error.
    rt.invoke("{}").await.failed("function");
}

#[tokio::test]
async fn timeout_kills_the_process_and_the_instance_recovers() {
    let rt = python("handlers.sleep", &["--timeout-seconds", "1"]).await;
    let before = rt.invoke(r#"{"ms":0}"#).await.ok()["pid"].clone();
    let out = rt.invoke(r#"{"ms":10000}"#).await;
    out.failed("timeout");
    assert_eq!(out.body, "Task timed out after 1.00 seconds");
    let after = rt.invoke(r#"{"ms":0}"#).await.ok()["pid"].clone();
    assert_ne!(before, after);
}

#[tokio::test]
async fn crash_mid_invocation_is_reported_and_the_instance_recovers() {
    let rt = python("handlers.crash", &[]).await;
    let before = rt.invoke("{}").await.ok()["pid"].clone();
    let out = rt.invoke(r#"{"crash":true}"#).await;
    out.failed("crash");
    assert_eq!(out.json()["errorType"], "Runtime.ExitError");
    let after = rt.invoke("{}").await.ok()["pid"].clone();
    assert_ne!(before, after);
}

#[tokio::test]
async fn init_errors_are_reported() {
    let args = python_args("python-init-error", "broken.handler", &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let rt = Runtime::start(&refs).await;
    rt.stdout
        .wait_for(Duration::from_secs(10), |l| l == "KFAAS_INIT_FAILED")
        .await
        .expect("init failure line");
    assert_eq!(get_status(&rt.url("/readyz")).await, 503);
    let out = rt.invoke("{}").await;
    out.failed("init");
    let body = out.json();
    assert_eq!(body["errorType"], "RuntimeError");
    assert_eq!(body["errorMessage"], "init boom from python");

    let args = python_args("python", "handlers.nope", &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let rt = Runtime::start(&refs).await;
    let out = rt.invoke("{}").await;
    out.failed("init");
    assert_eq!(out.json()["errorType"], "Runtime.HandlerNotFound");
}

#[tokio::test]
async fn concurrency_runs_invocations_in_parallel_processes() {
    let rt = python("handlers.sleep", &["--concurrency", "3"]).await;
    let calls = (0..3).map(|_| rt.invoke(r#"{"ms":400}"#));
    let results: Vec<_> = futures::future::join_all(calls).await;
    let bodies: Vec<_> = results.iter().map(support::Invoked::ok).collect();
    let mut pids: Vec<_> = bodies.iter().map(|b| b["pid"].as_i64()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{bodies:?}");
    let latest_start = bodies.iter().filter_map(|b| b["start"].as_i64()).max();
    let earliest_end = bodies.iter().filter_map(|b| b["end"].as_i64()).min();
    assert!(
        latest_start < earliest_end,
        "the invocations must overlap: {bodies:?}"
    );
}
