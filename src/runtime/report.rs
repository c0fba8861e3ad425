//! The lines `kfaas runtime` writes to its stdout: the announcements a parent process waits for
//! and Lambda's START / END / REPORT frame around each invocation's own output.
//!
//! Everything goes through [`Output::emit`], which writes one whole line in one write call
//! (under the stdout lock), so a line never interleaves with handler output written to the
//! same pipe.

use std::{
    io::Write,
    net::SocketAddr,
    os::unix::fs::FileExt,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Written once, as soon as the invoke listener is bound.
pub const LISTENING: &str = "KFAAS_LISTENING";
/// Written once, when every handler process has initialised and polled `/next`.
pub const READY: &str = "KFAAS_READY";
/// Written once, the first time a handler process fails to initialise. An instance in this
/// state still answers invocations (with the init error, retrying init each time, as Lambda
/// does), so a parent may route to it rather than wait for a readiness that will not come.
pub const INIT_FAILED: &str = "KFAAS_INIT_FAILED";

/// Where a runtime writes its lines: this process's stdout (`kfaas runtime`), or, for a runtime
/// inside `kfaas local`, the instance's output pipe, which its handler processes write to as
/// well (so START still comes before the handler's own lines).
#[derive(Clone, Debug, Default)]
pub enum Output {
    #[default]
    Stdout,
    Pipe(Arc<PipeOutput>),
}

impl Output {
    /// Writes `lines` (one or more, `\n`-separated) and a final newline in one write call; a
    /// closed output is not worth failing over.
    pub fn emit(&self, lines: &str) {
        let mut buf = Vec::with_capacity(lines.len() + 1);
        buf.extend_from_slice(lines.as_bytes());
        buf.push(b'\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf);
                let _ = out.flush();
            }
            Self::Pipe(pipe) => pipe.write(buf),
        }
    }
}

/// The write end of a pipe written from a thread that must not wait: a runtime inside `kfaas
/// local` writes from a serving thread, and a pipe that is full (its reader behind, the terminal
/// paused) would hold every request that thread serves. Lines are written without blocking;
/// what the pipe does not take goes, with every line after it until it is all written, to a
/// thread of its own that waits for room, so the lines keep their order.
#[derive(Debug)]
pub struct PipeOutput {
    /// An open file description of its own (the handlers' is a blocking one): `O_NONBLOCK`.
    file: std::fs::File,
    /// While a backlog thread runs: its queue.
    backlog: Mutex<Option<std::sync::mpsc::Sender<Vec<u8>>>>,
}

impl PipeOutput {
    /// Writes to the pipe `pipe` is a write end of.
    pub fn new(pipe: &std::fs::File) -> std::io::Result<Arc<Self>> {
        use std::os::{fd::AsRawFd, unix::fs::OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", pipe.as_raw_fd()))?;
        Ok(Arc::new(Self {
            file,
            backlog: Mutex::new(None),
        }))
    }

    fn write(self: &Arc<Self>, buf: Vec<u8>) {
        let mut backlog = self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = backlog.as_ref() {
            // Behind the lines already waiting. Should the backlog thread be gone, the reader
            // is: nothing more can be written.
            let _ = queue.send(buf);
            return;
        }
        let rest = match (&self.file).write(&buf) {
            Ok(n) if n == buf.len() => return,
            Ok(n) => buf[n..].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => buf,
            Err(_) => return, // the reader is gone
        };
        let (queue, lines) = std::sync::mpsc::channel();
        let _ = queue.send(rest);
        let me = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("kfaas-report".into())
            .spawn(move || me.write_backlog(&lines));
        if started.is_ok() {
            *backlog = Some(queue);
        }
    }

    /// The backlog thread: writes what is queued as the pipe makes room, and ends (under the
    /// lock that queues lines, so none is missed) when the queue is empty.
    fn write_backlog(&self, lines: &std::sync::mpsc::Receiver<Vec<u8>>) {
        loop {
            let next = {
                let mut backlog = self
                    .backlog
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match lines.try_recv() {
                    Ok(line) => line,
                    Err(_) => {
                        *backlog = None;
                        return;
                    }
                }
            };
            let mut at = 0;
            while at < next.len() {
                match (&self.file).write(&next[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return, // the reader is gone
                }
            }
        }
    }
}

pub fn listening_line(addr: SocketAddr) -> String {
    format!("{LISTENING} {addr}")
}

pub fn start_line(request_id: &str) -> String {
    format!("START RequestId: {request_id} Version: $LATEST")
}

pub fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

/// Lambda's REPORT line; `init` is given on the first invocation of a process only.
pub fn report_line(
    request_id: &str,
    duration: Duration,
    memory_mb: u32,
    max_used_mb: Option<u64>,
    init: Option<Duration>,
) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    let billed = ms.ceil().max(1.0);
    let used = max_used_mb.map_or_else(|| memory_mb.to_string(), |m| m.to_string());
    let mut line = format!(
        "REPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {billed:.0} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {used} MB"
    );
    if let Some(init) = init {
        line.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init.as_secs_f64() * 1000.0
        ));
    }
    line
}

