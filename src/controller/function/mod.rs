//! Function → Deployment + Service (+ code ConfigMap): validate, build, apply, status.

pub mod build;
pub mod workload;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::controller::Action,
};

use self::{build::code_hash, workload::Workload};
use super::{
    Context, FIELD_MANAGER,
    condition::{Readiness, with_ready},
    error::Error,
    status::{apply_status, report_failure},
};
use crate::{
    api::{Function, FunctionStatus},
    workload::{deployment_name, function_selector},
};

/// What the cluster shows of a deployed function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Instances asked for (the Deployment's replicas).
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods that take invocations.
    pub ready: i32,
    /// The Deployment gave up waiting for its pods (ProgressDeadlineExceeded).
    pub stalled: bool,
}

/// The `Ready` condition of a deployed function. A function scaled to zero is ready: the
/// gateway starts an instance on the first request.
pub fn readiness(observed: Observed) -> Readiness {
    if observed.ready > 0 {
        Readiness::ready(
            "InstancesReady",
            format!("{} of {} instances ready", observed.ready, observed.desired),
        )
    } else if observed.desired == 0 {
        Readiness::ready("ScaledToZero", "no instances; the first request starts one")
    } else if observed.stalled {
        Readiness::not_ready(
            "InstancesFailing",
            format!(
                "0 of {} instances ready after the Deployment's progress deadline; see the \
                 function's pods and their events",
                observed.desired
            ),
        )
    } else {
        Readiness::not_ready(
            "InstancesStarting",
            format!("0 of {} instances ready", observed.desired),
        )
    }
}

/// The status a reconcile leaves: `previous` with what was observed (or only the condition,
/// when nothing could be observed).
pub fn desired_status(
    function: &Function,
    outcome: &Result<(Workload, Observed), Error>,
    now: Timestamp,
) -> FunctionStatus {
    let previous = function.status.clone().unwrap_or_default();
    let generation = function.metadata.generation;
    match outcome {
        Ok((workload, observed)) => FunctionStatus {
            observed_generation: generation,
            conditions: with_ready(&previous.conditions, &readiness(*observed), generation, now),
            replicas: observed.replicas,
            ready_replicas: observed.ready,
            selector: Some(function_selector(&workload.name)),
            url: Some(build::invoke_url(workload)),
        },
        Err(error) => FunctionStatus {
            observed_generation: generation,
            conditions: with_ready(&previous.conditions, &error.readiness(), generation, now),
            ..previous
        },
    }
}

/// Reconciles one Function; failures land in its status and an event.
pub async fn reconcile(function: Arc<Function>, ctx: Arc<Context>) -> Result<Action, Error> {
    let outcome = deploy(&function, &ctx).await;
    let status = desired_status(&function, &outcome, Timestamp::now());
    if function.status.as_ref() != Some(&status) {
        let api: Api<Function> = Api::namespaced(
            ctx.client.clone(),
            &function.namespace().unwrap_or_default(),
        );
        apply_status(&api, &function.name_any(), serde_json::to_value(&status)?).await?;
    }
    match outcome {
        Ok(_) => Ok(Action::requeue(Duration::from_secs(300))),
        Err(error) => {
            let previous = function.status.as_ref().map(|s| s.conditions.as_slice());
            report_failure(
                &ctx,
                function.as_ref(),
                previous.unwrap_or_default(),
                &error,
            )
            .await;
            if error.is_user_error() {
                // A referenced ConfigMap may appear without the Function changing.
                Ok(Action::requeue(Duration::from_secs(30)))
            } else {
                Err(error)
            }
        }
    }
}

/// Applies the function's objects and reads back its Deployment.
async fn deploy(function: &Function, ctx: &Context) -> Result<(Workload, Observed), Error> {
    let workload = Workload::try_from(function)?;
    let owner = function
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let ns = workload.namespace.as_str();
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    let hash = if let Some(files) = workload.inline_code() {
        if let Some(cm) = build::code_config_map(&workload, &owner) {
            let name = cm.name_any();
            Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
                .patch(&name, &apply, &Patch::Apply(&cm))
                .await?;
        }
        Some(code_hash(files))
    } else if let Some(name) = workload.user_config_map() {
        let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::CodeConfigMapNotFound(name.to_owned()))?;
        Some(code_hash(cm.data.iter().flatten()))
    } else {
        None
    };

    let service = build::service(&workload, &owner);
    Api::<Service>::namespaced(ctx.client.clone(), ns)
        .patch(&service.name_any(), &apply, &Patch::Apply(&service))
        .await?;

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let desired = build::deployment(&workload, &ctx.build, &owner, hash.as_deref());
    let name = deployment_name(&workload.name);
    let deployment = match deployments.get_opt(name).await? {
        None => create_deployment(&deployments, desired, workload.initial_replicas).await?,
        Some(_) => {
            deployments
                .patch(name, &apply, &Patch::Apply(&desired))
                .await?
        }
    };
    let mut desired_replicas = deployment.spec.replicas.unwrap_or(1);
    if let Some(replicas) = workload.replicas_to_set(desired_replicas) {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        deployments
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        desired_replicas = replicas;
    }
    let status = deployment.status.unwrap_or_default();
    let observed = Observed {
        desired: desired_replicas,
        replicas: status.replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        stalled: status.conditions.iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("False")
        }),
    };
    Ok((workload, observed))
}

