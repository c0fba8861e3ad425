//! `kfaas controller`: reconciles Function, Route, Stage and UsagePlan objects.
//!
//! Each kind is a pipeline (validate → build → apply → status) whose pure steps live beside it:
//! [`function`] (Deployment + Service + code ConfigMap), [`route`] (do its functions exist),
//! [`stage`] (URL, routes served, Ingress), [`usage_plan`] (API keys readable). One replica
//! leads through a Lease ([`leader`]); the others wait.

pub mod condition;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod function;
pub mod leader;
pub mod route;
pub mod stage;
mod status;
pub mod usage_plan;

use std::{fmt::Debug, future::Future, hash::Hash, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
    networking::v1::Ingress,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use self::leader::LeaderElector;
pub use self::{error::Error, function::build::BuildConfig, stage::GatewayService};
use crate::{
    api::{Function, Route, Stage, UsagePlan},
    workload::FUNCTION_LABEL,
};

/// Field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "kfaas-controller";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch one namespace, or all when None.
    pub namespace: Option<String>,
    pub build: BuildConfig,
    pub gateway_service: Option<GatewayService>,
    /// Where the leader-election Lease lives.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease.
    pub identity: String,
}

/// What every reconciler gets.
pub struct Context {
    pub client: Client,
    pub build: BuildConfig,
    pub gateway_service: Option<GatewayService>,
    pub recorder: Recorder,
}

/// Why the controller stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("lost the leader lease")]
    LostLease,
    #[error("the watches ended")]
    WatchesEnded,
}

/// Waits for the lease, reconciles until `shutdown` completes (or leadership is lost), then
/// lets the reconciles in flight finish and releases the lease.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let elector = LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &config.identity,
    );
    tokio::pin!(shutdown);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(
        identity = elector.identity(),
        lease = %format!("{}/{}", config.lease_namespace, config.lease_name),
        "leading: reconciling"
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        build: config.build.clone(),
        gateway_service: config.gateway_service.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(config.identity.clone()),
            },
        ),
    });
    let stop = CancellationToken::new();
    let controllers = run_controllers(ctx, config.namespace.as_deref(), stop.clone());
    tokio::pin!(controllers);
    let (outcome, finished) = tokio::select! {
        () = &mut controllers => (Err(RunError::WatchesEnded), true),
        () = elector.hold() => (Err(RunError::LostLease), false),
        () = &mut shutdown => (Ok(()), false),
    };
    stop.cancel();
    if !finished
        && tokio::time::timeout(Duration::from_secs(20), &mut controllers)
            .await
            .is_err()
    {
        tracing::warn!("reconciles still running after 20s; stopping anyway");
    }
    if !matches!(outcome, Err(RunError::LostLease)) {
        elector.release().await;
    }
    outcome
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the four controllers until `stop` is cancelled. Each watches its kind through a
/// [`DeserializeGuard`]: an object that does not parse is skipped (and reported) instead of
/// failing the whole watch, and so every other object's reconcile.
async fn run_controllers(ctx: Arc<Context>, namespace: Option<&str>, stop: CancellationToken) {
    let client = ctx.client.clone();
    let cfg = watcher::Config::default;

    let functions = Controller::new(api::<Guarded<Function>>(&client, namespace), cfg());
    let function_store = functions.store();
    let functions = functions
        .owns(
            api::<Deployment>(&client, namespace),
            cfg().labels(FUNCTION_LABEL),
        )
        .owns(
            api::<Service>(&client, namespace),
            cfg().labels(FUNCTION_LABEL),
        )
        .owns(
            api::<ConfigMap>(&client, namespace),
            cfg().labels(FUNCTION_LABEL),
        )
        // Metadata only (an Api of PartialObjectMeta asks for no data): enough to see a change.
        .watches(
            api::<PartialObjectMeta<ConfigMap>>(&client, namespace),
            cfg(),
            move |cm| code_users(&function_store, &cm),
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            |obj, ctx| guarded(obj, ctx, function::reconcile),
            error_policy,
            ctx.clone(),
        );

    let routes = Controller::new(api::<Guarded<Route>>(&client, namespace), cfg());
    let route_store = routes.store();
    let routes = routes
        .watches(
            api::<Guarded<Function>>(&client, namespace),
            cfg(),
            move |f: Guarded<Function>| {
                // Every route of the namespace naming this function (as target or authorizer).
                let ns = f.namespace();
                let name = f.name_any();
                route_store
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace() == ns
                            && r.0
                                .as_ref()
                                .is_ok_and(|r| route::referenced_functions(&r.spec).contains(&name))
                    })
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            |obj, ctx| guarded(obj, ctx, route::reconcile),
            error_policy,
            ctx.clone(),
        );

    let stages = Controller::new(api::<Guarded<Stage>>(&client, namespace), cfg());
    let stage_store = stages.store();
    let stages = stages
        .owns(
            api::<Ingress>(&client, namespace),
            cfg().labels(stage::STAGE_LABEL),
        )
        .watches(
            api::<Guarded<Route>>(&client, namespace),
            cfg(),
            move |r: Guarded<Route>| {
                let ns = r.namespace();
                let Ok(route) = r.0 else { return Vec::new() };
                stage_store
                    .state()
                    .into_iter()
                    .filter(|s| {
                        s.namespace() == ns
                            && s.0.as_ref().is_ok_and(|s| s.spec.api == route.spec.api)
                    })
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            |obj, ctx| guarded(obj, ctx, stage::reconcile),
            error_policy,
            ctx.clone(),
        );

    let plans = Controller::new(api::<Guarded<UsagePlan>>(&client, namespace), cfg())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            |obj, ctx| guarded(obj, ctx, usage_plan::reconcile),
            error_policy,
            ctx,
        );

    tokio::join!(
        drain("Function", functions),
        drain("Route", routes),
        drain("Stage", stages),
        drain("UsagePlan", plans),
    );
}

