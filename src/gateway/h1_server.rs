//! The gateway's server side of one client connection: HTTP/1.1 of its own, and h2c (HTTP/2
//! with prior knowledge) handed to hyper.
//!
//! hyper's HTTP/1.1 server put a dispatcher, a general codec and a body channel between the
//! socket and the handler; the gateway answers one request at a time per connection from the
//! connection's own task, so this reads the head with `httparse` straight from one buffer, calls
//! the handler in place and writes the answer's head and a small body with one `send`
//! (docs/benchmarks.md, "A server of its own"). Requests are answered in order, so pipelined
//! ones are too.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::Body as _;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_util::{
    io::poll_read_buf,
    sync::{CancellationToken, WaitForCancellationFuture},
};

use super::{
    coarse_clock::CoarseInstant,
    error::GatewayError,
    h1_request::{HeadError, parse_request_head},
    h1_response::{
        ResponseFraming, encode_body_data, encode_body_end, encode_response_head, response_framing,
    },
    handler::Gateway,
    invoke::{Body, full},
    outbox::Outbox,
    request_body::{Http1Body, Reader, RequestBody},
};

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How much a read asks for at least.
const READ_CHUNK: usize = 8 * 1024;
/// An answer's body is written once this much of it is buffered, or when it has no more ready.
const WRITE_BATCH: usize = 64 * 1024;
/// A connection's answer buffer larger than this (after a large answer) is not kept.
const KEEP_BUFFER: usize = 4 * WRITE_BATCH;
/// A request's head, once begun, must be whole within this (a client that trickles its head
/// holds a connection, not the server).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with no request for this long is closed (nginx's `keepalive_timeout` default),
/// so idle clients do not hold file descriptors for ever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// An idle deadline is moved only when it is this far behind, so that a busy connection resets
/// its timer about once a second rather than on every request.
const IDLE_SLACK: Duration = Duration::from_secs(1);
/// How long a closing connection goes on reading what the client still sends, so that closing
/// with unread bytes does not reset the connection under the answer (RFC 9112 §9.6).
const LINGER: Duration = Duration::from_secs(1);

/// Serves one client connection until it closes, fails, or `shutdown` is cancelled (then the
/// request in progress is answered and the connection closes).
pub(super) async fn serve_connection(
    gateway: Arc<Gateway>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut deadline = Deadline::new(Instant::now() + IDLE_TIMEOUT);
    match read_preface(&mut stream, &mut buf, cancelled.as_mut(), &mut deadline).await {
        Ok(Opening::Http2) => {
            serve_http2(gateway, stream, buf.freeze(), peer, shutdown.clone()).await;
        }
        Ok(Opening::Http1) => {
            let (half, writer) = stream.into_split();
            // The first head began while the preface was told apart: its deadline is set.
            let first_head_begun = !buf.is_empty();
            let mut connection = Connection {
                reader: Some(Reader { half, buf }),
                outbox: Outbox::new(writer),
                deadline,
                first_head_begun,
                out: BytesMut::with_capacity(READ_CHUNK),
                peer,
            };
            connection.serve(&gateway, &shutdown, cancelled).await;
            // What is still waiting to be written goes out before the connection is let go: at a
            // graceful shutdown, the thread's runtime stops once every connection has returned.
            // (A peer that takes nothing for a while fails the write: `outbox::SEND_STALL`.)
            let _ = connection.outbox.flushed().await;
        }
        Ok(Opening::Closed) => {}
        Err(e) => tracing::debug!(error = %e, %peer, "connection ended before a request"),
    }
}

enum Opening {
    Http1,
    Http2,
    Closed,
}

/// Reads until the first bytes tell HTTP/2's preface from an HTTP/1 request.
async fn read_preface(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    deadline: &mut Deadline,
) -> io::Result<Opening> {
    let mut head_begun = false;
    loop {
        // The first bytes begin the first head: its deadline starts with them, whichever
        // protocol they turn out to be.
        if !buf.is_empty() && !head_begun {
            head_begun = true;
            deadline.set(Instant::now() + HEAD_TIMEOUT);
        }
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] {
            return Ok(Opening::Http1);
        }
        if seen == H2_PREFACE.len() {
            return Ok(Opening::Http2);
        }
        match read_more(stream, buf, cancelled.as_mut(), deadline).await? {
            Read::Data => {}
            Read::Closed | Read::Cancelled | Read::TimedOut => return Ok(Opening::Closed),
        }
    }
}

enum Read {
    Data,
    Closed,
    Cancelled,
    TimedOut,
}

