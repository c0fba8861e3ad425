//! `kfaas gateway`: the data plane on a cluster. Watches Functions, Routes, Stages and
//! UsagePlans (plus the Secrets they name) into the same table and policies `kfaas local` builds
//! from files, finds instances in EndpointSlices, and scales Deployments from the activator's
//! demand with the same autoscaler.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Client, Resource,
    api::{Api, ApiResource, DynamicObject},
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use super::{backend::KubeBackend, objects, usage_status};
use crate::{
    api::{Function, Route, Stage, UsagePlan},
    autoscaler::driver::PolicySource,
    backend::Backend,
    gateway::{
        config::{ConfigWarning, GatewayConfig, install},
        handler::Gateway,
        server,
        table::TableInput,
    },
};

/// Options of `kfaas gateway`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Serve the objects of one namespace only (default: all).
    pub namespace: Option<String>,
    pub access_log: bool,
    pub max_held_requests: u32,
    /// How often UsagePlan `status.usage` is written (when it changed).
    pub usage_status_interval: Duration,
    /// How often referenced Secrets are read again (key rotation).
    pub secret_refresh_interval: Duration,
    /// `requestContext.apiId` in events.
    pub api_id: String,
    /// Names this replica among the gateway's replicas (its pod name), in the demand it
    /// records on Deployments.
    pub gateway_id: String,
    /// Threads serving requests.
    pub serving_threads: usize,
}

/// Why `kfaas gateway` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterGatewayError {
    #[error("cannot reach the Kubernetes API (KUBECONFIG or the in-cluster service account): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The watched objects, untyped so that one object the gateway cannot read is a warning and
/// never stops the watch for the others.
struct Stores {
    functions: reflector::Store<DynamicObject>,
    routes: reflector::Store<DynamicObject>,
    stages: reflector::Store<DynamicObject>,
    usage_plans: reflector::Store<DynamicObject>,
    /// Poked on every watch event.
    changed: Arc<Notify>,
}

impl Stores {
    fn start(client: &Client, namespace: Option<&str>) -> Self {
        let changed = Arc::new(Notify::new());
        Self {
            functions: watch_kind::<Function>(client, namespace, &changed),
            routes: watch_kind::<Route>(client, namespace, &changed),
            stages: watch_kind::<Stage>(client, namespace, &changed),
            usage_plans: watch_kind::<UsagePlan>(client, namespace, &changed),
            changed,
        }
    }

    async fn wait_until_ready(&self) {
        for store in [
            &self.functions,
            &self.routes,
            &self.stages,
            &self.usage_plans,
        ] {
            let _ = store.wait_until_ready().await;
        }
    }

    /// The typed objects, and the ones that could not be read.
    fn snapshot(&self) -> (GatewayConfig, Vec<ConfigWarning>) {
        let (functions, mut warnings) = objects::typed("Function", &self.functions.state());
        let (routes, w) = objects::typed("Route", &self.routes.state());
        warnings.extend(w);
        let (stages, w) = objects::typed("Stage", &self.stages.state());
        warnings.extend(w);
        let (usage_plans, w) = objects::typed("UsagePlan", &self.usage_plans.state());
        warnings.extend(w);
        let config = GatewayConfig {
            table: TableInput {
                functions,
                routes,
                stages,
            },
            usage_plans,
            secrets: Vec::new(),
        };
        (config, warnings)
    }
}

/// Starts a watch of `K` (untyped) that pokes `changed` on every event.
fn watch_kind<K>(
    client: &Client,
    namespace: Option<&str>,
    changed: &Arc<Notify>,
) -> reflector::Store<DynamicObject>
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let changed = Arc::clone(changed);
    let kind = resource.kind.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .boxed();
        let mut generations = objects::SpecGenerations::default();
        while let Some(event) = events.next().await {
            let rebuild = match event {
                Ok(watcher::Event::Init) => {
                    generations.relist_started();
                    false
                }
                Ok(watcher::Event::InitApply(object)) => {
                    generations.relisted(&object);
                    false
                }
                Ok(watcher::Event::InitDone) => generations.relist_done(),
                Ok(watcher::Event::Apply(object)) => generations.applied(&object),
                Ok(watcher::Event::Delete(object)) => generations.deleted(&object),
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying");
                    false
                }
            };
            if rebuild {
                changed.notify_one();
            }
        }
    });
    store
}

