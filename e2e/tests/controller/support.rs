//! What the controller tests share: running the controller, applying untyped objects, and
//! reading conditions, pods and leases.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
pub use kfaas_e2e::process::start_controller;
use kfaas_e2e::{client, ensure_crds, process::KfaasProcess, temp_namespace, wait_for};
use kube::{
    Client,
    api::{Api, DynamicObject, ListParams},
};
use serde_json::{Value, json};

pub const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";

pub async fn setup(prefix: &str) -> (Client, String) {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let ns = temp_namespace(&client, prefix).await.expect("namespace");
    (client, ns)
}

pub use kfaas_e2e::{apply, kfaas_api};

/// The `Ready` condition of a kfaas object as (status, reason, message).
pub fn ready_condition(obj: &DynamicObject) -> Option<(String, String, String)> {
    let conditions = obj.data.pointer("/status/conditions")?.as_array()?;
    let ready = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))?;
    let field = |k: &str| {
        ready
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some((field("status"), field("reason"), field("message")))
}

/// Waits until the kfaas object's `Ready` condition has `status` and `reason`; returns it.
pub async fn wait_ready(
    api: &Api<DynamicObject>,
    name: &str,
    status: &str,
    reason: &str,
    controller: &KfaasProcess,
) -> (String, String, String) {
    let seen = std::sync::Mutex::new(None);
    wait_for(
        &format!("{name} Ready={status} reason {reason}"),
        Duration::from_secs(60),
        || async {
            let obj = api.get(name).await?;
            let cond = ready_condition(&obj);
            let done = cond
                .as_ref()
                .is_some_and(|(s, r, _)| s == status && r == reason);
            *seen.lock().expect("lock") = Some((cond, obj.data.get("status").cloned()));
            Ok(done)
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nlast seen: {:?}\ncontroller output:\n{}",
            seen.lock().expect("lock"),
            controller.output()
        )
    });
    let last = seen.lock().expect("lock").take();
    last.and_then(|(c, _)| c).expect("condition")
}

pub fn hello_code() -> String {
    std::fs::read_to_string(kfaas_e2e::repo().join("examples/hello/src/index.js"))
        .expect("examples/hello/src/index.js")
}

pub fn hello_function(env: Value) -> Value {
    json!({
        "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function",
        "metadata": {"name": "hello"},
        "spec": {
            "runtime": "nodejs",
            "handler": "index.handler",
            "code": {"inline": {"index.js": hello_code()}},
            "timeoutSeconds": 10,
            "environment": env,
        },
    })
}

/// The env value of the function container of a Deployment.
pub fn deployment_env(d: &Deployment, name: &str) -> Option<String> {
    d.spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "function")?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// Ready pods of the function as (name, IP).
pub async fn ready_pods(pods: &Api<Pod>, function: &str) -> Result<Vec<(String, String)>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("kfaas.dev/function={function}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some((p.metadata.name?, ip))
        })
        .collect())
}

pub fn is_owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|o| o.uid == uid && o.kind == "Function" && o.controller == Some(true))
    })
}

/// A controller child process the test can send SIGTERM to (KfaasProcess only kills).
pub struct Candidate {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Candidate {
    pub fn spawn(ns: &str, identity: &str) -> Self {
        let log = std::env::temp_dir().join(format!("kfaas-e2e-controller-{ns}-{identity}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = std::process::Command::new(kfaas_e2e::process::kfaas_bin())
            .args(kfaas_e2e::process::controller_args(ns, identity))
            .env("KFAAS_LOG", "info,kfaas::controller::leader=debug")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn kfaas controller");
        Self { child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_for_output(&self, needle: &str) {
        wait_for(
            &format!("{} to print {needle:?}", self.log.display()),
            Duration::from_secs(30),
            || async { Ok(self.output().contains(needle)) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\noutput:\n{}", self.output()));
    }

    /// Sends SIGTERM and returns whether the process exited successfully within 30s.
    pub async fn terminate(&mut self) -> bool {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        for _ in 0..120 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), ns)
        .get_opt("kfaas-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}
