//! The Kubernetes backend: a Function's ready instances are the ready endpoints of its Service's
//! EndpointSlices (port named `invoke`), and scaling writes its Deployment's replicas, shared
//! with the other gateway replicas through [`shared_demand`].

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    Client,
    api::{Api, Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::{mpsc, watch};

use crate::{
    backend::{Backend, BackendError, FunctionKey, Instance, ReadyInstances},
    gateway::cluster::shared_demand,
    workload::{FUNCTION_LABEL, INVOKE_PORT_NAME, deployment_name},
};

/// The ready instances of one function, from all of its EndpointSlices. Endpoints that are not
/// ready or are terminating are left out; a slice without an `invoke` port contributes nothing.
/// Sorted by id so an unchanged set compares equal.
pub fn ready_instances_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    concurrency: u32,
) -> Vec<Instance> {
    let mut out = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(INVOKE_PORT_NAME))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
        }) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            // An unset `ready` means ready (the API's documented default); terminating never is.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            let id = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| addr.to_string());
            out.insert(
                id.clone(),
                Instance {
                    id,
                    addr,
                    concurrency: concurrency.max(1),
                    direct: None,
                },
            );
        }
    }
    out.into_values().collect()
}

/// The function an EndpointSlice belongs to, from the label the Service passed on.
fn function_of(slice: &EndpointSlice) -> Option<FunctionKey> {
    let name = slice.metadata.labels.as_ref()?.get(FUNCTION_LABEL)?;
    Some(FunctionKey::new(
        slice.metadata.namespace.as_deref().unwrap_or("default"),
        name.as_str(),
    ))
}

struct FunctionState {
    ready: watch::Sender<ReadyInstances>,
    concurrency: u32,
}

/// Kubernetes implementation of [`Backend`].
pub struct KubeBackend {
    functions: Mutex<HashMap<FunctionKey, FunctionState>>,
    slices: reflector::Store<EndpointSlice>,
    /// The functions' pods, read only to tell why instances cannot start.
    pods: reflector::Store<Pod>,
    scale_tx: mpsc::UnboundedSender<(FunctionKey, u32)>,
}

impl KubeBackend {
    /// Starts watching EndpointSlices (in `namespace`, or all) and a task that applies scale.
    /// `gateway_id` names this gateway among its replicas (its pod name).
    pub fn start(client: Client, namespace: Option<&str>, gateway_id: &str) -> Arc<Self> {
        let slices_api: Api<EndpointSlice> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (store, writer) = reflector::store();
        let (scale_tx, scale_rx) = mpsc::unbounded_channel();
        let backend = Arc::new(Self {
            functions: Mutex::new(HashMap::new()),
            slices: store,
            pods: watch_pods(client.clone(), namespace),
            scale_tx,
        });
        let config = watcher::Config::default().labels(FUNCTION_LABEL);
        let weak = Arc::downgrade(&backend);
        tokio::spawn(async move {
            let mut events = watcher(slices_api, config)
                .default_backoff()
                .reflect(writer)
                .boxed();
            while let Some(event) = events.next().await {
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                match event {
                    Ok(watcher::Event::Apply(slice) | watcher::Event::Delete(slice)) => {
                        if let Some(key) = function_of(&slice) {
                            backend.publish(&key);
                        }
                    }
                    Ok(watcher::Event::InitDone) => backend.publish_all(),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "watching EndpointSlices"),
                }
            }
        });
        tokio::spawn(apply_scale(
            client,
            namespace.map(str::to_owned),
            gateway_id.to_owned(),
            scale_rx,
        ));
        backend
    }

    /// Sets the per-instance concurrency of the functions the gateway serves now.
    pub fn set_concurrency(&self, functions: impl IntoIterator<Item = (FunctionKey, u32)>) {
        let changed: Vec<FunctionKey> = {
            let mut map = self.lock();
            functions
                .into_iter()
                .filter_map(|(key, concurrency)| {
                    let state = map.entry(key.clone()).or_insert_with(new_state);
                    (state.concurrency != concurrency).then(|| {
                        state.concurrency = concurrency;
                        key
                    })
                })
                .collect()
        };
        for key in changed {
            self.publish(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FunctionKey, FunctionState>> {
        self.functions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes one function's ready instances and tells the waiting requests if they changed.
    fn publish(&self, key: &FunctionKey) {
        let slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .state_filter(|s| function_of(s).as_ref() == Some(key));
        let mut map = self.lock();
        let state = map.entry(key.clone()).or_insert_with(new_state);
        let instances =
            ready_instances_from_slices(slices.iter().map(Arc::as_ref), state.concurrency);
        state.ready.send_if_modified(|current| {
            if current.as_ref() == instances.as_slice() {
                false
            } else {
                *current = instances.into();
                true
            }
        });
    }

    fn publish_all(&self) {
        let keys: Vec<FunctionKey> = self.lock().keys().cloned().collect();
        for key in keys {
            self.publish(&key);
        }
    }
}

fn new_state() -> FunctionState {
    FunctionState {
        ready: watch::Sender::new(Arc::from(Vec::new())),
        concurrency: 1,
    }
}

impl Backend for KubeBackend {
    fn scale(&self, function: &FunctionKey, replicas: u32) -> Result<(), BackendError> {
        self.scale_tx
            .send((function.clone(), replicas))
            .map_err(|_| BackendError::Scale {
                function: function.clone(),
                message: "the scaling task has stopped".into(),
            })
    }

    fn ready_instances(
        &self,
        function: &FunctionKey,
    ) -> Result<watch::Receiver<ReadyInstances>, BackendError> {
        let receiver = {
            let mut map = self.lock();
            let state = map.entry(function.clone()).or_insert_with(new_state);
            state.ready.subscribe()
        };
        Ok(receiver)
    }

    fn start_failure(&self, function: &FunctionKey) -> Option<String> {
        let pods = self.pods.state_filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(function.namespace.as_str())
                && pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(FUNCTION_LABEL))
                    .is_some_and(|name| *name == function.name)
        });
        super::pods::start_failure(pods.iter().map(Arc::as_ref))
    }
}

