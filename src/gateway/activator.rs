//! The activator: hands each request an instance with a free slot, or holds it (bounded queue,
//! deadline) while the function scales up. Demand is reported to the scaler at once, so a
//! function at zero starts on the first request.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, mpsc, watch};

use super::{FastMap, coarse_clock::CoarseInstant, error::GatewayError, metrics::GatewayMetrics};
use crate::backend::{Backend, FunctionKey, Instance, ReadyInstances};

/// How often a held request checks whether its function's instances fail to start.
const START_FAILURE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Live counters of one function, shared by the activator and the scaler.
pub struct FunctionLoad {
    pub key: FunctionKey,
    ready: watch::Receiver<ReadyInstances>,
    /// In-flight invocations per instance id.
    slots: Mutex<FastMap<String, u32>>,
    in_flight: AtomicU32,
    held: AtomicU32,
    /// Milliseconds since the activator's epoch of the last request; 0 = never.
    last_request_ms: AtomicU64,
    /// The activator has forgotten this function (`Activator::retain`).
    retired: AtomicBool,
    released: Notify,
    /// `kfaas_gateway_integration_duration_seconds` of this function, looked up once so the
    /// request path does not hash a label set.
    integration: Histogram,
}

impl FunctionLoad {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub fn held(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }
    pub fn ready_count(&self) -> usize {
        self.ready.borrow().len()
    }

    /// Takes a slot on the least-loaded ready instance that has one.
    fn try_lease(self: &Arc<Self>, instances: &ReadyInstances) -> Option<Lease> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (index, used) = instances
            .iter()
            .enumerate()
            .map(|(n, i)| (n, slots.get(&i.id).copied().unwrap_or(0)))
            .filter(|(n, used)| *used < instances[*n].concurrency.max(1))
            .min_by_key(|(_, used)| *used)?;
        let id = &instances[index].id;
        match slots.get_mut(id) {
            Some(slot) => *slot = used + 1,
            None => {
                slots.insert(id.clone(), used + 1);
                if slots.len() > instances.len() * 2 + 8 {
                    // Forget instances that are gone and idle, so the map does not grow forever.
                    slots.retain(|id, used| *used > 0 || instances.iter().any(|i| &i.id == id));
                }
            }
        }
        drop(slots);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            load: Arc::clone(self),
            instances: Arc::clone(instances),
            index,
        })
    }
}

/// Where a function's entry in the routing table keeps its `FunctionLoad` once found. A cache,
/// not part of what the entry is: a copy starts empty, and any two compare equal.
#[derive(Default)]
pub struct LoadSlot(std::sync::OnceLock<Arc<FunctionLoad>>);

impl Clone for LoadSlot {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for LoadSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for LoadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadSlot")
    }
}

/// A slot on one instance; dropping it frees the slot and wakes one held request.
pub struct Lease {
    load: Arc<FunctionLoad>,
    /// The ready set the instance was taken from (no copy of the instance is made).
    instances: ReadyInstances,
    index: usize,
}

impl Lease {
    pub fn instance(&self) -> &Instance {
        &self.instances[self.index]
    }

    /// Records how long the function took to answer on this slot.
    pub fn observe_integration(&self, took: std::time::Duration) {
        self.load.integration.observe(took.as_secs_f64());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut slots = self.load.slots.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(used) = slots.get_mut(&self.instances[self.index].id) {
                *used = used.saturating_sub(1);
            }
        }
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.load.released.notify_one();
    }
}

/// Hands out instances and holds requests while functions scale.
pub struct Activator {
    backend: Arc<dyn Backend>,
    loads: RwLock<FastMap<FunctionKey, Arc<FunctionLoad>>>,
    /// `last_request_ms` counts from here, read on the coarse clock; `epoch` is the same moment
    /// on the precise one, which the scaler's `now` is given on.
    epoch: Instant,
    coarse_epoch: CoarseInstant,
    max_held: u32,
    demand: mpsc::UnboundedSender<FunctionKey>,
    metrics: Arc<GatewayMetrics>,
}

/// How an acquisition went, for metrics and logs.
pub struct Acquired {
    pub lease: Lease,
    /// The request waited for the function to scale from zero.
    pub cold: bool,
}

