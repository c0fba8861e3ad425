//! Route: `Ready` tells whether the functions it names exist.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt, runtime::controller::Action};

use super::{
    Context,
    condition::{Readiness, with_ready},
    error::Error,
    status::apply_status,
};
use crate::api::{AuthType, Function, Route, RouteSpec, RouteStatus};

/// The functions a route needs, by name. A target chosen by a stage variable is only known per
/// stage, so it is not checked here.
pub fn referenced_functions(spec: &RouteSpec) -> Vec<String> {
    let mut names = Vec::new();
    if !spec.function.contains("${stageVariables.") {
        names.push(spec.function.clone());
    }
    if spec.auth.kind == AuthType::Function
        && let Some(authorizer) = &spec.auth.authorizer
        && !authorizer.function.contains("${stageVariables.")
        && !names.contains(&authorizer.function)
    {
        names.push(authorizer.function.clone());
    }
    names
}

/// The `Ready` condition of a route, given which of its functions are missing.
pub fn readiness(spec: &RouteSpec, namespace: &str, missing: &[String]) -> Readiness {
    if missing.is_empty() {
        let message = if spec.function.contains("${stageVariables.") {
            format!("target {} is chosen by each stage", spec.function)
        } else {
            format!("routes to function {}", spec.function)
        };
        return Readiness::ready("FunctionsFound", message);
    }
    let names = missing
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let noun = if missing.len() == 1 {
        "function"
    } else {
        "functions"
    };
    Readiness::not_ready(
        "FunctionNotFound",
        format!("{noun} {names} not found in namespace {namespace}"),
    )
}

/// The status a reconcile leaves on the route.
pub fn desired_status(route: &Route, readiness: &Readiness, now: Timestamp) -> RouteStatus {
    let previous = route.status.clone().unwrap_or_default();
    let generation = route.metadata.generation;
    RouteStatus {
        observed_generation: generation,
        conditions: with_ready(&previous.conditions, readiness, generation, now),
    }
}

pub async fn reconcile(route: Arc<Route>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = route
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let functions: Api<Function> = Api::namespaced(ctx.client.clone(), &ns);
    let mut missing = Vec::new();
    for name in referenced_functions(&route.spec) {
        if functions.get_metadata_opt(&name).await?.is_none() {
            missing.push(name);
        }
    }
    let readiness = readiness(&route.spec, &ns, &missing);
    let status = desired_status(&route, &readiness, Timestamp::now());
    if route.status.as_ref() != Some(&status) {
        let api: Api<Route> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, &route.name_any(), serde_json::to_value(&status)?).await?;
    }
    // Functions appearing or going away trigger a reconcile through the Function watch.
    Ok(Action::requeue(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FunctionAuthorizer, RouteAuth};

    fn spec(function: &str) -> RouteSpec {
        RouteSpec {
            api: "shop".into(),
            methods: vec!["GET".into()],
            path: "/orders".into(),
            function: function.into(),
            ..RouteSpec::default()
        }
    }

    #[test]
    fn the_target_and_a_function_authorizer_are_checked() {
        let mut s = spec("orders");
        assert_eq!(referenced_functions(&s), vec!["orders".to_owned()]);
        s.auth = RouteAuth {
            kind: AuthType::Function,
            authorizer: Some(FunctionAuthorizer {
                function: "auth".into(),
                ..FunctionAuthorizer::default()
            }),
            ..RouteAuth::default()
        };
        assert_eq!(
            referenced_functions(&s),
            vec!["orders".to_owned(), "auth".to_owned()]
        );
        // An authorizer left in the spec but not in use is not needed.
        s.auth.kind = AuthType::None;
        assert_eq!(referenced_functions(&s), vec!["orders".to_owned()]);
    }

    #[test]
    fn a_stage_variable_target_is_not_checked() {
        let s = spec("${stageVariables.backend}");
        assert!(referenced_functions(&s).is_empty());
        let r = readiness(&s, "apps", &[]);
        assert!(r.ready);
        assert!(r.message.contains("each stage"), "{}", r.message);
    }

    #[test]
    fn a_missing_function_is_named() {
        let r = readiness(&spec("orders"), "apps", &["orders".to_owned()]);
        assert!(!r.ready);
        assert_eq!(r.reason, "FunctionNotFound");
        assert_eq!(r.message, "function \"orders\" not found in namespace apps");
        let ok = readiness(&spec("orders"), "apps", &[]);
        assert!(ok.ready);
        assert_eq!(ok.message, "routes to function orders");
    }
}
