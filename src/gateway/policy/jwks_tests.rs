use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use super::*;
use crate::gateway::policy::clock::ManualClock;

pub(crate) const JWKS: &[u8] = include_bytes!("testdata/jwks.json");

/// Serves queued answers and counts fetches.
#[derive(Default)]
pub(crate) struct FakeFetcher {
    pub answers: Mutex<Vec<Result<Bytes, JwksError>>>,
    pub fetches: AtomicUsize,
}

impl FakeFetcher {
    pub fn with(answers: Vec<Result<Bytes, JwksError>>) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers),
            fetches: AtomicUsize::new(0),
        })
    }
    pub fn count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> FetchFuture<'a> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let answer = if answers.is_empty() {
            Err(JwksError::Fetch {
                url: url.to_owned(),
                reason: "nothing queued".into(),
            })
        } else {
            answers.remove(0)
        };
        Box::pin(async move { answer })
    }
}

fn kids(keys: &[VerifyKey]) -> Vec<Option<&str>> {
    keys.iter().map(|k| k.kid.as_deref()).collect()
}

#[test]
fn keys_are_pinned_by_type_curve_and_alg() {
    let keys = parse_jwks(JWKS).expect("parses");
    assert_eq!(kids(&keys), [Some("rsa-1"), Some("ec-1")]);
    // The RSA key declares alg RS256: PS256 or RS512 with it are refused.
    assert_eq!(keys[0].algorithms, [Algorithm::RS256]);
    assert_eq!(keys[1].algorithms, [Algorithm::ES256]);

    let mut doc: serde_json::Value = serde_json::from_slice(JWKS).expect("json");
    let rsa = doc["keys"][0].clone();
    let mut no_alg = rsa.clone();
    no_alg.as_object_mut().map(|o| o.remove("alg"));
    no_alg["kid"] = "rsa-any".into();
    let mut enc = rsa.clone();
    enc["use"] = "enc".into();
    enc["kid"] = "rsa-enc".into();
    let mut mismatched = rsa.clone();
    mismatched["alg"] = "ES256".into();
    mismatched["kid"] = "rsa-es".into();
    let extra = [
        no_alg,
        enc,
        mismatched,
        serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        serde_json::json!({"kty": "RSA", "kid": "broken"}),
        serde_json::json!({"kty": "weird", "kid": "weird"}),
    ];
    if let Some(list) = doc["keys"].as_array_mut() {
        list.extend(extra);
    }
    let keys = parse_jwks(doc.to_string().as_bytes()).expect("parses");
    assert_eq!(kids(&keys), [Some("rsa-1"), Some("ec-1"), Some("rsa-any")]);
    assert_eq!(keys[2].algorithms.len(), 6);
    assert!(!keys[2].algorithms.contains(&Algorithm::HS256));

    assert!(matches!(
        parse_jwks(b"{\"nokeys\":1}"),
        Err(JwksError::Document(_))
    ));
}

fn url() -> JwksSource {
    JwksSource::Url("http://issuer.example/jwks".into())
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let clock = ManualClock::at_epoch();
    let fetcher = FakeFetcher::with(vec![
        Ok(Bytes::from_static(b"{\"keys\":[]}")),
        Ok(Bytes::from_static(JWKS)),
    ]);
    let cache = JwksCache::new(fetcher.clone(), clock.clone());
    // First use fetches: the set is empty, so rsa-1 is unknown.
    assert!(
        cache
            .key(&url(), Some("rsa-1"))
            .await
            .expect("ok")
            .is_none()
    );
    assert_eq!(fetcher.count(), 1);
    // Within the interval an unknown kid does not refetch.
    assert!(
        cache
            .key(&url(), Some("rsa-1"))
            .await
            .expect("ok")
            .is_none()
    );
    assert_eq!(fetcher.count(), 1);
    clock.advance(Duration::from_secs(30));
    let key = cache.key(&url(), Some("rsa-1")).await.expect("ok");
    assert_eq!(key.and_then(|k| k.kid).as_deref(), Some("rsa-1"));
    assert_eq!(fetcher.count(), 2);
    // Known keys are served from the cache.
    assert!(cache.key(&url(), Some("ec-1")).await.expect("ok").is_some());
    assert_eq!(fetcher.count(), 2);
}

#[tokio::test]
async fn stale_sets_are_refetched_and_kept_when_the_refetch_fails() {
    let clock = ManualClock::at_epoch();
    let fetcher = FakeFetcher::with(vec![Ok(Bytes::from_static(JWKS))]);
    let cache = JwksCache::new(fetcher.clone(), clock.clone());
    assert!(
        cache
            .key(&url(), Some("rsa-1"))
            .await
            .expect("ok")
            .is_some()
    );
    clock.advance(Duration::from_secs(2 * 3600));
    // Stale: refetched; the fetch fails; the cached key still serves.
    assert!(
        cache
            .key(&url(), Some("rsa-1"))
            .await
            .expect("ok")
            .is_some()
    );
    assert_eq!(fetcher.count(), 2);

    // With nothing cached a failed fetch is an error.
    let failing = FakeFetcher::with(Vec::new());
    let cache = JwksCache::new(failing, clock);
    assert!(matches!(
        cache.key(&url(), Some("rsa-1")).await,
        Err(JwksError::Fetch { .. })
    ));
}

#[tokio::test]
async fn secret_sets_never_fetch() {
    let clock = ManualClock::at_epoch();
    let fetcher = FakeFetcher::with(Vec::new());
    let cache = JwksCache::new(fetcher.clone(), clock);
    let source = JwksSource::Secret("ns/jwks".into());
    assert!(matches!(
        cache.key(&source, Some("rsa-1")).await,
        Err(JwksError::UnknownSource(_))
    ));
    let secret = k8s_openapi::api::core::v1::Secret {
        data: Some(
            [(
                "jwks.json".to_string(),
                k8s_openapi::ByteString(JWKS.to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let document = secret_document(&secret).expect("jwks.json");
    assert_eq!(cache.set_document("ns/jwks", document), Ok(2));
    assert!(secret_document(&Default::default()).is_none());
    assert!(
        cache
            .key(&source, Some("ec-1"))
            .await
            .expect("ok")
            .is_some()
    );
    assert!(
        cache
            .key(&source, Some("nope"))
            .await
            .expect("ok")
            .is_none()
    );
    // Without kid, a set of two keys is ambiguous.
    assert!(cache.key(&source, None).await.expect("ok").is_none());
    assert_eq!(fetcher.count(), 0);
}

#[tokio::test]
async fn the_http_fetcher_reads_a_document_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        for status in ["200 OK", "404 Not Found"] {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
                JWKS.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.write_all(JWKS).await;
        }
    });
    let fetcher = HttpJwksFetcher::new(Duration::from_secs(5));
    let url = format!("http://{addr}/jwks.json");
    let body = fetcher.fetch(&url).await.expect("fetched");
    assert_eq!(parse_jwks(&body).map(|k| k.len()), Ok(2));
    let err = fetcher.fetch(&url).await.expect_err("404");
    assert!(err.to_string().contains("404"), "{err}");
    let err = fetcher.fetch("ftp://x/jwks").await.expect_err("scheme");
    assert!(err.to_string().contains("http"), "{err}");
}
