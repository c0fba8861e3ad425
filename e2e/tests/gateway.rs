//! `kfaas gateway` on a real control plane: it reads Functions, Routes, Stages, UsagePlans and
//! Secrets from the API server, holds the first request while it scales the function's
//! Deployment from zero, routes to the pod the EndpointSlice lists, enforces the API key and the
//! quota, writes each key's usage into the UsagePlan's status, and scales back to zero when idle.
//!
//! It also reads JWKS for a JWT authorizer from a Secret, picks up a rotated API key, and keeps
//! serving when a Route it cannot serve is added.
//!
//! The function's Deployment and Service are made here by hand, as `kfaas controller` would make
//! them (names and labels from src/workload.rs), so this test checks the gateway alone.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use kfaas_e2e::{
    apply, client, ensure_crds,
    gateway::{request, start_gateway},
    kfaas_api, temp_namespace, wait_for,
};
use kube::api::Api;
use serde_json::{Value, json};

async fn deployment_replicas(api: &Api<Deployment>, name: &str) -> Result<i32> {
    Ok(api.get(name).await?.spec.replicas.unwrap_or(-1))
}

/// An RS256 token from the key in src/gateway/policy/testdata (kid rsa-1), valid for 10 minutes.
fn signed_token() -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let pem = std::fs::read(kfaas_e2e::repo().join("src/gateway/policy/testdata/rsa_private.pem"))
        .expect("testdata/rsa_private.pem");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("test key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"iss": "https://issuer.example", "aud": "api://shop", "sub": "e2e",
                        "exp": now + 600});
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// The hello function as `kfaas controller` would make it: a ConfigMap with the code, a
/// Deployment at zero replicas, a Service whose EndpointSlices carry the function label; and the
/// Function itself (idle timeout 3 s).
async fn hello_function(client: &kube::Client, ns: &str) {
    let (client, ns) = (client.clone(), ns.to_owned());
    let image =
        std::env::var("KFAAS_E2E_IMAGE").unwrap_or_else(|_| "ghcr.io/kfaas/kfaas:dev".to_owned());
    let code = std::fs::read_to_string(kfaas_e2e::repo().join("examples/hello/src/index.js"))
        .expect("examples/hello/src/index.js");
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hello-code"}, "data": {"index.js": code},
        }),
    )
    .await;
    apply(&client, &ns, &json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello", "labels": {"kfaas.dev/function": "hello"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"kfaas.dev/function": "hello"}},
            "template": {
                "metadata": {"labels": {"kfaas.dev/function": "hello"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "code", "configMap": {"name": "hello-code"}}],
                    "containers": [{
                        "name": "function", "image": image, "args": ["runtime"],
                        "env": [
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "KFAAS_LISTEN", "value": "$(POD_IP):8080"},
                            {"name": "KFAAS_RUNTIME", "value": "nodejs"},
                            {"name": "KFAAS_HANDLER", "value": "index.handler"},
                            {"name": "KFAAS_CODE", "value": "/var/task"},
                            {"name": "KFAAS_FUNCTION_NAME", "value": "hello"},
                        ],
                        "ports": [{"name": "invoke", "containerPort": 8080}],
                        "volumeMounts": [{"name": "code", "mountPath": "/var/task", "readOnly": true}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "invoke"}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }))
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hello", "labels": {"kfaas.dev/function": "hello"}},
            "spec": {
                "selector": {"kfaas.dev/function": "hello"},
                "ports": [{"name": "invoke", "port": 8080, "targetPort": "invoke"}],
            },
        }),
    )
    .await;

    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function", "metadata": {"name": "hello"},
            "spec": {"runtime": "nodejs", "handler": "index.handler",
                     "code": {"configMap": "hello-code"}, "timeoutSeconds": 10,
                     "scaling": {"maxReplicas": 2, "idleTimeoutSeconds": 3}},
        }),
    )
    .await;
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn the_gateway_scales_from_zero_routes_enforces_keys_and_quota_and_reports_usage() {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let ns = temp_namespace(&client, "e2e-gateway")
        .await
        .expect("namespace");
    hello_function(&client, &ns).await;

    // The API: a keyed route on a stage, a plan with a quota of 3 a day, the key in a Secret.
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
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "me"},
            "spec": {"api": "shop", "methods": ["GET"], "path": "/me", "function": "hello",
                     "auth": {"type": "jwt", "jwt": {"issuer": "https://issuer.example",
                              "audiences": ["api://shop"], "jwksSecret": "issuer-keys"}}},
        }),
    )
    .await;
    let jwks =
        std::fs::read_to_string(kfaas_e2e::repo().join("src/gateway/policy/testdata/jwks.json"))
            .expect("testdata/jwks.json");
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "issuer-keys"},
            "stringData": {"jwks.json": jwks},
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
                     "quota": {"limit": 3, "period": "DAY"},
                     "apiKeys": [{"id": "alice", "secretRef": {"name": "alice-key"}}]},
        }),
    )
    .await;

    let (mut gateway, addr) = start_gateway(&ns, "gw-main");

    // No key, a wrong key: API Gateway's 403.
    let (status, _, body) = request(&addr, "/prod/hello", &[]).await.expect("request");
    assert_eq!((status, body.as_str()), (403, r#"{"message":"Forbidden"}"#));
    let (status, _, _) = request(&addr, "/prod/hello", &[("x-api-key", "wrong")])
        .await
        .expect("request");
    assert_eq!(status, 403);

    // The first keyed request is held while the gateway scales the Deployment from zero.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        deployment_replicas(&deployments, "hello")
            .await
            .expect("get"),
        0
    );
    let key = [("x-api-key", "alice-secret-value")];
    let (status, _, body) = request(&addr, "/prod/hello?name=e2e", &key)
        .await
        .expect("request");
    assert_eq!(
        status,
        200,
        "body: {body}\ngateway output:\n{}",
        gateway.output()
    );
    let answer: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(answer["message"], "hello, e2e");
    assert_eq!(answer["stage"], "prod");
    assert_eq!(
        deployment_replicas(&deployments, "hello")
            .await
            .expect("get"),
        1
    );

    // Quota of 3: two more pass, the fourth is refused.
    for _ in 0..2 {
        let (status, _, body) = request(&addr, "/prod/hello", &key).await.expect("request");
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = request(&addr, "/prod/hello", &key).await.expect("request");
    assert_eq!(
        (status, body.as_str()),
        (429, r#"{"message":"Limit Exceeded"}"#)
    );

    // The plan's status shows the key's use (the key id, never the key).
    let plans = kfaas_api(&client, &ns, "UsagePlan");
    wait_for(
        "UsagePlan basic status.usage",
        Duration::from_secs(20),
        || {
            let plans = plans.clone();
            async move {
                let plan = plans.get("basic").await?;
                let usage = plan
                    .data
                    .pointer("/status/usage/0")
                    .cloned()
                    .unwrap_or(Value::Null);
                Ok(usage["keyId"] == "alice"
                    && usage["limit"] == 3
                    && usage["remaining"] == 0
                    && usage["period"] == "DAY")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));
    let plan = plans.get("basic").await.expect("plan");
    assert!(
        !plan.data.to_string().contains("alice-secret-value"),
        "the key itself must never reach the status"
    );

    // JWT authorizer with its JWKS from a Secret: no token 401, a signed token passes.
    let (status, _, body) = request(&addr, "/prod/me", &[]).await.expect("request");
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"message":"Unauthorized"}"#)
    );
    let bearer = format!("Bearer {}", signed_token());
    let (status, _, body) = request(&addr, "/prod/me", &[("authorization", &bearer)])
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");

    // A Route the gateway cannot serve (no such function) is reported; the others keep serving.
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "ghost"},
            "spec": {"api": "shop", "methods": ["GET"], "path": "/ghost", "function": "nowhere"},
        }),
    )
    .await;
    wait_for(
        "the gateway to report Route ghost",
        Duration::from_secs(20),
        || {
            let out = gateway.output();
            async move { Ok(out.contains("nowhere")) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));
    let (status, _, body) = request(&addr, "/prod/me", &[("authorization", &bearer)])
        .await
        .expect("request");
    assert_eq!(status, 200, "after a bad Route: {body}");

    // Rotating the key in its Secret: the old value stops working, the new one is alice's (whose
    // quota is spent, so 429 rather than 403 proves the key was recognised).
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-key"},
            "stringData": {"apiKey": "alice-rotated-value"},
        }),
    )
    .await;
    wait_for(
        "the rotated key to be recognised",
        Duration::from_secs(20),
        || {
            let addr = addr.clone();
            async move {
                let (status, _, _) = request(
                    &addr,
                    "/prod/hello",
                    &[("x-api-key", "alice-rotated-value")],
                )
                .await?;
                Ok(status == 429)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));
    let (status, _, _) = request(&addr, "/prod/hello", &key).await.expect("request");
    assert_eq!(status, 403, "the old key value must stop working");

    // A function whose pods cannot start (an image the node cannot run) is a 502 as soon as the
    // pod reports why, not a wait for the integration timeout; the reason is in the access log.
    apply(&client, &ns, &json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "broken", "labels": {"kfaas.dev/function": "broken"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"kfaas.dev/function": "broken"}},
            "template": {
                "metadata": {"labels": {"kfaas.dev/function": "broken"}},
                "spec": {"containers": [{"name": "function", "image": "kfaas.dev/no-such-image",
                                         "ports": [{"name": "invoke", "containerPort": 8080}]}]},
            },
        },
    }))
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Function", "metadata": {"name": "broken"},
            "spec": {"image": "kfaas.dev/no-such-image", "timeoutSeconds": 30},
        }),
    )
    .await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "broken"},
            "spec": {"api": "shop", "methods": ["GET"], "path": "/broken", "function": "broken"},
        }),
    )
    .await;
    wait_for("Route broken to be served", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move { Ok(request(&addr, "/prod/nothing-here", &[]).await?.0 == 404) }
    })
    .await
    .expect("gateway answers");
    let mut answered = None;
    for _ in 0..40 {
        let started = std::time::Instant::now();
        let (status, _, body) = request(&addr, "/prod/broken", &[]).await.expect("request");
        if status != 404 {
            answered = Some((status, body, started.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body, took) = answered.expect("Route broken never served");
    assert_eq!(
        (status, body.as_str()),
        (502, r#"{"message":"Internal server error"}"#)
    );
    assert!(
        took < Duration::from_secs(20),
        "a function that cannot start must fail fast, not after its timeout: {took:?}"
    );
    // The access log is written off the request path: wait for its line.
    wait_for(
        "the access log to name the reason",
        Duration::from_secs(5),
        || {
            let out = gateway.output();
            async move { Ok(out.contains("cannot start an instance: pod broken-")) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));

    // Idle for longer than idleTimeoutSeconds: back to zero.
    wait_for(
        "Deployment hello scaled to zero",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            async move { Ok(deployment_replicas(&deployments, "hello").await? == 0) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gateway.output()));
    assert!(gateway.is_running(), "gateway died:\n{}", gateway.output());

    kfaas_e2e::delete_namespace(&client, &ns).await;
}

/// Two gateway replicas scale the same Deployment: one serving traffic, one idle. The idle one
/// must never scale away the instance the busy one uses (each records its wish on the
/// Deployment and the largest fresh wish wins); when the busy one goes idle too, zero.
#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn an_idle_gateway_replica_does_not_scale_away_what_another_serves() {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let ns = temp_namespace(&client, "e2e-gateways")
        .await
        .expect("namespace");
    hello_function(&client, &ns).await;
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
            "apiVersion": "kfaas.dev/v1alpha1", "kind": "Route", "metadata": {"name": "open"},
            "spec": {"api": "shop", "methods": ["GET"], "path": "/hello", "function": "hello"},
        }),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    let (busy, busy_addr) = start_gateway(&ns, "gw-busy");
    let (status, _, body) = request(&busy_addr, "/prod/hello", &[])
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}\n{}", busy.output());
    let annotations = deployments
        .get("hello")
        .await
        .expect("get")
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        annotations.contains_key("demand.kfaas.dev/gw-busy"),
        "the busy gateway records its wish: {annotations:?}"
    );

    // The second replica starts now, sees no traffic, and wants zero.
    let (mut idle, _) = start_gateway(&ns, "gw-idle");
    idle.wait_for_output("scaling", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Traffic through the busy one for twice the idle timeout: the instance stays.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let (status, _, body) = request(&busy_addr, "/prod/hello", &[])
            .await
            .expect("request");
        assert_eq!(status, 200, "{body}");
        let replicas = deployment_replicas(&deployments, "hello")
            .await
            .expect("get");
        assert!(
            replicas >= 1,
            "the idle gateway scaled away the busy one's instance\nidle:\n{}",
            idle.output()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Both idle: zero, and the busy one's wish is gone.
    wait_for("Deployment hello at zero", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move { Ok(deployment_replicas(&deployments, "hello").await? == 0) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", busy.output()));
    let annotations = deployments
        .get("hello")
        .await
        .expect("get")
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("demand.kfaas.dev/")),
        "no wish left at zero: {annotations:?}"
    );
    kfaas_e2e::delete_namespace(&client, &ns).await;
}