impl Activator {
    /// `demand` receives a function's key each time a request has to wait for it.
    pub fn new(
        backend: Arc<dyn Backend>,
        max_held: u32,
        demand: mpsc::UnboundedSender<FunctionKey>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            backend,
            loads: RwLock::new(FastMap::default()),
            epoch: Instant::now(),
            coarse_epoch: CoarseInstant::now(),
            max_held,
            demand,
            metrics,
        }
    }

    /// The counters of a function, created on first use.
    pub fn load(&self, key: &FunctionKey) -> Result<Arc<FunctionLoad>, GatewayError> {
        if let Some(load) = self
            .loads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(Arc::clone(load));
        }
        let ready = self
            .backend
            .ready_instances(key)
            .map_err(|e| GatewayError::Unreachable {
                function: key.to_string(),
                reason: e.to_string(),
            })?;
        let mut loads = self.loads.write().unwrap_or_else(|e| e.into_inner());
        let load = loads.entry(key.clone()).or_insert_with(|| {
            Arc::new(FunctionLoad {
                key: key.clone(),
                ready,
                slots: Mutex::new(FastMap::default()),
                in_flight: AtomicU32::new(0),
                held: AtomicU32::new(0),
                last_request_ms: AtomicU64::new(0),
                retired: AtomicBool::new(false),
                released: Notify::new(),
                integration: self.metrics.integration_duration.get_or_create_owned(
                    &super::metrics::FunctionLabels {
                        function: key.to_string(),
                    },
                ),
            })
        });
        Ok(Arc::clone(load))
    }

    /// Every function seen so far.
    pub fn loads(&self) -> Vec<Arc<FunctionLoad>> {
        self.loads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forgets functions that no longer exist.
    pub fn retain(&self, keep: impl Fn(&FunctionKey) -> bool) {
        self.loads
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, load| {
                let kept = keep(k) || load.in_flight() > 0 || load.held() > 0;
                // A routing table still in use may hold it: it must not be used from there.
                load.retired.store(!kept, Ordering::Relaxed);
                kept
            });
    }

    /// Time since the last request to a function, if any came.
    pub fn since_last_request(
        &self,
        load: &FunctionLoad,
        now: Instant,
    ) -> Option<std::time::Duration> {
        match load.last_request_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                now.saturating_duration_since(self.epoch + std::time::Duration::from_millis(ms)),
            ),
        }
    }

    /// The counters of `key`, kept in `slot` after the first look-up.
    fn load_into(
        &self,
        key: &FunctionKey,
        slot: &LoadSlot,
    ) -> Result<Arc<FunctionLoad>, GatewayError> {
        if let Some(load) = slot.0.get() {
            if !load.retired.load(Ordering::Relaxed) {
                return Ok(Arc::clone(load));
            }
            // Forgotten since (its function left the configuration and came back): the
            // current counters are the activator's, which the scaler reads.
            return self.load(key);
        }
        let load = self.load(key)?;
        let _ = slot.0.set(Arc::clone(&load));
        Ok(load)
    }

    /// A free slot on a ready instance of `key`, waiting until `deadline` if there is none.
    /// `slot` keeps the function's counters between requests.
    pub async fn acquire(
        &self,
        key: &FunctionKey,
        slot: &LoadSlot,
        deadline: Instant,
    ) -> Result<Acquired, GatewayError> {
        let load = self.load_into(key, slot)?;
        // The coarse clock: the scaler counts idle seconds, and a tick is well within them.
        let ms = u64::try_from(
            CoarseInstant::now()
                .duration_since(self.coarse_epoch)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
        .max(1);
        load.last_request_ms.store(ms, Ordering::Relaxed);

        let mut ready = load.ready.clone();
        let instances = ready.borrow_and_update().clone();
        if let Some(lease) = load.try_lease(&instances) {
            return Ok(Acquired { lease, cold: false });
        }
        // Boxed: holding is the rare path, and its timers and selects would otherwise make
        // every request's future larger.
        Box::pin(self.hold(key, load, ready, instances, deadline)).await
    }

    /// Holds a request until an instance of `key` has a free slot, or `deadline`.
    async fn hold(
        &self,
        key: &FunctionKey,
        load: Arc<FunctionLoad>,
        mut ready: watch::Receiver<ReadyInstances>,
        instances: ReadyInstances,
        deadline: Instant,
    ) -> Result<Acquired, GatewayError> {
        let started = Instant::now();
        // No free slot: hold the request.
        if load.held.fetch_add(1, Ordering::Relaxed) >= self.max_held {
            load.held.fetch_sub(1, Ordering::Relaxed);
            return Err(GatewayError::ActivatorQueueFull {
                function: key.to_string(),
            });
        }
        let labels = super::metrics::FunctionLabels {
            function: key.to_string(),
        };
        self.metrics.held_requests.get_or_create(&labels).inc();
        let _held = HeldGuard {
            load: &load,
            metrics: &self.metrics,
            labels: &labels,
        };
        let cold = instances.is_empty();
        if cold {
            self.metrics.cold_starts.get_or_create(&labels).inc();
        }
        // Receivers may be gone during shutdown; then nobody can scale and the deadline answers.
        let _ = self.demand.send(key.clone());

        loop {
            let released = load.released.notified();
            let instances = ready.borrow_and_update().clone();
            if let Some(lease) = load.try_lease(&instances) {
                return Ok(Acquired { lease, cold });
            }
            tokio::select! {
                changed = ready.changed() => {
                    if changed.is_err() {
                        return Err(GatewayError::Unreachable {
                            function: key.to_string(),
                            reason: "the backend stopped reporting instances".into(),
                        });
                    }
                }
                () = released => {}
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(GatewayError::NoReadyInstance {
                        function: key.to_string(),
                        waited_ms: started.elapsed().as_millis(),
                    });
                }
                // An instance that cannot start will not become ready: answer now.
                () = tokio::time::sleep(START_FAILURE_POLL) => {
                    if instances.is_empty()
                        && let Some(reason) = self.backend.start_failure(key)
                    {
                        return Err(GatewayError::FunctionError {
                            function: key.to_string(),
                            reason: format!("cannot start an instance: {reason}"),
                        });
                    }
                }
            }
        }
    }
}

