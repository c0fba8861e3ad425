//! The local instance manager: `http` functions run as child processes on loopback ports,
//! `lambda` functions as a runtime inside this process (on a serving thread) with their handler
//! processes as its children; scaled by [`Backend::scale`] and published through
//! [`Backend::ready_instances`].
//!
//! Each function has a desired count and a list of instance records (starting, ready,
//! stopping). Every change (scale, readiness, exit, new spec) runs one synchronous reconcile
//! under the manager's lock, which starts or stops instances to converge; the instances
//! themselves live in their own tasks (`instance_process`). Scaling down takes an instance out
//! of the ready set before it gets SIGTERM, so no new request is routed to it while it drains.
//! A changed spec rolls: new instances start, old ones stop once enough new ones are ready.
//! When to scale to zero is not decided here: the autoscaler calls `scale(key, 0)`.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{
    instance_env::HostEnv,
    instance_process::{Exit, InstanceEvents, InstancePlan, run_instance},
};
use crate::{
    backend::{Backend, BackendError, FunctionKey, Instance, ReadyInstances},
    gateway::server::ServingThreads,
    runtime::DirectInvoker,
    runtime::RuntimeKind,
};

/// How a function is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Event JSON through the Lambda Runtime API (`kfaas runtime`).
    Lambda,
    /// The function is an HTTP server listening on `$PORT`.
    Http,
}

/// One function the manager may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFunctionSpec {
    pub key: FunctionKey,
    pub protocol: Protocol,
    /// `None` with a `command`: the command is the handler process (or the HTTP server).
    pub runtime: Option<RuntimeKind>,
    pub code_dir: PathBuf,
    pub handler: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// Invocations one instance serves at once.
    pub concurrency: u32,
    /// The variable that tells an http function its port.
    pub http_port_env: String,
}

impl LocalFunctionSpec {
    /// A lambda function with Lambda's defaults (128 MB, 3 s, one at a time).
    pub fn lambda(
        key: FunctionKey,
        runtime: RuntimeKind,
        code_dir: impl Into<PathBuf>,
        handler: Option<String>,
    ) -> Self {
        Self {
            key,
            protocol: Protocol::Lambda,
            runtime: Some(runtime),
            code_dir: code_dir.into(),
            handler,
            command: None,
            env: BTreeMap::new(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            concurrency: 1,
            http_port_env: "PORT".to_owned(),
        }
    }

    /// An http function: `command` listens on `$PORT`.
    pub fn http(key: FunctionKey, code_dir: impl Into<PathBuf>, command: Vec<String>) -> Self {
        Self {
            protocol: Protocol::Http,
            runtime: None,
            command: Some(command),
            concurrency: 100,
            ..Self::lambda(key, RuntimeKind::Provided, code_dir, None)
        }
    }
}

/// Where instance output goes, one line at a time.
pub trait OutputSink: Send + Sync + 'static {
    fn line(&self, function: &FunctionKey, line: &str);

    /// Several lines that arrived together, in order.
    fn lines(&self, function: &FunctionKey, lines: &[&str]) {
        for line in lines {
            self.line(function, line);
        }
    }
}

