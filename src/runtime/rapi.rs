//! The Lambda Runtime API (`/2018-06-01/runtime/...`) as one handler process sees it.
//!
//! Each slot has its own listener, so the slot index arrives with every request. Statuses and
//! error bodies follow AWS's emulator (`lambda/rapi`): 202 `{"status":"OK"}` on acceptance,
//! 400 `InvalidRequestID`, 403 `InvalidStateTransition`, 413 `RequestEntityTooLarge`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::{
    http::{self as h, Body, BodyError, MAX_PAYLOAD},
    invocation::{Delivery, Outcome, error_body},
    pool::{Pool, RapiError},
    report, stream,
};

const PREFIX: &str = "/2018-06-01/runtime/";
const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";
const RESPONSE_MODE_HEADER: &str = "lambda-runtime-function-response-mode";

/// What every Runtime API request needs.
pub struct RapiContext {
    pub pool: Arc<Pool>,
    pub function_arn: HeaderValue,
}

pub async fn handle(ctx: Arc<RapiContext>, slot: usize, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return not_found(&path);
    };
    let method = req.method().clone();
    match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(&ctx, slot).await,
        (Method::POST, ["invocation", id, "response"]) => {
            let id = (*id).to_owned();
            response(&ctx, slot, &id, req).await
        }
        (Method::POST, ["invocation", id, "error"]) => {
            let id = (*id).to_owned();
            invocation_error(&ctx, slot, &id, req).await
        }
        (Method::POST, ["init", "error"]) => init_error(&ctx, slot, req).await,
        _ => not_found(&path),
    }
}

fn not_found(path: &str) -> Response<Body> {
    h::error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("no such Runtime API path: {path}"),
    )
}

pub(super) fn refused(e: &RapiError) -> Response<Body> {
    let status = match e {
        RapiError::InvalidRequestId => StatusCode::BAD_REQUEST,
        RapiError::InvalidStateTransition { .. } => StatusCode::FORBIDDEN,
    };
    h::error(status, e.error_type(), &e.to_string())
}

pub(super) fn accepted() -> Response<Body> {
    h::json(StatusCode::ACCEPTED, &serde_json::json!({ "status": "OK" }))
}

/// Long-polls for the next invocation; never times out.
async fn next(ctx: &RapiContext, slot: usize) -> Response<Body> {
    let rx = match ctx.pool.poll_next(slot) {
        Ok(rx) => rx,
        Err(e) => return refused(&e),
    };
    match rx.await {
        Ok(delivery) => render_event(ctx, delivery),
        // The slot is being restarted or the runtime stops: this process will not be served.
        Err(_) => h::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal Server Error",
        ),
    }
}

fn render_event(ctx: &RapiContext, d: Delivery) -> Response<Body> {
    let mut response = Response::new(h::full(d.payload));
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", &d.request_id);
    set(
        "lambda-runtime-deadline-ms",
        &d.deadline_epoch_ms.to_string(),
    );
    set("lambda-runtime-trace-id", &d.trace_id);
    if let Some(cc) = &d.client_context {
        set("lambda-runtime-client-context", cc);
    }
    if let Some(ci) = &d.cognito_identity {
        set("lambda-runtime-cognito-identity", ci);
    }
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        ctx.function_arn.clone(),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn response(
    ctx: &RapiContext,
    slot: usize,
    id: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let content_type = h::header_str(req.headers(), "content-type").map(str::to_owned);
    if h::header_str(req.headers(), RESPONSE_MODE_HEADER) == Some("streaming") {
        return stream::relay(&ctx.pool, slot, id, content_type, req.into_body()).await;
    }
    let body = match h::read_body(req.into_body(), MAX_PAYLOAD).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(limit)) => {
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({limit} bytes)."
            );
            let outcome = Outcome::FunctionError {
                body: error_body("Function.ResponseSizeTooLarge", &message),
            };
            return match ctx.pool.complete(slot, id, outcome) {
                Ok(report) => {
                    end_report(report).await;
                    h::error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        &format!("Exceeded maximum allowed payload size ({limit} bytes)."),
                    )
                }
                Err(e) => refused(&e),
            };
        }
        Err(e) => return h::error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    };
    match ctx
        .pool
        .complete(slot, id, Outcome::Response { body, content_type })
    {
        Ok(report) => {
            end_report(report).await;
            accepted()
        }
        Err(e) => refused(&e),
    }
}

/// Writes an invocation's END/REPORT lines after its caller's answer: on the runtime's
/// single-threaded scheduler, yielding once lets the invoke task that `complete` woke write
/// that answer first. The handler's post is answered after the lines, so its next event's
/// START cannot come before them.
async fn end_report(report: Option<report::EndReport>) {
    if let Some(report) = report {
        tokio::task::yield_now().await;
        report.emit();
    }
}

/// The error body as posted, or one made from the error-type header when the body is empty.
async fn error_payload(req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let error_type = h::header_str(req.headers(), ERROR_TYPE_HEADER).map(str::to_owned);
    let body = h::read_body(req.into_body(), MAX_PAYLOAD).await?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        error_body(error_type.as_deref().unwrap_or("Unhandled"), "")
    } else {
        body
    };
    Ok(body)
}

async fn invocation_error(
    ctx: &RapiContext,
    slot: usize,
    id: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let body = match error_payload(req).await {
        Ok(p) => p,
        Err(e) => {
            return h::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &e.to_string(),
            );
        }
    };
    match ctx.pool.complete(slot, id, Outcome::FunctionError { body }) {
        Ok(report) => {
            end_report(report).await;
            accepted()
        }
        Err(e) => refused(&e),
    }
}

async fn init_error(ctx: &RapiContext, slot: usize, req: Request<Incoming>) -> Response<Body> {
    let body = match error_payload(req).await {
        Ok(p) => p,
        Err(e) => {
            return h::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &e.to_string(),
            );
        }
    };
    match ctx.pool.init_error(slot, body) {
        Ok(()) => accepted(),
        Err(e) => refused(&e),
    }
}
