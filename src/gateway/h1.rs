//! The client side of HTTP/1.1 on one upstream connection: write a request, read the answer's
//! head, then its body, framed by Content-Length, chunked coding or the connection's close.
//!
//! hyper's client connection put a request channel, a response oneshot and a body channel
//! between the request's task and the socket, and encoded through its general codec; the
//! gateway only ever has one exchange at a time on a connection and polls it from the request's
//! own task, so this writes the head straight into one buffer and hands out the answer's bytes
//! straight from the read buffer. The byte-level steps (`encode_head`, `parse_head`,
//! `ChunkedDecoder`) are plain functions over buffers, tested without sockets.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header,
    request::Parts,
};
use http_body::{Body as _, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::{TcpStream, tcp::OwnedReadHalf},
};

use super::{
    invoke::{Body, BoxError},
    outbox::Outbox,
    spare::HeaderRanges,
};

/// An answer's head may not be longer than this.
const MAX_HEAD: usize = 64 * 1024;
/// Nor have more header lines than this.
const MAX_HEADERS: usize = 128;
/// How much a read asks for at least.
const READ_CHUNK: usize = 16 * 1024;
/// Headers the gateway adds to every answer after it is read (the request id). Only that one:
/// room for more (CORS, the stage variant) would make a usual answer's map larger than the
/// allocator's fast size classes, which costs more than growing the map the rare time.
const ADDED_HEADERS: usize = 1;
/// A request body known to be at most this long, and ready, goes out in the head's write.
const COALESCE_BODY: u64 = 64 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("writing the request failed: {0}")]
    Write(io::Error),
    #[error("reading the answer failed: {0}")]
    Read(io::Error),
    #[error("the connection closed before an answer")]
    ClosedBeforeAnswer,
    #[error("the connection closed before the end of the answer")]
    Incomplete,
    #[error("bad answer: {0}")]
    Malformed(String),
    #[error("the request body failed: {0}")]
    RequestBody(BoxError),
    #[error("the request body's length does not match its Content-Length ({0})")]
    RequestBodyLength(u64),
}

/// An exchange that failed, and the request body when it is whole and can be sent again.
#[derive(Debug)]
pub struct Failed {
    pub error: ExchangeError,
    /// Nothing of the request reached the instance in a way it could have acted on: the write
    /// failed, or the connection closed before any byte of an answer.
    pub unanswered: bool,
    /// The body, when none of it was lost on the way (empty, or one frame kept).
    pub body: Option<Body>,
}

/// One upstream connection.
pub struct Conn {
    reader: OwnedReadHalf,
    /// Requests go out with the serving thread's other writes (`super::outbox`).
    outbox: Outbox,
    /// Read from the socket, not yet consumed.
    buf: BytesMut,
    /// Another request may follow the current one.
    reusable: bool,
    /// The buffer the last request was encoded in, kept for the next (a small one only).
    out: BytesMut,
}

