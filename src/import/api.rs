//! `AWS::Serverless::Api` and `AWS::Serverless::HttpApi` (explicit, or the implicit
//! `ServerlessRestApi`/`ServerlessHttpApi` that events create) → their settings for routes, a
//! `Stage`, and usage plans.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::{Ctx, cors, names, template::get};
use crate::api::{
    AuthType, AuthorizerType, Canary, Cors, FunctionAuthorizer, JwtAuthorizer, PayloadFormat,
    RouteAuth, Stage, StageSpec, Throttle,
};

/// REST API (payload 1.0) or HTTP API (payload 2.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKind {
    Rest,
    Http,
}

impl ApiKind {
    pub fn implicit_id(self) -> &'static str {
        match self {
            Self::Rest => "ServerlessRestApi",
            Self::Http => "ServerlessHttpApi",
        }
    }
    fn globals_key(self) -> &'static str {
        match self {
            Self::Rest => "Api",
            Self::Http => "HttpApi",
        }
    }
}

/// One API of the template, with Globals merged in.
#[derive(Clone, Debug)]
pub struct ApiDef {
    /// Logical ID (`ServerlessRestApi` for the implicit one).
    pub id: String,
    pub kind: ApiKind,
    /// The Routes' and Stage's `api`.
    pub name: String,
    pub props: Value,
    /// The stage as AWS names it (`Prod`, `$default`, ...).
    pub stage_name: String,
}

/// What routes of an API inherit from it.
#[derive(Clone, Debug, Default)]
pub struct ApiSettings {
    pub cors: Option<Cors>,
    pub api_key_required: bool,
    pub default_authorizer: Option<String>,
    /// Each named authorizer as route auth, or why it could not be converted.
    pub authorizers: BTreeMap<String, Result<RouteAuth, String>>,
}

/// Builds an API from its resource (or from Globals alone for an implicit API).
pub fn define(ctx: &mut Ctx, id: &str, kind: ApiKind, props: Option<&Value>) -> ApiDef {
    let global = get(ctx.globals, kind.globals_key())
        .cloned()
        .unwrap_or(Value::Null);
    let props = match props {
        Some(own) => super::template::merge_globals(&global, own),
        None => global,
    };
    let stage_name = match get(&props, "StageName") {
        Some(v) => match ctx.resolver.string(v) {
            Ok(s) => s,
            Err(e) => {
                let fallback = default_stage(kind);
                ctx.warn(id, "StageName", format!("{e}: using {fallback}"));
                fallback.to_owned()
            }
        },
        None => default_stage(kind).to_owned(),
    };
    ApiDef {
        id: id.to_owned(),
        kind,
        name: names::kebab(id),
        props,
        stage_name,
    }
}

/// SAM's stage names when none is given: `Prod` for a REST API, `$default` for an HTTP API.
fn default_stage(kind: ApiKind) -> &'static str {
    match kind {
        ApiKind::Http => "$default",
        ApiKind::Rest => "Prod",
    }
}

