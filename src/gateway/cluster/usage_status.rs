//! Writes each UsagePlan's `status.usage` from the gateway's counters, so `kubectl get up -o yaml`
//! shows what every key has used. Only the `usage` field is written (server-side apply with the
//! gateway's own field manager), and only when it changed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::{
    Client,
    api::{Api, Patch, PatchParams},
};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{ApiKeyUsage, UsagePlan},
    gateway::{handler::Gateway, policy::limiter::KeyUsage},
};

/// Field manager of the gateway's status writes.
pub const FIELD_MANAGER: &str = "kfaas-gateway";

/// Groups the limiter's counters by plan (`namespace/name`), in the status's shape.
pub fn usage_by_plan(usage: &[KeyUsage]) -> BTreeMap<String, Vec<ApiKeyUsage>> {
    let mut out: BTreeMap<String, Vec<ApiKeyUsage>> = BTreeMap::new();
    for key in usage {
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        out.entry(key.usage_plan.clone())
            .or_default()
            .push(ApiKeyUsage {
                key_id: key.key_id.clone(),
                used: to_i64(key.used),
                limit: key.limit.map(to_i64),
                remaining: key.remaining.map(to_i64),
                period: key.period.and_then(|p| {
                    serde_json::to_value(p)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                }),
                resets_at: key
                    .resets_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            });
    }
    out
}

/// Every `interval`, writes the usage of each plan whose counters changed since the last write.
pub async fn run(
    client: Client,
    gateway: Arc<Gateway>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut written: BTreeMap<String, Vec<ApiKeyUsage>> = BTreeMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let current = usage_by_plan(&gateway.policies.limiter.usage());
        for (plan, usage) in &current {
            if written.get(plan) == Some(usage) {
                continue;
            }
            let Some((namespace, name)) = plan.split_once('/') else {
                continue;
            };
            let api: Api<UsagePlan> = Api::namespaced(client.clone(), namespace);
            let body = serde_json::json!({
                "apiVersion": "kfaas.dev/v1alpha1",
                "kind": "UsagePlan",
                "status": {"usage": usage},
            });
            match api
                .patch_status(
                    name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => {
                    written.insert(plan.clone(), usage.clone());
                }
                Err(e) => {
                    tracing::warn!(usage_plan = %plan, error = %e, "cannot write UsagePlan status.usage")
                }
            }
        }
        written.retain(|plan, _| current.contains_key(plan));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::policy::limiter::QuotaPeriod;
    use chrono::TimeZone;

    #[test]
    fn usage_is_grouped_by_plan_in_the_status_shape() {
        let resets = chrono::Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).single();
        let usage = vec![
            KeyUsage {
                key_id: "alice".into(),
                usage_plan: "shop/gold".into(),
                used: 3,
                limit: Some(5),
                remaining: Some(2),
                period: Some(QuotaPeriod::Day),
                resets_at: resets,
            },
            KeyUsage {
                key_id: "bob".into(),
                usage_plan: "shop/free".into(),
                used: 7,
                limit: None,
                remaining: None,
                period: None,
                resets_at: None,
            },
        ];
        let by_plan = usage_by_plan(&usage);
        assert_eq!(by_plan.len(), 2);
        let gold = &by_plan["shop/gold"][0];
        assert_eq!(gold.key_id, "alice");
        assert_eq!(
            (gold.used, gold.limit, gold.remaining),
            (3, Some(5), Some(2))
        );
        assert_eq!(gold.period.as_deref(), Some("DAY"));
        assert_eq!(gold.resets_at.as_deref(), Some("2026-11-26T00:00:00Z"));
        let free = &by_plan["shop/free"][0];
        assert_eq!(
            (free.used, free.limit, free.period.as_deref()),
            (7, None, None)
        );
    }
}
