//! A function's result mapped to the client's HTTP response, by API Gateway's rules.
//!
//! Payload format 1.0 (REST APIs) accepts only a proxy-response object; 2.0 (HTTP APIs) also
//! accepts any other JSON value and infers a `200 application/json` response from it. What
//! API Gateway itself does, and where each rule comes from:
//! - response shapes and the 2.0 inference: AWS API Gateway developer guide,
//!   "Lambda proxy integrations for HTTP APIs" and "Output format of a Lambda function for proxy
//!   integration" (set-up-lambda-proxy-integrations);
//! - `headers` merged into `multiValueHeaders`, a pair given in both appearing once: same page;
//! - keys other than the documented ones make the response malformed (AWS SAM CLI PR #1154,
//!   which mirrored the service after testing it);
//! - `statusCode` may be a numeric string (`"200"`): AWS's own Lambda blueprint
//!   `microservice-http-endpoint` returns it that way;
//! - non-string header values are stringified (the same blueprints return `True` values);
//!   a `null` value drops the header, and for `content-type` also the default
//!   (Amazon.Lambda.AspNetCoreServer relies on this; aws-sam-cli issue #1218);
//! - 1.0 with no `content-type` gets `application/json` (REST API behaviour, same issue).

use std::{borrow::Cow, fmt};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::Value;

/// `content-type` when a 1.0 response names none (REST APIs answer `application/json`).
const V1_DEFAULT_CONTENT_TYPE: &str = "application/json";
/// `content-type` of a 2.0 response inferred from a bare JSON value (documented).
const V2_INFERRED_CONTENT_TYPE: &str = "application/json";
/// `content-type` of a 2.0 response that has a `statusCode` but names no content type. Not
/// documented; HTTP APIs have been observed answering `text/plain; charset=utf-8` (fujiwara/ridge
/// PR #9, aws-lambda-go-api-proxy issue #116), not the 1.0 default.
const V2_DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The function's result cannot be turned into a response: the gateway answers
/// `502 {"message":"Internal server error"}` and logs `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Lambda proxy response: {reason}")]
pub struct MalformedResponse {
    pub reason: Cow<'static, str>,
}

impl MalformedResponse {
    fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        MalformedResponse {
            reason: reason.into(),
        }
    }

    /// Short stable category for metric labels.
    pub fn category(&self) -> &'static str {
        "malformed_response"
    }
}

/// Maps a payload format 1.0 result (REST API, or HTTP API with format 1.0).
pub fn map_v1(result: &[u8]) -> Result<Response<Bytes>, MalformedResponse> {
    match parse(result)? {
        Top::Object(fields) if fields.status_code.is_some() => build(fields, Format::V1),
        Top::Object(_) => Err(MalformedResponse::new("statusCode is missing")),
        _ => Err(MalformedResponse::new("the result is not a JSON object")),
    }
}

/// Maps a payload format 2.0 result (HTTP API).
pub fn map_v2(result: &[u8]) -> Result<Response<Bytes>, MalformedResponse> {
    match parse(result)? {
        Top::Object(fields) if fields.status_code.is_some() => build(fields, Format::V2),
        // Any other valid JSON is the body of a 200 `application/json` response: a string is
        // sent as its content, anything else as the JSON text the function returned.
        Top::String(text) => Ok(inferred(Bytes::from(text.into_owned()))),
        Top::Object(_) | Top::Other => Ok(inferred(Bytes::copy_from_slice(result.trim_ascii()))),
    }
}

fn inferred(body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(V2_INFERRED_CONTENT_TYPE),
    );
    response
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    V1,
    V2,
}

/// The top level of a result, read in one pass: the proxy-response keys are kept (as JSON
/// values, their types checked later so that a 2.0 object without `statusCode` can hold
/// anything), everything else is skipped without being materialised.
enum Top<'a> {
    Object(Fields),
    String(Cow<'a, str>),
    Other,
}

#[derive(Default)]
struct Fields {
    /// `None` when absent or `null`.
    status_code: Option<Value>,
    headers: Option<Value>,
    multi_value_headers: Option<Value>,
    body: Option<Value>,
    is_base64_encoded: Option<Value>,
    cookies: Option<Value>,
    /// The first key that is not part of the response shape, for the error message.
    unknown: Option<String>,
}

