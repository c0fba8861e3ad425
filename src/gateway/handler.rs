//! One request through the gateway: stage and route match → CORS preflight → canary → policies
//! (IP rules, authorizer, API key, throttle and quota) → cache → activator → invoke → response
//! mapping, then CORS headers, one access-log line and the metrics.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, header, request::Parts};
use tokio::sync::mpsc;

use super::{
    access_log::{AccessLog, AccessRecord},
    activator::Activator,
    error::GatewayError,
    event::EventInput,
    invoke::{Body, Invoker, full},
    metrics::{ErrorLabels, GatewayMetrics},
    policy::{
        cache::{CACHE_STATUS_HEADER, CacheLookup, ResponseCache},
        clock::SystemClock,
        compiled::{PolicyLimits, PolicyState},
        cors::CorsPolicy,
        jwks::HttpJwksFetcher,
    },
    request_body::RequestBody,
    table::{FunctionEntry, Matched, RouteEntry, RouteTable, host_without_port},
};
use crate::{
    api::FunctionProtocol,
    autoscaler::{ScalingPolicy, driver::PolicySource},
    backend::{Backend, FunctionKey},
};

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
    /// Keys, limiter counters, JWKS and the caches; outlive table rebuilds.
    pub policies: Arc<PolicyState>,
    /// Shown as `requestContext.apiId`.
    pub api_id: String,
    /// Metrics of requests that matched no route.
    pub unrouted: super::metrics::RouteMetrics,
}

impl Gateway {
    /// A gateway over `backend` with an empty table (its configuration is installed next, see
    /// [`super::config`]), API Gateway's limits and the system clock: what `kfaas local` and
    /// `kfaas gateway` both serve with. Returns the demand channel the autoscaler reads.
    pub fn new(
        backend: Arc<dyn Backend>,
        max_held_requests: u32,
        access_log: bool,
        api_id: String,
    ) -> (Self, mpsc::UnboundedReceiver<FunctionKey>) {
        let metrics = Arc::new(GatewayMetrics::new());
        let (demand_tx, demand_rx) = mpsc::unbounded_channel();
        let activator = Arc::new(Activator::new(
            backend,
            max_held_requests,
            demand_tx,
            Arc::clone(&metrics),
        ));
        let gateway = Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            activator,
            invoker: Invoker::new(),
            unrouted: metrics.route("", "", ""),
            metrics,
            access_log: if access_log {
                AccessLog::spawn(Box::new(std::io::stdout()))
            } else {
                AccessLog::disabled()
            },
            limits: Limits::default(),
            policies: Arc::new(PolicyState::new(
                SystemClock::shared(),
                Arc::new(HttpJwksFetcher::new(Duration::from_secs(5))),
                PolicyLimits::default(),
            )),
            api_id,
        };
        (gateway, demand_rx)
    }
}

/// The autoscaler scales the functions of the table being served.
impl PolicySource for Gateway {
    fn policies(&self) -> Vec<(FunctionKey, ScalingPolicy)> {
        self.table
            .load()
            .functions()
            .map(|f| (f.key.clone(), f.policy.clone()))
            .collect()
    }
}

/// What is known of a request by the time it is answered, for the log line and CORS.
#[derive(Default)]
pub(super) struct Trace {
    pub route: Option<Arc<RouteEntry>>,
    pub function: Option<Arc<FunctionEntry>>,
    pub integration: Option<Duration>,
    pub cold: bool,
    pub source_ip: Option<IpAddr>,
    pub api_key_id: Option<String>,
    /// The answer is a CORS preflight, which carries its CORS headers already.
    pub preflight: bool,
}

/// A matched request on its way through the policies to its function.
pub(super) struct Call<'a> {
    pub parts: &'a Parts,
    pub matched: &'a Matched<'a>,
    pub variables: &'a BTreeMap<String, String>,
    pub source_ip: IpAddr,
    /// The request id, as the header value it travels in (see [`new_request_id`]).
    pub request_id: &'a HeaderValue,
    pub request_time: &'a WallTime,
    pub host: Option<&'a str>,
    pub api_id: &'a str,
}

