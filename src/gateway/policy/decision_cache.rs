//! The Lambda authorizer's decision cache: answers kept per (authorizer, identity values) for
//! the authorizer's TTL, expiring on the injected clock.
//!
//! The key is every identity value, length-prefixed, after the authorizer's function and payload
//! format: two callers whose values differ anywhere (even when their comma-joined text is the
//! same) never share an entry, and two authorizers never share answers.

use std::sync::Arc;

use super::{
    authorizer::{AuthorizerConfig, AuthorizerResponse},
    clock::SharedClock,
};
use crate::api::PayloadFormat;

#[derive(Debug)]
struct CachedDecision {
    response: Arc<AuthorizerResponse>,
    expires_at: u64,
}

/// Authorizer answers cached per (authorizer, identity values), expiring on the injected clock.
#[derive(Debug)]
pub struct DecisionCache {
    entries: moka::sync::Cache<String, Arc<CachedDecision>>,
    clock: SharedClock,
}

fn cache_key(config: &AuthorizerConfig, identity: &[String]) -> String {
    let mut key = String::new();
    let fmt = match config.payload_format {
        PayloadFormat::V1 => "1.0",
        PayloadFormat::V2 => "2.0",
    };
    for part in [config.function.as_str(), fmt]
        .into_iter()
        .chain(identity.iter().map(String::as_str))
    {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    key
}

impl DecisionCache {
    pub fn new(clock: SharedClock, max_entries: u64) -> Self {
        Self {
            entries: moka::sync::Cache::new(max_entries),
            clock,
        }
    }

    /// A live cached answer for this identity, if any.
    pub fn get(
        &self,
        config: &AuthorizerConfig,
        identity: &[String],
    ) -> Option<Arc<AuthorizerResponse>> {
        if config.ttl.is_zero() || identity.is_empty() {
            return None;
        }
        let key = cache_key(config, identity);
        let entry = self.entries.get(&key)?;
        if entry.expires_at > self.clock.now_nanos() {
            return Some(entry.response.clone());
        }
        self.entries.invalidate(&key);
        None
    }

    /// Caches an answer for the authorizer's TTL (nothing when the TTL is 0 or there is no
    /// identity to key it by).
    pub fn put(
        &self,
        config: &AuthorizerConfig,
        identity: &[String],
        response: Arc<AuthorizerResponse>,
    ) {
        if config.ttl.is_zero() || identity.is_empty() {
            return;
        }
        let ttl = u64::try_from(config.ttl.as_nanos()).unwrap_or(u64::MAX);
        let entry = CachedDecision {
            response,
            expires_at: self.clock.now_nanos().saturating_add(ttl),
        };
        self.entries
            .insert(cache_key(config, identity), Arc::new(entry));
    }
}