fn parse(result: &[u8]) -> Result<Top<'_>, MalformedResponse> {
    serde_json::from_slice(result)
        .map_err(|e| MalformedResponse::new(format!("the result is not valid JSON: {e}")))
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::StatusCode => &mut fields.status_code,
                Key::Headers => &mut fields.headers,
                Key::MultiValueHeaders => &mut fields.multi_value_headers,
                Key::Body => &mut fields.body,
                Key::IsBase64Encoded => &mut fields.is_base64_encoded,
                Key::Cookies => &mut fields.cookies,
                Key::Unknown(name) => {
                    fields.unknown.get_or_insert(name);
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value: Value = map.next_value()?;
            *slot = (!value.is_null()).then_some(value);
        }
        Ok(Top::Object(fields))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Top::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Top::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Top::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Top::Other)
    }
}

enum Key {
    StatusCode,
    Headers,
    MultiValueHeaders,
    Body,
    IsBase64Encoded,
    Cookies,
    Unknown(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "statusCode" => Key::StatusCode,
                    "headers" => Key::Headers,
                    "multiValueHeaders" => Key::MultiValueHeaders,
                    "body" => Key::Body,
                    "isBase64Encoded" => Key::IsBase64Encoded,
                    "cookies" => Key::Cookies,
                    other => Key::Unknown(other.to_owned()),
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

fn build(fields: Fields, format: Format) -> Result<Response<Bytes>, MalformedResponse> {
    if let Some(name) = &fields.unknown {
        return Err(MalformedResponse::new(format!("unexpected key {name:?}")));
    }
    if format == Format::V1 && fields.cookies.is_some() {
        return Err(MalformedResponse::new(
            "unexpected key \"cookies\" (payload format 2.0 only)",
        ));
    }
    let status = status_code(fields.status_code.as_ref())?;
    let mut headers = HeaderMap::new();
    let mut content_type_nulled = false;
    if let Some(multi) = &fields.multi_value_headers {
        merge_multi_value_headers(&mut headers, multi, &mut content_type_nulled)?;
    }
    if let Some(single) = &fields.headers {
        merge_headers(&mut headers, single, &mut content_type_nulled)?;
    }
    if let Some(cookies) = &fields.cookies {
        append_cookies(&mut headers, cookies)?;
    }
    strip_framing_headers(&mut headers);
    if !headers.contains_key(header::CONTENT_TYPE) && !content_type_nulled {
        let default = match format {
            Format::V1 => V1_DEFAULT_CONTENT_TYPE,
            Format::V2 => V2_DEFAULT_CONTENT_TYPE,
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(default));
    }
    let body = body(fields.body, fields.is_base64_encoded.as_ref())?;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// An integer 200..=599, or a string of one: AWS's own blueprints return `"statusCode": "200"`.
/// A 1xx is not a final answer: a client would wait on for the real one.
fn status_code(value: Option<&Value>) -> Result<StatusCode, MalformedResponse> {
    let code = match value {
        None => return Err(MalformedResponse::new("statusCode is missing")),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Some(u),
            // 200.0, as Python's json.dumps writes a float.
            (None, Some(f)) if f.fract() == 0.0 && (0.0..1000.0).contains(&f) => Some(f as u64),
            _ => None,
        },
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Some(other) => {
            return Err(MalformedResponse::new(format!(
                "statusCode must be an integer, got {}",
                kind(other)
            )));
        }
    };
    code.filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c as u16).ok())
        .ok_or_else(|| {
            MalformedResponse::new(format!(
                "statusCode {} is not a final HTTP status 200..=599",
                value.map(Value::to_string).unwrap_or_default()
            ))
        })
}

