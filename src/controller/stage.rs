//! Stage: its URL, how many routes it serves, and an Ingress to the gateway when it has a host
//! or ingress settings.

use std::{collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
            IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use sha2::{Digest, Sha256};

use super::{
    Context, FIELD_MANAGER,
    condition::{Readiness, with_ready},
    error::Error,
    status::{apply_status, report_failure},
};
use crate::{
    api::{Route, Stage, StageSpec, StageStatus},
    workload::MANAGED_BY,
};

/// Label on the objects made for a Stage; its value is the Stage's name.
pub const STAGE_LABEL: &str = "kfaas.dev/stage";
/// Name of the gateway Service's HTTP port (charts/kfaas/templates/gateway.yaml).
pub const GATEWAY_PORT_NAME: &str = "http";
const GATEWAY_PORT: i32 = 80;

/// The gateway's Service, `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayService {
    pub namespace: String,
    pub name: String,
}

impl GatewayService {
    fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }
}

impl FromStr for GatewayService {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

/// Where the stage answers: its host (https with a TLS secret), else the gateway Service
/// inside the cluster; with the base path.
pub fn url(spec: &StageSpec, gateway: Option<&GatewayService>) -> Option<String> {
    let base = spec
        .base_path
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let tls = spec
        .ingress
        .as_ref()
        .is_some_and(|i| i.tls_secret_name.is_some());
    match (&spec.host, gateway) {
        (Some(host), _) => Some(format!(
            "{}://{host}{base}/",
            if tls { "https" } else { "http" }
        )),
        (None, Some(gw)) => Some(format!("http://{}{base}/", gw.host())),
        (None, None) => None,
    }
}

/// Whether the stage asks to be exposed through an Ingress.
pub fn wants_ingress(spec: &StageSpec) -> bool {
    spec.host.is_some() || spec.ingress.is_some()
}

/// The Service the Ingress points at: the gateway itself when it lives in the stage's
/// namespace, else an ExternalName alias of it there (an Ingress only reaches Services of its
/// own namespace).
pub fn backend_service_name(stage: &str, namespace: &str, gateway: &GatewayService) -> String {
    if gateway.namespace == namespace {
        return gateway.name.clone();
    }
    let name = format!("{stage}-gateway");
    if name.len() <= 63 {
        return name;
    }
    let digest = Sha256::digest(stage.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("kfaas-gateway-{hex}")
}

fn metadata(name: &str, stage: &Stage, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: stage.namespace(),
        labels: Some(BTreeMap::from([
            (STAGE_LABEL.to_owned(), stage.name_any()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            ),
        ])),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The ExternalName alias of the gateway in the stage's namespace, when one is needed.
pub fn gateway_alias(
    stage: &Stage,
    gateway: &GatewayService,
    owner: &OwnerReference,
) -> Option<Service> {
    let ns = stage.namespace()?;
    if ns == gateway.namespace {
        return None;
    }
    let name = backend_service_name(&stage.name_any(), &ns, gateway);
    Some(Service {
        metadata: metadata(&name, stage, owner),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".to_owned()),
            external_name: Some(gateway.host()),
            ports: Some(vec![ServicePort {
                name: Some(GATEWAY_PORT_NAME.to_owned()),
                port: GATEWAY_PORT,
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The stage's Ingress: host (any when unset), base path prefix, to the gateway.
pub fn ingress(stage: &Stage, gateway: &GatewayService, owner: &OwnerReference) -> Ingress {
    let spec = &stage.spec;
    let settings = spec.ingress.clone().unwrap_or_default();
    let ns = stage.namespace().unwrap_or_default();
    let mut meta = metadata(&stage.name_any(), stage, owner);
    if !settings.annotations.is_empty() {
        meta.annotations = Some(settings.annotations.clone());
    }
    let path = match spec.base_path.as_deref().map(|p| p.trim_end_matches('/')) {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => "/".to_owned(),
    };
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: backend_service_name(&stage.name_any(), &ns, gateway),
            port: Some(ServiceBackendPort {
                name: Some(GATEWAY_PORT_NAME.to_owned()),
                ..ServiceBackendPort::default()
            }),
        }),
        ..IngressBackend::default()
    };
    let tls = match (&spec.host, &settings.tls_secret_name) {
        (Some(host), Some(secret)) => Some(vec![IngressTLS {
            hosts: Some(vec![host.clone()]),
            secret_name: Some(secret.clone()),
        }]),
        _ => None,
    };
    Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: spec.host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(path),
                        path_type: "Prefix".to_owned(),
                        backend,
                    }],
                }),
            }]),
            tls,
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// The `Ready` condition of a stage.
pub fn readiness(spec: &StageSpec, routes: i32, gateway: Option<&GatewayService>) -> Readiness {
    if spec.ingress.is_some() && gateway.is_none() {
        return Readiness::not_ready(
            "GatewayServiceUnknown",
            "spec.ingress is set but the controller runs without --gateway-service, so no \
             Ingress can point at the gateway",
        );
    }
    if routes == 0 {
        return Readiness::ready("NoRoutes", format!("no Route has api {}", spec.api));
    }
    Readiness::ready(
        "Serving",
        format!("serves {routes} routes of api {}", spec.api),
    )
}

