//! Every failure the gateway answers itself, and the one place that maps it to API Gateway's
//! status code and `{"message": ...}` body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Why the gateway, not the function, answers.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no stage or route matches the request")]
    NotFound,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BadRequest(String),
    #[error("route {route} has no function: {reason}")]
    NoIntegration { route: String, reason: String },
    #[error("function {function} has no ready instance after {waited_ms} ms")]
    NoReadyInstance { function: String, waited_ms: u128 },
    #[error("too many requests are waiting for function {function}")]
    ActivatorQueueFull { function: String },
    #[error("function {function} did not answer within {timeout_ms} ms")]
    IntegrationTimeout { function: String, timeout_ms: u128 },
    #[error("function {function} failed: {reason}")]
    FunctionError { function: String, reason: String },
    #[error("function {function} returned a malformed response: {reason}")]
    MalformedResponse { function: String, reason: String },
    #[error("could not reach function {function}: {reason}")]
    Unreachable { function: String, reason: String },
    #[error("could not build the event: {0}")]
    Event(String),
    #[error("refused by policy: {refusal}")]
    Policy {
        refusal: super::policy::Refusal,
        /// Why a JWT was refused, for the `www-authenticate` header.
        www_authenticate: Option<String>,
    },
}

impl GatewayError {
    /// A short stable name for metric labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BadRequest(_) => "bad_request",
            Self::NoIntegration { .. } => "no_integration",
            Self::NoReadyInstance { .. } => "no_ready_instance",
            Self::ActivatorQueueFull { .. } => "activator_queue_full",
            Self::IntegrationTimeout { .. } => "integration_timeout",
            Self::FunctionError { .. } => "function_error",
            Self::MalformedResponse { .. } => "malformed_response",
            Self::Unreachable { .. } => "unreachable",
            Self::Event(_) => "event",
            Self::Policy { refusal, .. } => refusal.category(),
        }
    }

    /// API Gateway's status and message for this failure.
    pub fn status_and_message(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Policy { refusal, .. } => (refusal.status(), refusal.message()),
            Self::NotFound => (StatusCode::NOT_FOUND, "Not Found"),
            Self::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
            }
            Self::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
            ),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad Request"),
            Self::NoIntegration { .. } | Self::Event(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            Self::ActivatorQueueFull { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            }
            // The integration timeout covers a cold start, as on Lambda: waiting for an
            // instance past the route's deadline is an integration timeout too.
            Self::NoReadyInstance { .. } | Self::IntegrationTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out")
            }
            Self::FunctionError { .. }
            | Self::MalformedResponse { .. }
            | Self::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "Internal server error"),
        }
    }

    /// The HTTP answer. The message is API Gateway's; the detail stays in the logs.
    pub fn to_response(&self) -> Response<Bytes> {
        let (status, message) = self.status_and_message();
        let mut response = json_message(status, message);
        if let Self::Policy {
            www_authenticate: Some(why),
            ..
        } = self
            && let Ok(value) = HeaderValue::from_str(why)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// `{"message": "..."}` with the given status, as API Gateway writes its own answers.
pub fn json_message(status: StatusCode, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_api_gateway_answers() {
        let cases = [
            (GatewayError::NotFound, 404, "Not Found"),
            (
                GatewayError::PayloadTooLarge { limit: 1 },
                413,
                "Request Entity Too Large",
            ),
            (
                GatewayError::IntegrationTimeout {
                    function: "f".into(),
                    timeout_ms: 1,
                },
                504,
                "Endpoint request timed out",
            ),
            (
                GatewayError::MalformedResponse {
                    function: "f".into(),
                    reason: "x".into(),
                },
                502,
                "Internal server error",
            ),
            (
                GatewayError::FunctionError {
                    function: "f".into(),
                    reason: "x".into(),
                },
                502,
                "Internal server error",
            ),
            (
                GatewayError::NoReadyInstance {
                    function: "f".into(),
                    waited_ms: 1,
                },
                504,
                "Endpoint request timed out",
            ),
            (
                GatewayError::ActivatorQueueFull {
                    function: "f".into(),
                },
                503,
                "Service Unavailable",
            ),
            (
                GatewayError::Policy {
                    refusal: crate::gateway::policy::Refusal::QuotaExceeded,
                    www_authenticate: None,
                },
                429,
                "Limit Exceeded",
            ),
        ];
        for (error, status, message) in cases {
            let response = error.to_response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            let body: serde_json::Value =
                serde_json::from_slice(response.body()).expect("json body");
            assert_eq!(body, serde_json::json!({ "message": message }));
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        }
    }
}