/// An encoding buffer up to this size is kept for the connection's next request (a usual
/// head; an idle connection holds no more than this of its last request).
const KEEP_OUT: usize = 1024;

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        let (reader, writer) = io.into_split();
        Self {
            reader,
            outbox: Outbox::new(writer),
            buf: BytesMut::new(),
            reusable: true,
            out: BytesMut::new(),
        }
    }

    /// Whether an idle connection is still open: no FIN, no reset and nothing unasked-for to
    /// read. Usually answered from Tokio's readiness without a system call.
    pub fn is_idle_open(&self) -> bool {
        if !self.reusable || !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.reader.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether the exchange that just ended left the connection fit for another request.
    pub fn reusable(&self) -> bool {
        self.reusable && self.buf.is_empty()
    }

    /// Sends the request and reads the answer's head; the body is read with `poll_body`.
    pub async fn exchange(
        &mut self,
        parts: &Parts,
        edit: &HeadEdit<'_>,
        mut body: Body,
    ) -> Result<(Response<()>, Decoder), Failed> {
        let failed = |error, unanswered, body| Failed {
            error,
            unanswered,
            body,
        };
        let framing = match request_framing(parts, &body) {
            Ok(f) => f,
            Err(e) => return Err(failed(e, true, None)),
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.reserve(512);
        encode_head(parts, edit, framing, &mut out);
        // A small body that is ready now goes out with the head, and is kept for a resend.
        let mut kept: Option<Bytes> = None;
        if !body.is_end_stream() && body.size_hint().exact().is_some_and(|n| n <= COALESCE_BODY) {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(&mut cx) {
                match frame {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            encode_data(framing, &data, &mut out);
                            kept = Some(data);
                        }
                    }
                    Some(Err(e)) => {
                        return Err(failed(ExchangeError::RequestBody(e), true, None));
                    }
                    None => {}
                }
            }
        }
        let whole = body.is_end_stream();
        if whole {
            if let Framing::Length(n) = framing {
                let sent = kept.as_ref().map_or(0, |b| b.len() as u64);
                if sent != n {
                    return Err(failed(ExchangeError::RequestBodyLength(n), true, None));
                }
            }
            encode_end(framing, &mut out);
        }
        // What to hand back for a resend: only a body of which nothing is lost.
        let resendable = |kept: &Option<Bytes>| -> Option<Body> {
            whole.then(|| match kept {
                Some(data) => super::invoke::full(data.clone()),
                None => super::invoke::full(Bytes::new()),
            })
        };
        let sent = match self
            .outbox
            .send_holding_at_most(&mut out, COALESCE_BODY as usize)
            .await
        {
            // A streamed body waits for the head to be written, so that a failed write can still
            // hand the body back untouched.
            Ok(()) if !whole => self.outbox.flushed().await,
            sent => sent,
        };
        if let Err(e) = sent {
            self.reusable = false;
            // A streamed body none of which was taken is as good as new.
            let body = resendable(&kept).or_else(|| kept.is_none().then_some(body));
            return Err(failed(ExchangeError::Write(e), true, body));
        }
        if out.capacity() <= KEEP_OUT {
            self.out = out;
        }
        if !whole {
            let sent = kept.as_ref().map_or(0, |b| b.len() as u64);
            // Boxed: a streamed body is the rare case, and its futures would otherwise make
            // every exchange's future several times larger (futures are moved by copying).
            return Box::pin(self.stream_rest(parts, framing, body, sent))
                .await
                .map_err(|e| failed(e, false, None));
        }
        match read_head(&mut self.reader, &mut self.buf, &parts.method).await {
            Ok((response, decoder, keep_alive)) => {
                self.reusable = keep_alive;
                Ok((response, decoder))
            }
            Err(e) => {
                self.reusable = false;
                // The request went out after this task moved on to the answer; if writing it
                // failed, that is the error, and the instance never had the request.
                if let Some(write) = self.outbox.failure() {
                    return Err(failed(ExchangeError::Write(write), true, resendable(&kept)));
                }
                let unanswered = matches!(e, ExchangeError::ClosedBeforeAnswer);
                Err(failed(e, unanswered, resendable(&kept)))
            }
        }
    }

    /// Streams the rest of the request body while reading the answer: an instance may answer
    /// early (a 413, a 401) and stop reading, and that answer is the one to pass on.
    async fn stream_rest(
        &mut self,
        parts: &Parts,
        framing: Framing,
        body: Body,
        sent: u64,
    ) -> Result<(Response<()>, Decoder), ExchangeError> {
        let sending = send_rest(&self.outbox, framing, body, sent);
        let reading = read_head(&mut self.reader, &mut self.buf, &parts.method);
        tokio::pin!(sending, reading);
        let answer = tokio::select! {
            biased;
            sent = &mut sending => match sent {
                Ok(()) => reading.await,
                // The socket failed: an answer the instance sent before closing still counts.
                Err(e @ ExchangeError::Write(_)) => reading.await.map_err(|_| e),
                Err(e) => Err(e),
            },
            answer = &mut reading => {
                // Answered before the whole request went out: not at a message boundary.
                answer.map(|(response, decoder, _)| (response, decoder, false))
            }
        };
        match answer {
            Ok((response, decoder, keep_alive)) => {
                self.reusable = keep_alive;
                Ok((response, decoder))
            }
            Err(e) => {
                self.reusable = false;
                Err(e)
            }
        }
    }

    /// The next piece of the answer's body; `None` at its end.
    pub fn poll_body(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, ExchangeError>>> {
        loop {
            match decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            self.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.reader), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.reusable = false;
                    return Poll::Ready(Some(Err(ExchangeError::Read(e))));
                }
                Poll::Ready(Ok(0)) => {
                    self.reusable = false;
                    if let Decoder::UntilClose = decoder {
                        *decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(ExchangeError::Incomplete)));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// Streams the rest of a request body after the head.
async fn send_rest(
    outbox: &Outbox,
    framing: Framing,
    mut body: Body,
    mut sent: u64,
) -> Result<(), ExchangeError> {
    let mut out = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(ExchangeError::RequestBody)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        sent += data.len() as u64;
        if let Framing::Length(n) = framing
            && sent > n
        {
            return Err(ExchangeError::RequestBodyLength(n));
        }
        out.clear();
        encode_data(framing, &data, &mut out);
        outbox
            .send_holding_at_most(&mut out, 0)
            .await
            .map_err(ExchangeError::Write)?;
    }
    if let Framing::Length(n) = framing
        && sent != n
    {
        return Err(ExchangeError::RequestBodyLength(n));
    }
    out.clear();
    encode_end(framing, &mut out);
    if !out.is_empty() {
        outbox.send(&mut out).map_err(ExchangeError::Write)?;
    }
    Ok(())
}

