use std::{future::Future, io, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpSocket, TcpStream},
};

use super::{Outbox, flush_before_park_here, flush_queued};

/// A connected pair on loopback: (the side an outbox writes, the peer).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}

/// A pair whose buffers are small, so a few hundred KiB do not fit in them.
async fn small_buffered_pair() -> (TcpStream, TcpStream) {
    let listening = TcpSocket::new_v4().expect("socket");
    listening.set_recv_buffer_size(4096).expect("rcvbuf");
    listening
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = listening.local_addr().expect("addr");
    let listener = listening.listen(1).expect("listen");
    let connecting = TcpSocket::new_v4().expect("socket");
    connecting.set_send_buffer_size(4096).expect("sndbuf");
    let (client, accepted) = tokio::join!(connecting.connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}

/// Runs `test` on a thread like a serving thread: a current-thread runtime that flushes the
/// queue before it parks.
fn on_serving_thread<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || {
        flush_before_park_here();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .on_thread_park(flush_queued)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(test());
    })
    .join()
    .expect("the test thread panicked");
}

fn bytes(data: &[u8]) -> BytesMut {
    BytesMut::from(data)
}

async fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    tokio::time::timeout(Duration::from_secs(10), peer.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    got
}

/// Everything the peer gets until the writer closes.
async fn read_to_end(peer: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    got
}

#[tokio::test]
async fn without_phases_a_send_is_written_at_once() {
    let (client, mut peer) = pair().await;
    let outbox = Outbox::new(client.into_split().1);
    let mut out = bytes(b"hello");
    assert_eq!(
        outbox.send(&mut out).expect("send"),
        0,
        "nothing left pending"
    );
    assert!(out.is_empty());
    assert_eq!(read_exactly(&mut peer, 5).await, b"hello");
}

