//! JSON Web Key Sets: parsed into verification keys with their algorithms pinned, cached per
//! source, and refetched (rate-limited) when a token names a key id the cache does not know.
//!
//! API Gateway caches an issuer's keys for up to two hours
//! (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html>);
//! kfaas does the same, refetches early on an unknown `kid` (so a key rotation works at once),
//! and keeps serving the keys it has when a refetch fails.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};

use super::clock::SharedClock;

/// Why keys could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the JWKS document is not valid JSON with a \"keys\" array: {0}")]
    Document(String),
    #[error("no JWKS is known for {0}")]
    UnknownSource(String),
}

/// One public key, with the only algorithms a token verified by it may use.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The algorithms a JWK may verify: decided by its key type and curve, narrowed by its `alg`.
/// Symmetric (`oct`) keys are never accepted: a JWKS is public, so an HMAC key in it would let
/// anyone mint tokens.
fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let declared: Option<Algorithm> = match declared {
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                KeyAlgorithm::RS384 => Some(Algorithm::RS384),
                KeyAlgorithm::RS512 => Some(Algorithm::RS512),
                KeyAlgorithm::PS256 => Some(Algorithm::PS256),
                KeyAlgorithm::PS384 => Some(Algorithm::PS384),
                KeyAlgorithm::PS512 => Some(Algorithm::PS512),
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                KeyAlgorithm::ES384 => Some(Algorithm::ES384),
                _ => None,
            };
            by_type
                .into_iter()
                .filter(|a| Some(*a) == declared)
                .collect()
        }
    }
}

/// Parses a JWKS document. Keys that cannot verify signatures (encryption keys, symmetric or
/// unsupported keys, malformed entries) are skipped, so one odd key does not break the set.
pub fn parse_jwks(document: &[u8]) -> Result<Vec<VerifyKey>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc =
        serde_json::from_slice(document).map_err(|e| JwksError::Document(e.to_string()))?;
    Ok(doc
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter(|jwk| {
            !matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
            )
        })
        .filter_map(|jwk| {
            let algorithms = algorithms_for(&jwk);
            if algorithms.is_empty() {
                return None;
            }
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(VerifyKey {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
            })
        })
        .collect())
}

/// The JWKS document a Secret holds under `jwks.json` (a route's `jwksSecret`), from
/// `stringData` or `data`, for [`JwksCache::set_document`].
pub fn secret_document(secret: &k8s_openapi::api::core::v1::Secret) -> Option<&[u8]> {
    const KEY: &str = "jwks.json";
    match secret.string_data.as_ref().and_then(|d| d.get(KEY)) {
        Some(s) => Some(s.as_bytes()),
        None => secret.data.as_ref()?.get(KEY).map(|b| b.0.as_slice()),
    }
}

/// A boxed future, so the fetcher trait stays object-safe without extra dependencies.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Bytes, JwksError>> + Send + 'a>>;

/// Fetches a JWKS document. Tests inject documents; the gateway uses [`HttpJwksFetcher`].
pub trait JwksFetcher: Send + Sync {
    fn fetch<'a>(&'a self, url: &'a str) -> FetchFuture<'a>;
}

/// Where a route's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    /// Fetched, cached, refreshed.
    Url(String),
    /// Given by the gateway from a Secret (`namespace/name`) with [`JwksCache::set_document`].
    Secret(String),
}

impl JwksSource {
    fn cache_key(&self) -> String {
        match self {
            Self::Url(u) => format!("url:{u}"),
            Self::Secret(s) => format!("secret:{s}"),
        }
    }
}

#[derive(Debug)]
struct CachedSet {
    keys: Vec<VerifyKey>,
    /// When the keys were fetched (clock nanoseconds); `None` for keys from a Secret.
    fetched_at: Option<u64>,
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<u64>,
}

/// Cached key sets, by source.
pub struct JwksCache {
    fetcher: Arc<dyn JwksFetcher>,
    clock: SharedClock,
    sets: RwLock<HashMap<String, Arc<CachedSet>>>,
    /// One lock per URL: concurrent requests with an unknown key wait for a single fetch.
    fetches: Mutex<HashMap<String, Arc<tokio::sync::Mutex<FetchState>>>>,
    /// Keys older than this are refetched before use.
    pub max_age: Duration,
    /// An unknown `kid` causes at most one refetch per this interval and URL.
    pub min_refetch_interval: Duration,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("max_age", &self.max_age)
            .field("min_refetch_interval", &self.min_refetch_interval)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn find<'k>(keys: &'k [VerifyKey], kid: Option<&str>) -> Option<&'k VerifyKey> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        // A token without `kid` is accepted only against a set of exactly one key.
        None => match keys {
            [only] => Some(only),
            _ => None,
        },
    }
}

