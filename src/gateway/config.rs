//! Installs a configuration into a running gateway: the routing table, the API keys of the
//! UsagePlans and the JWKS documents held in Secrets. `kfaas local` (from files) and the cluster
//! gateway (from watches) both come through here, so they serve the same objects the same way.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::{
    handler::Gateway,
    policy::{api_keys::ApiKeyStore, jwks::secret_document},
    table::{RouteTable, TableInput},
};
use crate::api::UsagePlan;

/// Everything a gateway serves.
#[derive(Debug, Default, Clone)]
pub struct GatewayConfig {
    pub table: TableInput,
    pub usage_plans: Vec<UsagePlan>,
    /// The Secrets the UsagePlans and JWT authorizers refer to (others are ignored).
    pub secrets: Vec<Secret>,
}

/// A problem with one object; the object is left out, everything else serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// `Kind/name` or `Kind/namespace/name`.
    pub object: String,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Builds the table and the policies from `config` and swaps them in. Returns what could not be
/// served.
pub fn install(gateway: &Gateway, config: &GatewayConfig) -> Vec<ConfigWarning> {
    install_parts(gateway, &config.table, &config.usage_plans, &config.secrets)
}

/// [`install`] from borrowed parts.
pub fn install_parts(
    gateway: &Gateway,
    table: &TableInput,
    usage_plans: &[UsagePlan],
    secrets: &[Secret],
) -> Vec<ConfigWarning> {
    let (table, table_warnings) = RouteTable::build(table);
    let mut warnings: Vec<ConfigWarning> = table_warnings
        .into_iter()
        .map(|w| ConfigWarning {
            object: w.object,
            message: w.message,
        })
        .collect();
    let stage_ids: Vec<String> = table
        .stages()
        .iter()
        .map(|s| s.policies.id.clone())
        .collect();
    gateway.table.store(Arc::new(table));

    let (store, key_warnings) = ApiKeyStore::build(usage_plans, secrets);
    warnings.extend(key_warnings.into_iter().map(|w| ConfigWarning {
        object: w.object,
        message: w.message,
    }));
    gateway
        .policies
        .set_api_keys(store, stage_ids.iter().map(String::as_str));

    for secret in secrets {
        let Some(document) = secret_document(secret) else {
            continue;
        };
        let name = format!(
            "{}/{}",
            secret.metadata.namespace.as_deref().unwrap_or("default"),
            secret.metadata.name.as_deref().unwrap_or("")
        );
        if let Err(e) = gateway.policies.jwt.keys().set_document(&name, document) {
            warnings.push(ConfigWarning {
                object: format!("Secret/{name}"),
                message: format!("jwks.json: {e}"),
            });
        }
    }
    warnings
}
