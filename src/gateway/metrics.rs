//! Prometheus metrics of the gateway, served on the admin port. Label values are bounded
//! (api, stage, route key, function, status class, error category), never request ids or keys.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub api: String,
    pub stage: String,
    pub route: String,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteDurationLabels {
    pub api: String,
    pub stage: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Every metric of the gateway.
pub struct GatewayMetrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_duration: Family<RouteDurationLabels, Histogram, fn() -> Histogram>,
    pub integration_duration: Family<FunctionLabels, Histogram, fn() -> Histogram>,
    pub cold_starts: Family<FunctionLabels, Counter>,
    pub held_requests: Family<FunctionLabels, Gauge>,
    pub instances: Family<FunctionLabels, Gauge>,
    pub errors: Family<ErrorLabels, Counter>,
    pub cache_requests: Family<CacheLabels, Counter>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kfaas_gateway");
        let requests = Family::default();
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let integration_duration =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let cold_starts = Family::default();
        let held_requests = Family::default();
        let instances = Family::default();
        let errors = Family::default();
        let cache_requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response, by route",
            request_duration.clone(),
        );
        registry.register(
            "integration_duration_seconds",
            "Time the function took to answer, by function",
            integration_duration.clone(),
        );
        registry.register(
            "cold_starts",
            "Requests that waited for a function to scale from zero",
            cold_starts.clone(),
        );
        registry.register(
            "held_requests",
            "Requests the activator holds while a function has no free instance",
            held_requests.clone(),
        );
        registry.register(
            "instances",
            "Ready instances, by function",
            instances.clone(),
        );
        registry.register(
            "errors",
            "Answers the gateway gave itself, by category",
            errors.clone(),
        );
        registry.register(
            "cache_requests",
            "Response cache lookups of cached routes, by result (hit, miss)",
            cache_requests.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            integration_duration,
            cold_starts,
            held_requests,
            instances,
            errors,
            cache_requests,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The metrics of one route, looked up once and kept with the route so the request path does
/// not hash label sets.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// Requests by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    by_class: [Counter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }
}

impl GatewayMetrics {
    /// The metric handles of a route (`api`, `stage`, `route` labels).
    pub fn route(&self, api: &str, stage: &str, route: &str) -> RouteMetrics {
        let counter = |status_class| {
            self.requests.get_or_create_owned(&RouteLabels {
                api: api.to_owned(),
                stage: stage.to_owned(),
                route: route.to_owned(),
                status_class,
            })
        };
        RouteMetrics {
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(counter),
            duration: self
                .request_duration
                .get_or_create_owned(&RouteDurationLabels {
                    api: api.to_owned(),
                    stage: stage.to_owned(),
                    route: route.to_owned(),
                }),
        }
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
