//! `kfaas controller` on a real control plane: a Function becomes a Deployment, Service and
//! code ConfigMap owned by it; the instance the Deployment runs answers invocations; status,
//! pins, rollouts and garbage collection behave as Kubernetes users expect; Routes, Stages and
//! UsagePlans get their conditions.
//!
//! Each test runs its own controller, limited to the test's namespace and holding a Lease
//! there, so the tests run in parallel without electing each other out.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod, Secret, Service},
};
use kfaas_e2e::{MANAGER, delete_namespace, http_request, wait_for};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

#[path = "controller/support.rs"]
mod support;

use support::*;

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn controller_runs_an_inline_nodejs_function_that_answers() {
    let (client, ns) = setup("e2e-ctrl-fn").await;
    let controller = start_controller(&ns, &[]);
    let functions = kfaas_api(&client, &ns, "Function");
    let created = apply(&client, &ns, &hello_function(json!({}))).await;
    let uid = created.metadata.uid.clone().expect("uid");

    // The objects appear, owned by the Function, labelled for the gateway.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    wait_for("Deployment hello", Duration::from_secs(30), || async {
        Ok(deployments.get_opt("hello").await?.is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));
    let d = deployments.get("hello").await.expect("deployment");
    assert!(
        is_owned_by(&d.metadata, &uid),
        "{:?}",
        d.metadata.owner_references
    );
    assert_eq!(d.spec.replicas, Some(0), "scales from zero");
    let svc = services.get("hello").await.expect("service");
    assert!(is_owned_by(&svc.metadata, &uid));
    let port = &svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("invoke"), 8080));
    assert_eq!(
        svc.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kfaas.dev/function"))
            .map(String::as_str),
        Some("hello")
    );
    let cm = config_maps.get("hello-code").await.expect("code ConfigMap");
    assert!(is_owned_by(&cm.metadata, &uid));
    assert_eq!(
        cm.data.as_ref().and_then(|d| d.get("index.js")),
        Some(&hello_code())
    );
    let (_, reason, _) = wait_ready(&functions, "hello", "True", "ScaledToZero", &controller).await;
    assert_eq!(reason, "ScaledToZero");

    // Scaled as the gateway does it (the Deployment's scale subresource): one instance that
    // becomes ready, which the Function's status shows.
    deployments
        .patch_scale(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale to 1");
    wait_ready(&functions, "hello", "True", "InstancesReady", &controller).await;
    let f = functions.get("hello").await.expect("function");
    let status = f.data.get("status").expect("status");
    assert_eq!(status.get("readyReplicas"), Some(&json!(1)), "{status}");
    assert_eq!(status.get("replicas"), Some(&json!(1)), "{status}");
    assert_eq!(
        status.get("selector"),
        Some(&json!("kfaas.dev/function=hello"))
    );
    assert_eq!(
        status.get("url"),
        Some(&json!(format!("http://hello.{ns}.svc:8080{INVOKE_PATH}")))
    );

    // The instance answers an invocation with the handler's result.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let first = ready_pods(&pods, "hello").await.expect("pods");
    assert_eq!(first.len(), 1, "{first:?}");
    let (first_pod, ip) = first[0].clone();
    let (code, body) = http_request("POST", &format!("{ip}:8080"), INVOKE_PATH, Some(&json!({})))
        .await
        .expect("invoke");
    assert_eq!(code, 200, "{body}");
    let result: Value = serde_json::from_str(&body).expect("JSON result");
    assert_eq!(result.get("statusCode"), Some(&json!(200)), "{body}");
    let inner: Value =
        serde_json::from_str(result["body"].as_str().expect("body string")).expect("handler body");
    assert_eq!(inner["message"], json!("hello, world"), "{body}");

    // Changing the environment rolls out new pods; the scale the "autoscaler" set stays.
    apply(&client, &ns, &hello_function(json!({"GREETING": "hi"}))).await;
    wait_for(
        "the new env in the Deployment",
        Duration::from_secs(30),
        || async {
            let d = deployments.get("hello").await?;
            Ok(deployment_env(&d, "KFAAS_ENV").as_deref() == Some("GREETING=hi"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));
    wait_for("a new ready pod", Duration::from_secs(60), || async {
        let ready = ready_pods(&pods, "hello").await?;
        Ok(ready.len() == 1 && ready[0].0 != first_pod)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));
    let d = deployments.get("hello").await.expect("deployment");
    assert_eq!(
        d.spec.replicas,
        Some(1),
        "an apply must not revert the scale"
    );

    // Deleting the Function takes its objects with it (garbage collection by owner).
    functions
        .delete("hello", &DeleteParams::foreground())
        .await
        .expect("delete function");
    wait_for(
        "Deployment hello deleted",
        Duration::from_secs(60),
        || async {
            Ok(deployments.get_opt("hello").await?.is_none()
                && services.get_opt("hello").await?.is_none()
                && config_maps.get_opt("hello-code").await?.is_none())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    drop(controller);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn controller_refuses_code_path_and_pins_replicas() {
    let (client, ns) = setup("e2e-ctrl-pin").await;
    let controller = start_controller(&ns, &[]);
    let functions = kfaas_api(&client, &ns, "Function");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": "local-only"},
            "spec": {"runtime": "nodejs", "handler": "index.handler", "code": {"path": "./src"}},
        }),
    )
    .await;
    let (_, _, message) = wait_ready(
        &functions,
        "local-only",
        "False",
        "CodePathNotSupported",
        &controller,
    )
    .await;
    assert!(
        message.contains("code.inline") && message.contains("code.configMap"),
        "{message}"
    );
    assert!(
        deployments
            .get_opt("local-only")
            .await
            .expect("get")
            .is_none(),
        "no Deployment for code the pods cannot read"
    );
    // The failure is also an Event on the Function, and the controller leads through a Lease.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "a CodePathNotSupported event",
        Duration::from_secs(30),
        || async {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("CodePathNotSupported")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some("local-only")
                }))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("kfaas-controller")
        .await
        .expect("the controller's Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("e2e-controller")
    );

    // code.configMap: missing first (Ready=False), then created and later changed; the
    // ConfigMap watch reconciles at once (the periodic requeues are 30 s and 5 min) and a new
    // digest of the code on the pod template rolls the pods.
    let mut from_cm = hello_function(json!({}));
    from_cm["metadata"]["name"] = json!("from-cm");
    from_cm["spec"]["code"] = json!({"configMap": "my-code"});
    apply(&client, &ns, &from_cm).await;
    let (_, _, message) = wait_ready(
        &functions,
        "from-cm",
        "False",
        "CodeConfigMapNotFound",
        &controller,
    )
    .await;
    assert!(message.contains("my-code"), "{message}");
    let code_cm = |source: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-code"},
            "data": {"index.js": source},
        })
    };
    apply(&client, &ns, &code_cm(&hello_code())).await;
    let code_hash = || async {
        Ok::<_, anyhow::Error>(
            deployments
                .get_opt("from-cm")
                .await?
                .and_then(|d| d.spec.template.metadata)
                .and_then(|m| m.annotations)
                .and_then(|a| a.get("kfaas.dev/code-hash").cloned()),
        )
    };
    wait_for("Deployment from-cm", Duration::from_secs(15), || async {
        Ok(code_hash().await?.is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));
    let first_hash = code_hash().await.expect("hash");
    apply(&client, &ns, &code_cm("exports.handler = async () => 2;")).await;
    wait_for("a new code digest", Duration::from_secs(15), || async {
        let hash = code_hash().await?;
        Ok(hash.is_some() && hash != first_hash)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));

    // A pin (spec.replicas) sets the Deployment's count, also when the Deployment exists.
    let mut pinned = hello_function(json!({}));
    pinned["metadata"]["name"] = json!("pinned");
    pinned["spec"]["replicas"] = json!(2);
    apply(&client, &ns, &pinned).await;
    let replicas = |want: i32| {
        let deployments = deployments.clone();
        async move {
            Ok::<_, anyhow::Error>(
                deployments
                    .get_opt("pinned")
                    .await?
                    .and_then(|d| d.spec.replicas)
                    == Some(want),
            )
        }
    };
    wait_for("Deployment pinned at 2", Duration::from_secs(30), || {
        replicas(2)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));
    // `kubectl scale fn pinned --replicas 0` goes through the Function's scale subresource.
    functions
        .patch_scale(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale the Function");
    wait_for("Deployment pinned at 0", Duration::from_secs(30), || {
        replicas(0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));
    drop(controller);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn controller_reports_routes_stages_and_usage_plans() {
    let (client, ns) = setup("e2e-ctrl-api").await;
    let gateway = format!("{ns}/kfaas-gateway");
    let controller = start_controller(&ns, &["--gateway-service", &gateway]);
    let routes = kfaas_api(&client, &ns, "Route");
    let stages = kfaas_api(&client, &ns, "Stage");
    let plans = kfaas_api(&client, &ns, "UsagePlan");

    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "orders"},
            "spec": {"api": "shop", "path": "/orders", "function": "orders"},
        }),
    )
    .await;
    let (_, _, message) =
        wait_ready(&routes, "orders", "False", "FunctionNotFound", &controller).await;
    assert!(message.contains("\"orders\""), "{message}");

    // The function appearing makes the route ready (the Function watch triggers it).
    let mut orders = hello_function(json!({}));
    orders["metadata"]["name"] = json!("orders");
    apply(&client, &ns, &orders).await;
    wait_ready(&routes, "orders", "True", "FunctionsFound", &controller).await;

    // A stage counts the routes of its API and gets an Ingress for its host.
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Stage",
            "metadata": {"name": "prod"},
            "spec": {"api": "shop", "host": "shop.example.com", "basePath": "/v1"},
        }),
    )
    .await;
    wait_ready(&stages, "prod", "True", "Serving", &controller).await;
    let stage = stages.get("prod").await.expect("stage");
    assert_eq!(stage.data.pointer("/status/routes"), Some(&json!(1)));
    assert_eq!(
        stage.data.pointer("/status/url"),
        Some(&json!("http://shop.example.com/v1/"))
    );
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), &ns);
    let ingress = ingresses.get("prod").await.expect("Ingress prod");
    let rule = &ingress.spec.and_then(|s| s.rules).expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("shop.example.com"));
    let backend = rule.http.as_ref().expect("http").paths[0]
        .backend
        .service
        .clone()
        .expect("service backend");
    assert_eq!(backend.name, "kfaas-gateway");

    // A usage plan names the Secret it cannot find; keys counts those it can.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            "alice",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice"},
                "stringData": {"apiKey": "alice-secret-key-0123456789"},
            })),
        )
        .await
        .expect("secret");
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "UsagePlan",
            "metadata": {"name": "gold"},
            "spec": {
                "stages": [{"api": "shop", "stage": "prod"}],
                "apiKeys": [
                    {"id": "alice", "secretRef": {"name": "alice"}},
                    {"id": "bob", "secretRef": {"name": "bob"}},
                ],
            },
        }),
    )
    .await;
    let (_, _, message) = wait_ready(&plans, "gold", "False", "SecretNotFound", &controller).await;
    assert!(message.contains("Secret bob not found"), "{message}");
    let plan = plans.get("gold").await.expect("plan");
    assert_eq!(plan.data.pointer("/status/keys"), Some(&json!(1)));
    drop(controller);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn controller_hands_the_lease_over_on_sigterm() {
    let (client, ns) = setup("e2e-ctrl-lease").await;
    let mut first = Candidate::spawn(&ns, "first");
    first.wait_for_output("leading: reconciling").await;
    let second = Candidate::spawn(&ns, "second");
    second.wait_for_output("another controller leads").await;
    assert!(
        !second.output().contains("leading: reconciling"),
        "two leaders:\n{}",
        second.output()
    );
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("first"));

    // SIGTERM: the leader stops cleanly and gives the lease up, so the other one takes over at
    // once rather than after the lease's 15 s expire.
    let stopped_at = std::time::Instant::now();
    assert!(
        first.terminate().await,
        "exit status on SIGTERM:\n{}",
        first.output()
    );
    assert!(
        first.output().contains("released the lease"),
        "{}",
        first.output()
    );
    second.wait_for_output("leading: reconciling").await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(12),
        "took over only after {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("second"));

    // The new leader reconciles.
    apply(&client, &ns, &hello_function(json!({}))).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for("Deployment hello", Duration::from_secs(30), || async {
        Ok(deployments.get_opt("hello").await?.is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", second.output()));
    drop(second);
    delete_namespace(&client, &ns).await;
}

const ECHO_SERVER: &str = r#"
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "greeting": os.environ.get("GREETING")}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), Echo).serve_forever()
"#;

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn controller_runs_an_http_function_from_its_code() {
    let (client, ns) = setup("e2e-ctrl-http").await;
    let controller = start_controller(&ns, &[]);
    let functions = kfaas_api(&client, &ns, "Function");
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": "echo"},
            "spec": {
                "runtime": "python",
                "protocol": "http",
                "command": ["python3", "-u", "server.py"],
                "port": 8090,
                "replicas": 1,
                "code": {"inline": {"server.py": ECHO_SERVER}},
                // Reaches the server as written: Kubernetes must not expand it.
                "environment": {"GREETING": "$(POD_IP)"},
            },
        }),
    )
    .await;
    wait_ready(&functions, "echo", "True", "InstancesReady", &controller).await;
    let f = functions.get("echo").await.expect("function");
    assert_eq!(
        f.data.pointer("/status/url"),
        Some(&json!(format!("http://echo.{ns}.svc:8090/")))
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ready = ready_pods(&pods, "echo").await.expect("pods");
    assert_eq!(ready.len(), 1, "{ready:?}");
    let (code, body) = http_request("GET", &format!("{}:8090", ready[0].1), "/hello", None)
        .await
        .expect("GET the function");
    assert_eq!(code, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(echoed, json!({"path": "/hello", "greeting": "$(POD_IP)"}));
    drop(controller);
    delete_namespace(&client, &ns).await;
}
