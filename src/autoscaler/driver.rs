//! Applies the autoscaler: every tick, and at once when the activator reports demand, it reads
//! each function's load, asks [`desired_replicas`], and tells the backend when the answer changes.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{Observed, ScalingPolicy, desired_replicas};
use crate::{
    backend::{Backend, FunctionKey},
    gateway::{activator::Activator, metrics::FunctionLabels, metrics::GatewayMetrics},
};

/// Supplies the scaling policy of every function that exists now.
pub trait PolicySource: Send + Sync + 'static {
    fn policies(&self) -> Vec<(FunctionKey, ScalingPolicy)>;
}

#[derive(Default)]
struct Track {
    applied: Option<u32>,
    /// (time, demand) samples within the idle window.
    window: VecDeque<(Instant, u32)>,
}

/// Runs until `demand` closes.
pub async fn run(
    policies: Arc<dyn PolicySource>,
    activator: Arc<Activator>,
    backend: Arc<dyn Backend>,
    metrics: Arc<GatewayMetrics>,
    mut demand: mpsc::UnboundedReceiver<FunctionKey>,
    tick: Duration,
) {
    let mut tracks: HashMap<FunctionKey, Track> = HashMap::new();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let only = tokio::select! {
            key = demand.recv() => match key {
                Some(key) => Some(key),
                None => return,
            },
            _ = interval.tick() => None,
        };
        let now = Instant::now();
        let all = policies.policies();
        if only.is_none() {
            tracks.retain(|k, _| all.iter().any(|(key, _)| key == k));
            activator.retain(|k| all.iter().any(|(key, _)| key == k));
        }
        for (key, policy) in all
            .iter()
            .filter(|(k, _)| only.as_ref().is_none_or(|o| o == k))
        {
            let Ok(load) = activator.load(key) else {
                continue;
            };
            let track = tracks.entry(key.clone()).or_default();
            let demand_now = load.in_flight() + load.held();
            track.window.push_back((now, demand_now));
            while track
                .window
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > policy.idle_timeout)
            {
                track.window.pop_front();
            }
            let observed = Observed {
                current_replicas: track.applied.unwrap_or(0),
                demand_now,
                peak_demand_in_window: track.window.iter().map(|(_, d)| *d).max().unwrap_or(0),
                since_last_request: activator.since_last_request(&load, now),
            };
            let desired = desired_replicas(policy, &observed);
            if track.applied != Some(desired) {
                match backend.scale(key, desired) {
                    Ok(()) => {
                        tracing::info!(function = %key, from = ?track.applied, to = desired, demand = demand_now, "scaling");
                        track.applied = Some(desired);
                    }
                    Err(e) => tracing::warn!(function = %key, error = %e, "scaling failed"),
                }
            }
            let ready = i64::try_from(load.ready_count()).unwrap_or(i64::MAX);
            metrics
                .instances
                .get_or_create(&FunctionLabels {
                    function: key.to_string(),
                })
                .set(ready);
        }
    }
}
