//! The JWT authorizer, as API Gateway HTTP APIs check a token
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html>):
//! 1. the identity source holds the token, alone or after `Bearer `;
//! 2. the signature verifies with the issuer's key named by `kid`, in an algorithm that key
//!    allows (pinned by the JWK's `kty`/`crv`/`alg`: never `none`, never HMAC, so an HS256
//!    token "signed" with an RSA public key is refused);
//! 3. `iss` equals the issuer; `aud`, or `client_id` when there is no `aud`, is one of the
//!    audiences; `exp` is in the future; `nbf` and `iat`, when present, are not;
//! 4. with scopes on the route, `scope` (space-separated) or `scp` holds at least one of them.
//!
//! Any failure of 1–3 is 401 `{"message":"Unauthorized"}` with a `www-authenticate` header that
//! says why (`error="invalid_token"`), as the troubleshooting guide shows
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-troubleshooting-jwt.html>).
//! A valid token without a required scope is 403 `{"message":"Forbidden"}` with
//! `error="insufficient_scope"` (RFC 6750 §3.1; the AWS guide does not show this case).
//!
//! API Gateway documents no clock-skew allowance; kfaas allows [`DEFAULT_LEEWAY`] on `exp`,
//! `nbf` and `iat` because the gateway's clock and the issuer's are never exactly in step.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    Refusal,
    clock::SharedClock,
    jwks::{JwksCache, JwksError, JwksSource, VerifyKey},
};
use crate::api::{JwtAuthorizer, PayloadFormat};

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Why a token was refused. Only [`JwtError::refusal`] and [`JwtError::www_authenticate`] reach
/// the caller; the rest is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("no token in the identity source")]
    MissingToken,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("no key of the issuer has kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("algorithm {0} is not allowed for the key")]
    DisallowedAlgorithm(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token does not have a valid issuer")]
    InvalidIssuer,
    #[error("the token does not have a valid audience")]
    InvalidAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token does not have a required scope")]
    MissingScope,
    #[error("the issuer's keys are unavailable: {0}")]
    Keys(#[from] JwksError),
}

impl JwtError {
    /// The answer API Gateway gives.
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::MissingScope => Refusal::Forbidden,
            _ => Refusal::Unauthorized,
        }
    }

    /// The `www-authenticate` header value, in API Gateway's form.
    pub fn www_authenticate(&self, required_scopes: &[String]) -> String {
        let scope = required_scopes.join(" ");
        match self {
            Self::MissingToken => format!("Bearer scope=\"{scope}\""),
            Self::MissingScope => format!(
                "Bearer scope=\"{scope}\" error=\"insufficient_scope\" error_description=\"{self}\""
            ),
            // Key and fetch details stay in the logs.
            Self::Keys(_) | Self::UnknownKey(_) => format!(
                "Bearer scope=\"{scope}\" error=\"invalid_token\" error_description=\"signing key not found\""
            ),
            _ => format!(
                "Bearer scope=\"{scope}\" error=\"invalid_token\" error_description=\"{self}\""
            ),
        }
    }
}

/// A route's JWT authorizer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub jwks: JwksSource,
    /// The identity source, e.g. `$request.header.Authorization`.
    pub identity_source: String,
}

impl JwtConfig {
    /// From a Route's `auth.jwt`; a `jwksSecret` is named `namespace/name`.
    pub fn from_spec(spec: &JwtAuthorizer, namespace: &str) -> Option<Self> {
        let jwks = match (&spec.jwks_uri, &spec.jwks_secret) {
            (Some(uri), _) => JwksSource::Url(uri.clone()),
            (None, Some(secret)) => JwksSource::Secret(format!("{namespace}/{secret}")),
            (None, None) => return None,
        };
        Some(Self {
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            scopes: spec.scopes.clone(),
            jwks,
            identity_source: spec
                .identity_source
                .clone()
                .unwrap_or_else(|| "$request.header.Authorization".to_owned()),
        })
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIdentity {
    /// The token's claims, as signed.
    pub claims: Arc<Value>,
    /// The token's scopes (`scope` or `scp`).
    pub scopes: Vec<String>,
}

impl JwtIdentity {
    /// `requestContext.authorizer` of the integration's event. 2.0 (HTTP APIs):
    /// `{"jwt": {"claims": {...}, "scopes": ...}}`; 1.0: `{"claims": {...}, "scopes": ...}`, as
    /// REST APIs' token authorizers (Cognito) pass them. API Gateway passes every claim as a
    /// string (numbers as digits, arrays as `[a b]`), and `scopes` only for routes that require
    /// scopes (`null` otherwise).
    pub fn event_authorizer(&self, route_scopes: &[String], format: PayloadFormat) -> Value {
        let claims: Map<String, Value> = self
            .claims
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(claim_text(v))))
                    .collect()
            })
            .unwrap_or_default();
        let scopes = if route_scopes.is_empty() {
            Value::Null
        } else {
            Value::from(self.scopes.clone())
        };
        let inner = serde_json::json!({ "claims": claims, "scopes": scopes });
        match format {
            PayloadFormat::V2 => serde_json::json!({ "jwt": inner }),
            PayloadFormat::V1 => inner,
        }
    }
}

fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(claim_text).collect();
            format!("[{}]", parts.join(" "))
        }
        other => other.to_string(),
    }
}

