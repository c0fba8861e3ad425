//! The access log: one JSON object per request, with API Gateway's `$context` field names,
//! written by a background thread so the request path never waits on the terminal or a pipe.

use std::{
    cell::RefCell,
    io::Write,
    net::IpAddr,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use serde::Serialize;

/// How long the writer lets lines gather before writing them out.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// How long a stopping gateway waits for the access log's last lines to be written.
pub const FINISH_WITHIN: Duration = Duration::from_secs(2);

/// One request, as logged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub ip: IpAddr,
    #[serde(serialize_with = "serialize_request_time")]
    pub request_time: chrono::DateTime<chrono::Utc>,
    pub http_method: &'a str,
    pub path: &'a str,
    pub route_key: &'a str,
    pub stage: &'a str,
    pub api: &'a str,
    pub status: u16,
    pub protocol: &'a str,
    pub response_length: u64,
    /// Milliseconds from request to response (API Gateway's `responseLatency`).
    pub response_latency: f64,
    /// Milliseconds the function took (`integrationLatency`), when it was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_latency: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<&'a str>,
    /// The request waited for its function to scale from zero.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cold_start: bool,
    /// Category of the gateway's own failure, when it answered itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Detail of that failure, for the operator (never sent to the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Lines waiting for the writer; beyond this many bytes new lines are dropped (and counted)
/// rather than let memory grow while the output is stuck.
const MAX_PENDING: usize = 8 << 20;

/// A line's buffer is kept for the next line unless one line made it this large.
const KEEP_LINE: usize = 16 * 1024;

/// Where access-log lines go.
#[derive(Clone)]
pub struct AccessLog {
    to_writer: Option<Arc<ToWriter>>,
}

/// The lines the serving threads append to and the writer takes away in batches: one lock per
/// line, no allocation, and one wake-up of the writer per batch at most.
struct Shared {
    pending: Mutex<Pending>,
    /// `MAX_PENDING` (smaller in tests).
    max_pending: usize,
    wake: Condvar,
    /// Signalled when the writer has written everything and ended.
    done: Condvar,
}

impl Shared {
    /// The pending lines; a thread that panicked holding them left them whole (appending is
    /// the only thing done under the lock), so a poisoned lock is used as it is.
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.pending().closed = true;
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    /// The writer sleeps until lines come (the next line, logged or dropped, wakes it).
    writer_waiting: bool,
    /// Every `AccessLog` is gone, or the gateway is stopping: the writer writes what is left
    /// and ends.
    closed: bool,
    /// The writer has ended.
    finished: bool,
}

/// Held by every clone of an `AccessLog`; when the last goes, the writer is told to finish.
struct ToWriter {
    shared: Arc<Shared>,
}

impl Drop for ToWriter {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl AccessLog {
    /// Lines are written to `out` (stdout in production) by a background thread.
    pub fn spawn(out: Box<dyn Write + Send>) -> Self {
        Self::spawn_holding(out, MAX_PENDING)
    }

    /// `spawn`, dropping lines beyond `max_pending` bytes waiting.
    fn spawn_holding(out: Box<dyn Write + Send>, max_pending: usize) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            max_pending,
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let for_writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("kfaas-access-log".into())
            .spawn(move || write_lines(&for_writer, out))
            .map(|_| Self {
                to_writer: Some(Arc::new(ToWriter { shared })),
            })
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot start the access-log writer; access logs are off");
                Self::disabled()
            })
    }

    pub fn disabled() -> Self {
        Self { to_writer: None }
    }

    /// Writes out the lines logged so far and stops the writer, waiting for it at most
    /// `within`: called when the gateway stops, so the last requests' lines are not lost with
    /// the process. Lines logged after this are not written.
    pub fn finish(&self, within: Duration) {
        let Some(to_writer) = &self.to_writer else {
            return;
        };
        let shared = &to_writer.shared;
        shared.close();
        let _ = shared
            .done
            .wait_timeout_while(shared.pending(), within, |pending| !pending.finished);
    }

    /// Whether lines are written at all (records need not be built otherwise).
    pub fn enabled(&self) -> bool {
        self.to_writer.is_some()
    }

    pub fn log(&self, record: &AccessRecord<'_>) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let Some(to_writer) = &self.to_writer else {
            return;
        };
        let shared = &to_writer.shared;
        LINE.with_borrow_mut(|line| {
            line.clear();
            if serde_json::to_writer(&mut *line, record).is_err() {
                return;
            }
            line.push(b'\n');
            let mut pending = shared.pending();
            if pending.lines.len() + line.len() > shared.max_pending {
                pending.dropped += 1;
            } else {
                pending.lines.extend_from_slice(line);
            }
            // A dropped line wakes the writer too, which reports it.
            if std::mem::take(&mut pending.writer_waiting) {
                drop(pending);
                shared.wake.notify_one();
            }
            if line.capacity() > KEEP_LINE {
                *line = Vec::new();
            }
        });
    }
}

fn write_lines(shared: &Shared, out: Box<dyn Write + Send>) {
    let mut out = out;
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut pending = shared.pending();
            while pending.lines.is_empty() && pending.dropped == 0 && !pending.closed {
                pending.writer_waiting = true;
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut pending.lines, &mut batch);
            (std::mem::take(&mut pending.dropped), pending.closed)
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "the access log could not keep up; lines were dropped"
            );
        }
        let _ = out.write_all(&batch);
        let _ = out.flush();
        if closed {
            shared.pending().finished = true;
            shared.done.notify_all();
            return;
        }
        if batch.capacity() > shared.max_pending / 8 {
            batch = Vec::new();
        } else {
            batch.clear();
        }
        // Let lines gather for a moment: one wake-up and one write per batch, not per request
        // (waking this thread per line cost as much CPU as the rest of the gateway).
        std::thread::sleep(BATCH_WINDOW);
    }
}

