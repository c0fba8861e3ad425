//! `Route`: a method and path template of an API, mapped to a function.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One route of an API: method(s) + path template → function, with its auth, CORS and cache.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "kfaas.dev",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    shortname = "rt",
    category = "kfaas",
    status = "RouteStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A route of an API: method(s) and a path template mapped to a function, as an API Gateway route.",
    printcolumn(name = "API", type_ = "string", json_path = ".spec.api"),
    printcolumn(name = "Methods", type_ = "string", json_path = ".spec.methods"),
    printcolumn(name = "Path", type_ = "string", json_path = ".spec.path"),
    printcolumn(name = "Function", type_ = "string", json_path = ".spec.function"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.timeoutMillis >= 50 && self.timeoutMillis <= 30000").message("timeoutMillis must be within 50..30000 (API Gateway's integration timeout range)"))]
pub struct RouteSpec {
    /// Name of the API this route belongs to; Stages of the same API serve it.
    #[schemars(length(min = 1, max = 128))]
    pub api: String,

    /// HTTP methods this route answers: GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, or ANY.
    #[serde(default = "default_methods")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(m, m in ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'ANY'])").message("methods must each be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or ANY"))]
    pub methods: Vec<String>,

    /// Path template: literal segments, `{name}` parameters and a greedy `{name+}` as the last
    /// segment, for example `/orders/{id}` or `/files/{proxy+}`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must start with '/'"))]
    #[x_kube(validation = Rule::new("self == '/' || self.matches('^(/([A-Za-z0-9._~!$&()*,;=:@%-]+|[{][A-Za-z_][A-Za-z0-9_]*[+]?[}]))+$')").message("path must be a template of segments that are each literal text, {name} or {name+}, for example /orders/{id}"))]
    #[x_kube(validation = Rule::new("!self.matches('[+][}].')").message("a greedy parameter {name+} may only be the last segment of the path"))]
    pub path: String,

    /// Function that serves the route, by name in the same namespace. May use stage variables:
    /// `${stageVariables.backend}`.
    #[schemars(length(min = 1, max = 253))]
    pub function: String,

    /// Who may call the route.
    #[serde(default)]
    pub auth: RouteAuth,

    /// Cross-origin settings; the gateway answers preflight requests from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,

    /// Response caching for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<RouteCache>,

    /// Integration timeout in milliseconds (50..30000, default 29000).
    #[serde(default = "default_timeout_millis")]
    pub timeout_millis: i32,

    /// Shape of the event a `lambda` function receives: `1.0` (REST API) or `2.0` (HTTP API).
    #[serde(default)]
    pub payload_format: PayloadFormat,
}

/// API Gateway's proxy event versions.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum PayloadFormat {
    /// REST API proxy event (`httpMethod`, `multiValueHeaders`, ...).
    #[serde(rename = "1.0")]
    V1,
    /// HTTP API event (`version: "2.0"`, `routeKey`, `rawPath`, `cookies`, ...).
    #[default]
    #[serde(rename = "2.0")]
    V2,
}

/// Authorization of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'jwt' || has(self.jwt)").message("auth.type jwt needs auth.jwt (issuer and audiences)"))]
#[x_kube(validation = Rule::new("self.type == 'jwt' || !has(self.jwt)").message("auth.jwt is set but auth.type is not jwt"))]
#[x_kube(validation = Rule::new("self.type != 'function' || has(self.authorizer)").message("auth.type function needs auth.authorizer (the authorizer function)"))]
#[x_kube(validation = Rule::new("self.type == 'function' || !has(self.authorizer)").message("auth.authorizer is set but auth.type is not function"))]
pub struct RouteAuth {
    /// `none`, `jwt` (a JWT authorizer) or `function` (a Lambda authorizer).
    #[serde(default, rename = "type")]
    pub kind: AuthType,
    /// Callers must send a valid API key in `x-api-key` (keys come from UsagePlans).
    #[serde(default)]
    pub api_key_required: bool,
    /// JWT authorizer settings, for `type: jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuthorizer>,
    /// Lambda authorizer settings, for `type: function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<FunctionAuthorizer>,
}

/// Kinds of authorizer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AuthType {
    /// Anyone may call (an API key may still be required).
    #[default]
    None,
    /// A JWT bearer token checked against an issuer's keys.
    Jwt,
    /// A Lambda authorizer function decides.
    Function,
}

