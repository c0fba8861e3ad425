use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use super::*;

fn parts(method: Method, uri: &str, headers: &[(&'static str, &'static str)]) -> Parts {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).expect("request").into_parts().0
}

fn head_text(parts: &Parts, framing: Framing) -> String {
    let mut out = BytesMut::new();
    encode_head(parts, &HeadEdit::default(), framing, &mut out);
    String::from_utf8(out.to_vec()).expect("utf-8")
}

/// A body of unknown length (a stream of one chunk).
fn streamed(data: &'static [u8]) -> Body {
    let frames = futures::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(data)))]);
    StreamBody::new(frames).boxed()
}

#[test]
fn an_edited_head_leaves_out_hop_by_hop_and_replaced_headers_and_adds_the_new_ones() {
    let request = parts(
        Method::GET,
        "/p",
        &[
            ("host", "api.example.com"),
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("x-forwarded-for", "203.0.113.7"),
            ("accept", "*/*"),
        ],
    );
    let replace = [(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_static("203.0.113.7, 10.0.0.1"),
    )];
    let edit = HeadEdit {
        target: Some(("/inner", Some("q=1"))),
        strip_hop_by_hop: true,
        replace: &replace,
    };
    let mut out = BytesMut::new();
    encode_head(&request, &edit, Framing::None, &mut out);
    assert_eq!(
        String::from_utf8(out.to_vec()).expect("utf-8"),
        "GET /inner?q=1 HTTP/1.1\r\nhost: api.example.com\r\naccept: */*\r\n\
         x-forwarded-for: 203.0.113.7, 10.0.0.1\r\n\r\n"
    );
    // Without the edit, the head is the request's own.
    let own = head_text(&request, Framing::None);
    assert!(own.contains("x-private: secret\r\n") && own.contains("te: trailers\r\n"));
}

#[test]
fn naming_content_length_or_host_in_connection_does_not_drop_them() {
    // A body sent without its length would be read by the instance as the next request.
    let request = parts(
        Method::POST,
        "/p",
        &[
            ("host", "api.example.com"),
            ("connection", "content-length, host, x-private"),
            ("content-length", "4"),
            ("x-private", "secret"),
        ],
    );
    let edit = HeadEdit {
        strip_hop_by_hop: true,
        ..HeadEdit::default()
    };
    let mut out = BytesMut::new();
    encode_head(&request, &edit, Framing::Length(4), &mut out);
    assert_eq!(
        String::from_utf8(out.to_vec()).expect("utf-8"),
        "POST /p HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: 4\r\n\r\n"
    );
}