/// Consumes a controller's results: one object's failure is logged and the stream goes on.
async fn drain<K, E1, E2>(
    kind: &'static str,
    stream: impl futures::Stream<
        Item = Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E1, E2>>,
    >,
) where
    K: Resource,
    K::DynamicType: Debug + Eq + Hash + Clone,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    stream
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(kind, object = %obj, "reconciled"),
                // Events of owned objects after their owner is gone: nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(kind, object = %obj, "gone before its reconcile")
                }
                Err(e) => tracing::warn!(kind, error = %e, "reconcile error"),
            }
        })
        .await;
}

/// The Functions to reconcile when a ConfigMap changes: those in its namespace whose
/// `code.configMap` names it, so that new code rolls out (the pod template carries the code's
/// digest).
fn code_users(
    functions: &Store<Guarded<Function>>,
    cm: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<Guarded<Function>>> {
    let ns = cm.namespace();
    let name = cm.name_any();
    functions
        .state()
        .into_iter()
        .filter(|f| {
            f.namespace() == ns
                && f.0.as_ref().is_ok_and(|f| {
                    f.spec.code.as_ref().and_then(|c| c.config_map.as_ref()) == Some(&name)
                })
        })
        .map(|f| ObjectRef::from_obj(f.as_ref()))
        .collect()
}

/// A watched object that may not have parsed.
type Guarded<K> = DeserializeGuard<K>;

/// Runs `reconcile` on an object that parsed; reports one that did not, once, and waits for
/// it to change.
async fn guarded<K, F, Fut>(
    obj: Arc<Guarded<K>>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    match &obj.0 {
        Ok(k) => reconcile(Arc::new(k.clone()), ctx).await,
        Err(invalid) => {
            let error = Error::Unreadable(invalid.error.clone());
            status::report_failure(&ctx, obj.as_ref(), &[], &error).await;
            Ok(Action::await_change())
        }
    }
}

/// API errors are retried soon; user errors never reach here (they requeue from status).
fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action
where
    K: DeserializeOwned,
{
    Action::requeue(if error.is_user_error() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    })
}
