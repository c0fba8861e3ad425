//! One invocation as the runtime passes it around: what a caller submits, what a handler's
//! `/next` gets, and how the invocation ended, with the failure kinds callers see.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot};

use super::invoke_api::timeout_message;

/// One invocation as accepted by the invoke endpoint.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub reply: oneshot::Sender<Outcome>,
}

/// What a `/next` hands to the handler.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_epoch_ms: u128,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
}

/// How one invocation ended.
#[derive(Debug)]
pub enum Outcome {
    Response {
        body: Bytes,
        content_type: Option<String>,
    },
    FunctionError {
        body: Bytes,
    },
    Timeout {
        after: Duration,
    },
    Crash {
        body: Bytes,
    },
    InitError {
        body: Bytes,
    },
    /// A streamed response: frames arrive as the handler writes them; a mid-stream error
    /// ends it with Lambda's error trailers.
    Stream {
        content_type: Option<String>,
        body: mpsc::Receiver<Frame<Bytes>>,
    },
}

impl Outcome {
    /// Splits the handler's result from a failure, named as callers see it. The one place the
    /// failure kinds of a finished invocation are named: the invoke endpoint's
    /// `X-Kfaas-Invoke-Error` and a direct invocation's `DirectOutcome::Failed` both take them
    /// from here. (A stream that fails midway names its kind in its trailers, `stream.rs`.)
    pub fn into_result(self) -> Result<Success, Failure> {
        let (kind, body) = match self {
            Self::Response { body, content_type } => {
                return Ok(Success::Response { body, content_type });
            }
            Self::Stream { content_type, body } => {
                return Ok(Success::Stream { content_type, body });
            }
            Self::FunctionError { body } => ("function", body),
            Self::Timeout { after } => ("timeout", Bytes::from(timeout_message(after))),
            Self::Crash { body } => ("crash", body),
            Self::InitError { body } => ("init", body),
        };
        Err(Failure { kind, body })
    }
}

/// The handler's result: an [`Outcome`] that is no failure.
#[derive(Debug)]
pub enum Success {
    Response {
        body: Bytes,
        content_type: Option<String>,
    },
    Stream {
        content_type: Option<String>,
        body: mpsc::Receiver<Frame<Bytes>>,
    },
}

/// A failed invocation as its caller gets it.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// `function`, `timeout`, `crash` or `init`.
    pub kind: &'static str,
    pub body: Bytes,
}

/// Lambda's error shape, for errors the runtime itself reports.
pub fn error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_as_callers_see_them() {
        let kind = |outcome: Outcome| outcome.into_result().err().map(|f| f.kind);
        let body = Bytes::from_static(b"{}");
        let response = Outcome::Response {
            body: body.clone(),
            content_type: None,
        };
        assert_eq!(kind(response), None);
        let function = Outcome::FunctionError { body: body.clone() };
        assert_eq!(kind(function), Some("function"));
        assert_eq!(kind(Outcome::Crash { body: body.clone() }), Some("crash"));
        assert_eq!(kind(Outcome::InitError { body }), Some("init"));
        let timeout = Outcome::Timeout {
            after: Duration::from_secs(3),
        };
        assert_eq!(
            timeout.into_result().err(),
            Some(Failure {
                kind: "timeout",
                body: Bytes::from_static(b"Task timed out after 3.00 seconds"),
            })
        );
    }
}
