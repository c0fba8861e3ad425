//! API Gateway's policies over real HTTP with real function processes, through `kfaas local`:
//! API keys and quotas, stage throttle, JWT and Lambda authorizers, CORS, IP rules, the response
//! cache and the canary split.

mod common;

use std::sync::OnceLock;

use common::{LocalServer, repo};
use serde_json::{Value, json};

/// One server for the whole file: the policies' state is what the tests look at, and each test
/// uses its own routes.
fn server() -> &'static LocalServer {
    static SERVER: OnceLock<LocalServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        LocalServer::start(
            &repo().join("tests/fixtures/policies"),
            &["--no-access-log"],
        )
    })
}

async fn answer(response: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, headers)
}

fn message(text: &str) -> Value {
    json!({ "message": text })
}

#[tokio::test]
async fn api_key_is_required_and_the_quota_counts_per_key() {
    let s = server();
    let client = reqwest::Client::new();
    let url = s.url("/p/keyed");
    let (status, body, _) = answer(client.post(&url).send().await.expect("request")).await;
    assert_eq!((status, body), (403, message("Forbidden")), "no key");
    let (status, body, _) = answer(
        client
            .post(&url)
            .header("x-api-key", "wrong")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, body), (403, message("Forbidden")), "wrong key");

    for i in 0..3 {
        let (status, body, _) = answer(
            client
                .post(&url)
                .header("x-api-key", "key-one-value")
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, 200, "request {i} within the quota");
        // The key's id, never the key, reaches the function.
        assert_eq!(
            body["requestContext"]["identity"]["apiKeyId"], "key-one-id",
            "{body}"
        );
        assert!(
            !body.to_string().contains("key-one-value"),
            "the key value leaked into the event"
        );
    }
    let (status, body, _) = answer(
        client
            .post(&url)
            .header("x-api-key", "key-one-value")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        (status, body),
        (429, message("Limit Exceeded")),
        "the daily quota of 3 is used up"
    );

    let usage = reqwest::get(format!("http://{}/usage", s.admin))
        .await
        .expect("usage")
        .text()
        .await
        .expect("body");
    assert!(
        usage.contains("key-one-id") && usage.contains("\"used\":3"),
        "{usage}"
    );
    assert!(!usage.contains("key-one-value"), "{usage}");
}

#[tokio::test]
async fn stage_throttle_answers_429_past_the_burst() {
    let s = server();
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, body, _) =
            answer(client.get(s.url("/t/x")).send().await.expect("request")).await;
        if status == 429 {
            assert_eq!(body, message("Too Many Requests"));
        }
        statuses.push(status);
    }
    assert_eq!(
        &statuses[..2],
        &[200, 200],
        "the burst of 2 passes: {statuses:?}"
    );
    assert!(
        statuses[2..].contains(&429),
        "past the burst at 0.5 req/s: {statuses:?}"
    );
}

fn token(claims: Value, kid: &str, alg: jsonwebtoken::Algorithm) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(include_bytes!(
            "../src/gateway/policy/testdata/rsa_public.pem"
        )),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
            "../src/gateway/policy/testdata/rsa_private.pem"
        ))
        .expect("test key"),
    };
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

#[tokio::test]
async fn jwt_authorizer_checks_signature_issuer_audience_expiry_and_scope() {
    let s = server();
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let good = json!({"iss": "https://issuer.example", "aud": "api://shop", "sub": "u1", "exp": now + 600, "scope": "orders:read"});
    let rs = jsonwebtoken::Algorithm::RS256;
    let get = |bearer: Option<String>| {
        let mut request = client.get(s.url("/p/jwt"));
        if let Some(b) = bearer {
            request = request.header("authorization", format!("Bearer {b}"));
        }
        request.send()
    };

    let (status, body, _) = answer(
        get(Some(token(good.clone(), "rsa-1", rs)))
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "u1",
        "claims reach the event"
    );

    let (status, body, headers) = answer(get(None).await.expect("request")).await;
    assert_eq!((status, body), (401, message("Unauthorized")), "no token");
    assert!(headers.contains_key("www-authenticate"));

    let mut cases = vec![
        ("expired", json!({"exp": now - 3600}), "rsa-1", rs),
        ("wrong audience", json!({"aud": "api://other"}), "rsa-1", rs),
        (
            "wrong issuer",
            json!({"iss": "https://evil.example"}),
            "rsa-1",
            rs,
        ),
        ("unknown kid", json!({}), "no-such-kid", rs),
        (
            "HS256 signed with the RSA public key",
            json!({}),
            "rsa-1",
            jsonwebtoken::Algorithm::HS256,
        ),
    ];
    for (what, change, kid, alg) in cases.drain(..) {
        let mut claims = good.clone();
        for (k, v) in change.as_object().expect("object") {
            claims[k] = v.clone();
        }
        let (status, body, _) =
            answer(get(Some(token(claims, kid, alg))).await.expect("request")).await;
        assert_eq!((status, body), (401, message("Unauthorized")), "{what}");
    }
    // alg: none, unsigned.
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "rsa-1"})),
        b64(good.clone())
    );
    let (status, _, _) = answer(get(Some(none)).await.expect("request")).await;
    assert_eq!(status, 401, "alg none");

    let mut no_scope = good.clone();
    no_scope["scope"] = json!("profile");
    let (status, body, _) = answer(
        get(Some(token(no_scope, "rsa-1", rs)))
            .await
            .expect("request"),
    )
    .await;
    assert_eq!((status, body), (403, message("Forbidden")), "missing scope");
}

