//! `kfaas gateway`: the data plane on a Kubernetes cluster.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::gateway::cluster::run::{ClusterOptions, run as run_gateway};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address the gateway serves API requests on.
    #[arg(long, env = "KFAAS_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the admin endpoints (/metrics, /healthz, /readyz, /usage).
    #[arg(long, env = "KFAAS_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Serve the objects of this namespace only (default: every namespace).
    #[arg(long, env = "KFAAS_NAMESPACE")]
    namespace: Option<String>,
    /// Do not print the JSON access-log lines.
    #[arg(long, env = "KFAAS_NO_ACCESS_LOG")]
    no_access_log: bool,
    /// Requests a function may hold waiting for a free instance before new ones get 503.
    #[arg(long, env = "KFAAS_MAX_HELD_REQUESTS", default_value_t = 1000)]
    max_held_requests: u32,
    /// Seconds between writes of UsagePlan status.usage (only when the counts changed).
    #[arg(long, env = "KFAAS_USAGE_STATUS_SECONDS", default_value_t = 10)]
    usage_status_seconds: u64,
    /// Seconds between reads of the Secrets holding API keys and JWKS (picks up rotation).
    #[arg(long, env = "KFAAS_SECRET_REFRESH_SECONDS", default_value_t = 30)]
    secret_refresh_seconds: u64,
    /// The `requestContext.apiId` functions see.
    #[arg(long, env = "KFAAS_API_ID", default_value = "kfaas")]
    api_id: String,
    /// Names this replica among the gateway replicas sharing demand (default: the host name,
    /// which is the pod name on Kubernetes).
    #[arg(long, env = "KFAAS_GATEWAY_ID")]
    gateway_id: Option<String>,
    /// Threads serving requests, each with the connections it accepted (default: one per core).
    #[arg(long, env = "KFAAS_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    super::logging::init();
    let options = ClusterOptions {
        listen: args.listen,
        admin_listen: args.admin_listen,
        namespace: args.namespace,
        access_log: !args.no_access_log,
        max_held_requests: args.max_held_requests,
        serving_threads: super::serving_threads(args.worker_threads, 1),
        usage_status_interval: Duration::from_secs(args.usage_status_seconds.max(1)),
        secret_refresh_interval: Duration::from_secs(args.secret_refresh_seconds.max(1)),
        api_id: args.api_id,
        gateway_id: args.gateway_id.unwrap_or_else(default_gateway_id),
    };
    let runtime = match super::control_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kfaas gateway: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_gateway(options, CancellationToken::new())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kfaas gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host name (the pod name in a cluster), else `gateway-<pid>`.
fn default_gateway_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("gateway-{}", std::process::id()))
}