fn merge_multi_value_headers(
    headers: &mut HeaderMap,
    multi: &Value,
    content_type_nulled: &mut bool,
) -> Result<(), MalformedResponse> {
    let Value::Object(map) = multi else {
        return Err(MalformedResponse::new(format!(
            "multiValueHeaders must be an object, got {}",
            kind(multi)
        )));
    };
    for (name, values) in map {
        let header_name = header_name(name)?;
        match values {
            Value::Array(values) => {
                for value in values {
                    if let Some(v) = header_value(name, value)? {
                        headers.append(&header_name, v);
                    }
                }
            }
            Value::Null => *content_type_nulled |= header_name == header::CONTENT_TYPE,
            // A single value where a list belongs: accepted as a list of one.
            scalar => {
                if let Some(v) = header_value(name, scalar)? {
                    headers.append(&header_name, v);
                }
            }
        }
    }
    Ok(())
}

fn merge_headers(
    headers: &mut HeaderMap,
    single: &Value,
    content_type_nulled: &mut bool,
) -> Result<(), MalformedResponse> {
    let Value::Object(map) = single else {
        return Err(MalformedResponse::new(format!(
            "headers must be an object, got {}",
            kind(single)
        )));
    };
    for (name, value) in map {
        let header_name = header_name(name)?;
        let Some(v) = header_value(name, value)? else {
            *content_type_nulled |= header_name == header::CONTENT_TYPE;
            continue;
        };
        // A name-value pair given in both maps appears once.
        if !headers
            .get_all(&header_name)
            .iter()
            .any(|existing| existing == v)
        {
            headers.append(header_name, v);
        }
    }
    Ok(())
}

fn append_cookies(headers: &mut HeaderMap, cookies: &Value) -> Result<(), MalformedResponse> {
    let Value::Array(cookies) = cookies else {
        return Err(MalformedResponse::new(format!(
            "cookies must be an array of strings, got {}",
            kind(cookies)
        )));
    };
    for cookie in cookies {
        let Value::String(cookie) = cookie else {
            return Err(MalformedResponse::new(format!(
                "cookies must be an array of strings, got an element of type {}",
                kind(cookie)
            )));
        };
        let value = HeaderValue::from_str(cookie)
            .map_err(|_| MalformedResponse::new("a cookie is not a valid header value"))?;
        headers.append(header::SET_COOKIE, value);
    }
    Ok(())
}

/// Framing is the gateway's business: a function's `content-length` or `transfer-encoding`
/// would contradict the body actually sent, and hop-by-hop headers do not cross a proxy.
fn strip_framing_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

fn header_name(name: &str) -> Result<HeaderName, MalformedResponse> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| MalformedResponse::new(format!("{name:?} is not a valid header name")))
}

/// A header value from a JSON scalar (`null` → `None`: the header is left out).
fn header_value(name: &str, value: &Value) -> Result<Option<HeaderValue>, MalformedResponse> {
    let text: Cow<'_, str> = match value {
        Value::Null => return Ok(None),
        Value::String(s) => Cow::Borrowed(s),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Number(n) => Cow::Owned(n.to_string()),
        other => {
            return Err(MalformedResponse::new(format!(
                "header {name:?} has a value of type {}",
                kind(other)
            )));
        }
    };
    HeaderValue::from_str(&text)
        .map(Some)
        .map_err(|_| MalformedResponse::new(format!("header {name:?} has an invalid value")))
}

fn body(body: Option<Value>, is_base64: Option<&Value>) -> Result<Bytes, MalformedResponse> {
    let encoded = match is_base64 {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => {
            return Err(MalformedResponse::new(format!(
                "isBase64Encoded must be a boolean, got {}",
                kind(other)
            )));
        }
    };
    let text = match body {
        None => return Ok(Bytes::new()),
        Some(Value::String(text)) => text,
        Some(other) => {
            return Err(MalformedResponse::new(format!(
                "body must be a string, got {}",
                kind(&other)
            )));
        }
    };
    if !encoded {
        return Ok(Bytes::from(text));
    }
    decode_base64(&text)
        .map(Bytes::from)
        .map_err(|e| MalformedResponse::new(format!("body is not valid base64: {e}")))
}

/// Standard alphabet, padding optional; line breaks (Python's `base64.encodebytes` writes them)
/// are skipped.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        LENIENT.decode(compact)
    } else {
        LENIENT.decode(text)
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