/// Creates the Deployment with its first replica count: a plain create, so that the count is
/// not part of what kfaas applies afterwards and the autoscaler's changes are never reverted.
async fn create_deployment(
    api: &Api<Deployment>,
    mut deployment: Deployment,
    replicas: i32,
) -> Result<Deployment, Error> {
    deployment.spec.replicas = Some(replicas);
    let params = PostParams {
        field_manager: Some(format!("{FIELD_MANAGER}-create")),
        ..PostParams::default()
    };
    match api.create(&params, &deployment).await {
        Ok(created) => Ok(created),
        // Created meanwhile (a second reconcile, another controller): apply instead.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            deployment.spec.replicas = None;
            Ok(api
                .patch(
                    &deployment.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&deployment),
                )
                .await?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod reconcile_tests;

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::api::{FunctionCode, FunctionRuntime, FunctionSpec};

    fn function() -> Function {
        Function {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                namespace: Some("apps".into()),
                uid: Some("u".into()),
                generation: Some(4),
                ..ObjectMeta::default()
            },
            spec: FunctionSpec {
                runtime: Some(FunctionRuntime::Nodejs),
                handler: Some("index.handler".into()),
                code: Some(FunctionCode {
                    path: Some("./src".into()),
                    ..FunctionCode::default()
                }),
                ..FunctionSpec::default()
            },
            status: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000).expect("time")
    }

    #[test]
    fn readiness_follows_the_instances() {
        let r = readiness(Observed {
            desired: 0,
            replicas: 0,
            ready: 0,
            ..Observed::default()
        });
        assert!(r.ready);
        assert_eq!(r.reason, "ScaledToZero");
        let r = readiness(Observed {
            desired: 2,
            replicas: 2,
            ready: 0,
            ..Observed::default()
        });
        assert!(!r.ready);
        assert_eq!(r.reason, "InstancesStarting");
        let r = readiness(Observed {
            desired: 2,
            replicas: 2,
            ready: 0,
            stalled: true,
        });
        assert!(!r.ready);
        assert_eq!(r.reason, "InstancesFailing");
        let r = readiness(Observed {
            desired: 2,
            replicas: 2,
            ready: 1,
            ..Observed::default()
        });
        assert!(r.ready);
        assert_eq!(r.message, "1 of 2 instances ready");
    }

    #[test]
    fn a_failure_keeps_the_counts_and_sets_the_reason() {
        let mut f = function();
        f.status = Some(FunctionStatus {
            replicas: 1,
            ready_replicas: 1,
            ..FunctionStatus::default()
        });
        let outcome = Workload::try_from(&f).map(|w| (w, Observed::default()));
        let status = desired_status(&f, &outcome, now());
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!((status.replicas, status.ready_replicas), (1, 1));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "CodePathNotSupported")
        );
    }

    #[test]
    fn a_deployed_function_shows_selector_url_and_counts_and_is_stable() {
        let mut f = function();
        f.spec.code = Some(FunctionCode {
            config_map: Some("code".into()),
            ..FunctionCode::default()
        });
        let w = Workload::try_from(&f).expect("valid");
        let observed = Observed {
            desired: 1,
            replicas: 1,
            ready: 1,
            ..Observed::default()
        };
        let status = desired_status(&f, &Ok((w.clone(), observed)), now());
        assert_eq!(status.selector.as_deref(), Some("kfaas.dev/function=hello"));
        assert_eq!(
            status.url.as_deref(),
            Some("http://hello.apps.svc:8080/2015-03-31/functions/function/invocations")
        );
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(status.conditions[0].status, "True");
        // Reconciling again later with the same outcome asks for no write.
        f.status = Some(status.clone());
        let later = Timestamp::from_second(2_000).expect("time");
        assert_eq!(desired_status(&f, &Ok((w, observed)), later), status);
    }
}