/// Reads what the client sent next into `buf`. While waiting, a cancelled `shutdown` ends the
/// wait, and so does the connection's `deadline`.
async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    deadline: &mut Deadline,
) -> io::Result<Read> {
    if buf.capacity() - buf.len() < READ_CHUNK / 8 {
        buf.reserve(READ_CHUNK);
    }
    std::future::poll_fn(|cx| {
        // Reading through `AsyncRead` forgets the socket's readiness after a short read, so
        // the next wait goes to the runtime without a read that finds nothing (a system call).
        if let Poll::Ready(read) = poll_read_buf(Pin::new(&mut *reader), cx, buf) {
            return Poll::Ready(read.map(|n| if n == 0 { Read::Closed } else { Read::Data }));
        }
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(Read::Cancelled));
        }
        if deadline.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(Read::TimedOut));
        }
        Poll::Pending
    })
    .await
}

/// When a connection's wait for its client ends: one timer per connection, moved rather than
/// made again for each wait.
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    at: Instant,
    /// When the deadline was last set to the idle timeout (on the coarse clock), while it still
    /// is that one.
    idle_set: Option<CoarseInstant>,
}

impl Deadline {
    fn new(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
            at,
            idle_set: None,
        }
    }

    /// Moves the deadline to `at`.
    fn set(&mut self, at: Instant) {
        self.idle_set = None;
        if at != self.at {
            self.at = at;
            self.sleep.as_mut().reset(at.into());
        }
    }

    /// Moves the deadline to the idle timeout from now, unless it was set so less than
    /// `IDLE_SLACK` ago: a busy connection then moves its timer about once a second rather than
    /// on every request, and reads only the coarse clock in between.
    fn set_idle(&mut self) {
        let now = CoarseInstant::now();
        if self
            .idle_set
            .is_some_and(|set| now.duration_since(set) < IDLE_SLACK)
        {
            return;
        }
        self.set(Instant::now() + IDLE_TIMEOUT);
        self.idle_set = Some(now);
    }
}

