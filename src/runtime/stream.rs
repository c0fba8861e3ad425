//! Lambda response streaming on the Runtime API side: a `/response` posted with
//! `Lambda-Runtime-Function-Response-Mode: streaming` is relayed to the caller frame by frame
//! as it arrives, instead of being buffered.
//!
//! A handler reports a mid-stream error in the request's trailers
//! (`Lambda-Runtime-Function-Error-Type`, `Lambda-Runtime-Function-Error-Body` in base64); the
//! caller gets them as trailers too, with `X-Kfaas-Invoke-Error: function`. A stream cut short
//! (the process died or was killed at its deadline) ends with `Runtime.StreamError` /
//! `crash`. Streams may carry up to 20 MiB, Lambda's soft limit.

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;

use super::{
    http::Body,
    invocation::{Failure, error_body},
    pool::Pool,
    rapi::{accepted, refused},
};

/// Lambda's soft limit for a streamed response.
pub const MAX_STREAM: usize = 20 * 1024 * 1024;

const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const ERROR_BODY: &str = "lambda-runtime-function-error-body";

/// Relays one streamed response to the waiting caller and answers the handler at its end.
pub async fn relay(
    pool: &Pool,
    slot: usize,
    request_id: &str,
    content_type: Option<String>,
    mut body: Incoming,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(16);
    if let Err(e) = pool.begin_stream(slot, request_id, content_type, rx) {
        return refused(&e);
    }
    let mut sent = 0usize;
    let mut error: Option<(String, String, &'static str)> = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len();
                    if sent > MAX_STREAM {
                        error = Some((
                            "Function.ResponseSizeTooLarge".into(),
                            format!(
                                "Response payload size exceeded maximum allowed payload size ({MAX_STREAM} bytes)."
                            ),
                            "function",
                        ));
                        break;
                    }
                    // A caller that went away stops receiving; the handler still finishes.
                    let _ = tx.send(Frame::data(data)).await;
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        error = trailer_error(&trailers).map(|(t, m)| (t, m, "function"));
                    }
                }
            },
            Err(e) => {
                error = Some((
                    "Runtime.StreamError".into(),
                    format!("the response stream broke: {e}"),
                    "crash",
                ));
                break;
            }
        }
    }
    if let Some((error_type, message, kind)) = error {
        let _ = tx
            .send(Frame::trailers(error_trailers(&error_type, &message, kind)))
            .await;
    }
    drop(tx);
    pool.end_stream(slot, request_id);
    accepted()
}

/// Gathers a streamed answer whole, for a caller that answers whole bodies: the body, or the
/// failure its trailers carry when the stream failed midway (never the part sent before it).
pub async fn gather(mut body: mpsc::Receiver<Frame<Bytes>>) -> Result<Bytes, Failure> {
    let mut gathered = BytesMut::new();
    while let Some(frame) = body.recv().await {
        match frame.into_data() {
            Ok(data) => gathered.extend_from_slice(&data),
            Err(frame) => {
                if let Some(failure) = frame.into_trailers().ok().and_then(|t| trailer_failure(&t))
                {
                    return Err(failure);
                }
            }
        }
    }
    Ok(gathered.freeze())
}

/// The failure a stream's trailers carry, as a finished invocation's [`Failure`] would name it;
/// `None` when the stream ended well. A caller that gathers a stream answers this failure, not
/// the part of the body sent before it.
pub(super) fn trailer_failure(trailers: &HeaderMap) -> Option<Failure> {
    let kind = match trailers.get(super::INVOKE_ERROR_HEADER)?.as_bytes() {
        b"crash" => "crash",
        b"timeout" => "timeout",
        b"init" => "init",
        _ => "function",
    };
    let (error_type, body) = trailer_error(trailers).unwrap_or_default();
    // A handler's error body is Lambda's JSON already; a runtime's own is a message.
    let body = if serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v.is_object()) {
        Bytes::from(body)
    } else {
        error_body(&error_type, &body)
    };
    Some(Failure { kind, body })
}

/// The error a handler reported in its trailers, if any: (type, message or raw body).
fn trailer_error(trailers: &HeaderMap) -> Option<(String, String)> {
    let error_type = trailers.get(ERROR_TYPE)?.to_str().ok()?.to_owned();
    let body = trailers
        .get(ERROR_BODY)
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Some((error_type, body))
}

/// The trailers a caller gets when a stream ends in error.
fn error_trailers(error_type: &str, body: &str, kind: &'static str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(error_type) {
        trailers.insert(ERROR_TYPE, v);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        trailers.insert(ERROR_BODY, v);
    }
    trailers.insert(super::INVOKE_ERROR_HEADER, HeaderValue::from_static(kind));
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_errors_round_trip() {
        let trailers = error_trailers("Error", r#"{"errorMessage":"mid"}"#, "function");
        assert_eq!(
            trailer_error(&trailers),
            Some(("Error".to_owned(), r#"{"errorMessage":"mid"}"#.to_owned()))
        );
        assert_eq!(trailers["x-kfaas-invoke-error"], "function");
        assert_eq!(trailer_error(&HeaderMap::new()), None);
    }

    #[test]
    fn trailers_name_the_failure_a_gathered_stream_answers() {
        let handler = error_trailers("Error", r#"{"errorMessage":"mid"}"#, "function");
        assert_eq!(
            trailer_failure(&handler),
            Some(Failure {
                kind: "function",
                body: Bytes::from_static(br#"{"errorMessage":"mid"}"#),
            })
        );
        let broke = error_trailers("Runtime.StreamError", "the response stream broke", "crash");
        let failure = trailer_failure(&broke).expect("a failure");
        assert_eq!(failure.kind, "crash");
        let body: serde_json::Value = serde_json::from_slice(&failure.body).expect("json");
        assert_eq!(body["errorType"], "Runtime.StreamError");
        assert_eq!(body["errorMessage"], "the response stream broke");
        assert_eq!(trailer_failure(&HeaderMap::new()), None);
    }
}
