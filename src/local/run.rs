//! `kfaas local DIR`: the gateway over the local process backend, the autoscaler driving it, and
//! a watcher that reloads the folder (keeping the last good config when a file is bad).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    config::{LocalConfig, load_dir},
    instance_env::HostEnv,
    instances::{LocalFunctionSpec, LocalInstances, Protocol},
};
use crate::{
    api::{Function, FunctionProtocol, FunctionRuntime},
    autoscaler::driver::PolicySource,
    backend::{Backend, FunctionKey},
    gateway::{
        config as gateway_config,
        handler::Gateway,
        server,
        table::{RouteTable, concurrency},
    },
    runtime::RuntimeKind,
};

/// Options of `kfaas local`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The binary spawned as `kfaas runtime` for each instance.
    pub kfaas_bin: PathBuf,
    pub access_log: bool,
    /// Longest a request waits for a function to get a free instance.
    pub max_held_requests: u32,
    /// Threads serving requests.
    pub serving_threads: usize,
    /// What instances get of this machine's environment.
    pub host_env: HostEnv,
}

/// Why `kfaas local` could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0} is not a folder")]
    NotADirectory(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the instance manager: {0}")]
    Instances(String),
}

/// Turns a Function into what the instance manager runs.
pub fn local_spec(function: &Function, code_dir: &Path) -> LocalFunctionSpec {
    let key = FunctionKey::new(
        function.metadata.namespace.as_deref().unwrap_or("default"),
        function.metadata.name.as_deref().unwrap_or(""),
    );
    let spec = &function.spec;
    let runtime = spec.runtime.map(|r| match r {
        FunctionRuntime::Nodejs => RuntimeKind::Nodejs,
        FunctionRuntime::Python => RuntimeKind::Python,
        FunctionRuntime::Provided => RuntimeKind::Provided,
    });
    let command = (!spec.command.is_empty()).then(|| spec.command.clone());
    let mut local = match spec.protocol {
        FunctionProtocol::Http => {
            LocalFunctionSpec::http(key, code_dir, command.clone().unwrap_or_default())
        }
        FunctionProtocol::Lambda => LocalFunctionSpec::lambda(
            key,
            runtime.unwrap_or(RuntimeKind::Provided),
            code_dir,
            spec.handler.clone(),
        ),
    };
    if spec.protocol == FunctionProtocol::Lambda {
        local.command = command;
    }
    local.env = spec.environment.clone();
    local.memory_mb = u32::try_from(spec.memory_mb).unwrap_or(128);
    local.timeout = Duration::from_secs(u64::try_from(spec.timeout_seconds).unwrap_or(3));
    local.concurrency = concurrency(spec);
    debug_assert!(matches!(local.protocol, Protocol::Lambda | Protocol::Http));
    local
}

fn local_specs(config: &LocalConfig) -> Vec<LocalFunctionSpec> {
    config
        .table
        .functions
        .iter()
        .filter_map(|f| {
            let name = f.metadata.name.as_deref()?;
            let dir = config.code_dirs.get(name)?;
            Some(local_spec(f, dir))
        })
        .collect()
}

/// Installs the table and the policies and prints what could not be served.
fn install_config(config: &LocalConfig, gateway: &Gateway) {
    let warnings =
        gateway_config::install_parts(gateway, &config.table, &config.usage_plans, &config.secrets);
    for w in warnings {
        eprintln!("kfaas local: {w}");
    }
}

/// Prints one line per route: method, URL, function.
fn print_routes(table: &RouteTable, addr: SocketAddr) {
    for stage in table.stages() {
        let host = stage.host.clone().unwrap_or_else(|| addr.to_string());
        let base = stage.base_path.as_deref().unwrap_or("");
        for route in &stage.routes {
            let target = match &route.function {
                Ok(k) => k.name.clone(),
                Err(e) => format!("(unavailable: {e})"),
            };
            let (method, path) = route
                .route_key
                .split_once(' ')
                .unwrap_or(("ANY", &route.resource_path));
            println!(
                "  {method:<7} http://{host}{base}{path}  -> {target}  [stage {}]",
                stage.name
            );
        }
    }
}