/// The status a reconcile leaves on the stage.
pub fn desired_status(
    stage: &Stage,
    routes: i32,
    gateway: Option<&GatewayService>,
    failure: Option<&Error>,
    now: Timestamp,
) -> StageStatus {
    let previous = stage.status.clone().unwrap_or_default();
    let generation = stage.metadata.generation;
    let readiness = match failure {
        Some(error) => error.readiness(),
        None => readiness(&stage.spec, routes, gateway),
    };
    StageStatus {
        observed_generation: generation,
        conditions: with_ready(&previous.conditions, &readiness, generation, now),
        url: url(&stage.spec, gateway),
        routes,
    }
}

pub async fn reconcile(stage: Arc<Stage>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = stage
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let routes = Api::<Route>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|r| r.spec.api == stage.spec.api)
        .count();
    let routes = i32::try_from(routes).unwrap_or(i32::MAX);
    let gateway = ctx.gateway_service.as_ref();
    let exposed = expose(&stage, &ns, &ctx).await.err();
    let status = desired_status(&stage, routes, gateway, exposed.as_ref(), Timestamp::now());
    if stage.status.as_ref() != Some(&status) {
        let api: Api<Stage> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &stage.name_any(), serde_json::to_value(&status)?).await?;
    }
    match exposed {
        None => Ok(Action::requeue(Duration::from_secs(600))),
        Some(error) => {
            let previous = stage.status.as_ref().map(|s| s.conditions.as_slice());
            report_failure(&ctx, stage.as_ref(), previous.unwrap_or_default(), &error).await;
            Err(error)
        }
    }
}

/// Applies (or removes) the stage's Ingress and gateway alias.
async fn expose(stage: &Stage, ns: &str, ctx: &Context) -> Result<(), Error> {
    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), ns);
    let Some(gateway) = ctx
        .gateway_service
        .as_ref()
        .filter(|_| wants_ingress(&stage.spec))
    else {
        // Exposure turned off: remove what this stage made (and only that).
        let uid = stage.uid().unwrap_or_default();
        delete_if_owned(&ingresses, &stage.name_any(), &uid).await?;
        if let Some(gateway) = ctx.gateway_service.as_ref()
            && gateway.namespace != ns
        {
            let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
            let alias = backend_service_name(&stage.name_any(), ns, gateway);
            delete_if_owned(&services, &alias, &uid).await?;
        }
        return Ok(());
    };
    let owner = stage
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(alias) = gateway_alias(stage, gateway, &owner) {
        Api::<Service>::namespaced(ctx.client.clone(), ns)
            .patch(&alias.name_any(), &apply, &Patch::Apply(&alias))
            .await?;
    }
    let ingress = ingress(stage, gateway, &owner);
    ingresses
        .patch(&ingress.name_any(), &apply, &Patch::Apply(&ingress))
        .await?;
    Ok(())
}

/// Deletes `name` if it exists and `owner_uid` owns it.
async fn delete_if_owned<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(existing) = api.get_metadata_opt(name).await?
        && existing
            .owner_references()
            .iter()
            .any(|o| o.uid == owner_uid)
    {
        api.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