/// API Gateway's `requestTime` (`25/Nov/2026:21:10:00 +0000`), formatted once a second per
/// thread: the format is parsed each time it is used.
fn serialize_request_time<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    LAST.with_borrow_mut(|(second, text)| {
        if *second != at.timestamp() {
            *second = at.timestamp();
            *text = at.format("%d/%b/%Y:%H:%M:%S %z").to_string();
        }
        serializer.serialize_str(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the writer writes.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<u8>>>);

    impl Collected {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    impl Write for Collected {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// An access log writing into what it returns.
    fn spawned() -> (Collected, AccessLog) {
        let collected = Collected::default();
        let log = AccessLog::spawn(Box::new(collected.clone()));
        (collected, log)
    }

    /// 2025-11-25 21:00:00 UTC.
    fn a_second() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_764_104_400, 0).expect("time")
    }

    fn record(request_id: &str, at: chrono::DateTime<chrono::Utc>) -> AccessRecord<'_> {
        AccessRecord {
            request_id,
            ip: "192.0.2.7".parse().expect("address"),
            request_time: at,
            http_method: "GET",
            path: "/hello",
            route_key: "GET /hello",
            stage: "prod",
            api: "shop",
            status: 200,
            protocol: "HTTP/1.1",
            response_length: 5,
            response_latency: 1.25,
            integration_latency: None,
            function: Some("hello"),
            user_agent: None,
            api_key_id: None,
            cold_start: false,
            error: None,
            error_message: None,
        }
    }

    fn lines(collected: &Collected, want: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = collected.text();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            if lines.len() >= want || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_from_several_threads() {
        let (collected, log) = spawned();
        let at = a_second();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for n in 0..500 {
                        log.log(&record(&format!("{t}-{n}"), at));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let lines = lines(&collected, 1000);
        assert_eq!(lines.len(), 1000);
        for t in 0..2 {
            let ids: Vec<&str> = lines
                .iter()
                .filter_map(|l| l["requestId"].as_str())
                .filter(|id| id.starts_with(&format!("{t}-")))
                .collect();
            let expected: Vec<String> = (0..500).map(|n| format!("{t}-{n}")).collect();
            assert_eq!(ids, expected, "thread {t}'s lines, in order");
        }
        assert_eq!(lines[0]["ip"], "192.0.2.7");
        assert_eq!(lines[0]["requestTime"], "25/Nov/2025:21:00:00 +0000");
        assert_eq!(lines[0]["routeKey"], "GET /hello");
    }

    #[test]
    fn the_request_time_follows_the_second_it_is_given() {
        let (collected, log) = spawned();
        let first = a_second();
        log.log(&record("a", first));
        log.log(&record("b", first + chrono::Duration::seconds(1)));
        log.log(&record("c", first + chrono::Duration::days(1)));
        let lines = lines(&collected, 3);
        let times: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["requestTime"].as_str())
            .collect();
        assert_eq!(
            times,
            [
                "25/Nov/2025:21:00:00 +0000",
                "25/Nov/2025:21:00:01 +0000",
                "26/Nov/2025:21:00:00 +0000"
            ]
        );
    }

    #[test]
    fn finishing_writes_every_line_logged_before_it() {
        let (collected, log) = spawned();
        let at = a_second();
        log.log(&record("first", at));
        // The writer is now asleep between batches or waiting: either way the lines below are
        // pending when `finish` is called, and must be written before it returns.
        for n in 0..10 {
            log.log(&record(&n.to_string(), at));
        }
        log.finish(Duration::from_secs(5));
        let text = collected.text();
        assert_eq!(text.lines().count(), 11, "{text}");
        // After finishing, lines are no longer written (and logging does not block or panic).
        log.log(&record("late", at));
        std::thread::sleep(Duration::from_millis(50));
        let text = collected.text();
        assert!(!text.contains("late"));
    }

    #[test]
    fn a_dropped_line_wakes_the_writer_to_report_it() {
        let log = AccessLog::spawn_holding(Box::new(Collected::default()), 1024);
        let shared = Arc::clone(&log.to_writer.as_ref().expect("enabled").shared);
        // Whether `holds` becomes true of the pending lines within 5 s.
        let eventually = |holds: &dyn Fn(&Pending) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !holds(&shared.pending()) {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
        };
        assert!(
            eventually(&|p| p.writer_waiting),
            "the writer waits for lines"
        );
        let huge = "a".repeat(1024);
        let mut too_long = record("huge", a_second());
        too_long.user_agent = Some(&huge);
        log.log(&too_long);
        assert!(
            eventually(&|p| p.dropped == 0),
            "the writer took the dropped line's count"
        );
        assert!(shared.pending().lines.is_empty(), "the line was not kept");
    }

    #[test]
    fn the_writer_ends_when_the_last_log_goes() {
        let (collected, log) = spawned();
        let shared = Arc::clone(&log.to_writer.as_ref().expect("enabled").shared);
        let at = a_second();
        for n in 0..10 {
            log.log(&record(&n.to_string(), at));
        }
        drop(log);
        let (pending, _) = shared
            .done
            .wait_timeout_while(shared.pending(), Duration::from_secs(5), |p| !p.finished)
            .expect("lock");
        assert!(pending.finished, "the writer ended");
        drop(pending);
        assert_eq!(lines(&collected, 10).len(), 10);
    }
}
