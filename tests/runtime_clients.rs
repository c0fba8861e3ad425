//! AWS's own runtime clients, unmodified, against `kfaas runtime`: Python's `awslambdaric`
//! (installed from PyPI into a venv under target/) through the `--` command override, and a
//! handler built with the Rust `lambda_runtime` crate through the `provided` runtime.
//!
//! A client that cannot be installed or built fails the test with the installer's own error.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use support::{Runtime, fixture};

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A venv with awslambdaric, made once and reused.
fn awslambdaric_python() -> PathBuf {
    let venv = target_dir().join("ric-venv");
    let python = venv.join("bin/python");
    let installed = Command::new(&python)
        .args(["-c", "import awslambdaric"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(&python).args(["-m", "pip", "install", "--quiet", "awslambdaric"]),
            "pip install awslambdaric",
        );
    }
    python
}

#[tokio::test]
async fn awslambdaric_runs_an_unmodified_handler() {
    let python = tokio::task::spawn_blocking(awslambdaric_python)
        .await
        .expect("join");
    let python = python.to_str().expect("path").to_owned();
    let code = fixture("ric-python");
    let code = code.to_str().expect("path");
    let rt = Runtime::ready(&[
        "--code",
        code,
        "--function-name",
        "ric",
        "--memory-mb",
        "512",
        "--env",
        "GREETING=from kfaas",
        "--",
        &python,
        "-m",
        "awslambdaric",
        "app.handler",
    ])
    .await;
    let out = rt.invoke_with_id(r#"{"hello":"ric"}"#, Some("ric-1")).await;
    let body = out.ok();
    assert_eq!(body["event"]["hello"], "ric");
    assert_eq!(body["aws_request_id"], "ric-1");
    assert_eq!(body["function_name"], "ric");
    assert_eq!(body["memory_limit_in_mb"], "512");
    assert_eq!(body["greeting"], "from kfaas");
    assert!(
        body["remaining"]
            .as_i64()
            .is_some_and(|r| r > 0 && r <= 3000),
        "{body}"
    );
    // A second invocation on the same process.
    assert_eq!(rt.invoke(r#"{"hello":2}"#).await.ok()["event"]["hello"], 2);

    let failing = Runtime::ready(&[
        "--code",
        code,
        "--",
        &python,
        "-m",
        "awslambdaric",
        "app.fails",
    ])
    .await;
    let out = failing.invoke("{}").await;
    out.failed("function");
    let error = out.json();
    assert_eq!(error["errorType"], "KeyError");
    assert!(
        error["stackTrace"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{error}"
    );

    let missing = Runtime::start(&[
        "--code",
        code,
        "--",
        &python,
        "-m",
        "awslambdaric",
        "app.nope",
    ])
    .await;
    let out = missing.invoke("{}").await;
    out.failed("init");
    assert_eq!(out.json()["errorType"], "Runtime.HandlerNotFound");
}

/// Builds the `lambda_runtime` fixture (its own workspace, its own target dir so repeated runs
/// reuse the build) and lays it out as a `provided` code folder.
fn rust_bootstrap_dir() -> tempfile::TempDir {
    let manifest = fixture("rust-hello").join("Cargo.toml");
    let target = target_dir().join("fixtures");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(
        Command::new(cargo)
            .args(["build", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS"),
        "cargo build of the lambda_runtime fixture",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(target.join("debug/bootstrap"), dir.path().join("bootstrap"))
        .expect("copy bootstrap");
    dir
}

#[tokio::test]
async fn rust_lambda_runtime_handler_runs_as_provided() {
    let code = tokio::task::spawn_blocking(rust_bootstrap_dir)
        .await
        .expect("join");
    let rt = Runtime::ready(&[
        "--runtime",
        "provided",
        "--code",
        code.path().to_str().expect("path"),
        "--function-name",
        "rusty",
        "--memory-mb",
        "256",
    ])
    .await;
    let out = rt.invoke_with_id(r#"{"n":5}"#, Some("rust-1")).await;
    let body = out.ok();
    assert_eq!(body["echo"]["n"], 5);
    assert_eq!(body["requestId"], "rust-1");
    assert_eq!(body["functionName"], "rusty");
    assert_eq!(body["memory"], 256);

    let out = rt.invoke(r#"{"fail":true}"#).await;
    out.failed("function");
    assert_eq!(out.json()["errorMessage"], "asked to fail");
    // The handler keeps serving after an error.
    assert_eq!(rt.invoke(r#"{"n":6}"#).await.ok()["echo"]["n"], 6);
}

/// AWS's Node.js client (`aws-lambda-ric` 3.x, for Node 20) compiles native code on install
/// (about ten minutes here, and it needs autoconf, automake, libtool, cmake, make and g++), so
/// it runs only with `KFAAS_TEST_NODE_RIC=1`; the install goes to
/// `~/.cache/kfaas-test/node-ric` and is reused. An install failure fails the test with npm's
/// own output.
#[tokio::test]
async fn node_aws_lambda_ric_runs_an_unmodified_handler() {
    if std::env::var("KFAAS_TEST_NODE_RIC").as_deref() != Ok("1") {
        eprintln!(
            "node_aws_lambda_ric_runs_an_unmodified_handler: not run; set KFAAS_TEST_NODE_RIC=1 \
             (npm builds aws-lambda-ric's native code: needs autoconf automake libtool cmake g++)"
        );
        return;
    }
    let entry = tokio::task::spawn_blocking(node_ric_entry)
        .await
        .expect("join");
    let entry = entry.to_str().expect("path").to_owned();
    let code = fixture("node");
    let rt = Runtime::ready(&[
        "--code",
        code.to_str().expect("path"),
        "--function-name",
        "node-ric",
        "--",
        "node",
        &entry,
        "handlers.info",
    ])
    .await;
    let body = rt
        .invoke_with_id(r#"{"via":"ric"}"#, Some("ric-node-1"))
        .await
        .ok();
    assert_eq!(body["event"]["via"], "ric");
    assert_eq!(body["awsRequestId"], "ric-node-1");
    assert_eq!(body["functionName"], "node-ric");
    assert!(body["remaining"].as_i64().is_some_and(|r| r > 0), "{body}");

    let failing = Runtime::ready(&[
        "--code",
        code.to_str().expect("path"),
        "--",
        "node",
        &entry,
        "handlers.throws",
    ])
    .await;
    let out = failing.invoke("{}").await;
    out.failed("function");
    assert_eq!(out.json()["errorMessage"], "boom from node");
}

fn node_ric_entry() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(target_dir, PathBuf::from);
    let dir = home.join(".cache/kfaas-test/node-ric");
    let entry = dir.join("node_modules/aws-lambda-ric/bin/index.mjs");
    let native = dir.join("node_modules/aws-lambda-ric/dist/rapid-client.node");
    if !(entry.is_file() && native.is_file()) {
        std::fs::create_dir_all(&dir).expect("cache dir");
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "aws-lambda-ric@3"])
                .current_dir(&dir),
            "npm install aws-lambda-ric@3",
        );
    }
    entry
}
