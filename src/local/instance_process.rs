//! The life of one local function instance: start its process, learn its address and
//! readiness, forward its output, and stop it gracefully or notice that it died.
//!
//! A `lambda` instance is what `kfaas runtime` runs, inside this process, on a serving thread
//! (a request, its invocation and the handler's answer then cross no other process), with the
//! handler processes as its children. It serves on `127.0.0.1:0` and announces its address
//! (`KFAAS_LISTENING`) and readiness (`KFAAS_READY`, or `KFAAS_INIT_FAILED`, after which it
//! still answers with the init error) on the instance's output pipe, as a `kfaas runtime`
//! child does on its stdout, so readiness costs no polling. An `http` instance runs the
//! function's own command with `PORT` set to a free port and is ready when that port accepts a
//! connection.

use std::{
    io::{self, Read},
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    net::TcpStream,
    process::{Child, Command},
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, sleep},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    instance_env::HostEnv,
    instances::{LocalFunctionSpec, OutputSink, Protocol},
};
use crate::{
    backend::FunctionKey,
    gateway::server::ServingThreads,
    runtime::{self, HandlerProcess, RuntimeConfig, RuntimeOptions},
};

/// How long an instance may take from spawn to ready before it counts as failed.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long a handler process may take to initialise, as `kfaas runtime`'s default (Lambda's).
const INIT_TIMEOUT_SECONDS: u32 = 10;
/// How often an `http` instance's port is tried while it starts.
const PORT_POLL: Duration = Duration::from_millis(5);

/// How an instance ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request.
    Stopped,
    /// Never became ready (spawn error, exit during start, start deadline).
    StartFailed(String),
    /// Died after it was ready.
    Died(String),
}

/// What an instance reports to its manager.
pub trait InstanceEvents: Send + Sync + 'static {
    /// `direct`: the instance's runtime runs in this process and takes invocations directly.
    fn ready(
        &self,
        key: &FunctionKey,
        id: &str,
        addr: SocketAddr,
        direct: Option<runtime::DirectInvoker>,
    );
    fn exited(&self, key: &FunctionKey, id: &str, exit: Exit);
}

/// One instance to run.
pub struct InstancePlan {
    pub key: FunctionKey,
    pub id: String,
    pub spec: Arc<LocalFunctionSpec>,
    pub kfaas_bin: std::path::PathBuf,
    /// What the instance gets of this machine's environment.
    pub host_env: Arc<HostEnv>,
    /// Where a `lambda` instance's runtime runs: a serving thread, as its guest (picked when
    /// it starts)...
    pub serving: ServingThreads,
    /// ... or, when none serves, this runtime.
    pub handle: tokio::runtime::Handle,
    pub sink: Arc<dyn OutputSink>,
    /// Wait this long before spawning (back-off after failures).
    pub delay: Duration,
    pub stop: CancellationToken,
}

enum Announcement {
    Listening(SocketAddr),
    Ready,
}

/// Runs one instance from spawn to exit, reporting to `events`.
pub async fn run_instance(plan: InstancePlan, events: Arc<dyn InstanceEvents>) {
    let exit = lifecycle(&plan, events.as_ref()).await;
    events.exited(&plan.key, &plan.id, exit);
}

async fn lifecycle(plan: &InstancePlan, events: &dyn InstanceEvents) -> Exit {
    if !plan.delay.is_zero() {
        tokio::select! {
            () = sleep(plan.delay) => {}
            () = plan.stop.cancelled() => return Exit::Stopped,
        }
    }
    let (mut running, mut announcements, http_addr) = match spawn(plan) {
        Ok(spawned) => spawned,
        Err(e) => {
            plan.sink.line(
                &plan.key,
                &format!("cannot start instance {}: {e}", plan.id),
            );
            return Exit::StartFailed(e.to_string());
        }
    };
    let ready = async {
        match http_addr {
            Some(addr) => wait_port(addr).await,
            None => wait_announced(&mut announcements).await,
        }
    };
    let addr = tokio::select! {
        addr = ready => addr,
        how = running.wait() => {
            return if running.stopped_with_host() { Exit::Stopped } else { Exit::StartFailed(how) };
        }
        () = plan.stop.cancelled() => {
            running.stop(plan).await;
            return Exit::Stopped;
        }
        () = sleep(START_DEADLINE) => {
            running.kill().await;
            return Exit::StartFailed("not ready within the start deadline".into());
        }
    };
    let Some(addr) = addr else {
        return Exit::StartFailed(running.wait().await);
    };
    events.ready(&plan.key, &plan.id, addr, running.direct_invoker());
    tokio::select! {
        how = running.wait() => {
            if running.stopped_with_host() { Exit::Stopped } else { Exit::Died(how) }
        }
        () = plan.stop.cancelled() => {
            running.stop(plan).await;
            Exit::Stopped
        }
    }
}

