//! Accepting connections: the public listener (HTTP/1.1 and h2c, `super::h1_server`) and the admin listener
//! (`/metrics`, `/healthz`, `/readyz`).

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{handler::Gateway, invoke::full};

/// Serves the gateway on `listener` until `shutdown` is cancelled, on `threads` threads of its
/// own. Each thread runs a single-threaded runtime that accepts from the same listening socket
/// and keeps every connection it accepted, as nginx's workers do: a request, its upstream
/// exchange (see the per-thread pools in `super::invoke`) and its timers never cross threads, and
/// no work-stealing scheduler sits between them (docs/benchmarks.md, "Serving threads"). Returns
/// when every thread has drained its connections.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: CancellationToken,
    threads: usize,
    serving: ServingThreads,
) {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listener to the serving threads");
            return;
        }
    };
    let mut finished = Vec::new();
    for n in 0..threads.max(1) {
        let started = listener.try_clone().and_then(|listener| {
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            let gateway = Arc::clone(&gateway);
            let serving = serving.clone();
            // A token of the thread's own: every waiting connection registers with its token,
            // under that token's lock, which threads sharing one token would contend for.
            let shutdown = shutdown.child_token();
            std::thread::Builder::new()
                .name(format!("kfaas-serve-{n}"))
                .spawn(move || {
                    // Sends wait for the thread's tasks that are ready to have run, and go out
                    // together before it waits for events (`super::outbox`).
                    super::outbox::flush_before_park_here();
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .on_thread_park(super::outbox::flush_queued)
                        .enable_all()
                        .build()?;
                    let host = GuestHost {
                        handle: runtime.handle().clone(),
                        tracker: tokio_util::task::TaskTracker::new(),
                        stopping: CancellationToken::new(),
                    };
                    serving.started(n, host.clone());
                    let guests_of = serving.clone();
                    let served = runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        let _ticker = AbortOnDrop(tokio::spawn(keep_timer_armed()));
                        let _flusher = AbortOnDrop(tokio::spawn(super::outbox::flusher()));
                        accept_loop(gateway, listener, shutdown).await;
                        stop_guests(&guests_of, &host).await;
                        Ok::<_, std::io::Error>(())
                    });
                    serving.ended(n);
                    served?;
                    drop(done);
                    Ok::<_, std::io::Error>(())
                })?;
            Ok(finished_rx)
        });
        match started {
            Ok(finished_rx) => finished.push(finished_rx),
            Err(e) => tracing::error!(error = %e, thread = n, "cannot start a serving thread"),
        }
    }
    if finished.is_empty() {
        // No thread could start: serve here rather than not at all.
        if let Ok(listener) = TcpListener::from_std(listener) {
            accept_loop(gateway, listener, shutdown).await;
        }
        return;
    }
    for finished_rx in finished {
        // An error means the thread ended (or failed) without sending; either way it is done.
        let _ = finished_rx.await;
    }
}

