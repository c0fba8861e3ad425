//! The Lambda (function) authorizer, minus the invocation: identity sources, the event the
//! authorizer function receives, reading its answer, and the decision cache.
//!
//! Behaviour follows API Gateway
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-lambda-authorizer.html>,
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-lambda-authorizer-output.html>):
//! - every identity source must be present and non-empty, or the request is refused with 401
//!   without calling the authorizer;
//! - TOKEN authorizers get `{type, authorizationToken, methodArn}`; REQUEST authorizers get the
//!   request (payload 1.0: the REST shape with `methodArn`; 2.0: the HTTP API shape with
//!   `routeArn` and `identitySource`), built from the same [`EventInput`] as the proxy event;
//! - an IAM policy answer allows a request when a statement allows `execute-api:Invoke` on its
//!   method ARN (wildcards `*` and `?`) and none denies it; a simple answer (2.0) is
//!   `{"isAuthorized": bool, "context": {...}}`;
//! - deny is 403; an authorizer that fails with the error message `Unauthorized` is 401; any
//!   other failure or a malformed answer is 500;
//! - answers are cached per identity-source values for the TTL. A policy is cached whole and
//!   evaluated against each request's ARN, so a cached answer never allows a route its policy
//!   does not name; the key holds every identity value, length-prefixed, so one caller's answer
//!   is never served to another (see [`DecisionCache`]).

use std::{collections::BTreeMap, time::Duration};

use aws_lambda_events::event::apigw::ApiGatewayCustomAuthorizerRequest;
use bytes::Bytes;
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use super::Refusal;
pub use super::decision_cache::DecisionCache;
use crate::{
    api::{AuthorizerType, FunctionAuthorizer, PayloadFormat},
    gateway::{
        event::{EventInput, LOCAL_ACCOUNT_ID, build_v1, build_v2},
        invoke::LambdaOutcome,
    },
};

/// The region in ARNs kfaas builds: there is no AWS region behind it.
pub const LOCAL_REGION: &str = "local";

/// Why an authorizer step failed (for logs; callers answer with [`Self::refusal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizerError {
    #[error("identity source {0:?} is not supported")]
    BadIdentitySource(String),
    #[error("identity source {0} is missing or empty")]
    MissingIdentity(String),
    #[error("the authorizer's answer is not valid: {0}")]
    Malformed(String),
    #[error("the authorizer event could not be built: {0}")]
    Event(String),
    #[error("the authorizer failed: {0}")]
    Failed(String),
    #[error("the authorizer answered Unauthorized")]
    Unauthorized,
}

impl AuthorizerError {
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::MissingIdentity(_) | Self::Unauthorized => Refusal::Unauthorized,
            _ => Refusal::AuthorizerFailed,
        }
    }

    /// What a failed authorizer invocation means: an error whose message is exactly
    /// `Unauthorized` is API Gateway's signal for 401; anything else is a failure (500).
    pub fn from_function_error(message: &str) -> Self {
        if message == "Unauthorized" {
            Self::Unauthorized
        } else {
            Self::Failed(message.to_owned())
        }
    }
}

/// Where one identity value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// A request header (name in lower case).
    Header(String),
    /// A query-string parameter.
    Query(String),
    StageVariable(String),
    /// A `$context` variable, e.g. `sourceIp`.
    Context(String),
}

impl IdentitySource {
    /// Parses `$request.header.X`, `$request.querystring.x`, `$stageVariables.x`, `$context.x`
    /// (and the REST spellings `method.request.header.X`, ...).
    pub fn parse(text: &str) -> Result<Self, AuthorizerError> {
        let t = text.trim();
        let t = t.strip_prefix('$').unwrap_or(t);
        let t = t.strip_prefix("method.").unwrap_or(t);
        let bad = || AuthorizerError::BadIdentitySource(text.to_owned());
        let named = |rest: &str| (!rest.is_empty()).then(|| rest.to_owned()).ok_or_else(bad);
        if let Some(rest) = t.strip_prefix("request.header.") {
            Ok(Self::Header(named(rest)?.to_ascii_lowercase()))
        } else if let Some(rest) = t.strip_prefix("request.querystring.") {
            Ok(Self::Query(named(rest)?))
        } else if let Some(rest) = t.strip_prefix("stageVariables.") {
            Ok(Self::StageVariable(named(rest)?))
        } else if let Some(rest) = t.strip_prefix("context.") {
            Ok(Self::Context(named(rest)?))
        } else {
            Err(bad())
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Header(n) => format!("$request.header.{n}"),
            Self::Query(n) => format!("$request.querystring.{n}"),
            Self::StageVariable(n) => format!("$stageVariables.{n}"),
            Self::Context(n) => format!("$context.{n}"),
        }
    }
}

