//! `kfaas runtime`: the supervisor inside one function instance.
//!
//! It serves the Lambda Runtime API to `concurrency` handler processes (each on its own
//! loopback address, so every `/next` says which process asks), accepts invocations on an
//! endpoint compatible with AWS's emulator, enforces timeouts, restarts processes that die or
//! time out, and frames each invocation's output with START / END / REPORT lines.
//!
//! A parent learns the bound address from the `KFAAS_LISTENING <addr>` line and readiness from
//! `KFAAS_READY` (or `GET /readyz`), so instances start on port 0 without races or polling.
//!
//! In sidecar mode (`--external`) it spawns nothing and serves the Runtime API on a fixed
//! address for a handler someone else started (an AWS base image's entrypoint).

mod config;
mod direct;
mod http;
mod invocation;
mod invoke_api;
mod pool;
mod rapi;
mod report;
mod stream;
mod supervisor;

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use ::http::HeaderValue;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use self::{
    config::{
        ConfigError, HandlerMode, HandlerProcess, IMAGE_RUNTIMES_DIR, RuntimeConfig, RuntimeKind,
        RuntimeOptions, find_runtimes_dir, handler_file_candidates,
    },
    direct::{DirectInvoker, DirectOutcome, Stopping},
    invoke_api::{INVOKE_ERROR_HEADER, REQUEST_ID_HEADER, STREAM_HEADER},
    report::{INIT_FAILED, LISTENING, Output, PipeOutput, READY},
};
use self::{
    invoke_api::InvokeContext,
    pool::Pool,
    rapi::RapiContext,
    supervisor::{Launcher, supervise},
};

/// The path of the invoke endpoint, as AWS's emulator serves it.
pub const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind the {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("bad function name {0:?} for an ARN")]
    FunctionName(String),
}

impl RuntimeError {
    /// A short stable category for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(e) => e.category(),
            Self::Bind { .. } => "bind",
            Self::FunctionName(_) => "bad_function_name",
        }
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), RuntimeError> {
    let bind_err = |source| RuntimeError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// Runs the runtime until `shutdown` completes, then stops accepting invocations, finishes the
/// ones in flight, stops the handler processes and returns.
pub async fn run(
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    run_with(config, shutdown, |_| {}).await
}

/// As [`run`], handing `started` a [`DirectInvoker`] (invocations without HTTP, for a runtime in
/// the gateway's process) once the pool exists, before the handlers are ready.
pub async fn run_with(
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(DirectInvoker),
) -> Result<(), RuntimeError> {
    let (listener, addr) = bind("invoke endpoint", config.listen).await?;
    // Every Runtime API address is bound before the announcement, so a sidecar's handler
    // may connect as soon as the parent sees it.
    let mut api_listeners = Vec::new();
    for _ in 0..config.concurrency {
        let api_addr = match &config.mode {
            HandlerMode::External { runtime_api } => *runtime_api,
            HandlerMode::Spawn { .. } => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        api_listeners.push(bind("Runtime API", api_addr).await?);
    }
    config.output.emit(&report::listening_line(addr));

    let function_arn = HeaderValue::from_str(&config.function_arn())
        .map_err(|_| RuntimeError::FunctionName(config.function_name.clone()))?;
    let owns_processes = matches!(config.mode, HandlerMode::Spawn { .. });
    let slots = usize::try_from(config.concurrency).unwrap_or(1);
    let (pool, receivers) = Pool::with_output(
        slots,
        config.timeout,
        config.memory_mb,
        owns_processes,
        config.output.clone(),
    );
    started(DirectInvoker::new(pool.clone()));
    let rapi_ctx = Arc::new(RapiContext {
        pool: pool.clone(),
        function_arn,
    });
    let stop_rapi = CancellationToken::new();
    // Guards and a `JoinSet`: should this future be dropped rather than stopped (a local
    // instance killed), its servers and supervisors go with it.
    let mut rapi_servers = Vec::new();
    let mut supervisors = JoinSet::new();
    for (slot, (events, (api_listener, api_addr))) in
        receivers.into_iter().zip(api_listeners).enumerate()
    {
        let launcher = match &config.mode {
            HandlerMode::External { .. } => None,
            HandlerMode::Spawn { command } => Some(Launcher {
                command: command.clone(),
                cwd: config.code_dir.clone(),
                init_timeout: config.init_timeout,
                process: config.handler_process.clone(),
            }),
        };
        let ctx = rapi_ctx.clone();
        rapi_servers.push(TaskGuard(tokio::spawn(http::serve(
            api_listener,
            move |req| rapi::handle(ctx.clone(), slot, req),
            stop_rapi.clone(),
        ))));
        let env = config.lambda_env(api_addr);
        supervisors.spawn(
            supervise(pool.clone(), slot, api_addr, launcher, env, events)
                // Its log lines carry the caller's span (a local instance's function).
                .in_current_span(),
        );
    }

    let invoke_ctx = Arc::new(InvokeContext { pool: pool.clone() });
    let stop_invoke = CancellationToken::new();
    let mut server = TaskGuard(tokio::spawn(http::serve(
        listener,
        move |req| invoke_api::handle(invoke_ctx.clone(), req),
        stop_invoke.clone(),
    )));

    shutdown.await;
    tracing::info!(
        in_flight = pool.in_flight(),
        "shutting down: finishing in-flight invocations"
    );
    stop_invoke.cancel();
    let _ = (&mut server.0).await;
    // Direct invocations (`DirectInvoker`) have no connection the server waits for: the pool
    // takes no new ones and those in flight finish (each within its timeout) before the handlers
    // are stopped.
    pool.close();
    pool.drained().await;
    pool.stop();
    while supervisors.join_next().await.is_some() {}
    stop_rapi.cancel();
    drop(rapi_servers);
    Ok(())
}

/// Aborts a task when dropped.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
