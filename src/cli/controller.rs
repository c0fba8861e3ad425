//! `kfaas controller`: reconcile the kfaas objects of a cluster (KUBECONFIG, or the pod's
//! service account).

use std::process::ExitCode;

use crate::controller::{self, BuildConfig, GatewayService};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "KFAAS_NAMESPACE")]
    namespace: Option<String>,
    /// Image of the function pods' `kfaas runtime` (the kfaas image).
    #[arg(
        long,
        env = "KFAAS_RUNTIME_IMAGE",
        default_value = concat!("ghcr.io/kfaas/kfaas:", env!("CARGO_PKG_VERSION"))
    )]
    runtime_image: String,
    /// The gateway's Service as NAMESPACE/NAME: Stage URLs and Ingresses point at it.
    #[arg(long, env = "KFAAS_GATEWAY_SERVICE")]
    gateway_service: Option<GatewayService>,
    /// Namespace of the leader-election Lease (default: the client's namespace, in a pod its
    /// own).
    #[arg(long, env = "KFAAS_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "KFAAS_LEASE_NAME", default_value = "kfaas-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host name and pid).
    #[arg(long, env = "KFAAS_POD_NAME")]
    identity: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    super::logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kfaas controller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("kfaas controller: no cluster to talk to (KUBECONFIG or in-cluster): {e}");
            return ExitCode::from(2);
        }
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kfaas".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let lease_namespace = args
        .lease_namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let scope = match &args.namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".to_owned(),
    };
    println!(
        "kfaas controller: watching {scope} as {identity} (lease {lease_namespace}/{}, runtime image {})",
        args.lease_name, args.runtime_image
    );
    let config = controller::Config {
        namespace: args.namespace,
        build: BuildConfig {
            runtime_image: args.runtime_image,
        },
        gateway_service: args.gateway_service,
        lease_namespace,
        lease_name: args.lease_name,
        identity,
    };
    match controller::run(client, config, shutdown_signal()).await {
        Ok(()) => {
            println!("kfaas controller: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kfaas controller: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the controller");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
