//! A graceful stop of `kfaas local` over a real process: the end of an answer that the client
//! has not taken yet when SIGTERM comes is still written before the connection (and the process)
//! ends.
//!
//! The gateway's HTTP/1 server queues each connection's writes in an `Outbox`
//! (src/gateway/outbox.rs); what the socket does not take at once is finished by a drainer task
//! on the connection's serving thread. That thread's runtime stops once every connection has
//! returned, so a connection must wait for its pending bytes before it returns: a keep-alive
//! connection when the stop ends it between requests (`serve_connection`), a closing one before
//! its FIN (`linger`). Without that wait the pending bytes are dropped with the runtime (or cut
//! off by the FIN), and the client sees a short answer and then the end of the connection.
//!
//! For that to be tested, the stop must come when the connection is done with its answer (not
//! waiting inside it for its writes, as it does while more than `MOST_PENDING` bytes are queued)
//! and its outbox still holds the end of it. The sockets' buffers take several megabytes, how
//! many depending on the system, so the client reads nothing until the stop and the test
//! watches the connection's queues in /proc/net/tcp:
//! 1. a probe answer fills the sockets between the gateway and the client: they hold `held`
//!    bytes;
//! 2. the real answer (chunked) starts with `held - ROOM` bytes, which fit;
//! 3. then the function sends `PIECE` bytes more each time the test tells it, until the socket
//!    does not take a whole piece: what it did not take waits in the outbox;
//! 4. the function ends the answer, and the connection goes on (to its next request, or to
//!    closing) with at most a piece pending;
//! 5. SIGTERM; only then does the client read, and it must get every byte, and kfaas local exit
//!    cleanly after that.

mod common;

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{LocalServer, repo};

/// The probe's body: larger than what the sockets between the gateway and a client that does
/// not read hold together (about 4 MB with Linux's default `tcp_wmem`), so that it fills them.
const PROBE_BODY: usize = 24 * 1024 * 1024;
/// How far below `held` the real answer's first part stays, for the sockets not to hold quite
/// the same from one connection to another.
const ROOM: usize = 160 * 1024;
/// What the function sends each time it is told.
const PIECE: usize = 32 * 1024;
/// A connection waits for its writes once more than this is pending (`WRITE_BATCH` in
/// src/gateway/h1_server.rs); up to this much, it goes on without waiting.
const MOST_PENDING: usize = 64 * 1024;
/// The queues count as settled when they have not changed for this long.
const SETTLED: Duration = Duration::from_millis(500);
/// After a piece is sent, the queues count as done moving when they have not changed for this
/// long since they last did (or for `SETTLED` if they do not move at all).
const MOVED: Duration = Duration::from_millis(150);

#[test]
fn a_stop_writes_what_a_keep_alive_connection_still_has_pending() {
    // The answer is complete on the gateway's side and the connection waits for the next
    // request: the stop ends it there, once its pending bytes are written.
    stop_with_an_answer_pending(false);
}

#[test]
fn a_stop_writes_what_a_closing_connection_still_has_pending() {
    // The client asked to close after the answer: the FIN goes after the pending bytes.
    stop_with_an_answer_pending(true);
}

