//! The routing table: an immutable value built from Function, Route and Stage objects, swapped
//! whole when they change. Lookups take no lock and allocate only the matched parameters.
//!
//! Precedence follows API Gateway: a stage is chosen by host and the longest base path; inside it
//! the most specific path wins (static segments over `{param}` over greedy `{name+}`, by the radix
//! router), and for the same path a route for the request's method wins over `ANY`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http::Method;

use super::{FastMap, activator::LoadSlot};
use crate::{
    api::{Function, FunctionProtocol, PayloadFormat, Route, Stage, StageSpec},
    autoscaler::ScalingPolicy,
    backend::FunctionKey,
    gateway::policy::compiled::{RoutePolicies, StagePolicies},
};

/// Methods with a router of their own; any other method only matches `ANY` routes.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const ANY: usize = METHODS.len();

/// What the gateway knows of one function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionEntry {
    pub key: FunctionKey,
    pub protocol: FunctionProtocol,
    pub timeout: Duration,
    pub concurrency: u32,
    pub policy: ScalingPolicy,
    /// The activator's counters of this function, found once per table rather than looked up
    /// by key on every request.
    pub load: LoadSlot,
}

/// One route as served by one stage.
#[derive(Debug)]
pub struct RouteEntry {
    /// `namespace/name` of the Route object.
    pub object: String,
    /// The API and the stage (its `stageName`) serving this entry.
    pub api: String,
    pub stage: String,
    /// `GET /orders/{id}` (or `ANY /...`), as events and access logs show it.
    pub route_key: String,
    /// The path template as written, `/orders/{id}`.
    pub resource_path: String,
    /// The function for normal requests; `None` when a stage variable it names is missing.
    pub function: Result<FunctionKey, String>,
    /// The function for canary requests (the canary's variables applied).
    pub canary_function: Result<FunctionKey, String>,
    pub payload_format: PayloadFormat,
    pub timeout: Duration,
    /// Auth, CORS and cache of the route, validated.
    pub policies: RoutePolicies,
    /// The Lambda authorizer's function, when the route has one.
    pub authorizer_function: Option<FunctionKey>,
    /// Metric handles, filled on the route's first request.
    pub metrics: std::sync::OnceLock<crate::gateway::metrics::RouteMetrics>,
    /// The stage's `accessLog.enabled`: its requests get access-log lines.
    pub access_log: bool,
}

/// A canary of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryEntry {
    /// Share of requests, 0.0..=1.0.
    pub fraction: f64,
    /// The stage's variables with the canary's overrides applied.
    pub variables: BTreeMap<String, String>,
}

/// One stage: where it is served and its routes.
#[derive(Debug)]
pub struct StageEntry {
    pub api: String,
    pub name: String,
    pub host: Option<String>,
    pub base_path: Option<String>,
    pub variables: BTreeMap<String, String>,
    pub canary: Option<CanaryEntry>,
    pub spec: StageSpec,
    /// IP rules and throttle of the stage, validated.
    pub policies: StagePolicies,
    routers: Vec<matchit::Router<Arc<RouteEntry>>>,
    /// Every route of the stage, for listings.
    pub routes: Vec<Arc<RouteEntry>>,
}

/// A matched request.
#[derive(Debug)]
pub struct Matched<'t> {
    pub stage: &'t StageEntry,
    pub route: &'t Arc<RouteEntry>,
    /// The path parameters as matched; decoded only when asked for (an `http` function never
    /// needs them, and decoding allocates).
    params: matchit::Params<'t, 't>,
    decoded: std::sync::OnceLock<Vec<(String, String)>>,
    /// The request path inside the stage (base path stripped).
    pub stage_path: &'t str,
}

impl Matched<'_> {
    /// Percent-decoded path parameters, in template order.
    pub fn path_parameters(&self) -> &[(String, String)] {
        self.decoded.get_or_init(|| {
            self.params
                .iter()
                .map(|(k, v)| (k.to_owned(), decode_param(v)))
                .collect()
        })
    }
}

/// Why nothing matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// No stage serves this host and path.
    NoStage,
    /// The stage has no route for this method and path.
    NoRoute,
}

/// A problem found while building the table; the object it names is left out, the rest serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWarning {
    pub object: String,
    pub message: String,
}