impl Call<'_> {
    /// The request id as text, for events and authorizers.
    pub fn request_id_text(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The event input for this request (the function's or its authorizer's).
    pub fn event_input<'e>(
        &'e self,
        body: &'e [u8],
        api_key_id: Option<&'e str>,
        authorizer: Option<&'e serde_json::Value>,
    ) -> EventInput<'e> {
        EventInput {
            method: &self.parts.method,
            headers: &self.parts.headers,
            query: self.parts.uri.query(),
            body,
            raw_path: self.parts.uri.path(),
            path: self.matched.stage_path,
            resource_path: &self.matched.route.resource_path,
            route_key: &self.matched.route.route_key,
            path_parameters: self.matched.path_parameters(),
            stage: &self.matched.stage.name,
            stage_variables: self.variables,
            request_id: self.request_id_text(),
            request_time: self.request_time.get(),
            api_id: self.api_id,
            domain_name: self.host.map(host_without_port),
            source_ip: self.source_ip,
            protocol: version_name(self.parts.version),
            api_key_id,
            authorizer,
        }
    }
}

impl Gateway {
    /// Answers one request. Never fails: every failure becomes API Gateway's answer.
    ///
    /// The request's head is borrowed from the connection, which keeps it: a future holds
    /// what it is given, and this one and every future under it are moved by copying.
    pub async fn handle(
        &self,
        parts: &Parts,
        body: RequestBody,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_time = WallTime::new(started);
        let request_id = new_request_id();
        let origin = parts.headers.get(header::ORIGIN).cloned();
        let protocol = version_name(parts.version);
        let mut trace = Trace::default();

        let clock = RequestClock {
            started,
            request_time: &request_time,
        };
        let result = self
            .serve(parts, body, peer, &request_id, clock, &mut trace)
            .await;
        let (mut response, error) = match result {
            Ok(response) => (response, None),
            Err(e) => (e.to_response().map(full), Some(e)),
        };
        // CORS headers on every answer of a CORS route, the gateway's own errors included.
        if let Some(cors) = trace
            .route
            .as_ref()
            .and_then(|r| r.policies.cors.as_ref())
            .filter(|_| !trace.preflight)
        {
            let mut request_headers = HeaderMap::new();
            if let Some(origin) = origin {
                request_headers.insert(header::ORIGIN, origin);
            }
            cors.apply(&request_headers, response.headers_mut());
        }

        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        if let Some(e) = &error {
            self.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    category: e.category(),
                })
                .inc();
        }
        let api = trace.route.as_ref().map_or("", |r| r.api.as_str());
        let stage = trace.route.as_ref().map_or("", |r| r.stage.as_str());
        let route_key = trace.route.as_ref().map_or("", |r| r.route_key.as_str());
        match &trace.route {
            Some(route) => route
                .metrics
                .get_or_init(|| self.metrics.route(api, stage, route_key))
                .observe(status, elapsed.as_secs_f64()),
            None => self.unrouted.observe(status, elapsed.as_secs_f64()),
        }
        // A stage may turn its lines off; a request no stage took is logged by the gateway's
        // setting alone.
        if !self.access_log.enabled() || trace.route.as_ref().is_some_and(|r| !r.access_log) {
            response.headers_mut().insert(APIGW_REQUEST_ID, request_id);
            return response;
        }
        let response_length = http_body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        self.access_log.log(&AccessRecord {
            request_id: request_id.to_str().unwrap_or_default(),
            ip: trace.source_ip.unwrap_or(peer.ip()),
            request_time: request_time.get(),
            http_method: parts.method.as_str(),
            path: parts.uri.path(),
            route_key,
            stage,
            api,
            status,
            protocol,
            response_length,
            response_latency: round_ms(elapsed),
            integration_latency: trace.integration.map(round_ms),
            function: trace.function.as_ref().map(|f| f.key.name.as_str()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            api_key_id: trace.api_key_id.as_deref(),
            cold_start: trace.cold,
            error: error.as_ref().map(GatewayError::category),
            error_message: error.as_ref().map(ToString::to_string),
        });
        response.headers_mut().insert(APIGW_REQUEST_ID, request_id);
        response
    }

    async fn serve(
        &self,
        parts: &Parts,
        body: RequestBody,
        peer: SocketAddr,
        request_id: &HeaderValue,
        clock: RequestClock<'_>,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + parts.uri.path().len()
            + parts.uri.query().map_or(0, str::len);
        if header_bytes > self.limits.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge {
                limit: self.limits.max_header_bytes,
            });
        }

        let table = self.table.load_full();
        let path = parts.uri.path();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));

        // A CORS preflight is answered for the route of the method it asks about.
        if CorsPolicy::is_preflight(&parts.method, &parts.headers)
            && let Some(asked) = parts
                .headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
            && let Ok(m) = table.lookup(host, &asked, path)
            && let Some(cors) = &m.route.policies.cors
        {
            trace.route = Some(Arc::clone(m.route));
            trace.preflight = true;
            return Ok(cors.preflight(&parts.headers).map(full));
        }

        let matched = table
            .lookup(host, &parts.method, path)
            .map_err(|_| GatewayError::NotFound)?;
        trace.route = Some(Arc::clone(matched.route));

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
        let stage_policies = &matched.stage.policies;
        let source_ip = stage_policies.ip.source_ip(peer.ip(), &parts.headers);
        trace.source_ip = Some(source_ip);
        let call = Call {
            parts,
            matched: &matched,
            variables,
            source_ip,
            request_id,
            request_time: clock.request_time,
            host,
            api_id: &self.api_id,
        };
        let deadline = clock.started + matched.route.timeout;
        // Only a lambda function's event carries the authorizer's output; for an http function
        // it is not built at all.
        let found = function.as_ref().ok().and_then(|k| table.function(k));
        let wants_event = found.is_none_or(|f| f.protocol == FunctionProtocol::Lambda);
        let admitted = self
            .admit(&call, &table, deadline, wants_event, trace)
            .await?;
        trace.api_key_id = admitted.api_key_id.clone();

        let key = function
            .as_ref()
            .map_err(|reason| GatewayError::NoIntegration {
                route: matched.route.object.clone(),
                reason: reason.clone(),
            })?;
        let entry = found.ok_or_else(|| GatewayError::NoIntegration {
            route: matched.route.object.clone(),
            reason: format!("function {key} does not exist"),
        })?;
        trace.function = Some(Arc::clone(entry));

        let mut response = match entry.protocol {
            FunctionProtocol::Lambda => {
                // The cache holds mapped answers of lambda functions (http answers stream).
                let cache_key = matched.route.policies.cache.as_ref().map(|policy| {
                    let key = ResponseCache::key(
                        &stage_policies.id,
                        &matched.route.route_key,
                        &parts.method,
                        policy,
                        &parts.headers,
                        parts.uri.query(),
                        matched.path_parameters(),
                    );
                    let lookup =
                        self.policies
                            .responses
                            .lookup(policy, &parts.method, &parts.headers, &key);
                    (policy, key, lookup)
                });
                if let Some((_, _, CacheLookup::Hit(hit))) = &cache_key {
                    self.count_cache("hit");
                    let mut response = Response::new(full(hit.body.clone()));
                    *response.status_mut() = hit.status;
                    *response.headers_mut() = hit.headers.clone();
                    response
                        .headers_mut()
                        .insert(CACHE_STATUS_HEADER, HeaderValue::from_static("HIT"));
                    response
                } else {
                    // Boxed: the event building and mapping would otherwise make every request's
                    // future (http ones too) larger, and futures are moved by copying.
                    let mapped =
                        Box::pin(self.call_lambda(&call, body, entry, &admitted, deadline, trace))
                            .await?;
                    let (mut head, bytes) = mapped.into_parts();
                    if let Some((policy, key, lookup)) = cache_key {
                        let status = lookup.header_value();
                        if !matches!(lookup, CacheLookup::Bypass) {
                            self.count_cache("miss");
                            self.policies.responses.store(
                                policy,
                                &parts.method,
                                key,
                                head.status,
                                &head.headers,
                                &bytes,
                            );
                        }
                        head.headers
                            .insert(CACHE_STATUS_HEADER, HeaderValue::from_static(status));
                    }
                    Response::from_parts(head, full(bytes))
                }
            }
            FunctionProtocol::Http => {
                let forward = super::integration::Forward {
                    stage_path: matched.stage_path,
                    timeout: matched.route.timeout,
                    peer,
                    request_id,
                };
                // Boxed for the same reason: an unstarted future is moved by copying all of it,
                // and each request's future would otherwise carry this one's size twice.
                self.call_http(&forward, parts, body, entry, deadline, trace)
                    .await?
            }
        };
        if matched.stage.canary.is_some() {
            let variant = if canary.is_some() { "canary" } else { "stable" };
            response
                .headers_mut()
                .insert(STAGE_VARIANT, HeaderValue::from_static(variant));
        }
        Ok(response)
    }

    fn count_cache(&self, result: &'static str) {
        self.metrics
            .cache_requests
            .get_or_create(&super::metrics::CacheLabels { result })
            .inc();
    }
}