/// Writes `[function-name] line` to the manager's stdout.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl OutputSink for StdoutSink {
    fn line(&self, function: &FunctionKey, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{}] {line}", function.name);
    }

    /// One write for all of them (stdout is line-buffered: one `writeln!` is one write each).
    fn lines(&self, function: &FunctionKey, lines: &[&str]) {
        let mut text = String::new();
        for line in lines {
            text.push('[');
            text.push_str(&function.name);
            text.push_str("] ");
            text.push_str(line);
            text.push('\n');
        }
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstancesError {
    #[error("the local instance manager must be created inside a tokio runtime")]
    NoRuntime,
}

#[derive(Debug)]
enum RecordState {
    Starting,
    Ready(SocketAddr, Option<DirectInvoker>),
    Stopping,
}

#[derive(Debug)]
struct Record {
    id: String,
    generation: u64,
    state: RecordState,
    stop: CancellationToken,
}

struct Entry {
    spec: Arc<LocalFunctionSpec>,
    generation: u64,
    desired: u32,
    /// Instances that failed in a row; spaces out replacements.
    failures: u32,
    /// Why the last instance failed to start; cleared when one becomes ready or the spec
    /// changes. The activator uses it to answer at once instead of holding requests.
    start_failure: Option<String>,
    records: Vec<Record>,
    ready: watch::Sender<ReadyInstances>,
}

struct Inner {
    kfaas_bin: PathBuf,
    host_env: Arc<HostEnv>,
    /// Where `lambda` instances' runtimes run; `handle` while no serving thread serves.
    serving: ServingThreads,
    sink: Arc<dyn OutputSink>,
    handle: tokio::runtime::Handle,
    functions: Mutex<HashMap<FunctionKey, Entry>>,
    next_id: AtomicU64,
    /// Set when `kfaas local` begins to stop: an instance that ends is not replaced.
    closing: std::sync::atomic::AtomicBool,
    exited: Notify,
    /// Itself, so that instance events arriving on `&self` can spawn replacements.
    me: Weak<Inner>,
}

/// Runs functions as local child processes; the local [`Backend`].
#[derive(Clone)]
pub struct LocalInstances {
    inner: Arc<Inner>,
}

impl LocalInstances {
    /// A manager that runs `lambda` instances' runtimes on `serving`'s threads (on this runtime
    /// while none serves), finding the language bootstraps near `kfaas_bin` (the running binary,
    /// `std::env::current_exe()`, in production), and gives each instance `host_env` from this
    /// machine's environment. Must be called inside a tokio runtime.
    pub fn new(
        kfaas_bin: PathBuf,
        host_env: HostEnv,
        serving: ServingThreads,
    ) -> Result<Self, InstancesError> {
        Self::build(kfaas_bin, host_env, serving, Arc::new(StdoutSink))
    }

    /// A manager whose instances' output goes to `sink`, with their runtimes on this runtime.
    pub fn with_sink(
        kfaas_bin: PathBuf,
        host_env: HostEnv,
        sink: Arc<dyn OutputSink>,
    ) -> Result<Self, InstancesError> {
        Self::build(kfaas_bin, host_env, ServingThreads::default(), sink)
    }

    fn build(
        kfaas_bin: PathBuf,
        host_env: HostEnv,
        serving: ServingThreads,
        sink: Arc<dyn OutputSink>,
    ) -> Result<Self, InstancesError> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| InstancesError::NoRuntime)?;
        Ok(Self {
            inner: Arc::new_cyclic(|me| Inner {
                kfaas_bin,
                host_env: Arc::new(host_env),
                serving,
                sink,
                handle,
                functions: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                closing: std::sync::atomic::AtomicBool::new(false),
                exited: Notify::new(),
                me: me.clone(),
            }),
        })
    }

    /// Replaces the set of functions. A new function starts at zero instances; a changed spec
    /// rolls its instances; a removed function's instances stop.
    pub fn set_functions(&self, specs: Vec<LocalFunctionSpec>) {
        let mut functions = self.inner.lock();
        let mut wanted: HashMap<FunctionKey, LocalFunctionSpec> =
            specs.into_iter().map(|s| (s.key.clone(), s)).collect();
        let keys: Vec<FunctionKey> = functions.keys().cloned().collect();
        for key in keys {
            match wanted.remove(&key) {
                Some(spec) => {
                    if let Some(entry) = functions.get_mut(&key)
                        && *entry.spec != spec
                    {
                        entry.spec = Arc::new(spec);
                        entry.generation += 1;
                        entry.failures = 0;
                        entry.start_failure = None;
                        self.inner.reconcile(&key, entry);
                    }
                }
                None => {
                    if let Some(mut entry) = functions.remove(&key) {
                        entry.desired = 0;
                        self.inner.reconcile(&key, &mut entry);
                        entry.ready.send_replace(Arc::from(Vec::new()));
                    }
                }
            }
        }
        for (key, spec) in wanted {
            functions.insert(
                key,
                Entry {
                    spec: Arc::new(spec),
                    generation: 0,
                    desired: 0,
                    failures: 0,
                    start_failure: None,
                    records: Vec::new(),
                    ready: watch::channel(Arc::from(Vec::new())).0,
                },
            );
        }
    }

    /// The ids and states of a function's instances, for status output and tests.
    pub fn instances(&self, key: &FunctionKey) -> Vec<(String, Option<SocketAddr>)> {
        let functions = self.inner.lock();
        functions.get(key).map_or_else(Vec::new, |e| {
            e.records
                .iter()
                .map(|r| {
                    let addr = match r.state {
                        RecordState::Ready(a, _) => Some(a),
                        _ => None,
                    };
                    (r.id.clone(), addr)
                })
                .collect()
        })
    }

    /// From now on an instance that ends is not replaced (it leaves the ready set): the platform
    /// is stopping, and its serving threads stop the runtimes they run once every thread's
    /// connections have drained. Instances still start on demand meanwhile, for requests in
    /// flight.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
    }

    /// Stops every instance of every function gracefully and waits until all have exited.
    pub async fn shutdown(&self) {
        {
            let mut functions = self.inner.lock();
            let keys: Vec<FunctionKey> = functions.keys().cloned().collect();
            for key in keys {
                if let Some(entry) = functions.get_mut(&key) {
                    entry.desired = 0;
                    self.inner.reconcile(&key, entry);
                }
            }
        }
        loop {
            let exited = self.inner.exited.notified();
            if self.inner.lock().values().all(|e| e.records.is_empty()) {
                return;
            }
            exited.await;
        }
    }
}