/// The runtimes of the serving threads while they run, for work that is best done on a thread
/// that serves requests: `kfaas local` runs its function runtimes there, as guests. When every
/// thread has stopped serving (their connections drained: a guest may serve any thread's
/// requests), each stops its guests and waits for them before it exits, so they stop gracefully
/// rather than being dropped with its runtime.
#[derive(Clone)]
pub struct ServingThreads {
    hosts: Arc<std::sync::Mutex<Vec<Option<GuestHost>>>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    started: Arc<std::sync::atomic::AtomicUsize>,
    drained: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for ServingThreads {
    fn default() -> Self {
        Self {
            hosts: Arc::default(),
            next: Arc::default(),
            started: Arc::default(),
            drained: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

/// Where a guest runs: a serving thread's runtime, with what tells its guests to stop.
#[derive(Clone, Debug)]
pub struct GuestHost {
    pub handle: tokio::runtime::Handle,
    /// The thread waits for these tasks before it exits.
    pub tracker: tokio_util::task::TaskTracker,
    /// Cancelled when the thread stops serving: its guests stop.
    pub stopping: CancellationToken,
}

impl ServingThreads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<GuestHost>>> {
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn started(&self, n: usize, host: GuestHost) {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut hosts = self.lock();
        if hosts.len() <= n {
            hosts.resize(n + 1, None);
        }
        hosts[n] = Some(host);
    }

    fn ended(&self, n: usize) {
        if let Some(slot) = self.lock().get_mut(n) {
            *slot = None;
        }
    }

    /// A serving thread that still serves, each in turn; `None` when none does.
    pub fn pick(&self) -> Option<GuestHost> {
        let hosts = self.lock();
        let live: Vec<&GuestHost> = hosts
            .iter()
            .flatten()
            .filter(|h| !h.stopping.is_cancelled())
            .collect();
        if live.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(live[turn % live.len()].clone())
    }
}

/// Once every serving thread has stopped serving, stops this one's guests and waits for them.
async fn stop_guests(serving: &ServingThreads, host: &GuestHost) {
    serving.drained.send_modify(|n| *n += 1);
    let mut drained = serving.drained.subscribe();
    let _ = drained
        .wait_for(|n| *n >= serving.started.load(std::sync::atomic::Ordering::SeqCst))
        .await;
    host.stopping.cancel();
    host.tracker.close();
    host.tracker.wait().await;
}

/// Keeps a timer due within a second on this thread's runtime. Every request arms a deadline
/// (its integration timeout); when no earlier timer is pending, arming one makes tokio wake its
/// own driver through an eventfd write, a system call on about one request in four (measured
/// with strace). With this timer pending, request deadlines are never the earliest.
async fn keep_timer_armed() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts connections and serves them on this runtime until `shutdown`, then waits for them to
/// finish gracefully (in-flight requests are answered, idle keep-alive connections close).
async fn accept_loop(gateway: Arc<Gateway>, listener: TcpListener, shutdown: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Tokio retries when another serving thread took the connection first; what
                    // comes here is a real failure (out of file descriptors, say).
                    tracing::warn!(error = %e, "accept failed");
                    // Do not spin on it; connections already open go on being served.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = Arc::clone(&gateway);
        let shutdown = shutdown.clone();
        connections.spawn(super::h1_server::serve_connection(
            gateway, stream, peer, shutdown,
        ));
    }
    connections.close();
    connections.wait().await;
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `/usage` (API key usage) on `listener`.
pub async fn serve_admin(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            () = shutdown.cancelled() => return,
        };
        let gateway = Arc::clone(&gateway);
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let gateway = Arc::clone(&gateway);
                let ready = Arc::clone(&ready);
                async move { Ok::<_, Infallible>(admin(&gateway, &ready, request.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin(
    gateway: &Gateway,
    ready: &std::sync::atomic::AtomicBool,
    path: &str,
) -> Response<super::invoke::Body> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(full(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    };
    match path {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            gateway.metrics.encode(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        // Current usage of every API key: requests used and left in the quota period.
        "/usage" => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&gateway.policies.limiter.usage())
                .unwrap_or_else(|_| "[]".into()),
        ),
        "/readyz" if ready.load(std::sync::atomic::Ordering::Relaxed) => {
            text(StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// The address a listener got (for `:0` binds).
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// How long a stopping gateway waits for its connections: requests in flight are answered
/// (idle keep-alive connections close at once). Under Kubernetes' default grace period of 30 s
/// between SIGTERM and SIGKILL.
pub const DRAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(25);

/// Runs `serve` (started with `shutdown`) until it ends or a stop signal comes. At the signal,
/// prints `{name}: stopping (...)`, cancels `shutdown` and waits up to `DRAIN_WITHIN` for the
/// requests in flight to be answered, so that what the caller stops next (instances, the
/// process) does not cut them.
pub async fn serve_until_stopped(
    name: &str,
    serve: impl std::future::Future<Output = ()>,
    shutdown: &CancellationToken,
) {
    tokio::pin!(serve);
    tokio::select! {
        () = &mut serve => {}
        which = stop_signal() => {
            println!("{name}: stopping ({which})");
            shutdown.cancel();
            if tokio::time::timeout(DRAIN_WITHIN, serve).await.is_err() {
                tracing::warn!(
                    within_s = DRAIN_WITHIN.as_secs(),
                    "connections were still open when the gateway stopped"
                );
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM (a supervisor, `kill`, Kubernetes) and says which, so both
/// are handled as the same graceful stop.
pub async fn stop_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        () = terminate => "SIGTERM",
    }
}