/// The response header carrying the request id, as API Gateway's HTTP APIs name it.
const APIGW_REQUEST_ID: HeaderName = HeaderName::from_static("apigw-requestid");
/// Which side of a stage's canary answered.
const STAGE_VARIANT: HeaderName = HeaderName::from_static("x-kfaas-stage-variant");

/// When a request arrived: the monotonic instant deadlines count from, and the wall-clock time
/// events and the access log show.
#[derive(Clone, Copy)]
struct RequestClock<'a> {
    started: Instant,
    request_time: &'a WallTime,
}

/// A request's wall-clock time of arrival, worked out when first asked for from the monotonic
/// instant it arrived at: a proxied request with the access log off never asks, and a clock
/// read is a visible share of its CPU; an event built later (after an authorizer, a slow body)
/// still shows the time the request came.
pub(super) struct WallTime {
    arrived: Instant,
    at: std::sync::OnceLock<chrono::DateTime<chrono::Utc>>,
}

impl WallTime {
    pub fn new(arrived: Instant) -> Self {
        Self {
            arrived,
            at: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> chrono::DateTime<chrono::Utc> {
        *self.at.get_or_init(|| {
            let now = chrono::Utc::now();
            chrono::Duration::from_std(self.arrived.elapsed())
                .ok()
                .and_then(|since| now.checked_sub_signed(since))
                .unwrap_or(now)
        })
    }
}

/// A new request id (a UUID v4), made once as the header value it travels in: in the answer,
/// to `http` functions (`X-Request-Id`) and to the runtime. The ids of a thread are cut from one
/// shared buffer, so making one allocates nothing and copying it only counts a reference.
fn new_request_id() -> HeaderValue {
    const ID: usize = uuid::fmt::Hyphenated::LENGTH;
    thread_local! {
        static IDS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    let mut text = [0u8; ID];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let id = IDS
        .try_with(|ids| {
            let mut ids = ids.borrow_mut();
            if ids.capacity() < ID {
                *ids = BytesMut::with_capacity(ID * 64);
            }
            ids.extend_from_slice(text.as_bytes());
            ids.split().freeze()
        })
        .unwrap_or_else(|_| Bytes::copy_from_slice(text.as_bytes()));
    HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Milliseconds with microsecond precision, as the access log shows them.
fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub(super) fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_time_asked_for_late_is_still_the_time_of_arrival() {
        let Some(arrived) = Instant::now().checked_sub(Duration::from_secs(2)) else {
            return; // a monotonic clock younger than 2 s: nothing to go back to
        };
        let time = WallTime::new(arrived);
        let expected = chrono::Utc::now() - chrono::Duration::seconds(2);
        let shown = time.get();
        assert!(
            (shown - expected).num_milliseconds().abs() < 200,
            "shown {shown}, expected about {expected}"
        );
        // Asked again, the same time.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(time.get(), shown);
    }
}