/// The routing table.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Host-specific stages first, then longer base paths first.
    stages: Vec<StageEntry>,
    functions: FastMap<FunctionKey, Arc<FunctionEntry>>,
}

/// The objects a table is built from.
#[derive(Debug, Default, Clone)]
pub struct TableInput {
    pub functions: Vec<Function>,
    pub routes: Vec<Route>,
    pub stages: Vec<Stage>,
}

fn namespace_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

impl RouteTable {
    /// Builds the table. Objects that cannot be served are left out with a warning.
    pub fn build(input: &TableInput) -> (Self, Vec<TableWarning>) {
        let mut warnings = Vec::new();
        let functions: FastMap<_, _> = input
            .functions
            .iter()
            .map(|f| {
                let key = FunctionKey::new(namespace_of(&f.metadata), name_of(&f.metadata));
                let entry = FunctionEntry {
                    key: key.clone(),
                    protocol: f.spec.protocol,
                    timeout: Duration::from_secs(
                        u64::try_from(f.spec.timeout_seconds).unwrap_or(3),
                    ),
                    concurrency: concurrency(&f.spec),
                    policy: scaling_policy(&f.spec),
                    load: LoadSlot::default(),
                };
                (key, Arc::new(entry))
            })
            .collect();

        let mut stages = Vec::new();
        let mut routes: Vec<&Route> = input.routes.iter().collect();
        // A stable order makes conflicts resolve the same way on every build.
        routes.sort_by(|a, b| {
            (namespace_of(&a.metadata), name_of(&a.metadata))
                .cmp(&(namespace_of(&b.metadata), name_of(&b.metadata)))
        });
        for stage in &input.stages {
            if let Some(entry) = build_stage(stage, &routes, &functions, &mut warnings) {
                stages.push(entry);
            }
        }
        stages.sort_by(|a, b| {
            let key = |s: &StageEntry| {
                (
                    s.host.is_none(),
                    std::cmp::Reverse(s.base_path.as_deref().map_or(0, str::len)),
                    s.api.clone(),
                    s.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        for pair in stages.windows(2) {
            if pair[0].host == pair[1].host && pair[0].base_path == pair[1].base_path {
                warnings.push(TableWarning {
                    object: format!("Stage/{}", pair[1].name),
                    message: format!(
                        "serves the same host and base path as stage {} of api {}; that stage wins",
                        pair[0].name, pair[0].api
                    ),
                });
            }
        }
        (Self { stages, functions }, warnings)
    }

    /// Finds the stage and route for a request.
    pub fn lookup<'t>(
        &'t self,
        host: Option<&str>,
        method: &Method,
        path: &'t str,
    ) -> Result<Matched<'t>, Miss> {
        let host = host.map(host_without_port);
        let (stage, stage_path) = self
            .stages
            .iter()
            .find_map(|s| s.accepts(host, path).map(|p| (s, p)))
            .ok_or(Miss::NoStage)?;
        let method_index = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(ANY);
        let found = stage.routers[method_index]
            .at(stage_path)
            .map_err(|_| Miss::NoRoute)?;
        Ok(Matched {
            stage,
            route: found.value,
            params: found.params,
            decoded: std::sync::OnceLock::new(),
            stage_path,
        })
    }

    pub fn function(&self, key: &FunctionKey) -> Option<&Arc<FunctionEntry>> {
        self.functions.get(key)
    }

    pub fn functions(&self) -> impl Iterator<Item = &Arc<FunctionEntry>> {
        self.functions.values()
    }

    pub fn stages(&self) -> &[StageEntry] {
        &self.stages
    }
}

impl StageEntry {
    /// The path inside the stage when this stage serves `host` + `path`.
    fn accepts<'p>(&self, host: Option<&str>, path: &'p str) -> Option<&'p str> {
        if let Some(want) = &self.host
            && !host.is_some_and(|h| h.eq_ignore_ascii_case(want))
        {
            return None;
        }
        match &self.base_path {
            None => Some(path),
            Some(base) => {
                let rest = path.strip_prefix(base.as_str())?;
                if rest.is_empty() {
                    Some("/")
                } else if rest.starts_with('/') {
                    Some(rest)
                } else {
                    None
                }
            }
        }
    }
}