/// Reads what routes inherit: CORS, the API key default and the authorizers.
pub fn settings(ctx: &mut Ctx, api: &ApiDef, functions: &BTreeMap<String, String>) -> ApiSettings {
    let id = api.id.as_str();
    let mut settings = ApiSettings {
        cors: match api.kind {
            ApiKind::Rest => get(&api.props, "Cors").and_then(|c| cors::rest(ctx, id, c)),
            ApiKind::Http => {
                get(&api.props, "CorsConfiguration").and_then(|c| cors::http(ctx, id, c))
            }
        },
        ..ApiSettings::default()
    };
    for (property, why) in [
        (
            "DefinitionBody",
            "routes come from the functions' events only; an OpenAPI definition is not converted",
        ),
        (
            "DefinitionUri",
            "routes come from the functions' events only; an OpenAPI definition is not converted",
        ),
        (
            "Domain",
            "set spec.host (and basePath) on the Stage by hand",
        ),
        (
            "GatewayResponses",
            "kfaas answers with API Gateway's default responses",
        ),
        (
            "BinaryMediaTypes",
            "kfaas sends bodies that are not text base64-encoded anyway",
        ),
        (
            "CacheClusterEnabled",
            "set spec.cache on the Routes to cache responses",
        ),
    ] {
        if get(&api.props, property).is_some() {
            ctx.warn(id, property, format!("ignored: {why}"));
        }
    }
    let Some(auth) = get(&api.props, "Auth") else {
        return settings;
    };
    if let Some(v) = get(auth, "ApiKeyRequired") {
        match ctx.resolver.boolean(v) {
            Ok(b) => settings.api_key_required = b,
            Err(e) => ctx.warn(id, "Auth.ApiKeyRequired", format!("ignored: {e}")),
        }
    }
    if let Some(v) = get(auth, "DefaultAuthorizer") {
        match ctx.resolver.string(v) {
            Ok(name) => settings.default_authorizer = Some(name),
            Err(e) => ctx.warn(id, "Auth.DefaultAuthorizer", format!("ignored: {e}")),
        }
    }
    for property in ["ResourcePolicy", "EnableIamAuthorizer", "InvokeRole"] {
        if get(auth, property).is_some() {
            ctx.warn(
                id,
                &format!("Auth.{property}"),
                "ignored: IAM has no meaning off AWS",
            );
        }
    }
    if let Some(Value::Mapping(authorizers)) = get(auth, "Authorizers") {
        for (name, props) in authorizers {
            let Some(name) = name.as_str() else { continue };
            let converted = authorizer(ctx, api, props, functions);
            if let Err(e) = &converted {
                ctx.warn(
                    id,
                    &format!("Auth.Authorizers.{name}"),
                    format!("not converted: {e}; routes that use it are not converted"),
                );
            }
            settings.authorizers.insert(name.to_owned(), converted);
        }
    }
    settings
}

fn authorizer(
    ctx: &Ctx,
    api: &ApiDef,
    props: &Value,
    functions: &BTreeMap<String, String>,
) -> Result<RouteAuth, String> {
    if let Some(jwt) = get(props, "JwtConfiguration") {
        let issuer = get(jwt, "issuer")
            .or_else(|| get(jwt, "Issuer"))
            .ok_or("JwtConfiguration has no issuer")?;
        let issuer = ctx.resolver.string(issuer)?;
        let audiences = get(jwt, "audience")
            .or_else(|| get(jwt, "Audience"))
            .ok_or("JwtConfiguration has no audience")?;
        let audiences = strings(ctx, audiences)?;
        if audiences.is_empty() {
            return Err("JwtConfiguration has an empty audience".into());
        }
        let scopes = match get(props, "AuthorizationScopes") {
            Some(v) => strings(ctx, v)?,
            None => Vec::new(),
        };
        let identity_source = get(props, "IdentitySource")
            .map(|v| ctx.resolver.string(v))
            .transpose()?;
        // OIDC issuers (Cognito, Auth0, Okta, ...) publish their keys there.
        let jwks_uri = format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'));
        return Ok(RouteAuth {
            kind: AuthType::Jwt,
            jwt: Some(JwtAuthorizer {
                issuer,
                audiences,
                jwks_uri: Some(jwks_uri),
                scopes,
                identity_source,
                ..JwtAuthorizer::default()
            }),
            ..RouteAuth::default()
        });
    }
    if get(props, "UserPoolArn").is_some() {
        return Err("Cognito user pool authorizers are not converted (use an HttpApi JWT authorizer with the pool's issuer, or a Route auth.jwt by hand)".into());
    }
    let arn = get(props, "FunctionArn").ok_or("neither FunctionArn nor JwtConfiguration")?;
    let function = authorizer_function(arn, functions)?;
    let identity = get(props, "Identity");
    let mut sources = Vec::new();
    let add = |sources: &mut Vec<String>, key: &str, prefix: &str| -> Result<(), String> {
        if let Some(v) = identity.and_then(|i| get(i, key)) {
            for name in strings(ctx, v)? {
                sources.push(format!("{prefix}{name}"));
            }
        }
        Ok(())
    };
    let (kind, payload_format, simple_responses) = match api.kind {
        ApiKind::Rest => {
            let kind = match get(props, "FunctionPayloadType")
                .map(|v| ctx.resolver.string(v))
                .transpose()?
                .as_deref()
            {
                None | Some("TOKEN") => AuthorizerType::Token,
                Some("REQUEST") => AuthorizerType::Request,
                Some(other) => {
                    return Err(format!(
                        "FunctionPayloadType {other} is not TOKEN or REQUEST"
                    ));
                }
            };
            if kind == AuthorizerType::Token {
                let header = identity
                    .and_then(|i| get(i, "Header"))
                    .map(|h| ctx.resolver.string(h))
                    .transpose()?
                    .unwrap_or_else(|| "Authorization".to_owned());
                sources.push(format!("$request.header.{header}"));
            }
            (kind, PayloadFormat::V1, false)
        }
        ApiKind::Http => {
            let format = match get(props, "AuthorizerPayloadFormatVersion")
                .map(|v| ctx.resolver.string(v))
                .transpose()?
                .as_deref()
            {
                Some("1.0") => PayloadFormat::V1,
                _ => PayloadFormat::V2,
            };
            let simple = get(props, "EnableSimpleResponses")
                .map(|v| ctx.resolver.boolean(v))
                .transpose()?
                .unwrap_or(false);
            (AuthorizerType::Request, format, simple)
        }
    };
    if kind == AuthorizerType::Request {
        add(&mut sources, "Headers", "$request.header.")?;
        add(&mut sources, "QueryStrings", "$request.querystring.")?;
        add(&mut sources, "StageVariables", "$stageVariables.")?;
    }
    // API Gateway caches decisions only when there are identity sources to key them by.
    let ttl = match identity.and_then(|i| get(i, "ReauthorizeEvery")) {
        Some(v) => ctx.resolver.integer(v)?.clamp(0, 3600),
        None if sources.is_empty() => 0,
        None => 300,
    };
    Ok(RouteAuth {
        kind: AuthType::Function,
        authorizer: Some(FunctionAuthorizer {
            function,
            kind,
            identity_sources: sources,
            result_ttl_seconds: i32::try_from(ttl).unwrap_or(300),
            payload_format,
            simple_responses,
        }),
        ..RouteAuth::default()
    })
}