/// Lambda's timeout plus five seconds: long enough for an in-flight invocation to finish.
fn grace(spec: &LocalFunctionSpec) -> Duration {
    spec.timeout + Duration::from_secs(5)
}

/// A started instance.
enum Running {
    /// An `http` function's own process.
    Process(Child),
    /// A `lambda` function's runtime, in this process (on a serving thread, so that a request,
    /// its invocation and the handler's answer are handled without waking another process);
    /// the handler processes are its children.
    Runtime {
        task: Option<JoinHandle<Result<(), runtime::RuntimeError>>>,
        stop: CancellationToken,
        /// Its serving thread's: cancelled when that thread stops serving.
        host_stopping: Option<CancellationToken>,
        /// Sent by the runtime once its pool exists (before it announces readiness).
        direct: oneshot::Receiver<runtime::DirectInvoker>,
    },
}

impl Running {
    /// Whether the instance was stopped with the serving thread it ran on (`kfaas local`
    /// stopping), not because it failed.
    fn stopped_with_host(&self) -> bool {
        matches!(self, Self::Runtime { host_stopping: Some(t), .. } if t.is_cancelled())
    }

    /// The direct invoker of a runtime in this process, once it has started.
    fn direct_invoker(&mut self) -> Option<runtime::DirectInvoker> {
        match self {
            Self::Process(_) => None,
            Self::Runtime { direct, .. } => direct.try_recv().ok(),
        }
    }

    /// Waits for the instance to end; says how. Pending forever once it has been seen ending.
    async fn wait(&mut self) -> String {
        match self {
            Self::Process(child) => describe(&child.wait().await),
            Self::Runtime { task, .. } => {
                let Some(handle) = task.as_mut() else {
                    return std::future::pending().await;
                };
                let ended = handle.await;
                *task = None;
                match ended {
                    Ok(Ok(())) => "the runtime stopped".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) if e.is_cancelled() => "the runtime was cancelled".to_owned(),
                    Err(_) => "the runtime panicked".to_owned(),
                }
            }
        }
    }

    /// Ends the instance now.
    async fn kill(&mut self) {
        match self {
            Self::Process(child) => {
                signal_group(child, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Self::Runtime { task, .. } => {
                // Dropping the runtime's tasks kills its handlers' process groups.
                if let Some(handle) = task.take() {
                    handle.abort();
                    let _ = handle.await;
                }
            }
        }
    }

    /// Stops the instance gracefully, within `grace`: SIGTERM to an `http` function's process
    /// group; a runtime finishes its invocations in flight and then stops its handlers.
    async fn stop(&mut self, plan: &InstancePlan) {
        let grace = grace(&plan.spec);
        match self {
            Self::Process(child) => signal_group(child, Signal::SIGTERM),
            Self::Runtime { stop, .. } => stop.cancel(),
        }
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            self.kill().await;
            plan.sink.line(
                &plan.key,
                &format!(
                    "kfaas: instance {} did not exit within {grace:?} of being stopped; killed",
                    plan.id
                ),
            );
        }
    }
}

type Spawned = (
    Running,
    mpsc::UnboundedReceiver<Announcement>,
    Option<SocketAddr>,
);