fn build_stage(
    stage: &Stage,
    routes: &[&Route],
    functions: &FastMap<FunctionKey, Arc<FunctionEntry>>,
    warnings: &mut Vec<TableWarning>,
) -> Option<StageEntry> {
    let namespace = namespace_of(&stage.metadata);
    let name = stage
        .spec
        .stage_name
        .clone()
        .unwrap_or_else(|| name_of(&stage.metadata).to_owned());
    let policies = match StagePolicies::build(namespace, &stage.spec.api, &name, &stage.spec) {
        Ok(p) => p,
        Err(e) => {
            // IP rules or a throttle that cannot be enforced: the stage must not serve open.
            warnings.push(TableWarning {
                object: format!("Stage/{}", name_of(&stage.metadata)),
                message: format!("not served: {e}"),
            });
            return None;
        }
    };
    let canary = stage.spec.canary.as_ref().map(|c| {
        let mut variables = stage.spec.variables.clone();
        variables.extend(c.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        CanaryEntry {
            fraction: (c.weight / 100.0).clamp(0.0, 1.0),
            variables,
        }
    });
    let mut routers: Vec<matchit::Router<Arc<RouteEntry>>> =
        (0..=ANY).map(|_| matchit::Router::new()).collect();
    let mut entries = Vec::new();
    let mut pending = Vec::new();
    for route in routes
        .iter()
        .filter(|r| r.spec.api == stage.spec.api && namespace_of(&r.metadata) == namespace)
    {
        let object = format!("Route/{}", name_of(&route.metadata));
        let resolve = |vars: &BTreeMap<String, String>| -> Result<FunctionKey, String> {
            let name = substitute_stage_variables(&route.spec.function, vars)?;
            let key = FunctionKey::new(namespace, name);
            if functions.contains_key(&key) {
                Ok(key)
            } else {
                Err(format!("function {key} does not exist"))
            }
        };
        let function = resolve(&stage.spec.variables);
        let canary_function = canary
            .as_ref()
            .map_or_else(|| function.clone(), |c| resolve(&c.variables));
        for problem in [&function, &canary_function]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            warnings.push(TableWarning {
                object: object.clone(),
                message: format!("in stage {name}: {problem}"),
            });
        }
        let template = match to_router_template(&route.spec.path) {
            Ok(t) => t,
            Err(message) => {
                warnings.push(TableWarning { object, message });
                continue;
            }
        };
        let policies = match RoutePolicies::build(
            &route.spec.auth,
            route.spec.cors.as_ref(),
            route.spec.cache.as_ref(),
            namespace,
        ) {
            Ok(p) => p,
            Err(e) => {
                // A route must never be served without the auth it asks for.
                warnings.push(TableWarning {
                    object,
                    message: format!("not served: {e}"),
                });
                continue;
            }
        };
        let authorizer_function = match &route.spec.auth.authorizer {
            Some(a) if route.spec.auth.kind == crate::api::AuthType::Function => {
                let key = FunctionKey::new(namespace, a.function.clone());
                if !functions.contains_key(&key) {
                    warnings.push(TableWarning {
                        object: object.clone(),
                        message: format!(
                            "authorizer function {key} does not exist; requests get 500"
                        ),
                    });
                }
                Some(key)
            }
            _ => None,
        };
        let methods: Vec<String> = route
            .spec
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let route_key_method = if methods.len() == 1 {
            methods[0].clone()
        } else if methods.iter().any(|m| m == "ANY") {
            "ANY".into()
        } else {
            methods.join(",")
        };
        let entry = Arc::new(RouteEntry {
            object: format!("{namespace}/{}", name_of(&route.metadata)),
            api: stage.spec.api.clone(),
            stage: name.clone(),
            route_key: format!("{route_key_method} {}", route.spec.path),
            resource_path: route.spec.path.clone(),
            function,
            canary_function,
            payload_format: route.spec.payload_format,
            timeout: Duration::from_millis(
                u64::try_from(route.spec.timeout_millis).unwrap_or(29_000),
            ),
            policies,
            authorizer_function,
            metrics: std::sync::OnceLock::new(),
            access_log: stage.spec.access_log.enabled,
        });
        let mut slots: Vec<usize> = Vec::new();
        for method in &methods {
            match METHODS.iter().position(|m| m == method) {
                Some(i) => slots.push(i),
                None if method == "ANY" => slots.extend(0..=ANY),
                None => warnings.push(TableWarning {
                    object: object.clone(),
                    message: format!("unknown method {method}"),
                }),
            }
        }
        let is_any = methods.iter().any(|m| m == "ANY");
        pending.push((is_any, object, template, slots, entry));
    }
    // Specific methods first: for the same path, a GET route beats an ANY route in the GET router.
    pending.sort_by_key(|(is_any, ..)| *is_any);
    let mut taken: std::collections::HashSet<(usize, String)> = std::collections::HashSet::new();
    for (is_any, object, template, slots, entry) in pending {
        let mut inserted = false;
        let mut warned = false;
        for slot in slots {
            if is_any && taken.contains(&(slot, template.clone())) {
                continue;
            }
            match routers[slot].insert(template.clone(), entry.clone()) {
                Ok(()) => {
                    taken.insert((slot, template.clone()));
                    inserted = true;
                }
                Err(e) if !warned => {
                    warned = true;
                    warnings.push(TableWarning {
                        object: object.clone(),
                        message: format!(
                            "path {} conflicts with another route of api {}: {e}",
                            entry.resource_path, stage.spec.api
                        ),
                    });
                }
                Err(_) => {}
            }
        }
        if inserted {
            entries.push(entry);
        }
    }
    Some(StageEntry {
        api: stage.spec.api.clone(),
        name,
        host: stage.spec.host.clone(),
        base_path: stage.spec.base_path.clone(),
        variables: stage.spec.variables.clone(),
        canary,
        spec: stage.spec.clone(),
        policies,
        routers,
        routes: entries,
    })
}