#[test]
fn a_head_is_the_request_line_the_headers_and_the_framing() {
    let get = parts(Method::GET, "/a/b?x=1", &[("host", "fn"), ("x-multi", "1")]);
    assert_eq!(
        head_text(&get, Framing::None),
        "GET /a/b?x=1 HTTP/1.1\r\nhost: fn\r\nx-multi: 1\r\n\r\n"
    );
    let post = parts(Method::POST, "/", &[("host", "fn")]);
    assert_eq!(
        head_text(&post, Framing::Length(11)),
        "POST / HTTP/1.1\r\nhost: fn\r\ncontent-length: 11\r\n\r\n"
    );
    assert_eq!(
        head_text(&post, Framing::Chunked),
        "POST / HTTP/1.1\r\nhost: fn\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // The caller's own Content-Length is sent once; a Transfer-Encoding of its is not sent.
    let given = parts(
        Method::PUT,
        "/",
        &[("content-length", "3"), ("transfer-encoding", "gzip")],
    );
    assert_eq!(
        head_text(&given, Framing::Length(3)),
        "PUT / HTTP/1.1\r\ncontent-length: 3\r\n\r\n"
    );
}

#[test]
fn request_framing_follows_the_body() {
    let get = parts(Method::GET, "/", &[]);
    assert_eq!(
        request_framing(&get, &empty_body()).ok(),
        Some(Framing::None)
    );
    let post = parts(Method::POST, "/", &[]);
    assert_eq!(
        request_framing(&post, &empty_body()).ok(),
        Some(Framing::Length(0))
    );
    assert_eq!(
        request_framing(&post, &crate::gateway::invoke::full("hello")).ok(),
        Some(Framing::Length(5))
    );
    assert_eq!(
        request_framing(&post, &streamed(b"hello")).ok(),
        Some(Framing::Chunked)
    );
    let declared = parts(Method::POST, "/", &[("content-length", "5")]);
    assert_eq!(
        request_framing(&declared, &streamed(b"hello")).ok(),
        Some(Framing::Length(5))
    );
    let bad = parts(Method::POST, "/", &[("content-length", "five")]);
    assert!(request_framing(&bad, &empty_body()).is_err());
}

#[test]
fn chunked_data_is_framed_and_ended() {
    let mut out = BytesMut::new();
    encode_data(Framing::Chunked, b"hello world, again", &mut out);
    encode_data(Framing::Chunked, b"", &mut out);
    encode_end(Framing::Chunked, &mut out);
    assert_eq!(&out[..], b"12\r\nhello world, again\r\n0\r\n\r\n");
}

const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn a_head_split_anywhere_parses_once_whole() {
    let head_len = ANSWER.len() - 5;
    for cut in 0..head_len {
        assert!(
            parse_head(&ANSWER[..cut]).expect("no error").is_none(),
            "parsed from {cut} bytes"
        );
    }
    let (head, len) = parse_head(ANSWER).expect("valid").expect("complete");
    assert_eq!(len, head_len);
    assert_eq!(head.status, StatusCode::OK);
    let bytes = Bytes::from_static(ANSWER);
    let (response, decoder, keep_alive) = head.build(&bytes, &Method::GET).expect("built");
    assert!(keep_alive);
    assert!(matches!(decoder, Decoder::Length(5)));
    assert_eq!(response.headers()["content-type"], "text/plain");
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
}

fn framing_of(answer: &'static [u8], method: Method) -> Result<(Decoder, bool), ExchangeError> {
    let (head, _) = parse_head(answer)?.expect("complete");
    let (_, decoder, keep_alive) = head.build(&Bytes::from_static(answer), &method)?;
    Ok((decoder, keep_alive))
}

#[test]
fn the_body_framing_and_keep_alive_follow_rfc_9112() {
    let ok = |a: &'static [u8], m: Method| framing_of(a, m).expect("valid answer");
    let (d, keep) = ok(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
        Method::HEAD,
    );
    assert!(d.is_end() && keep, "HEAD has no body");
    let (d, _) = ok(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET);
    assert!(d.is_end());
    let (d, _) = ok(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        Method::GET,
    );
    assert!(d.is_end());
    let (d, keep) = ok(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Method::GET,
    );
    assert!(matches!(d, Decoder::Chunked(_)) && keep);
    let (d, _) = ok(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        Method::GET,
    );
    assert!(matches!(d, Decoder::UntilClose));
    let (d, keep) = ok(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        Method::GET,
    );
    assert!(
        matches!(d, Decoder::Chunked(_)) && !keep,
        "both framings: not reused"
    );
    let (d, _) = ok(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET);
    assert!(
        matches!(d, Decoder::UntilClose),
        "no framing: read to the close"
    );
    let (_, keep) = ok(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        Method::GET,
    );
    assert!(!keep);
    let (_, keep) = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET);
    assert!(!keep, "HTTP/1.0 closes unless it says keep-alive");
    let (_, keep) = ok(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
        Method::GET,
    );
    assert!(keep);
    let (d, _) = ok(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
        Method::GET,
    );
    assert!(
        matches!(d, Decoder::Length(4)),
        "repeated equal lengths are one"
    );
    assert!(
        framing_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            Method::GET
        )
        .is_err()
    );
    assert!(
        framing_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            Method::GET
        )
        .is_err()
    );
    assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
    assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
}

#[test]
fn too_many_headers_is_a_malformed_answer() {
    let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        answer.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    answer.extend_from_slice(b"\r\n");
    assert!(matches!(
        parse_head(&answer),
        Err(ExchangeError::Malformed(_))
    ));
}

/// Feeds `wire` to a decoder `step` bytes at a time; the body it gave and how it ended.
fn decode_in_steps(
    mut decoder: Decoder,
    wire: &[u8],
    step: usize,
) -> (Vec<u8>, Result<(), String>) {
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
            Ok(Decoded::End) => return (body, Ok(())),
            Ok(Decoded::NeedMore) => {
                if fed == wire.len() {
                    return (body, Err("ran out of input".into()));
                }
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
            Err(e) => return (body, Err(e.to_string())),
        }
    }
}

#[test]
fn a_chunked_body_decodes_however_it_is_split() {
    let wire =
        b"5\r\nhello\r\n7;name=value\r\n, world\r\nA\r\n and more\n\r\n0\r\nTrailer: x\r\n\r\n";
    for step in [1, 2, 3, 7, 64] {
        let (body, end) = decode_in_steps(Decoder::Chunked(ChunkedDecoder::default()), wire, step);
        assert_eq!(end, Ok(()), "step {step}");
        assert_eq!(body, b"hello, world and more\n", "step {step}");
    }
}

#[test]
fn a_bad_chunked_body_is_an_error() {
    for wire in [
        &b"x\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"\r\nhello\r\n",
        b"fffffffffffffffff\r\n",
    ] {
        let (_, end) = decode_in_steps(Decoder::Chunked(ChunkedDecoder::default()), wire, 1);
        assert!(end.is_err_and(|e| e.contains("chunked")), "{wire:?}");
    }
    let long = vec![b'1'; MAX_CHUNK_LINE + 1];
    let (_, end) = decode_in_steps(Decoder::Chunked(ChunkedDecoder::default()), &long, 4096);
    assert!(end.is_err());
    // Trailers without end: each line is short, all of them are not.
    let mut endless = b"0\r\n".to_vec();
    while endless.len() <= MAX_TRAILERS + 64 {
        endless.extend_from_slice(b"x-trailer: 0123456789abcdef\r\n");
    }
    let (_, end) = decode_in_steps(Decoder::Chunked(ChunkedDecoder::default()), &endless, 4096);
    assert!(
        end.is_err_and(|e| e.contains("trailers too long")),
        "endless trailers"
    );
    let mut few = b"0\r\n".to_vec();
    few.extend_from_slice(b"x-a: 1\r\nx-b: 2\r\n\r\n");
    let (_, end) = decode_in_steps(Decoder::Chunked(ChunkedDecoder::default()), &few, 3);
    assert_eq!(end, Ok(()), "a few trailers are read and dropped");
}