/// What identity sources are read from.
#[derive(Debug, Clone, Copy)]
pub struct IdentityInputs<'a> {
    pub headers: &'a HeaderMap,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    pub stage_variables: &'a BTreeMap<String, String>,
    /// `$context` variables the gateway offers (e.g. `("sourceIp", "1.2.3.4")`).
    pub context: &'a [(&'a str, &'a str)],
}

/// The value of one identity source; repeated headers or parameters are comma-joined, as HTTP
/// APIs do.
fn identity_value(source: &IdentitySource, inputs: &IdentityInputs<'_>) -> Option<String> {
    let value = match source {
        IdentitySource::Header(name) => {
            let values: Vec<&str> = inputs
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            values.join(",")
        }
        IdentitySource::Query(name) => {
            let values: Vec<String> = inputs
                .query
                .unwrap_or("")
                .split('&')
                .filter_map(|p| {
                    let (n, v) = p.split_once('=').unwrap_or((p, ""));
                    let decode = |s: &str| {
                        percent_decode_str(&s.replace('+', " "))
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    (decode(n) == *name).then(|| decode(v))
                })
                .collect();
            values.join(",")
        }
        IdentitySource::StageVariable(name) => inputs.stage_variables.get(name)?.clone(),
        IdentitySource::Context(name) => inputs
            .context
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| (*v).to_owned())?,
    };
    (!value.is_empty()).then_some(value)
}

/// A route's Lambda authorizer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `namespace/function`: with the format, what decisions are cached under.
    pub function: String,
    pub kind: AuthorizerType,
    pub identity_sources: Vec<IdentitySource>,
    /// 0 = no cache.
    pub ttl: Duration,
    pub payload_format: PayloadFormat,
    pub simple_responses: bool,
}