fn stop_with_an_answer_pending(close: bool) {
    let started = Instant::now();
    let mut kfaas = LocalServer::start(
        &repo().join("tests/fixtures/graceful-stop"),
        &["--no-access-log"],
    );

    // 1. What the sockets between the gateway and a client that reads nothing hold. (This also
    // starts the function's instance.)
    let held = {
        let probe = request(kfaas.addr, &format!("/bytes/{PROBE_BODY}"), false);
        let held = settle(&mut kfaas, &probe, None, SETTLED);
        assert!(
            held < PROBE_BODY,
            "the sockets took the whole probe ({held} bytes): make PROBE_BODY larger"
        );
        assert!(held > 2 * ROOM, "the sockets hold only {held} bytes");
        held
    };

    // 2. The first part of the answer, which fits.
    let dir = tempfile::tempdir().expect("temporary directory");
    let orders = dir.path().join("orders");
    let mut orders_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&orders)
        .expect("orders file");
    let mut order = |what: &[u8]| orders_file.write_all(what).expect("write an order");
    let first = (held - ROOM) / 4 * 4;
    let path = format!(
        "/stream?first={first}&piece={PIECE}&control={}",
        percent_encoding::utf8_percent_encode(
            &orders.to_string_lossy(),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let mut client = request(kfaas.addr, &path, close);
    let mut in_sockets = settle(&mut kfaas, &client, None, SETTLED);
    assert!(
        in_sockets > first,
        "the sockets hold {in_sockets} bytes of the answer's first {first}: they were to fit"
    );

    // 3. More, a piece at a time, until the socket does not take a whole one.
    let mut pieces = 0;
    loop {
        assert!(
            pieces * PIECE < 4 * ROOM,
            "the sockets took {pieces} pieces after the first part: they hold more than the probe \
             found ({held} bytes)"
        );
        order(b"p");
        pieces += 1;
        let now = settle(&mut kfaas, &client, Some(in_sockets), MOVED);
        let took = now - in_sockets;
        in_sockets = now;
        if took < PIECE {
            break;
        }
    }
    assert!(
        pieces > 1,
        "the sockets did not take the whole first piece: the first part filled them"
    );

    // 4. The end of the answer: it is complete on the gateway's side.
    order(b"e");
    let in_sockets = settle(&mut kfaas, &client, None, SETTLED);

    // 5. The stop; then the client reads.
    kfaas.signal(nix::sys::signal::Signal::SIGTERM);
    kfaas.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("kfaas local: stopping (SIGTERM)")
    });
    // The stop has reached the serving threads (they are told right after that line).
    std::thread::sleep(Duration::from_millis(200));
    let exited_before_the_client_read = kfaas.exit_status();

    let received = read_to_the_end(&mut client);
    // A closing connection lingers until the client closes too.
    drop(client);
    let body_len = first + pieces * PIECE;
    let (head, body) = parse_chunked(&received).unwrap_or_else(|e| {
        panic!(
            "the answer was cut at the stop: {e} after {} bytes, with {} of them in the sockets at \
             the stop",
            received.len(),
            in_sockets
        )
    });
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    // The answer began before the stop: the connection was to stay open unless the client asked
    // otherwise, so this tells which way it ended.
    assert_eq!(head.contains("\r\nconnection: close\r\n"), close, "{head}");
    assert_eq!(body.len(), body_len, "the body's length");
    if let Some(word) = body
        .chunks_exact(4)
        .enumerate()
        .position(|(i, w)| u32::from_le_bytes(w.try_into().expect("4 bytes")) as usize != i)
    {
        panic!(
            "the body differs from what the function sent from byte {}",
            word * 4
        );
    }
    // The test did what it meant to: some of the answer was still in kfaas local at the stop, and
    // little enough that the connection had gone on.
    let pending = received.len().saturating_sub(in_sockets);
    assert!(
        pending > 0 && pending <= MOST_PENDING,
        "{pending} bytes of the {}-byte answer were in kfaas local at the stop, not \
         1..={MOST_PENDING}",
        received.len()
    );
    assert_eq!(
        exited_before_the_client_read, None,
        "kfaas local exited while the answer was still being written"
    );

    let status = kfaas.wait_for_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "kfaas local exited with {status}: {:?}",
        kfaas.lines()
    );
    eprintln!(
        "{pending} of {} bytes were pending in kfaas local at the stop ({pieces} pieces after the \
         first {first} bytes); {:?} in all",
        received.len(),
        started.elapsed()
    );
}

/// Sends `GET {path}` on a new connection (asking to close after it if `close`).
fn request(kfaas: SocketAddr, path: &str, close: bool) -> TcpStream {
    let mut stream = TcpStream::connect(kfaas).expect("connect");
    let connection = if close { "connection: close\r\n" } else { "" };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {kfaas}\r\n{connection}\r\n"
    )
    .expect("send the request");
    stream
}

