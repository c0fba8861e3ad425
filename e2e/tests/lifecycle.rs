//! Pod lifecycle as a node must implement it: restarts per restartPolicy, terminal phases with
//! exit codes, and graceful deletion (SIGTERM, the grace period, SIGKILL, then the pod is gone).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kfaas_e2e::{MANAGER, client, delete_namespace, temp_namespace, wait_for};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

fn image() -> String {
    std::env::var("KFAAS_E2E_HTTP_IMAGE").unwrap_or_else(|_| "kfaas.dev/test-http".to_owned())
}

fn pod(name: &str, restart: &str, script: &str, grace: i64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "main", "image": image(), "command": ["python3", "-c", script]}],
        },
    })
}

async fn get_until<F>(pods: &Api<Pod>, name: &str, what: &str, secs: u64, pred: F) -> Pod
where
    F: Fn(&Pod) -> bool,
{
    let start = Instant::now();
    loop {
        let p = pods.get(name).await.expect("get pod");
        if pred(&p) {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for pod {name} to {what}; status: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn restart_policies_and_exit_codes() {
    let client = client().await;
    let ns = temp_namespace(&client, "e2e-life")
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(MANAGER).force();
    for (name, restart, script) in [
        (
            "crash",
            "Always",
            "import sys; print('crashing'); sys.exit(1)",
        ),
        ("fails", "Never", "import sys; sys.exit(3)"),
        ("done", "OnFailure", "print('done')"),
    ] {
        pods.patch(name, &apply, &Patch::Apply(pod(name, restart, script, 1)))
            .await
            .expect("apply pod");
    }
    // Always: the container is restarted after each exit.
    let p = get_until(&pods, "crash", "restart twice", 60, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .is_some_and(|c| c.restart_count >= 2)
    })
    .await;
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated after a restart");
    assert_eq!(
        last.exit_code, 1,
        "lastState of the crashing container: {last:?}"
    );
    assert_ne!(
        p.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed"),
        "a restartPolicy Always pod never fails for good"
    );
    // Never: the pod fails with the container's exit code.
    let p = get_until(&pods, "fails", "fail", 60, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let term = p.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated state");
    assert_eq!(term.exit_code, 3);
    // OnFailure and exit 0: the pod succeeds, without restarts.
    let p = get_until(&pods, "done", "succeed", 60, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    assert_eq!(
        p.status.unwrap().container_statuses.unwrap()[0].restart_count,
        0
    );
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn deletion_waits_the_grace_period_then_kills() {
    let client = client().await;
    let ns = temp_namespace(&client, "e2e-grace")
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(MANAGER).force();
    // Ignores SIGTERM: only SIGKILL after the grace period (3s) ends it.
    let stubborn = "import signal, time\n\
                    signal.signal(signal.SIGTERM, lambda *a: print('SIGTERM ignored', flush=True))\n\
                    print('running', flush=True)\n\
                    while True: time.sleep(1)\n";
    // Exits at once on SIGTERM (Python's default): deletion is quick.
    let polite = "import time\nprint('running', flush=True)\nwhile True: time.sleep(1)\n";
    pods.patch(
        "stubborn",
        &apply,
        &Patch::Apply(pod("stubborn", "Always", stubborn, 3)),
    )
    .await
    .expect("apply");
    pods.patch(
        "polite",
        &apply,
        &Patch::Apply(pod("polite", "Always", polite, 30)),
    )
    .await
    .expect("apply");
    for name in ["stubborn", "polite"] {
        get_until(&pods, name, "run", 60, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the handlers get installed
    let mut took = Vec::new();
    for name in ["stubborn", "polite"] {
        let start = Instant::now();
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        wait_for(
            &format!("pod {name} to be gone"),
            Duration::from_secs(40),
            || {
                let pods = pods.clone();
                async move { Ok(pods.get_opt(name).await?.is_none()) }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        took.push(start.elapsed());
    }
    assert!(
        took[0] >= Duration::from_millis(2500),
        "the SIGTERM-ignoring pod was gone after {:?}, before its 3s grace period",
        took[0]
    );
    assert!(
        took[0] < Duration::from_secs(20),
        "the SIGTERM-ignoring pod took {:?}: not killed after its grace period",
        took[0]
    );
    assert!(
        took[1] < Duration::from_secs(10),
        "the pod exiting on SIGTERM took {:?} to be deleted (grace 30s): SIGTERM not delivered?",
        took[1]
    );
    delete_namespace(&client, &ns).await;
}
