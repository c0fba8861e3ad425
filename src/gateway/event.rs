//! API Gateway proxy events (payload format 1.0 and 2.0) built from an HTTP request.
//!
//! The JSON keys, nesting and value types are those of `aws_lambda_events`'
//! `ApiGatewayProxyRequest` and `ApiGatewayV2httpRequest` (the tests deserialize every event we
//! build with those types, and compare against AWS's public fixtures). We serialize through
//! borrowing views instead of filling those owned structs because:
//! - the owned structs cannot express what API Gateway sends: 1.0 sends `null` for an absent
//!   map (they serialize `{}`), 1.0's `headers`/`queryStringParameters` keep the *last* value of a
//!   repeated name (they keep the first), and 2.0's event has no `httpMethod`, `type`,
//!   `methodArn`, ... keys (they always serialize them);
//! - this is the request hot path: the views write straight from the request's `HeaderMap`,
//!   query string and body into one output buffer, with no owned copy of the request and no
//!   intermediate `serde_json::Value` (the body, base64 or not, is written once).

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr};

use base64::{display::Base64Display, engine::general_purpose::STANDARD};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, header};
use serde::{
    Serialize, Serializer,
    ser::{SerializeMap, SerializeSeq},
};

/// Account id in `requestContext.accountId`: there is no AWS account behind kfaas, and a fixed,
/// obviously fake id (the one AWS's local emulators use) is better than an empty string for code
/// that builds ARNs from it.
pub const LOCAL_ACCOUNT_ID: &str = "000000000000";

/// `requestContext.time` / `requestTime` format, e.g. `12/Mar/2020:19:03:58 +0000`.
const REQUEST_TIME_FORMAT: &str = "%d/%b/%Y:%H:%M:%S +0000";

/// Everything the gateway knows about one request that an event carries.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// Raw query string, without '?'.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// The path as the client sent it (with the stage base path).
    pub raw_path: &'a str,
    /// The path inside the stage (base path stripped).
    pub path: &'a str,
    /// The route template, e.g. `/orders/{id}` or `/files/{proxy+}`.
    pub resource_path: &'a str,
    /// `GET /orders/{id}` (2.0).
    pub route_key: &'a str,
    pub path_parameters: &'a [(String, String)],
    pub stage: &'a str,
    pub stage_variables: &'a BTreeMap<String, String>,
    pub request_id: &'a str,
    pub request_time: DateTime<Utc>,
    pub api_id: &'a str,
    /// Host header without port.
    pub domain_name: Option<&'a str>,
    pub source_ip: IpAddr,
    /// e.g. `HTTP/1.1`.
    pub protocol: &'a str,
    /// The API key's *id* (never the key itself), once the policies have identified it.
    pub api_key_id: Option<&'a str>,
    /// 1.0: the `requestContext.authorizer` map; 2.0: `{"jwt":{...}}` or `{"lambda":{...}}`.
    pub authorizer: Option<&'a serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("cannot serialize the event: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl EventError {
    /// Short stable category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            EventError::Serialize(_) => "event_serialize",
        }
    }
}

/// Builds the payload format 1.0 event (REST API, or HTTP API with `payloadFormatVersion: 1.0`).
pub fn build_v1(input: &EventInput<'_>) -> Result<Bytes, EventError> {
    let query = QueryParams::parse(input.query.unwrap_or(""));
    let event = V1Event {
        input,
        query: &query,
    };
    write_json(&event, input)
}

/// Builds the payload format 2.0 event (HTTP API).
pub fn build_v2(input: &EventInput<'_>) -> Result<Bytes, EventError> {
    let query = QueryParams::parse(input.query.unwrap_or(""));
    let event = V2Event {
        input,
        query: &query,
    };
    write_json(&event, input)
}

fn write_json<T: Serialize>(event: &T, input: &EventInput<'_>) -> Result<Bytes, EventError> {
    // One allocation in the common case: room for a base64 body plus a typical set of headers.
    let headers_len: usize = input
        .headers
        .iter()
        .map(|(k, v)| 2 * (k.as_str().len() + v.len()) + 12)
        .sum();
    let mut out = Vec::with_capacity(input.body.len() / 3 * 4 + 8 + headers_len + 1024);
    serde_json::to_writer(&mut out, event)?;
    Ok(Bytes::from(out))
}