/// The token in an identity-source value: the value itself, or what follows `Bearer `.
pub fn token_from(value: Option<&str>) -> Result<&str, JwtError> {
    let value = value.map(str::trim).unwrap_or("");
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    if token.is_empty() || token.eq_ignore_ascii_case("bearer") {
        Err(JwtError::MissingToken)
    } else {
        Ok(token)
    }
}

fn seconds(claims: &Value, name: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| JwtError::Malformed(format!("claim {name} is not a number"))),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks a token's signature with `key` and its claims against `config` at `now`.
pub fn verify(
    token: &str,
    key: &VerifyKey,
    config: &JwtConfig,
    now: DateTime<Utc>,
    leeway: Duration,
) -> Result<JwtIdentity, JwtError> {
    let claims = Arc::new(verify_signature(token, key)?);
    check_claims(&claims, config, now, leeway)
}

/// Checks a token's signature and algorithm with `key`; returns its claims, unchecked.
pub fn verify_signature(token: &str, key: &VerifyKey) -> Result<Value, JwtError> {
    let header = decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    if !key.algorithms.contains(&header.alg) {
        return Err(JwtError::DisallowedAlgorithm(format!("{:?}", header.alg)));
    }
    let mut validation = Validation::new(header.alg);
    // Time and audience are checked below against the injected clock and with API Gateway's
    // `client_id` rule; the library checks the signature and the algorithm.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = decode::<Value>(token, &key.key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::InvalidAlgorithm => {
                JwtError::DisallowedAlgorithm(format!("{:?}", header.alg))
            }
            _ => JwtError::Malformed(e.to_string()),
        }
    })?;
    let claims = data.claims;
    if !claims.is_object() {
        return Err(JwtError::Malformed("the claims are not an object".into()));
    }
    Ok(claims)
}

/// Checks verified claims against a route's authorizer at `now`.
pub fn check_claims(
    claims: &Arc<Value>,
    config: &JwtConfig,
    now: DateTime<Utc>,
    leeway: Duration,
) -> Result<JwtIdentity, JwtError> {
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(JwtError::InvalidIssuer);
    }
    let audiences = match claims.get("aud") {
        Some(aud) if !aud.is_null() => strings(Some(aud)),
        _ => strings(claims.get("client_id")),
    };
    if !audiences.iter().any(|a| config.audiences.contains(a)) {
        return Err(JwtError::InvalidAudience);
    }
    let now = now.timestamp();
    let leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
    match seconds(claims, "exp")? {
        Some(exp) if now <= exp.saturating_add(leeway) => {}
        Some(_) => return Err(JwtError::Expired),
        None => return Err(JwtError::Malformed("the token has no exp".into())),
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = seconds(claims, name)?
            && t > now.saturating_add(leeway)
        {
            return Err(JwtError::NotYetValid);
        }
    }
    let scopes = match claims.get("scope") {
        Some(v) if !v.is_null() => strings(Some(v)),
        _ => strings(claims.get("scp")),
    };
    if !config.scopes.is_empty() && !scopes.iter().any(|s| config.scopes.contains(s)) {
        return Err(JwtError::MissingScope);
    }
    Ok(JwtIdentity {
        // Shared with the verified-token cache: no copy of the claims per request.
        claims: Arc::clone(claims),
        scopes,
    })
}

/// Verifies tokens against keys from a [`JwksCache`], on the injected clock.
///
/// Signature checks are the expensive part (an RSA verification per request), so tokens whose
/// signature verified are remembered by their SHA-256 digest and key source for a short while;
/// their claims are still checked against the route and the clock on every request. A key
/// removed from the issuer's set therefore stops working within [`VERIFIED_TOKEN_TTL`].
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Arc<JwksCache>,
    clock: SharedClock,
    verified: moka::sync::Cache<[u8; 32], Arc<Value>>,
    pub leeway: Duration,
}

/// How long a verified signature is remembered.
pub const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(60);

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

fn token_digest(source: &JwksSource, token: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    let (kind, name) = match source {
        JwksSource::Url(url) => (b'u', url),
        JwksSource::Secret(secret) => (b's', secret),
    };
    hash.update([kind]);
    hash.update(name.as_bytes());
    hash.update([0]);
    hash.update(token.as_bytes());
    hash.finalize().into()
}

impl JwtVerifier {
    pub fn new(keys: Arc<JwksCache>, clock: SharedClock) -> Self {
        Self {
            keys,
            clock,
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(VERIFIED_TOKEN_TTL)
                .build(),
            leeway: DEFAULT_LEEWAY,
        }
    }

    pub fn keys(&self) -> &JwksCache {
        &self.keys
    }

    /// Authorizes a request given its identity-source value (e.g. the `Authorization` header).
    pub async fn authorize(
        &self,
        config: &JwtConfig,
        identity: Option<&str>,
    ) -> Result<JwtIdentity, JwtError> {
        let token = token_from(identity)?;
        let digest = token_digest(&config.jwks, token);
        let claims = match self.verified.get(&digest) {
            Some(claims) => claims,
            None => {
                let header =
                    decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
                let key = self
                    .keys
                    .key(&config.jwks, header.kid.as_deref())
                    .await?
                    .ok_or_else(|| JwtError::UnknownKey(header.kid.clone()))?;
                let claims = Arc::new(verify_signature(token, &key)?);
                self.verified.insert(digest, claims.clone());
                claims
            }
        };
        check_claims(&claims, config, self.clock.utc(), self.leeway)
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