/// Reads until a final (non-1xx) answer's head is in: the answer, its body's decoder, and
/// whether the connection may carry another request after it.
async fn read_head(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    method: &Method,
) -> Result<(Response<()>, Decoder, bool), ExchangeError> {
    let mut received = !buf.is_empty();
    loop {
        if let Some((head, len)) = parse_head(buf)? {
            let head_bytes = buf.split_to(len).freeze();
            if head.status.is_informational() {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(ExchangeError::Malformed(
                        "101 Switching Protocols: upgrades are not supported".into(),
                    ));
                }
                continue; // 100 Continue, 103 Early Hints: the real answer follows
            }
            let (response, decoder, keep_alive) = head.build(&head_bytes, method)?;
            let reusable = keep_alive && !matches!(decoder, Decoder::UntilClose);
            return Ok((response, decoder, reusable));
        }
        if buf.len() > MAX_HEAD {
            return Err(ExchangeError::Malformed(format!(
                "the head is longer than {MAX_HEAD} bytes"
            )));
        }
        buf.reserve(READ_CHUNK);
        let n = io.read_buf(buf).await.map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionReset if !received => ExchangeError::ClosedBeforeAnswer,
            _ => ExchangeError::Read(e),
        })?;
        if n == 0 {
            return Err(if received {
                ExchangeError::Incomplete
            } else {
                ExchangeError::ClosedBeforeAnswer
            });
        }
        received = true;
    }
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body and no framing header (a GET, say).
    None,
    /// `Content-Length: n` (given by the caller, or written here from an exact size).
    Length(u64),
    /// `Transfer-Encoding: chunked`, for a body of unknown length.
    Chunked,
}

/// The framing of a request, from its headers and its body.
fn request_framing(parts: &Parts, body: &Body) -> Result<Framing, ExchangeError> {
    if let Some(value) = parts.headers.get(header::CONTENT_LENGTH) {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Framing::Length)
            .ok_or_else(|| {
                ExchangeError::RequestBody(format!("bad Content-Length {value:?}").into())
            });
    }
    if body.is_end_stream() {
        // Methods that carry a body say it is empty (RFC 9110 §8.6); GET and the like say nothing.
        let says_empty = !matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::CONNECT
        );
        return Ok(if says_empty {
            Framing::Length(0)
        } else {
            Framing::None
        });
    }
    Ok(match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    })
}