/// A store of the pods that carry the function label, kept by a background watch.
fn watch_pods(client: Client, namespace: Option<&str>) -> reflector::Store<Pod> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (store, writer) = reflector::store();
    // Only what start_failure reads is kept: names, labels, deletion and container states.
    let stream = watcher(api, watcher::Config::default().labels(FUNCTION_LABEL))
        .default_backoff()
        .modify(|pod| {
            pod.spec = None;
            pod.metadata.managed_fields = None;
            pod.metadata.annotations = None;
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut events = stream.boxed();
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching Pods");
            }
        }
    });
    store
}

/// Applies this gateway's wishes: at once when one changes, and every few seconds to keep a
/// non-zero wish fresh and to honour other gateways' changes (see [`shared_demand`]).
async fn apply_scale(
    client: Client,
    namespace: Option<String>,
    gateway_id: String,
    mut requests: mpsc::UnboundedReceiver<(FunctionKey, u32)>,
) {
    let deployments = watch_deployments(client.clone(), namespace.as_deref());
    let mut wishes: BTreeMap<FunctionKey, u32> = BTreeMap::new();
    let mut refresh = tokio::time::interval(shared_demand::REFRESH_EVERY / 2);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed: Vec<FunctionKey> = tokio::select! {
            request = requests.recv() => {
                let Some((key, replicas)) = request else { return };
                wishes.insert(key.clone(), replicas);
                // A burst of decisions becomes one write per function.
                let mut keys = vec![key];
                while let Ok((key, replicas)) = requests.try_recv() {
                    wishes.insert(key.clone(), replicas);
                    keys.push(key);
                }
                keys.sort();
                keys.dedup();
                keys
            }
            // Periodically, only where the cached Deployment says a write is due: no API call
            // per function per tick.
            _ = refresh.tick() => wishes
                .iter()
                .filter(|(key, desired)| write_due(&deployments, &gateway_id, key, **desired))
                .map(|(key, _)| key.clone())
                .collect(),
        };
        for key in changed {
            let Some(&desired) = wishes.get(&key) else {
                continue;
            };
            let api: Api<Deployment> = Api::namespaced(client.clone(), &key.namespace);
            let name = deployment_name(&key.name);
            match write_wish(&api, name, &gateway_id, desired).await {
                Ok(Some(replicas)) => {
                    tracing::debug!(function = %key, desired, replicas, "Deployment scale written");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    function = %key,
                    desired,
                    error = %e,
                    "cannot scale Deployment {}/{name}",
                    key.namespace
                ),
            }
        }
    }
}

