//! Reading a request's head on the gateway's HTTP/1.1 server: the request line and headers,
//! how its body is framed and whether the connection stays open after it (RFC 9112). Plain
//! functions over buffers, tested without sockets.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};

use super::{
    h1::{
        ChunkedDecoder, Decoder, FramingHeaders, content_length, ends_in_chunked, has_token,
        header_ranges, range_in,
    },
    spare::HeaderRanges,
};

/// A request's head may not be longer than this (API Gateway's own limit, 10 KB, is the
/// handler's; a longer head gets the same 431 here without being held).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Nor have more header lines than this.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// Why a request's head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error(
        "the request's head is longer than {MAX_REQUEST_HEAD} bytes or has more than {MAX_REQUEST_HEADERS} headers"
    )]
    TooLarge,
    #[error("{0}")]
    Malformed(String),
}

/// A request's head as parsed: where its parts are in the head's bytes.
#[derive(Debug)]
pub struct RawHead {
    method: Range<usize>,
    target: Range<usize>,
    version: Version,
    headers: HeaderRanges,
}

/// A request's head, ready for the handler.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: http::request::Parts,
    /// How its body is read; `Decoder::Done` when it has none.
    pub body: Decoder,
    /// Another request may follow this one on the connection.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// Parses a request's head from the start of `buf`: the head and its length, or `None` when
/// more bytes are needed.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RawHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(format!("bad request head: {e}"))),
    };
    if len > MAX_REQUEST_HEAD {
        return Err(HeadError::TooLarge);
    }
    // A complete parse has all three.
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("bad request line".into()));
    };
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    Ok(Some((
        RawHead {
            method: range_in(buf, method.as_bytes()),
            target: range_in(buf, target.as_bytes()),
            version,
            headers: header_ranges(buf, request.headers),
        },
        len,
    )))
}

impl RawHead {
    /// The request's parts (the target and header values share `bytes`), its body's framing and
    /// the connection's fate (RFC 9112 §6, §9.3).
    pub fn build(self, bytes: &Bytes) -> Result<RequestHead, HeadError> {
        let malformed = |what: &str| HeadError::Malformed(what.to_owned());
        let method =
            Method::from_bytes(&bytes[self.method]).map_err(|_| malformed("bad method"))?;
        let uri = Uri::from_maybe_shared(bytes.slice(self.target))
            .map_err(|_| malformed("bad request target"))?;
        // Exactly as large as needed: the gateway adds its headers while encoding the
        // instance's request (`h1::HeadEdit`), not to this map.
        let mut map = super::spare::header_map(self.headers.len());
        let mut seen = FramingHeaders::default();
        let mut ranges = self.headers;
        for (name, value) in ranges.drain(..) {
            let name =
                HeaderName::from_bytes(&bytes[name]).map_err(|_| malformed("bad header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value))
                .map_err(|_| HeadError::Malformed(format!("bad value of header {name}")))?;
            seen.note(&name);
            map.append(name, value);
        }
        super::spare::keep_header_ranges(ranges);
        let says = |token| seen.connection && has_token(&map, header::CONNECTION, token);
        let close = says("close");
        let keep_alive = match self.version {
            Version::HTTP_10 => !close && says("keep-alive"),
            _ => !close,
        };
        let body = if seen.transfer_encoding || seen.content_length {
            body_framing(&mut map, self.version)?
        } else {
            Decoder::Done
        };
        let expect_continue = self.version == Version::HTTP_11
            && !body.is_end()
            && seen.expect
            && map
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = map;
        let (parts, ()) = request.into_parts();
        Ok(RequestHead {
            parts,
            body,
            keep_alive,
            expect_continue,
        })
    }
}

/// How a request's body is framed (RFC 9112 §6.3). A request that frames it two ways at once,
/// or in a way the server cannot read to its end, is refused: it is how requests are smuggled
/// past a proxy.
fn body_framing(map: &mut HeaderMap, version: Version) -> Result<Decoder, HeadError> {
    let malformed = |what: &str| HeadError::Malformed(what.to_owned());
    if map.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if map.contains_key(header::CONTENT_LENGTH) {
            return Err(malformed("both Transfer-Encoding and Content-Length"));
        }
        // The last coding of all the lines decides, and it must be chunked.
        if !ends_in_chunked(map) {
            return Err(malformed("Transfer-Encoding does not end in chunked"));
        }
        return Ok(Decoder::Chunked(ChunkedDecoder::default()));
    }
    if !map.contains_key(header::CONTENT_LENGTH) {
        return Ok(Decoder::Done);
    }
    let length = content_length(map).ok_or_else(|| malformed("bad Content-Length"))?;
    let repeated = map.get_all(header::CONTENT_LENGTH).iter().count() > 1
        || map
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().contains(&b','));
    if repeated {
        // Repeated values that agree are one length: passed on as one.
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(if length == 0 {
        Decoder::Done
    } else {
        Decoder::Length(length)
    })
}

/// Reads a request's head held in memory, for the fuzz target and the tests: the head and its
/// length, or `None` when more bytes are needed.
pub fn decode_request_head(wire: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some((raw, len)) = parse_request_head(wire)? else {
        return Ok(None);
    };
    let bytes = Bytes::copy_from_slice(&wire[..len]);
    Ok(Some((raw.build(&bytes)?, len)))
}

#[cfg(test)]
#[path = "h1_request_tests.rs"]
mod tests;