#[test]
fn a_length_body_stops_at_its_length() {
    let mut decoder = Decoder::Length(5);
    let mut buf = BytesMut::from(&b"helloHTTP/1.1 next"[..]);
    assert_eq!(
        decoder.decode(&mut buf).ok(),
        Some(Decoded::Data(Bytes::from_static(b"hello")))
    );
    assert!(decoder.is_end());
    assert_eq!(
        &buf[..],
        b"HTTP/1.1 next",
        "what follows stays for the connection"
    );
    let (body, end) = decode_in_steps(Decoder::Length(11), b"hello world", 3);
    assert_eq!((body.as_slice(), end), (&b"hello world"[..], Ok(())));
    let (_, end) = decode_in_steps(Decoder::UntilClose, b"all of it", 4);
    assert!(end.is_err(), "only the close ends it");
}

#[test]
fn a_whole_answer_reads_the_same_however_it_is_split() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    for step in [1, 5, wire.len()] {
        let (response, body) = decode_answer(wire, &Method::POST, step).expect("valid");
        assert_eq!(response.status(), StatusCode::CREATED, "step {step}");
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(body, b"abcde", "step {step}");
    }
    assert!(matches!(
        decode_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            &Method::GET,
            3
        ),
        Err(ExchangeError::Incomplete)
    ));
    assert!(matches!(
        decode_answer(b"HTTP/1.1 200 OK\r\n", &Method::GET, 3),
        Err(ExchangeError::ClosedBeforeAnswer)
    ));
}

#[test]
fn transfer_encoding_is_decided_by_its_last_coding_over_all_lines() {
    let (d, _) = framing_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        Method::GET,
    )
    .expect("valid");
    assert!(
        matches!(d, Decoder::UntilClose),
        "chunked, then gzip: read to the close"
    );
    let (d, _) = framing_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        Method::GET,
    )
    .expect("valid");
    assert!(matches!(d, Decoder::Chunked(_)));
    assert!(
        framing_of(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET
        )
        .is_err(),
        "HTTP/1.0 has no transfer codings"
    );
    let answer: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    let (head, _) = parse_head(answer).expect("valid").expect("complete");
    let (response, _, keep_alive) = head
        .build(&Bytes::from_static(answer), &Method::GET)
        .expect("built");
    assert!(!keep_alive);
    assert!(
        !response.headers().contains_key("content-length"),
        "a proxy passes on no Content-Length beside Transfer-Encoding"
    );
}

#[test]
fn chunk_sizes_are_hex_digits_only() {
    let (body, end) = decode_in_steps(
        Decoder::Chunked(ChunkedDecoder::default()),
        b"5 ;ext=\"a b\"\r\nhello\r\n0\r\n\r\n",
        1,
    );
    assert_eq!(
        (body.as_slice(), end),
        (&b"hello"[..], Ok(())),
        "BWS before an extension"
    );
    for wire in [
        &b"+5\r\nhello\r\n0\r\n\r\n"[..],
        b" 5\r\nhello\r\n",
        b"5\rx\r\nhello\r\n",
    ] {
        let (_, end) = decode_in_steps(Decoder::Chunked(ChunkedDecoder::default()), wire, 1);
        assert!(end.is_err(), "{wire:?}");
    }
}

/// An instance that answers before it has read the request's body, and then reads nothing.
#[tokio::test]
async fn an_early_answer_is_returned_while_the_body_is_still_streaming() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let instance = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut head = vec![0u8; 4096];
        let _ = socket.read(&mut head).await.expect("read");
        socket
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo much")
            .await
            .expect("write");
        // Kept open and never read again, as a server that gave up on the request.
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        drop(socket);
    });
    // 256 MiB of body, far more than the socket buffers hold.
    let frames = futures::stream::iter(
        (0..256).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 1 << 20])))),
    );
    let body = StreamBody::new(frames).boxed();
    let mut conn = Conn::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    let parts = parts(Method::POST, "/upload", &[("host", "fn")]);
    let edit = HeadEdit::default();
    let exchange = conn.exchange(&parts, &edit, body);
    let (response, mut decoder) =
        tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
            .await
            .expect("the early answer came back while the body was still streaming")
            .expect("an answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = std::future::poll_fn(|cx| conn.poll_body(&mut decoder, cx))
        .await
        .expect("a body")
        .expect("read");
    assert_eq!(&body[..], b"too much");
    assert!(
        !conn.reusable(),
        "a connection answered mid-request is not reused"
    );
    instance.abort();
}
