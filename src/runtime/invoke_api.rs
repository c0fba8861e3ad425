//! The invoke endpoint (compatible with AWS's emulator) and the health endpoints.
//!
//! `POST /2015-03-31/functions/function/invocations` takes the event as the body and answers
//! with the function's exact bytes. Every non-success also carries `X-Kfaas-Invoke-Error`
//! (`function`, `timeout`, `crash`, `init`) so the gateway maps timeouts to 504 and the rest to
//! 502 without parsing bodies.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::{
    http::{self as h, Body, BodyError, MAX_PAYLOAD},
    invocation::{Failure, Invocation, Outcome, Success, error_body},
    pool::Pool,
    stream::gather,
};

/// The caller's request id, used as the Lambda request id when valid.
pub const REQUEST_ID_HEADER: &str = "x-kfaas-request-id";
/// The kind of failure, on every non-success.
pub const INVOKE_ERROR_HEADER: &str = "x-kfaas-invoke-error";
/// Set to `streaming` on a streamed response (Lambda response streaming). A caller that answers
/// whole bodies (the gateway) sends it as `buffered`: a streamed answer is then gathered here,
/// and one that fails midway is answered as that failure, which a caller that reads no
/// trailers could not tell from a short body.
pub const STREAM_HEADER: &str = "x-kfaas-response-mode";

pub struct InvokeContext {
    pub pool: Arc<Pool>,
}

pub async fn handle(ctx: Arc<InvokeContext>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => h::respond(StatusCode::OK, "text/plain", "ok"),
        (&Method::GET, "/readyz") => {
            if ctx.pool.is_ready() {
                h::respond(StatusCode::OK, "text/plain", "ready")
            } else {
                h::respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready")
            }
        }
        (&Method::POST, p) if is_invoke_path(p) => invoke(&ctx, req).await,
        _ => h::error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "no such path",
        ),
    }
}

/// `/2015-03-31/functions/{name}/invocations`; the emulator's name is `function`, any is taken.
fn is_invoke_path(path: &str) -> bool {
    path.strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// A request id from the caller is kept when it is short and uuid-like.
fn request_id(headers: &http::HeaderMap) -> String {
    checked_request_id(h::header_str(headers, REQUEST_ID_HEADER))
}

/// `id` when it is short and uuid-like, else a new uuid.
pub(super) fn checked_request_id(id: Option<&str>) -> String {
    id.filter(|id| {
        // It travels in Runtime API paths and log lines: keep it to uuid-like characters.
        id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    })
    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The X-Ray trace header the caller sent, or a fresh unsampled one as Lambda would make.
fn trace_id(headers: &http::HeaderMap) -> String {
    h::header_str(headers, "x-amzn-trace-id").map_or_else(fresh_trace_id, str::to_owned)
}

/// A new unsampled X-Ray trace header, as Lambda makes one for a call without.
pub(super) fn fresh_trace_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{now:08x}-{};Sampled=0", &id[..24])
}

/// Lambda's `X-Amz-Client-Context` is base64 JSON; the handler gets the JSON.
fn client_context(headers: &http::HeaderMap) -> Option<String> {
    let raw = h::header_str(headers, "x-amz-client-context")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    String::from_utf8(decoded).ok()
}

async fn invoke(ctx: &InvokeContext, req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let id = request_id(headers);
    let trace = trace_id(headers);
    let cc = client_context(headers);
    let buffered = headers
        .get(STREAM_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"buffered"));
    let payload = match h::read_body(req.into_body(), MAX_PAYLOAD).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(limit)) => {
            return with_id(
                h::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLargeException",
                    &format!(
                        "Request must be smaller than {limit} bytes for the InvokeFunction operation"
                    ),
                ),
                &id,
            );
        }
        Err(e) => {
            return with_id(
                h::error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &e.to_string(),
                ),
                &id,
            );
        }
    };
    let (reply, outcome) = oneshot::channel();
    let invocation = Invocation {
        request_id: id.clone(),
        payload,
        trace_id: trace,
        client_context: cc,
        cognito_identity: None,
        reply,
    };
    if ctx.pool.submit(invocation).is_err() {
        return with_id(
            h::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                "the runtime is shutting down",
            ),
            &id,
        );
    }
    let outcome = outcome.await.unwrap_or_else(|_| Outcome::Crash {
        body: error_body(
            "Runtime.ExitError",
            "the invocation was lost by the runtime",
        ),
    });
    let response = match outcome {
        Outcome::Stream { content_type, body } if buffered => match gather(body).await {
            Ok(body) => render(Outcome::Response { body, content_type }),
            Err(failure) => failed(failure),
        },
        outcome => render(outcome),
    };
    with_id(response, &id)
}

