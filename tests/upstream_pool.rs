//! The gateway's keep-alive connections to `http` function instances (src/gateway/upstream.rs),
//! through `kfaas local` and a Python server that tells which connection answered.

mod common;

use std::time::{Duration, Instant};

use common::{LocalServer, repo};
use serde_json::Value;

/// One serving thread, so one pool: which thread accepts a client connection does not matter.
fn server() -> LocalServer {
    LocalServer::start(
        &repo().join("tests/fixtures/upstream"),
        &["--no-access-log", "--worker-threads", "1"],
    )
}

/// One request on a new client connection each time, so only the gateway's pool is tested.
async fn call(server: &LocalServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let response = client
        .request(method, server.url(path))
        .body("0123456789")
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

#[tokio::test]
async fn a_connection_is_reused_across_requests() {
    let server = server();
    let (status, first) = call(&server, reqwest::Method::GET, "/a").await;
    assert_eq!(status, 200, "{first}");
    for path in ["/b", "/empty", "/chunks", "/c"] {
        let (status, _) = call(&server, reqwest::Method::GET, path).await;
        assert!(status == 200 || status == 204, "{path}: {status}");
    }
    let (status, last) = call(&server, reqwest::Method::POST, "/d").await;
    assert_eq!(status, 200);
    assert_eq!(last["received"], 10, "the request body arrives");
    assert_eq!(
        last["port"], first["port"],
        "every request went over the first connection, 204 and chunked answers included"
    );
}

#[tokio::test]
async fn an_instance_closing_after_each_answer_gets_a_new_connection_each_time() {
    let server = server();
    let mut ports = std::collections::HashSet::new();
    for n in 1..=5 {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let (status, body) = call(&server, method.clone(), "/close").await;
            assert_eq!(status, 200, "{method} #{n}: {body}");
            ports.insert(body["port"].to_string());
        }
    }
    let (status, body) = call(&server, reqwest::Method::GET, "/after").await;
    assert_eq!(status, 200);
    ports.insert(body["port"].to_string());
    assert_eq!(ports.len(), 11, "no closed connection was used again");
}

#[tokio::test]
async fn connections_the_instance_closed_while_idle_are_not_used() {
    let server = server();
    let (status, first) = call(&server, reqwest::Method::GET, "/a").await;
    assert_eq!(status, 200);
    // The server closes a connection idle for 1 s: the pooled one is dead now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // POST is not idempotent: it must not be sent on the dead connection and fail.
    let (status, body) = call(&server, reqwest::Method::POST, "/b").await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["port"], first["port"]);
    assert_eq!(body["received"], 10);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, third) = call(&server, reqwest::Method::GET, "/c").await;
    assert_eq!(status, 200, "{third}");
    assert_ne!(third["port"], body["port"]);
}

#[tokio::test]
async fn an_instance_that_dies_is_replaced_and_served_again() {
    let server = server();
    let (status, first) = call(&server, reqwest::Method::GET, "/a").await;
    assert_eq!(status, 200);
    let pid = first["pid"].as_u64().expect("pid");
    // Kill the function's server; kfaas local replaces the instance.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        last = call(&server, reqwest::Method::GET, "/b").await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 200, "never served again: {}", last.1);
    assert_ne!(last.1["pid"], first["pid"], "a new instance answers");
    // And its connections are pooled as before.
    for _ in 0..5 {
        let (status, body) = call(&server, reqwest::Method::GET, "/c").await;
        assert_eq!(status, 200);
        assert_eq!(body["port"], last.1["port"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_answer() {
    let server = server();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let client = client.clone();
        let url = server.url(&format!("/n{n}"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let response = client
                    .post(&url)
                    .body(vec![b'x'; n * 100])
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.expect("json");
                assert_eq!(body["received"], n * 100, "the answer of this request");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

#[tokio::test]
async fn each_serving_thread_keeps_its_own_connections() {
    let server = LocalServer::start(
        &repo().join("tests/fixtures/upstream"),
        &["--no-access-log", "--worker-threads", "2"],
    );
    let mut ports = std::collections::HashSet::new();
    for n in 0..12 {
        let (status, body) = call(&server, reqwest::Method::GET, &format!("/t{n}")).await;
        assert_eq!(status, 200, "{body}");
        ports.insert(body["port"].to_string());
    }
    // Twelve requests one after another, each on a new client connection that either thread may
    // accept: at most one upstream connection per thread.
    assert!(
        (1..=2).contains(&ports.len()),
        "upstream connections used: {ports:?}"
    );
}

#[tokio::test]
async fn answers_framed_every_way_arrive_whole() {
    let server = server();
    // Early hints before the answer, no length (ended by the close), one byte per write, chunked.
    for path in ["/hints", "/until-close", "/trickle", "/chunks", "/a"] {
        let (status, body) = call(&server, reqwest::Method::GET, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["method"], "GET", "{path}: {body}");
        assert_eq!(body["received"], 10, "{path}: the request body arrives");
    }
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_a_502_and_the_next_request_is_served() {
    let server = server();
    let (status, body) = call(&server, reqwest::Method::GET, "/garbage").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].is_string(), "{body}");
    let (status, body) = call(&server, reqwest::Method::GET, "/a").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_streamed_request_body_arrives_whole() {
    let server = server();
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = (0..20u8)
        .map(|i| Ok(vec![b'a' + i; 1000 + usize::from(i)]))
        .collect();
    let total: usize = (0..20).map(|i| 1000 + i).sum();
    // No length: the client sends it chunked, and so does the gateway to the instance.
    let response = reqwest::Client::new()
        .post(server.url("/streamed"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["received"], total, "{body}");
}

#[tokio::test]
async fn a_stopping_gateway_answers_the_requests_in_flight_before_it_stops_their_instances() {
    let mut server = server();
    let (status, _) = call(&server, reqwest::Method::GET, "/warm").await;
    assert_eq!(status, 200, "the instance is up");
    let url = server.url("/slow");
    let in_flight = tokio::spawn(async move {
        let response = reqwest::get(url).await.expect("an answer");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    });
    // The instance takes 0.8 s; the gateway is told to stop meanwhile. The instance (a Python
    // server, which dies on SIGTERM) must not be stopped under the request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let (status, body) = in_flight.await.expect("join");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["method"], "GET");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.exited() {
        assert!(Instant::now() < deadline, "the gateway did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
