//! One request through the gateway: stage and route match → canary → activator → invoke →
//! response mapping, then one access-log line and the metrics.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{
    access_log::{AccessLog, AccessRecord},
    activator::Activator,
    error::GatewayError,
    event::{EventInput, build_v1, build_v2},
    invoke::{Body, Invoker, LambdaOutcome, full},
    metrics::{FunctionLabels, GatewayMetrics, RouteDurationLabels, RouteLabels, status_class},
    response::{map_v1, map_v2},
    table::{FunctionEntry, Matched, RouteTable},
};
use crate::{api::FunctionProtocol, api::PayloadFormat, backend::FunctionKey};

/// Size limits, API Gateway's by default.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body (10 MB).
    pub max_body_bytes: usize,
    /// Largest event a `lambda` function is sent (6 MB, Lambda's synchronous payload limit).
    pub max_event_bytes: usize,
    /// Largest request line plus headers (10 KB).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            max_event_bytes: 6 * 1024 * 1024,
            max_header_bytes: 10 * 1024,
        }
    }
}

/// The gateway's shared state.
pub struct Gateway {
    pub table: ArcSwap<RouteTable>,
    pub activator: Arc<Activator>,
    pub invoker: Invoker,
    pub metrics: Arc<GatewayMetrics>,
    pub access_log: AccessLog,
    pub limits: Limits,
    /// Shown as `requestContext.apiId`.
    pub api_id: String,
}

/// What is known of a request by the time it is answered, for the log line.
#[derive(Default)]
struct Trace {
    route_key: Option<String>,
    stage: Option<String>,
    api: Option<String>,
    function: Option<String>,
    integration: Option<Duration>,
    cold: bool,
}

impl Gateway {
    /// Answers one request. Never fails: every failure becomes API Gateway's answer.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_time = chrono::Utc::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let protocol = version_name(request.version());
        let mut trace = Trace::default();

