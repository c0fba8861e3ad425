//! `kfaas invoke`: post an event to a function instance's invoke endpoint and print the result.
//!
//! The event comes from a file, stdin (`-`), or is built as a minimal API Gateway proxy event
//! (`--payload-format 1.0|2.0 --method GET --path /x`) with the `aws_lambda_events` types, so a
//! handler written for API Gateway can be poked without hand-writing its event. A function
//! error prints the error JSON and exits 1, like `aws lambda invoke` reporting FunctionError.

use std::{collections::HashMap, io::Read, path::PathBuf, process::ExitCode};

use aws_lambda_events::{
    apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest},
    query_map::QueryMap,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::runtime::{INVOKE_ERROR_HEADER, INVOKE_PATH, REQUEST_ID_HEADER};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The instance, e.g. http://127.0.0.1:9000 (the invoke path is added when absent).
    #[arg(long, env = "KFAAS_URL")]
    url: String,
    /// The event: a JSON file, or - for stdin. Default: {}.
    #[arg(long, conflicts_with = "payload_format")]
    event: Option<PathBuf>,
    /// Build an API Gateway proxy event of this payload format instead of reading one.
    #[arg(long, value_parser = ["1.0", "2.0"])]
    payload_format: Option<String>,
    /// Method of the built API Gateway event.
    #[arg(long, default_value = "GET", requires = "payload_format")]
    method: String,
    /// Path (and query) of the built API Gateway event.
    #[arg(long, default_value = "/", requires = "payload_format")]
    path: String,
    /// Body of the built API Gateway event.
    #[arg(long, requires = "payload_format")]
    body: Option<String>,
    /// Use this as the Lambda request id.
    #[arg(long)]
    request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum InvokeError {
    #[error("bad --url {0:?}: expected http://HOST:PORT[/path]")]
    BadUrl(String),
    #[error("bad --method {0:?}")]
    BadMethod(String),
    #[error("cannot read the event from {path}: {source}")]
    ReadEvent {
        path: String,
        source: std::io::Error,
    },
    #[error("the event is not JSON: {0}")]
    EventNotJson(serde_json::Error),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What came back.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

pub fn run(args: Args) -> ExitCode {
    match invoke(args) {
        Ok(answer) => report(&answer),
        Err(e) => {
            eprintln!("kfaas invoke: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the body; a function error or an HTTP failure exits 1.
fn report(answer: &Answer) -> ExitCode {
    let body = String::from_utf8_lossy(&answer.body);
    let function_error = answer.headers.contains_key("x-amz-function-error")
        || answer.headers.contains_key(INVOKE_ERROR_HEADER);
    if answer.status.is_success() && !function_error {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    if function_error {
        println!("{body}");
        let kind = answer
            .headers
            .get(INVOKE_ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("function");
        eprintln!("kfaas invoke: {kind} error");
    } else {
        eprintln!("kfaas invoke: HTTP {}: {body}", answer.status);
    }
    ExitCode::FAILURE
}

fn invoke(args: Args) -> Result<Answer, InvokeError> {
    let uri = invoke_uri(&args.url)?;
    let event = event(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InvokeError::Runtime)?;
    rt.block_on(post(uri, event, args.request_id.as_deref()))
}

/// The invoke URL: the emulator's path is added to a bare `http://host:port`.
fn invoke_uri(url: &str) -> Result<Uri, InvokeError> {
    let bad = || InvokeError::BadUrl(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(bad());
    }
    let path = uri.path();
    if path.is_empty() || path == "/" {
        let authority = uri.authority().ok_or_else(bad)?;
        return format!("http://{authority}{INVOKE_PATH}")
            .parse()
            .map_err(|_| bad());
    }
    Ok(uri)
}

fn event(args: &Args) -> Result<Bytes, InvokeError> {
    if let Some(format) = &args.payload_format {
        let method: Method = args
            .method
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| InvokeError::BadMethod(args.method.clone()))?;
        let json = apigw_event(format, method, &args.path, args.body.clone());
        return Ok(Bytes::from(json.to_string()));
    }
    let raw = match args.event.as_deref() {
        None => return Ok(Bytes::from_static(b"{}")),
        Some(path) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| InvokeError::ReadEvent {
                    path: "stdin".into(),
                    source,
                })?;
            buf
        }
        Some(path) => std::fs::read(path).map_err(|source| InvokeError::ReadEvent {
            path: path.display().to_string(),
            source,
        })?,
    };
    serde_json::from_slice::<serde_json::Value>(&raw).map_err(InvokeError::EventNotJson)?;
    Ok(Bytes::from(raw))
}

/// A minimal API Gateway proxy event for `method` and `path` (with its query string).
fn apigw_event(
    format: &str,
    method: Method,
    path_and_query: &str,
    body: Option<String>,
) -> serde_json::Value {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("localhost"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("kfaas-invoke"));
    let value = if format == "1.0" {
        let mut e = ApiGatewayProxyRequest::default();
        e.resource = Some(path.to_owned());
        e.path = Some(path.to_owned());
        e.http_method = method.clone();
        e.headers = headers.clone();
        e.multi_value_headers = headers;
        // REST APIs keep the last value of a repeated parameter in the single-value map.
        let last: HashMap<String, String> = params
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.last()?.clone())))
            .collect();
        e.query_string_parameters = QueryMap::from(last);
        e.multi_value_query_string_parameters = QueryMap::from(params);
        e.body = body;
        e.request_context.stage = Some("$default".into());
        e.request_context.request_id = Some(request_id);
        e.request_context.resource_path = Some(path.to_owned());
        e.request_context.path = Some(path.to_owned());
        e.request_context.http_method = method;
        e.request_context.request_time_epoch = now.timestamp_millis();
        e.request_context.protocol = Some("HTTP/1.1".into());
        e.request_context.identity.source_ip = Some("127.0.0.1".into());
        serde_json::to_value(e)
    } else {
        let mut e = ApiGatewayV2httpRequest::default();
        e.version = Some("2.0".into());
        e.route_key = Some("$default".into());
        e.raw_path = Some(path.to_owned());
        e.raw_query_string = Some(query.to_owned());
        e.headers = headers;
        // HTTP APIs join repeated values with commas.
        let joined: HashMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.join(",")))
            .collect();
        e.query_string_parameters = QueryMap::from(joined);
        e.body = body;
        e.request_context.route_key = Some("$default".into());
        e.request_context.stage = Some("$default".into());
        e.request_context.request_id = Some(request_id);
        e.request_context.time_epoch = now.timestamp_millis();
        e.request_context.http.method = method;
        e.request_context.http.path = Some(path.to_owned());
        e.request_context.http.protocol = Some("HTTP/1.1".into());
        e.request_context.http.source_ip = Some("127.0.0.1".into());
        e.request_context.http.user_agent = Some("kfaas-invoke".into());
        serde_json::to_value(e)
    };
    value.unwrap_or(serde_json::Value::Null)
}

