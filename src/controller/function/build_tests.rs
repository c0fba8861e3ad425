use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, EnvVar},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::*;
use crate::{
    api::{Function, FunctionCode, FunctionProtocol, FunctionSpec},
    controller::error::Error,
};

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "kfaas.dev/v1alpha1".into(),
        kind: "Function".into(),
        name: "hello".into(),
        uid: "uid-1".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn config() -> BuildConfig {
    BuildConfig {
        runtime_image: "ghcr.io/kfaas/kfaas:test".into(),
    }
}

fn function(spec: FunctionSpec) -> Function {
    Function {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("apps".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

fn nodejs_inline() -> FunctionSpec {
    FunctionSpec {
        runtime: Some(FunctionRuntime::Nodejs),
        handler: Some("index.handler".into()),
        code: Some(FunctionCode {
            inline: Some(BTreeMap::from([
                ("index.js".into(), "exports.handler = async () => 1;".into()),
                ("lib/util.js".into(), "module.exports = 2;".into()),
            ])),
            ..FunctionCode::default()
        }),
        environment: BTreeMap::from([
            ("GREETING".into(), "hi".into()),
            ("PRICE".into(), "$(NOT_EXPANDED)".into()),
        ]),
        memory_mb: 256,
        timeout_seconds: 10,
        ..FunctionSpec::default()
    }
}

fn workload(spec: FunctionSpec) -> Workload {
    Workload::try_from(&function(spec)).expect("valid function")
}

fn env_of(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e: &EnvVar| e.value.clone())
}

fn only_container(d: &Deployment) -> Container {
    let pod = d.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1, "{:?}", pod.containers);
    pod.containers[0].clone()
}

#[test]
fn a_runtime_function_runs_kfaas_runtime_configured_by_env() {
    let w = workload(nodejs_inline());
    let d = deployment(&w, &config(), &owner(), Some("abc"));
    let c = only_container(&d);
    assert_eq!(c.name, "function");
    assert_eq!(c.image.as_deref(), Some("ghcr.io/kfaas/kfaas:test"));
    assert_eq!(c.args, Some(vec!["runtime".to_owned()]));
    assert_eq!(env_of(&c, "KFAAS_RUNTIME").as_deref(), Some("nodejs"));
    assert_eq!(
        env_of(&c, "KFAAS_HANDLER").as_deref(),
        Some("index.handler")
    );
    assert_eq!(env_of(&c, "KFAAS_CODE").as_deref(), Some("/var/task"));
    assert_eq!(env_of(&c, "KFAAS_FUNCTION_NAME").as_deref(), Some("hello"));
    assert_eq!(env_of(&c, "KFAAS_MEMORY_MB").as_deref(), Some("256"));
    assert_eq!(env_of(&c, "KFAAS_TIMEOUT_SECONDS").as_deref(), Some("10"));
    assert_eq!(env_of(&c, "KFAAS_CONCURRENCY").as_deref(), Some("1"));
    // The user's `$(...)` reaches the handler literally: Kubernetes turns `$$` into `$`.
    assert_eq!(
        env_of(&c, "KFAAS_ENV").as_deref(),
        Some("GREETING=hi\nPRICE=$$(NOT_EXPANDED)")
    );
    assert_eq!(
        env_of(&c, "KFAAS_LISTEN").as_deref(),
        Some("$(POD_IP):8080")
    );
    let env = c.env.as_ref().expect("env");
    let pod_ip = env.iter().position(|e| e.name == "POD_IP").expect("POD_IP");
    let listen = env
        .iter()
        .position(|e| e.name == "KFAAS_LISTEN")
        .expect("listen");
    assert!(pod_ip < listen, "POD_IP must come first to be expanded");
    assert_eq!(
        env[pod_ip]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("status.podIP")
    );
    let port = &c.ports.as_ref().expect("ports")[0];
    assert_eq!(port.name.as_deref(), Some("invoke"));
    assert_eq!(port.container_port, 8080);
    let probe = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("probe");
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    assert_eq!(probe.port, IntOrString::String("invoke".into()));
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits.get("memory"), Some(&Quantity("256Mi".into())));
    let mounts = c.volume_mounts.as_ref().expect("mounts");
    assert_eq!(mounts[0].mount_path, "/var/task");
}