/// `!GetAtt Fn.Arn` (or `${Fn.Arn}` in a `!Sub`) → the kfaas name of function `Fn`.
fn authorizer_function(
    arn: &Value,
    functions: &BTreeMap<String, String>,
) -> Result<String, String> {
    let target = match get(arn, "Fn::GetAtt") {
        Some(Value::Sequence(parts)) => parts.first().and_then(Value::as_str).map(str::to_owned),
        _ => get(arn, "Fn::Sub").and_then(Value::as_str).and_then(|s| {
            s.strip_prefix("${")?
                .strip_suffix(".Arn}")
                .map(str::to_owned)
        }),
    };
    let target =
        target.ok_or("FunctionArn is not !GetAtt <function>.Arn of a function in this template")?;
    functions.get(&target).cloned().ok_or_else(|| {
        format!("FunctionArn names {target}, which is not a converted function of this template")
    })
}

/// A list of strings, or one string.
pub fn strings(ctx: &Ctx, value: &Value) -> Result<Vec<String>, String> {
    match ctx.resolver.resolve(value)? {
        Value::Sequence(items) => items.iter().map(super::intrinsic::scalar_string).collect(),
        other => Ok(vec![super::intrinsic::scalar_string(&other)?]),
    }
}

/// The Stage of an API. A REST API (and an HTTP API stage other than `$default`) is served under
/// `/<StageName>`, as its execute-api URL is, so clients keep their paths.
pub fn stage(ctx: &mut Ctx, api: &ApiDef) -> Stage {
    let id = api.id.as_str();
    let is_default = api.kind == ApiKind::Http && api.stage_name == "$default";
    let label = if is_default {
        "default"
    } else {
        api.stage_name.as_str()
    };
    let mut spec = StageSpec {
        api: api.name.clone(),
        stage_name: (!is_default).then(|| api.stage_name.clone()),
        base_path: (!is_default).then(|| format!("/{}", api.stage_name)),
        ..StageSpec::default()
    };
    let variables_key = match api.kind {
        ApiKind::Rest => "Variables",
        ApiKind::Http => "StageVariables",
    };
    spec.variables = variables(ctx, id, variables_key, get(&api.props, variables_key));
    if let Some(canary) = get(&api.props, "CanarySetting") {
        match api.kind {
            ApiKind::Rest => {
                let weight = get(canary, "PercentTraffic").map(|v| ctx.resolver.number(v));
                match weight {
                    Some(Ok(weight)) => {
                        let variables = variables(
                            ctx,
                            id,
                            "CanarySetting.StageVariableOverrides",
                            get(canary, "StageVariableOverrides"),
                        );
                        spec.canary = Some(Canary { weight, variables });
                    }
                    Some(Err(e)) => ctx.warn(
                        id,
                        "CanarySetting.PercentTraffic",
                        format!("not converted: {e}"),
                    ),
                    None => ctx.warn(id, "CanarySetting", "not converted: no PercentTraffic"),
                }
            }
            ApiKind::Http => ctx.warn(
                id,
                "CanarySetting",
                "not converted: HTTP APIs have no canary",
            ),
        }
    }
    spec.throttle = match api.kind {
        ApiKind::Rest => rest_throttle(ctx, id, get(&api.props, "MethodSettings")),
        ApiKind::Http => {
            if get(&api.props, "RouteSettings").is_some() {
                ctx.warn(id, "RouteSettings", "ignored: kfaas throttles per stage (DefaultRouteSettings) and per API key, not per route");
            }
            get(&api.props, "DefaultRouteSettings").and_then(|s| {
                throttle(
                    ctx,
                    id,
                    "DefaultRouteSettings",
                    s,
                    "ThrottlingRateLimit",
                    "ThrottlingBurstLimit",
                )
            })
        }
    };
    Stage::new(&names::join(&[&api.name, label]), spec)
}

