//! The whole platform on a real control plane: `kfaas controller` makes the function's
//! Deployment, Service and code ConfigMap from a Function with inline code; `kfaas gateway`
//! serves the Route on the Stage, scales the controller's Deployment from zero through the
//! API key and quota of a UsagePlan, and back to zero when idle. Both write status: the
//! controller the Function's replicas and the plan's key count, the gateway the plan's usage,
//! each with its own field manager and without undoing the other.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kfaas_e2e::{
    apply, client, ensure_crds,
    gateway::{request, start_gateway},
    kfaas_api,
    process::start_controller,
    temp_namespace, wait_for,
};
use kube::api::Api;
use serde_json::{Value, json};

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn controller_and_gateway_serve_a_function_from_zero_with_a_usage_plan() {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let ns = temp_namespace(&client, "e2e-stack")
        .await
        .expect("namespace");
    let code = std::fs::read_to_string(kfaas_e2e::repo().join("examples/hello/src/index.js"))
        .expect("examples/hello/src/index.js");

    let mut controller = start_controller(&ns, &[]);

    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function", "metadata": {"name": "hello"},
            "spec": {"runtime": "nodejs", "handler": "index.handler",
                     "code": {"inline": {"index.js": code}}, "timeoutSeconds": 10,
                     "scaling": {"maxReplicas": 2, "idleTimeoutSeconds": 3}},
        }),
    )
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Stage", "metadata": {"name": "prod"},
            "spec": {"api": "shop", "basePath": "/prod"},
        }),
    )
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "hello"},
            "spec": {"api": "shop", "methods": ["GET"], "path": "/hello", "function": "hello",
                     "auth": {"apiKeyRequired": true}},
        }),
    )
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-key"},
            "stringData": {"apiKey": "alice-secret-value"},
        }),
    )
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "UsagePlan", "metadata": {"name": "basic"},
            "spec": {"stages": [{"api": "shop", "stage": "prod"}],
                     "quota": {"limit": 5, "period": "MONTH"},
                     "apiKeys": [{"id": "alice", "secretRef": {"name": "alice-key"}}]},
        }),
    )
    .await;

    // The controller made the Deployment, at zero replicas (scaling.minReplicas).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "Deployment hello from the controller",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            async move {
                Ok(deployments
                    .get_opt("hello")
                    .await?
                    .is_some_and(|d| d.spec.replicas == Some(0)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));

    let (gateway, addr) = start_gateway(&ns, "stack-gateway");
    let key = [("x-api-key", "alice-secret-value")];
    let (status, _, body) = request(&addr, "/prod/hello?name=stack", &key)
        .await
        .expect("request");
    assert_eq!(
        status,
        200,
        "{body}\ngateway:\n{}\ncontroller:\n{}",
        gateway.output(),
        controller.output()
    );
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["message"], "hello, stack");
    let (status, _, _) = request(&addr, "/prod/hello", &[]).await.expect("request");
    assert_eq!(status, 403);

    // Function status from the controller: the instance the gateway asked for is ready.
    let functions = kfaas_api(&client, &ns, "Function");
    wait_for(
        "Function hello readyReplicas 1",
        Duration::from_secs(30),
        || {
            let functions = functions.clone();
            async move {
                let f = functions.get("hello").await?;
                Ok(f.data.pointer("/status/readyReplicas") == Some(&json!(1)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.output()));

    // The plan's status holds both writers' fields: keys (controller), usage (gateway).
    let plans = kfaas_api(&client, &ns, "UsagePlan");
    wait_for(
        "UsagePlan basic: keys and usage",
        Duration::from_secs(30),
        || {
            let plans = plans.clone();
            async move {
                let p = plans.get("basic").await?;
                let status = p.data.get("status").cloned().unwrap_or(Value::Null);
                Ok(status["keys"] == 1
                    && status["usage"][0]["keyId"] == "alice"
                    && status["usage"][0]["used"] == 1
                    && status["usage"][0]["remaining"] == 4)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));

    // A Lambda authorizer (a second function from the controller): 401 without the identity
    // source, 403 on deny, and its context reaches the function's event.
    let authorizer = r#"exports.handler = async (event) => ({
  isAuthorized: (event.headers || {}).authorization === "let-me-in",
  context: { user: "e2e-user" },
});"#;
    let whoami = r#"exports.handler = async (event) => ({
  statusCode: 200,
  body: JSON.stringify({ user: event.requestContext.authorizer.lambda.user }),
});"#;
    for (name, code) in [("authz", authorizer), ("whoami", whoami)] {
        apply(
            &client,
            &ns,
            &json!({
                "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
                "spec": {"runtime": "nodejs", "handler": "index.handler",
                         "code": {"inline": {"index.js": code}}, "timeoutSeconds": 10},
            }),
        )
        .await;
    }
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "private"},
            "spec": {"api": "shop", "methods": ["GET"], "path": "/private", "function": "whoami",
                     "auth": {"type": "function", "authorizer": {
                         "function": "authz", "identitySources": ["$request.header.Authorization"],
                         "resultTtlSeconds": 0, "payloadFormat": "2.0", "simpleResponses": true}}},
        }),
    )
    .await;
    wait_for("Route private served", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { Ok(request(&addr, "/prod/private", &[]).await?.0 != 404) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));
    let (status, _, body) = request(&addr, "/prod/private", &[]).await.expect("request");
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"message":"Unauthorized"}"#)
    );
    let (status, _, body) = request(&addr, "/prod/private", &[("authorization", "nope")])
        .await
        .expect("request");
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            r#"{"message":"User is not authorized to access this resource"}"#
        ),
        "{}",
        gateway.output()
    );
    let (status, _, body) = request(&addr, "/prod/private", &[("authorization", "let-me-in")])
        .await
        .expect("request");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"user":"e2e-user"}"#),
        "{}",
        gateway.output()
    );

    // Idle: the gateway scales to zero and the controller's status follows.
    wait_for(
        "Function hello back at zero",
        Duration::from_secs(40),
        || {
            let (functions, deployments) = (functions.clone(), deployments.clone());
            async move {
                let d = deployments.get("hello").await?;
                let f = functions.get("hello").await?;
                Ok(d.spec.replicas == Some(0)
                    && f.data.pointer("/status/replicas") == Some(&json!(0)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));

    // A new Function version from the controller keeps the gateway's scale alone: the next
    // request still cold-starts and answers.
    let (status, _, body) = request(&addr, "/prod/hello?name=again", &key)
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert!(
        controller.is_running(),
        "controller died:\n{}",
        controller.output()
    );
    kfaas_e2e::delete_namespace(&client, &ns).await;
}
