//! The shop and echo-http examples through `kfaas local`: routing precedence with path
//! parameters and a greedy route, stage variables, the canary, and an `http` function.

mod common;

use common::{LocalServer, repo};
use serde_json::Value;

async fn get_json(
    client: &reqwest::Client,
    url: String,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = client.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        headers,
    )
}

#[tokio::test]
async fn shop_routes_by_precedence_with_stage_variables_and_canary() {
    let server = LocalServer::start(&repo().join("examples/shop"), &["--no-access-log"]);
    let client = reqwest::Client::new();

    let (status, body, _) = get_json(&client, server.url("/prod/orders")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["table"], "orders-prod",
        "stage variables reach a 1.0 event"
    );

    let (status, body, _) = get_json(&client, server.url("/prod/files/img/2024/a.png")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["file"], "img/2024/a.png",
        "the greedy parameter keeps slashes"
    );

    // /orders/{id} is served by ${stageVariables.orderFunction}: v1 normally, v2 for the canary.
    let mut versions = std::collections::BTreeMap::new();
    for i in 0..60 {
        let (status, body, headers) =
            get_json(&client, server.url(&format!("/prod/orders/{i}"))).await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], i.to_string());
        let variant = headers["x-kfaas-stage-variant"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let version = body["version"].as_str().expect("version").to_owned();
        assert_eq!(
            version,
            if variant == "canary" { "v2" } else { "v1" },
            "the variant header names the function that served"
        );
        *versions.entry(version).or_insert(0) += 1;
    }
    assert!(
        versions.get("v1").copied().unwrap_or(0) > 30,
        "most go to the stable variant: {versions:?}"
    );

    let response = client
        .get(server.url("/orders"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404, "the stage lives under /prod");

    let create = |key: Option<&str>| {
        let mut request = client
            .post(server.url("/prod/orders"))
            .header("content-type", "application/json")
            .body(r#"{"item":"book"}"#);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };
    let response = create(None).await.expect("request");
    assert_eq!(
        response.status(),
        403,
        "POST /prod/orders needs the partner's API key"
    );
    let response = create(Some("acme-demo-key-change-me"))
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["created"]["item"], "book");
}

#[tokio::test]
async fn http_functions_are_reverse_proxied() {
    let server = LocalServer::start(&repo().join("examples/echo-http"), &["--no-access-log"]);
    let client = reqwest::Client::new();
    let response = client
        .put(server.url("/any/path?q=1"))
        .header("x-custom", "yes")
        .body("payload")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["apigw-requestid"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/any/path?q=1");
    assert_eq!(body["body"], "payload");
    assert_eq!(body["headers"]["x-custom"], "yes");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        body["headers"]["x-request-id"],
        request_id.as_str(),
        "the request id propagates"
    );

    // A streamed request body of 1 MiB arrives whole.
    let big = vec![b'a'; 1024 * 1024];
    let response = client
        .post(server.url("/upload"))
        .body(big)
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["body"].as_str().map(str::len), Some(1024 * 1024));
}

#[tokio::test]
async fn sigterm_stops_the_function_instances_too() {
    sigterm_stops_the_instances_of("examples/echo-http", "/x").await;
}

/// A `lambda` function's handler processes are children of `kfaas local` (its runtime runs
/// inside it): they stop with it too.
#[tokio::test]
async fn sigterm_stops_lambda_handler_processes_too() {
    sigterm_stops_the_instances_of("examples/hello", "/hello?name=x").await;
}

async fn sigterm_stops_the_instances_of(example: &str, path: &str) {
    let server = LocalServer::start(&repo().join(example), &["--no-access-log"]);
    let response = reqwest::get(server.url(path)).await.expect("request");
    assert_eq!(response.status(), 200);
    let children = server.children();
    assert!(
        !children.is_empty(),
        "an instance runs after the first request"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    for pid in children {
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "instance {pid} outlived kfaas local's SIGTERM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A `kfaas local` whose parent goes away (its stdin pipe closes) stops, instances and all, so
/// a test harness or editor that dies leaves nothing running.
#[tokio::test]
async fn closing_stdin_stops_kfaas_local_and_its_instances() {
    let mut server = LocalServer::start(&repo().join("examples/echo-http"), &["--no-access-log"]);
    let response = reqwest::get(server.url("/x")).await.expect("request");
    assert_eq!(response.status(), 200);
    let children = server.children();
    assert!(
        !children.is_empty(),
        "an instance runs after the first request"
    );
    server.close_stdin();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !server.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "kfaas local kept running after its stdin closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for pid in children {
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "instance {pid} outlived kfaas local"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A client cannot drop its body's length, or its Host, by naming them in its Connection
/// header: the instance would read the body as a request of its own (request smuggling).
#[tokio::test]
async fn connection_cannot_name_the_body_length_or_the_host_away() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = LocalServer::start(&repo().join("examples/echo-http"), &["--no-access-log"]);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /first HTTP/1.1\r\nHost: api.example\r\nConnection: content-length, host, close\r\n\
         Content-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answered in time")
    .expect("read");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/first");
    assert_eq!(body["body"], smuggled, "the body arrives as the body");
    assert_eq!(body["headers"]["host"], "api.example");
}
