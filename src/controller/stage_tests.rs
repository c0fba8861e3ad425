use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::*;
use crate::api::StageIngress;

fn gateway(ns: &str) -> GatewayService {
    GatewayService {
        namespace: ns.into(),
        name: "kfaas-gateway".into(),
    }
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "kfaas.dev/v1alpha1".into(),
        kind: "Stage".into(),
        name: "prod".into(),
        uid: "s-1".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn stage(spec: StageSpec) -> Stage {
    Stage {
        metadata: ObjectMeta {
            name: Some("prod".into()),
            namespace: Some("apps".into()),
            uid: Some("s-1".into()),
            generation: Some(2),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

fn spec() -> StageSpec {
    StageSpec {
        api: "shop".into(),
        ..StageSpec::default()
    }
}

#[test]
fn gateway_service_parses_namespace_and_name() {
    assert_eq!(
        "kfaas/gw".parse::<GatewayService>(),
        Ok(GatewayService {
            namespace: "kfaas".into(),
            name: "gw".into()
        })
    );
    assert!("gw".parse::<GatewayService>().is_err());
    assert!("a/b/c".parse::<GatewayService>().is_err());
    assert!("/gw".parse::<GatewayService>().is_err());
}

#[test]
fn url_is_the_host_or_the_gateway_service_with_the_base_path() {
    let mut s = spec();
    assert_eq!(url(&s, None), None);
    assert_eq!(
        url(&s, Some(&gateway("kfaas"))).as_deref(),
        Some("http://kfaas-gateway.kfaas.svc.cluster.local/")
    );
    s.base_path = Some("/prod/".into());
    s.host = Some("api.example.com".into());
    assert_eq!(
        url(&s, None).as_deref(),
        Some("http://api.example.com/prod/")
    );
    s.ingress = Some(StageIngress {
        tls_secret_name: Some("cert".into()),
        ..StageIngress::default()
    });
    assert_eq!(
        url(&s, None).as_deref(),
        Some("https://api.example.com/prod/")
    );
}

#[test]
fn an_ingress_in_the_gateways_namespace_points_at_the_gateway() {
    let mut s = spec();
    s.host = Some("api.example.com".into());
    s.base_path = Some("/prod".into());
    s.ingress = Some(StageIngress {
        class_name: Some("nginx".into()),
        tls_secret_name: Some("cert".into()),
        annotations: [("a".to_owned(), "b".to_owned())].into(),
    });
    let st = stage(s);
    assert!(wants_ingress(&st.spec));
    assert!(gateway_alias(&st, &gateway("apps"), &owner()).is_none());
    let ing = ingress(&st, &gateway("apps"), &owner());
    assert_eq!(ing.metadata.name.as_deref(), Some("prod"));
    assert_eq!(ing.metadata.owner_references, Some(vec![owner()]));
    assert_eq!(
        ing.metadata.annotations,
        Some([("a".to_owned(), "b".to_owned())].into())
    );
    let spec = ing.spec.expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rule = &spec.rules.expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("api.example.com"));
    let path = &rule.http.as_ref().expect("http").paths[0];
    assert_eq!(
        (path.path.as_deref(), path.path_type.as_str()),
        (Some("/prod"), "Prefix")
    );
    let backend = path.backend.service.as_ref().expect("service backend");
    assert_eq!(backend.name, "kfaas-gateway");
    assert_eq!(
        backend.port.as_ref().and_then(|p| p.name.as_deref()),
        Some("http")
    );
    let tls = &spec.tls.expect("tls")[0];
    assert_eq!(tls.secret_name.as_deref(), Some("cert"));
    assert_eq!(tls.hosts, Some(vec!["api.example.com".to_owned()]));
}

#[test]
fn in_another_namespace_the_ingress_goes_through_an_external_name_alias() {
    let mut s = spec();
    s.host = Some("api.example.com".into());
    let st = stage(s);
    let alias = gateway_alias(&st, &gateway("kfaas"), &owner()).expect("alias");
    assert_eq!(alias.metadata.name.as_deref(), Some("prod-gateway"));
    let spec = alias.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
    assert_eq!(
        spec.external_name.as_deref(),
        Some("kfaas-gateway.kfaas.svc.cluster.local")
    );
    let ing = ingress(&st, &gateway("kfaas"), &owner());
    let rules = ing.spec.and_then(|s| s.rules).expect("rules");
    let backend = rules[0].http.as_ref().expect("http").paths[0]
        .backend
        .service
        .clone()
        .expect("backend");
    assert_eq!(backend.name, "prod-gateway");
    assert_eq!(
        rules[0].http.as_ref().expect("http").paths[0]
            .path
            .as_deref(),
        Some("/")
    );
    let long = "s".repeat(60);
    let name = backend_service_name(&long, "apps", &gateway("kfaas"));
    assert!(
        name.len() <= 63 && name.starts_with("kfaas-gateway-"),
        "{name}"
    );
}

#[test]
fn readiness_counts_routes_and_needs_the_gateway_for_an_ingress() {
    let mut s = spec();
    let r = readiness(&s, 0, None);
    assert!(r.ready);
    assert_eq!(r.reason, "NoRoutes");
    assert_eq!(
        readiness(&s, 3, None).message,
        "serves 3 routes of api shop"
    );
    s.ingress = Some(StageIngress::default());
    let r = readiness(&s, 3, None);
    assert!(!r.ready);
    assert_eq!(r.reason, "GatewayServiceUnknown");
    assert!(readiness(&s, 3, Some(&gateway("kfaas"))).ready);
}

#[test]
fn status_carries_url_routes_and_generation() {
    let st = stage(spec());
    let now = Timestamp::from_second(10).expect("time");
    let status = desired_status(&st, 2, Some(&gateway("kfaas")), None, now);
    assert_eq!(status.routes, 2);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(
        status.url.as_deref(),
        Some("http://kfaas-gateway.kfaas.svc.cluster.local/")
    );
    assert_eq!(status.conditions[0].status, "True");
    let failed = desired_status(&st, 2, None, Some(&Error::InvalidSpec("bad".into())), now);
    assert_eq!(failed.conditions[0].reason, "InvalidSpec");
}
