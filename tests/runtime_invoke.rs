//! `kfaas invoke` against a running `kfaas runtime`.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use support::{Runtime, fixture, kfaas};

fn invoke_cli(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(kfaas())
        .arg("invoke")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kfaas invoke");
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("kfaas invoke output")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout not JSON ({e}): {} / stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn invoke_prints_the_hello_examples_result() {
    let code = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/src");
    let rt = Runtime::ready(&[
        "--runtime",
        "nodejs",
        "--code",
        code.to_str().expect("path"),
        "--handler",
        "index.handler",
        "--function-name",
        "hello",
    ])
    .await;
    let url = format!("http://{}", rt.addr);
    let out = tokio::task::spawn_blocking(move || {
        invoke_cli(
            &[
                "--url",
                &url,
                "--payload-format",
                "2.0",
                "--method",
                "GET",
                "--path",
                "/hello?name=kfaas",
            ],
            None,
        )
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{out:?}");
    let result = stdout_json(&out);
    assert_eq!(result["statusCode"], 200);
    let body: serde_json::Value =
        serde_json::from_str(result["body"].as_str().expect("body string")).expect("body JSON");
    assert_eq!(body["message"], "hello, kfaas");
    assert_eq!(body["path"], "/hello");
}

#[tokio::test]
async fn events_from_files_and_stdin_and_function_errors() {
    let rt = Runtime::ready(&[
        "--runtime",
        "nodejs",
        "--code",
        fixture("node").to_str().expect("path"),
        "--handler",
        "handlers.info",
    ])
    .await;
    let url = format!("http://{}", rt.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("event.json");
    std::fs::write(&file, r#"{"from":"file"}"#).expect("write event");
    let (u1, u2, f) = (url.clone(), url.clone(), file.display().to_string());
    let from_file = tokio::task::spawn_blocking(move || {
        invoke_cli(
            &["--url", &u1, "--event", &f, "--request-id", "cli-1"],
            None,
        )
    })
    .await
    .expect("join");
    assert!(from_file.status.success(), "{from_file:?}");
    let result = stdout_json(&from_file);
    assert_eq!(result["event"]["from"], "file");
    assert_eq!(result["awsRequestId"], "cli-1");

    let from_stdin = tokio::task::spawn_blocking(move || {
        invoke_cli(&["--url", &u2, "--event", "-"], Some(r#"{"from":"stdin"}"#))
    })
    .await
    .expect("join");
    assert_eq!(stdout_json(&from_stdin)["event"]["from"], "stdin");

    let v1 = tokio::task::spawn_blocking(move || {
        invoke_cli(
            &[
                "--url",
                &url,
                "--payload-format",
                "1.0",
                "--method",
                "post",
                "--path",
                "/o/1",
                "--body",
                "x",
            ],
            None,
        )
    })
    .await
    .expect("join");
    let event = &stdout_json(&v1)["event"];
    assert_eq!(event["httpMethod"], "POST");
    assert_eq!(event["path"], "/o/1");
    assert_eq!(event["body"], "x");

    let failing = Runtime::ready(&[
        "--runtime",
        "nodejs",
        "--code",
        fixture("node").to_str().expect("path"),
        "--handler",
        "handlers.throws",
    ])
    .await;
    let url = format!("http://{}", failing.addr);
    let out = tokio::task::spawn_blocking(move || invoke_cli(&["--url", &url], None))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout_json(&out)["errorMessage"], "boom from node");

    let bad = tokio::task::spawn_blocking(|| invoke_cli(&["--url", "http://127.0.0.1:1"], None))
        .await
        .expect("join");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot connect"));
}
