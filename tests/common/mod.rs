//! Starting a real `kfaas local` process for integration tests, and reading what it prints.
#![allow(dead_code)] // each test file uses a different part

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A running `kfaas local`; killed on drop. It also stops by itself when this test process
/// ends (its stdin is a pipe held here), so a server kept in a `static` never outlives the run.
pub struct LocalServer {
    child: Child,
    stdin_pipe: Option<std::process::ChildStdin>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().expect("lines").push(line);
        }
    });
}

impl LocalServer {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(dir, extra, &[])
    }

    /// Starts `kfaas local` with `env` added to (a copy of) this process's environment.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kfaas"))
            .arg("local")
            .arg(dir)
            .args(["--port", "0", "--exit-with-parent"])
            .args(extra)
            .env("KFAAS_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kfaas local");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdin = child.stdin.take();
        collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout));
        collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = stdout.lock().expect("lines").iter().find_map(|l| {
                let (_, rest) = l.split_once(" on http://")?;
                let (addr, admin) = rest.split_once(" (admin on http://")?;
                Some((
                    addr.parse().ok()?,
                    admin.trim_end_matches(')').parse().ok()?,
                ))
            });
            if let Some((addr, admin)) = found {
                return Self {
                    child,
                    stdin_pipe: stdin,
                    addr,
                    admin,
                    stdout,
                    stderr,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "kfaas local exited with {status}: {:?}",
                    stderr.lock().expect("lines")
                );
            }
            assert!(
                Instant::now() < deadline,
                "kfaas local did not start: {:?}",
                stderr.lock()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking_get(&format!("http://{}/metrics", self.admin))
    }

    /// Waits until a printed line (stdout or stderr) satisfies `want`.
    pub fn wait_for_line(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            for lines in [&self.stdout, &self.stderr] {
                if let Some(l) = lines.lock().expect("lines").iter().find(|l| want(l)) {
                    return l.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no such line within {timeout:?}; stdout: {:?}\nstderr: {:?}",
                self.stdout.lock(),
                self.stderr.lock()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the pipe on `kfaas local`'s stdin, as this process ending would.
    pub fn close_stdin(&mut self) {
        self.stdin_pipe.take();
    }

    /// Whether the `kfaas local` process has exited.
    pub fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    /// How the `kfaas local` process ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the `kfaas local` process to end, for at most `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "kfaas local did not exit within {limit:?}: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the `kfaas local` process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.child.id()).unwrap_or(0);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }

    /// The direct children of the `kfaas local` process (its function instances).
    pub fn children(&self) -> Vec<u32> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    pub fn lines(&self) -> Vec<String> {
        let mut all = self.stdout.lock().expect("lines").clone();
        all.extend(self.stderr.lock().expect("lines").iter().cloned());
        all
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking GET for the admin port, so tests need no runtime for it.
mod reqwest {
    use std::io::{Read, Write};

    pub fn blocking_get(url: &str) -> String {
        let rest = url.strip_prefix("http://").expect("http url");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host).expect("connect admin");
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read");
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

/// The value of a metric line (`name{labels} value`) whose text contains all of `parts`.
pub fn metric_value(metrics: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}