fn spawn(plan: &InstancePlan) -> io::Result<Spawned> {
    // Plain pipes read by threads of their own, not by the async runtime: see `forward`.
    let (out, out_writer) = std::io::pipe()?;
    let (err, err_writer) = std::io::pipe()?;
    let (running, http_addr) = match plan.spec.protocol {
        Protocol::Lambda => {
            // The runtime writes its START / END / REPORT lines to this pipe from a serving
            // thread: a roomy pipe (1 MiB, not 64 KiB) keeps a burst of the handler's own output
            // from making those writes wait for the forwarder, and the thread with them.
            let _ = nix::fcntl::fcntl(&out_writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
            (start_runtime(plan, out_writer, err_writer)?, None)
        }
        Protocol::Http => {
            let (child, addr) = spawn_http(plan, out_writer, err_writer)?;
            (Running::Process(child), Some(addr))
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_forwarder("out", out, plan, Some(tx))?;
    spawn_forwarder("err", err, plan, None)?;
    Ok((running, rx, http_addr))
}

/// Starts an `http` function's own command with `PORT` set to a free port.
fn spawn_http(
    plan: &InstancePlan,
    out: std::io::PipeWriter,
    err: std::io::PipeWriter,
) -> io::Result<(Child, SocketAddr)> {
    let spec = &plan.spec;
    let port = free_port()?;
    let argv = spec.command.as_deref().unwrap_or_default();
    let (program, args) = argv.split_first().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an http function needs a command",
        )
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&spec.code_dir)
        .env_clear()
        .envs(plan.host_env.passed.iter().cloned())
        .envs(&spec.env)
        .env(&spec.http_port_env, port.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    crate::session::in_own_session(&mut cmd);
    let child = cmd.spawn()?;
    // The command holds this process's copies of the write ends: without dropping it, the
    // readers would never see the end of the streams.
    drop(cmd);
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// Starts a `lambda` function's runtime (what `kfaas runtime` runs) on a serving thread, on a free
/// loopback port it announces. Its START / END / REPORT lines and announcements go to `out`,
/// which its handler processes write to as well, so the forwarders see what they saw of a
/// `kfaas runtime` child.
fn start_runtime(
    plan: &InstancePlan,
    out: std::io::PipeWriter,
    err: std::io::PipeWriter,
) -> io::Result<Running> {
    let spec = &plan.spec;
    let options = RuntimeOptions {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        runtime: spec.runtime,
        code_dir: spec.code_dir.clone(),
        handler: spec.handler.clone(),
        function_name: spec.key.name.clone(),
        memory_mb: spec.memory_mb,
        timeout_seconds: u32::try_from(spec.timeout.as_secs().max(1)).unwrap_or(900),
        init_timeout_seconds: INIT_TIMEOUT_SECONDS,
        concurrency: spec.concurrency.max(1),
        env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        external: None,
        runtimes_dir: std::env::var_os("KFAAS_RUNTIMES_DIR").map(std::path::PathBuf::from),
        command: spec.command.clone().unwrap_or_default(),
    };
    let mut config = RuntimeConfig::resolve(options, Some(&plan.kfaas_bin))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let out = Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(out)));
    let err = Arc::new(std::fs::File::from(std::os::fd::OwnedFd::from(err)));
    config.output = runtime::Output::Pipe(runtime::PipeOutput::new(&out)?);
    config.handler_process = HandlerProcess {
        stdio: Some((out, err)),
        base_env: Some(plan.host_env.passed.clone()),
        own_session: true,
    };
    let stop = CancellationToken::new();
    let (direct_tx, direct) = oneshot::channel();
    let started = move |invoker| {
        let _ = direct_tx.send(invoker);
    };
    // The runtime's own log lines name their function and instance (as a `kfaas runtime`
    // child's did through its `[name]` prefix).
    let span = tracing::info_span!("instance", function = %plan.key, instance = %plan.id);
    let host = plan.serving.pick();
    let host_stopping = host.as_ref().map(|h| h.stopping.clone());
    // Stopped on request, or when its serving thread stops serving.
    let shutdown = {
        let (stop, host_stopping) = (stop.clone(), host_stopping.clone());
        async move {
            match host_stopping {
                Some(stopping) => tokio::select! {
                    () = stop.cancelled() => {}
                    () = stopping.cancelled() => {}
                },
                None => stop.cancelled().await,
            }
        }
    };
    let run = runtime::run_with(config, shutdown, started).instrument(span);
    let task = match host {
        Some(host) => host.handle.spawn(host.tracker.track_future(run)),
        None => plan.handle.spawn(run),
    };
    Ok(Running::Runtime {
        task: Some(task),
        stop,
        host_stopping,
        direct,
    })
}

/// A free loopback port. Another process could take it before the function binds it; the
/// instance then fails to start and is replaced, which is rare enough on a laptop.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The longest line passed on whole; a longer run without a newline is cut into lines of this
/// size (Lambda also cuts log events, at 256 KB), so a process cannot grow this buffer forever.
const MAX_LINE: usize = 256 * 1024;

/// After passing on what one read brought, a forwarder waits this long before reading again.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

fn spawn_forwarder(
    stream: &str,
    pipe: std::io::PipeReader,
    plan: &InstancePlan,
    announce: Option<mpsc::UnboundedSender<Announcement>>,
) -> io::Result<()> {
    let (key, sink) = (plan.key.clone(), plan.sink.clone());
    std::thread::Builder::new()
        .name(format!("{stream}-{}", plan.id))
        .spawn(move || forward(pipe, &key, sink.as_ref(), announce.as_ref(), BATCH_WINDOW))
        .map(drop)
}

/// Forwards a stream to the sink until it ends; stdout's announcements go to `announce`.
///
/// A blocking read on a thread of its own, then a pause of `window` after each batch: a busy
/// function's lines (START, then END and REPORT, per invocation) pile up in the pipe meanwhile
/// and go out together, instead of waking this process for every write of the instance (which
/// cost a lambda request two wake-ups of the gateway on top of its own two; a pipe registered
/// with the async runtime wakes it on every write even while nobody reads). Every complete line
/// of a read goes to the sink in one call.
fn forward(
    mut stream: impl Read,
    key: &FunctionKey,
    sink: &dyn OutputSink,
    announce: Option<&mpsc::UnboundedSender<Announcement>>,
    window: Duration,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    loop {
        if !closed {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => closed = true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let complete = if buf.len() >= MAX_LINE && !buf[..MAX_LINE].contains(&b'\n') {
            MAX_LINE
        } else if closed {
            buf.len()
        } else {
            // The whole buffer: what a cut left behind may hold newlines already.
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let text = String::from_utf8_lossy(&buf[..complete]);
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !announced(line, announce))
            .collect();
        if !lines.is_empty() {
            sink.lines(key, &lines);
        }
        drop(lines);
        drop(text);
        buf.drain(..complete);
        if closed && buf.is_empty() {
            return;
        }
        if !closed {
            std::thread::sleep(window);
        }
    }
}

/// Whether `line` was one of the runtime's announcements (and is passed to `announce`).
fn announced(line: &str, announce: Option<&mpsc::UnboundedSender<Announcement>>) -> bool {
    let Some(tx) = announce else {
        return false;
    };
    if let Some(addr) = line.strip_prefix(runtime::LISTENING).map(str::trim) {
        if let Ok(addr) = addr.parse() {
            let _ = tx.send(Announcement::Listening(addr));
        }
        return true;
    }
    if line == runtime::READY || line == runtime::INIT_FAILED {
        let _ = tx.send(Announcement::Ready);
        return true;
    }
    false
}

/// The runtime's address once it has announced both its address and readiness.
async fn wait_announced(rx: &mut mpsc::UnboundedReceiver<Announcement>) -> Option<SocketAddr> {
    let mut addr = None;
    while let Some(announcement) = rx.recv().await {
        match announcement {
            Announcement::Listening(a) => addr = Some(a),
            Announcement::Ready => {
                if addr.is_some() {
                    return addr;
                }
            }
        }
    }
    // Stdout closed before readiness: the process is exiting; `child.wait()` reports how.
    std::future::pending().await
}

/// Polls the port until it accepts a connection.
async fn wait_port(addr: SocketAddr) -> Option<SocketAddr> {
    loop {
        let attempt = Instant::now();
        if TcpStream::connect(addr).await.is_ok() {
            return Some(addr);
        }
        tokio::time::sleep_until(attempt + PORT_POLL).await;
    }
}

fn signal_group(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use std::io::Write;

    use super::*;

    /// Every `lines` call the sink got, as it got them.
    #[derive(Default)]
    struct Batches(Mutex<Vec<Vec<String>>>);

    impl OutputSink for Batches {
        fn line(&self, _: &FunctionKey, line: &str) {
            self.lines(&FunctionKey::new("default", "f"), &[line]);
        }

        fn lines(&self, _: &FunctionKey, lines: &[&str]) {
            let batch = lines.iter().map(|l| (*l).to_owned()).collect();
            self.0.lock().unwrap().push(batch);
        }
    }

    #[test]
    fn forwards_whole_lines_per_read_and_takes_out_announcements() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let sink = Arc::new(Batches::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forwarder = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let key = FunctionKey::new("default", "f");
                forward(reader, &key, sink.as_ref(), Some(&tx), Duration::ZERO);
            })
        };
        let pause = || std::thread::sleep(Duration::from_millis(20));
        writer
            .write_all(b"KFAAS_LISTENING 127.0.0.1:4000\nKFAAS_READY\n")
            .unwrap();
        pause();
        // A line split across two writes comes out whole; lines of one write come out together.
        writer.write_all(b"START Req").unwrap();
        pause();
        writer.write_all(b"uestId: 1\n").unwrap();
        pause();
        writer.write_all(b"END 1\r\nREPORT 1\n\npartial").unwrap();
        pause();
        // A run longer than MAX_LINE without a newline is cut instead of held.
        writer.write_all(&vec![b'x'; MAX_LINE]).unwrap();
        drop(writer);
        forwarder.join().unwrap();

        assert!(matches!(rx.try_recv(), Ok(Announcement::Listening(a)) if a.port() == 4000));
        assert!(matches!(rx.try_recv(), Ok(Announcement::Ready)));
        let batches = sink.0.lock().unwrap().clone();
        let lines: Vec<String> = batches.iter().flatten().cloned().collect();
        let text = lines.join("|");
        assert!(
            text.starts_with("START RequestId: 1|END 1|REPORT 1||partialxxx"),
            "{text:.80}"
        );
        assert!(
            lines.iter().all(|l| l.len() <= MAX_LINE),
            "a line over MAX_LINE"
        );
        assert_eq!(lines.iter().map(String::len).sum::<usize>(), 38 + MAX_LINE);
        assert!(!text.contains("KFAAS_"), "announcements are not forwarded");
        assert!(
            batches.iter().any(|b| b.len() >= 3),
            "END, REPORT and the empty line of one write went out as one batch: {batches:?}",
        );
    }
}
