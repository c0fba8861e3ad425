//! The Helm chart, installed as `helm install` would (rendered by `helm template`, applied
//! object by object): the controller and the gateway run as pods with the chart's service
//! account, RBAC and env, and a Function applied afterwards answers through the gateway's
//! Service from zero. This checks the chart, not just the binaries.
//!
//! Needs `helm`: KFAAS_HELM, else `helm` on PATH, else e2e/.work/bin/helm (e2e/run.sh builds it
//! from the Go module proxy when missing).

use std::{path::PathBuf, process::Command, time::Duration};

use k8s_openapi::api::core::v1::{Pod, Service};
use kfaas_e2e::{
    MANAGER, api_resource, client, documents_of, ensure_crds, temp_namespace, wait_for,
};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("KFAAS_HELM") {
        return path.into();
    }
    let local = kfaas_e2e::repo().join("e2e/.work/bin/helm");
    if local.is_file() {
        return local;
    }
    "helm".into()
}

/// `helm template` of charts/kfaas into `ns`, as the e2e node needs it: the gateway binds its
/// pod IP (pods share one network namespace there) and everything watches `ns` only.
fn render(ns: &str) -> String {
    let lint = Command::new(helm())
        .arg("lint")
        .arg(kfaas_e2e::repo().join("charts/kfaas"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", helm().display()));
    assert!(
        lint.status.success(),
        "helm lint charts/kfaas failed:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let output = Command::new(helm())
        .args(["template", "kfaas"])
        .arg(kfaas_e2e::repo().join("charts/kfaas"))
        .args(["--namespace", ns])
        .args(["--set", "image.tag=dev"])
        .args(["--set", "gateway.listenHost=$(POD_IP)"])
        .args(["--set", &format!("gateway.namespace={ns}")])
        .args(["--set", &format!("controller.watchNamespace={ns}")])
        .args(["--set", "gateway.usageStatusSeconds=1"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): e2e/run.sh builds helm into e2e/.work/bin, or set KFAAS_HELM",
                helm().display()
            )
        });
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 YAML")
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition"
    )
}

fn api_for(client: &kube::Client, ns: &str, doc: &Value) -> Api<DynamicObject> {
    let resource = api_resource(doc).expect("apiVersion and kind");
    if is_cluster_scoped(doc["kind"].as_str().unwrap_or("")) {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), ns, &resource)
    }
}

async fn apply(client: &kube::Client, ns: &str, doc: &Value) {
    let name = kfaas_e2e::name_of(doc).expect("name");
    api_for(client, ns, doc)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", doc["kind"]));
}

/// Output of the pods of one component, for failure messages.
fn pod_logs(component: &str) -> String {
    let Some(runs) = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .and_then(|k| k.parent().map(|p| p.join("pods")))
    else {
        return String::new();
    };
    let mut out = String::new();
    for entry in std::fs::read_dir(runs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(&format!("kfaas-{component}")) {
            continue;
        }
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(file.path()) {
                let tail: String = text
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect();
                out.push_str(&format!("--- {}\n{tail}\n", file.path().display()));
            }
        }
    }
    out
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn the_helm_chart_runs_the_controller_and_gateway_that_serve_a_function() {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let ns = temp_namespace(&client, "e2e-chart")
        .await
        .expect("namespace");
    let rendered = render(&ns);
    let docs = documents_of(&rendered).expect("helm output is YAML");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(&kind),
            "the chart renders a {kind}: {kinds:?}"
        );
    }
    for doc in &docs {
        apply(&client, &ns, doc).await;
    }

    // Both components become Ready: the gateway's readiness is its first loaded configuration.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for component in ["controller", "gateway"] {
        wait_for(
            &format!("the chart's {component} pod Running"),
            Duration::from_secs(60),
            || {
                let pods = pods.clone();
                async move {
                    let list = pods
                        .list(
                            &ListParams::default()
                                .labels(&format!("app.kubernetes.io/component={component}")),
                        )
                        .await?;
                    Ok(list.items.iter().any(|p| {
                        p.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .flatten()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                    }))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pod_logs(component)));
    }

    // A function, a stage and a route, reached through the gateway's Service.
    let code = std::fs::read_to_string(kfaas_e2e::repo().join("examples/hello/src/index.js"))
        .expect("examples/hello/src/index.js");
    for doc in [
        json!({"apiVersion": "kfaas.dev/v1alpha1", "kind": "Function", "metadata": {"name": "hello"},
               "spec": {"runtime": "nodejs", "handler": "index.handler",
                        "code": {"inline": {"index.js": code}}, "timeoutSeconds": 10}}),
        json!({"apiVersion": "kfaas.dev/v1alpha1", "kind": "Stage", "metadata": {"name": "dev"},
               "spec": {"api": "hello"}}),
        json!({"apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "hello"},
               "spec": {"api": "hello", "methods": ["GET"], "path": "/hello", "function": "hello"}}),
    ] {
        apply(&client, &ns, &doc).await;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = services
        .get("kfaas-gateway")
        .await
        .expect("Service kfaas-gateway");
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the gateway Service has a cluster IP");
    let addr = format!("{cluster_ip}:80");
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let answered = wait_for(
        "hello through the gateway Service",
        Duration::from_secs(60),
        || {
            let (addr, last) = (addr.clone(), last.clone());
            async move {
                let (status, _, body) =
                    kfaas_e2e::gateway::request(&addr, "/hello?name=chart", &[]).await?;
                *last.lock().expect("lock") = format!("{status} {body}");
                Ok(status == 200)
            }
        },
    )
    .await;
    if let Err(e) = answered {
        panic!(
            "{e:#}\nlast answer: {}\n{}\n{}",
            last.lock().expect("lock"),
            pod_logs("gateway"),
            pod_logs("controller")
        );
    }
    let (_, _, body) = kfaas_e2e::gateway::request(&addr, "/hello?name=chart", &[])
        .await
        .expect("request");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["message"], "hello, chart");

    for doc in docs
        .iter()
        .filter(|d| is_cluster_scoped(d["kind"].as_str().unwrap_or("")))
    {
        let name = kfaas_e2e::name_of(doc).expect("name");
        let _ = api_for(&client, &ns, doc)
            .delete(&name, &DeleteParams::default())
            .await;
    }
    kfaas_e2e::delete_namespace(&client, &ns).await;
}
