//! The Node.js bootstrap's own Runtime API client against a scripted server: answers framed by
//! Content-Length or chunked encoding, written in pieces that split heads, lengths and bodies
//! across TCP reads, large events, and a connection the server closes between invocations.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::{path::Path, process::Stdio, time::Duration};

use support::fixture;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    time::timeout,
};

const LIMIT: Duration = Duration::from_secs(20);

fn bootstrap() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/nodejs/bootstrap.js")
}

/// A scripted Runtime API on a free port and the bootstrap running `handler` against it.
async fn start_node(handler: &str) -> (TcpListener, Child) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = listener.local_addr().expect("addr").to_string();
    let node = Command::new("node")
        .arg(bootstrap())
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("LAMBDA_TASK_ROOT", fixture("node"))
        .env("_HANDLER", handler)
        .env("AWS_LAMBDA_FUNCTION_NAME", "client-test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    (listener, node)
}

/// One request as the bootstrap sent it.
struct Sent {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Sent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

async fn read_request(conn: &mut BufReader<TcpStream>) -> Sent {
    let mut request_line = String::new();
    conn.read_line(&mut request_line).await.expect("read");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("read");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header line");
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut sent = Sent {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body: Vec::new(),
    };
    let length: usize = sent
        .header("content-length")
        .map_or(0, |v| v.parse().expect("length"));
    sent.body = vec![0; length];
    conn.read_exact(&mut sent.body).await.expect("body");
    sent
}

/// Writes `bytes` in pieces of `piece` bytes, each its own write (and so, with no delay on
/// the socket and a pause, most likely its own read on the other side).
async fn write_in_pieces(conn: &mut BufReader<TcpStream>, bytes: &[u8], piece: usize) {
    for part in bytes.chunks(piece) {
        conn.get_mut().write_all(part).await.expect("write");
        conn.get_mut().flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn event_head(id: &str, framing: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: 99999999999999\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:client-test\r\n{framing}\r\n"
    )
}

fn content_length(id: &str, event: &str) -> Vec<u8> {
    let mut out = event_head(id, &format!("Content-Length: {}\r\n", event.len())).into_bytes();
    out.extend_from_slice(event.as_bytes());
    out
}

fn chunked(id: &str, event: &str, chunk: usize) -> Vec<u8> {
    let mut out = event_head(id, "Transfer-Encoding: chunked\r\n").into_bytes();
    for part in event.as_bytes().chunks(chunk) {
        out.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    out
}

const ACCEPTED_LENGTH: &[u8] =
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}";
const ACCEPTED_CHUNKED: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"statu\r\n8\r\ns\":\"OK\"}\r\n0\r\n\r\n";

async fn accept(listener: &TcpListener) -> BufReader<TcpStream> {
    let (conn, _) = timeout(LIMIT, listener.accept())
        .await
        .expect("the bootstrap connects")
        .expect("accept");
    conn.set_nodelay(true).expect("nodelay");
    BufReader::new(conn)
}

/// Serves one invocation on `conn`: the event in `answer` written in pieces of `piece` bytes,
/// then the bootstrap's response, acknowledged with `ack`. Returns the response.
async fn serve_one(
    conn: &mut BufReader<TcpStream>,
    answer: &[u8],
    piece: usize,
    ack: &[u8],
) -> Sent {
    let next = timeout(LIMIT, read_request(conn)).await.expect("/next");
    assert_eq!(
        next.request_line,
        "GET /2018-06-01/runtime/invocation/next HTTP/1.1"
    );
    write_in_pieces(conn, answer, piece).await;
    let response = timeout(LIMIT, read_request(conn)).await.expect("/response");
    write_in_pieces(conn, ack, 5).await;
    response
}

#[tokio::test]
async fn answers_framed_either_way_and_split_anywhere_are_read_whole() {
    let (listener, _node) = start_node("handlers.measure").await;
    let mut conn = accept(&listener).await;

    // Content-Length, one byte a write: the head and the body split everywhere.
    let sent = serve_one(
        &mut conn,
        &content_length("id-1", r#"{"n":1}"#),
        1,
        ACCEPTED_LENGTH,
    )
    .await;
    assert_eq!(
        sent.request_line,
        "POST /2018-06-01/runtime/invocation/id-1/response HTTP/1.1"
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.json(), serde_json::json!({ "n": 1, "padLength": 0 }));

    // Chunked, chunk sizes and data split across writes, with extensions and a trailer.
    let sent = serve_one(
        &mut conn,
        &chunked("id-2", r#"{"n":2,"pad":"abcdefghij"}"#, 4),
        3,
        ACCEPTED_CHUNKED,
    )
    .await;
    assert!(sent.request_line.contains("/invocation/id-2/response"));
    assert_eq!(sent.json(), serde_json::json!({ "n": 2, "padLength": 10 }));

    // A large event (3 MiB) in large writes, framed both ways.
    let pad = "x".repeat(3 * 1024 * 1024);
    let event = format!(r#"{{"n":3,"pad":"{pad}"}}"#);
    let sent = serve_one(
        &mut conn,
        &content_length("id-3", &event),
        200_000,
        ACCEPTED_LENGTH,
    )
    .await;
    assert_eq!(
        sent.json(),
        serde_json::json!({ "n": 3, "padLength": pad.len() })
    );
    let sent = serve_one(
        &mut conn,
        &chunked("id-4", &event, 100_000),
        300_000,
        ACCEPTED_LENGTH,
    )
    .await;
    assert_eq!(
        sent.json(),
        serde_json::json!({ "n": 3, "padLength": pad.len() })
    );

    // After a chunked acknowledgement, a small event in one write.
    let sent = serve_one(
        &mut conn,
        &content_length("id-5", r#"{"n":5}"#),
        10_000,
        ACCEPTED_CHUNKED,
    )
    .await;
    assert_eq!(sent.json(), serde_json::json!({ "n": 5, "padLength": 0 }));
}

#[tokio::test]
async fn a_closed_connection_is_opened_again_for_the_next_call() {
    let (listener, _node) = start_node("handlers.measure").await;

    // The acknowledgement says `Connection: close` and the server closes.
    let mut conn = accept(&listener).await;
    let close_ack: &[u8] = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}";
    let sent = serve_one(
        &mut conn,
        &content_length("id-a", r#"{"n":10}"#),
        64,
        close_ack,
    )
    .await;
    assert_eq!(sent.json(), serde_json::json!({ "n": 10, "padLength": 0 }));
    drop(conn);

    // An event framed by the end of the connection (no length, no chunking), on a new one.
    let mut conn = accept(&listener).await;
    let next = timeout(LIMIT, read_request(&mut conn))
        .await
        .expect("/next");
    assert!(next.request_line.starts_with("GET "));
    let mut answer = event_head("id-b", "Connection: close\r\n").into_bytes();
    answer.extend_from_slice(br#"{"n":11}"#);
    write_in_pieces(&mut conn, &answer, 7).await;
    drop(conn);

    let mut conn = accept(&listener).await;
    let sent = timeout(LIMIT, read_request(&mut conn))
        .await
        .expect("/response");
    assert!(sent.request_line.contains("/invocation/id-b/response"));
    assert_eq!(sent.json(), serde_json::json!({ "n": 11, "padLength": 0 }));
}

#[tokio::test]
async fn error_types_with_control_characters_are_cleaned_out_of_the_header() {
    let (listener, _node) = start_node("handlers.throwsOddName").await;
    let mut conn = accept(&listener).await;
    let sent = serve_one(
        &mut conn,
        &content_length("id-e", "{}"),
        1024,
        ACCEPTED_LENGTH,
    )
    .await;
    assert_eq!(
        sent.request_line,
        "POST /2018-06-01/runtime/invocation/id-e/error HTTP/1.1"
    );
    assert_eq!(
        sent.header("lambda-runtime-function-error-type"),
        Some("OddErrorinjected")
    );
    assert_eq!(sent.json()["errorType"], "OddError\r\ninjected");
}

#[tokio::test]
async fn the_process_ends_when_the_runtime_api_is_gone() {
    let (listener, mut node) = start_node("handlers.measure").await;
    let mut conn = accept(&listener).await;
    timeout(LIMIT, read_request(&mut conn))
        .await
        .expect("/next");
    // The runtime goes away while /next waits: the poll is tried once more, then the
    // bootstrap exits with an error instead of reconnecting in a loop.
    drop(conn);
    drop(listener);
    let status = timeout(LIMIT, node.wait())
        .await
        .expect("the bootstrap exits")
        .expect("wait");
    assert!(!status.success(), "{status:?}");
}
