//! HTTP/1.1 connections to function instances, kept alive per instance address.
//!
//! The request's own task does the upstream I/O (`super::h1`): it writes the request, reads the
//! answer's head, and then reads the body as the response streams out, as HAProxy and nginx
//! handle both sides in one event loop (a pooled client driving each connection on a task of
//! its own cost two wake-ups per request, often a thread hop). An idle connection is polled by
//! nobody; whether the instance closed it is checked when it is taken out again.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Response, request::Parts};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::{
    coarse_clock::CoarseInstant,
    h1::{Conn, Decoder, ExchangeError, HeadEdit},
    invoke::Body,
};

/// How long a connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often check-ins sweep out expired and closed idle connections (of gone instances too).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A pooled connection idle this long may be closed by the instance's keep-alive timeout just as
/// a request goes out on it; only then is an idempotent request that got no answer sent again
/// (sooner, a close without an answer more likely means the instance failed on it).
const RESEND_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Why an exchange with an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr} failed: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Exchange(#[from] ExchangeError),
}

struct Idle {
    conn: Conn,
    since: CoarseInstant,
}

/// Keep-alive connections to instances, by address.
pub struct UpstreamPool {
    idle: Mutex<IdleSet>,
    max_idle_per_addr: usize,
    connect_timeout: Duration,
}

struct IdleSet {
    by_addr: super::FastMap<SocketAddr, Vec<Idle>>,
    last_sweep: CoarseInstant,
}

impl UpstreamPool {
    pub fn new(max_idle_per_addr: usize, connect_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(IdleSet {
                by_addr: super::FastMap::default(),
                last_sweep: CoarseInstant::now(),
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

    /// Sends a request (origin-form URI, with a Host header once `edit` is applied) to `addr` and returns the answer's
    /// head; its body streams from the same connection, which goes back to the pool once the
    /// body has been read to its end.
    ///
    /// A request goes out again, once, on a new connection when a pooled connection turns out
    /// to be closed: when writing it failed (nothing reached the instance), or when the
    /// connection had been idle for `RESEND_AFTER_IDLE` and closed before any answer and the
    /// request is idempotent (RFC 9110 §9.2.2) — in both cases only with a body that is whole
    /// (empty, or sent in one piece and kept).
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        parts: &Parts,
        edit: &HeadEdit<'_>,
        mut body: Body,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut fresh_only = false;
        loop {
            let (mut conn, idle_for) = match (!fresh_only).then(|| self.checkout(addr)).flatten() {
                Some((conn, idle_for)) => (conn, Some(idle_for)),
                // Boxed: the rare path would otherwise make every request's future larger.
                None => (Box::pin(self.connect(addr)).await?, None),
            };
            match conn.exchange(parts, edit, body).await {
                Ok((head, decoder)) => {
                    return Ok(head.map(|()| UpstreamBody {
                        conn: Some(conn),
                        decoder,
                        pool: Arc::clone(self),
                        addr,
                    }));
                }
                Err(failed) => {
                    let again = idle_for.is_some_and(|idle| {
                        failed.unanswered
                            && (matches!(failed.error, ExchangeError::Write(_))
                                || (idle >= RESEND_AFTER_IDLE && is_idempotent(&parts.method)))
                    });
                    body = match failed.body {
                        Some(whole) if again => whole,
                        _ => return Err(failed.error.into()),
                    };
                    tracing::debug!(%addr, error = %failed.error, "pooled connection was closed; sending again");
                    fresh_only = true;
                }
            }
        }
    }

    /// The most recently used idle connection to `addr` that is still open, and how long it
    /// was idle.
    fn checkout(&self, addr: SocketAddr) -> Option<(Conn, Duration)> {
        let mut idle = self.lock();
        let list = idle.by_addr.get_mut(&addr)?;
        let now = CoarseInstant::now();
        while let Some(entry) = list.pop() {
            // A FIN or reset the instance sent while it sat idle shows here.
            let idle_for = now.duration_since(entry.since);
            if idle_for < IDLE_TIMEOUT && entry.conn.is_idle_open() {
                return Some((entry.conn, idle_for));
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, UpstreamError> {
        let failed = |reason: String| UpstreamError::Connect { addr, reason };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| failed(format!("timed out after {:?}", self.connect_timeout)))?
            .map_err(|e| failed(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream))
    }

    /// Puts a connection whose exchange is complete back, if it can take another request.
    fn checkin(&self, addr: SocketAddr, conn: Conn) {
        if !conn.reusable() {
            return;
        }
        let now = CoarseInstant::now();
        let mut idle = self.lock();
        if now.duration_since(idle.last_sweep) >= SWEEP_EVERY {
            idle.last_sweep = now;
            idle.by_addr.retain(|_, list| {
                list.retain(|e| {
                    now.duration_since(e.since) < IDLE_TIMEOUT && e.conn.is_idle_open()
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

/// An instance's response body, read from its connection by whoever polls it; the connection
/// returns to the pool when the body has been read to its end (and is closed if it is dropped
/// before).
pub struct UpstreamBody {
    conn: Option<Conn>,
    decoder: Decoder,
    pool: Arc<UpstreamPool>,
    addr: SocketAddr,
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(self.addr, conn);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.decoder.is_end() {
            self.give_back();
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match conn.poll_body(&mut this.decoder, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => {
                if this.decoder.is_end() {
                    // Done: hand the connection back now rather than when the body is dropped.
                    this.give_back();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
