//! The life of one local function instance: start its process, learn its address and
//! readiness, forward its output, and stop it gracefully or notice that it died.
//!
//! A `lambda` instance is a `kfaas runtime` child on `127.0.0.1:0`: it announces its address
//! (`KFAAS_LISTENING`) and readiness (`KFAAS_READY`, or `KFAAS_INIT_FAILED`, after which it
//! still answers with the init error) on stdout, so readiness costs no polling. An `http`
//! instance runs the function's own command with `PORT` set to a free port and is ready when
//! that port accepts a connection.

use std::{
    io::{self, Read},
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::{
    net::TcpStream,
    process::{Child, Command},
    sync::mpsc,
    time::{Instant, sleep},
};
use tokio_util::sync::CancellationToken;

use super::{
    instance_env::HostEnv,
    instances::{LocalFunctionSpec, OutputSink, Protocol},
};
use crate::{backend::FunctionKey, runtime};

/// How long an instance may take from spawn to ready before it counts as failed.
const START_DEADLINE: Duration = Duration::from_secs(120);
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
    fn ready(&self, key: &FunctionKey, id: &str, addr: SocketAddr);
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
    let (mut child, mut announcements, http_addr) = match spawn(plan) {
        Ok(spawned) => spawned,
        Err(e) => {
            plan.sink.line(
                &plan.key,
                &format!("cannot start instance {}: {e}", plan.id),
            );
            return Exit::StartFailed(e.to_string());
        }
    };
    // Held (not left in `child`, whose `wait` would close it) until this instance ends: a
    // `kfaas runtime` started with `--exit-with-parent` shuts down when it closes, which also
    // happens when this whole process dies.
    let _parent_pipe = child.stdin.take();
    let ready = async {
        match http_addr {
            Some(addr) => wait_port(addr).await,
            None => wait_announced(&mut announcements).await,
        }
    };
    let addr = tokio::select! {
        addr = ready => addr,
        status = child.wait() => return Exit::StartFailed(describe(&status)),
        () = plan.stop.cancelled() => {
            stop(plan, &mut child).await;
            return Exit::Stopped;
        }
        () = sleep(START_DEADLINE) => {
            signal_group(&child, Signal::SIGKILL);
            let _ = child.wait().await;
            return Exit::StartFailed("not ready within the start deadline".into());
        }
    };
    let Some(addr) = addr else {
        let status = child.wait().await;
        return Exit::StartFailed(describe(&status));
    };
    events.ready(&plan.key, &plan.id, addr);
    tokio::select! {
        status = child.wait() => Exit::Died(describe(&status)),
        () = plan.stop.cancelled() => {
            stop(plan, &mut child).await;
            Exit::Stopped
        }
    }
}

/// Lambda's timeout plus five seconds: long enough for an in-flight invocation to finish.
fn grace(spec: &LocalFunctionSpec) -> Duration {
    spec.timeout + Duration::from_secs(5)
}

type Spawned = (
    Child,
    mpsc::UnboundedReceiver<Announcement>,
    Option<SocketAddr>,
);

fn spawn(plan: &InstancePlan) -> io::Result<Spawned> {
    let spec = &plan.spec;
    let (mut cmd, http_addr) = match spec.protocol {
        Protocol::Lambda => (runtime_command(plan), None),
        Protocol::Http => {
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
                .env(&spec.http_port_env, port.to_string());
            (cmd, Some(SocketAddr::from(([127, 0, 0, 1], port))))
        }
    };
    let stdin = match spec.protocol {
        Protocol::Lambda => Stdio::piped(),
        Protocol::Http => Stdio::null(),
    };
    // Plain pipes read by threads of their own, not by the async runtime: see `forward`.
    let (out, out_writer) = std::io::pipe()?;
    let (err, err_writer) = std::io::pipe()?;
    cmd.stdin(stdin)
        .stdout(out_writer)
        .stderr(err_writer)
        .kill_on_drop(true);
    in_own_session(&mut cmd);
    let child = cmd.spawn()?;
    // The command holds this process's copies of the write ends: without dropping it, the
    // readers would never see the end of the streams.
    drop(cmd);
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_forwarder("out", out, plan, Some(tx))?;
    spawn_forwarder("err", err, plan, None)?;
    Ok((child, rx, http_addr))
}

/// Starts `cmd`'s process in a session of its own, which also gives it a process group of its
/// own (so the terminal's Ctrl-C reaches only `kfaas local`, which stops its instances in order,
/// and `killpg` reaches the instance with its children).
///
/// A session rather than only a group because Linux, with autogroup scheduling (the default of
/// most desktop distributions), shares the CPU between sessions before it shares it between
/// processes: instances in the gateway's session competed with the gateway for one share, where
/// a backend behind HAProxy or nginx has a share of its own. Measured at 32 connections, that was
/// ~5 % of the gateway's throughput (docs/benchmarks.md, "Sessions and write phases").
#[allow(unsafe_code)]
fn in_own_session(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setsid(2) is one, and the closure allocates nothing
    // (an `Errno` becomes an `io::Error` without allocating).
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
}

/// `kfaas runtime ...` for a lambda function, on a free loopback port it announces.
fn runtime_command(plan: &InstancePlan) -> Command {
    let spec = &plan.spec;
    let mut cmd = Command::new(&plan.kfaas_bin);
    // The runtime passes its environment on to the handler, with the Lambda variables and the
    // Function's own on top (`--env`).
    cmd.env_clear()
        .envs(plan.host_env.passed.iter().cloned())
        .envs(plan.host_env.runtime.iter().cloned());
    cmd.arg("runtime")
        .arg("--exit-with-parent")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--function-name")
        .arg(&spec.key.name)
        .arg("--code")
        .arg(&spec.code_dir)
        .args(["--memory-mb", &spec.memory_mb.to_string()])
        .args([
            "--timeout-seconds",
            &spec.timeout.as_secs().max(1).to_string(),
        ])
        .args(["--concurrency", &spec.concurrency.max(1).to_string()]);
    if let Some(kind) = spec.runtime {
        cmd.args(["--runtime", kind.as_str()]);
    }
    if let Some(handler) = &spec.handler {
        cmd.args(["--handler", handler]);
    }
    for (k, v) in &spec.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    if let Some(command) = spec.command.as_deref().filter(|c| !c.is_empty()) {
        cmd.arg("--").args(command);
    }
    cmd.current_dir(&spec.code_dir);
    cmd
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

/// SIGTERM, wait up to `grace`, then SIGKILL. A `kfaas runtime` gets SIGTERM alone (it drains
/// its invocations and then stops its handlers itself); an http function's whole group gets it.
async fn stop(plan: &InstancePlan, child: &mut Child) {
    let grace = grace(&plan.spec);
    match (
        plan.spec.protocol,
        child.id().and_then(|p| i32::try_from(p).ok()),
    ) {
        (Protocol::Lambda, Some(pid)) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        _ => signal_group(child, Signal::SIGTERM),
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(child, Signal::SIGKILL);
        let _ = child.wait().await;
        plan.sink.line(
            &plan.key,
            &format!(
                "kfaas: instance {} did not exit within {grace:?} of SIGTERM; killed",
                plan.id
            ),
        );
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
