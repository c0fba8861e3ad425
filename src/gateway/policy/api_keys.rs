//! API keys: built from UsagePlans and the Secrets they reference, looked up by the value a
//! caller sends in `x-api-key`.
//!
//! The store keeps only SHA-256 digests of key values (a heap dump or a debug print never shows a
//! key), indexes them by digest, and confirms a match with a constant-time comparison. Indexing
//! by digest leaks, through timing, at most something about the digest of the *presented* value,
//! which tells an attacker nothing about any stored key (that would need a SHA-256 preimage).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    Refusal,
    limiter::{QuotaSpec, ThrottleSpec},
};
use crate::api::UsagePlan;

/// The header API Gateway reads the key from.
pub const API_KEY_HEADER: &str = "x-api-key";

/// One API key as the gateway knows it: never its value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    /// The key's id (from the UsagePlan), shown in events and access logs.
    pub id: String,
    /// `namespace/name` of the UsagePlan.
    pub plan: String,
    /// `(api, stage)` pairs the plan covers.
    pub stages: Vec<(String, String)>,
    pub throttle: Option<ThrottleSpec>,
    pub quota: Option<QuotaSpec>,
    /// The key's limiter id, computed once so the hot path allocates nothing.
    limit_id: String,
}

impl KeyInfo {
    /// The key's grant for `(api, stage)`, when its plan covers that stage.
    pub fn grant<'a>(&'a self, api: &'a str, stage: &'a str) -> Option<KeyGrant<'a>> {
        let index = self
            .stages
            .iter()
            .position(|(a, s)| a == api && s == stage)?;
        Some(KeyGrant { key: self, index })
    }
}

/// A key that may be used on one stage: what the limiter and the event need.
#[derive(Debug, Clone, Copy)]
pub struct KeyGrant<'a> {
    key: &'a KeyInfo,
    index: usize,
}

impl<'a> KeyGrant<'a> {
    pub fn key(&self) -> &'a KeyInfo {
        self.key
    }
    /// The key id, for `requestContext.identity.apiKeyId`-style fields and access logs.
    pub fn key_id(&self) -> &'a str {
        &self.key.id
    }
    pub fn api(&self) -> &'a str {
        &self.key.stages[self.index].0
    }
    pub fn stage(&self) -> &'a str {
        &self.key.stages[self.index].1
    }
    /// Identifies this key's counters in the limiter: one per (plan, key), shared by the
    /// plan's stages, because API Gateway applies a plan's throttle and quota to a key across
    /// every stage of the plan.
    pub fn limit_id(&self) -> &'a str {
        &self.key.limit_id
    }
}

/// A problem found while building the store; the key it names is left out, the rest serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWarning {
    /// `UsagePlan/namespace/name` or `Secret/namespace/name`.
    pub object: String,
    pub message: String,
}

/// Every API key the gateway accepts.
#[derive(Debug, Default)]
pub struct ApiKeyStore {
    by_digest: HashMap<[u8; 32], Vec<KeyInfo>>,
    count: usize,
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl ApiKeyStore {
    /// Builds the store. Keys that cannot be served (missing Secret, missing or empty value,
    /// invalid limits) are left out with a warning naming the object.
    pub fn build(plans: &[UsagePlan], secrets: &[Secret]) -> (Self, Vec<KeyWarning>) {
        let mut warnings = Vec::new();
        let secrets: HashMap<(&str, &str), &Secret> = secrets
            .iter()
            .map(|s| {
                let meta = &s.metadata;
                (
                    (
                        meta.namespace.as_deref().unwrap_or("default"),
                        meta.name.as_deref().unwrap_or(""),
                    ),
                    s,
                )
            })
            .collect();
        let mut plans: Vec<&UsagePlan> = plans.iter().collect();
        // A stable order makes conflicts resolve the same way on every build.
        plans.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));

