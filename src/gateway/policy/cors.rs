//! CORS as API Gateway HTTP APIs do it
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-cors.html>):
//! - with CORS configured, the gateway answers preflight requests (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) itself, whether or not an OPTIONS route exists;
//! - CORS headers are returned only to requests that carry `Origin`;
//! - the configured headers are added to every answer, the function's and the gateway's own
//!   errors alike, and CORS headers the function returned are dropped;
//! - `allowOrigins` holds exact origins, `*`, or a scheme wildcard such as `https://*`.
//!
//! API Gateway refuses `allowCredentials` together with a `*` origin at configuration time; kfaas
//! accepts it and echoes the caller's origin instead (browsers ignore `*` with credentials), with
//! `Vary: Origin` so shared caches keep answers per origin.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};

use crate::api::Cors;

const CORS_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    Any,
    Exact(String),
    /// `https://*`: any origin starting with the prefix.
    Prefix(String),
}

/// A route's (or stage's) validated CORS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Vec<OriginRule>,
    /// Upper-case methods, or `None` for `*`.
    methods: Option<Vec<String>>,
    /// Header names as configured, or `None` for `*`.
    headers: Option<Vec<String>>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

fn list(values: &[String], upper: bool) -> Option<Vec<String>> {
    if values.iter().any(|v| v.trim() == "*") {
        return None;
    }
    Some(
        values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| {
                if upper {
                    v.to_ascii_uppercase()
                } else {
                    v.to_owned()
                }
            })
            .collect(),
    )
}

fn joined(values: &[String]) -> Option<HeaderValue> {
    (!values.is_empty())
        .then(|| HeaderValue::from_str(&values.join(",")).ok())
        .flatten()
}

impl CorsPolicy {
    pub fn new(cors: &Cors) -> Self {
        let origins = cors
            .allow_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| match o {
                "*" => OriginRule::Any,
                _ => match o.strip_suffix('*') {
                    Some(prefix) => OriginRule::Prefix(prefix.to_ascii_lowercase()),
                    None => OriginRule::Exact(o.trim_end_matches('/').to_ascii_lowercase()),
                },
            })
            .collect();
        let expose: Vec<String> = cors
            .expose_headers
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        Self {
            origins,
            methods: list(&cors.allow_methods, true),
            headers: list(&cors.allow_headers, false),
            expose: joined(&expose),
            max_age: cors
                .max_age_seconds
                .filter(|s| *s >= 0)
                .map(HeaderValue::from),
            credentials: cors.allow_credentials,
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request's `Origin`, if it is allowed.
    fn allowed_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        let mut any = false;
        for rule in &self.origins {
            match rule {
                OriginRule::Any => any = true,
                OriginRule::Exact(o) if *o == text => return Some(origin.clone()),
                OriginRule::Prefix(p) if text.starts_with(p.as_str()) => {
                    return Some(origin.clone());
                }
                _ => {}
            }
        }
        if !any {
            return None;
        }
        Some(if self.credentials {
            origin.clone()
        } else {
            HeaderValue::from_static("*")
        })
    }

    /// Whether this request is a CORS preflight the gateway answers itself.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight: 204 with the configured CORS headers when the origin is
    /// allowed, and without any when it is not (the browser then refuses the real request).
    pub fn preflight(&self, request: &HeaderMap) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let Some(origin) = request.get(header::ORIGIN) else {
            return response;
        };
        let Some(allow_origin) = self.allowed_origin(origin) else {
            return response;
        };
        let out = response.headers_mut();
        self.insert_common(out, allow_origin);
        let methods = match &self.methods {
            Some(m) => joined(m),
            // `*` is not a wildcard for credentialed requests: name the requested method.
            None if self.credentials => request.get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned(),
            None => Some(HeaderValue::from_static("*")),
        };
        if let Some(m) = methods {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        let headers = match &self.headers {
            Some(h) => joined(h),
            None if self.credentials => {
                request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
            }
            None => Some(HeaderValue::from_static("*")),
        };
        if let Some(h) = headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        response
    }