/// Invocations one instance serves at once: as set, else 1 for `lambda` and 100 for `http`.
pub fn concurrency(spec: &crate::api::FunctionSpec) -> u32 {
    let default = match spec.protocol {
        FunctionProtocol::Lambda => 1,
        FunctionProtocol::Http => 100,
    };
    spec.concurrency
        .map_or(default, |c| u32::try_from(c).unwrap_or(1))
        .max(1)
}

/// The autoscaler's view of a function's scaling settings; `replicas` pins the count.
pub fn scaling_policy(spec: &crate::api::FunctionSpec) -> ScalingPolicy {
    let to_u32 = |v: i32| u32::try_from(v).unwrap_or(0);
    let concurrency = concurrency(spec);
    let (min, max) = match spec.replicas {
        Some(pinned) => (to_u32(pinned), to_u32(pinned)),
        None => (
            to_u32(spec.scaling.min_replicas),
            to_u32(spec.scaling.max_replicas),
        ),
    };
    ScalingPolicy {
        min_replicas: min,
        max_replicas: max.max(min),
        target_concurrency: spec
            .scaling
            .target_concurrency
            .map_or(concurrency, to_u32)
            .max(1),
        idle_timeout: Duration::from_secs(
            u64::try_from(spec.scaling.idle_timeout_seconds).unwrap_or(60),
        ),
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Replaces `${stageVariables.name}` with the variable's value.
pub fn substitute_stage_variables(
    template: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String, String> {
    const OPEN: &str = "${stageVariables.";
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{stageVariables...}} in {template:?}"))?;
        let name = &after[..end];
        let value = variables
            .get(name)
            .ok_or_else(|| format!("stage variable {name} is not set"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `/orders/{id}` stays; `/files/{proxy+}` becomes matchit's `/files/{*proxy}`.
fn to_router_template(path: &str) -> Result<String, String> {
    let mut out = String::with_capacity(path.len() + 2);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            match inner.strip_suffix('+') {
                Some(name) => {
                    out.push_str("{*");
                    out.push_str(name);
                    out.push('}');
                }
                None => {
                    out.push('{');
                    out.push_str(inner);
                    out.push('}');
                }
            }
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "path {path:?}: segment {segment:?} mixes text and a parameter"
            ));
        } else {
            out.push_str(segment);
        }
    }
    Ok(out)
}

fn decode_param(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
