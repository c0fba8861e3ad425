//! The process node of the local control plane (and any node, on kind): a Ready node, and a
//! Deployment whose pod becomes Running with a pod IP, is listed ready in an EndpointSlice and
//! answers HTTP on that IP.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kfaas_e2e::{MANAGER, client, delete_namespace, http_get, temp_namespace, wait_for};
use kube::api::{Api, ListParams, Patch, PatchParams};

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn a_node_is_ready() {
    let client = client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    let ready: Vec<_> = list
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert!(
        !ready.is_empty(),
        "no Ready node among {} nodes",
        list.items.len()
    );
}

/// The test image: on the local control plane the node maps `kfaas.dev/test-http` to
/// `python3 -m http.server --bind $(POD_IP) 8080` (e2e/nodeconfig.yaml); elsewhere
/// KFAAS_E2E_HTTP_IMAGE names an image serving HTTP on port 8080.
fn http_image() -> String {
    std::env::var("KFAAS_E2E_HTTP_IMAGE").unwrap_or_else(|_| "kfaas.dev/test-http".to_owned())
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn a_deployment_runs_is_listed_ready_and_answers_http() {
    let client = client().await;
    let ns = temp_namespace(&client, "e2e-deploy")
        .await
        .expect("namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(MANAGER).force();

    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "web",
                        "image": http_image(),
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "env": [
                            {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                    }],
                },
            },
        },
    });
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    });
    deployments
        .patch("web", &apply, &Patch::Apply(&deployment))
        .await
        .expect("apply Deployment");
    services
        .patch("web", &apply, &Patch::Apply(&service))
        .await
        .expect("apply Service");

    // The pod runs, is Ready and has an IP.
    let found = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_for(
        "a Running, Ready pod of Deployment web",
        Duration::from_secs(90),
        || {
            let pods = pods.clone();
            let found = found.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                for p in list.items {
                    let Some(status) = p.status else { continue };
                    let ready = status
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if status.phase.as_deref() == Some("Running")
                        && ready
                        && let Some(ip) = status.pod_ip
                    {
                        *found.lock().expect("lock") = ip;
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let pod_ip = found.lock().expect("lock").clone();
    let ip: std::net::IpAddr = pod_ip.parse().expect("pod IP is an IP address");
    assert!(!ip.is_loopback(), "pod IP {ip} is a loopback address");
    if std::env::var_os("KFAAS_E2E_PROCESS_NODE").is_some() {
        // The local control plane hands out pod IPs from 10.244.0.0/16.
        assert!(
            pod_ip.starts_with("10.244."),
            "pod IP {pod_ip} is not in 10.244.0.0/16"
        );
    }

    // The endpoint-slice controller lists the pod's IP as ready for the Service.
    wait_for(
        "an EndpointSlice of Service web listing the pod ready",
        Duration::from_secs(60),
        || {
            let slices = slices.clone();
            let pod_ip = pod_ip.clone();
            async move {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await?;
                Ok(list.items.iter().any(|s| {
                    s.endpoints.iter().flatten().any(|e| {
                        e.addresses.contains(&pod_ip)
                            && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                    })
                }))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // The pod answers HTTP on its IP, through the API server's pod proxy (which dials the pod
    // IP, on any cluster) ...
    let pod_name = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(pod_ip.as_str()))
        .and_then(|p| p.metadata.name)
        .expect("the ready pod");
    let proxy = format!("/api/v1/namespaces/{ns}/pods/{pod_name}:8080/proxy/");
    let req = http::Request::get(&proxy)
        .body(Vec::new())
        .expect("request");
    let body = client
        .request_text(req)
        .await
        .unwrap_or_else(|e| panic!("GET {proxy}: {e}"));
    assert!(!body.is_empty(), "GET {proxy} answered an empty body");
    // ... and directly, where this process shares the pod network (the local control plane's
    // network namespace; on kind the host has no route to pod IPs).
    if std::env::var_os("KFAAS_E2E_PROCESS_NODE").is_some() {
        let (status, body) = http_get(&format!("{pod_ip}:8080"), "/")
            .await
            .unwrap_or_else(|e| panic!("GET http://{pod_ip}:8080/: {e:#}"));
        assert_eq!(
            status, 200,
            "GET http://{pod_ip}:8080/ answered {status}: {body}"
        );
        assert!(
            !body.is_empty(),
            "GET http://{pod_ip}:8080/ answered an empty body"
        );
    }

    // Scaling to zero stops the process and removes the pod and its endpoint.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale to 0");
    wait_for(
        "the pods of Deployment web to be gone",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                Ok(pods
                    .list(&ListParams::default().labels("app=web"))
                    .await?
                    .items
                    .is_empty())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    if std::env::var_os("KFAAS_E2E_PROCESS_NODE").is_some() {
        assert!(
            http_get(&format!("{pod_ip}:8080"), "/").await.is_err(),
            "{pod_ip}:8080 still answers after the pod was deleted"
        );
    }
    delete_namespace(&client, &ns).await;
}

/// `kfaas runtime` over examples/hello as a Deployment: the pod becomes Ready (the runtime's
/// /readyz), an EndpointSlice lists it, and a Lambda invocation on the pod IP runs the Node.js
/// handler. The code comes from a hostPath volume, so this runs on the process node only (on
/// kind the image would have to carry the example).
#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn kfaas_runtime_serves_the_hello_example_from_a_pod() {
    if std::env::var_os("KFAAS_E2E_PROCESS_NODE").is_none() {
        eprintln!("skipped: needs the process node of e2e/run.sh (hostPath code)");
        return;
    }
    let client = client().await;
    let ns = temp_namespace(&client, "e2e-runtime")
        .await
        .expect("namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let code = kfaas_e2e::repo().join("examples/hello/src");
    let image =
        std::env::var("KFAAS_E2E_IMAGE").unwrap_or_else(|_| "ghcr.io/kfaas/kfaas:dev".to_owned());
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "volumes": [{"name": "code", "hostPath": {"path": code, "type": "Directory"}}],
                    "containers": [{
                        "name": "runtime",
                        "image": image,
                        "args": ["runtime", "--listen", "$(POD_IP):8080", "--runtime", "nodejs",
                                 "--code", "/var/task", "--handler", "index.handler",
                                 "--function-name", "hello", "--timeout-seconds", "10"],
                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "ports": [{"name": "invoke", "containerPort": 8080}],
                        "volumeMounts": [{"name": "code", "mountPath": "/var/task", "readOnly": true}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "invoke"}, "periodSeconds": 1},
                    }],
                },
            },
        },
    });
    deployments
        .patch(
            "hello",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&deployment),
        )
        .await
        .expect("apply Deployment");
    let found = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_for(
        "a Ready pod of Deployment hello",
        Duration::from_secs(90),
        || {
            let pods = pods.clone();
            let found = found.clone();
            async move {
                for p in pods
                    .list(&ListParams::default().labels("app=hello"))
                    .await?
                    .items
                {
                    let Some(status) = p.status else { continue };
                    let ready = status
                        .conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if ready && let Some(ip) = status.pod_ip {
                        *found.lock().expect("lock") = ip;
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let pod_ip = found.lock().expect("lock").clone();
    assert!(
        pod_ip.starts_with("10.244."),
        "pod IP {pod_ip} is not in 10.244.0.0/16"
    );
    let event = serde_json::json!({
        "version": "2.0", "rawPath": "/hello", "queryStringParameters": {"name": "e2e"},
        "requestContext": {"stage": "dev", "http": {"method": "GET", "path": "/hello"}},
    });
    let (status, body) = kfaas_e2e::http_request(
        "POST",
        &format!("{pod_ip}:8080"),
        "/2015-03-31/functions/function/invocations",
        Some(&event),
    )
    .await
    .unwrap_or_else(|e| panic!("invoke on {pod_ip}:8080: {e:#}"));
    assert_eq!(status, 200, "invoke answered {status}: {body}");
    let result: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("invoke result is not JSON ({e}): {body}"));
    let inner = result["body"].as_str().unwrap_or_default();
    assert!(
        inner.contains("hello, e2e"),
        "the handler's answer lacks \"hello, e2e\": {body}"
    );
    delete_namespace(&client, &ns).await;
}

/// Services work for pods: a client pod resolves a Service by its short name through the
/// cluster DNS and gets an answer through the Service's cluster IP, and exits 0 (phase
/// Succeeded). On the process node the suite also connects to the cluster IP itself.
#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn a_pod_reaches_a_service_by_dns_name() {
    let client = client().await;
    let ns = temp_namespace(&client, "e2e-svc").await.expect("namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(MANAGER).force();
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "backend"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "backend"}},
            "template": {
                "metadata": {"labels": {"app": "backend"}},
                "spec": {"containers": [{
                    "name": "web", "image": http_image(),
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    });
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    });
    deployments
        .patch("backend", &apply, &Patch::Apply(&deployment))
        .await
        .expect("apply Deployment");
    let svc = services
        .patch("backend", &apply, &Patch::Apply(&service))
        .await
        .expect("apply Service");
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the Service has a cluster IP");
    wait_for(
        "Deployment backend to have 2 ready replicas",
        Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("backend").await?;
                Ok(d.status.and_then(|s| s.ready_replicas) == Some(2))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    if std::env::var_os("KFAAS_E2E_PROCESS_NODE").is_some() {
        let addr = format!("{cluster_ip}:80");
        wait_for(
            &format!("{addr} to answer"),
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move { Ok(http_get(&addr, "/").await.is_ok_and(|(s, _)| s == 200)) }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    let script = "import socket, urllib.request\n\
                  ip = socket.gethostbyname('backend')\n\
                  body = urllib.request.urlopen('http://backend/', timeout=10).read()\n\
                  assert body, 'empty body'\n\
                  print('backend resolved to', ip, 'and answered', len(body), 'bytes')\n";
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "client", "image": http_image(),
                "command": ["python3", "-c", script],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        },
    });
    pods.patch("client", &apply, &Patch::Apply(&pod))
        .await
        .expect("apply client Pod");
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_for("Pod client to finish", Duration::from_secs(60), || {
        let pods = pods.clone();
        let outcome = outcome.clone();
        async move {
            let p = pods.get("client").await?;
            let status = p.status.unwrap_or_default();
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
        "the client pod could not reach Service backend by name: {outcome}"
    );
    // Its output reads back through the API server (`kubectl logs`).
    let logs = pods
        .logs("client", &Default::default())
        .await
        .expect("logs of Pod client");
    assert!(
        logs.contains("backend resolved to"),
        "the client pod's log lacks its output: {logs:?}"
    );
    assert!(
        cluster_ip.parse::<std::net::IpAddr>().is_ok(),
        "cluster IP {cluster_ip:?}"
    );
    delete_namespace(&client, &ns).await;
}