fn variables(
    ctx: &mut Ctx,
    id: &str,
    property: &str,
    value: Option<&Value>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(map)) = value else {
        return out;
    };
    for (key, value) in map {
        let Some(key) = key.as_str() else { continue };
        match ctx.resolver.string(value) {
            Ok(v) => {
                out.insert(key.to_owned(), v);
            }
            Err(e) => ctx.warn(
                id,
                &format!("{property}.{key}"),
                format!("not converted: {e}"),
            ),
        }
    }
    out
}

/// Stage-wide throttle from the `/*` `*` method setting; per-method settings have no kfaas form.
fn rest_throttle(ctx: &mut Ctx, id: &str, settings: Option<&Value>) -> Option<Throttle> {
    let items = settings?.as_sequence()?;
    let mut out = None;
    for (i, item) in items.iter().enumerate() {
        let path = get(item, "ResourcePath").and_then(|v| ctx.resolver.string(v).ok());
        let method = get(item, "HttpMethod").and_then(|v| ctx.resolver.string(v).ok());
        let property = format!("MethodSettings[{i}]");
        if path.as_deref().unwrap_or("/*") == "/*" && method.as_deref().unwrap_or("*") == "*" {
            out = throttle(
                ctx,
                id,
                &property,
                item,
                "ThrottlingRateLimit",
                "ThrottlingBurstLimit",
            );
        } else if get(item, "ThrottlingRateLimit").is_some()
            || get(item, "ThrottlingBurstLimit").is_some()
        {
            ctx.warn(id, &property, "ignored: kfaas throttles whole stages (ResourcePath /*, HttpMethod *), not single methods");
        }
    }
    out
}

/// A throttle from rate and burst properties; a missing one is derived from the other, since
/// kfaas needs both.
pub fn throttle(
    ctx: &mut Ctx,
    id: &str,
    property: &str,
    value: &Value,
    rate_key: &str,
    burst_key: &str,
) -> Option<Throttle> {
    let mut read = |key: &str| -> Option<f64> {
        let v = get(value, key)?;
        match ctx.resolver.number(v) {
            Ok(n) => Some(n),
            Err(e) => {
                ctx.warn(id, &format!("{property}.{key}"), format!("ignored: {e}"));
                None
            }
        }
    };
    let rate = read(rate_key);
    let burst = read(burst_key);
    let (rate, burst) = match (rate, burst) {
        (None, None) => return None,
        (Some(r), Some(b)) => (r, b),
        (Some(r), None) => (r, r.ceil().max(1.0)),
        (None, Some(b)) => (b, b),
    };
    if rate <= 0.0 || burst < 1.0 {
        ctx.warn(
            id,
            property,
            "ignored: a throttle of 0 would refuse every request",
        );
        return None;
    }
    Some(Throttle {
        rate_limit: rate,
        burst_limit: burst as i64,
    })
}
