//! The policies of one stage and one route, validated once when the routing table is built, and
//! the long-lived state they share (keys, counters, caches), so the request path only reads.
//!
//! The order the gateway applies them in, as API Gateway does:
//! 1. CORS preflight ([`RoutePolicies::cors`]): answered before any auth, as HTTP APIs do;
//! 2. IP rules ([`StagePolicies::ip`]) on [`IpPolicy::source_ip`];
//! 3. the authorizer: JWT ([`PolicyState::jwt`]) or Lambda ([`RoutePolicies::authorizer`] with
//!    [`PolicyState::decisions`]);
//! 4. the API key ([`PolicyState::api_keys`]) when the route requires one;
//! 5. throttle and quota ([`PolicyState::limiter`] with [`StagePolicies::throttle`] and the key);
//! 6. the response cache ([`PolicyState::responses`]);
//! 7. CORS headers on every answer, the function's and the gateway's own errors
//!    ([`CorsPolicy::apply`]).

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{
    api_keys::ApiKeyStore,
    authorizer::{AuthorizerConfig, AuthorizerError, DecisionCache},
    cache::ResponseCache,
    clock::SharedClock,
    cors::CorsPolicy,
    ip_rules::{IpPolicy, IpRuleError},
    jwks::{JwksCache, JwksFetcher},
    jwt::{JwtConfig, JwtVerifier},
    limiter::{LimitError, ThrottleSpec, UsagePlanLimiter},
};
use crate::api::{AuthType, Cors, RouteAuth, RouteCache, StageSpec};

/// A policy setting that cannot be served; the object it belongs to should be left out (a
/// route without its authorizer must not be served open).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyConfigError {
    #[error(transparent)]
    IpRules(#[from] IpRuleError),
    #[error("stage throttle: {0}")]
    Throttle(#[from] LimitError),
    #[error("auth.authorizer: {0}")]
    Authorizer(#[from] AuthorizerError),
    #[error("auth.type is {0:?} but its settings are missing or incomplete")]
    MissingAuthSettings(AuthType),
}

/// A stage's policies.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePolicies {
    /// `namespace/api/stage`: the stage's bucket in the limiter and its part of cache keys.
    pub id: String,
    /// `namespace/api`: what usage plans grant keys for. APIs are namespaced, so a plan in one
    /// namespace never admits keys to a same-named API in another.
    pub api_scope: String,
    /// Client address and allow/deny lists (always present: it also knows trusted proxies).
    pub ip: IpPolicy,
    pub throttle: Option<ThrottleSpec>,
}

impl StagePolicies {
    pub fn build(
        namespace: &str,
        api: &str,
        stage: &str,
        spec: &StageSpec,
    ) -> Result<Self, PolicyConfigError> {
        let ip = match &spec.ip_rules {
            Some(rules) => IpPolicy::new(rules)?,
            None => IpPolicy::default(),
        };
        let throttle = spec
            .throttle
            .as_ref()
            .map(ThrottleSpec::try_from)
            .transpose()?;
        Ok(Self {
            id: format!("{namespace}/{api}/{stage}"),
            api_scope: format!("{namespace}/{api}"),
            ip,
            throttle,
        })
    }
}

/// A route's policies.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicies {
    pub api_key_required: bool,
    pub jwt: Option<JwtConfig>,
    pub authorizer: Option<AuthorizerConfig>,
    pub cors: Option<CorsPolicy>,
    /// Only when caching is on (`ttlSeconds` > 0).
    pub cache: Option<RouteCache>,
}

impl RoutePolicies {
    /// `namespace` is the Route's: authorizer functions and JWKS Secrets are looked up there.
    pub fn build(
        auth: &RouteAuth,
        cors: Option<&Cors>,
        cache: Option<&RouteCache>,
        namespace: &str,
    ) -> Result<Self, PolicyConfigError> {
        let (jwt, authorizer) = match auth.kind {
            AuthType::None => (None, None),
            AuthType::Jwt => {
                let cfg = auth
                    .jwt
                    .as_ref()
                    .and_then(|j| JwtConfig::from_spec(j, namespace))
                    .ok_or(PolicyConfigError::MissingAuthSettings(AuthType::Jwt))?;
                (Some(cfg), None)
            }
            AuthType::Function => {
                let spec = auth
                    .authorizer
                    .as_ref()
                    .ok_or(PolicyConfigError::MissingAuthSettings(AuthType::Function))?;
                (None, Some(AuthorizerConfig::from_spec(spec, namespace)?))
            }
        };
        Ok(Self {
            api_key_required: auth.api_key_required,
            jwt,
            authorizer,
            cors: cors.map(CorsPolicy::new),
            cache: cache.filter(|c| c.ttl_seconds > 0).cloned(),
        })
    }
}

/// Sizes of the shared caches.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    /// Response cache size, bytes.
    pub response_cache_bytes: u64,
    /// Lambda authorizer answers kept.
    pub authorizer_decisions: u64,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            response_cache_bytes: 64 * 1024 * 1024,
            authorizer_decisions: 100_000,
        }
    }
}

/// The state the policies share across requests and across routing-table rebuilds.
#[derive(Debug)]
pub struct PolicyState {
    pub clock: SharedClock,
    /// Swapped whole when UsagePlans or their Secrets change.
    pub api_keys: ArcSwap<ApiKeyStore>,
    pub limiter: UsagePlanLimiter,
    pub jwt: JwtVerifier,
    pub decisions: DecisionCache,
    pub responses: ResponseCache,
}

impl PolicyState {
    pub fn new(clock: SharedClock, fetcher: Arc<dyn JwksFetcher>, limits: PolicyLimits) -> Self {
        let jwks = Arc::new(JwksCache::new(fetcher, clock.clone()));
        Self {
            api_keys: ArcSwap::from_pointee(ApiKeyStore::default()),
            limiter: UsagePlanLimiter::new(clock.clone()),
            jwt: JwtVerifier::new(jwks, clock.clone()),
            decisions: DecisionCache::new(clock.clone(), limits.authorizer_decisions),
            responses: ResponseCache::new(clock.clone(), limits.response_cache_bytes),
            clock,
        }
    }

    /// Installs a new key store and forgets the counters of keys it no longer holds.
    /// `stage_ids` are the [`StagePolicies::id`]s still served.
    pub fn set_api_keys<'s>(
        &self,
        store: ApiKeyStore,
        stage_ids: impl IntoIterator<Item = &'s str>,
    ) {
        let stages: std::collections::HashSet<&str> = stage_ids.into_iter().collect();
        let keys: std::collections::HashSet<String> =
            store.limit_ids().map(str::to_owned).collect();
        self.api_keys.store(Arc::new(store));
        self.limiter
            .retain(|s| stages.contains(s), |k| keys.contains(k));
    }
}

#[cfg(test)]
#[path = "compiled_tests.rs"]
mod tests;