impl Backend for LocalInstances {
    fn scale(&self, function: &FunctionKey, replicas: u32) -> Result<(), BackendError> {
        let mut functions = self.inner.lock();
        let entry = functions
            .get_mut(function)
            .ok_or_else(|| BackendError::UnknownFunction(function.clone()))?;
        if entry.desired != replicas {
            if entry.desired == 0 {
                // A fresh start from zero decides anew whether the function can start.
                entry.start_failure = None;
            }
            entry.desired = replicas;
            self.inner.reconcile(function, entry);
        }
        Ok(())
    }

    fn ready_instances(
        &self,
        function: &FunctionKey,
    ) -> Result<watch::Receiver<ReadyInstances>, BackendError> {
        self.inner
            .lock()
            .get(function)
            .map(|e| e.ready.subscribe())
            .ok_or_else(|| BackendError::UnknownFunction(function.clone()))
    }

    fn start_failure(&self, function: &FunctionKey) -> Option<String> {
        self.inner.lock().get(function)?.start_failure.clone()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<FunctionKey, Entry>> {
        self.functions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts and stops instances so that `desired` current-spec instances run, and stops
    /// old-spec instances once enough current ones are ready.
    fn reconcile(self: &Arc<Self>, key: &FunctionKey, entry: &mut Entry) {
        let generation = entry.generation;
        let live = |r: &Record| !matches!(r.state, RecordState::Stopping);
        let current = entry
            .records
            .iter()
            .filter(|r| r.generation == generation && live(r))
            .count();
        let desired = usize::try_from(entry.desired).unwrap_or(usize::MAX);
        for _ in current..desired {
            self.start(key, entry);
        }
        if current > desired {
            // Starting instances go first, then the newest ready ones.
            let mut surplus: Vec<usize> = entry
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.generation == generation && live(r))
                .map(|(i, _)| i)
                .collect();
            surplus.sort_by_key(|&i| (matches!(entry.records[i].state, RecordState::Starting), i));
            for i in surplus.into_iter().rev().take(current - desired) {
                begin_stop(&mut entry.records[i]);
            }
        }
        let ready_current = entry
            .records
            .iter()
            .filter(|r| r.generation == generation && matches!(r.state, RecordState::Ready(..)))
            .count();
        let roll_done = ready_current >= desired;
        for r in entry
            .records
            .iter_mut()
            .filter(|r| r.generation != generation && live(r))
        {
            if roll_done || matches!(r.state, RecordState::Starting) {
                begin_stop(r);
            }
        }
        publish(entry);
    }

    fn start(self: &Arc<Self>, key: &FunctionKey, entry: &mut Entry) {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", key.name);
        let stop = CancellationToken::new();
        let delay = if entry.failures == 0 {
            Duration::ZERO
        } else {
            let exp = entry.failures.saturating_sub(1).min(7);
            Duration::from_millis(100 << exp).min(Duration::from_secs(10))
        };
        entry.records.push(Record {
            id: id.clone(),
            generation: entry.generation,
            state: RecordState::Starting,
            stop: stop.clone(),
        });
        let plan = InstancePlan {
            key: key.clone(),
            id,
            spec: entry.spec.clone(),
            kfaas_bin: self.kfaas_bin.clone(),
            host_env: self.host_env.clone(),
            serving: self.serving.clone(),
            handle: self.handle.clone(),
            sink: self.sink.clone(),
            delay,
            stop,
        };
        let events: Arc<dyn InstanceEvents> = self.clone();
        self.handle.spawn(run_instance(plan, events));
    }
}

/// Out of the ready set first, then the stop signal: no request is routed to a draining one.
fn begin_stop(record: &mut Record) {
    record.state = RecordState::Stopping;
    record.stop.cancel();
}

fn publish(entry: &Entry) {
    let concurrency = entry.spec.concurrency.max(1);
    let ready: Vec<Instance> = entry
        .records
        .iter()
        .filter_map(|r| match &r.state {
            RecordState::Ready(addr, direct) => Some(Instance {
                id: r.id.clone(),
                addr: *addr,
                concurrency,
                direct: direct.clone(),
            }),
            _ => None,
        })
        .collect();
    entry.ready.send_if_modified(|current| {
        if current.as_ref() == ready.as_slice() {
            false
        } else {
            *current = Arc::from(ready);
            true
        }
    });
}

impl InstanceEvents for Inner {
    fn ready(&self, key: &FunctionKey, id: &str, addr: SocketAddr, direct: Option<DirectInvoker>) {
        let mut functions = self.lock();
        let Some(entry) = functions.get_mut(key) else {
            return;
        };
        if let Some(r) = entry.records.iter_mut().find(|r| r.id == id)
            && matches!(r.state, RecordState::Starting)
        {
            r.state = RecordState::Ready(addr, direct);
            entry.failures = 0;
            entry.start_failure = None;
        }
        self.reconcile_self(key, entry);
    }

