//! The response cache of routes with `cache` set, as API Gateway's stage cache behaves:
//! - keyed by stage, route and method plus the request headers, query parameters and path
//!   parameters the route names (nothing else: a response that depends on the caller must name
//!   the header that identifies the caller, e.g. `authorization`);
//! - only successful (2xx) answers to GET (and HEAD) are kept, unless `allMethods`;
//! - a caller's `Cache-Control: max-age=0` skips the cached entry and refreshes it, but only
//!   when the route sets `allowClientInvalidation`; otherwise the header is ignored;
//! - answers above 1 MiB are not cached (API Gateway's limit for a cached response).
//!
//! kfaas also never caches an answer that sets a cookie: serving one caller's `Set-Cookie` to
//! another would hand over a session.
//!
//! Entries expire on the injected clock (each entry holds its own deadline), and moka bounds the
//! cache's total size in bytes.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use percent_encoding::percent_decode_str;

use super::clock::SharedClock;
use crate::api::RouteCache;

/// The response header that tells whether an answer came from the cache.
pub const CACHE_STATUS_HEADER: &str = "x-kfaas-cache";

/// Largest body kept, as API Gateway's cache.
pub const MAX_CACHED_BODY: usize = 1024 * 1024;

/// A cached answer.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    expires_at: u64,
}

/// Where a request stands with the cache.
#[derive(Debug, Clone)]
pub enum CacheLookup {
    /// Answer with this; the function is not called.
    Hit(Arc<CachedResponse>),
    /// Call the function, then [`ResponseCache::store`] the answer.
    Miss,
    /// The caller asked for a fresh answer (and may): call the function, then store.
    Refresh,
    /// The route or method is not cached: call the function, store nothing.
    Bypass,
}