#[test]
fn a_multiline_value_is_inherited_from_the_container_env() {
    let mut spec = nodejs_inline();
    spec.environment.insert(
        "KEY_PEM".into(),
        "-----BEGIN-----\nabc\n-----END-----".into(),
    );
    let c = only_container(&deployment(&workload(spec), &config(), &owner(), None));
    assert_eq!(
        env_of(&c, "KFAAS_ENV").as_deref(),
        Some("GREETING=hi\nPRICE=$$(NOT_EXPANDED)")
    );
    assert_eq!(
        env_of(&c, "KEY_PEM").as_deref(),
        Some("-----BEGIN-----\nabc\n-----END-----")
    );
}

#[test]
fn every_object_is_labelled_and_owned_and_the_deployment_leaves_replicas_alone() {
    let w = workload(nodejs_inline());
    let d = deployment(&w, &config(), &owner(), None);
    let s = service(&w, &owner());
    let cm = code_config_map(&w, &owner()).expect("inline code makes a ConfigMap");
    for meta in [&d.metadata, &s.metadata, &cm.metadata] {
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(FUNCTION_LABEL).map(String::as_str),
            Some("hello")
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("kfaas")
        );
        assert_eq!(meta.owner_references, Some(vec![owner()]));
        assert_eq!(meta.namespace.as_deref(), Some("apps"));
    }
    assert_eq!(d.metadata.name.as_deref(), Some("hello"));
    assert_eq!(s.metadata.name.as_deref(), Some("hello"));
    assert_eq!(cm.metadata.name.as_deref(), Some("hello-code"));
    let spec = &d.spec;
    assert_eq!(spec.replicas, None, "the autoscaler owns replicas");
    assert_eq!(spec.revision_history_limit, Some(3));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(15),
        "timeout + 5 s"
    );
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("template labels");
    assert_eq!(
        template_labels.get(FUNCTION_LABEL).map(String::as_str),
        Some("hello")
    );
    assert_eq!(
        spec.selector.match_labels,
        Some(BTreeMap::from([(
            FUNCTION_LABEL.to_owned(),
            "hello".to_owned()
        )]))
    );
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONCURRENCY_ANNOTATION))
            .map(String::as_str),
        Some("1")
    );
    let svc = s.spec.as_ref().expect("service spec");
    assert_eq!(svc.selector, spec.selector.match_labels);
    let port = &svc.ports.as_ref().expect("ports")[0];
    assert_eq!(port.name.as_deref(), Some("invoke"));
    assert_eq!(port.port, 8080);
    assert_eq!(port.target_port, Some(IntOrString::String("invoke".into())));
}

#[test]
fn inline_files_in_subfolders_get_valid_keys_mapped_back_to_their_paths() {
    let w = workload(nodejs_inline());
    let cm = code_config_map(&w, &owner()).expect("ConfigMap");
    let data = cm.data.expect("data");
    assert_eq!(
        data.get("index.js").map(String::as_str),
        Some("exports.handler = async () => 1;")
    );
    assert_eq!(
        data.get("1.lib_util.js").map(String::as_str),
        Some("module.exports = 2;")
    );
    let d = deployment(&w, &config(), &owner(), None);
    let volumes = d
        .spec
        .template
        .spec
        .and_then(|p| p.volumes)
        .expect("volumes");
    let source = volumes[0].config_map.as_ref().expect("configMap volume");
    assert_eq!(source.name, "hello-code");
    let items: Vec<(String, String)> = source
        .items
        .as_ref()
        .expect("items")
        .iter()
        .map(|i| (i.key.clone(), i.path.clone()))
        .collect();
    assert_eq!(
        items,
        vec![
            ("index.js".to_owned(), "index.js".to_owned()),
            ("1.lib_util.js".to_owned(), "lib/util.js".to_owned()),
        ]
    );
}

