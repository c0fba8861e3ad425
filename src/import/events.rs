//! A function's `Api` and `HttpApi` events → `Route`s; other event sources are reported.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::{
    Ctx,
    api::{ApiDef, ApiKind, ApiSettings},
    names,
    template::get,
};
use crate::api::{AuthType, PayloadFormat, Route, RouteAuth, RouteSpec};

const DEFAULT_TIMEOUT_MILLIS: i32 = 29_000;

/// An `Api`/`HttpApi` event, before its API is known to exist.
pub struct ApiEvent {
    pub function_id: String,
    pub function: String,
    pub event: String,
    pub kind: ApiKind,
    pub api_id: String,
    pub props: Value,
}

/// Sorts a function's events into API events and warnings for the rest.
pub fn api_events(
    ctx: &mut Ctx,
    function_id: &str,
    function: &str,
    props: &Value,
) -> Vec<ApiEvent> {
    let mut out = Vec::new();
    let Some(Value::Mapping(events)) = get(props, "Events") else {
        return out;
    };
    for (name, event) in events {
        let Some(name) = name.as_str() else { continue };
        let property = format!("Events.{name}");
        let kind = match get(event, "Type").and_then(Value::as_str) {
            Some("Api") => ApiKind::Rest,
            Some("HttpApi") => ApiKind::Http,
            Some(other) => {
                ctx.warn(function_id, &property, format!("not converted: {other} events (kfaas invokes functions through HTTP routes only; call the function from a job or a queue consumer instead)"));
                continue;
            }
            None => {
                ctx.warn(function_id, &property, "not converted: no Type");
                continue;
            }
        };
        let props = get(event, "Properties").cloned().unwrap_or(Value::Null);
        let api_key = match kind {
            ApiKind::Rest => "RestApiId",
            ApiKind::Http => "ApiId",
        };
        let api_id = match get(&props, api_key) {
            None => kind.implicit_id().to_owned(),
            Some(v) => match get(v, "Ref").and_then(Value::as_str) {
                Some(id) => id.to_owned(),
                None => match ctx.resolver.string(v) {
                    Ok(id) => id,
                    Err(e) => {
                        ctx.warn(
                            function_id,
                            &format!("{property}.Properties.{api_key}"),
                            format!("not converted: {e}"),
                        );
                        continue;
                    }
                },
            },
        };
        out.push(ApiEvent {
            function_id: function_id.to_owned(),
            function: function.to_owned(),
            event: name.to_owned(),
            kind,
            api_id,
            props,
        });
    }
    out
}

/// The Route of an event on its API; `None` (with a warning) when it cannot be converted safely,
/// for example with an authorizer that did not convert: an unprotected route is never emitted.
pub fn route(
    ctx: &mut Ctx,
    event: &ApiEvent,
    api: &ApiDef,
    settings: &ApiSettings,
) -> Option<Route> {
    let id = event.function_id.as_str();
    let property = format!("Events.{}", event.event);
    let props = &event.props;
    let (path, methods) = match (get(props, "Path"), get(props, "Method")) {
        // An HttpApi event without Path and Method is the API's `$default` catch-all route.
        (None, None) if api.kind == ApiKind::Http => {
            ("/{proxy+}".to_owned(), vec!["ANY".to_owned()])
        }
        (Some(path), Some(method)) => {
            let path = match ctx.resolver.string(path) {
                Ok(p) => p,
                Err(e) => {
                    ctx.warn(
                        id,
                        &format!("{property}.Properties.Path"),
                        format!("not converted: {e}"),
                    );
                    return None;
                }
            };
            let method = match ctx.resolver.string(method) {
                Ok(m) => m.to_ascii_uppercase(),
                Err(e) => {
                    ctx.warn(
                        id,
                        &format!("{property}.Properties.Method"),
                        format!("not converted: {e}"),
                    );
                    return None;
                }
            };
            let method = if method == "X-AMAZON-APIGATEWAY-ANY-METHOD" {
                "ANY".to_owned()
            } else {
                method
            };
            (path, vec![method])
        }
        _ => {
            ctx.warn(id, &property, "not converted: needs Path and Method");
            return None;
        }
    };
    let auth = auth(ctx, event, api, settings)?;
    let mut spec = RouteSpec {
        api: api.name.clone(),
        methods,
        path,
        function: event.function.clone(),
        auth,
        cors: settings.cors.clone(),
        timeout_millis: DEFAULT_TIMEOUT_MILLIS,
        payload_format: match api.kind {
            ApiKind::Rest => PayloadFormat::V1,
            ApiKind::Http => PayloadFormat::V2,
        },
        ..RouteSpec::default()
    };
    if api.kind == ApiKind::Http {
        if let Some(v) = get(props, "PayloadFormatVersion") {
            match ctx.resolver.string(v).as_deref() {
                Ok("1.0") => spec.payload_format = PayloadFormat::V1,
                Ok("2.0") => {}
                Ok(other) => ctx.warn(
                    id,
                    &format!("{property}.Properties.PayloadFormatVersion"),
                    format!("{other} is not 1.0 or 2.0: using 2.0"),
                ),
                Err(e) => ctx.warn(
                    id,
                    &format!("{property}.Properties.PayloadFormatVersion"),
                    format!("ignored: {e}"),
                ),
            }
        }
        if let Some(v) = get(props, "TimeoutInMillis") {
            match ctx.resolver.integer(v) {
                Ok(t) => {
                    spec.timeout_millis =
                        i32::try_from(t.clamp(50, 30_000)).unwrap_or(DEFAULT_TIMEOUT_MILLIS)
                }
                Err(e) => ctx.warn(
                    id,
                    &format!("{property}.Properties.TimeoutInMillis"),
                    format!("ignored: {e}"),
                ),
            }
        }
    }
    let name = names::join(&[&event.function_id, &event.event]);
    Some(Route::new(&name, spec))
}

