//! A scenario-driven API server for reconciler tests: each expected request (method and path)
//! in order, with the response to give. Requests are recorded so a test can look at what was
//! sent (bodies, field managers); anything unexpected fails the test at [`MockApi::verify`].

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use serde_json::Value;

use super::{BuildConfig, Context};

/// One expected request and its answer (a null body echoes the request's).
pub struct Step {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub body: Value,
}

impl Step {
    pub fn new(method: &'static str, path: impl Into<String>, status: u16, body: Value) -> Self {
        Self {
            method,
            path: path.into(),
            status,
            body,
        }
    }
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    steps: VecDeque<Step>,
    seen: Vec<Seen>,
    unexpected: Vec<String>,
}

pub struct MockApi {
    state: Arc<Mutex<State>>,
    pub client: Client,
}

impl MockApi {
    /// Starts the mock on loopback and a client that talks to it.
    pub async fn start(steps: Vec<Step>) -> Self {
        let state = Arc::new(Mutex::new(State {
            steps: steps.into(),
            ..State::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock API server");
        let addr = listener.local_addr().expect("mock address");
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let uri: http::Uri = format!("http://{addr}").parse().expect("mock uri");
        let client = Client::try_from(kube::Config::new(uri)).expect("client");
        Self { state, client }
    }

    pub fn context(&self) -> Arc<Context> {
        Arc::new(Context {
            client: self.client.clone(),
            build: BuildConfig {
                runtime_image: "ghcr.io/kfaas/kfaas:test".into(),
            },
            gateway_service: None,
            recorder: Recorder::new(
                self.client.clone(),
                Reporter {
                    controller: "kfaas-controller".into(),
                    instance: None,
                },
            ),
        })
    }

    /// Every expected request came, nothing else did; returns what was received.
    pub fn verify(&self) -> Vec<Seen> {
        let state = self.state.lock().expect("mock state");
        let seen: Vec<String> = state
            .seen
            .iter()
            .map(|s| format!("{} {}?{}", s.method, s.path, s.query))
            .collect();
        assert!(
            state.unexpected.is_empty(),
            "unexpected requests: {:#?}\nall requests: {seen:#?}",
            state.unexpected,
        );
        let left: Vec<String> = state
            .steps
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert!(left.is_empty(), "requests never made: {left:#?}");
        state.seen.clone()
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut state = state.lock().expect("mock state");
    state.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query,
        body,
    });
    let step = match state.steps.front() {
        Some(s) if s.method == method && s.path == path => state.steps.pop_front(),
        _ => None,
    };
    let (status, body) = match step {
        // Null: answer with what was sent, as a create does.
        Some(step) if step.body.is_null() => (
            step.status,
            state
                .seen
                .last()
                .map(|s| s.body.clone())
                .unwrap_or_default(),
        ),
        Some(step) => (step.status, step.body),
        None => {
            state.unexpected.push(format!("{method} {path}"));
            (
                500,
                serde_json::json!({"kind": "Status", "code": 500, "message": "unexpected"}),
            )
        }
    };
    let response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default();
    Ok(response)
}

/// The API server's 404 for `kind`/`name`.
pub fn not_found(name: &str) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("{name} not found"), "reason": "NotFound", "code": 404,
    })
}