#[test]
fn with_phases_sends_wait_for_the_park_and_keep_their_order() {
    on_serving_thread(|| async {
        let (client, peer) = pair().await;
        let outbox = Outbox::new(client.into_split().1);
        assert_eq!(outbox.send(&mut bytes(b"one,")).expect("send"), 4);
        outbox.send_slice(b"two,").expect("send");
        assert_eq!(outbox.send(&mut bytes(b"three")).expect("send"), 13);
        // Nothing is written while this task runs: a read on the peer (a system call, not
        // Tokio's cached readiness) finds nothing.
        let peer = peer.into_std().expect("std");
        let mut probe = [0u8; 1];
        assert!(
            matches!(io::Read::read(&mut &peer, &mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "written before the thread parked"
        );
        let mut peer = TcpStream::from_std(peer).expect("tokio");
        // Waiting for the peer parks the thread, which writes them, in order, in one go.
        assert_eq!(read_exactly(&mut peer, 13).await, b"one,two,three");
        outbox.flushed().await.expect("all written");
    });
}

#[test]
fn what_the_socket_does_not_take_now_is_drained_in_order() {
    on_serving_thread(|| async {
        let (client, mut peer) = small_buffered_pair().await;
        let outbox = Outbox::new(client.into_split().1);
        let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
        outbox.send(&mut bytes(&big)).expect("send");
        outbox.send_slice(b"tail").expect("send");
        let flushed = outbox.clone();
        let writer = tokio::spawn(async move { flushed.flushed().await });
        let got = read_exactly(&mut peer, big.len() + 4).await;
        assert!(
            got[..big.len()] == big[..],
            "the large send arrived whole and in order"
        );
        assert_eq!(&got[big.len()..], b"tail");
        writer.await.expect("join").expect("flushed");
        // A large write straight from the caller comes after what was pending.
        outbox.send_slice(b"head").expect("send");
        let direct = outbox.clone();
        let big_again = big.clone();
        let writing = tokio::spawn(async move { direct.write_all(&big_again).await });
        // Once that write waits for the socket, a send waits for it to finish.
        tokio::task::yield_now().await;
        outbox.send_slice(b"after").expect("send");
        let got = read_exactly(&mut peer, 4 + big.len() + 5).await;
        assert_eq!(&got[..4], b"head");
        assert!(got[4..4 + big.len()] == big[..]);
        assert_eq!(&got[4 + big.len()..], b"after");
        writing.await.expect("join").expect("written");
    });
}

#[test]
fn shutdown_writes_what_is_pending_then_closes() {
    on_serving_thread(|| async {
        let (client, mut peer) = pair().await;
        let outbox = Outbox::new(client.into_split().1);
        outbox.send_slice(b"bye").expect("send");
        outbox.shutdown().await.expect("shutdown");
        let got = read_to_end(&mut peer).await;
        assert_eq!(got, b"bye");
    });
}

#[test]
fn an_outbox_dropped_while_queued_is_still_written() {
    on_serving_thread(|| async {
        let (client, mut peer) = pair().await;
        let (read_half, write_half) = client.into_split();
        let outbox = Outbox::new(write_half);
        outbox.send_slice(b"last words").expect("send");
        drop(outbox);
        drop(read_half);
        let got = read_to_end(&mut peer).await;
        assert_eq!(got, b"last words");
    });
}

#[tokio::test]
async fn a_failed_write_is_reported_by_the_sends_after_it() {
    let (client, peer) = pair().await;
    let outbox = Outbox::new(client.into_split().1);
    // The peer goes away with a reset: writes fail once the reset is in.
    peer.set_zero_linger().expect("linger");
    drop(peer);
    let mut failed = None;
    for _ in 0..100 {
        let sent = outbox.send(&mut bytes(b"anyone there?"));
        match sent {
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(
        failed.is_some(),
        "a write to a reset connection never failed"
    );
    assert!(outbox.send_slice(b"again").is_err(), "a failure stays");
    assert!(outbox.flushed().await.is_err());
}

#[test]
fn a_thread_that_never_parks_still_writes_through_its_flusher() {
    on_serving_thread(|| async {
        let _flusher = tokio::spawn(super::flusher());
        tokio::task::yield_now().await; // the flusher registers itself
        let (client, peer) = pair().await;
        let outbox = Outbox::new(client.into_split().1);
        let peer = peer.into_std().expect("std");
        peer.set_nonblocking(false).expect("blocking");
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let reader = std::thread::spawn(move || {
            let mut got = [0u8; 5];
            io::Read::read_exact(&mut &peer, &mut got).map(|()| got)
        });
        outbox.send_slice(b"awake").expect("send");
        // Busy without ever parking: only yields, so the park hook never runs.
        while !reader.is_finished() {
            tokio::task::yield_now().await;
        }
        let got = reader
            .join()
            .expect("reader")
            .expect("the send never went out");
        assert_eq!(&got, b"awake");
    });
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_takes_nothing_fails_the_write_after_the_stall_limit() {
    let (client, _peer) = small_buffered_pair().await;
    let outbox = Outbox::new(client.into_split().1);
    outbox
        .send(&mut bytes(&vec![7u8; 512 * 1024]))
        .expect("send");
    let error = outbox.flushed().await.expect_err("a peer that never reads");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        outbox.failure().map(|e| e.kind()),
        Some(io::ErrorKind::TimedOut)
    );
}

#[tokio::test(start_paused = true)]
async fn a_direct_write_to_a_peer_that_takes_nothing_fails_after_the_stall_limit() {
    let (client, _peer) = small_buffered_pair().await;
    let outbox = Outbox::new(client.into_split().1);
    let error = outbox
        .write_all(&vec![7u8; 512 * 1024])
        .await
        .expect_err("a peer that never reads");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        outbox.failure().map(|e| e.kind()),
        Some(io::ErrorKind::TimedOut),
        "later sends fail too"
    );
    assert!(outbox.send_slice(b"after").is_err());
}