/// Reads the Secrets the configuration names; a missing one is a warning (its keys are left
/// out, as the ApiKeyStore reports).
async fn read_secrets(
    client: &Client,
    names: &BTreeSet<(String, String)>,
) -> (Vec<Secret>, Vec<ConfigWarning>) {
    let mut secrets = Vec::new();
    let mut warnings = Vec::new();
    for (namespace, name) in names {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => secrets.push(secret),
            Ok(None) => warnings.push(ConfigWarning {
                object: format!("Secret/{namespace}/{name}"),
                message: "not found".into(),
            }),
            Err(e) => warnings.push(ConfigWarning {
                object: format!("Secret/{namespace}/{name}"),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    (secrets, warnings)
}

/// Rebuilds the gateway's configuration after every change (debounced), and every
/// `refresh` to pick up rotated Secrets. Marks the gateway ready after the first build.
async fn rebuild_loop(
    client: Client,
    stores: Stores,
    gateway: Arc<Gateway>,
    backend: Arc<KubeBackend>,
    ready: Arc<AtomicBool>,
    refresh: Duration,
    stop: CancellationToken,
) {
    stores.wait_until_ready().await;
    let mut reported: BTreeSet<String> = BTreeSet::new();
    loop {
        let (mut config, mut warnings) = stores.snapshot();
        let names = objects::referenced_secrets(&config.usage_plans, &config.table.routes);
        let (secrets, secret_warnings) = read_secrets(&client, &names).await;
        config.secrets = secrets;
        warnings.extend(secret_warnings);
        warnings.extend(install(&gateway, &config));
        backend.set_concurrency(
            gateway
                .table
                .load()
                .functions()
                .map(|f| (f.key.clone(), f.concurrency)),
        );
        // Each problem is logged once while it lasts, not on every rebuild.
        let now: BTreeSet<String> = warnings.iter().map(ToString::to_string).collect();
        for w in now.difference(&reported) {
            tracing::warn!("{w}");
        }
        reported = now;
        if !ready.swap(true, Ordering::SeqCst) {
            let table = gateway.table.load();
            tracing::info!(
                functions = config.table.functions.len(),
                routes = config.table.routes.len(),
                stages = table.stages().len(),
                usage_plans = config.usage_plans.len(),
                "kfaas gateway: configuration loaded; ready"
            );
        } else {
            tracing::debug!(routes = config.table.routes.len(), "configuration rebuilt");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = stores.changed.notified() => {}
            () = tokio::time::sleep(refresh) => {}
        }
        // A burst of events (a `kubectl apply -f dir/`) becomes one rebuild.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs until SIGTERM/Ctrl-C (or `shutdown`).
pub async fn run(
    options: ClusterOptions,
    shutdown: CancellationToken,
) -> Result<(), ClusterGatewayError> {
    let client = Client::try_default()
        .await
        .map_err(ClusterGatewayError::Client)?;
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| ClusterGatewayError::Listen {
                addr: options.listen,
                source,
            })?;
    let admin = TcpListener::bind(options.admin_listen)
        .await
        .map_err(|source| ClusterGatewayError::Listen {
            addr: options.admin_listen,
            source,
        })?;
    let namespace = options.namespace.as_deref();
    let kube_backend = KubeBackend::start(client.clone(), namespace, &options.gateway_id);
    let backend: Arc<dyn Backend> = kube_backend.clone();
    let (gateway, demand_rx) = Gateway::new(
        Arc::clone(&backend),
        options.max_held_requests,
        options.access_log,
        options.api_id.clone(),
    );
    let gateway = Arc::new(gateway);
    let stores = Stores::start(&client, namespace);
    let ready = Arc::new(AtomicBool::new(false));
    println!(
        "kfaas gateway: serving on http://{} (admin on http://{}), watching {}",
        server::local_addr(&listener),
        server::local_addr(&admin),
        namespace.map_or_else(
            || "all namespaces".to_owned(),
            |ns| format!("namespace {ns}")
        )
    );

    let tasks = [
        tokio::spawn(rebuild_loop(
            client.clone(),
            stores,
            Arc::clone(&gateway),
            kube_backend,
            Arc::clone(&ready),
            options.secret_refresh_interval,
            shutdown.clone(),
        )),
        tokio::spawn(crate::autoscaler::driver::run(
            Arc::clone(&gateway) as Arc<dyn PolicySource>,
            Arc::clone(&gateway.activator),
            Arc::clone(&backend),
            Arc::clone(&gateway.metrics),
            demand_rx,
            Duration::from_secs(1),
        )),
        tokio::spawn(usage_status::run(
            client,
            Arc::clone(&gateway),
            options.usage_status_interval,
            shutdown.clone(),
        )),
        tokio::spawn(server::serve_admin(
            Arc::clone(&gateway),
            admin,
            Arc::clone(&ready),
            shutdown.clone(),
        )),
    ];
    let serve = server::serve(
        Arc::clone(&gateway),
        listener,
        shutdown.clone(),
        options.serving_threads,
        server::ServingThreads::default(),
    );
    // Requests in flight are answered (Kubernetes has stopped sending new ones to a terminating
    // pod's endpoints, or soon will).
    server::serve_until_stopped("kfaas gateway", serve, &shutdown).await;
    for task in tasks {
        task.abort();
    }
    gateway
        .access_log
        .finish(crate::gateway::access_log::FINISH_WITHIN);
    Ok(())
}