impl CacheLookup {
    /// The value of [`CACHE_STATUS_HEADER`] for an answer given after this lookup.
    pub fn header_value(&self) -> &'static str {
        match self {
            Self::Hit(_) => "HIT",
            Self::Miss | Self::Refresh => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

/// The cache key of one request (built by [`ResponseCache::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// The gateway's response cache, shared by every stage.
#[derive(Debug)]
pub struct ResponseCache {
    entries: moka::sync::Cache<CacheKey, Arc<CachedResponse>>,
    clock: SharedClock,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Appends one length-prefixed field, so that no two different requests share a key
/// (`a,b` + `c` and `a` + `b,c` differ).
fn push_field(key: &mut String, value: &str) {
    key.push_str(&value.len().to_string());
    key.push(':');
    key.push_str(value);
}

fn ttl_nanos(policy: &RouteCache) -> Option<u64> {
    u64::try_from(policy.ttl_seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| s.saturating_mul(1_000_000_000))
}

fn method_cached(policy: &RouteCache, method: &Method) -> bool {
    policy.all_methods || method == Method::GET || method == Method::HEAD
}

/// Whether `Cache-Control` holds `max-age=0`.
fn asks_for_fresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("max-age") && value.trim().trim_matches('"') == "0"
            })
        })
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` of bodies and headers.
    pub fn new(clock: SharedClock, max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, value: &Arc<CachedResponse>| {
                let headers: usize = value
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len())
                    .sum();
                u32::try_from(key.0.len() + headers + value.body.len()).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            entries,
            clock,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The key of a request: stage, route key, method, then the route's key headers (by
    /// lower-case name), key query parameters (every value, in order) and key path parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn key(
        stage_id: &str,
        route_key: &str,
        method: &Method,
        policy: &RouteCache,
        headers: &HeaderMap,
        query: Option<&str>,
        path_parameters: &[(String, String)],
    ) -> CacheKey {
        let mut key = String::with_capacity(64);
        push_field(&mut key, stage_id);
        push_field(&mut key, route_key);
        push_field(&mut key, method.as_str());
        for name in &policy.key_headers {
            key.push('h');
            push_field(&mut key, &name.to_ascii_lowercase());
            for value in headers.get_all(name.as_str()) {
                key.push('=');
                push_field(&mut key, &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        let pairs: Vec<(String, &str)> = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                let name = percent_decode_str(&name.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned();
                (name, value)
            })
            .collect();
        for name in &policy.key_query {
            key.push('q');
            push_field(&mut key, name);
            for (_, value) in pairs.iter().filter(|(n, _)| n == name) {
                key.push('=');
                push_field(&mut key, value);
            }
        }
        for name in &policy.key_path_parameters {
            key.push('p');
            push_field(&mut key, name);
            if let Some((_, value)) = path_parameters.iter().find(|(n, _)| n == name) {
                key.push('=');
                push_field(&mut key, value);
            }
        }
        CacheKey(key)
    }

    /// Looks a request up, counting a hit or a miss for cacheable requests.
    pub fn lookup(
        &self,
        policy: &RouteCache,
        method: &Method,
        request_headers: &HeaderMap,
        key: &CacheKey,
    ) -> CacheLookup {
        if ttl_nanos(policy).is_none() || !method_cached(policy, method) {
            return CacheLookup::Bypass;
        }
        if policy.allow_client_invalidation && asks_for_fresh(request_headers) {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return CacheLookup::Refresh;
        }
        if let Some(entry) = self.entries.get(key) {
            if entry.expires_at > self.clock.now_nanos() {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return CacheLookup::Hit(entry);
            }
            self.entries.invalidate(key);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        CacheLookup::Miss
    }

    /// Keeps an answer when the route and method are cached and the answer may be. Returns
    /// whether it was kept.
    pub fn store(
        &self,
        policy: &RouteCache,
        method: &Method,
        key: CacheKey,
        status: StatusCode,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> bool {
        let Some(ttl) = ttl_nanos(policy) else {
            return false;
        };
        if !method_cached(policy, method)
            || !status.is_success()
            || body.len() > MAX_CACHED_BODY
            || headers.contains_key(header::SET_COOKIE)
        {
            return false;
        }
        let entry = CachedResponse {
            status,
            headers: headers.clone(),
            body: body.clone(),
            expires_at: self.clock.now_nanos().saturating_add(ttl),
        };
        self.entries.insert(key, Arc::new(entry));
        true
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Drops every entry (e.g. when a route's cache settings change).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::gateway::policy::clock::ManualClock;

    fn policy() -> RouteCache {
        RouteCache {
            ttl_seconds: 60,
            key_headers: vec!["Accept-Language".into()],
            key_query: vec!["page".into()],
            key_path_parameters: vec!["id".into()],
            all_methods: false,
            allow_client_invalidation: false,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn key(h: &HeaderMap, query: Option<&str>, id: &str) -> CacheKey {
        ResponseCache::key(
            "shop/prod",
            "GET /items/{id}",
            &Method::GET,
            &policy(),
            h,
            query,
            &[("id".into(), id.into())],
        )
    }

    #[test]
    fn keys_hold_exactly_the_chosen_parts() {
        let en = headers(&[("accept-language", "en"), ("x-other", "1")]);
        let en2 = headers(&[("accept-language", "en"), ("x-other", "2")]);
        let fr = headers(&[("accept-language", "fr")]);
        assert_eq!(
            key(&en, Some("page=1&sort=a"), "7"),
            key(&en2, Some("sort=b&page=1"), "7")
        );
        assert_ne!(key(&en, Some("page=1"), "7"), key(&fr, Some("page=1"), "7"));
        assert_ne!(key(&en, Some("page=1"), "7"), key(&en, Some("page=2"), "7"));
        assert_ne!(key(&en, Some("page=1"), "7"), key(&en, Some("page=1"), "8"));
        assert_ne!(key(&en, None, "7"), key(&en, Some("page="), "7"));
        assert_ne!(
            key(&en, Some("page=1&page=2"), "7"),
            key(&en, Some("page=1"), "7")
        );
    }

    #[test]
    fn successful_gets_are_served_until_the_ttl_passes() {
        let clock = ManualClock::at_epoch();
        let cache = ResponseCache::new(clock.clone(), 1 << 20);
        let p = policy();
        let req = headers(&[("accept-language", "en")]);
        let k = key(&req, None, "1");
        assert!(matches!(
            cache.lookup(&p, &Method::GET, &req, &k),
            CacheLookup::Miss
        ));
        let body = Bytes::from_static(b"{\"id\":1}");
        assert!(cache.store(
            &p,
            &Method::GET,
            k.clone(),
            StatusCode::OK,
            &headers(&[("content-type", "application/json")]),
            &body
        ));
        match cache.lookup(&p, &Method::GET, &req, &k) {
            CacheLookup::Hit(hit) => {
                assert_eq!(hit.body, body);
                assert_eq!(hit.headers["content-type"], "application/json");
            }
            other => panic!("expected a hit, got {other:?}"),
        }
        clock.advance(Duration::from_secs(60));
        assert!(matches!(
            cache.lookup(&p, &Method::GET, &req, &k),
            CacheLookup::Miss
        ));
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 2 });
    }

    #[test]
    fn only_cacheable_answers_are_kept() {
        let clock = ManualClock::at_epoch();
        let cache = ResponseCache::new(clock, 1 << 20);
        let p = policy();
        let none = HeaderMap::new();
        let k = key(&none, None, "1");
        let ok = StatusCode::OK;
        let body = Bytes::from_static(b"x");
        assert!(!cache.store(&p, &Method::POST, k.clone(), ok, &none, &body));
        assert!(matches!(
            cache.lookup(&p, &Method::POST, &none, &k),
            CacheLookup::Bypass
        ));
        let err = StatusCode::INTERNAL_SERVER_ERROR;
        assert!(!cache.store(&p, &Method::GET, k.clone(), err, &none, &body));
        let cookie = headers(&[("set-cookie", "session=abc")]);
        assert!(!cache.store(&p, &Method::GET, k.clone(), ok, &cookie, &body));
        let big = Bytes::from(vec![b'a'; MAX_CACHED_BODY + 1]);
        assert!(!cache.store(&p, &Method::GET, k.clone(), ok, &none, &big));
        let off = RouteCache {
            ttl_seconds: 0,
            ..policy()
        };
        assert!(!cache.store(&off, &Method::GET, k.clone(), ok, &none, &body));
        let all = RouteCache {
            all_methods: true,
            ..policy()
        };
        assert!(cache.store(&all, &Method::POST, k.clone(), ok, &none, &body));
        assert!(matches!(
            cache.lookup(&all, &Method::POST, &none, &k),
            CacheLookup::Hit(_)
        ));
    }

    #[test]
    fn client_invalidation_only_when_allowed() {
        let clock = ManualClock::at_epoch();
        let cache = ResponseCache::new(clock, 1 << 20);
        let none = HeaderMap::new();
        let fresh = headers(&[("cache-control", "no-transform, Max-Age=0")]);
        let k = key(&none, None, "1");
        let body = Bytes::from_static(b"x");
        let p = policy();
        assert!(cache.store(&p, &Method::GET, k.clone(), StatusCode::OK, &none, &body));
        let hit = cache.lookup(&p, &Method::GET, &fresh, &k);
        assert!(matches!(hit, CacheLookup::Hit(_)));
        assert_eq!(hit.header_value(), "HIT");
        let allowed = RouteCache {
            allow_client_invalidation: true,
            ..policy()
        };
        let refresh = cache.lookup(&allowed, &Method::GET, &fresh, &k);
        assert!(matches!(refresh, CacheLookup::Refresh));
        assert_eq!(refresh.header_value(), "MISS");
        assert!(matches!(
            cache.lookup(&allowed, &Method::GET, &none, &k),
            CacheLookup::Hit(_)
        ));
        cache.clear();
        assert!(matches!(
            cache.lookup(&allowed, &Method::GET, &none, &k),
            CacheLookup::Miss
        ));
    }
}
