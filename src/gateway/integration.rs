//! Calling the route's function: a `lambda` function gets an API Gateway event through its
//! instance's invoke endpoint and its result is mapped back; an `http` function is
//! reverse-proxied with streaming bodies.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, header, request::Parts};
use http_body_util::{BodyExt, Limited};

use super::{
    activator::Lease,
    admit::Admitted,
    error::GatewayError,
    event::{build_v1, build_v2},
    handler::{Call, Gateway, Trace},
    invoke::{Body, BoxError, InvokeError, LambdaOutcome, UpstreamBody},
    request_body::RequestBody,
    response::{map_v1, map_v2},
    table::FunctionEntry,
};
use crate::api::PayloadFormat;

/// What an `http` function's request needs from the matched route.
pub(super) struct Forward<'a> {
    pub stage_path: &'a str,
    pub timeout: Duration,
    pub peer: SocketAddr,
    pub request_id: &'a HeaderValue,
}

impl Gateway {
    /// Invokes a `lambda` function and maps its result by API Gateway's rules.
    pub(super) async fn call_lambda(
        &self,
        call: &Call<'_>,
        body: RequestBody,
        entry: &FunctionEntry,
        admitted: &Admitted,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<Response<Bytes>, GatewayError> {
        let body = read_body(body, self.limits.max_body_bytes).await?;
        let input = call.event_input(
            &body,
            admitted.api_key_id.as_deref(),
            admitted.authorizer.as_ref(),
        );
        let format = call.matched.route.payload_format;
        let event = match format {
            PayloadFormat::V1 => build_v1(&input),
            PayloadFormat::V2 => build_v2(&input),
        }
        .map_err(|e| GatewayError::Event(e.to_string()))?;
        if event.len() > self.limits.max_event_bytes {
            return Err(GatewayError::PayloadTooLarge {
                limit: self.limits.max_event_bytes,
            });
        }
        let outcome = self
            .invoke(
                entry,
                call.request_id,
                event,
                deadline,
                call.matched.route.timeout,
                trace,
            )
            .await?;
        let function = entry.key.to_string();
        let result = match outcome {
            LambdaOutcome::Result(result) => result,
            LambdaOutcome::Failed { kind, body } => {
                return Err(GatewayError::FunctionError {
                    function,
                    reason: format!("{kind}: {}", String::from_utf8_lossy(&body)),
                });
            }
        };
        match format {
            PayloadFormat::V1 => map_v1(&result),
            PayloadFormat::V2 => map_v2(&result),
        }
        .map_err(|e| GatewayError::MalformedResponse {
            function,
            reason: e.to_string(),
        })
    }

    /// Acquires an instance of a `lambda` function (waiting while it scales) and invokes it.
    pub(super) async fn invoke(
        &self,
        entry: &FunctionEntry,
        request_id: &HeaderValue,
        event: Bytes,
        deadline: Instant,
        timeout: Duration,
        trace: &mut Trace,
    ) -> Result<LambdaOutcome, GatewayError> {
        let acquired = self
            .activator
            .acquire(&entry.key, &entry.load, deadline)
            .await?;
        trace.cold |= acquired.cold;
        let invoked = Instant::now();
        let outcome = tokio::time::timeout_at(
            deadline.into(),
            self.invoker
                .invoke_lambda(acquired.lease.instance(), request_id, event),
        )
        .await;
        let integration = invoked.elapsed();
        acquired.lease.observe_integration(integration);
        drop(acquired);
        trace.integration = Some(trace.integration.unwrap_or_default() + integration);
        integration_outcome(outcome, entry, timeout)
    }

    /// Reverse-proxies to an `http` function; the answer streams back.
    pub(super) async fn call_http(
        &self,
        forward: &Forward<'_>,
        parts: &Parts,
        body: RequestBody,
        entry: &FunctionEntry,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        let limit = self.limits.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let body = match body {
            // Without a box: an empty body's parts have no size.
            RequestBody::Empty => super::invoke::empty(),
            body => Limited::new(body, limit)
                .map_err(|e| -> BoxError { e })
                .boxed(),
        };

        let acquired = self
            .activator
            .acquire(&entry.key, &entry.load, deadline)
            .await?;
        trace.cold = acquired.cold;
        let invoked = Instant::now();
        let lease = acquired.lease;
        let addr = lease.instance().addr;
        let forwarded = forwarded_headers(&parts.headers, forward.peer, forward.request_id, addr);
        // Pinned where it is made, so the timeout holds a pointer instead of a copy of it.
        let proxied = std::pin::pin!(self.invoker.proxy(
            addr,
            parts,
            (forward.stage_path, parts.uri.query()),
            &forwarded,
            body
        ));
        let response = tokio::time::timeout_at(deadline.into(), proxied).await;
        let response = integration_outcome(response, entry, forward.timeout)?;
        let integration = invoked.elapsed();
        trace.integration = Some(integration);
        lease.observe_integration(integration);
        // The slot stays taken until the body has streamed out.
        Ok(response.map(|body| {
            LeasedBody {
                body,
                _lease: lease,
            }
            .map_err(|e| -> BoxError { Box::new(e) })
            .boxed()
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its instance slot until it is done.
    struct LeasedBody {
        #[pin]
        body: UpstreamBody,
        _lease: Lease,
    }
}

impl http_body::Body for LeasedBody {
    type Data = Bytes;
    type Error = super::h1::ExchangeError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What a call to an instance gave, with its two failures as API Gateway answers them: past the
/// route's timeout (504) or no exchange with the instance at all (502).
fn integration_outcome<T>(
    outcome: Result<Result<T, InvokeError>, tokio::time::error::Elapsed>,
    entry: &FunctionEntry,
    timeout: Duration,
) -> Result<T, GatewayError> {
    outcome
        .map_err(|_| GatewayError::IntegrationTimeout {
            function: entry.key.to_string(),
            timeout_ms: timeout.as_millis(),
        })?
        .map_err(|e| GatewayError::Unreachable {
            function: entry.key.to_string(),
            reason: e.to_string(),
        })
}

async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(e) => Err(GatewayError::BadRequest(e.to_string())),
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

thread_local! {
    /// The last peer address a serving thread wrote as a header value: its connections mostly
    /// come from a few addresses (a load balancer's, or one client's), and formatting the
    /// address was ~2 % of a proxied request's CPU.
    static PEER_VALUE: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `ip` as a header value.
fn peer_value(ip: IpAddr) -> HeaderValue {
    PEER_VALUE.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((seen, value)) = &*last
            && *seen == ip
        {
            return value.clone();
        }
        // An address is always a valid header value.
        let value = HeaderValue::try_from(ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((ip, value.clone()));
        value
    })
}

/// The headers an `http` function's request carries in place of the client's own of the same
/// names: `X-Forwarded-For` (the client's chain, if any, and the peer), `-Proto`, the request
/// id, and `X-Forwarded-Host` with the client's Host, or a Host of the instance's address when
/// the client sent none (HTTP/1.1 requires one). Every proxied request takes this path, so the
/// names are constants, the peer's address is written without an intermediate `String`, and
/// the client's map is read twice and not edited.
fn forwarded_headers(
    headers: &http::HeaderMap,
    peer: SocketAddr,
    request_id: &HeaderValue,
    instance: SocketAddr,
) -> [(HeaderName, HeaderValue); 4] {
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(existing) => {
            use std::io::Write as _;
            let mut chain = Vec::with_capacity(existing.len() + 48);
            chain.extend_from_slice(existing.as_bytes());
            // Writing to a Vec does not fail.
            let _ = write!(chain, ", {}", peer.ip());
            // A valid header value and an address are valid together.
            HeaderValue::from_maybe_shared(Bytes::from(chain))
                .unwrap_or_else(|_| peer_value(peer.ip()))
        }
        None => peer_value(peer.ip()),
    };
    let host = match headers.get(header::HOST) {
        Some(host) => (X_FORWARDED_HOST, host.clone()),
        None => (header::HOST, super::invoke::host_value(instance)),
    };
    [
        (X_FORWARDED_FOR, forwarded_for),
        (X_FORWARDED_PROTO, HeaderValue::from_static("http")),
        (X_REQUEST_ID, request_id.clone()),
        host,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'h>(headers: &'h [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn forwarded_headers_extend_a_client_chain_and_carry_the_request_id() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        let id = HeaderValue::from_static("c0ffee00-0000-4000-8000-000000000001");
        let instance = "127.0.0.1:8080".parse().unwrap();
        let sent = forwarded_headers(
            &headers,
            "[2001:db8::1]:4000".parse().unwrap(),
            &id,
            instance,
        );
        assert_eq!(
            value(&sent, &X_FORWARDED_FOR),
            Some("203.0.113.7, 2001:db8::1")
        );
        assert_eq!(value(&sent, &X_FORWARDED_PROTO), Some("http"));
        assert_eq!(value(&sent, &X_FORWARDED_HOST), Some("api.example.com"));
        assert_eq!(value(&sent, &X_REQUEST_ID), id.to_str().ok());
        // The client's Host goes out as it came (it is not replaced).
        assert_eq!(value(&sent, &header::HOST), None);

        let headers = http::HeaderMap::new();
        let sent = forwarded_headers(&headers, "127.0.0.1:9".parse().unwrap(), &id, instance);
        assert_eq!(value(&sent, &X_FORWARDED_FOR), Some("127.0.0.1"));
        assert_eq!(value(&sent, &X_FORWARDED_HOST), None);
        assert_eq!(value(&sent, &header::HOST), Some("127.0.0.1:8080"));
        // Another peer on the same thread gets its own address, not the last one's.
        let sent = forwarded_headers(&headers, "10.1.2.3:9".parse().unwrap(), &id, instance);
        assert_eq!(value(&sent, &X_FORWARDED_FOR), Some("10.1.2.3"));
        let sent = forwarded_headers(&headers, "127.0.0.1:10".parse().unwrap(), &id, instance);
        assert_eq!(value(&sent, &X_FORWARDED_FOR), Some("127.0.0.1"));
    }
}