/// One HTTP/1.1 connection.
struct Connection {
    /// The reading side and what was read, away while a request's body has it.
    reader: Option<Reader>,
    /// Where answers go; shared with a request body only while it may still send
    /// `100 Continue`.
    outbox: Outbox,
    /// When the wait for the next request (idle) or the rest of its head ends.
    deadline: Deadline,
    /// The first head began before the loop, and `deadline` is already its own.
    first_head_begun: bool,
    /// The answer being written.
    out: BytesMut,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(
        &mut self,
        gateway: &Arc<Gateway>,
        shutdown: &CancellationToken,
        mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    ) {
        loop {
            let head = match self.read_head(cancelled.as_mut()).await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(ServeError::Head(e)) => {
                    let error = match e {
                        HeadError::TooLarge => GatewayError::HeadersTooLarge {
                            limit: super::h1_request::MAX_REQUEST_HEAD,
                        },
                        HeadError::Malformed(reason) => GatewayError::BadRequest(reason),
                    };
                    tracing::debug!(error = %error, peer = %self.peer, "refused a request's head");
                    let response = error.to_response().map(full);
                    let _ = self
                        .write_response(response, Version::HTTP_11, false, false)
                        .await;
                    self.linger().await;
                    return;
                }
                Err(ServeError::Io(e)) => {
                    tracing::debug!(error = %e, peer = %self.peer, "connection ended");
                    return;
                }
            };
            let version = head.parts.version;
            let head_request = head.parts.method == Method::HEAD;
            let mut keep_alive = head.keep_alive;
            let read_back = (!head.body.is_end()).then(|| Arc::new(Mutex::new(None)));
            let body = match (&read_back, self.reader.take()) {
                (Some(read_back), Some(reader)) => RequestBody::Http1(Box::new(Http1Body::new(
                    reader,
                    head.body,
                    Arc::clone(read_back),
                    head.expect_continue.then(|| self.outbox.clone()),
                ))),
                (_, reader) => {
                    self.reader = reader;
                    RequestBody::Empty
                }
            };
            let mut parts = head.parts;
            let response = gateway.handle(&parts, body, self.peer).await;
            super::spare::keep_header_map(std::mem::take(&mut parts.headers));
            if let Some(read_back) = read_back {
                // Only a body read to its end leaves the connection fit for another request;
                // otherwise the rest of it may still be on the way, and the connection closes
                // after the answer. A body still held somewhere keeps the reading side.
                match read_back.lock().ok().and_then(|mut slot| slot.take()) {
                    Some((reader, finished)) => {
                        keep_alive &= finished;
                        self.reader = Some(reader);
                    }
                    None => keep_alive = false,
                }
            }
            keep_alive &= !shutdown.is_cancelled();
            match self
                .write_response(response, version, head_request, keep_alive)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    self.linger().await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, peer = %self.peer, "writing an answer failed");
                    return;
                }
            }
        }
    }

    /// The next request's head, or `None` when the client closed (or the server is stopping)
    /// between requests.
    async fn read_head(
        &mut self,
        mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Result<Option<super::h1_request::RequestHead>, ServeError> {
        let Some(reader) = &mut self.reader else {
            return Ok(None);
        };
        let mut head_begun = std::mem::take(&mut self.first_head_begun);
        loop {
            if !reader.buf.is_empty()
                && let Some((raw, len)) =
                    parse_request_head(&reader.buf).map_err(ServeError::Head)?
            {
                let bytes = reader.buf.split_to(len).freeze();
                return raw.build(&bytes).map(Some).map_err(ServeError::Head);
            }
            // Between requests a connection may idle for a while; a head begun must come whole
            // in time, however slowly its bytes trickle in.
            if reader.buf.is_empty() {
                self.deadline.set_idle();
            } else if !head_begun {
                head_begun = true;
                self.deadline.set(Instant::now() + HEAD_TIMEOUT);
            }
            match read_more(
                &mut reader.half,
                &mut reader.buf,
                cancelled.as_mut(),
                &mut self.deadline,
            )
            .await
            .map_err(ServeError::Io)?
            {
                Read::Data => {}
                Read::Closed | Read::Cancelled => return Ok(None),
                Read::TimedOut if head_begun => {
                    return Err(ServeError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request's head did not arrive in time",
                    )));
                }
                Read::TimedOut => return Ok(None),
            }
        }
    }

    /// Writes an answer; `Ok(true)` when the connection stays open after it.
    async fn write_response(
        &mut self,
        response: Response<Body>,
        request_version: Version,
        head_request: bool,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (mut parts, mut body) = response.into_parts();
        let framing = response_framing(
            parts.status,
            &parts.headers,
            &body.size_hint(),
            head_request,
            request_version,
        );
        keep_alive &= framing != ResponseFraming::UntilClose;
        if self.out.capacity() > KEEP_BUFFER {
            // A large answer went out before; an idle connection does not keep its buffer.
            self.out = BytesMut::with_capacity(READ_CHUNK);
        }
        self.out.clear();
        let keep_alive =
            encode_response_head(&parts, framing, keep_alive, request_version, &mut self.out);
        super::spare::keep_header_map(std::mem::take(&mut parts.headers));
        if head_request || framing == ResponseFraming::NoBody {
            self.send_out().await?;
            return Ok(keep_alive);
        }
        let mut written: u64 = 0;
        let mut body = Pin::new(&mut body);
        loop {
            // Take what the body has ready; write when it has no more ready or enough is
            // buffered, so a small answer goes out in one write with its head.
            let out = &mut self.out;
            let step = std::future::poll_fn(|cx| match body.as_mut().poll_frame(cx) {
                Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => Poll::Ready(Step::Frame(frame)),
            })
            .await;
            match step {
                Step::Flush => self.send_out().await?,
                Step::Frame(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        written += data.len() as u64;
                        if let ResponseFraming::Length(n) = framing
                            && written > n
                        {
                            return Err(io::Error::other(
                                "the answer's body is longer than its length",
                            ));
                        }
                        if data.len() >= WRITE_BATCH && framing != ResponseFraming::Chunked {
                            // Written as it is rather than copied into the buffer first.
                            self.send_out().await?;
                            self.outbox.write_all(&data).await?;
                            continue;
                        }
                        encode_body_data(framing, &data, &mut self.out);
                        if self.out.len() >= WRITE_BATCH {
                            self.send_out().await?;
                        }
                    }
                }
                Step::Frame(Some(Err(e))) => {
                    // What was sent of it cannot be taken back: the connection ends unfinished.
                    self.send_out().await?;
                    return Err(io::Error::other(format!("the answer's body failed: {e}")));
                }
                Step::Frame(None) => {
                    if let ResponseFraming::Length(n) = framing
                        && written != n
                    {
                        self.send_out().await?;
                        return Err(io::Error::other(
                            "the answer's body is shorter than its length",
                        ));
                    }
                    encode_body_end(framing, &mut self.out);
                    self.send_out().await?;
                    return Ok(keep_alive);
                }
            }
        }
    }

    /// Sends what `out` holds (see `super::outbox`): at once when this thread does not write in
    /// phases, else with the thread's other writes before it waits for events. Waits for it to
    /// be written only when much is pending, so a large answer does not pile up in memory.
    async fn send_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.outbox
            .send_holding_at_most(&mut self.out, WRITE_BATCH)
            .await
    }

    /// Closes the sending side and reads what the client still sends for a moment, so the answer
    /// just written reaches it before the connection closes.
    async fn linger(&mut self) {
        let _ = self.outbox.shutdown().await;
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        let drain = async {
            loop {
                reader.buf.clear();
                match tokio::io::AsyncReadExt::read_buf(&mut reader.half, &mut reader.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

enum ServeError {
    Head(HeadError),
    Io(io::Error),
}

enum Step {
    Flush,
    Frame(Option<Result<http_body::Frame<bytes::Bytes>, super::invoke::BoxError>>),
}

/// Serves an h2c connection with hyper, its first bytes (`read`) given back to it.
async fn serve_http2(
    gateway: Arc<Gateway>,
    stream: TcpStream,
    read: Bytes,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let gateway = Arc::clone(&gateway);
        async move {
            let (parts, body) = request.into_parts();
            let response = gateway.handle(&parts, RequestBody::Http2(body), peer).await;
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(Rewound { read, stream });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "HTTP/2 connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewound {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt as _, net::TcpListener};

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_at_shutdown_or_with_data() {
        let (mut client, server) = pair().await;
        let (mut half, _writer) = server.into_split();
        let shutdown = CancellationToken::new();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut buf = BytesMut::new();

        let mut deadline = Deadline::new(Instant::now() + Duration::from_secs(60));
        // Moved closer: the wait ends then.
        deadline.set(Instant::now() + Duration::from_millis(50));
        let read = read_more(&mut half, &mut buf, cancelled.as_mut(), &mut deadline).await;
        assert!(matches!(read, Ok(Read::TimedOut)));

        // The idle timeout is set, then kept while it was set less than the slack ago.
        let passed = deadline.at;
        deadline.set_idle();
        let idle = deadline.at;
        assert!(idle > passed + IDLE_TIMEOUT - Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        deadline.set_idle();
        assert_eq!(deadline.at, idle);
        // Any other deadline ends that: the next idle one is set anew.
        deadline.set(Instant::now() + Duration::from_secs(60));
        deadline.set_idle();
        assert!(deadline.at > idle);

        client.write_all(b"GET").await.expect("write");
        let read = read_more(&mut half, &mut buf, cancelled.as_mut(), &mut deadline).await;
        assert!(matches!(read, Ok(Read::Data)));
        assert_eq!(&buf[..], b"GET");

        shutdown.cancel();
        let read = read_more(&mut half, &mut buf, cancelled.as_mut(), &mut deadline).await;
        assert!(matches!(read, Ok(Read::Cancelled)));

        drop(client);
        let never = CancellationToken::new();
        let cancelled = never.cancelled();
        tokio::pin!(cancelled);
        let read = read_more(&mut half, &mut buf, cancelled.as_mut(), &mut deadline).await;
        assert!(matches!(read, Ok(Read::Closed)));
    }

    #[tokio::test]
    async fn the_preface_tells_http2_from_http1_however_it_is_split() {
        for (first, second, want_http2) in [
            (&b"PRI * HTTP/2.0\r\n"[..], &b"\r\nSM\r\n\r\n"[..], true),
            (&b"PRI * HTTP/1.1\r\n"[..], &b"\r\n"[..], false),
            (&b"GET / HTTP/1.1\r\n\r\n"[..], &b""[..], false),
        ] {
            let (mut client, mut server) = pair().await;
            let shutdown = CancellationToken::new();
            let cancelled = shutdown.cancelled();
            tokio::pin!(cancelled);
            client.write_all(first).await.expect("write");
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = client.write_all(second).await;
                client
            });
            let mut buf = BytesMut::new();
            let mut deadline = Deadline::new(Instant::now() + Duration::from_secs(60));
            let opening = read_preface(&mut server, &mut buf, cancelled.as_mut(), &mut deadline)
                .await
                .expect("read");
            assert_eq!(matches!(opening, Opening::Http2), want_http2, "{first:?}");
            assert!(matches!(opening, Opening::Http1 | Opening::Http2));
            let _client = writer.await.expect("writer");
        }
    }
}
