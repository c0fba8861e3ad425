//! What a container sees, as the chart relies on it: env values with $(VAR) expansion, the
//! downward API, Secret and ConfigMap keys, envFrom, a mounted ConfigMap, and a service-account
//! token that the API server authenticates (in-cluster config: KUBERNETES_SERVICE_HOST/PORT,
//! /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kfaas_e2e::{MANAGER, client, delete_namespace, temp_namespace, wait_for};
use kube::api::{Api, Patch, PatchParams};

fn image() -> String {
    std::env::var("KFAAS_E2E_HTTP_IMAGE").unwrap_or_else(|_| "kfaas.dev/test-http".to_owned())
}

const SCRIPT: &str = r#"
import json, os, ssl, sys, urllib.request, urllib.error
env = os.environ
def check(name, want):
    got = env.get(name)
    if got != want:
        sys.exit(f"{name}={got!r}, want {want!r}")
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
check("MY_NAMESPACE", ns)
check("MY_POD", "env-check")
check("GREETING", f"hello from env-check in {ns}")
check("ESCAPED", "$$(MY_POD)")  # the command is expanded too: $$ is a literal $
check("UNDEFINED", "$(NOPE)")
check("FROM_SECRET", "s3cret")
check("FROM_CM", "blue")
check("CFG_color", "blue")
check("CFG_size", "L")
if not env.get("MY_IP"):
    sys.exit("MY_IP is empty")
if open("/etc/kfaas-e2e/color").read() != "blue":
    sys.exit("mounted ConfigMap: wrong content")
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
host, port = env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
req = urllib.request.Request(f"https://{host}:{port}/api/v1/namespaces/{ns}/secrets",
                             headers={"Authorization": "Bearer " + token})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    sys.exit("listing secrets as the default service account was allowed")
except urllib.error.HTTPError as e:
    body = e.read().decode()
    if e.code != 403 or f"system:serviceaccount:{ns}:default" not in body:
        sys.exit(f"API server answered {e.code}: {body}")
print("env-check ok")
"#;

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn a_container_gets_env_volumes_and_a_working_token() {
    let client = client().await;
    let ns = temp_namespace(&client, "e2e-env").await.expect("namespace");
    let apply = PatchParams::apply(MANAGER).force();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret"},
    });
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"color": "blue", "size": "L"},
    });
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch("creds", &apply, &Patch::Apply(&secret))
        .await
        .expect("apply Secret");
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch("settings", &apply, &Patch::Apply(&cm))
        .await
        .expect("apply ConfigMap");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "env-check"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "settings", "configMap": {"name": "settings"}}],
            "containers": [{
                "name": "check", "image": image(),
                "command": ["python3", "-c", SCRIPT],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "env": [
                    {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "GREETING", "value": "hello from $(MY_POD) in $(MY_NAMESPACE)"},
                    {"name": "ESCAPED", "value": "$$(MY_POD)"},
                    {"name": "UNDEFINED", "value": "$(NOPE)"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                ],
                "volumeMounts": [{"name": "settings", "mountPath": "/etc/kfaas-e2e", "readOnly": true}],
            }],
        },
    });
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.patch("env-check", &apply, &Patch::Apply(&pod))
        .await
        .expect("apply Pod");
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_for("Pod env-check to finish", Duration::from_secs(60), || {
        let pods = pods.clone();
        let outcome = outcome.clone();
        async move {
            let status = pods.get("env-check").await?.status.unwrap_or_default();
            let phase = status.phase.unwrap_or_default();
            let message = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.state.and_then(|s| s.terminated))
                .map(|t| format!("exit {}: {}", t.exit_code, t.message.unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ");
            *outcome.lock().expect("lock") = format!("{phase} {message}");
            Ok(phase == "Succeeded" || phase == "Failed")
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let outcome = outcome.lock().expect("lock").clone();
    assert!(
        outcome.starts_with("Succeeded"),
        "the container's view is wrong: {outcome}"
    );
    delete_namespace(&client, &ns).await;
}
