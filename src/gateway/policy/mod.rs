//! API Gateway's per-route and per-stage policies: API keys, usage-plan limits, JWT and Lambda
//! authorizers, CORS, IP rules and the response cache.
//!
//! Every module here is pure: it takes the request's parts and an injected [`clock::Clock`] and
//! answers with a decision, so that the request flow (`handler.rs`) stays the only place that
//! touches the network and the only place that turns a decision into a response. The one
//! exception is [`jwt::HttpJwksFetcher`], the network fetch behind the JWKS cache's trait.
//!
//! A refused request is described by one [`Refusal`]; `error.rs` maps it to API Gateway's status
//! and `{"message": ...}` body with [`Refusal::status`] and [`Refusal::message`].

pub mod api_keys;
pub mod authorizer;
pub mod cache;
pub mod clock;
pub mod compiled;
pub mod cors;
pub mod decision_cache;
pub mod ip_rules;
pub mod jwks;
pub mod jwt;
pub mod limiter;

use http::StatusCode;

/// Why a policy refused a request. These are API Gateway's own answers (status and message);
/// the detail of *why* stays in the module's error type and in the logs, never in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Missing or unknown API key, a key whose usage plan does not cover the stage, an address
    /// refused by the stage's IP rules, or a valid JWT without a required scope.
    #[error("forbidden")]
    Forbidden,
    /// No credentials where an authorizer needs them, or a JWT that does not verify.
    #[error("unauthorized")]
    Unauthorized,
    /// A Lambda authorizer denied the request.
    #[error("access denied by the authorizer")]
    AccessDenied,
    /// A stage or usage-plan throttle refused the request.
    #[error("throttled")]
    Throttled,
    /// The key's usage-plan quota for the current period is used up.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The Lambda authorizer failed or answered something that is not a decision.
    #[error("the authorizer failed")]
    AuthorizerFailed,
}

impl Refusal {
    /// API Gateway's status code for this refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Forbidden | Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Throttled | Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::AuthorizerFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// API Gateway's `message` for this refusal.
    pub fn message(self) -> &'static str {
        match self {
            Self::Forbidden => "Forbidden",
            Self::Unauthorized => "Unauthorized",
            // REST APIs' text for a Lambda authorizer's deny (see LAMBDA-COMPAT.md).
            Self::AccessDenied => "User is not authorized to access this resource",
            Self::Throttled => "Too Many Requests",
            Self::QuotaExceeded => "Limit Exceeded",
            Self::AuthorizerFailed => "Internal Server Error",
        }
    }

    /// A short stable name for metric labels and logs.
    pub fn category(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::AccessDenied => "access_denied",
            Self::Throttled => "throttled",
            Self::QuotaExceeded => "quota_exceeded",
            Self::AuthorizerFailed => "authorizer_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_api_gateway_answers() {
        let cases = [
            (Refusal::Forbidden, 403, "Forbidden"),
            (Refusal::Unauthorized, 401, "Unauthorized"),
            (
                Refusal::AccessDenied,
                403,
                "User is not authorized to access this resource",
            ),
            (Refusal::Throttled, 429, "Too Many Requests"),
            (Refusal::QuotaExceeded, 429, "Limit Exceeded"),
            (Refusal::AuthorizerFailed, 500, "Internal Server Error"),
        ];
        for (refusal, status, message) in cases {
            assert_eq!(refusal.status().as_u16(), status);
            assert_eq!(refusal.message(), message);
            assert!(!refusal.category().is_empty());
        }
    }
}