fn auth(
    ctx: &mut Ctx,
    event: &ApiEvent,
    api: &ApiDef,
    settings: &ApiSettings,
) -> Option<RouteAuth> {
    let id = event.function_id.as_str();
    let property = format!("Events.{}.Properties.Auth", event.event);
    let event_auth = get(&event.props, "Auth");
    let resolve = |ctx: &mut Ctx, key: &str| -> Option<Result<String, String>> {
        event_auth
            .and_then(|a| get(a, key))
            .map(|v| ctx.resolver.string(v))
    };
    let name = match resolve(ctx, "Authorizer") {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            ctx.warn(
                id,
                &format!("{property}.Authorizer"),
                format!("not converted: {e}"),
            );
            return None;
        }
        None => settings.default_authorizer.clone(),
    };
    let mut auth = match name.as_deref() {
        None | Some("NONE") => RouteAuth::default(),
        Some("AWS_IAM") => {
            ctx.warn(
                id,
                &format!("{property}.Authorizer"),
                "not converted: AWS_IAM authorization has no meaning off AWS; route left out",
            );
            return None;
        }
        Some(name) => match settings.authorizers.get(name) {
            Some(Ok(auth)) => auth.clone(),
            Some(Err(_)) => {
                ctx.warn(id, &format!("{property}.Authorizer"), format!("not converted: authorizer {name} of {} did not convert; route left out rather than left open", api.id));
                return None;
            }
            None => {
                ctx.warn(
                    id,
                    &format!("{property}.Authorizer"),
                    format!(
                        "not converted: {} has no authorizer named {name}; route left out",
                        api.id
                    ),
                );
                return None;
            }
        },
    };
    if let (AuthType::Jwt, Some(jwt)) = (auth.kind, auth.jwt.as_mut())
        && let Some(scopes) = event_auth.and_then(|a| get(a, "AuthorizationScopes"))
    {
        match super::api::strings(ctx, scopes) {
            Ok(s) => jwt.scopes = s,
            Err(e) => ctx.warn(
                id,
                &format!("{property}.AuthorizationScopes"),
                format!("ignored: {e}"),
            ),
        }
    }
    auth.api_key_required = match event_auth.and_then(|a| get(a, "ApiKeyRequired")) {
        Some(v) => match ctx.resolver.boolean(v) {
            Ok(b) => b,
            Err(e) => {
                ctx.warn(
                    id,
                    &format!("{property}.ApiKeyRequired"),
                    format!("not converted: {e}"),
                );
                return None;
            }
        },
        None => settings.api_key_required,
    };
    if auth.api_key_required && api.kind == ApiKind::Http {
        ctx.warn(
            id,
            &format!("{property}.ApiKeyRequired"),
            "HTTP APIs have no API keys on AWS; kfaas requires one as asked",
        );
    }
    Some(auth)
}

/// Route names must be unique; a second route of the same name gets a number.
pub fn unique_names(routes: &mut [Route]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for route in routes {
        let name = route.metadata.name.clone().unwrap_or_default();
        let count = seen.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            route.metadata.name = Some(names::join(&[&name, &count.to_string()]));
        }
    }
}
