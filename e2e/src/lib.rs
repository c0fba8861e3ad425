//! End-to-end suite for kfaas, run against the cluster named by KUBECONFIG.
//!
//! The tests live in `e2e/tests/` and are `#[ignore]`d so that `cargo test --workspace` only
//! builds them; `e2e/run.sh` (a local control plane built from the Kubernetes Go modules) and
//! `e2e/kind.sh` run them with `--include-ignored`. This library holds what they share:
//! a client, the repository's YAML, server-side apply of untyped objects, and polling.

pub mod gateway;
pub mod process;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;

/// Field manager of every write the suite makes.
pub const MANAGER: &str = "kfaas-e2e";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}

/// A client for the cluster in KUBECONFIG. Panics with directions when KUBECONFIG is unset:
/// the suite never falls back to whatever cluster ~/.kube/config happens to name.
pub async fn client() -> Client {
    let Some(path) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) else {
        panic!(
            "KUBECONFIG is not set. The e2e suite runs against a real cluster: use e2e/run.sh \
             (a local control plane built from the Kubernetes Go modules) or e2e/kind.sh, or \
             point KUBECONFIG at a disposable cluster and run \
             `cargo test -p kfaas-e2e -- --include-ignored`"
        );
    };
    let config = Config::infer()
        .await
        .unwrap_or_else(|e| panic!("KUBECONFIG={}: {e}", PathBuf::from(&path).display()));
    Client::try_from(config).expect("kube client")
}

/// Every `*.yaml`/`*.yml` file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The YAML documents of a file as JSON values (empty documents skipped).
pub fn documents(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    documents_of(&text).with_context(|| path.display().to_string())
}

/// The YAML documents of a text as JSON values (empty documents skipped).
pub fn documents_of(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc).context("not YAML")?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Whether a document is a kfaas object (API group kfaas.dev).
pub fn is_kfaas(doc: &Value) -> bool {
    doc.get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("kfaas.dev/"))
}

/// The API resource of an untyped object, from its apiVersion and kind. The kfaas kinds and the
/// built-in kinds the suite uses all pluralise by lower-casing and appending "s".
pub fn api_resource(doc: &Value) -> Result<ApiResource> {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("object without apiVersion"))?;
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("object without kind"))?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok(ApiResource::from_gvk_with_plural(
        &gvk,
        &format!("{}s", kind.to_ascii_lowercase()),
    ))
}

/// The namespaced API for an untyped object.
pub fn dynamic_api(client: &Client, ns: &str, doc: &Value) -> Result<Api<DynamicObject>> {
    Ok(Api::namespaced_with(
        client.clone(),
        ns,
        &api_resource(doc)?,
    ))
}

pub fn name_of(doc: &Value) -> Result<String> {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("object without metadata.name"))
}

/// Creates an untyped object in `ns` (a plain POST, as `kubectl create` does).
pub async fn create(client: &Client, ns: &str, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let api = dynamic_api(client, ns, doc).expect("apiVersion and kind");
    let mut obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
    obj.metadata.namespace = Some(ns.to_owned());
    api.create(&PostParams::default(), &obj).await
}

/// Server-side applies an untyped object (kfaas kinds included) in `ns`; panics naming the
/// object when the API server refuses it.
pub async fn apply(client: &Client, ns: &str, doc: &Value) -> DynamicObject {
    let api = dynamic_api(client, ns, doc).expect("apiVersion and kind");
    let name = name_of(doc).expect("metadata.name");
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(doc),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

/// The API of one kfaas kind in `ns`.
pub fn kfaas_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let doc = serde_json::json!({"apiVersion": "kfaas.dev/v1alpha1", "kind": kind});
    dynamic_api(client, ns, &doc).expect("kfaas kind")
}

/// Applies every CRD in crds/ with server-side apply and waits until each is Established.
/// Idempotent: every test that needs the CRDs calls it.
pub async fn ensure_crds(client: &Client) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for file in yaml_files(&repo().join("crds")) {
        for doc in documents(&file)? {
            if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            let name = name_of(&doc)?;
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&doc),
            )
            .await
            .with_context(|| format!("apply {} from {}", name, file.display()))?;
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!(
            "no CustomResourceDefinition found in {}",
            repo().join("crds").display()
        );
    }
    for name in &names {
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(60),
            || async {
                let crd = api.get(name).await?;
                Ok(crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True"))
            },
        )
        .await?;
    }
    Ok(names)
}

/// Creates a namespace named `prefix-<unique>` and returns its name.
pub async fn temp_namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            % 1_000_000_000
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kfaas.dev/e2e": "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("create namespace {name}"))?;
    // The service-account controller creates `default` shortly after the namespace.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("service account {name}/default"),
        Duration::from_secs(30),
        || async { Ok(sas.get_opt("default").await?.is_some()) },
    )
    .await?;
    Ok(name)
}

/// Deletes a namespace, best effort (the namespace controller finishes in the background).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Polls `check` every 250ms until it returns true; errors from `check` count as "not yet"
/// and the last one is reported on timeout.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A plain HTTP/1.0 GET over TCP: (status code, body). No client library: the suite checks
/// that a pod IP answers, nothing more.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    http_request("GET", addr, path, None).await
}

/// A plain HTTP/1.0 request over TCP, with an optional JSON body: (status code, body).
pub async fn http_request(
    method: &str,
    addr: &str,
    path: &str,
    json: Option<&Value>,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect {addr}: timeout"))?
            .with_context(|| format!("connect {addr}"))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let body = json.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n");
    if json.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf))
        .await
        .with_context(|| format!("read {addr}: timeout"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{addr}: not an HTTP response: {head:?}"))?;
    Ok((status, body.to_owned()))
}
