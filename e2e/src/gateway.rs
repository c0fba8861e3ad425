//! Runs `kfaas gateway` for a test and talks HTTP to it.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::process::KfaasProcess;

/// A plain HTTP/1.0 request with headers: (status, lower-cased headers, body).
pub async fn request(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Vec<(String, String)>, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf))
        .await
        .with_context(|| format!("read {addr}: timeout"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{addr}: not an HTTP response: {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// The address after `prefix` in a line like `... on http://127.0.0.1:41234 (admin on ...`.
fn addr_after(line: &str, prefix: &str) -> Option<String> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    Some(
        rest.chars()
            .take_while(|c| !c.is_whitespace() && *c != ')' && *c != ',')
            .collect(),
    )
}

/// Starts `kfaas gateway` for `ns` on free ports and waits until it is ready. Returns the
/// process and its address.
pub fn start_gateway(ns: &str, id: &str) -> (KfaasProcess, String) {
    let mut gateway = KfaasProcess::spawn(
        id,
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--namespace",
            ns,
            "--usage-status-seconds",
            "1",
            "--secret-refresh-seconds",
            "1",
            "--gateway-id",
            id,
        ],
        &[],
    )
    .expect("spawn kfaas gateway");
    let line = gateway
        .wait_for_output("kfaas gateway: serving on", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let addr = addr_after(&line, "serving on http://").expect("gateway address");
    gateway
        .wait_for_output("configuration loaded; ready", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    (gateway, addr)
}