/// How the body travels: as text when it is UTF-8 of a textual media type, else base64.
enum EventBody<'a> {
    Empty,
    Text(&'a str),
    Base64(&'a [u8]),
}

impl<'a> EventBody<'a> {
    fn of(input: &EventInput<'a>) -> Self {
        if input.body.is_empty() {
            return EventBody::Empty;
        }
        let textual = input
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| is_text_media_type(ct.as_bytes()));
        match (textual, std::str::from_utf8(input.body)) {
            (true, Ok(text)) => EventBody::Text(text),
            _ => EventBody::Base64(input.body),
        }
    }

    fn is_base64(&self) -> bool {
        matches!(self, EventBody::Base64(_))
    }
}

impl Serialize for EventBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EventBody::Empty => s.serialize_none(),
            EventBody::Text(text) => s.serialize_str(text),
            EventBody::Base64(bytes) => s.collect_str(&Base64Display::new(bytes, &STANDARD)),
        }
    }
}

/// Whether a `Content-Type` names text, so the body can travel as a JSON string unencoded.
/// Everything else is treated as binary, as HTTP APIs do; parameters (`; charset=...`) are ignored.
pub fn is_text_media_type(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let starts = |prefix: &[u8]| {
        essence.len() >= prefix.len() && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len()
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    const TEXT_TYPES: [&[u8]; 4] = [
        b"application/json",
        b"application/xml",
        b"application/javascript",
        b"application/x-www-form-urlencoded",
    ];
    starts(b"text/")
        || TEXT_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t))
        || ends(b"+json")
        || ends(b"+xml")
}

/// A header value as text: lossless for UTF-8 (which `HeaderValue::to_str` rejects beyond
/// ASCII), with replacement characters for the rare bytes that are not.
fn header_text(value: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

fn user_agent<'a>(headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    headers.get(header::USER_AGENT).map(header_text)
}

/// `domainPrefix`: the first label of the host name, as API Gateway reports it.
fn domain_prefix(domain: &str) -> &str {
    domain.split('.').next().unwrap_or(domain)
}

/// Decoded query parameters, grouped by name (sorted: API Gateway does not keep the order of
/// request parameters either), each with its values in request order.
struct QueryParams<'a> {
    groups: Vec<(Cow<'a, str>, Vec<Cow<'a, str>>)>,
}

impl<'a> QueryParams<'a> {
    fn parse(raw: &'a str) -> Self {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(k), form_decode(v))
            })
            .collect();
        // Stable: values of one name stay in request order.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<(Cow<'a, str>, Vec<Cow<'a, str>>)> = Vec::new();
        for (k, v) in pairs {
            match groups.last_mut() {
                Some((last, values)) if *last == k => values.push(v),
                _ => groups.push((k, vec![v])),
            }
        }
        QueryParams { groups }
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Decodes one `application/x-www-form-urlencoded` component the way API Gateway does for
/// query parameters: `%XX` escapes and `+` as a space (a real REST API turns `sort=-+createdAt`
/// into `"- createdAt"`). A malformed escape is kept as written; invalid UTF-8 becomes U+FFFD.
fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

// ---------------------------------------------------------------------------------------------
// Payload format 1.0
// ---------------------------------------------------------------------------------------------

struct V1Event<'a, 'q> {
    input: &'a EventInput<'a>,
    query: &'q QueryParams<'a>,
}

impl Serialize for V1Event<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.input;
        let body = EventBody::of(i);
        let has_headers = !i.headers.is_empty();
        let mut m = s.serialize_map(Some(13))?;
        m.serialize_entry("resource", i.resource_path)?;
        m.serialize_entry("path", i.path)?;
        m.serialize_entry("httpMethod", i.method.as_str())?;
        m.serialize_entry(
            "headers",
            &has_headers.then_some(Headers(i.headers, Repeats::Last)),
        )?;
        m.serialize_entry(
            "multiValueHeaders",
            &has_headers.then_some(Headers(i.headers, Repeats::All)),
        )?;
        let has_query = !self.query.is_empty();
        m.serialize_entry(
            "queryStringParameters",
            &has_query.then_some(Query(self.query, Repeats::Last)),
        )?;
        m.serialize_entry(
            "multiValueQueryStringParameters",
            &has_query.then_some(Query(self.query, Repeats::All)),
        )?;
        m.serialize_entry("pathParameters", &PathParams::or_null(i.path_parameters))?;
        m.serialize_entry(
            "stageVariables",
            &(!i.stage_variables.is_empty()).then_some(i.stage_variables),
        )?;
        m.serialize_entry("requestContext", &V1Context(i))?;
        m.serialize_entry("body", &body)?;
        m.serialize_entry("isBase64Encoded", &body.is_base64())?;
        m.end()
    }
}

