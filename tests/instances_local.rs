//! The local instance manager: real function runtimes (with real handler processes) and real
//! HTTP functions.

#[path = "fixtures/runtime/support.rs"]
mod support;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use kfaas::runtime::DirectOutcome;
use kfaas::{
    backend::{Backend, BackendError, FunctionKey, Instance, ReadyInstances},
    local::{
        instance_env::HostEnv,
        instances::{LocalFunctionSpec, LocalInstances, OutputSink},
    },
    runtime::RuntimeKind,
};
use support::fixture;
use tokio::sync::watch;

/// Keeps instance output for assertions.
#[derive(Default)]
struct Capture(Mutex<Vec<String>>);

impl OutputSink for Capture {
    fn line(&self, function: &FunctionKey, line: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!("[{}] {line}", function.name));
        }
    }
}

impl Capture {
    fn any(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.0
            .lock()
            .map(|l| l.iter().any(|x| pred(x)))
            .unwrap_or(false)
    }

    async fn wait_for(&self, within: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self
                .0
                .lock()
                .map(|l| l.iter().any(|x| pred(x)))
                .unwrap_or(false)
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn manager() -> (LocalInstances, Arc<Capture>) {
    let capture = Arc::new(Capture::default());
    let bin = PathBuf::from(support::kfaas());
    let instances = LocalInstances::with_sink(bin, HostEnv::from_process(&[]), capture.clone())
        .expect("inside tokio");
    (instances, capture)
}

fn node_fn(name: &str, handler: &str) -> LocalFunctionSpec {
    LocalFunctionSpec::lambda(
        FunctionKey::new("default", name),
        RuntimeKind::Nodejs,
        fixture("node"),
        Some(handler.to_owned()),
    )
}

/// A process's group and session ids, from `/proc/PID/stat` (fields 5 and 6, after the
/// parenthesized command name).
fn group_and_session(pid: u64) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after_name = &stat[stat.rfind(')').expect("command name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let id = |i: usize| fields[i].parse::<u64>().expect("a number");
    (id(2), id(3))
}

/// Waits until the ready set satisfies `pred`, up to `within`.
async fn wait_ready(
    rx: &mut watch::Receiver<ReadyInstances>,
    within: Duration,
    pred: impl Fn(&ReadyInstances) -> bool,
) -> ReadyInstances {
    let matched = match tokio::time::timeout(within, rx.wait_for(|r| pred(r))).await {
        Ok(Ok(ready)) => Some(ready.clone()),
        _ => None,
    };
    matched.unwrap_or_else(|| panic!("ready set never matched; now {:?}", *rx.borrow()))
}

/// Defines `spec` as the only function, scales it to one instance and waits for it (20 s); the
/// ready set's receiver is returned too, for what the test waits for next.
async fn one_instance(
    instances: &LocalInstances,
    spec: LocalFunctionSpec,
) -> (watch::Receiver<ReadyInstances>, Instance) {
    let key = spec.key.clone();
    instances.set_functions(vec![spec]);
    let mut rx = instances.ready_instances(&key).expect("known");
    instances.scale(&key, 1).expect("scale");
    let instance = wait_ready(&mut rx, Duration::from_secs(20), |r| r.len() == 1).await[0].clone();
    (rx, instance)
}

#[tokio::test]
async fn zero_to_one_on_demand_then_scale_to_zero() {
    let (instances, capture) = manager();
    let key = FunctionKey::new("default", "hello");
    instances.set_functions(vec![node_fn("hello", "handlers.info")]);
    let mut rx = instances.ready_instances(&key).expect("known");
    assert!(rx.borrow().is_empty());
    assert!(
        instances.instances(&key).is_empty(),
        "nothing runs before demand"
    );

    let asked = Instant::now();
    instances.scale(&key, 1).expect("scale");
    let ready = wait_ready(&mut rx, Duration::from_secs(20), |r| r.len() == 1).await;
    let out = support::invoke(ready[0].addr, r#"{"n":1}"#, Some("cold-1")).await;
    let cold = asked.elapsed();
    assert!(
        ready[0].direct.is_some(),
        "the runtime runs in this process and takes invocations directly"
    );
    assert_eq!(out.ok()["functionName"], "hello");
    eprintln!("cold start (scale 0 -> 1 -> first response): {cold:?}");
    assert!(
        capture
            .wait_for(Duration::from_secs(5), |l| l
                == "[hello] START RequestId: cold-1 Version: $LATEST")
            .await,
        "instance output is prefixed with the function name"
    );

    instances.scale(&key, 0).expect("scale to zero");
    assert!(rx.borrow().is_empty(), "out of the ready set at once");
    instances.shutdown().await;
    assert!(instances.instances(&key).is_empty());
    assert!(
        !capture.any(|l| l.contains("did not exit")),
        "stopped by SIGTERM alone"
    );
    assert!(
        support::invoke_result(ready[0].addr).await.is_err(),
        "process stopped"
    );
}

#[tokio::test]
async fn n_instances_and_back_down() {
    let (instances, _capture) = manager();
    let key = FunctionKey::new("default", "many");
    instances.set_functions(vec![node_fn("many", "handlers.sleep")]);
    let mut rx = instances.ready_instances(&key).expect("known");
    instances.scale(&key, 3).expect("scale");
    let ready = wait_ready(&mut rx, Duration::from_secs(30), |r| r.len() == 3).await;
    let mut pids = Vec::new();
    for instance in ready.iter() {
        pids.push(support::invoke(instance.addr, "{}", None).await.ok()["pid"].clone());
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "three separate instances: {pids:?}");
    let ids: Vec<_> = ready.iter().map(|i| i.id.clone()).collect();

    instances.scale(&key, 1).expect("scale down");
    let left = wait_ready(&mut rx, Duration::from_secs(5), |r| r.len() == 1).await;
    assert!(ids.contains(&left[0].id), "a running instance is kept");
    instances.shutdown().await;
}

#[tokio::test]
async fn graceful_stop_loses_no_in_flight_invocation() {
    let (instances, capture) = manager();
    let key = FunctionKey::new("default", "drain");
    let (rx, instance) = one_instance(&instances, node_fn("drain", "handlers.sleep")).await;
    let addr = instance.addr;
    // Invoked as the gateway invokes it: directly.
    let direct = instance.direct.clone().expect("a direct invoker");
    let slow = tokio::spawn(async move {
        direct
            .invoke("in-flight", Bytes::from_static(br#"{"ms":800}"#))
            .await
    });
    assert!(
        capture
            .wait_for(Duration::from_secs(5), |l| l
                .ends_with("START RequestId: in-flight Version: $LATEST"))
            .await
    );
    instances.scale(&key, 0).expect("scale to zero");
    assert!(
        rx.borrow().is_empty(),
        "removed from the ready set before it is stopped"
    );
    let Ok(DirectOutcome::Result(body)) = slow.await.expect("join") else {
        panic!("the in-flight invocation was cut")
    };
    let out: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(
        out["end"].as_i64().is_some(),
        "the in-flight invocation completed: {out}"
    );
    instances.shutdown().await;
    assert!(
        support::invoke_result(addr).await.is_err(),
        "the instance exited"
    );
    assert!(
        !capture.any(|l| l.contains("did not exit")),
        "stopped by SIGTERM alone"
    );
}

/// A GET's JSON body.
async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// A direct invocation's result, as JSON; panics on a failure.
async fn invoke_json(
    direct: &kfaas::runtime::DirectInvoker,
    request_id: &str,
    event: Bytes,
) -> serde_json::Value {
    let Ok(DirectOutcome::Result(body)) = direct.invoke(request_id, event).await else {
        panic!("a result")
    };
    serde_json::from_slice(&body).expect("json")
}

fn kill_hard(pid: u64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

#[tokio::test]
async fn a_lambda_instance_whose_handler_dies_starts_another_handler() {
    let (instances, _capture) = manager();
    let (rx, instance) = one_instance(&instances, node_fn("phoenix", "handlers.info")).await;
    let first = support::invoke(instance.addr, "{}", None).await;
    let pid = first.ok()["pid"].as_u64().expect("the handler's pid");
    kill_hard(pid);
    // As Lambda does, the next invocation gets a new handler process (a fresh init).
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        let out = support::invoke(instance.addr, "{}", None).await;
        if let Some(new_pid) = out.json()["pid"].as_u64() {
            break new_pid;
        }
        assert!(
            Instant::now() < deadline,
            "no new handler: {:?}",
            out.json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(second, pid, "a new handler process");
    assert_eq!(rx.borrow().len(), 1);
    assert_eq!(rx.borrow()[0].id, instance.id, "the same instance");
    instances.shutdown().await;
}

#[tokio::test]
async fn a_dead_http_instance_is_replaced() {
    let (instances, _capture) = manager();
    let key = FunctionKey::new("default", "web-phoenix");
    let spec = LocalFunctionSpec::http(
        key.clone(),
        fixture("http"),
        vec!["node".into(), "server.js".into()],
    );
    instances.set_functions(vec![spec]);
    let mut rx = instances.ready_instances(&key).expect("known");
    instances.scale(&key, 1).expect("scale");
    let first = wait_ready(&mut rx, Duration::from_secs(20), |r| r.len() == 1).await[0].clone();
    let body = get_json(&format!("http://{}/", first.addr)).await;
    kill_hard(body["pid"].as_u64().expect("pid"));
    let second = wait_ready(&mut rx, Duration::from_secs(20), |r| {
        r.len() == 1 && r[0].id != first.id
    })
    .await[0]
        .clone();
    let status = reqwest::get(format!("http://{}/", second.addr))
        .await
        .expect("get")
        .status();
    assert_eq!(status, 200);
    instances.shutdown().await;
}

#[tokio::test]
async fn http_functions_get_a_port_and_a_changed_spec_rolls() {
    let (instances, capture) = manager();
    let key = FunctionKey::new("default", "web");
    let mut spec = LocalFunctionSpec::http(
        key.clone(),
        fixture("http"),
        vec!["node".into(), "server.js".into()],
    );
    spec.env.insert("GREETING".into(), "one".into());
    instances.set_functions(vec![spec.clone()]);
    let mut rx = instances.ready_instances(&key).expect("known");
    instances.scale(&key, 1).expect("scale");
    let first = wait_ready(&mut rx, Duration::from_secs(20), |r| r.len() == 1).await[0].clone();
    assert!(
        first.direct.is_none(),
        "an http function is called over HTTP"
    );
    let body = get_json(&format!("http://{}/x", first.addr)).await;
    assert_eq!(body["greeting"], "one");
    assert_eq!(body["path"], "/x");
    let pid = body["pid"]
        .as_u64()
        .expect("the function answers with its pid");
    let (group, session) = group_and_session(pid);
    assert_eq!(
        (group, session),
        (pid, pid),
        "an instance leads a process group and a session of its own"
    );
    assert_ne!(
        group_and_session(u64::from(std::process::id())).1,
        session,
        "not this process's session"
    );
    assert!(
        capture
            .wait_for(Duration::from_secs(5), |l| l
                .starts_with("[web] listening on"))
            .await
    );

    spec.env.insert("GREETING".into(), "two".into());
    instances.set_functions(vec![spec]);
    let second = wait_ready(&mut rx, Duration::from_secs(20), |r| {
        r.len() == 1 && r[0].id != first.id
    })
    .await[0]
        .clone();
    let body = get_json(&format!("http://{}/", second.addr)).await;
    assert_eq!(body["greeting"], "two");

    instances.set_functions(vec![]);
    assert!(matches!(
        instances.scale(&key, 1),
        Err(BackendError::UnknownFunction(_))
    ));
    assert!(instances.ready_instances(&key).is_err());
}

#[tokio::test]
async fn an_instance_that_fails_init_is_routable_and_answers_with_the_init_error() {
    let (instances, _capture) = manager();
    let key = FunctionKey::new("default", "broken");
    instances.set_functions(vec![LocalFunctionSpec::lambda(
        key.clone(),
        RuntimeKind::Nodejs,
        fixture("node-init-error"),
        Some("index.handler".to_owned()),
    )]);
    let mut rx = instances.ready_instances(&key).expect("known");
    instances.scale(&key, 1).expect("scale");
    let ready = wait_ready(&mut rx, Duration::from_secs(20), |r| r.len() == 1).await;
    let out = support::invoke(ready[0].addr, "{}", None).await;
    out.failed("init");
    assert_eq!(out.json()["errorMessage"], "init boom from node");
    instances.shutdown().await;
}

#[tokio::test]
async fn a_lambda_instance_is_invoked_directly_with_the_invoke_endpoints_outcomes() {
    let (instances, capture) = manager();
    let key = FunctionKey::new("default", "direct");
    let mut spec = node_fn("direct", "handlers.info");
    spec.timeout = Duration::from_secs(1);
    let (_rx, instance) = one_instance(&instances, spec).await;
    let direct = instance.direct.clone().expect("a direct invoker");

    let result = invoke_json(&direct, "direct-1", Bytes::from_static(br#"{"n":7}"#)).await;
    assert_eq!(result["event"]["n"], 7);
    assert_eq!(
        result["awsRequestId"], "direct-1",
        "the caller's request id is kept"
    );
    assert!(
        capture
            .wait_for(Duration::from_secs(5), |l| l
                == "[direct] START RequestId: direct-1 Version: $LATEST")
            .await,
        "the runtime's lines reach the instance's output, prefixed"
    );
    // A request id that cannot travel in a Runtime API path is replaced.
    let result = invoke_json(&direct, "not/a/path", Bytes::from_static(b"{}")).await;
    assert_ne!(result["awsRequestId"], "not/a/path");

    instances.scale(&key, 0).expect("scale to zero");
    instances.shutdown().await;
    assert!(
        direct
            .invoke("late", Bytes::from_static(b"{}"))
            .await
            .is_err(),
        "a stopped runtime takes no invocation"
    );
}

#[tokio::test]
async fn a_direct_invocation_of_a_stream_that_fails_midway_answers_the_failure() {
    let (instances, _capture) = manager();
    let (_rx, instance) = one_instance(&instances, node_fn("streamer", "handlers.stream")).await;
    let direct = instance.direct.clone().expect("a direct invoker");

    // A whole stream is gathered into the result.
    let Ok(DirectOutcome::Result(body)) = direct.invoke("whole", Bytes::from_static(b"{}")).await
    else {
        panic!("a result")
    };
    let body = String::from_utf8_lossy(&body);
    assert_eq!(body.lines().count(), 3, "{body}");
    assert!(body.starts_with("chunk 0 "), "{body}");

    // One that fails after its chunks answers the failure, not the chunks sent before it.
    let outcome = direct
        .invoke("broken", Bytes::from_static(br#"{"fail":true}"#))
        .await;
    let Ok(DirectOutcome::Failed { kind, body }) = outcome else {
        panic!("a failure, got {outcome:?}")
    };
    assert_eq!(kind, "function");
    let error: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(error["errorMessage"], "mid-stream boom");
    instances.shutdown().await;
}
