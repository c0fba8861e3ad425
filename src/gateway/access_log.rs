//! The access log: one JSON object per request, with API Gateway's `$context` field names,
//! written by a background thread so the request path never waits on the terminal or a pipe.

use std::{
    io::Write,
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
};

use serde::Serialize;

/// How long the writer lets lines gather before writing them out.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// One request, as logged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub ip: String,
    pub request_time: String,
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

/// Where access-log lines go.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
}

impl AccessLog {
    /// Lines are written to `out` (stdout in production) by a background thread.
    pub fn spawn(out: Box<dyn Write + Send>) -> Self {
        let (tx, rx) = mpsc::sync_channel(16 * 1024);
        std::thread::Builder::new()
            .name("kfaas-access-log".into())
            .spawn(move || write_lines(rx, out))
            .map(|_| Self { tx: Some(tx) })
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot start the access-log writer; access logs are off");
                Self::disabled()
            })
    }

    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Whether lines are written at all (records need not be built otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, record: &AccessRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        // A full queue drops the line rather than slowing requests down.
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            tracing::warn!("access log queue full; a line was dropped");
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        // Let lines gather for a moment: one wake-up and one write per batch, not per request
        // (waking this thread per line cost as much CPU as the rest of the gateway).
        std::thread::sleep(BATCH_WINDOW);
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
        }
        let _ = out.flush();
    }
}