impl AuthorizerConfig {
    pub fn from_spec(spec: &FunctionAuthorizer, namespace: &str) -> Result<Self, AuthorizerError> {
        let identity_sources = spec
            .identity_sources
            .iter()
            .map(|s| IdentitySource::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if spec.kind == AuthorizerType::Token
            && !matches!(identity_sources.as_slice(), [IdentitySource::Header(_)])
        {
            return Err(AuthorizerError::BadIdentitySource(
                "a TOKEN authorizer takes exactly one header".into(),
            ));
        }
        Ok(Self {
            function: format!("{namespace}/{}", spec.function),
            kind: spec.kind,
            identity_sources,
            ttl: Duration::from_secs(u64::try_from(spec.result_ttl_seconds).unwrap_or(0)),
            payload_format: spec.payload_format,
            simple_responses: spec.simple_responses && spec.payload_format == PayloadFormat::V2,
        })
    }

    /// Every identity value, in order, or 401 when one is missing or empty.
    pub fn identity(&self, inputs: &IdentityInputs<'_>) -> Result<Vec<String>, AuthorizerError> {
        self.identity_sources
            .iter()
            .map(|s| {
                identity_value(s, inputs)
                    .ok_or_else(|| AuthorizerError::MissingIdentity(s.describe()))
            })
            .collect()
    }
}

/// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path}`: the ARN policies are
/// evaluated against (`methodArn`, or `routeArn` in 2.0). `path` is the request path inside the
/// stage.
pub fn method_arn(api_id: &str, stage: &str, method: &str, path: &str) -> String {
    format!(
        "arn:aws:execute-api:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{api_id}/{stage}/{method}/{}",
        path.trim_start_matches('/')
    )
}

/// Builds the event sent to the authorizer function.
pub fn build_event(
    config: &AuthorizerConfig,
    input: &EventInput<'_>,
    identity: &[String],
) -> Result<Bytes, AuthorizerError> {
    let arn = method_arn(input.api_id, input.stage, input.method.as_str(), input.path);
    let event_error = |e: &dyn std::fmt::Display| AuthorizerError::Event(e.to_string());
    let value = match (config.kind, config.payload_format) {
        (AuthorizerType::Token, _) => {
            let mut request = ApiGatewayCustomAuthorizerRequest::default();
            request.type_ = Some("TOKEN".into());
            request.authorization_token = identity.first().cloned();
            request.method_arn = Some(arn);
            serde_json::to_value(&request).map_err(|e| event_error(&e))?
        }
        (AuthorizerType::Request, PayloadFormat::V1) => {
            let bytes = build_v1(input).map_err(|e| event_error(&e))?;
            let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| event_error(&e))?;
            if let Some(m) = v.as_object_mut() {
                m.remove("body");
                m.remove("isBase64Encoded");
                m.insert("version".into(), "1.0".into());
                m.insert("type".into(), "REQUEST".into());
                m.insert("methodArn".into(), arn.into());
                let joined = identity.join(",");
                m.insert("identitySource".into(), joined.clone().into());
                m.insert("authorizationToken".into(), joined.into());
            }
            v
        }
        (AuthorizerType::Request, PayloadFormat::V2) => {
            let bytes = build_v2(input).map_err(|e| event_error(&e))?;
            let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| event_error(&e))?;
            if let Some(m) = v.as_object_mut() {
                m.remove("body");
                m.remove("isBase64Encoded");
                m.insert("type".into(), "REQUEST".into());
                m.insert("routeArn".into(), arn.into());
                m.insert("identitySource".into(), Value::from(identity.to_vec()));
            }
            v
        }
    };
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| event_error(&e))
}

/// One IAM policy statement, reduced to what decides an `execute-api:Invoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// What the authorizer answered, as cached.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthorizerResponse {
    /// An IAM policy document (payload 1.0, or 2.0 without simple responses).
    Policy {
        principal_id: Option<String>,
        statements: Vec<Statement>,
        context: Map<String, Value>,
    },
    /// `{"isAuthorized": ..., "context": ...}` (2.0 with simple responses).
    Simple {
        authorized: bool,
        context: Map<String, Value>,
    },
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        principal_id: Option<String>,
        context: Map<String, Value>,
    },
    Deny,
}

fn string_or_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, AuthorizerError> {
    match v {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| AuthorizerError::Malformed(format!("{what} holds a non-string")))
            })
            .collect(),
        _ => Err(AuthorizerError::Malformed(format!("{what} is missing"))),
    }
}

/// Key lookup that accepts `Effect` and `effect` alike (authorizers in the wild write both).
fn field<'v>(m: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn context_of(
    m: &Map<String, Value>,
    scalars_only: bool,
) -> Result<Map<String, Value>, AuthorizerError> {
    match m.get("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(c)) => {
            if scalars_only && c.values().any(|v| v.is_object() || v.is_array()) {
                return Err(AuthorizerError::Malformed(
                    "context values must be strings, numbers or booleans".into(),
                ));
            }
            Ok(c.clone())
        }
        Some(_) => Err(AuthorizerError::Malformed(
            "context is not an object".into(),
        )),
    }
}