#[test]
fn a_config_map_function_mounts_that_config_map_and_makes_none() {
    let mut spec = nodejs_inline();
    spec.code = Some(FunctionCode {
        config_map: Some("my-code".into()),
        ..FunctionCode::default()
    });
    let w = workload(spec);
    assert!(code_config_map(&w, &owner()).is_none());
    assert_eq!(w.user_config_map(), Some("my-code"));
    let pod = deployment(&w, &config(), &owner(), None)
        .spec
        .template
        .spec
        .expect("pod");
    let source = pod.volumes.expect("volumes")[0]
        .config_map
        .clone()
        .expect("cm");
    assert_eq!(source.name, "my-code");
    assert_eq!(source.items, None);
}

#[test]
fn code_path_cannot_be_deployed() {
    let mut spec = nodejs_inline();
    spec.code = Some(FunctionCode {
        path: Some("./src".into()),
        ..FunctionCode::default()
    });
    let err = Workload::try_from(&function(spec)).expect_err("code.path is refused");
    assert!(
        matches!(err, Error::CodePathNotSupported(ref p) if p == "./src"),
        "{err}"
    );
}

#[test]
fn a_custom_command_goes_after_the_separator() {
    let mut spec = nodejs_inline();
    spec.runtime = Some(FunctionRuntime::Provided);
    spec.handler = None;
    spec.command = vec!["./my-client".into(), "--cost=$5".into()];
    let c = only_container(&deployment(&workload(spec), &config(), &owner(), None));
    assert_eq!(
        c.args,
        Some(vec![
            "runtime".to_owned(),
            "--".to_owned(),
            "./my-client".to_owned(),
            "--cost=$$5".to_owned()
        ])
    );
    assert_eq!(env_of(&c, "KFAAS_RUNTIME").as_deref(), Some("provided"));
    assert_eq!(env_of(&c, "KFAAS_HANDLER"), None);
}

#[test]
fn an_http_runtime_function_runs_its_command_in_the_code_folder() {
    let mut spec = nodejs_inline();
    spec.protocol = FunctionProtocol::Http;
    spec.command = vec!["node".into(), "server.js".into()];
    spec.port = 3000;
    let w = workload(spec);
    let c = only_container(&deployment(&w, &config(), &owner(), None));
    assert_eq!(
        c.command,
        Some(vec!["node".to_owned(), "server.js".to_owned()])
    );
    assert_eq!(c.working_dir.as_deref(), Some("/var/task"));
    assert_eq!(env_of(&c, "PORT").as_deref(), Some("3000"));
    assert!(
        c.env
            .as_ref()
            .expect("env")
            .iter()
            .any(|e| e.name == "POD_IP")
    );
    assert_eq!(env_of(&c, "GREETING").as_deref(), Some("hi"));
    let port = &c.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("invoke"), 3000)
    );
    assert!(
        c.readiness_probe
            .as_ref()
            .and_then(|p| p.tcp_socket.as_ref())
            .is_some()
    );
    assert_eq!(w.concurrency, 100);
    assert_eq!(
        service(&w, &owner())
            .spec
            .and_then(|s| s.ports)
            .expect("ports")[0]
            .port,
        3000
    );
    assert_eq!(invoke_url(&w), "http://hello.apps.svc:3000/");
}

#[test]
fn an_http_runtime_function_without_command_is_refused() {
    let mut spec = nodejs_inline();
    spec.protocol = FunctionProtocol::Http;
    let err = Workload::try_from(&function(spec)).expect_err("needs command");
    assert_eq!(err.reason(), "InvalidSpec");
}

