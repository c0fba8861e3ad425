use http::{Method, Version, header};

use super::*;

fn head(wire: &str) -> RequestHead {
    match decode_request_head(wire.as_bytes()) {
        Ok(Some((head, len))) => {
            assert_eq!(len, wire.find("\r\n\r\n").expect("a whole head") + 4);
            head
        }
        other => panic!("{wire:?} gave {other:?}"),
    }
}

fn refused(wire: &str) -> HeadError {
    match decode_request_head(wire.as_bytes()) {
        Err(e) => e,
        other => panic!("{wire:?} was not refused: {other:?}"),
    }
}

#[test]
fn a_request_line_and_headers_become_the_requests_parts() {
    let got = head(
        "POST /prod/items/7?x=1&y=%20 HTTP/1.1\r\nHost: api.example.com\r\nX-Multi: a\r\n\
         x-multi: b\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(got.parts.method, Method::POST);
    assert_eq!(got.parts.uri.path(), "/prod/items/7");
    assert_eq!(got.parts.uri.query(), Some("x=1&y=%20"));
    assert_eq!(got.parts.version, Version::HTTP_11);
    assert_eq!(got.parts.headers[header::HOST], "api.example.com");
    let multi: Vec<_> = got.parts.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert!(matches!(got.body, Decoder::Length(5)));
    assert!(got.keep_alive);
    assert!(!got.expect_continue);
}

#[test]
fn a_head_split_anywhere_needs_more_bytes() {
    let wire = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    for cut in 0..wire.len() {
        assert!(
            matches!(decode_request_head(&wire.as_bytes()[..cut]), Ok(None)),
            "cut at {cut}"
        );
    }
    assert!(matches!(decode_request_head(wire.as_bytes()), Ok(Some(_))));
}

#[test]
fn keep_alive_follows_the_version_and_connection_tokens() {
    let cases = [
        ("GET / HTTP/1.1\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    for (wire, keep_alive) in cases {
        assert_eq!(head(wire).keep_alive, keep_alive, "{wire:?}");
    }
}

#[test]
fn the_body_is_framed_by_chunked_coding_or_content_length() {
    assert!(matches!(head("GET / HTTP/1.1\r\n\r\n").body, Decoder::Done));
    assert!(matches!(
        head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body,
        Decoder::Done
    ));
    for repeated in [
        "POST / HTTP/1.1\r\nContent-Length: 12, 12\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n",
    ] {
        let got = head(repeated);
        assert!(matches!(got.body, Decoder::Length(12)), "{repeated:?}");
        let lengths: Vec<_> = got
            .parts
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .collect();
        assert_eq!(lengths, ["12"], "passed on as one value: {repeated:?}");
    }
    assert!(matches!(
        head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
            .body,
        Decoder::Chunked(_)
    ));
}

#[test]
fn ambiguous_framing_is_refused() {
    for wire in [
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert!(matches!(refused(wire), HeadError::Malformed(_)), "{wire:?}");
    }
}

#[test]
fn expect_continue_is_kept_only_for_an_http11_request_with_a_body() {
    let with_body = "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    assert!(head(with_body).expect_continue);
    assert!(!head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    assert!(
        !head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .expect_continue
    );
}

#[test]
fn bad_heads_are_refused_with_what_is_wrong() {
    assert!(
        matches!(refused("GET / HTTP/2.0\r\n\r\n"), HeadError::Malformed(m) if m.contains("version"))
    );
    assert!(matches!(
        refused("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
        HeadError::Malformed(_)
    ));
    assert!(matches!(
        refused("G\u{1}T / HTTP/1.1\r\n\r\n"),
        HeadError::Malformed(_)
    ));
}

#[test]
fn heads_too_long_or_with_too_many_headers_are_too_large() {
    let long = format!(
        "GET / HTTP/1.1\r\nx-big: {}\r\n",
        "v".repeat(MAX_REQUEST_HEAD)
    );
    assert_eq!(
        refused(&long),
        HeadError::TooLarge,
        "incomplete and over the limit"
    );
    let long = format!("{long}\r\n");
    assert_eq!(
        refused(&long),
        HeadError::TooLarge,
        "complete and over the limit"
    );
    let many: String = (0..=MAX_REQUEST_HEADERS)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect();
    assert_eq!(
        refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
        HeadError::TooLarge
    );
}

#[test]
fn an_absolute_target_keeps_its_authority() {
    let got = head("GET http://api.example.com:8080/p?q HTTP/1.1\r\n\r\n");
    assert_eq!(
        got.parts.uri.authority().map(|a| a.as_str()),
        Some("api.example.com:8080")
    );
    assert_eq!(got.parts.uri.path(), "/p");
}