/// Reads the authorizer function's answer.
pub fn parse_response(
    config: &AuthorizerConfig,
    body: &[u8],
) -> Result<AuthorizerResponse, AuthorizerError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| AuthorizerError::Malformed(e.to_string()))?;
    let m = v
        .as_object()
        .ok_or_else(|| AuthorizerError::Malformed("the answer is not an object".into()))?;
    if config.simple_responses {
        let authorized = m
            .get("isAuthorized")
            .and_then(Value::as_bool)
            .ok_or_else(|| AuthorizerError::Malformed("isAuthorized is not a boolean".into()))?;
        return Ok(AuthorizerResponse::Simple {
            authorized,
            context: context_of(m, false)?,
        });
    }
    let document = m
        .get("policyDocument")
        .and_then(Value::as_object)
        .ok_or_else(|| AuthorizerError::Malformed("policyDocument is missing".into()))?;
    let statements = match field(document, "Statement") {
        Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
        Some(single @ Value::Object(_)) => vec![single],
        _ => return Err(AuthorizerError::Malformed("Statement is missing".into())),
    };
    let statements = statements
        .into_iter()
        .map(|s| {
            let s = s
                .as_object()
                .ok_or_else(|| AuthorizerError::Malformed("a statement is not an object".into()))?;
            let effect = field(s, "Effect").and_then(Value::as_str).unwrap_or("");
            let allow = if effect.eq_ignore_ascii_case("allow") {
                true
            } else if effect.eq_ignore_ascii_case("deny") {
                false
            } else {
                return Err(AuthorizerError::Malformed(format!("Effect {effect:?}")));
            };
            Ok(Statement {
                allow,
                actions: string_or_list(field(s, "Action"), "Action")?,
                resources: string_or_list(field(s, "Resource"), "Resource")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let principal_id = match m.get("principalId") {
        Some(Value::String(p)) => Some(p.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(AuthorizerResponse::Policy {
        principal_id,
        statements,
        context: context_of(m, true)?,
    })
}

/// Reads the outcome of invoking the authorizer function: its answer, or, when it failed, the
/// error its `errorMessage` stands for (`Unauthorized` is 401, anything else 500).
pub fn read_outcome(
    config: &AuthorizerConfig,
    outcome: &LambdaOutcome,
) -> Result<AuthorizerResponse, AuthorizerError> {
    match outcome {
        LambdaOutcome::Result(body) => parse_response(config, body),
        LambdaOutcome::Failed { kind, body } => {
            let message = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("errorMessage")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| kind.clone());
            Err(AuthorizerError::from_function_error(&message))
        }
    }
}

/// IAM-style wildcard match: `*` is any run of characters, `?` any one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn action_matches(action: &str) -> bool {
    let a = action.to_ascii_lowercase();
    wildcard_match(&a, "execute-api:invoke")
}

impl Statement {
    fn applies_to(&self, arn: &str) -> bool {
        self.actions.iter().any(|a| action_matches(a))
            && self.resources.iter().any(|r| wildcard_match(r, arn))
    }
}

impl AuthorizerResponse {
    /// The decision for a request with this method ARN: an explicit deny wins, then any allow.
    pub fn decide(&self, arn: &str) -> Decision {
        match self {
            Self::Simple {
                authorized: true,
                context,
            } => Decision::Allow {
                principal_id: None,
                context: context.clone(),
            },
            Self::Simple { .. } => Decision::Deny,
            Self::Policy {
                principal_id,
                statements,
                context,
            } => {
                let applying = statements.iter().filter(|s| s.applies_to(arn));
                let (mut allowed, mut denied) = (false, false);
                for s in applying {
                    if s.allow {
                        allowed = true;
                    } else {
                        denied = true;
                    }
                }
                if allowed && !denied {
                    Decision::Allow {
                        principal_id: principal_id.clone(),
                        context: context.clone(),
                    }
                } else {
                    Decision::Deny
                }
            }
        }
    }
}

impl Decision {
    /// The request's fate: pass, or 403.
    pub fn check(&self) -> Result<(), Refusal> {
        match self {
            Self::Allow { .. } => Ok(()),
            Self::Deny => Err(Refusal::AccessDenied),
        }
    }

    /// `requestContext.authorizer` of the integration's event: 1.0 has the context's keys and
    /// `principalId` at the top; 2.0 has them under `lambda`.
    pub fn event_authorizer(&self, route_payload: PayloadFormat) -> Option<Value> {
        let Self::Allow {
            principal_id,
            context,
        } = self
        else {
            return None;
        };
        Some(match route_payload {
            PayloadFormat::V1 => {
                let mut m = context.clone();
                if let Some(p) = principal_id {
                    m.insert("principalId".into(), p.clone().into());
                }
                Value::Object(m)
            }
            PayloadFormat::V2 => serde_json::json!({ "lambda": context }),
        })
    }
}

#[cfg(test)]
#[path = "authorizer_tests.rs"]
mod tests;