        let result = self
            .serve(request, peer, &request_id, request_time, &mut trace)
            .await;
        let (mut response, error) = match result {
            Ok(response) => (response, None),
            Err(e) => {
                let response = e.to_response().map(full);
                (response, Some(e))
            }
        };
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("apigw-requestid", id);
        }

        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        if let Some(e) = &error {
            self.metrics
                .errors
                .get_or_create(&super::metrics::ErrorLabels {
                    category: e.category(),
                })
                .inc();
        }
        let api = trace.api.as_deref().unwrap_or("");
        let stage = trace.stage.as_deref().unwrap_or("");
        let route_key = trace.route_key.as_deref().unwrap_or("");
        self.metrics
            .requests
            .get_or_create(&RouteLabels {
                api: api.to_owned(),
                stage: stage.to_owned(),
                route: route_key.to_owned(),
                status_class: status_class(status),
            })
            .inc();
        self.metrics
            .request_duration
            .get_or_create(&RouteDurationLabels {
                api: api.to_owned(),
                stage: stage.to_owned(),
                route: route_key.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        let response_length = http_body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        self.access_log.log(&AccessRecord {
            request_id: &request_id,
            ip: peer.ip().to_string(),
            request_time: request_time.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            http_method: method.as_str(),
            path: &path,
            route_key,
            stage,
            api,
            status,
            protocol,
            response_length,
            response_latency: elapsed.as_secs_f64() * 1000.0,
            integration_latency: trace.integration.map(|d| d.as_secs_f64() * 1000.0),
            function: trace.function.as_deref(),
            user_agent: user_agent.as_deref(),
            api_key_id: None,
            cold_start: trace.cold,
            error: error.as_ref().map(GatewayError::category),
            error_message: error.as_ref().map(ToString::to_string),
        });
        response
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
        request_time: chrono::DateTime<chrono::Utc>,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        let started = Instant::now();
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + request.uri().to_string().len();
        if header_bytes > self.limits.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge {
                limit: self.limits.max_header_bytes,
            });
        }

        let table = self.table.load_full();
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .map(str::to_owned);
        let uri = request.uri().clone();
        let matched = table
            .lookup(host.as_deref(), request.method(), uri.path())
            .map_err(|_| GatewayError::NotFound)?;
        trace.route_key = Some(matched.route.route_key.clone());
        trace.stage = Some(matched.stage.name.clone());
        trace.api = Some(matched.stage.api.clone());

        // The canary takes its share of requests, with its own variables and function.
        let canary = matched
            .stage
            .canary
            .as_ref()
            .filter(|c| c.fraction > 0.0 && rand::random::<f64>() < c.fraction);
        let (variables, function) = match canary {
            Some(c) => (&c.variables, &matched.route.canary_function),
            None => (&matched.stage.variables, &matched.route.function),
        };
        let key: &FunctionKey =
            function
                .as_ref()
                .map_err(|reason| GatewayError::NoIntegration {
                    route: matched.route.object.clone(),
                    reason: reason.clone(),
                })?;
        let entry = table
            .function(key)
            .ok_or_else(|| GatewayError::NoIntegration {
                route: matched.route.object.clone(),
                reason: format!("function {key} does not exist"),
            })?;
        trace.function = Some(key.name.clone());
        let deadline = started + matched.route.timeout;

        let mut response = match entry.protocol {
            FunctionProtocol::Lambda => {
                let context = LambdaCall {
                    matched: &matched,
                    variables,
                    peer,
                    request_id,
                    request_time,
                    host: host.as_deref(),
                    api_id: &self.api_id,
                };
                self.call_lambda(request, entry, context, deadline, trace)
                    .await?
            }
            FunctionProtocol::Http => {
                self.call_http(request, entry, &matched, peer, request_id, deadline, trace)
                    .await?
            }
        };
        if matched.stage.canary.is_some() {
            let variant = if canary.is_some() { "canary" } else { "stable" };
            response
                .headers_mut()
                .insert("x-kfaas-stage-variant", HeaderValue::from_static(variant));
        }
        Ok(response)
    }

    async fn call_lambda(
        &self,
        request: Request<Incoming>,
        entry: &FunctionEntry,
        call: LambdaCall<'_>,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        let (parts, body) = request.into_parts();
        let body = read_body(body, self.limits.max_body_bytes).await?;
        let source_ip = call.peer.ip();
        let input = EventInput {
            method: &parts.method,
            headers: &parts.headers,
            query: parts.uri.query(),
            body: &body,
            raw_path: parts.uri.path(),
            path: call.matched.stage_path,
            resource_path: &call.matched.route.resource_path,
            route_key: &call.matched.route.route_key,
            path_parameters: &call.matched.path_parameters,
            stage: &call.matched.stage.name,
            stage_variables: call.variables,
            request_id: call.request_id,
            request_time: call.request_time,
            api_id: call.api_id,
            domain_name: call.host.map(|h| h.split(':').next().unwrap_or(h)),
            source_ip,
            protocol: version_name(parts.version),
            api_key_id: None,
            authorizer: None,
        };
        let format = call.matched.route.payload_format;
        let event = match format {
            PayloadFormat::V1 => build_v1(&input),
            PayloadFormat::V2 => build_v2(&input),
        }
        .map_err(|e| GatewayError::Event(e.to_string()))?;
        if event.len() > self.limits.max_event_bytes {
            return Err(GatewayError::PayloadTooLarge {
                limit: self.limits.max_event_bytes,
            });
        }

        let function = entry.key.to_string();
        let acquired = self.activator.acquire(&entry.key, deadline).await?;
        trace.cold = acquired.cold;
        let invoked = Instant::now();
        let outcome = tokio::time::timeout_at(
            deadline.into(),
            self.invoker
                .invoke_lambda(acquired.lease.instance.addr, call.request_id, event),
        )
        .await;
        drop(acquired);
        let integration = invoked.elapsed();
        trace.integration = Some(integration);
        self.metrics
            .integration_duration
            .get_or_create(&FunctionLabels {
                function: function.clone(),
            })
            .observe(integration.as_secs_f64());
        let outcome = outcome
            .map_err(|_| GatewayError::IntegrationTimeout {
                function: function.clone(),
                timeout_ms: call.matched.route.timeout.as_millis(),
            })?
            .map_err(|e| GatewayError::Unreachable {
                function: function.clone(),
                reason: e.to_string(),
            })?;
        let result = match outcome {
            LambdaOutcome::Result(result) => result,
            LambdaOutcome::Failed { kind, body } => {
                return Err(GatewayError::FunctionError {
                    function,
                    reason: format!("{kind}: {}", String::from_utf8_lossy(&body)),
                });
            }
        };
        let mapped = match format {
            PayloadFormat::V1 => map_v1(&result),
            PayloadFormat::V2 => map_v2(&result),
        }
        .map_err(|e| GatewayError::MalformedResponse {
            function,
            reason: e.to_string(),
        })?;
        Ok(mapped.map(full))
    }

    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    async fn call_http(
        &self,
        request: Request<Incoming>,
        entry: &FunctionEntry,
        matched: &Matched<'_>,
        peer: SocketAddr,
        request_id: &str,
        deadline: Instant,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        let limit = self.limits.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let path_and_query = match request.uri().query() {
            Some(q) => format!("{}?{q}", matched.stage_path),
            None => matched.stage_path.to_owned(),
        };
        let (mut parts, body) = request.into_parts();
        let forwarded_host = parts.headers.get(header::HOST).cloned();
        add_forwarded(&mut parts.headers, peer, request_id, forwarded_host);
        let body = Limited::new(body, limit)
            .map_err(|e| -> super::invoke::BoxError { e })
            .boxed();
        let request = Request::from_parts(parts, body);

        let function = entry.key.to_string();
        let acquired = self.activator.acquire(&entry.key, deadline).await?;
        trace.cold = acquired.cold;
        let invoked = Instant::now();
        let lease = acquired.lease;
        let response = tokio::time::timeout_at(
            deadline.into(),
            self.invoker
                .proxy(lease.instance.addr, request, &path_and_query),
        )
        .await
        .map_err(|_| GatewayError::IntegrationTimeout {
            function: function.clone(),
            timeout_ms: matched.route.timeout.as_millis(),
        })?
        .map_err(|e| GatewayError::Unreachable {
            function: function.clone(),
            reason: e.to_string(),
        })?;
        trace.integration = Some(invoked.elapsed());
        self.metrics
            .integration_duration
            .get_or_create(&FunctionLabels { function })
            .observe(invoked.elapsed().as_secs_f64());
        // The slot stays taken until the body has streamed out.
        Ok(response.map(|body| {
            LeasedBody {
                body,
                _lease: lease,
            }
            .map_err(|e| -> super::invoke::BoxError { Box::new(e) })
            .boxed()
        }))
    }
}

struct LambdaCall<'a> {
    matched: &'a Matched<'a>,
    variables: &'a std::collections::BTreeMap<String, String>,
    peer: SocketAddr,
    request_id: &'a str,
    request_time: chrono::DateTime<chrono::Utc>,
    host: Option<&'a str>,
    api_id: &'a str,
}

pin_project_lite::pin_project! {
    /// A response body that holds its instance slot until it is done.
    struct LeasedBody {
        #[pin]
        body: Incoming,
        _lease: super::activator::Lease,
    }
}

impl http_body::Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(e) => Err(GatewayError::BadRequest(e.to_string())),
    }
}

fn add_forwarded(
    headers: &mut http::HeaderMap,
    peer: SocketAddr,
    request_id: &str,
    host: Option<HeaderValue>,
) {
    let ip = peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}