fn with_id(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-amz-request-id", v);
    }
    response.headers_mut().insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    response
}

/// Maps an outcome to the emulator's answer: 200 always, with `X-Amz-Function-Error` on errors.
pub fn render(outcome: Outcome) -> Response<Body> {
    match outcome.into_result() {
        Ok(Success::Response { body, content_type }) => {
            let mut response = h::respond(StatusCode::OK, "application/json", body);
            if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Ok(Success::Stream { content_type, body }) => {
            let mut response = Response::new(h::Body::new(h::ChannelBody(body)));
            let headers = response.headers_mut();
            let ct = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok());
            headers.insert(
                header::CONTENT_TYPE,
                ct.unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            // A mid-stream error arrives as these trailers (for callers that sent `TE: trailers`).
            headers.insert(
                header::TRAILER,
                HeaderValue::from_static(
                    "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body, X-Kfaas-Invoke-Error",
                ),
            );
            headers.insert(STREAM_HEADER, HeaderValue::from_static("streaming"));
            response
        }
        Err(failure) => failed(failure),
    }
}

/// The emulator's timeout text.
pub fn timeout_message(after: Duration) -> String {
    format!("Task timed out after {:.2} seconds", after.as_secs_f64())
}

fn failed(Failure { kind, body }: Failure) -> Response<Body> {
    let content_type = if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain"
    };
    let mut response = h::respond(StatusCode::OK, content_type, body);
    let headers = response.headers_mut();
    headers.insert(
        "x-amz-function-error",
        HeaderValue::from_static("Unhandled"),
    );
    headers.insert(INVOKE_ERROR_HEADER, HeaderValue::from_static(kind));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_paths() {
        assert!(is_invoke_path("/2015-03-31/functions/function/invocations"));
        assert!(is_invoke_path("/2015-03-31/functions/orders/invocations"));
        assert!(!is_invoke_path("/2015-03-31/functions//invocations"));
        assert!(!is_invoke_path("/2015-03-31/functions/a/b/invocations"));
    }

    #[test]
    fn request_ids_from_callers_are_checked() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("a/b"));
        assert_ne!(request_id(&headers), "a/b");
    }

    #[test]
    fn failures_carry_both_error_headers() {
        let response = render(Outcome::Timeout {
            after: Duration::from_secs(3),
        });
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
        assert_eq!(response.headers()[INVOKE_ERROR_HEADER], "timeout");
        assert_eq!(
            timeout_message(Duration::from_secs(3)),
            "Task timed out after 3.00 seconds"
        );
    }

    #[test]
    fn the_error_header_is_the_failure_kind() {
        let failures = || {
            let body = || bytes::Bytes::from_static(b"{}");
            [
                Outcome::FunctionError { body: body() },
                Outcome::Timeout {
                    after: Duration::from_secs(1),
                },
                Outcome::Crash { body: body() },
                Outcome::InitError { body: body() },
            ]
        };
        for (outcome, twin) in failures().into_iter().zip(failures()) {
            let Err(failure) = twin.into_result() else {
                panic!("a failure");
            };
            assert_eq!(render(outcome).headers()[INVOKE_ERROR_HEADER], failure.kind);
        }
    }
}