/// Whether the cached Deployment of `key` needs a write for this gateway's wish.
fn write_due(
    deployments: &reflector::Store<Deployment>,
    gateway_id: &str,
    key: &FunctionKey,
    desired: u32,
) -> bool {
    let Some(deployment) = deployments.find(|d| {
        d.metadata.namespace.as_deref() == Some(key.namespace.as_str())
            && d.metadata.name.as_deref() == Some(deployment_name(&key.name))
    }) else {
        return false;
    };
    let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
    let current = deployment.spec.replicas.and_then(|r| u32::try_from(r).ok());
    shared_demand::plan_write(gateway_id, desired, &annotations, current, unix_now()).is_some()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A store of the functions' Deployments (replicas and annotations only), kept by a watch.
fn watch_deployments(client: Client, namespace: Option<&str>) -> reflector::Store<Deployment> {
    let api: Api<Deployment> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(FUNCTION_LABEL))
        .default_backoff()
        .modify(|deployment| {
            deployment.spec.template = Default::default();
            deployment.metadata.managed_fields = None;
            deployment.status = None;
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut events = stream.boxed();
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching Deployments");
            }
        }
    });
    store
}

/// Records `desired` for this gateway on the Deployment and sets its replicas to the largest
/// fresh wish. Optimistic: the patch carries the resourceVersion read, and a conflict (another
/// gateway wrote in between) is read and decided again. Returns the replicas written, if any.
async fn write_wish(
    api: &Api<Deployment>,
    name: &str,
    gateway_id: &str,
    desired: u32,
) -> Result<Option<u32>, kube::Error> {
    let params = PatchParams {
        field_manager: Some("kfaas-gateway".into()),
        ..PatchParams::default()
    };
    for _ in 0..5 {
        let Some(deployment) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
        let current = deployment.spec.replicas.and_then(|r| u32::try_from(r).ok());
        let Some(write) =
            shared_demand::plan_write(gateway_id, desired, &annotations, current, unix_now())
        else {
            return Ok(None);
        };
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": deployment.metadata.resource_version,
                "annotations": write.annotations,
            },
            "spec": {"replicas": write.replicas},
        });
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(Some(write.replicas)),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(ip: &str, pod: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(port_name: &str, port: i32, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ports: Some(vec![EndpointPort {
                name: Some(port_name.into()),
                port: Some(port),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_not_terminating_endpoints_on_the_invoke_port_are_instances() {
        let a = slice(
            INVOKE_PORT_NAME,
            8080,
            vec![
                endpoint("10.244.0.7", "hello-b", Some(true), Some(false)),
                endpoint("10.244.0.5", "hello-a", None, None),
                endpoint("10.244.0.9", "hello-c", Some(false), None),
                endpoint("10.244.0.11", "hello-d", Some(true), Some(true)),
                endpoint("not-an-ip", "hello-e", Some(true), None),
            ],
        );
        let other_port = slice(
            "metrics",
            9090,
            vec![endpoint("10.244.0.8", "x", Some(true), None)],
        );
        let instances = ready_instances_from_slices([&a, &other_port], 4);
        let got: Vec<(String, String, u32)> = instances
            .iter()
            .map(|i| (i.id.clone(), i.addr.to_string(), i.concurrency))
            .collect();
        assert_eq!(
            got,
            vec![
                ("hello-a".into(), "10.244.0.5:8080".into(), 4),
                ("hello-b".into(), "10.244.0.7:8080".into(), 4),
            ]
        );
    }

    #[test]
    fn instances_of_several_slices_are_merged_and_concurrency_is_at_least_one() {
        let a = slice(
            INVOKE_PORT_NAME,
            8080,
            vec![endpoint("10.244.0.5", "p1", Some(true), None)],
        );
        let b = slice(
            INVOKE_PORT_NAME,
            8080,
            vec![endpoint("fd00::5", "p2", Some(true), None)],
        );
        let instances = ready_instances_from_slices([&a, &b], 0);
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[1].addr.to_string(), "[fd00::5]:8080");
        assert!(instances.iter().all(|i| i.concurrency == 1));
    }
}