/// Runs until Ctrl-C (or `shutdown`).
pub async fn run(options: LocalOptions, shutdown: CancellationToken) -> Result<(), LocalError> {
    if !options.dir.is_dir() {
        return Err(LocalError::NotADirectory(options.dir.clone()));
    }
    let (config, problems) = load_dir(&options.dir);
    for p in &problems {
        eprintln!("kfaas local: {p}");
    }
    check_runtimes(&config);

    // Function runtimes run on the serving threads, once they have started.
    let serving = server::ServingThreads::default();
    let instances = Arc::new(
        LocalInstances::new(
            options.kfaas_bin.clone(),
            options.host_env.clone(),
            serving.clone(),
        )
        .map_err(|e| LocalError::Instances(e.to_string()))?,
    );
    instances.set_functions(local_specs(&config));
    let backend: Arc<dyn Backend> = instances.clone();
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| LocalError::Listen {
                addr: options.listen,
                source,
            })?;
    let admin = TcpListener::bind(options.admin_listen)
        .await
        .map_err(|source| LocalError::Listen {
            addr: options.admin_listen,
            source,
        })?;
    let addr = server::local_addr(&listener);
    let (gateway, demand_rx) = Gateway::new(
        Arc::clone(&backend),
        options.max_held_requests,
        options.access_log,
        "local".into(),
    );
    let gateway = Arc::new(gateway);
    install_config(&config, &gateway);

    println!(
        "kfaas local: serving {} on http://{addr} (admin on http://{})",
        options.dir.display(),
        server::local_addr(&admin)
    );
    print_routes(&gateway.table.load(), addr);

    let ready = Arc::new(AtomicBool::new(true));
    let scaler = tokio::spawn(crate::autoscaler::driver::run(
        Arc::clone(&gateway) as Arc<dyn PolicySource>,
        Arc::clone(&gateway.activator),
        Arc::clone(&backend),
        Arc::clone(&gateway.metrics),
        demand_rx,
        Duration::from_secs(1),
    ));
    let watcher = tokio::spawn(super::watch::watch_and_reload(
        options.dir.clone(),
        Arc::clone(&gateway),
        Arc::clone(&instances),
        addr,
        shutdown.clone(),
    ));
    let admin_task = tokio::spawn(server::serve_admin(
        Arc::clone(&gateway),
        admin,
        ready,
        shutdown.clone(),
    ));

    let serve = server::serve(
        Arc::clone(&gateway),
        listener,
        shutdown.clone(),
        options.serving_threads,
        serving,
    );
    // Once stopping, an instance that ends (a serving thread stops the runtimes it runs when its
    // connections have drained) is not replaced.
    let closing = {
        let (instances, shutdown) = (Arc::clone(&instances), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            instances.close();
        })
    };
    // Requests in flight are answered before their instances are stopped.
    server::serve_until_stopped("kfaas local", serve, &shutdown).await;
    closing.abort();
    watcher.abort();
    scaler.abort();
    admin_task.abort();
    instances.shutdown().await;
    gateway
        .access_log
        .finish(crate::gateway::access_log::FINISH_WITHIN);
    Ok(())
}

/// Applies a new config: swaps the table and the instance manager's functions together.
pub fn apply(
    config: &LocalConfig,
    gateway: &Gateway,
    instances: &LocalInstances,
    addr: SocketAddr,
) {
    check_runtimes(config);
    instances.set_functions(local_specs(config));
    install_config(config, gateway);
    println!(
        "kfaas local: reloaded {} functions, {} routes, {} stages",
        config.table.functions.len(),
        config.table.routes.len(),
        config.table.stages.len()
    );
    print_routes(&gateway.table.load(), addr);
}

/// One clear line when a runtime's interpreter is missing (the function still loads; its
/// requests answer 502 until the interpreter is installed).
fn check_runtimes(config: &LocalConfig) {
    for f in &config.table.functions {
        let needs = match (f.spec.runtime, f.spec.command.first()) {
            (_, Some(cmd)) => cmd.clone(),
            (Some(FunctionRuntime::Nodejs), None) => "node".into(),
            (Some(FunctionRuntime::Python), None) => "python3".into(),
            _ => continue,
        };
        if !Path::new(&needs).is_absolute() && which(&needs).is_none() {
            eprintln!(
                "kfaas local: Function/{}: needs `{needs}`, which is not on PATH; install it to run this function",
                f.metadata.name.as_deref().unwrap_or("")
            );
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