/// What an invocation's END and REPORT lines say, taken when it ended and written by
/// [`EndReport::emit`] once its caller has been answered.
#[derive(Debug)]
#[must_use = "the END and REPORT lines are written by emit"]
pub struct EndReport {
    pub request_id: String,
    pub duration: Duration,
    pub memory_mb: u32,
    pub memory: Option<Arc<MemoryProbe>>,
    pub init: Option<Duration>,
    pub output: Output,
}

impl EndReport {
    /// Reads the process's peak memory and writes END and REPORT in one write.
    pub fn emit(self) {
        let used = self.memory.as_deref().and_then(MemoryProbe::max_used_mb);
        let mut lines = end_line(&self.request_id);
        lines.push('\n');
        lines.push_str(&report_line(
            &self.request_id,
            self.duration,
            self.memory_mb,
            used,
            self.init,
        ));
        self.output.emit(&lines);
    }
}

/// The peak resident memory of one handler process (`VmHWM`), Lambda's "Max Memory Used".
///
/// `/proc/PID/status` is opened once per process and read again from offset 0 per invocation
/// (the kernel regenerates it for every read at 0): one `pread` per REPORT line instead of
/// open, read and close.
#[derive(Debug)]
pub struct MemoryProbe {
    pid: u32,
    status: Mutex<Option<std::fs::File>>,
}

impl MemoryProbe {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            status: Mutex::new(None),
        }
    }

    /// The peak in MB, or `None` once the process is gone.
    pub fn max_used_mb(&self) -> Option<u64> {
        let mut status = self.status.lock().ok()?;
        if status.is_none() {
            *status = std::fs::File::open(format!("/proc/{}/status", self.pid)).ok();
        }
        let file = status.as_ref()?;
        // The whole file (about 1.5 KB) fits: one read, not read_to_string's growing ones.
        let mut buf = [0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            let n = file.read_at(&mut buf[len..], len as u64).ok()?;
            if n == 0 {
                break;
            }
            len += n;
            if let Some(kb) = parse_vm_hwm_kb(&String::from_utf8_lossy(&buf[..len])) {
                return Some(kb.div_ceil(1024));
            }
        }
        None
    }
}

fn parse_vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_lambdas_fields() {
        let line = report_line(
            "abc",
            Duration::from_micros(12_340),
            128,
            Some(40),
            Some(Duration::from_millis(150)),
        );
        assert_eq!(
            line,
            "REPORT RequestId: abc\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB\tInit Duration: 150.00 ms"
        );
        let warm = report_line("abc", Duration::from_micros(10), 256, None, None);
        assert!(
            warm.ends_with("Billed Duration: 1 ms\tMemory Size: 256 MB\tMax Memory Used: 256 MB")
        );
    }

    #[test]
    fn a_full_pipe_does_not_hold_the_writer_and_loses_no_line_nor_its_order() {
        use std::io::Read;
        let (mut reader, writer) = std::io::pipe().expect("pipe");
        // The smallest pipe there is: one page.
        nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).expect("size");
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(writer));
        let output = Output::Pipe(PipeOutput::new(&file).expect("reopen"));
        let started = std::time::Instant::now();
        // ~50 KB into a 4 KB pipe nobody reads yet: would block a plain write.
        for i in 0..1000 {
            output.emit(&format!("line {i:04} {}", "x".repeat(40)));
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the writes waited for the reader"
        );
        drop(output);
        drop(file);
        let mut text = String::new();
        reader.read_to_string(&mut text).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        for (i, line) in lines.iter().enumerate() {
            assert!(line.starts_with(&format!("line {i:04} ")), "{i}: {line}");
        }
    }

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        assert_eq!(
            parse_vm_hwm_kb("Name:\tnode\nVmHWM:\t   40960 kB\n"),
            Some(40960)
        );
        assert_eq!(parse_vm_hwm_kb("Name:\tnode\n"), None);
        let probe = MemoryProbe::new(std::process::id());
        let before = probe.max_used_mb().expect("this process's VmHWM");
        // Read again through the same open file, after the peak has grown by 64 MB.
        let grown: Vec<u8> = vec![1; 64 << 20];
        std::hint::black_box(&grown);
        let after = probe.max_used_mb().expect("this process's VmHWM again");
        assert!(after >= before + 60, "VmHWM {before} MB then {after} MB");
        assert_eq!(MemoryProbe::new(u32::MAX).max_used_mb(), None);
    }
}