        let mut store = Self::default();
        for plan in plans {
            let namespace = plan.metadata.namespace.as_deref().unwrap_or("default");
            let plan_name = format!(
                "{namespace}/{}",
                plan.metadata.name.as_deref().unwrap_or("")
            );
            let object = format!("UsagePlan/{plan_name}");
            let throttle = match plan.spec.throttle.as_ref().map(ThrottleSpec::try_from) {
                Some(Err(e)) => {
                    warnings.push(KeyWarning {
                        object,
                        message: format!("{e}; the plan's keys are not loaded"),
                    });
                    continue;
                }
                Some(Ok(t)) => Some(t),
                None => None,
            };
            let quota = match plan.spec.quota.as_ref().map(QuotaSpec::try_from) {
                Some(Err(e)) => {
                    warnings.push(KeyWarning {
                        object,
                        message: format!("{e}; the plan's keys are not loaded"),
                    });
                    continue;
                }
                Some(Ok(q)) => Some(q),
                None => None,
            };
            let stages: Vec<(String, String)> = plan
                .spec
                .stages
                .iter()
                .map(|s| (format!("{namespace}/{}", s.api), s.stage.clone()))
                .collect();
            for key in &plan.spec.api_keys {
                let secret_ref = &key.secret_ref;
                let secret_object = format!("Secret/{namespace}/{}", secret_ref.name);
                let Some(secret) = secrets.get(&(namespace, secret_ref.name.as_str())) else {
                    warnings.push(KeyWarning {
                        object: secret_object,
                        message: format!(
                            "not found; API key {} of usage plan {plan_name} is not loaded",
                            key.id
                        ),
                    });
                    continue;
                };
                let Some(value) = secret_value(secret, &secret_ref.key) else {
                    warnings.push(KeyWarning {
                        object: secret_object,
                        message: format!(
                            "has no non-empty key {:?}; API key {} of usage plan {plan_name} is not loaded",
                            secret_ref.key, key.id
                        ),
                    });
                    continue;
                };
                let hash = digest(value);
                let entries = store.by_digest.entry(hash).or_default();
                if let Some(clash) = entries
                    .iter()
                    .find(|other| other.stages.iter().any(|s| stages.contains(s)))
                {
                    warnings.push(KeyWarning {
                        object: object.clone(),
                        message: format!(
                            "API key {} has the same value as key {} of usage plan {} on a shared stage; that key wins",
                            key.id, clash.id, clash.plan
                        ),
                    });
                    continue;
                }
                let limit_id = format!("{plan_name}\0{}", key.id);
                entries.push(KeyInfo {
                    id: key.id.clone(),
                    plan: plan_name.clone(),
                    stages: stages.clone(),
                    throttle,
                    quota,
                    limit_id,
                });
                store.count += 1;
            }
        }
        (store, warnings)
    }

    /// Number of keys loaded (for UsagePlan status and metrics).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The key with this value, whatever stage it is valid for.
    pub fn lookup(&self, presented: &str) -> Option<&KeyInfo> {
        self.candidates(presented)?.first()
    }

    fn candidates(&self, presented: &str) -> Option<&[KeyInfo]> {
        let hash = digest(presented.as_bytes());
        let (stored, keys) = self.by_digest.get_key_value(&hash)?;
        // Redundant after the map lookup, and deliberately so: the equality that decides is
        // constant-time.
        bool::from(stored.ct_eq(&hash)).then_some(keys.as_slice())
    }

    /// Checks the key a request presented (the `x-api-key` value) for `(api, stage)`: missing,
    /// unknown, or not covered by the key's plan are all 403 `Forbidden`, as API Gateway answers.
    pub fn authorize<'a>(
        &'a self,
        presented: Option<&str>,
        api: &'a str,
        stage: &'a str,
    ) -> Result<KeyGrant<'a>, Refusal> {
        let presented = presented
            .filter(|p| !p.is_empty())
            .ok_or(Refusal::Forbidden)?;
        self.candidates(presented)
            .into_iter()
            .flatten()
            .find_map(|k| k.grant(api, stage))
            .ok_or(Refusal::Forbidden)
    }

    /// Every limiter id of every key, for [`super::limiter::UsagePlanLimiter::retain`].
    pub fn limit_ids(&self) -> impl Iterator<Item = &str> {
        self.by_digest
            .values()
            .flatten()
            .map(|k| k.limit_id.as_str())
    }

    /// Number of keys loaded per plan (`namespace/name`), for UsagePlan status.
    pub fn keys_per_plan(&self) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for key in self.by_digest.values().flatten() {
            *out.entry(key.plan.as_str()).or_insert(0) += 1;
        }
        out
    }
}

/// A Secret's value under `key`: `stringData` wins over `data` (as the API server merges them
/// on write; objects read from files in local mode may still carry `stringData`). Surrounding
/// whitespace is dropped: a value written with `kubectl create secret --from-file` often ends in
/// a newline that no HTTP header can carry.
fn secret_value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    let raw: &[u8] = match secret.string_data.as_ref().and_then(|d| d.get(key)) {
        Some(s) => s.as_bytes(),
        None => &secret.data.as_ref()?.get(key)?.0,
    };
    let value = raw.trim_ascii();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
#[path = "api_keys_tests.rs"]
mod tests;
