//! HTTP/1.1 connections to function instances, kept alive per instance address.
//!
//! hyper-util's pooled client drives every connection on a task of its own, so each request
//! crossed from the server connection's task to that task and back (two wake-ups, often a thread
//! hop). Here the request's own task drives the upstream connection: while waiting for the
//! answer's head, and then from the response body it streams out, as HAProxy and nginx handle
//! both sides in one event loop. An idle connection is polled by nobody; whether the instance
//! closed it is checked when it is taken out again.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, Response, request::Parts};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, Connection, SendRequest},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::invoke::{Body, BoxError};

/// How long a connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often check-ins sweep out expired and closed idle connections (of gone instances too).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A pooled connection idle this long may be closed by the instance's keep-alive timeout just as
/// a request goes out on it; only then is a copy of the request's head kept to send it again (a
/// copy per request would cost allocations on every proxied request).
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Why an exchange with an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr} failed: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Exchange(#[from] hyper::Error),
}

/// One upstream connection: the half that sends requests and the half that does the I/O.
struct Conn {
    sender: SendRequest<Body>,
    driver: Connection<TokioIo<TcpStream>, Body>,
    /// The driver has finished (closed, failed or shut down after `Connection: close`).
    ended: bool,
}

impl Conn {
    /// Does the connection's I/O; `false` once it has ended. Never polls a finished driver.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended {
            // Its errors reach the answer or the body through hyper's channels.
            self.ended = Pin::new(&mut self.driver).poll(cx).is_ready();
        }
        !self.ended
    }

    /// As `poll_open`, without registering the current task: nothing may wake a task that no
    /// longer uses the connection.
    fn poll_detached(&mut self) -> bool {
        self.poll_open(&mut Context::from_waker(Waker::noop()))
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Keep-alive connections to instances, by address.
pub struct UpstreamPool {
    idle: Mutex<IdleSet>,
    max_idle_per_addr: usize,
    connect_timeout: Duration,
}

struct IdleSet {
    by_addr: super::FastMap<SocketAddr, Vec<Idle>>,
    last_sweep: Instant,
}

impl UpstreamPool {
    pub fn new(max_idle_per_addr: usize, connect_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(IdleSet {
                by_addr: super::FastMap::default(),
                last_sweep: Instant::now(),
            }),
            max_idle_per_addr,
            connect_timeout,
        }
    }

    /// Idle connections kept now (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.lock().by_addr.values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleSet> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` (origin-form URI, with a Host header) to `addr` and returns the answer's
    /// head; its body streams from the same connection, which goes back to the pool once the
    /// body has been read to its end.
    ///
    /// A request is sent again, once, on a new connection when the first one was a pooled
    /// connection that turned out to be closed and the request was either not sent at all, or is
    /// idempotent and has no body (RFC 9110 §9.2.2).
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut request = request;
        let mut fresh_only = false;
        loop {
            let (mut conn, idle_for) = match (!fresh_only).then(|| self.checkout(addr)).flatten() {
                Some((conn, idle_for)) => (conn, Some(idle_for)),
                // Boxed: the rare path would otherwise make every request's future larger.
                None => (Box::pin(self.connect(addr)).await?, None),
            };
            let reused = idle_for.is_some();
            let replay = (idle_for.is_some_and(|d| d >= REPLAY_AFTER_IDLE)
                && request.body().is_end_stream()
                && is_idempotent(request.method()))
            .then(|| head_of(&request));
            match exchange(&mut conn, request).await {
                Ok(response) => {
                    return Ok(response.map(|body| UpstreamBody {
                        body,
                        conn: Some(conn),
                        pool: Arc::clone(self),
                        addr,
                    }));
                }
                Err(mut e) => {
                    let unsent = e.take_message();
                    let error = e.into_error();
                    if !reused {
                        return Err(error.into());
                    }
                    request = match (unsent, replay) {
                        (Some(unsent), _) => unsent,
                        (None, Some(head)) => Request::from_parts(head, empty()),
                        (None, None) => return Err(error.into()),
                    };
                    tracing::debug!(%addr, error = %error, "pooled connection was closed; sending again");
                    fresh_only = true;
                }
            }
        }
    }

    /// The most recently used idle connection to `addr` that is still open, and how long it
    /// was idle.
    fn checkout(&self, addr: SocketAddr) -> Option<(Box<Conn>, Duration)> {
        let mut idle = self.lock();
        let list = idle.by_addr.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(mut entry) = list.pop() {
            // Polling it reads a FIN or reset the instance sent while it sat idle.
            let idle_for = now.duration_since(entry.since);
            if idle_for < IDLE_TIMEOUT && entry.conn.poll_detached() && entry.conn.sender.is_ready()
            {
                return Some((entry.conn, idle_for));
            }
        }
        None
    }

    /// A new connection, boxed: hyper's connection state is large, and every future and body
    /// that holds a connection is moved by copying on each request.
    async fn connect(&self, addr: SocketAddr) -> Result<Box<Conn>, UpstreamError> {
        let failed = |reason: String| UpstreamError::Connect { addr, reason };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| failed(format!("timed out after {:?}", self.connect_timeout)))?
            .map_err(|e| failed(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        // Flat writes (`send`) rather than `writev`, as on the server side.
        let (sender, driver) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Box::new(Conn {
            sender,
            driver,
            ended: false,
        }))
    }

    /// Puts a connection whose exchange is complete back, if it can take another request.
    fn checkin(&self, addr: SocketAddr, mut conn: Box<Conn>) {
        // One more poll lets it finish the exchange and ask for the next request; an answer
        // with `Connection: close` ends it here.
        if !conn.poll_detached() || !conn.sender.is_ready() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        if now.duration_since(idle.last_sweep) >= SWEEP_EVERY {
            idle.last_sweep = now;
            idle.by_addr.retain(|_, list| {
                list.retain_mut(|e| {
                    now.duration_since(e.since) < IDLE_TIMEOUT && e.conn.poll_detached()
                });
                !list.is_empty()
            });
        }
        let list = idle.by_addr.entry(addr).or_default();
        if list.len() < self.max_idle_per_addr {
            list.push(Idle { conn, since: now });
        }
    }
}

