//! The `kfaas` command line: one subcommand per part.
//!
//! Each subcommand keeps its arguments and entry point in its own file; every flag can also come
//! from a `KFAAS_*` environment variable so a pod can be configured without args.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod controller;
mod crds;
mod gateway;
mod import;
mod invoke;
mod local;
mod logging;
mod runtime;

#[derive(Debug, Parser)]
#[command(
    name = "kfaas",
    version,
    about = "AWS Lambda + API Gateway semantics on Kubernetes, or on a laptop"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile Function, Route, Stage and UsagePlan objects on a cluster.
    Controller(controller::Args),
    /// Run the data plane: routing, policies, activator, invocation.
    Gateway(gateway::Args),
    /// Supervise one function instance: serve the Lambda Runtime API and the invoke endpoint.
    Runtime(runtime::Args),
    /// Run the whole platform on this machine from the YAML objects in a folder.
    Local(local::Args),
    /// Print the CustomResourceDefinitions as YAML.
    Crds(crds::Args),
    /// Invoke a function instance with an event and print the result.
    Invoke(invoke::Args),
    /// Convert an AWS SAM template into kfaas objects.
    Import(import::Args),
}

/// Runs the chosen subcommand and turns its outcome into the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Controller(args) => controller::run(args),
        Command::Gateway(args) => gateway::run(args),
        Command::Runtime(args) => runtime::run(args),
        Command::Local(args) => local::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Invoke(args) => invoke::run(args),
        Command::Import(args) => import::run(args),
    }
}

/// Threads serving requests (`--worker-threads`), at least one; unless set, one per
/// `cores_per_thread` cores this process may run on.
fn serving_threads(flag: Option<usize>, cores_per_thread: usize) -> usize {
    flag.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            / cores_per_thread.max(1)
    })
    .max(1)
}

/// Threads serving requests in `kfaas local` (`--worker-threads`): one unless set, whatever the
/// cores, because each `lambda` instance's runtime lives on one serving thread and a call
/// arriving on another pays two cross-thread wake-ups (docs/benchmarks.md).
fn local_serving_threads(flag: Option<usize>) -> usize {
    flag.unwrap_or(1).max(1)
}

/// The runtime of a gateway's control work (config, scaling, instances, admin), which is light:
/// requests are served on threads of their own (`gateway::server::serve`).
fn control_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(1)
        .build()
}

#[cfg(test)]
mod tests {
    use super::{local_serving_threads, serving_threads};

    #[test]
    fn serving_threads_follow_the_flag_or_the_cores_and_are_at_least_one() {
        assert_eq!(serving_threads(Some(3), 2), 3);
        assert_eq!(serving_threads(Some(0), 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(serving_threads(None, 1), cores);
        assert_eq!(serving_threads(None, 2), (cores / 2).max(1));
        assert_eq!(serving_threads(None, usize::MAX), 1);
    }

    #[test]
    fn kfaas_local_serves_on_one_thread_unless_told() {
        assert_eq!(local_serving_threads(None), 1);
        assert_eq!(local_serving_threads(Some(4)), 4);
        assert_eq!(local_serving_threads(Some(0)), 1);
    }
}