async fn post(uri: Uri, event: Bytes, request_id: Option<&str>) -> Result<Answer, InvokeError> {
    let authority = uri
        .authority()
        .ok_or_else(|| InvokeError::BadUrl(uri.to_string()))?
        .clone();
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|source| InvokeError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or(INVOKE_PATH, |p| p.as_str());
    let mut request = Request::post(path)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(id) = request_id {
        request = request.header(REQUEST_ID_HEADER, id);
    }
    let response = sender.send_request(request.body(Full::new(event))?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_urls_get_the_invoke_path() {
        let uri = invoke_uri("http://127.0.0.1:9000").expect("valid");
        assert_eq!(uri.path(), INVOKE_PATH);
        let custom =
            invoke_uri("http://127.0.0.1:9000/2015-03-31/functions/x/invocations").expect("valid");
        assert_eq!(custom.path(), "/2015-03-31/functions/x/invocations");
        assert!(invoke_uri("https://example.com").is_err());
        assert!(invoke_uri("not a url").is_err());
    }

    #[test]
    fn apigw_events_follow_each_payload_format() {
        let v1 = apigw_event("1.0", Method::POST, "/orders/7?x=1&x=2", Some("hi".into()));
        assert_eq!(v1["httpMethod"], "POST");
        assert_eq!(v1["path"], "/orders/7");
        assert_eq!(v1["queryStringParameters"]["x"], "2");
        assert_eq!(v1["multiValueQueryStringParameters"]["x"][1], "2");
        assert_eq!(v1["body"], "hi");
        assert_eq!(v1["requestContext"]["identity"]["sourceIp"], "127.0.0.1");

        let v2 = apigw_event("2.0", Method::GET, "/x?a=b&c=1&c=2", None);
        assert_eq!(v2["version"], "2.0");
        assert_eq!(v2["rawPath"], "/x");
        assert_eq!(v2["rawQueryString"], "a=b&c=1&c=2");
        assert_eq!(v2["queryStringParameters"]["c"], "1,2");
        assert_eq!(v2["requestContext"]["http"]["method"], "GET");
        assert_eq!(v2["queryStringParameters"]["a"], "b");
    }
}
