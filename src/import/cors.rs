//! CORS settings of an API → each Route's `cors`.

use serde_yaml::Value;

use super::{Ctx, template::get};
use crate::api::Cors;

/// REST API CORS values are header values in single quotes: `"'GET,POST'"`.
pub fn rest(ctx: &mut Ctx, id: &str, value: &Value) -> Option<Cors> {
    let unquote = |s: String| s.trim().trim_matches('\'').to_owned();
    let list = |s: String| -> Vec<String> {
        unquote(s)
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let field = |ctx: &mut Ctx, key: &str| -> Option<String> {
        let v = get(value, key)?;
        match ctx.resolver.string(v) {
            Ok(s) => Some(s),
            Err(e) => {
                ctx.warn(id, &format!("Cors.{key}"), format!("ignored: {e}"));
                None
            }
        }
    };
    let mut cors = Cors::default();
    if value.is_mapping() {
        cors.allow_origins = field(ctx, "AllowOrigin").map(list).unwrap_or_default();
        cors.allow_methods = field(ctx, "AllowMethods")
            .map(list)
            .unwrap_or_else(|| vec!["*".into()]);
        cors.allow_headers = field(ctx, "AllowHeaders").map(list).unwrap_or_default();
        cors.max_age_seconds = field(ctx, "MaxAge").and_then(|s| unquote(s).parse().ok());
        cors.allow_credentials = get(value, "AllowCredentials")
            .and_then(|v| ctx.resolver.boolean(v).ok())
            .unwrap_or(false);
    } else {
        match ctx.resolver.string(value) {
            Ok(origin) => {
                cors.allow_origins = list(origin);
                cors.allow_methods = vec!["*".into()];
            }
            Err(e) => {
                ctx.warn(id, "Cors", format!("not converted: {e}"));
                return None;
            }
        }
    }
    if cors.allow_origins.is_empty() {
        ctx.warn(id, "Cors", "not converted: no AllowOrigin");
        return None;
    }
    Some(cors)
}

pub fn http(ctx: &mut Ctx, id: &str, value: &Value) -> Option<Cors> {
    if let Ok(enabled) = ctx.resolver.boolean(value) {
        return enabled.then(|| Cors {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            ..Cors::default()
        });
    }
    let mut list = |key: &str| -> Vec<String> {
        match get(value, key).map(|v| super::api::strings(ctx, v)) {
            Some(Ok(items)) => items,
            Some(Err(e)) => {
                ctx.warn(
                    id,
                    &format!("CorsConfiguration.{key}"),
                    format!("ignored: {e}"),
                );
                Vec::new()
            }
            None => Vec::new(),
        }
    };
    let cors = Cors {
        allow_origins: list("AllowOrigins"),
        allow_methods: list("AllowMethods"),
        allow_headers: list("AllowHeaders"),
        expose_headers: list("ExposeHeaders"),
        max_age_seconds: get(value, "MaxAge")
            .and_then(|v| ctx.resolver.integer(v).ok())
            .and_then(|n| i32::try_from(n).ok()),
        allow_credentials: get(value, "AllowCredentials")
            .and_then(|v| ctx.resolver.boolean(v).ok())
            .unwrap_or(false),
    };
    Some(cors)
}