/// How the head that goes out differs from the request's own headers: a proxy leaves some out
/// and adds its own. Applied while encoding, so that the request's header map is not edited
/// (each edit of a map hashes a name).
#[derive(Default)]
pub struct HeadEdit<'a> {
    /// The request target to write instead of the request's own: a path and a query, both
    /// taken from a URI already parsed, so valid.
    pub target: Option<(&'a str, Option<&'a str>)>,
    /// Leave out the headers that describe the client's connection, not the message (RFC 9110
    /// §7.6.1), and those its Connection header names.
    pub strip_hop_by_hop: bool,
    /// Written after the request's own headers; a header of the request with one of these
    /// names is left out.
    pub replace: &'a [(HeaderName, HeaderValue)],
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), with `Keep-Alive`.
pub(super) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str() == "keep-alive"
}

/// The request line and headers, in origin-form, edited by `edit`, with the framing header
/// when the request's headers do not have it already.
pub fn encode_head(parts: &Parts, edit: &HeadEdit<'_>, framing: Framing, out: &mut BytesMut) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    match edit.target {
        Some((path, query)) => {
            out.extend_from_slice(if path.is_empty() {
                b"/"
            } else {
                path.as_bytes()
            });
            if let Some(query) = query {
                out.extend_from_slice(b"?");
                out.extend_from_slice(query.as_bytes());
            }
        }
        None => {
            let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            out.extend_from_slice(if target.is_empty() {
                b"/"
            } else {
                target.as_bytes()
            });
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Every Connection line names options to leave out (one look-up, however many lines).
    let connection = parts.headers.get_all(header::CONNECTION);
    let mut wrote_length = false;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue; // the framing is this connection's, written below
        }
        if edit.strip_hop_by_hop && is_hop_by_hop(name) {
            continue;
        }
        if edit.replace.iter().any(|(replaced, _)| replaced == name) {
            continue;
        }
        // Content-Length and Host are not the client's to drop by naming them in Connection:
        // a body without its length would be read as the next request (request smuggling),
        // and HTTP/1.1 requires a Host.
        if edit.strip_hop_by_hop
            && name != header::CONTENT_LENGTH
            && name != header::HOST
            && connection.iter().any(|v| lists_token(v, name.as_str()))
        {
            continue;
        }
        wrote_length |= name == header::CONTENT_LENGTH;
        write_header(name, value, out);
    }
    for (name, value) in edit.replace {
        write_header(name, value, out);
    }
    match framing {
        // The body's length goes out whenever it was not written above, whatever the reason.
        Framing::Length(n) if !wrote_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn write_header(name: &HeaderName, value: &HeaderValue, out: &mut BytesMut) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn encode_data(framing: Framing, data: &[u8], out: &mut BytesMut) {
    if data.is_empty() {
        return; // an empty chunk would end a chunked body
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

fn encode_end(framing: Framing, out: &mut BytesMut) {
    if framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// Which of the headers that decide a message's framing and its connection's fate a head has,
/// noted while its map is built: a head without them (most) is then not looked up for them.
#[derive(Default, Clone, Copy)]
pub(super) struct FramingHeaders {
    pub connection: bool,
    pub transfer_encoding: bool,
    pub content_length: bool,
    pub expect: bool,
}

impl FramingHeaders {
    pub fn note(&mut self, name: &HeaderName) {
        // Standard names compare by their index, not their bytes.
        if *name == header::CONNECTION {
            self.connection = true;
        } else if *name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if *name == header::CONTENT_LENGTH {
            self.content_length = true;
        } else if *name == header::EXPECT {
            self.expect = true;
        }
    }
}

/// A parsed answer head: where its parts are in the head's bytes.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    headers: HeaderRanges,
}

/// Parses an answer's head from the start of `buf`: the head and its length, or `None` when
/// more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ExchangeError::Malformed(e.to_string())),
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| ExchangeError::Malformed("bad status code".into()))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    Ok(Some((
        Head {
            status,
            version,
            headers: header_ranges(buf, response.headers),
        },
        len,
    )))
}

/// Where `part`, a slice of `buf`, lies in it.
pub(super) fn range_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Where each parsed header's name and value lie in `buf`, in a reused list.
pub(super) fn header_ranges(buf: &[u8], headers: &[httparse::Header<'_>]) -> HeaderRanges {
    let mut ranges = super::spare::header_ranges();
    ranges.extend(
        headers
            .iter()
            .map(|h| (range_in(buf, h.name.as_bytes()), range_in(buf, h.value))),
    );
    ranges
}

impl Head {
    /// The response (its header values share `bytes`), how its body is framed, and whether the
    /// connection stays open after it (RFC 9112 §6.3, §9.3).
    fn build(
        self,
        bytes: &Bytes,
        method: &Method,
    ) -> Result<(Response<()>, Decoder, bool), ExchangeError> {
        // Room for the header the gateway adds to every answer, so that adding it does not
        // rehash the map.
        let mut map = super::spare::header_map(self.headers.len() + ADDED_HEADERS);
        let mut seen = FramingHeaders::default();
        let mut ranges = self.headers;
        for (name, value) in ranges.drain(..) {
            let name = HeaderName::from_bytes(&bytes[name])
                .map_err(|_| ExchangeError::Malformed("bad header name".into()))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value))
                .map_err(|_| ExchangeError::Malformed(format!("bad value of header {name}")))?;
            seen.note(&name);
            map.append(name, value);
        }
        super::spare::keep_header_ranges(ranges);
        let says = |token| seen.connection && has_token(&map, header::CONNECTION, token);
        let mut keep_alive = match self.version {
            Version::HTTP_10 => says("keep-alive"),
            _ => !says("close"),
        };
        let decoder = if *method == Method::HEAD
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
        {
            Decoder::Done
        } else if seen.transfer_encoding {
            if self.version == Version::HTTP_10 {
                // HTTP/1.0 has no transfer codings: its framing cannot be trusted (RFC 9112 §6.1).
                return Err(ExchangeError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 answer".into(),
                ));
            }
            // Both framings at once is a smuggling pattern: read this one, keep nothing after,
            // and pass on no Content-Length (RFC 9112 §6.3).
            if map.remove(header::CONTENT_LENGTH).is_some() {
                keep_alive = false;
            }
            if ends_in_chunked(&map) {
                Decoder::Chunked(ChunkedDecoder::default())
            } else {
                Decoder::UntilClose
            }
        } else if seen.content_length {
            match content_length(&map) {
                Some(0) => Decoder::Done,
                Some(n) => Decoder::Length(n),
                None => return Err(ExchangeError::Malformed("bad Content-Length".into())),
            }
        } else {
            Decoder::UntilClose
        };
        let mut response = Response::new(());
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = map;
        Ok((response, decoder, keep_alive))
    }
}