/// A JWT authorizer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwksUri) != has(self.jwksSecret)").message("auth.jwt needs exactly one of jwksUri or jwksSecret"))]
pub struct JwtAuthorizer {
    /// Expected `iss` claim.
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: String,
    /// Accepted `aud` values; the token must carry one of them.
    #[schemars(length(min = 1, max = 32))]
    pub audiences: Vec<String>,
    /// Where the issuer publishes its keys (JWKS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub jwks_uri: Option<String>,
    /// A Secret holding the JWKS document under key `jwks.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub jwks_secret: Option<String>,
    /// Scopes the token must carry (any one of them) for this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Where the token is read from; default `$request.header.Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_source: Option<String>,
}

/// A Lambda authorizer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.resultTtlSeconds >= 0 && self.resultTtlSeconds <= 3600").message("auth.authorizer.resultTtlSeconds must be within 0..3600"))]
#[x_kube(validation = Rule::new("self.type != 'TOKEN' || size(self.identitySources) == 1").message("a TOKEN authorizer takes exactly one identity source (a header)"))]
pub struct FunctionAuthorizer {
    /// The authorizer function, by name in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub function: String,
    /// `REQUEST` (the authorizer gets the request's parts) or `TOKEN` (one header's value).
    #[serde(default, rename = "type")]
    pub kind: AuthorizerType,
    /// Where the identity comes from, for example `$request.header.Authorization`,
    /// `$request.querystring.token` or `$stageVariables.key`. A request without them is refused
    /// with 401 without calling the authorizer.
    #[serde(default = "default_identity_sources")]
    #[schemars(length(max = 16))]
    pub identity_sources: Vec<String>,
    /// How long a decision is cached per identity, in seconds (0 = no cache).
    #[serde(default = "default_result_ttl_seconds")]
    pub result_ttl_seconds: i32,
    /// Event format sent to the authorizer: `1.0` (IAM policy response) or `2.0`.
    #[serde(default)]
    pub payload_format: PayloadFormat,
    /// With payload 2.0, the authorizer answers `{"isAuthorized": bool, "context": {...}}`.
    #[serde(default)]
    pub simple_responses: bool,
}

/// Lambda authorizer types.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizerType {
    /// The authorizer receives the request's headers, query, path and stage variables.
    #[default]
    Request,
    /// The authorizer receives one token (a header value).
    Token,
}

/// Cross-origin resource sharing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins (`*` for any).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Allowed methods (`*` for any).
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Allowed request headers (`*` for any).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
    /// Whether credentials (cookies, auth headers) may be sent.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// Response caching of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.ttlSeconds >= 0 && self.ttlSeconds <= 3600").message("cache.ttlSeconds must be within 0..3600"))]
pub struct RouteCache {
    /// How long a response is kept, in seconds (0 turns caching off).
    pub ttl_seconds: i32,
    /// Request headers that are part of the cache key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_headers: Vec<String>,
    /// Query parameters that are part of the cache key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_query: Vec<String>,
    /// Path parameters that are part of the cache key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_path_parameters: Vec<String>,
    /// Also cache answers to methods other than GET.
    #[serde(default)]
    pub all_methods: bool,
    /// Honour a caller's `Cache-Control: max-age=0` (skip the cache for that request).
    #[serde(default)]
    pub allow_client_invalidation: bool,
}

/// What the controller observed of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is False (with a reason) when, for example, the target function does not exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn default_methods() -> Vec<String> {
    vec!["ANY".to_owned()]
}
fn default_timeout_millis() -> i32 {
    29_000
}
fn default_identity_sources() -> Vec<String> {
    vec!["$request.header.Authorization".to_owned()]
}
fn default_result_ttl_seconds() -> i32 {
    300
}
