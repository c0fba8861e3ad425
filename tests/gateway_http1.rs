//! The gateway's own HTTP/1.1 server (src/gateway/h1_server.rs) over raw TCP, through `kfaas
//! local` and real function processes: pipelining, `Expect: 100-continue`, chunked request
//! bodies, HTTP/1.0, HEAD, refused heads, and h2c handed to hyper.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::OnceLock,
    time::Duration,
};

use common::{LocalServer, repo};
use serde_json::Value;

/// One server for the file: each test opens its own connections.
fn server() -> &'static LocalServer {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    SERVER.get_or_init(|| LocalServer::start(&repo().join("tests/fixtures/gateway"), &[]))
}

fn connect() -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(server().addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let reader = BufReader::new(stream.try_clone().expect("clone"));
    (stream, reader)
}

/// An answer as read off the wire: status, lower-cased headers, body (de-chunked).
struct Answer {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line.trim_end_matches("\r\n").to_owned()
}

fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let (_, status, headers) = read_head_line(reader);
    (status, headers)
}

fn read_head_line(reader: &mut BufReader<TcpStream>) -> (String, u16, Vec<(String, String)>) {
    let status_line = read_line(reader);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader);
        if line.is_empty() {
            return (status_line, status, headers);
        }
        let (name, value) = line.split_once(':').expect("a header line");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn read_answer(reader: &mut BufReader<TcpStream>, head_request: bool) -> Answer {
    let (status_line, status, headers) = read_head_line(reader);
    let mut answer = Answer {
        status_line,
        status,
        headers,
        body: Vec::new(),
    };
    if head_request {
        return answer;
    }
    if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            let size = usize::from_str_radix(&read_line(reader), 16).expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            answer.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = answer.header("content-length") {
        answer.body = vec![0; length.parse().expect("content-length")];
        reader.read_exact(&mut answer.body).expect("body");
    } else {
        reader
            .read_to_end(&mut answer.body)
            .expect("body until close");
    }
    answer
}

/// Whether the server closed the connection (after what was read).
fn closed(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(reader.read_to_end(&mut rest), Ok(0))
}

/// The connection goes on: another request on it is answered (by the echo route, `id`).
fn assert_serves_the_next_request(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    id: &str,
) {
    stream
        .write_all(get(&format!("/test/echo/{id}")).as_bytes())
        .expect("write");
    let next = read_answer(reader, false);
    assert_eq!(next.json()["event"]["pathParameters"]["id"], id);
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (mut stream, mut reader) = connect();
    let wire = format!(
        "{}{}{}",
        get("/test/echo/1"),
        get("/test/nope"),
        get("/test/echo/3")
    );
    stream.write_all(wire.as_bytes()).expect("write");
    let first = read_answer(&mut reader, false);
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["event"]["pathParameters"]["id"], "1");
    let second = read_answer(&mut reader, false);
    assert_eq!(
        (second.status, second.json()),
        (404, serde_json::json!({"message": "Not Found"}))
    );
    let third = read_answer(&mut reader, false);
    assert_eq!(third.json()["event"]["pathParameters"]["id"], "3");
    assert!(third.header("date").is_some(), "every answer has a Date");
    assert!(first.header("apigw-requestid") != third.header("apigw-requestid"));
}

#[test]
fn expect_continue_gets_100_before_the_body_is_sent() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(
            b"POST /test/echo/5 HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
              Expect: 100-continue\r\nContent-Length: 11\r\n\r\n",
        )
        .expect("write head");
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 100, "the server asks for the body");
    stream.write_all(b"hello world").expect("write body");
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["event"]["body"], "hello world");
}

#[test]
fn a_chunked_request_body_arrives_whole_and_the_connection_goes_on() {
    let (mut stream, mut reader) = connect();
    let wire = "POST /test/echo/6 HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
                Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nx-trailer: t\r\n\r\n";
    stream.write_all(wire.as_bytes()).expect("write");
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["event"]["body"], "hello");
    assert_serves_the_next_request(&mut stream, &mut reader, "7");
}

#[test]
fn a_body_sent_in_pieces_is_read_as_it_comes() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(b"PUT /test/echo/8 HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nab")
        .expect("write");
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(b"cd").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(b"ef").expect("write");
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.json()["event"]["body"], "abcdef");
}

#[test]
fn http10_clients_get_keep_alive_only_when_they_ask() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(b"GET /test/echo/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .expect("write");
    let kept = read_answer(&mut reader, false);
    assert_eq!(kept.status, 200);
    assert_eq!(kept.header("connection"), Some("keep-alive"));
    stream
        .write_all(b"GET /test/echo/2 HTTP/1.0\r\n\r\n")
        .expect("write");
    let last = read_answer(&mut reader, false);
    assert_eq!(last.json()["event"]["pathParameters"]["id"], "2");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(
        kept.status_line.starts_with("HTTP/1.0 200"),
        "{}",
        kept.status_line
    );
    assert!(
        closed(&mut reader),
        "the server closed after an HTTP/1.0 answer"
    );
}

