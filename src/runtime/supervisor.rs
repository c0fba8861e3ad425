//! One task per slot that owns the slot's handler process: starts it, notices when it exits,
//! kills it at an invocation's deadline or after an init error, and stops it on shutdown.
//!
//! Handler processes run in their own process group so that a kill also ends whatever they
//! started (a shell `bootstrap` that runs `node`, a worker pool).

use std::{
    io,
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    sync::mpsc,
    time::{Instant, sleep_until},
};

use super::{
    config::HandlerProcess,
    pool::{ExitAction, Pool, SlotEvent},
};

/// How long a handler process gets to exit after SIGTERM at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Everything needed to start one handler process.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub init_timeout: Duration,
    pub process: HandlerProcess,
}

impl Launcher {
    fn spawn(&self, runtime_api: SocketAddr, lambda_env: &[(String, String)]) -> io::Result<Child> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &self.process.stdio {
            Some((out, err)) => {
                cmd.stdout(out.try_clone()?).stderr(err.try_clone()?);
            }
            None => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
        }
        if self.process.own_session {
            crate::session::in_own_session(&mut cmd);
        } else {
            cmd.process_group(0);
        }
        match &self.process.base_env {
            Some(base) => {
                cmd.env_clear().envs(base.iter().cloned());
            }
            None => {
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("KFAAS_") {
                        cmd.env_remove(key);
                    }
                }
            }
        }
        // The Lambda variables (with the user's on top) over the runtime's own environment,
        // from which `KFAAS_*` is removed.
        cmd.envs(lambda_env.iter().map(|(k, v)| (k, v)));
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string());
        cmd.spawn()
    }
}

/// Renders an exit the way Lambda's `Runtime.ExitError` messages do.
pub fn describe_exit(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig)
                    .map_or_else(|_| sig.to_string(), |s| signal_name(s).to_owned());
                format!("signal: {name}")
            }
            _ => "exited".to_owned(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGKILL => "killed",
        Signal::SIGTERM => "terminated",
        Signal::SIGSEGV => "segmentation fault",
        Signal::SIGABRT => "aborted",
        other => other.as_str(),
    }
}

async fn wait_child(child: &mut Option<Child>) -> io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

fn signal_group(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Supervises one slot until the runtime stops. With no launcher (sidecar mode) it only
/// enforces deadlines.
pub async fn supervise(
    pool: Arc<Pool>,
    slot: usize,
    runtime_api: SocketAddr,
    launcher: Option<Launcher>,
    lambda_env: Vec<(String, String)>,
    mut events: mpsc::UnboundedReceiver<SlotEvent>,
) {
    let mut child: Option<Child> = None;
    // Should this future be dropped rather than stopped (a local instance killed), the handler's
    // whole process group is killed, not only the process `kill_on_drop` reaches.
    let mut group = GroupGuard(None);
    // When the current process must have initialised; an init stuck in a loop or waiting on
    // the network would otherwise hold every queued caller.
    let mut init_deadline: Option<Instant> = None;
    let mut restart_at = launcher.as_ref().map(|_| Instant::now());
    let mut deadline: Option<(String, Instant)> = None;
    loop {
        tokio::select! {
            _ = sleep_until(restart_at.unwrap_or_else(Instant::now)), if restart_at.is_some() && child.is_none() => {
                restart_at = None;
                let Some(launcher) = &launcher else { continue };
                match launcher.spawn(runtime_api, &lambda_env) {
                    Ok(c) => {
                        pool.process_started(slot, c.id());
                        group.0 = c.id();
                        child = Some(c);
                        init_deadline = Some(Instant::now() + launcher.init_timeout);
                    }
                    Err(e) => {
                        tracing::error!(slot, error = %e, command = ?launcher.command, "cannot start the handler process");
                        pool.spawn_failed(slot, &format!("cannot start {:?}: {e}", launcher.command));
                    }
                }
            }
            status = wait_child(&mut child) => {
                child = None;
                group.0 = None;
                deadline = None;
                init_deadline = None;
                let how = describe_exit(&status);
                match pool.process_exited(slot, &how) {
                    ExitAction::Restart(delay) => restart_at = Some(Instant::now() + delay),
                    ExitAction::Wait => {}
                    ExitAction::Done => return,
                }
            }
            _ = sleep_until(deadline.as_ref().map_or_else(Instant::now, |d| d.1)), if deadline.is_some() => {
                if let Some((request_id, _)) = deadline.take()
                    && pool.expire(slot, &request_id)
                    && let Some(c) = &child
                {
                    signal_group(c, Signal::SIGKILL);
                }
            }
            _ = sleep_until(init_deadline.unwrap_or_else(Instant::now)), if init_deadline.is_some() => {
                init_deadline = None;
                let after = launcher.as_ref().map_or(Duration::ZERO, |l| l.init_timeout);
                if pool.init_expired(slot, after) && let Some(c) = &child {
                    signal_group(c, Signal::SIGKILL);
                }
            }
            event = events.recv() => match event {
                Some(SlotEvent::Started { request_id, deadline: at }) => {
                    deadline = Some((request_id, Instant::from_std(at)));
                }
                Some(SlotEvent::InitFailed) => {
                    if let Some(c) = &child {
                        signal_group(c, Signal::SIGKILL);
                    }
                }
                Some(SlotEvent::Restart) => {
                    if child.is_none() && launcher.is_some() {
                        restart_at = Some(Instant::now());
                    }
                }
                Some(SlotEvent::Stop) | None => {
                    if let Some(mut c) = child.take() {
                        stop_child(&mut c).await;
                    }
                    group.0 = None;
                    let _ = pool.process_exited(slot, "stopped");
                    return;
                }
            }
        }
    }
}

/// Kills a handler's process group when dropped while it holds one.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// SIGTERM, a short grace, then SIGKILL: the handler gets a chance to flush and clean up.
async fn stop_child(child: &mut Child) {
    signal_group(child, Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        signal_group(child, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_like_lambdas() {
        let status = ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_exit(&Ok(status)), "exit status 3");
        let killed = ExitStatus::from_raw(9);
        assert_eq!(describe_exit(&Ok(killed)), "signal: killed");
    }
}
