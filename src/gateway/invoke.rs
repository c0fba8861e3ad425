//! Calling function instances: the RIE-compatible invoke endpoint of `kfaas runtime` for `lambda`
//! functions, a streaming reverse proxy for `http` functions. Connections are pooled and kept
//! alive per instance (`super::upstream`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header, request::Parts};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use thread_local::ThreadLocal;

pub use super::upstream::UpstreamBody;
use super::{
    h1::{HOP_BY_HOP, HeadEdit, is_hop_by_hop},
    upstream::UpstreamPool,
};
use crate::{backend::Instance, runtime::DirectOutcome};

/// Body type shared by the gateway's requests and responses.
pub type Body = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The runtime's invoke path, as AWS's emulator has it.
pub const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";

/// What a `lambda` invocation gave.
#[derive(Debug)]
pub enum LambdaOutcome {
    /// The handler's result, as it posted it.
    Result(Bytes),
    /// The handler failed (error, crash, timeout, init error); `kind` is the runtime's label.
    Failed { kind: String, body: Bytes },
}

/// A failure to talk to the instance at all.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("reading the answer failed: {0}")]
    Read(String),
}

/// Pooled HTTP/1.1 connections to instances, one pool per serving thread: a connection's socket
/// is registered with the runtime of the thread that opened it, so a connection used from
/// another thread would have every readiness event handed across threads (a remote wake-up per
/// request, measured).
#[derive(Clone)]
pub struct Invoker {
    pools: Arc<ThreadLocal<Arc<UpstreamPool>>>,
}

impl Default for Invoker {
    fn default() -> Self {
        Self::new()
    }
}

impl Invoker {
    pub fn new() -> Self {
        Self {
            pools: Arc::new(ThreadLocal::new()),
        }
    }

    /// This thread's pool.
    fn pool(&self) -> &Arc<UpstreamPool> {
        self.pools
            .get_or(|| Arc::new(UpstreamPool::new(256, Duration::from_secs(5))))
    }

    /// Idle pooled connections (all instances, all threads).
    pub fn idle_connections(&self) -> usize {
        self.pools.iter().map(|pool| pool.idle_count()).sum()
    }

    /// Invokes a `lambda` function instance with an event: directly when its runtime runs in
    /// this process, else over HTTP.
    pub async fn invoke_lambda(
        &self,
        instance: &Instance,
        request_id: &HeaderValue,
        event: Bytes,
    ) -> Result<LambdaOutcome, InvokeError> {
        match &instance.direct {
            Some(direct) => {
                let id = request_id.to_str().unwrap_or_default();
                match direct.invoke(id, event).await {
                    Ok(DirectOutcome::Result(body)) => Ok(LambdaOutcome::Result(body)),
                    Ok(DirectOutcome::Failed { kind, body }) => Ok(LambdaOutcome::Failed {
                        kind: kind.to_owned(),
                        body,
                    }),
                    // As an instance that cannot be reached: 502.
                    Err(stopping) => Err(InvokeError::Connect(stopping.to_string())),
                }
            }
            None => {
                self.invoke_over_http(instance.addr, request_id, event)
                    .await
            }
        }
    }

    /// Invokes a `lambda` function instance through its runtime's invoke endpoint.
    async fn invoke_over_http(
        &self,
        addr: SocketAddr,
        request_id: &HeaderValue,
        event: Bytes,
    ) -> Result<LambdaOutcome, InvokeError> {
        const REQUEST_ID: HeaderName = HeaderName::from_static("x-kfaas-request-id");
        // The gateway answers whole bodies and reads no trailers: the runtime gathers a streamed
        // answer, so one that fails midway comes back as that failure.
        const RESPONSE_MODE: HeaderName = HeaderName::from_static("x-kfaas-response-mode");
        let mut request = Request::post(INVOKE_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(event))
            .map_err(|e| InvokeError::Connect(e.to_string()))?;
        request.headers_mut().insert(header::HOST, host_value(addr));
        request.headers_mut().insert(REQUEST_ID, request_id.clone());
        request
            .headers_mut()
            .insert(RESPONSE_MODE, HeaderValue::from_static("buffered"));
        let (parts, body) = request.into_parts();
        let response = self
            .pool()
            .send(addr, &parts, &HeadEdit::default(), body)
            .await
            .map_err(|e| InvokeError::Connect(e.to_string()))?;
        let failure = failure_kind(response.headers());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| InvokeError::Read(e.to_string()))?
            .to_bytes();
        Ok(match failure {
            Some(kind) => LambdaOutcome::Failed { kind, body },
            None => LambdaOutcome::Result(body),
        })
    }

    /// Forwards a request to an `http` function instance; the answer streams back. The
    /// request's head is taken by reference (a future holds what it is given, and a smaller
    /// future is cheaper to move); it goes out in origin-form with `path` and `query`, without
    /// its hop-by-hop headers, and with `forwarded` in place of its own headers of those names.
    pub async fn proxy(
        &self,
        addr: SocketAddr,
        parts: &Parts,
        (path, query): (&str, Option<&str>),
        forwarded: &[(HeaderName, HeaderValue)],
        body: Body,
    ) -> Result<Response<UpstreamBody>, InvokeError> {
        let edit = HeadEdit {
            // Origin-form, as a client sends it to a server (not to a proxy).
            target: Some((path, query)),
            strip_hop_by_hop: true,
            replace: forwarded,
        };
        let mut response = self
            .pool()
            .send(addr, parts, &edit, body)
            .await
            .map_err(|e| InvokeError::Connect(e.to_string()))?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}

/// The runtime marks failed invocations; `None` means the body is the handler's result.
fn failure_kind(headers: &HeaderMap) -> Option<String> {
    if let Some(kind) = headers.get("x-kfaas-invoke-error") {
        return Some(kind.to_str().unwrap_or("function").to_owned());
    }
    headers
        .get("x-amz-function-error")
        .map(|_| "function".to_owned())
}

/// The Host header of a request to an instance that has no other (HTTP/1.1 requires one).
pub(super) fn host_value(addr: SocketAddr) -> HeaderValue {
    // An address is always a valid header value.
    HeaderValue::try_from(addr.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// An empty body; a `Body` made of it allocates nothing (its parts have no size).
pub fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Removes the headers that describe one connection, not the message (RFC 9110 §7.6.1), and
/// those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers a message has is cheaper than eight removals that find
    // nothing, the usual case.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(listed) = headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
    {
        let named: Vec<HeaderName> = listed
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}