#[test]
fn a_lambda_image_runs_beside_a_runtime_sidecar() {
    let w = workload(FunctionSpec {
        image: Some("public.ecr.aws/lambda/python:3.12".into()),
        environment: BTreeMap::from([("A".into(), "b".into())]),
        concurrency: Some(8),
        ..FunctionSpec::default()
    });
    assert_eq!(
        w.concurrency, 1,
        "one event at a time through one Runtime API address"
    );
    let pod = deployment(&w, &config(), &owner(), None)
        .spec
        .template
        .spec
        .expect("pod");
    assert_eq!(pod.volumes, None);
    let sidecar = pod
        .containers
        .iter()
        .find(|c| c.name == "runtime")
        .expect("sidecar");
    let user = pod
        .containers
        .iter()
        .find(|c| c.name == "function")
        .expect("function");
    assert_eq!(
        sidecar.args,
        Some(vec!["runtime".to_owned(), "--external".to_owned()])
    );
    assert_eq!(sidecar.image.as_deref(), Some("ghcr.io/kfaas/kfaas:test"));
    assert_eq!(
        sidecar.ports.as_ref().expect("ports")[0].name.as_deref(),
        Some("invoke")
    );
    assert_eq!(env_of(sidecar, "KFAAS_CONCURRENCY").as_deref(), Some("1"));
    assert_eq!(
        user.image.as_deref(),
        Some("public.ecr.aws/lambda/python:3.12")
    );
    assert_eq!(
        env_of(user, "AWS_LAMBDA_RUNTIME_API").as_deref(),
        Some("127.0.0.1:9001")
    );
    assert_eq!(env_of(user, "A").as_deref(), Some("b"));
    assert_eq!(user.ports, None);
    assert_eq!(
        invoke_url(&w),
        "http://hello.apps.svc:8080/2015-03-31/functions/function/invocations"
    );
}

#[test]
fn an_http_image_is_the_only_container_on_its_port() {
    let w = workload(FunctionSpec {
        image: Some("nginx".into()),
        protocol: FunctionProtocol::Http,
        port: 80,
        ..FunctionSpec::default()
    });
    let c = only_container(&deployment(&w, &config(), &owner(), None));
    assert_eq!(c.image.as_deref(), Some("nginx"));
    assert_eq!(c.command, None);
    assert_eq!(c.ports.as_ref().expect("ports")[0].container_port, 80);
    assert_eq!(c.volume_mounts, None);
}

#[test]
fn replicas_start_at_the_pin_or_the_minimum() {
    let mut spec = nodejs_inline();
    spec.scaling.min_replicas = 2;
    let w = workload(spec.clone());
    assert_eq!((w.initial_replicas, w.pinned_replicas), (2, None));
    spec.replicas = Some(3);
    let w = workload(spec);
    assert_eq!((w.initial_replicas, w.pinned_replicas), (3, Some(3)));
}

#[test]
fn the_count_is_the_pin_or_kept_within_the_bounds() {
    let mut spec = nodejs_inline();
    spec.scaling.min_replicas = 1;
    spec.scaling.max_replicas = 4;
    let w = workload(spec.clone());
    assert_eq!(w.replicas_to_set(0), Some(1), "raised to the minimum");
    assert_eq!(w.replicas_to_set(3), None, "the autoscaler's count stays");
    assert_eq!(w.replicas_to_set(9), Some(4), "lowered to the maximum");
    spec.replicas = Some(0);
    let pinned = workload(spec);
    assert_eq!(pinned.replicas_to_set(3), Some(0));
    assert_eq!(pinned.replicas_to_set(0), None);
}

#[test]
fn the_code_hash_follows_the_code() {
    let a = BTreeMap::from([("index.js".to_owned(), "1".to_owned())]);
    let b = BTreeMap::from([("index.js".to_owned(), "2".to_owned())]);
    assert_eq!(code_hash(&a), code_hash(&a.clone()));
    assert_ne!(code_hash(&a), code_hash(&b));
    // Moving bytes between name and content is a different code.
    let c = BTreeMap::from([("index.j".to_owned(), "s1".to_owned())]);
    assert_ne!(code_hash(&a), code_hash(&c));
    let d = deployment(&workload(nodejs_inline()), &config(), &owner(), Some("h1"));
    let annotations = d
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .expect("annotations");
    assert_eq!(
        annotations.get(CODE_HASH_ANNOTATION).map(String::as_str),
        Some("h1")
    );
}