struct V1Context<'a>(&'a EventInput<'a>);

impl Serialize for V1Context<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("accountId", LOCAL_ACCOUNT_ID)?;
        m.serialize_entry("apiId", i.api_id)?;
        if let Some(authorizer) = i.authorizer {
            m.serialize_entry("authorizer", authorizer)?;
        }
        m.serialize_entry("domainName", &i.domain_name)?;
        m.serialize_entry("domainPrefix", &i.domain_name.map(domain_prefix))?;
        m.serialize_entry("extendedRequestId", i.request_id)?;
        m.serialize_entry("httpMethod", i.method.as_str())?;
        m.serialize_entry("identity", &V1Identity(i))?;
        m.serialize_entry("path", i.raw_path)?;
        m.serialize_entry("protocol", i.protocol)?;
        m.serialize_entry("requestId", i.request_id)?;
        m.serialize_entry("requestTime", &RequestTime(i.request_time))?;
        m.serialize_entry("requestTimeEpoch", &i.request_time.timestamp_millis())?;
        m.serialize_entry("resourceId", &None::<&str>)?;
        m.serialize_entry("resourcePath", i.resource_path)?;
        m.serialize_entry("stage", i.stage)?;
        m.end()
    }
}

struct V1Identity<'a>(&'a EventInput<'a>);

impl Serialize for V1Identity<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(Some(14))?;
        // What IAM, Cognito or a caller's account would fill: kfaas has none of them. `apiKey`
        // would carry the key itself, and the gateway never hands secrets to functions.
        const ABSENT: [&str; 11] = [
            "accessKey",
            "accountId",
            "apiKey",
            "caller",
            "cognitoAuthenticationProvider",
            "cognitoAuthenticationType",
            "cognitoIdentityId",
            "cognitoIdentityPoolId",
            "principalOrgId",
            "user",
            "userArn",
        ];
        for key in ABSENT {
            m.serialize_entry(key, &None::<&str>)?;
        }
        m.serialize_entry("apiKeyId", &i.api_key_id)?;
        m.serialize_entry("sourceIp", &DisplayStr(&i.source_ip))?;
        m.serialize_entry("userAgent", &user_agent(i.headers))?;
        m.end()
    }
}

/// How a name the client gave more than once is represented.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeats {
    /// 1.0 `headers` and `queryStringParameters`: the last value.
    Last,
    /// 1.0 `multiValueHeaders` and `multiValueQueryStringParameters`: every value, in order.
    All,
    /// 2.0 `headers` (without `cookie`, which has its own field) and `queryStringParameters`:
    /// the values joined with commas.
    Joined,
}

struct Headers<'a>(&'a HeaderMap, Repeats);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Headers(headers, repeats) = *self;
        let mut m = s.serialize_map(None)?;
        for name in headers.keys() {
            let mut values = headers.get_all(name).iter();
            match repeats {
                Repeats::Last => {
                    if let Some(last) = values.next_back() {
                        m.serialize_entry(name.as_str(), &header_text(last))?;
                    }
                }
                Repeats::All => m.serialize_entry(name.as_str(), &HeaderValues(headers, name))?,
                Repeats::Joined if name == header::COOKIE => {}
                Repeats::Joined => {
                    let Some(first) = values.next() else { continue };
                    let mut joined = header_text(first);
                    for more in values {
                        let s = joined.to_mut();
                        s.push(',');
                        s.push_str(&header_text(more));
                    }
                    m.serialize_entry(name.as_str(), &joined)?;
                }
            }
        }
        m.end()
    }
}

struct HeaderValues<'a>(&'a HeaderMap, &'a http::HeaderName);

impl Serialize for HeaderValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for value in self.0.get_all(self.1) {
            seq.serialize_element(&header_text(value))?;
        }
        seq.end()
    }
}

struct Query<'a, 'q>(&'q QueryParams<'a>, Repeats);

