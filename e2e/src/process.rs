//! Runs `kfaas` subcommands (controller, gateway) as child processes of a test, against the
//! cluster in KUBECONFIG. Output goes to a log file (named in every failure message) so a test
//! can wait for a line and a failed run can be read afterwards. The child is killed on drop.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The kfaas binary the suite runs: KFAAS_BIN (e2e/run.sh exports it), else target/debug/kfaas.
pub fn kfaas_bin() -> PathBuf {
    std::env::var_os("KFAAS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo().join("target/debug/kfaas"))
}

/// A running `kfaas` child process.
pub struct KfaasProcess {
    child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl KfaasProcess {
    /// Starts `kfaas ARGS...` with extra environment variables; stdout and stderr go to
    /// `<tmp>/kfaas-e2e-<name>-<pid>.log`.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        // A counter, so two processes spawned under one name never share a log file.
        static SPAWNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("kfaas-e2e-{name}-{}-{n}.log", std::process::id()));
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(kfaas_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("KFAAS_LOG_FORMAT", "text");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {} {args:?}", kfaas_bin().display()))?;
        Ok(Self {
            child,
            log,
            name: name.to_owned(),
        })
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the output holds `needle`; fails (with the output) on exit or timeout.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if let Some(line) = out.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "kfaas {} exited ({status}) before printing {needle:?}; output ({}):\n{out}",
                    self.name,
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "kfaas {} did not print {needle:?} within {timeout:?}; output ({}):\n{out}",
                    self.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// `kfaas controller` for one namespace, its lease in that namespace, under `identity`.
pub fn controller_args<'a>(ns: &'a str, identity: &'a str) -> [&'a str; 7] {
    [
        "controller",
        "--namespace",
        ns,
        "--lease-namespace",
        ns,
        "--identity",
        identity,
    ]
}

/// Starts `kfaas controller` for one namespace and waits until it leads.
pub fn start_controller(ns: &str, extra: &[&str]) -> KfaasProcess {
    let mut args = controller_args(ns, "e2e-controller").to_vec();
    args.extend_from_slice(extra);
    let mut controller = KfaasProcess::spawn(
        &format!("controller-{ns}"),
        &args,
        &[("KFAAS_LOG", "info,kube=warn")],
    )
    .expect("spawn kfaas controller");
    controller
        .wait_for_output(
            "kfaas controller: watching namespace",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    controller
        .wait_for_output("leading", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    controller
}

impl Drop for KfaasProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