/// Sends the request on `conn` and drives the connection until the answer's head is in.
async fn exchange(
    conn: &mut Conn,
    request: Request<Body>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>> {
    let mut answer = std::pin::pin!(conn.sender.try_send_request(request));
    std::future::poll_fn(|cx| {
        let ended = !conn.poll_open(cx);
        // The answer only changes while the connection is polled, just above with this task's
        // waker; a no-op waker here spares the task a wake-up by itself.
        let mut detached = Context::from_waker(Waker::noop());
        match answer.as_mut().poll(&mut detached) {
            Poll::Ready(result) => Poll::Ready(result),
            // The connection always settles the answer before it ends; poll once more if not.
            Poll::Pending if ended => answer.as_mut().poll(cx),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

pin_project_lite::pin_project! {
    /// An instance's response body, read by driving its connection; the connection returns to
    /// the pool when the body has been read to its end (and is closed if it is dropped before).
    pub struct UpstreamBody {
        #[pin]
        body: Incoming,
        conn: Option<Box<Conn>>,
        pool: Arc<UpstreamPool>,
        addr: SocketAddr,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.body.is_end_stream()
                && let Some(conn) = this.conn.take()
            {
                this.pool.checkin(*this.addr, conn);
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        if !this.conn.as_mut().is_some_and(|conn| conn.poll_open(cx)) {
            // Ended (or failed): what it read is in the body's channel, an error included.
            *this.conn = None;
            return this.body.poll_frame(cx);
        }
        // As in `exchange`: only the connection, polled above with this task's waker, feeds it.
        let mut detached = Context::from_waker(Waker::noop());
        match this.body.as_mut().poll_frame(&mut detached) {
            Poll::Pending => Poll::Pending,
            ready => {
                if matches!(ready, Poll::Ready(None)) || this.body.is_end_stream() {
                    // Done: hand the connection back now rather than when the body is dropped.
                    if let Some(conn) = this.conn.take() {
                        this.pool.checkin(*this.addr, conn);
                    }
                }
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The request's head without its extensions (which cannot be cloned and are not sent).
fn head_of(request: &Request<Body>) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = request.method().clone();
    head.uri = request.uri().clone();
    head.version = request.version();
    head.headers = request.headers().clone();
    head
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| -> BoxError { match never {} })
        .boxed()
}
