//! What of the machine's environment `kfaas local` gives function instances: a defined set, as
//! Lambda does, not the developer's whole shell.

mod common;

use std::time::Duration;

use common::{LocalServer, repo};
use serde_json::Value;

/// The environment the function at `path` answers with.
async fn env_of(server: &LocalServer, path: &str) -> serde_json::Map<String, Value> {
    let response = reqwest::get(server.url(path)).await.expect("request");
    assert_eq!(response.status(), 200, "{path}");
    match response.json::<Value>().await.expect("json") {
        Value::Object(env) => env,
        other => panic!("{path} answered {other}"),
    }
}

#[tokio::test]
async fn instances_get_a_defined_environment_not_the_whole_shell() {
    let server = LocalServer::start_with_env(
        &repo().join("tests/fixtures/local-env"),
        &["--no-access-log", "--pass-env", "MY_*"],
        &[
            ("SECRET_TOKEN", "must-not-leak"),
            ("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),
            ("AWS_PROFILE", "the-developers"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("MY_SETTING", "passed-by-pattern"),
            ("LC_ALL", "C.UTF-8"),
        ],
    );
    let path = std::env::var("PATH").expect("PATH");
    for route in ["/lambda", "/http"] {
        let env = env_of(&server, route).await;
        let get = |name: &str| env.get(name).and_then(Value::as_str);
        assert_eq!(get("PATH"), Some(path.as_str()), "{route}: PATH is passed");
        assert_eq!(get("LC_ALL"), Some("C.UTF-8"), "{route}: the locale is");
        assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("AKIDEXAMPLE"), "{route}");
        assert_eq!(get("MY_SETTING"), Some("passed-by-pattern"), "{route}");
        assert_eq!(get("GREETING"), Some("from-the-function"), "{route}");
        for hidden in ["SECRET_TOKEN", "NODE_EXTRA_CA_CERTS", "KFAAS_LOG"] {
            assert_eq!(get(hidden), None, "{route}: {hidden} is not passed");
        }
        assert!(
            !env.keys().any(|k| k.starts_with("KFAAS_")),
            "{route}: no kfaas setting reaches a function: {:?}",
            env.keys().collect::<Vec<_>>()
        );
    }
    let lambda = env_of(&server, "/lambda").await;
    assert_eq!(
        lambda.get("AWS_PROFILE").and_then(Value::as_str),
        Some("the-functions-own"),
        "the Function's own environment wins over the machine's"
    );
    assert_eq!(
        lambda
            .get("AWS_LAMBDA_FUNCTION_NAME")
            .and_then(Value::as_str),
        Some("env-lambda")
    );
    let http = env_of(&server, "/http").await;
    assert_eq!(
        http.get("AWS_PROFILE").and_then(Value::as_str),
        Some("the-developers"),
        "the AWS SDK settings are passed"
    );
}

#[test]
fn a_bad_pass_env_name_is_one_clear_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kfaas"))
        .arg("local")
        .arg(repo().join("tests/fixtures/local-env"))
        .args(["--port", "0", "--pass-env", "NODE-OPTIONS"])
        .output()
        .expect("run kfaas local");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kfaas local: --pass-env \"NODE-OPTIONS\": not a variable name"),
        "{stderr}"
    );
}

/// `kfaas local` killed outright (SIGKILL: nothing of it runs to stop its instances) takes its
/// handler processes with it, one busy in an invocation that never ends included.
#[tokio::test]
async fn a_killed_kfaas_local_leaves_no_handler_running() {
    let server = LocalServer::start(
        &repo().join("tests/fixtures/local-env"),
        &["--no-access-log"],
    );
    // A thread of its own: the waits below block this one.
    let addr = server.url("").trim_start_matches("http://").to_owned();
    let spinning = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr)?;
        write!(stream, "GET /spin HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map(|_| answer)
    });
    server.wait_for_line(Duration::from_secs(20), |l| l == "[spin] spinning");
    let handlers = server.children();
    assert!(!handlers.is_empty(), "the spinning handler runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while handlers.iter().any(alive) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<&u32> = handlers.iter().filter(|pid| alive(pid)).collect();
    for pid in &left {
        // Not to leave a spinning process behind should the assertion fail.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(**pid).expect("pid")),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(left.is_empty(), "handlers outlived kfaas local: {left:?}");
    let answer = spinning.join().expect("join");
    assert!(
        answer.as_ref().map_or(true, Vec::is_empty),
        "the request was cut, not answered: {answer:?}"
    );
}