/// How many bytes `client`'s connection holds in its sockets (the gateway's send queue and the
/// client's receive queue: the client reads nothing meanwhile) once they have not changed for
/// `quiet`. With `from` (what they held before), they may also not change at all: that counts
/// once it has lasted `SETTLED`. Without it, they must hold something.
fn settle(
    kfaas: &mut LocalServer,
    client: &TcpStream,
    from: Option<usize>,
    quiet: Duration,
) -> usize {
    let ends = (kfaas.addr, client.local_addr().expect("local address"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    let mut since = Instant::now();
    loop {
        let now = match queues(ends.0, ends.1) {
            (Some(gateway), Some(client)) => Some(gateway + client),
            _ => None,
        };
        if now != last {
            (last, since) = (now, Instant::now());
        } else if let Some(held) = now {
            let quiet_for = since.elapsed();
            let settled = match from {
                // Once they have moved, `quiet` is enough; while they have not, `SETTLED`.
                Some(from) => quiet_for >= if held == from { SETTLED } else { quiet },
                None => held > 0 && quiet_for >= quiet,
            };
            if settled {
                return held;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the connection's queues did not settle: {last:?}; {:?}",
            kfaas.lines()
        );
        if let Some(status) = kfaas.exit_status() {
            panic!("kfaas local exited with {status}: {:?}", kfaas.lines());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The head (lowercased) and the decoded body of a chunked HTTP/1.1 answer, or what is missing.
fn parse_chunked(answer: &[u8]) -> Result<(String, Vec<u8>), String> {
    let find = |from: usize, what: &[u8]| {
        answer[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|at| from + at)
    };
    let head_end = find(0, b"\r\n\r\n").ok_or("no end of the head")? + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
    if !head.contains("\r\ntransfer-encoding: chunked\r\n") {
        return Err(format!("not chunked: {head}"));
    }
    let mut body = Vec::new();
    let mut at = head_end;
    loop {
        let line_end = find(at, b"\r\n").ok_or("no chunk size")?;
        let size = std::str::from_utf8(&answer[at..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("a bad chunk size")?;
        at = line_end + 2;
        if size == 0 {
            return if answer[at..] == *b"\r\n" {
                Ok((head, body))
            } else {
                Err(format!("{} bytes after the last chunk", answer.len() - at))
            };
        }
        if answer.len() < at + size + 2 {
            return Err(format!("a chunk of {size} bytes is short"));
        }
        body.extend_from_slice(&answer[at..at + size]);
        if answer[at + size..at + size + 2] != *b"\r\n" {
            return Err("a chunk does not end with CRLF".into());
        }
        at += size + 2;
    }
}

/// From /proc/net/tcp{,6}: the send queue of the gateway's end of the connection between `kfaas`
/// and `client`, and the receive queue of the client's end.
fn queues(kfaas: SocketAddr, client: SocketAddr) -> (Option<usize>, Option<usize>) {
    let (mut gateway_tx, mut client_rx) = (None, None);
    let port = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some((tx, rx))) = (
                fields.get(1).and_then(|f| port(f)),
                fields.get(2).and_then(|f| port(f)),
                fields.get(4).and_then(|f| f.split_once(':')),
            ) else {
                continue;
            };
            if (local, remote) == (kfaas.port(), client.port()) {
                gateway_tx = usize::from_str_radix(tx, 16).ok();
            } else if (local, remote) == (client.port(), kfaas.port()) {
                client_rx = usize::from_str_radix(rx, 16).ok();
            }
        }
    }
    (gateway_tx, client_rx)
}

/// Reads `stream` to its end (what arrived before a failure counts: the caller checks it).
fn read_to_the_end(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut received = Vec::new();
    let mut step = vec![0; 256 * 1024];
    loop {
        match stream.read(&mut step) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&step[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!(
                    "reading the answer failed after {} bytes: {e}",
                    received.len()
                );
                return received;
            }
        }
    }
}
