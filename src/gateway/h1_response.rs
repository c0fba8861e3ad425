//! Writing an answer on the gateway's HTTP/1.1 server: its head, with the body's framing, the
//! connection's fate and a Date header, and its body's chunks. Plain functions over buffers,
//! tested without sockets.

use std::{
    cell::RefCell,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;
use http::{HeaderMap, StatusCode, Version, header, response::Parts};
use http_body::SizeHint;

/// How an answer's body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body, and no length stated: 1xx, 204, 304, or a HEAD answer whose length is unknown.
    NoBody,
    Length(u64),
    Chunked,
    /// The close of the connection ends it (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// How an answer is framed: the body's exact length when it is known, then the answer's own
/// Content-Length, then chunked coding for HTTP/1.1 clients and the close for HTTP/1.0 ones.
/// A HEAD answer states the length its GET would have and sends no body.
pub fn response_framing(
    status: StatusCode,
    headers: &HeaderMap,
    body: &SizeHint,
    head_request: bool,
    version: Version,
) -> ResponseFraming {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return ResponseFraming::NoBody;
    }
    let stated = || {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if head_request {
        // The body a HEAD answer carries (a proxied one has none) says nothing of its length.
        return stated()
            .or(body.exact().filter(|&n| n > 0))
            .map_or(ResponseFraming::NoBody, ResponseFraming::Length);
    }
    match body.exact().or_else(stated) {
        Some(n) => ResponseFraming::Length(n),
        None if version == Version::HTTP_10 => ResponseFraming::UntilClose,
        None => ResponseFraming::Chunked,
    }
}

/// Writes an answer's status line and headers, and says whether the connection stays open
/// after it: as `keep_alive` asks, unless the answer itself says `Connection: close`. The
/// framing headers are this connection's: the answer's own Content-Length, Transfer-Encoding and
/// Connection are replaced.
pub fn encode_response_head(
    parts: &Parts,
    framing: ResponseFraming,
    mut keep_alive: bool,
    request_version: Version,
    out: &mut BytesMut,
) -> bool {
    // An HTTP/1.0 client is answered in its own version, as hyper's server did.
    out.extend_from_slice(if request_version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            keep_alive &= !super::h1::lists_token(value, "close");
            continue;
        }
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        write_http_date(SystemTime::now(), out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::NoBody | ResponseFraming::UntilClose => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if request_version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    keep_alive
}

/// Writes one piece of an answer's body as the framing has it.
pub fn encode_body_data(framing: ResponseFraming, data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return; // an empty chunk would end a chunked body
    }
    if framing == ResponseFraming::Chunked {
        let mut size = [0u8; 16];
        let digits = hex(data.len(), &mut size);
        out.extend_from_slice(digits);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Writes what ends an answer's body: the last chunk for chunked coding, nothing otherwise.
pub fn encode_body_end(framing: ResponseFraming, out: &mut BytesMut) {
    if framing == ResponseFraming::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

thread_local! {
    /// The Date header's text for the current second: formatted once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Writes `now` as an HTTP date (IMF-fixdate, 29 bytes).
pub fn write_http_date(now: SystemTime, out: &mut BytesMut) {
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            // IMF-fixdate is 29 bytes for every year the clock can show (to 9999).
            let text = httpdate::fmt_http_date(now);
            let len = text.len().min(29);
            cached.1[..len].copy_from_slice(&text.as_bytes()[..len]);
            cached.0 = second;
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Response};

    use super::*;

    fn encoded(
        response: Response<()>,
        framing: ResponseFraming,
        keep_alive: bool,
        version: Version,
    ) -> String {
        let (parts, ()) = response.into_parts();
        let mut out = BytesMut::new();
        let kept = encode_response_head(&parts, framing, keep_alive, version, &mut out);
        let text = String::from_utf8(out.to_vec()).expect("ascii");
        assert_eq!(kept, !text.contains("connection: close\r\n"), "{text}");
        text
    }

    #[test]
    fn framing_takes_the_exact_length_then_the_stated_one_then_chunks_or_the_close() {
        let ok = StatusCode::OK;
        let none = HeaderMap::new();
        let mut stated = HeaderMap::new();
        stated.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        let exact = SizeHint::with_exact(7);
        let unknown = SizeHint::default();
        let v11 = Version::HTTP_11;
        assert_eq!(
            response_framing(ok, &stated, &exact, false, v11),
            ResponseFraming::Length(7)
        );
        assert_eq!(
            response_framing(ok, &stated, &unknown, false, v11),
            ResponseFraming::Length(42)
        );
        assert_eq!(
            response_framing(ok, &none, &unknown, false, v11),
            ResponseFraming::Chunked
        );
        assert_eq!(
            response_framing(ok, &none, &unknown, false, Version::HTTP_10),
            ResponseFraming::UntilClose
        );
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::CONTINUE,
        ] {
            assert_eq!(
                response_framing(status, &stated, &exact, false, v11),
                ResponseFraming::NoBody
            );
        }
        // HEAD: the stated length (a proxied answer's), else the body's, else none at all.
        let proxied = SizeHint::with_exact(0);
        assert_eq!(
            response_framing(ok, &stated, &proxied, true, v11),
            ResponseFraming::Length(42)
        );
        assert_eq!(
            response_framing(ok, &none, &exact, true, v11),
            ResponseFraming::Length(7)
        );
        assert_eq!(
            response_framing(ok, &none, &proxied, true, v11),
            ResponseFraming::NoBody
        );
    }

    #[test]
    fn the_head_replaces_framing_headers_and_adds_a_date() {
        let response = Response::builder()
            .status(201)
            .header("x-one", "1")
            .header(header::CONTENT_LENGTH, "999")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header(header::CONNECTION, "upgrade")
            .body(())
            .expect("response");
        let text = encoded(response, ResponseFraming::Length(3), true, Version::HTTP_11);
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 201 Created"));
        let rest: Vec<&str> = lines.collect();
        assert!(rest.contains(&"x-one: 1"));
        assert!(rest.contains(&"content-length: 3"));
        assert!(!text.contains("999") && !text.contains("chunked") && !text.contains("upgrade"));
        let date = rest
            .iter()
            .find(|l| l.starts_with("date: "))
            .expect("a date");
        assert!(
            httpdate::parse_http_date(&date["date: ".len()..]).is_ok(),
            "{date}"
        );
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn the_connection_header_says_what_happens_next() {
        let plain = || Response::new(());
        let close = encoded(plain(), ResponseFraming::Chunked, false, Version::HTTP_11);
        assert!(
            close.contains("connection: close\r\n")
                && close.contains("transfer-encoding: chunked\r\n")
        );
        let http10 = encoded(plain(), ResponseFraming::Length(0), true, Version::HTTP_10);
        assert!(http10.contains("connection: keep-alive\r\n"));
        let http11 = encoded(plain(), ResponseFraming::Length(0), true, Version::HTTP_11);
        assert!(!http11.contains("connection:"));
        let dated = Response::builder()
            .header(header::DATE, "Tue, 01 Jan 2030 00:00:00 GMT")
            .body(())
            .expect("response");
        let own = encoded(dated, ResponseFraming::NoBody, true, Version::HTTP_11);
        assert_eq!(own.matches("date: ").count(), 1, "{own}");
        // The answer itself may ask for the close.
        let closing = Response::builder()
            .header(header::CONNECTION, "Close")
            .body(())
            .expect("response");
        let text = encoded(closing, ResponseFraming::Length(0), true, Version::HTTP_11);
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(http10.starts_with("HTTP/1.0 200 OK\r\n"), "{http10}");
    }

    #[test]
    fn chunks_carry_their_size_in_hex_and_empty_data_writes_nothing() {
        let mut out = BytesMut::new();
        encode_body_data(ResponseFraming::Chunked, &[b'x'; 300], &mut out);
        encode_body_data(ResponseFraming::Chunked, b"", &mut out);
        encode_body_end(ResponseFraming::Chunked, &mut out);
        let expected = format!("12c\r\n{}\r\n0\r\n\r\n", "x".repeat(300));
        assert_eq!(out, expected.as_bytes());
        let mut out = BytesMut::new();
        encode_body_data(ResponseFraming::Length(2), b"ab", &mut out);
        encode_body_end(ResponseFraming::Length(2), &mut out);
        assert_eq!(&out[..], b"ab");
    }

    #[test]
    fn the_date_is_the_seconds_own() {
        let mut out = BytesMut::new();
        write_http_date(
            UNIX_EPOCH + std::time::Duration::from_secs(784_111_777),
            &mut out,
        );
        assert_eq!(&out[..], b"Sun, 06 Nov 1994 08:49:37 GMT");
        out.clear();
        write_http_date(
            UNIX_EPOCH + std::time::Duration::from_secs(784_111_778),
            &mut out,
        );
        assert_eq!(&out[..], b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