struct HeldGuard<'a> {
    load: &'a FunctionLoad,
    metrics: &'a GatewayMetrics,
    labels: &'a super::metrics::FunctionLabels,
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.load.held.fetch_sub(1, Ordering::Relaxed);
        self.metrics.held_requests.get_or_create(self.labels).dec();
        // A slot freed while we held may be meant for another waiter.
        self.load.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;

    /// One ready instance per function, always.
    struct OneInstance(watch::Sender<ReadyInstances>);

    impl Backend for OneInstance {
        fn scale(&self, _: &FunctionKey, _: u32) -> Result<(), BackendError> {
            Ok(())
        }
        fn ready_instances(
            &self,
            _: &FunctionKey,
        ) -> Result<watch::Receiver<ReadyInstances>, BackendError> {
            Ok(self.0.subscribe())
        }
    }

    #[tokio::test]
    async fn a_table_entry_does_not_use_counters_the_activator_has_forgotten() {
        let instance = Instance {
            id: "i-1".into(),
            addr: "127.0.0.1:9".parse().unwrap(),
            concurrency: 4,
            direct: None,
        };
        let (ready, _) = watch::channel(ReadyInstances::from(vec![instance]));
        let (demand, _demand_rx) = mpsc::unbounded_channel();
        let activator = Activator::new(
            Arc::new(OneInstance(ready)),
            10,
            demand,
            Arc::new(GatewayMetrics::new()),
        );
        let key = FunctionKey::new("default", "f");
        let deadline = Instant::now() + std::time::Duration::from_secs(1);

        // An old table's entry caches the counters on its first request.
        let old_entry = LoadSlot::default();
        drop(
            activator
                .acquire(&key, &old_entry, deadline)
                .await
                .expect("lease"),
        );
        // The function leaves the configuration, and its counters are forgotten...
        activator.retain(|_| false);
        assert!(activator.loads().is_empty());
        // ...then comes back: the activator's counters are new ones.
        let lease = activator
            .acquire(&key, &LoadSlot::default(), deadline)
            .await;
        let current = activator.loads();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].in_flight(), 1);
        drop(lease);
        // A request still on the old table counts where the scaler looks.
        let held = activator
            .acquire(&key, &old_entry, deadline)
            .await
            .expect("lease");
        assert_eq!(current[0].in_flight(), 1);
        drop(held);
        assert_eq!(current[0].in_flight(), 0);
    }
}
