//! The Function reconciler against a scripted API server: which writes it makes, in which
//! order, with which bodies.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{FunctionCode, FunctionRuntime, FunctionSpec},
    controller::fixtures::{MockApi, Step, not_found},
};

const CM: &str = "/api/v1/namespaces/apps/configmaps/hello-code";
const SVC: &str = "/api/v1/namespaces/apps/services/hello";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/apps/deployments";
const DEPLOY: &str = "/apis/apps/v1/namespaces/apps/deployments/hello";
const STATUS: &str = "/apis/kfaas.dev/v1alpha1/namespaces/apps/functions/hello/status";

fn function(code: FunctionCode, replicas: Option<i32>) -> Function {
    Function {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("apps".into()),
            uid: Some("uid-1".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: FunctionSpec {
            runtime: Some(FunctionRuntime::Nodejs),
            handler: Some("index.handler".into()),
            code: Some(code),
            replicas,
            ..FunctionSpec::default()
        },
        status: None,
    }
}

fn inline() -> FunctionCode {
    FunctionCode {
        inline: Some(BTreeMap::from([(
            "index.js".into(),
            "exports.handler=1".into(),
        )])),
        ..FunctionCode::default()
    }
}

fn deployment(replicas: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello", "namespace": "apps"},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
        "status": {"replicas": replicas, "readyReplicas": ready},
    })
}

fn scale(replicas: i32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "hello", "namespace": "apps"},
        "spec": {"replicas": replicas},
    })
}

fn echo_function(f: &Function) -> Value {
    serde_json::to_value(f).expect("function JSON")
}

fn is_apply_by_the_controller(query: &str) -> bool {
    query.contains("fieldManager=kfaas-controller") && query.contains("force=true")
}

#[tokio::test]
async fn a_new_function_creates_its_deployment_with_the_first_count() {
    let f = function(inline(), None);
    let mock = MockApi::start(vec![
        Step::new("PATCH", CM, 200, Value::Null),
        Step::new("PATCH", SVC, 200, Value::Null),
        Step::new("GET", DEPLOY, 404, not_found("hello")),
        Step::new("POST", DEPLOYMENTS, 201, Value::Null),
        Step::new("PATCH", STATUS, 200, echo_function(&f)),
    ])
    .await;
    let action = reconcile(Arc::new(f), mock.context())
        .await
        .expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let seen = mock.verify();
    assert!(
        is_apply_by_the_controller(&seen[0].query),
        "{}",
        seen[0].query
    );
    assert_eq!(seen[0].body["data"]["index.js"], json!("exports.handler=1"));
    let created = &seen[3].body;
    assert_eq!(created["spec"]["replicas"], json!(0), "scale-to-zero start");
    // Created by another manager than the applies, which therefore never own the count.
    assert!(
        seen[3]
            .query
            .contains("fieldManager=kfaas-controller-create"),
        "{}",
        seen[3].query
    );
    let status = &seen[4].body["status"];
    assert!(is_apply_by_the_controller(&seen[4].query));
    assert_eq!(status["conditions"][0]["reason"], json!("ScaledToZero"));
    assert_eq!(status["selector"], json!("kfaas.dev/function=hello"));
}

#[tokio::test]
async fn an_existing_deployment_is_applied_without_replicas_and_a_pin_is_scaled() {
    let f = function(inline(), Some(2));
    let mock = MockApi::start(vec![
        Step::new("PATCH", CM, 200, Value::Null),
        Step::new("PATCH", SVC, 200, Value::Null),
        Step::new("GET", DEPLOY, 200, deployment(1, 1)),
        Step::new("PATCH", DEPLOY, 200, deployment(1, 1)),
        Step::new("PATCH", format!("{DEPLOY}/scale"), 200, scale(2)),
        Step::new("PATCH", STATUS, 200, echo_function(&f)),
    ])
    .await;
    reconcile(Arc::new(f), mock.context())
        .await
        .expect("reconciled");
    let seen = mock.verify();
    let applied = &seen[3].body;
    assert!(is_apply_by_the_controller(&seen[3].query));
    assert!(applied["spec"].get("replicas").is_none(), "{applied}");
    assert_eq!(seen[4].body, json!({"spec": {"replicas": 2}}));
    let status = &seen[5].body["status"];
    assert_eq!(status["readyReplicas"], json!(1));
    assert_eq!(
        status["conditions"][0]["message"],
        json!("1 of 2 instances ready")
    );
}

#[tokio::test]
async fn an_unchanged_function_writes_no_status() {
    let mut f = function(inline(), None);
    let observed = Observed {
        desired: 1,
        replicas: 1,
        ready: 1,
        ..Observed::default()
    };
    let w = Workload::try_from(&f).expect("valid");
    f.status = Some(desired_status(&f, &Ok((w, observed)), Timestamp::now()));
    let mock = MockApi::start(vec![
        Step::new("PATCH", CM, 200, Value::Null),
        Step::new("PATCH", SVC, 200, Value::Null),
        Step::new("GET", DEPLOY, 200, deployment(1, 1)),
        Step::new("PATCH", DEPLOY, 200, deployment(1, 1)),
    ])
    .await;
    reconcile(Arc::new(f), mock.context())
        .await
        .expect("reconciled");
    mock.verify();
}

#[tokio::test]
async fn code_path_writes_the_reason_and_an_event_and_deploys_nothing() {
    let f = function(
        FunctionCode {
            path: Some("./src".into()),
            ..FunctionCode::default()
        },
        None,
    );
    let mock = MockApi::start(vec![
        Step::new("PATCH", STATUS, 200, echo_function(&f)),
        Step::new(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/apps/events",
            201,
            Value::Null,
        ),
    ])
    .await;
    let action = reconcile(Arc::new(f), mock.context())
        .await
        .expect("a user error");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let seen = mock.verify();
    let ready = &seen[0].body["status"]["conditions"][0];
    assert_eq!(ready["status"], json!("False"));
    assert_eq!(ready["reason"], json!("CodePathNotSupported"));
    assert_eq!(seen[1].body["reason"], json!("CodePathNotSupported"));
    assert_eq!(seen[1].body["type"], json!("Warning"));
    assert_eq!(seen[1].body["regarding"]["name"], json!("hello"));
}
