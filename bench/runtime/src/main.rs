//! Measures `kfaas runtime`:
//!
//! 1. supervisor overhead: invoke round trips through the runtime in sidecar mode, with this
//!    program as a null handler (it answers each event at once), so the time measured is the
//!    invoke endpoint, the queue, the Runtime API exchange and the result, with no handler work;
//! 2. the same with the Node.js `examples/hello` handler, for reference;
//! 3. start to ready: `kfaas runtime` for `examples/hello` from spawn to `KFAAS_READY`, beside
//!    `node -e 0`, and spawn to first response.
//!
//! Usage: cargo run --release --manifest-path bench/runtime/Cargo.toml -- [path/to/kfaas] [N]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = SendRequest<Full<Bytes>>;

const INVOKE: &str = "/2015-03-31/functions/function/invocations";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn connect(addr: &str) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn call(
    sender: &mut Sender,
    method: &str,
    path: &str,
    body: &'static [u8],
) -> (hyper::http::HeaderMap, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let (parts, body) = resp.into_parts();
    (
        parts.headers,
        body.collect().await.expect("body").to_bytes(),
    )
}

/// Spawns `kfaas runtime ARGS`, returns the child, its invoke address and the time to the
/// `KFAAS_READY` line (None when `wait_ready` is false).
fn spawn_runtime(
    kfaas: &Path,
    args: &[&str],
    wait_ready: bool,
) -> (Child, String, Option<Duration>) {
    let start = Instant::now();
    let mut child = Command::new(kfaas)
        .arg("runtime")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kfaas runtime");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut addr = String::new();
    let mut ready = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(a) = line.strip_prefix("KFAAS_LISTENING ") {
            addr = a.to_owned();
            if !wait_ready {
                break;
            }
        } else if line == "KFAAS_READY" {
            ready = Some(start.elapsed());
            break;
        }
    }
    // Keep draining output so the runtime never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, ready)
}

/// The request id of the next event, or an error once the runtime is gone.
async fn next_id(rapi: &mut Sender) -> Result<String, hyper::Error> {
    let req = Request::get("/2018-06-01/runtime/invocation/next")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = rapi.send_request(req).await?;
    let id = resp.headers()["lambda-runtime-aws-request-id"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    resp.into_body().collect().await?;
    Ok(id)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn summary(name: &str, samples: &mut [Duration]) {
    println!(
        "{name}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms",
        samples.len(),
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.9).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3,
    );
}

async fn null_handler_overhead(kfaas: &Path, n: usize) {
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    let api = api.to_string();
    let (mut child, addr, _) =
        spawn_runtime(kfaas, &["--external", "--runtime-api-listen", &api], false);
    let handler_api = api.clone();
    tokio::spawn(async move {
        let mut rapi = loop {
            if let Ok(s) = TcpStream::connect(&handler_api).await {
                drop(s);
                break connect(&handler_api).await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        // Ends when the runtime is killed at the end of the run.
        while let Ok(headers) = next_id(&mut rapi).await {
            let id = headers;
            let path = format!("/2018-06-01/runtime/invocation/{id}/response");
            let req = Request::post(path)
                .header("host", "localhost")
                .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                .expect("request");
            let Ok(resp) = rapi.send_request(req).await else {
                return;
            };
            let _ = resp.into_body().collect().await;
        }
    });
    let mut client = connect(&addr).await;
    for _ in 0..200 {
        call(&mut client, "POST", INVOKE, b"{}").await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (_, body) = call(&mut client, "POST", INVOKE, b"{}").await;
        samples.push(t.elapsed());
        assert_eq!(body.as_ref(), b"{\"ok\":true}");
    }
    summary(
        "supervisor overhead, null handler (invoke round trip)",
        &mut samples,
    );
    let _ = child.kill();
    let _ = child.wait();
}

async fn node_hello(kfaas: &Path, n: usize) {
    let code = repo().join("examples/hello/src");
    let code = code.to_str().expect("path");
    let (mut child, addr, _) = spawn_runtime(
        kfaas,
        &[
            "--runtime",
            "nodejs",
            "--code",
            code,
            "--handler",
            "index.handler",
        ],
        true,
    );
    let mut client = connect(&addr).await;
    for _ in 0..200 {
        call(&mut client, "POST", INVOKE, b"{}").await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call(&mut client, "POST", INVOKE, b"{}").await;
        samples.push(t.elapsed());
    }
    summary("examples/hello (Node.js) invoke round trip", &mut samples);
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `node -e 0` and a runtime start alternately, so both see the same machine load.
async fn start_to_ready(kfaas: &Path, n: usize) {
    let code = repo().join("examples/hello/src");
    let code = code.to_str().expect("path");
    let (mut node, mut ready, mut first, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let status = Command::new("node")
            .args(["-e", "0"])
            .status()
            .expect("node");
        assert!(status.success());
        let node_time = t.elapsed();
        node.push(node_time);
        let t = Instant::now();
        let (mut child, addr, r) = spawn_runtime(
            kfaas,
            &[
                "--runtime",
                "nodejs",
                "--code",
                code,
                "--handler",
                "index.handler",
            ],
            true,
        );
        let r = r.expect("ready");
        ready.push(r);
        ratio.push(r.as_secs_f64() / node_time.as_secs_f64());
        let mut client = connect(&addr).await;
        call(&mut client, "POST", INVOKE, b"{}").await;
        first.push(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    summary("node -e 0", &mut node);
    summary(
        "kfaas runtime examples/hello: spawn to KFAAS_READY",
        &mut ready,
    );
    summary(
        "kfaas runtime examples/hello: spawn to first response",
        &mut first,
    );
    ratio.sort_by(f64::total_cmp);
    println!(
        "ready / node -e 0, paired runs: p50={:.2}x",
        ratio[ratio.len() / 2]
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let kfaas = args
        .next()
        .map_or_else(|| repo().join("target/release/kfaas"), PathBuf::from);
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(2000);
    println!("kfaas binary: {}", kfaas.display());
    null_handler_overhead(&kfaas, n).await;
    node_hello(&kfaas, n).await;
    start_to_ready(&kfaas, 30).await;
}
