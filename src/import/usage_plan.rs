//! A REST API's `Auth.UsagePlan` → `UsagePlan` + a `Secret` for its API key.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde_yaml::Value;

use super::{
    Ctx,
    api::{self, ApiDef, ApiKind},
    template::get,
};
use crate::{
    api::{ApiKeyRef, Quota, SecretKeyRef, UsagePlan, UsagePlanSpec, UsagePlanStage},
    objects::KfaasObject,
};

/// The name of the SHARED plan, as SAM's `ServerlessUsagePlan`.
const SHARED: &str = "ServerlessUsagePlan";

/// Usage plans of all REST APIs: one per `PER_API` API, one for all `SHARED` ones. Each gets
/// one API key (as SAM creates one), whose value cannot be read from the template: its Secret
/// holds a random placeholder and a warning says to set it.
pub fn convert(
    ctx: &mut Ctx,
    apis: &[ApiDef],
    stage_names: &BTreeMap<String, String>,
) -> Vec<KfaasObject> {
    let mut out = Vec::new();
    let mut shared: Option<(UsagePlanSpec, String)> = None;
    for api in apis.iter().filter(|a| a.kind == ApiKind::Rest) {
        let Some(plan) = get(&api.props, "Auth").and_then(|a| get(a, "UsagePlan")) else {
            continue;
        };
        let id = api.id.as_str();
        let mode = match get(plan, "CreateUsagePlan").map(|v| ctx.resolver.string(v)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                ctx.warn(
                    id,
                    "Auth.UsagePlan.CreateUsagePlan",
                    format!("not converted: {e}"),
                );
                continue;
            }
            None => {
                ctx.warn(id, "Auth.UsagePlan", "not converted: no CreateUsagePlan");
                continue;
            }
        };
        let stage = UsagePlanStage {
            api: api.name.clone(),
            stage: stage_names
                .get(&api.id)
                .cloned()
                .unwrap_or_else(|| api.stage_name.clone()),
        };
        match mode.as_str() {
            "NONE" => {}
            "PER_API" => {
                let mut spec = limits(ctx, id, plan);
                spec.stages.push(stage);
                let name = super::names::join(&[id, "usage-plan"]);
                push_plan(ctx, id, &name, spec, &mut out);
            }
            "SHARED" => match &mut shared {
                Some((spec, _)) => spec.stages.push(stage),
                None => {
                    let mut spec = limits(ctx, id, plan);
                    spec.stages.push(stage);
                    shared = Some((spec, id.to_owned()));
                }
            },
            other => ctx.warn(
                id,
                "Auth.UsagePlan.CreateUsagePlan",
                format!("not converted: {other} is not PER_API, SHARED or NONE"),
            ),
        }
    }
    if let Some((spec, first)) = shared {
        push_plan(ctx, &first, &super::names::kebab(SHARED), spec, &mut out);
    }
    out
}

fn limits(ctx: &mut Ctx, id: &str, plan: &Value) -> UsagePlanSpec {
    let mut spec = UsagePlanSpec::default();
    if let Some(t) = get(plan, "Throttle") {
        spec.throttle = api::throttle(
            ctx,
            id,
            "Auth.UsagePlan.Throttle",
            t,
            "RateLimit",
            "BurstLimit",
        );
    }
    if let Some(q) = get(plan, "Quota") {
        let limit = get(q, "Limit").map(|v| ctx.resolver.integer(v));
        let period = get(q, "Period").map(|v| ctx.resolver.string(v));
        let offset = get(q, "Offset").map(|v| ctx.resolver.integer(v));
        match (limit, period) {
            (Some(Ok(limit)), Some(Ok(period))) => {
                spec.quota = Some(Quota {
                    limit,
                    period: period.to_ascii_uppercase(),
                    offset: offset.and_then(Result::ok).unwrap_or(0),
                });
            }
            _ => ctx.warn(
                id,
                "Auth.UsagePlan.Quota",
                "not converted: needs Limit and Period",
            ),
        }
    }
    spec
}

fn push_plan(
    ctx: &mut Ctx,
    id: &str,
    name: &str,
    mut spec: UsagePlanSpec,
    out: &mut Vec<KfaasObject>,
) {
    let key = super::names::join(&[name, "key"]);
    spec.api_keys.push(ApiKeyRef {
        id: key.clone(),
        secret_ref: SecretKeyRef {
            name: key.clone(),
            key: "apiKey".into(),
        },
    });
    let placeholder = format!("change-me-{}", uuid::Uuid::new_v4().simple());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(key.clone()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([("apiKey".to_owned(), placeholder)])),
        ..Secret::default()
    };
    ctx.warn(
        id,
        "Auth.UsagePlan",
        format!("API key values cannot be imported: Secret {key} holds a random placeholder; set its apiKey to your key's value (aws apigateway get-api-key --api-key ID --include-value)"),
    );
    out.push(KfaasObject::UsagePlan(UsagePlan::new(name, spec)));
    out.push(KfaasObject::Secret(secret));
}
