//! Scale from zero to N and back to zero under load, with no failed request.

mod common;

use std::time::{Duration, Instant};

use common::{LocalServer, metric_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_zero_to_n_to_zero_without_failing_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("src")).expect("mkdir");
    std::fs::write(
        dir.path().join("src/index.js"),
        "exports.handler = async () => { await new Promise(r => setTimeout(r, 50)); return { statusCode: 200, body: String(process.pid) }; };\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("app.yaml"),
        "apiVersion: kfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: work}\nspec:\n  runtime: nodejs\n  handler: index.handler\n  code: {path: ./src}\n  concurrency: 1\n  scaling: {maxReplicas: 4, idleTimeoutSeconds: 2}\n---\napiVersion: kfaas.dev/v1alpha1\nkind: Route\nmetadata: {name: work}\nspec: {api: a, methods: [GET], path: /work, function: work}\n---\napiVersion: kfaas.dev/v1alpha1\nkind: Stage\nmetadata: {name: s}\nspec: {api: a}\n",
    )
    .expect("write");
    let server = LocalServer::start(dir.path(), &["--no-access-log"]);
    let client = reqwest::Client::new();
    let url = server.url("/work");

    // 8 concurrent clients × 15 requests each, starting from zero instances.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut pids = Vec::new();
            for _ in 0..15 {
                let response = client.get(&url).send().await.expect("request");
                assert_eq!(response.status(), 200, "a request failed while scaling");
                pids.push(response.text().await.expect("body"));
            }
            pids
        }));
    }
    let mut pids = std::collections::BTreeSet::new();
    for task in tasks {
        pids.extend(task.await.expect("task"));
    }
    assert!(
        pids.len() > 1,
        "load was served by more than one instance: {pids:?}"
    );
    assert!(
        pids.len() <= 4,
        "never more than maxReplicas instances: {pids:?}"
    );
    let metrics = server.metrics();
    assert!(
        metric_value(
            &metrics,
            &["kfaas_gateway_cold_starts_total", "default/work"]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, &["kfaas_gateway_requests_total", "2xx"]),
        Some(120.0),
        "{metrics}"
    );

    // Idle: back to zero instances after the idle timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = metric_value(
            &server.metrics(),
            &["kfaas_gateway_instances", "default/work"],
        );
        if ready == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {ready:?} instances after the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The processes end shortly after they leave the ready set (a graceful stop).
    let deadline = Instant::now() + Duration::from_secs(15);
    for pid in &pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "instance process {pid} still runs after scale to zero"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // And from zero again.
    let response = client.get(&url).send().await.expect("request");
    assert_eq!(response.status(), 200);
}