    fn exited(&self, key: &FunctionKey, id: &str, exit: Exit) {
        let mut functions = self.lock();
        if let Some(entry) = functions.get_mut(key) {
            let was_stopping = entry
                .records
                .iter()
                .any(|r| r.id == id && matches!(r.state, RecordState::Stopping));
            entry.records.retain(|r| r.id != id);
            match &exit {
                Exit::Stopped => {}
                _ if was_stopping => {}
                Exit::StartFailed(how) => {
                    entry.failures = entry.failures.saturating_add(1);
                    entry.start_failure = Some(how.clone());
                    tracing::warn!(function = %key, instance = id, %how, "instance failed to start");
                }
                Exit::Died(how) => {
                    // Reset when the replacement is ready; spaces out a crash loop meanwhile.
                    entry.failures = entry.failures.saturating_add(1);
                    tracing::warn!(function = %key, instance = id, %how, "instance died; replacing it");
                }
            }
            if self.closing.load(Ordering::Relaxed) {
                // Not replaced, but out of the ready set.
                publish(entry);
            } else {
                self.reconcile_self(key, entry);
            }
        }
        drop(functions);
        self.exited.notify_waiters();
    }
}

impl Inner {
    /// `reconcile` needs an `Arc<Self>` to spawn instances; events arrive on `&self`.
    fn reconcile_self(&self, key: &FunctionKey, entry: &mut Entry) {
        match self.me.upgrade() {
            Some(me) => me.reconcile(key, entry),
            None => publish(entry),
        }
    }
}
