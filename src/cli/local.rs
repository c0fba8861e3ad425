//! `kfaas local DIR`: the whole platform on this machine, from a folder of YAML objects.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use tokio_util::sync::CancellationToken;

use crate::local::{
    instance_env::{HostEnv, check_pass_env},
    run::{LocalOptions, run as run_local},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder holding the Function, Route, Stage and UsagePlan YAML files (and Secrets).
    #[arg(env = "KFAAS_DIR")]
    dir: PathBuf,
    /// Port of the gateway on 127.0.0.1 (0 picks a free one).
    #[arg(long, short, env = "KFAAS_PORT", default_value_t = 3000)]
    port: u16,
    /// Full listen address; overrides --port.
    #[arg(long, env = "KFAAS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the admin endpoints (/metrics, /healthz, /readyz).
    #[arg(long, env = "KFAAS_ADMIN_LISTEN", default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// Do not print the JSON access-log lines.
    #[arg(long, env = "KFAAS_NO_ACCESS_LOG")]
    no_access_log: bool,
    /// Threads serving requests, each with the connections it accepted (default: one; a
    /// `lambda` function's runtime lives on one of them, and a call arriving on another thread
    /// costs two cross-thread wake-ups, ~+50 % latency at concurrency 1).
    #[arg(long, env = "KFAAS_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Requests a function may hold waiting for a free instance before new ones get 503.
    #[arg(long, env = "KFAAS_MAX_HELD_REQUESTS", default_value_t = 1000)]
    max_held_requests: u32,
    /// Also give function instances this variable of this machine's environment (repeatable;
    /// `PREFIX*` passes every variable that starts with PREFIX, `*` passes everything).
    /// Instances get only a defined environment, as on Lambda: PATH, HOME, USER, LOGNAME,
    /// SHELL, LANG, LANGUAGE, LC_*, TMPDIR, the AWS SDK's credentials, profile, region and
    /// endpoints, and the proxy settings.
    #[arg(
        long = "pass-env",
        value_name = "NAME",
        env = "KFAAS_PASS_ENV",
        value_delimiter = ','
    )]
    pass_env: Vec<String>,
    /// Stop (gracefully, instances too) when stdin reaches end of file: for a parent process
    /// (a test harness, an editor plugin) that holds the write end of a pipe and may die.
    #[arg(long, env = "KFAAS_EXIT_WITH_PARENT")]
    exit_with_parent: bool,
}

pub fn run(args: Args) -> ExitCode {
    super::logging::init();
    let kfaas_bin = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("kfaas local: cannot find the kfaas binary to run functions with: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = check_pass_env(&args.pass_env) {
        eprintln!("kfaas local: {e}");
        return ExitCode::FAILURE;
    }
    let options = LocalOptions {
        dir: args.dir,
        listen: args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port))),
        admin_listen: args.admin_listen,
        kfaas_bin,
        access_log: !args.no_access_log,
        max_held_requests: args.max_held_requests,
        // One unless asked (examples/hello at concurrency 1: p50 127 µs on the runtime's
        // thread, 185-201 µs from another). One thread proxies ~80k req/s, more than a local
        // loop needs.
        serving_threads: super::local_serving_threads(args.worker_threads),
        host_env: HostEnv::from_process(&args.pass_env),
    };
    let runtime = match super::control_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kfaas local: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    if args.exit_with_parent {
        let token = shutdown.clone();
        // A plain thread: a blocking stdin read must not hold the async runtime's exit.
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            token.cancel();
            // The parent may be gone with the other end of stdout: a failed write is fine.
            let _ = writeln!(std::io::stdout(), "kfaas local: stdin closed, stopping");
        });
    }
    let result = runtime.block_on(run_local(options, shutdown));
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kfaas local: {e}");
            ExitCode::FAILURE
        }
    }
}
