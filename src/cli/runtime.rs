//! `kfaas runtime`: supervise one function instance.
//!
//! Every flag also comes from a `KFAAS_*` variable, so a pod is configured by its env alone.
//! The runtimes folder (the Node.js and Python bootstraps) is, in order: `--runtimes-dir`, a
//! `runtimes/` folder in a checkout above the `kfaas` binary (so `target/debug/kfaas` uses the
//! repo's), one above the working directory, then `/opt/kfaas/runtimes` (the image's).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use crate::runtime::{self, RuntimeConfig, RuntimeKind, RuntimeOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the invoke endpoint; port 0 picks a free one (announced on stdout).
    #[arg(long, env = "KFAAS_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// nodejs, python or provided (AWS's versioned names are accepted).
    #[arg(long, env = "KFAAS_RUNTIME", value_parser = parse_runtime)]
    runtime: Option<RuntimeKind>,
    /// The function's code folder (LAMBDA_TASK_ROOT).
    #[arg(long, env = "KFAAS_CODE", default_value = ".")]
    code: PathBuf,
    /// FILE.EXPORT, e.g. index.handler.
    #[arg(long, env = "KFAAS_HANDLER")]
    handler: Option<String>,
    /// The function's name (AWS_LAMBDA_FUNCTION_NAME, the ARN, the log group).
    #[arg(long, env = "KFAAS_FUNCTION_NAME", default_value = "function")]
    function_name: String,
    /// Reported to the handler and in REPORT lines; not enforced.
    #[arg(long, env = "KFAAS_MEMORY_MB", default_value_t = 128)]
    memory_mb: u32,
    /// An invocation still running after this is answered with a timeout and its process is
    /// killed and restarted.
    #[arg(long, env = "KFAAS_TIMEOUT_SECONDS", default_value_t = 3)]
    timeout_seconds: u32,
    /// How long a handler process may take to initialise (load code, reach its first /next).
    #[arg(long, env = "KFAAS_INIT_TIMEOUT_SECONDS", default_value_t = 10)]
    init_timeout_seconds: u32,
    /// Handler processes, hence invocations served at once.
    #[arg(long, env = "KFAAS_CONCURRENCY", default_value_t = 1)]
    concurrency: u32,
    /// KEY=VALUE for the handler (repeatable; newline-separated in KFAAS_ENV).
    #[arg(long = "env", env = "KFAAS_ENV", value_delimiter = '\n')]
    env: Vec<String>,
    /// Sidecar mode: spawn nothing, serve the Runtime API on --runtime-api-listen.
    #[arg(long, env = "KFAAS_EXTERNAL")]
    external: bool,
    #[arg(
        long,
        env = "KFAAS_RUNTIME_API_LISTEN",
        default_value = "127.0.0.1:9001"
    )]
    runtime_api_listen: SocketAddr,
    /// Shut down gracefully when stdin reaches end of file: a parent that holds the write end
    /// of a pipe (the local instance manager) died, so nothing will route here any more.
    #[arg(long, env = "KFAAS_EXIT_WITH_PARENT")]
    exit_with_parent: bool,
    /// Folder holding the nodejs/ and python/ bootstraps. Default: runtimes/ in a checkout
    /// above the binary or the working directory, else /opt/kfaas/runtimes.
    #[arg(long, env = "KFAAS_RUNTIMES_DIR")]
    runtimes_dir: Option<PathBuf>,
    /// The handler command, instead of the runtime's bootstrap (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_runtime(s: &str) -> Result<RuntimeKind, String> {
    s.parse().map_err(|e: runtime::ConfigError| e.to_string())
}

impl Args {
    fn options(self) -> RuntimeOptions {
        RuntimeOptions {
            listen: Some(self.listen),
            runtime: self.runtime,
            code_dir: self.code,
            handler: self.handler,
            function_name: self.function_name,
            memory_mb: self.memory_mb,
            timeout_seconds: self.timeout_seconds,
            init_timeout_seconds: self.init_timeout_seconds,
            concurrency: self.concurrency,
            env: self.env.into_iter().filter(|e| !e.is_empty()).collect(),
            external: self.external.then_some(self.runtime_api_listen),
            runtimes_dir: self.runtimes_dir,
            command: self.command,
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    super::logging::init();
    let exit_with_parent = args.exit_with_parent;
    let exe = std::env::current_exe().ok();
    let config = match RuntimeConfig::resolve(args.options(), exe.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kfaas runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kfaas runtime: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(runtime::run(config, shutdown_signal(exit_with_parent)));
    // A blocking stdin read may still be pending; it must not hold the exit.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kfaas runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (Kubernetes, the local manager), Ctrl-C, or, with
/// `--exit-with-parent`, at end of file on stdin.
async fn shutdown_signal(exit_with_parent: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let parent_gone = async {
        if exit_with_parent {
            stdin_closed().await;
            tracing::info!("stdin closed: the parent is gone");
        } else {
            std::future::pending::<()>().await;
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
                () = parent_gone => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the runtime");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = parent_gone => {}
            }
        }
    }
}

/// Reads stdin to its end (or a read error), discarding what comes.
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}