#[test]
fn a_head_request_gets_the_length_without_the_body() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(
            format!(
                "HEAD /test/echo/1 HTTP/1.1\r\nHost: t\r\n\r\n{}",
                get("/test/echo/2")
            )
            .as_bytes(),
        )
        .expect("write");
    let head = read_answer(&mut reader, true);
    assert_eq!(head.status, 200);
    let length: usize = head
        .header("content-length")
        .expect("a length")
        .parse()
        .expect("number");
    assert!(length > 0);
    // The next answer starts right after the head: no body bytes came between.
    let next = read_answer(&mut reader, false);
    assert_eq!(next.json()["event"]["pathParameters"]["id"], "2");
}

#[test]
fn bad_heads_get_api_gateways_400_and_the_connection_closes() {
    for wire in [
        "GET /test/echo/1 HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "POST /test/echo/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        "POST /test/echo/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "NOT HTTP AT ALL\r\n\r\n",
    ] {
        let (mut stream, mut reader) = connect();
        stream.write_all(wire.as_bytes()).expect("write");
        let answer = read_answer(&mut reader, false);
        assert_eq!(
            (answer.status, answer.json()),
            (400, serde_json::json!({"message": "Bad Request"})),
            "{wire:?}"
        );
        assert_eq!(answer.header("connection"), Some("close"));
        assert!(closed(&mut reader), "{wire:?}");
    }
}

#[test]
fn a_head_larger_than_the_server_holds_gets_431() {
    let (mut stream, mut reader) = connect();
    let big = format!(
        "GET /test/echo/1 HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "v".repeat(70 * 1024)
    );
    // The server answers before it has read all of it; the write may then fail.
    let _ = stream.write_all(big.as_bytes());
    let answer = read_answer(&mut reader, false);
    assert_eq!(
        (answer.status, answer.json()),
        (
            431,
            serde_json::json!({"message": "Request Header Fields Too Large"})
        )
    );
}

#[test]
fn an_unread_body_already_received_leaves_the_connection_open() {
    let (mut stream, mut reader) = connect();
    // No route: the handler answers without reading the body, which came with the head.
    stream
        .write_all(b"POST /test/nope HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .expect("write");
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("connection"), None);
    assert_serves_the_next_request(&mut stream, &mut reader, "4");
}

#[test]
fn an_unread_body_still_on_the_way_closes_the_connection_after_the_answer() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(b"POST /test/nope HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nhello")
        .expect("write");
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut reader));
}

#[test]
fn no_100_continue_is_sent_for_a_request_answered_without_its_body() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(
            b"POST /test/nope HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
              Content-Length: 1000000\r\n\r\n",
        )
        .expect("write");
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 404, "the final answer comes first, no 100");
    assert_eq!(answer.header("connection"), Some("close"));
}

#[test]
fn a_function_answering_with_a_1xx_status_gets_502() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(get("/test/status?code=103").as_bytes())
        .expect("write");
    let answer = read_answer(&mut reader, false);
    assert_eq!(
        (answer.status, answer.json()),
        (502, serde_json::json!({"message": "Internal server error"}))
    );
    assert_serves_the_next_request(&mut stream, &mut reader, "5");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(server().addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    for id in ["1", "2"] {
        let request = http::Request::get(format!("http://{}/test/echo/{id}", server().addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["event"]["pathParameters"]["id"], id);
        assert_eq!(
            value["event"]["requestContext"]["http"]["protocol"],
            "HTTP/2.0"
        );
    }
}

#[test]
fn a_head_trickled_in_is_cut_off_30_s_after_it_began() {
    let (mut stream, mut reader) = connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let began = std::time::Instant::now();
    stream
        .write_all(b"GET /test/echo/1 HTTP/1.1\r\nHost: t\r\n")
        .expect("write");
    // A header line every 2 s: each read makes progress, the head never ends.
    let mut line = 0;
    let closed_after = loop {
        assert!(
            began.elapsed() < Duration::from_secs(45),
            "the server still waits for the head after 45 s"
        );
        let mut byte = [0u8; 1];
        match reader.read(&mut byte) {
            Ok(0) => break began.elapsed(),
            Ok(_) => panic!("an answer to a head that never ended"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break began.elapsed(), // reset: closed as well
        }
        line += 1;
        if line % 2 == 0
            && stream
                .write_all(format!("x-slow-{line}: 1\r\n").as_bytes())
                .is_err()
        {
            break began.elapsed();
        }
    };
    assert!(
        closed_after >= Duration::from_secs(29),
        "closed after {closed_after:?}, before the head's 30 s"
    );
}

#[test]
fn an_idle_connection_is_closed_after_75_s() {
    let (mut stream, mut reader) = connect();
    stream
        .write_all(get("/test/echo/1").as_bytes())
        .expect("write");
    assert_eq!(read_answer(&mut reader, false).status, 200);
    let idle_from = std::time::Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    let mut rest = Vec::new();
    let read = reader.read_to_end(&mut rest);
    let idle_for = idle_from.elapsed();
    assert!(
        matches!(read, Ok(0)),
        "the server closed the idle connection: {read:?}"
    );
    assert!(
        (Duration::from_secs(73)..Duration::from_secs(85)).contains(&idle_for),
        "closed after {idle_for:?} idle, not about 75 s"
    );
}