#[tokio::test]
async fn lambda_authorizer_decides_caches_per_identity_and_passes_context() {
    let s = server();
    let client = reqwest::Client::new();
    let get = |auth: Option<&str>| {
        let mut request = client.get(s.url("/p/authz"));
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        request.send()
    };
    let (status, body, _) = answer(get(None).await.expect("request")).await;
    assert_eq!(
        (status, body),
        (401, message("Unauthorized")),
        "no identity: 401 without calling"
    );

    let (status, body, _) = answer(get(Some("let-me-in")).await.expect("request")).await;
    assert_eq!(status, 200, "{body}");
    let context = &body["requestContext"]["authorizer"]["lambda"];
    assert_eq!(context["user"], "alice");
    let first_decision = context["decisions"].clone();

    let (_, body, _) = answer(get(Some("let-me-in")).await.expect("request")).await;
    assert_eq!(
        body["requestContext"]["authorizer"]["lambda"]["decisions"], first_decision,
        "cached decision"
    );

    // Another identity never gets alice's cached answer.
    let (status, body, _) = answer(get(Some("also-me")).await.expect("request")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["requestContext"]["authorizer"]["lambda"]["user"],
        "bob"
    );

    let (status, body, _) = answer(get(Some("nope")).await.expect("request")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["message"],
        "User is not authorized to access this resource"
    );
}

#[tokio::test]
async fn cors_preflight_and_headers_on_every_answer() {
    let s = server();
    let client = reqwest::Client::new();
    let response = client
        .request(reqwest::Method::OPTIONS, s.url("/p/cors"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-custom")
        .send()
        .await
        .expect("preflight");
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        response.headers()["access-control-allow-methods"]
            .to_str()
            .expect("ascii")
            .contains("GET")
    );
    assert_eq!(response.headers()["access-control-max-age"], "600");

    let response = client
        .get(s.url("/p/cors"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    let response = client
        .get(s.url("/p/cors-error"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example",
        "the gateway's own errors carry CORS headers too"
    );

    let response = client
        .get(s.url("/p/cors"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn ip_rules_deny_the_caller() {
    let s = server();
    let (status, body, _) = answer(reqwest::get(s.url("/i/x")).await.expect("request")).await;
    assert_eq!((status, body), (403, message("Forbidden")));
}

#[tokio::test]
async fn responses_are_cached_per_key_parameter() {
    let s = server();
    let client = reqwest::Client::new();
    let (_, first, headers) = answer(
        client
            .get(s.url("/p/cached/1"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(headers["x-kfaas-cache"], "MISS");
    let (_, again, headers) = answer(
        client
            .get(s.url("/p/cached/1"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(headers["x-kfaas-cache"], "HIT");
    assert_eq!(again, first, "a hit does not call the function");
    let (_, other, headers) = answer(
        client
            .get(s.url("/p/cached/2"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(headers["x-kfaas-cache"], "MISS");
    assert_ne!(other["calls"], first["calls"]);
    let (_, fresh, _) = answer(
        client
            .get(s.url("/p/cached/1"))
            .header("cache-control", "max-age=0")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_ne!(
        fresh["calls"], first["calls"],
        "max-age=0 is honoured when allowed"
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("kfaas_gateway_cache_requests_total{result=\"hit\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_takes_its_weight_within_two_percent() {
    let s = server();
    let client = reqwest::Client::new();
    let url = s.url("/c/split");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (mut canary, mut total) = (0u32, 0u32);
            for _ in 0..625 {
                let response = client.get(&url).send().await.expect("request");
                let variant = response.headers()["x-kfaas-stage-variant"]
                    .to_str()
                    .expect("ascii")
                    .to_owned();
                let body: Value = response.json().await.expect("json");
                assert_eq!(body["variant"], if variant == "canary" { "b" } else { "a" });
                canary += u32::from(variant == "canary");
                total += 1;
            }
            (canary, total)
        }));
    }
    let (mut canary, mut total) = (0, 0);
    for t in tasks {
        let (c, n) = t.await.expect("task");
        canary += c;
        total += n;
    }
    assert_eq!(total, 10_000);
    let share = f64::from(canary) / f64::from(total) * 100.0;
    assert!(
        (share - 30.0).abs() <= 2.0,
        "canary share {share:.2}% for weight 30"
    );
}