    /// Sets the CORS headers of an actual (non-preflight) answer, the function's or the
    /// gateway's own: the function's CORS headers are replaced by the configured ones.
    pub fn apply(&self, request: &HeaderMap, response: &mut HeaderMap) {
        for name in &CORS_RESPONSE_HEADERS {
            response.remove(name);
        }
        let Some(origin) = request.get(header::ORIGIN) else {
            return;
        };
        if let Some(allow_origin) = self.allowed_origin(origin) {
            self.insert_common(response, allow_origin);
        }
    }

    fn insert_common(&self, out: &mut HeaderMap, allow_origin: HeaderValue) {
        if allow_origin != "*" {
            out.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], methods: &[&str], headers: &[&str], credentials: bool) -> CorsPolicy {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        CorsPolicy::new(&Cors {
            allow_origins: s(origins),
            allow_methods: s(methods),
            allow_headers: s(headers),
            expose_headers: s(&["x-request-id", "date"]),
            max_age_seconds: Some(300),
            allow_credentials: credentials,
        })
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn preflight_is_options_with_origin_and_requested_method() {
        let full = request(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(CorsPolicy::is_preflight(&Method::OPTIONS, &full));
        assert!(!CorsPolicy::is_preflight(&Method::GET, &full));
        let no_method = request(&[("origin", "https://app.example")]);
        assert!(!CorsPolicy::is_preflight(&Method::OPTIONS, &no_method));
    }

    #[test]
    fn preflight_answers_with_the_configured_headers() {
        let p = cors(
            &["https://app.example"],
            &["get", "POST"],
            &["authorization", "content-type"],
            false,
        );
        let r = p.preflight(&request(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ]));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization,content-type"
        );
        assert_eq!(h["access-control-max-age"], "300");
        assert_eq!(h["vary"], "Origin");
        assert!(!h.contains_key("access-control-allow-credentials"));
    }

    #[test]
    fn a_foreign_origin_gets_no_cors_headers() {
        let p = cors(&["https://app.example"], &["*"], &["*"], false);
        let req = request(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ]);
        let r = p.preflight(&req);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers().is_empty());
        let mut response = request(&[("access-control-allow-origin", "*")]);
        p.apply(&req, &mut response);
        assert!(response.is_empty(), "the function's CORS header is dropped");
    }

    #[test]
    fn wildcards_and_credentials() {
        let p = cors(&["*"], &["*"], &["*"], false);
        let req = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-custom"),
        ]);
        let h = p.preflight(&req).headers().clone();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-methods"], "*");
        assert_eq!(h["access-control-allow-headers"], "*");
        assert!(!h.contains_key("vary"));

        let p = cors(&["*"], &["*"], &["*"], true);
        let h = p.preflight(&req).headers().clone();
        assert_eq!(h["access-control-allow-origin"], "https://a.example");
        assert_eq!(h["access-control-allow-methods"], "PUT");
        assert_eq!(h["access-control-allow-headers"], "x-custom");
        assert_eq!(h["access-control-allow-credentials"], "true");

        let p = cors(&["https://*"], &["GET"], &[], false);
        let https = request(&[("origin", "https://x.example")]);
        let http = request(&[("origin", "http://x.example")]);
        let mut out = HeaderMap::new();
        p.apply(&https, &mut out);
        assert_eq!(out["access-control-allow-origin"], "https://x.example");
        let mut out = HeaderMap::new();
        p.apply(&http, &mut out);
        assert!(!out.contains_key("access-control-allow-origin"));
    }

    #[test]
    fn actual_answers_get_origin_credentials_and_exposed_headers() {
        let p = cors(&["https://App.Example/"], &["GET"], &[], true);
        let req = request(&[("origin", "https://app.example")]);
        let mut out = request(&[
            ("content-type", "application/json"),
            ("access-control-allow-origin", "https://other.example"),
        ]);
        p.apply(&req, &mut out);
        assert_eq!(out["access-control-allow-origin"], "https://app.example");
        assert_eq!(out["access-control-allow-credentials"], "true");
        assert_eq!(out["access-control-expose-headers"], "x-request-id,date");
        assert_eq!(out["content-type"], "application/json");
        assert!(!out.contains_key("access-control-allow-methods"));
        // Without Origin: no CORS headers at all.
        let mut out = HeaderMap::new();
        p.apply(&HeaderMap::new(), &mut out);
        assert!(out.is_empty());
    }
}