/// Whether a message's Transfer-Encoding ends in chunked: the last coding of all its lines
/// decides (RFC 9112 §6.3).
pub(super) fn ends_in_chunked(map: &HeaderMap) -> bool {
    map.get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// The one Content-Length of a message (repeated values must agree); `None` when it has none
/// or it is not a length.
pub(super) fn content_length(map: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in map.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = part.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// Whether a comma-separated header (`Connection`, say) lists `token`, in any of its lines.
pub(super) fn has_token(map: &HeaderMap, name: HeaderName, token: &str) -> bool {
    map.get_all(name).iter().any(|v| lists_token(v, token))
}

/// Whether one line of a comma-separated header lists `token` (case aside).
pub(super) fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// How the rest of an answer's body is read.
#[derive(Debug)]
pub enum Decoder {
    /// This many bytes remain.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Everything until the instance closes the connection.
    UntilClose,
    Done,
}

/// What one decoding step gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    End,
    /// The buffer holds no whole next piece.
    NeedMore,
}

impl Decoder {
    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ExchangeError> {
        match self {
            Self::Done => Ok(Decoded::End),
            Self::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = Self::Done;
                }
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Self::Chunked(chunked) => {
                let decoded = chunked.decode(buf)?;
                if decoded == Decoded::End {
                    *self = Self::Done;
                }
                Ok(decoded)
            }
            Self::UntilClose => Ok(if buf.is_empty() {
                Decoded::NeedMore
            } else {
                Decoded::Data(buf.split().freeze())
            }),
        }
    }

    pub fn is_end(&self) -> bool {
        matches!(self, Self::Done)
    }

    pub fn size_hint(&self) -> SizeHint {
        match self {
            Self::Done => SizeHint::with_exact(0),
            Self::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

/// Where a chunked body's decoding is.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum ChunkedDecoder {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes remain.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one, and how many bytes of them so far.
    Trailers(usize),
}

/// A chunk-size line (with extensions) or a trailer line may not be longer than this.
const MAX_CHUNK_LINE: usize = 8 * 1024;
/// Nor all the trailer lines together.
const MAX_TRAILERS: usize = 64 * 1024;

impl ChunkedDecoder {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ExchangeError> {
        let bad = |what: &str| ExchangeError::Malformed(format!("bad chunked body: {what}"));
        loop {
            match self {
                Self::Size => {
                    let Some(line) =
                        take_line(buf, MAX_CHUNK_LINE).map_err(|()| bad("long size line"))?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    // chunk-size [ BWS ";" extensions ]: hex digits only, no sign, no spaces before.
                    let digits = line[..].split(|&b| b == b';').next().unwrap_or_default();
                    let digits = digits.trim_ascii_end();
                    if digits.is_empty()
                        || digits.len() > 15
                        || !digits.iter().all(u8::is_ascii_hexdigit)
                        || line.iter().any(|&b| b == b'\r' || b == b'\n')
                    {
                        return Err(bad("size"));
                    }
                    let digits = std::str::from_utf8(digits).map_err(|_| bad("size"))?;
                    let size = u64::from_str_radix(digits, 16).map_err(|_| bad("size"))?;
                    *self = if size == 0 {
                        Self::Trailers(0)
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *self = Self::DataEnd;
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Self::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("no CRLF after a chunk"));
                    }
                    buf.advance(2);
                    *self = Self::Size;
                }
                Self::Trailers(seen) => {
                    let Some(line) =
                        take_line(buf, MAX_CHUNK_LINE).map_err(|()| bad("long trailer"))?
                    else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        return Ok(Decoded::End);
                    }
                    // Trailers are dropped, but a peer sending them without end would hold the
                    // message open for ever.
                    *seen += line.len() + 2;
                    if *seen > MAX_TRAILERS {
                        return Err(bad("trailers too long"));
                    }
                }
            }
        }
    }
}