impl JwksCache {
    pub fn new(fetcher: Arc<dyn JwksFetcher>, clock: SharedClock) -> Self {
        Self {
            fetcher,
            clock,
            sets: RwLock::new(HashMap::new()),
            fetches: Mutex::new(HashMap::new()),
            max_age: Duration::from_secs(2 * 3600),
            min_refetch_interval: Duration::from_secs(30),
        }
    }

    /// Installs (or replaces) the keys of a Secret-held JWKS.
    pub fn set_document(&self, secret: &str, document: &[u8]) -> Result<usize, JwksError> {
        let keys = parse_jwks(document)?;
        let count = keys.len();
        let set = Arc::new(CachedSet {
            keys,
            fetched_at: None,
        });
        self.sets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(JwksSource::Secret(secret.to_owned()).cache_key(), set);
        Ok(count)
    }

    fn cached(&self, key: &str) -> Option<Arc<CachedSet>> {
        self.sets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The key that verifies a token with this `kid`, fetching or refetching as needed.
    pub async fn key(
        &self,
        source: &JwksSource,
        kid: Option<&str>,
    ) -> Result<Option<VerifyKey>, JwksError> {
        let cache_key = source.cache_key();
        let now = self.clock.now_nanos();
        let cached = self.cached(&cache_key);
        let fresh = |set: &CachedSet| {
            set.fetched_at
                .is_none_or(|at| now.saturating_sub(at) < nanos(self.max_age))
        };
        if let Some(set) = &cached
            && fresh(set)
            && let Some(key) = find(&set.keys, kid)
        {
            return Ok(Some(key.clone()));
        }
        let url = match source {
            JwksSource::Url(url) => url,
            JwksSource::Secret(_) => {
                return match cached {
                    Some(set) => Ok(find(&set.keys, kid).cloned()),
                    None => Err(JwksError::UnknownSource(cache_key)),
                };
            }
        };
        let lock = self
            .fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cache_key.clone())
            .or_default()
            .clone();
        let mut state = lock.lock().await;
        // Someone else may have fetched while we waited.
        let cached = self.cached(&cache_key);
        if let Some(set) = &cached
            && fresh(set)
            && let Some(key) = find(&set.keys, kid)
        {
            return Ok(Some(key.clone()));
        }
        let now = self.clock.now_nanos();
        let stale = cached.as_ref().is_none_or(|s| !fresh(s));
        let may_refetch = state
            .last_attempt
            .is_none_or(|at| now.saturating_sub(at) >= nanos(self.min_refetch_interval));
        if !(stale || may_refetch) {
            return Ok(None);
        }
        state.last_attempt = Some(now);
        let fetched = self
            .fetcher
            .fetch(url)
            .await
            .and_then(|doc| parse_jwks(&doc));
        match fetched {
            Ok(keys) => {
                let found = find(&keys, kid).cloned();
                let set = Arc::new(CachedSet {
                    keys,
                    fetched_at: Some(now),
                });
                self.sets
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(cache_key, set);
                Ok(found)
            }
            // Keep serving what we have: an issuer's brief outage should not lock users out.
            Err(e) => match cached {
                Some(set) => {
                    tracing::warn!(url = %url, error = %e, "JWKS refetch failed; keeping the cached keys");
                    Ok(find(&set.keys, kid).cloned())
                }
                None => Err(e),
            },
        }
    }
}

/// Fetches JWKS documents over HTTP or HTTPS (rustls, the system's root certificates), with a
/// timeout and a size limit.
#[derive(Clone)]
pub struct HttpJwksFetcher {
    http: Client<HttpConnector, Empty<Bytes>>,
    https: Option<Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    timeout: Duration,
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

impl HttpJwksFetcher {
    /// A fetcher; HTTPS is available when the system's root certificates could be loaded.
    pub fn new(timeout: Duration) -> Self {
        let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => Some(
                Client::builder(TokioExecutor::new())
                    .build(builder.https_only().enable_http1().build()),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "no root certificates: JWKS URLs must use http");
                None
            }
        };
        Self {
            http,
            https,
            timeout,
        }
    }

    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let response = match uri.scheme_str() {
            Some("http") => self.http.get(uri).await,
            Some("https") => match &self.https {
                Some(client) => client.get(uri).await,
                None => return Err("https is unavailable (no root certificates)".into()),
            },
            _ => return Err("the URL must be http or https".into()),
        }
        .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes())
    }
}

impl JwksFetcher for HttpJwksFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.get(url)).await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(reason)) => Err(JwksError::Fetch {
                    url: url.to_owned(),
                    reason,
                }),
                Err(_) => Err(JwksError::Fetch {
                    url: url.to_owned(),
                    reason: format!("no answer within {:?}", self.timeout),
                }),
            }
        })
    }
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
pub(crate) mod tests;