impl Serialize for Query<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.groups.len()))?;
        for (name, values) in &self.0.groups {
            match (self.1, values.as_slice()) {
                (Repeats::All, values) => m.serialize_entry(name, values)?,
                (Repeats::Last, [.., last]) | (Repeats::Joined, [last]) => {
                    m.serialize_entry(name, last)?
                }
                (Repeats::Joined, values) => m.serialize_entry(name, &values.join(","))?,
                (Repeats::Last, []) => {}
            }
        }
        m.end()
    }
}

struct PathParams<'a>(&'a [(String, String)]);

impl<'a> PathParams<'a> {
    fn or_null(params: &'a [(String, String)]) -> Option<Self> {
        (!params.is_empty()).then_some(PathParams(params))
    }
}

impl Serialize for PathParams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            m.serialize_entry(name, value)?;
        }
        m.end()
    }
}

struct RequestTime(DateTime<Utc>);

impl Serialize for RequestTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.format(REQUEST_TIME_FORMAT))
    }
}

/// Serializes any `Display` as a JSON string without an intermediate `String`.
struct DisplayStr<'a, T>(&'a T);

impl<T: std::fmt::Display> Serialize for DisplayStr<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Payload format 2.0
// ---------------------------------------------------------------------------------------------

struct V2Event<'a, 'q> {
    input: &'a EventInput<'a>,
    query: &'q QueryParams<'a>,
}

impl Serialize for V2Event<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.input;
        let body = EventBody::of(i);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("version", "2.0")?;
        m.serialize_entry("routeKey", i.route_key)?;
        m.serialize_entry("rawPath", i.raw_path)?;
        m.serialize_entry("rawQueryString", i.query.unwrap_or(""))?;
        if i.headers.contains_key(header::COOKIE) {
            m.serialize_entry("cookies", &Cookies(i.headers))?;
        }
        m.serialize_entry("headers", &Headers(i.headers, Repeats::Joined))?;
        if !self.query.is_empty() {
            m.serialize_entry("queryStringParameters", &Query(self.query, Repeats::Joined))?;
        }
        if let Some(params) = PathParams::or_null(i.path_parameters) {
            m.serialize_entry("pathParameters", &params)?;
        }
        if !i.stage_variables.is_empty() {
            m.serialize_entry("stageVariables", i.stage_variables)?;
        }
        m.serialize_entry("requestContext", &V2Context(i))?;
        if !matches!(body, EventBody::Empty) {
            m.serialize_entry("body", &body)?;
        }
        m.serialize_entry("isBase64Encoded", &body.is_base64())?;
        m.end()
    }
}

struct V2Context<'a>(&'a EventInput<'a>);

impl Serialize for V2Context<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("accountId", LOCAL_ACCOUNT_ID)?;
        m.serialize_entry("apiId", i.api_id)?;
        if let Some(authorizer) = i.authorizer {
            m.serialize_entry("authorizer", authorizer)?;
        }
        m.serialize_entry("domainName", &i.domain_name)?;
        m.serialize_entry("domainPrefix", &i.domain_name.map(domain_prefix))?;
        m.serialize_entry("http", &V2Http(i))?;
        m.serialize_entry("requestId", i.request_id)?;
        m.serialize_entry("routeKey", i.route_key)?;
        m.serialize_entry("stage", i.stage)?;
        m.serialize_entry("time", &RequestTime(i.request_time))?;
        m.serialize_entry("timeEpoch", &i.request_time.timestamp_millis())?;
        m.end()
    }
}

struct V2Http<'a>(&'a EventInput<'a>);

impl Serialize for V2Http<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("method", i.method.as_str())?;
        m.serialize_entry("path", i.raw_path)?;
        m.serialize_entry("protocol", i.protocol)?;
        m.serialize_entry("sourceIp", &DisplayStr(&i.source_ip))?;
        m.serialize_entry("userAgent", &user_agent(i.headers).unwrap_or_default())?;
        m.end()
    }
}

/// 2.0 `cookies`: each cookie of every `Cookie` header, as `name=value`.
struct Cookies<'a>(&'a HeaderMap);

impl Serialize for Cookies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for value in self.0.get_all(header::COOKIE) {
            let text = header_text(value);
            for cookie in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                seq.serialize_element(cookie)?;
            }
        }
        seq.end()
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "event_fixture_tests.rs"]
mod fixture_tests;