/// The next CRLF-ended line out of `buf` (without its CRLF), `None` when it is not all in, or
/// `Err` when it runs past `max`.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ()> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= max => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        Some(_) => Err(()),
        None if buf.len() > max => Err(()),
        None => Ok(None),
    }
}

/// Reads a whole answer held in memory the way a connection reads it from the socket, `step`
/// bytes at a time: its head and its body. For the fuzz target and the tests.
pub fn decode_answer(
    wire: &[u8],
    method: &Method,
    step: usize,
) -> Result<(Response<()>, Vec<u8>), ExchangeError> {
    let step = step.max(1);
    let mut fed = 0;
    let mut buf = BytesMut::new();
    let mut feed = |buf: &mut BytesMut| -> bool {
        if fed == wire.len() {
            return false;
        }
        let next = (fed + step).min(wire.len());
        buf.extend_from_slice(&wire[fed..next]);
        fed = next;
        true
    };
    let (response, mut decoder) = loop {
        match parse_head(&buf)? {
            Some((head, len)) => {
                let bytes = buf.split_to(len).freeze();
                if head.status.is_informational() {
                    continue;
                }
                let (response, decoder, _) = head.build(&bytes, method)?;
                break (response, decoder);
            }
            None if !feed(&mut buf) => return Err(ExchangeError::ClosedBeforeAnswer),
            None => {}
        }
    };
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => return Ok((response, body)),
            Decoded::NeedMore if feed(&mut buf) => {}
            Decoded::NeedMore if matches!(decoder, Decoder::UntilClose) => {
                return Ok((response, body));
            }
            Decoded::NeedMore => return Err(ExchangeError::Incomplete),
        }
    }
}

/// A request body of zero length, for the framing tests.
#[cfg(test)]
fn empty_body() -> Body {
    super::invoke::empty()
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
