//! The pool state machine without processes: each test drives the transitions by hand.

use super::*;

fn invocation(id: &str) -> (Invocation, oneshot::Receiver<Outcome>) {
    let (reply, rx) = oneshot::channel();
    let inv = Invocation {
        request_id: id.to_owned(),
        payload: Bytes::from_static(b"{}"),
        trace_id: "t".to_owned(),
        client_context: None,
        cognito_identity: None,
        reply,
    };
    (inv, rx)
}

fn delivered(rx: &mut oneshot::Receiver<Delivery>) -> Option<String> {
    rx.try_recv().ok().map(|d| d.request_id)
}

/// A one-slot pool (3 s timeout) whose handler is running invocation `id`; its slot events and
/// the invocation's caller end are returned to be kept.
fn running(
    owns_processes: bool,
    id: &str,
) -> (
    Arc<Pool>,
    Vec<mpsc::UnboundedReceiver<SlotEvent>>,
    oneshot::Receiver<Outcome>,
) {
    let (pool, events) = Pool::new(1, Duration::from_secs(3), 128, owns_processes);
    pool.process_started(0, None);
    let mut next = pool.poll_next(0).expect("poll");
    let (inv, out) = invocation(id);
    assert!(pool.submit(inv).is_ok());
    assert_eq!(delivered(&mut next).as_deref(), Some(id));
    (pool, events, out)
}

#[test]
fn invocations_wait_for_a_poll_and_complete() {
    let (pool, mut events) = Pool::new(1, Duration::from_secs(3), 128, true);
    pool.process_started(0, None);
    assert!(!pool.is_ready());
    let (inv, mut out) = invocation("a");
    assert!(pool.submit(inv).is_ok());
    let mut next = pool.poll_next(0).expect("poll");
    assert!(pool.is_ready());
    assert_eq!(delivered(&mut next).as_deref(), Some("a"));
    assert!(
        matches!(events[0].try_recv(), Ok(SlotEvent::Started { request_id, .. }) if request_id == "a")
    );
    assert!(matches!(
        pool.complete(0, "b", Outcome::Crash { body: Bytes::new() }),
        Err(RapiError::InvalidRequestId)
    ));
    let report = pool
        .complete(
            0,
            "a",
            Outcome::Response {
                body: Bytes::from_static(b"1"),
                content_type: None,
            },
        )
        .expect("complete")
        .expect("END/REPORT to write");
    // The caller has its answer before the END/REPORT lines are written.
    assert!(matches!(out.try_recv(), Ok(Outcome::Response { body, .. }) if body == "1"));
    assert_eq!(report.request_id, "a");
    assert_eq!(report.memory_mb, 128);
    assert!(matches!(
        pool.complete(0, "a", Outcome::Crash { body: Bytes::new() }),
        Err(RapiError::InvalidStateTransition { .. })
    ));
}

#[test]
fn timeout_answers_and_restarts_the_slot() {
    let (pool, _events) = Pool::new(1, Duration::from_secs(1), 128, true);
    pool.process_started(0, None);
    let mut next = pool.poll_next(0).expect("poll");
    let (inv, mut out) = invocation("slow");
    assert!(pool.submit(inv).is_ok());
    assert_eq!(delivered(&mut next).as_deref(), Some("slow"));
    assert!(!pool.expire(0, "other"));
    assert!(pool.expire(0, "slow"));
    assert!(matches!(out.try_recv(), Ok(Outcome::Timeout { .. })));
    assert!(!pool.is_ready());
    assert_eq!(
        pool.process_exited(0, "signal: killed"),
        ExitAction::Restart(Duration::ZERO)
    );
}

#[test]
fn crash_mid_invocation_is_reported() {
    let (pool, _events) = Pool::new(1, Duration::from_secs(3), 128, true);
    pool.process_started(0, None);
    let _next = pool.poll_next(0).expect("poll");
    let (inv, mut out) = invocation("x");
    assert!(pool.submit(inv).is_ok());
    assert_eq!(
        pool.process_exited(0, "exit status 3"),
        ExitAction::Restart(Duration::ZERO)
    );
    let Ok(Outcome::Crash { body }) = out.try_recv() else {
        panic!("expected a crash outcome");
    };
    assert!(String::from_utf8_lossy(&body).contains("exit status 3"));
}

#[test]
fn init_error_fails_waiting_invocations_and_restarts_on_demand() {
    let (pool, mut events) = Pool::new(1, Duration::from_secs(3), 128, true);
    pool.process_started(0, None);
    let (inv, mut out) = invocation("a");
    assert!(pool.submit(inv).is_ok());
    pool.init_error(
        0,
        Bytes::from_static(b"{\"errorType\":\"Runtime.ImportModuleError\"}"),
    )
    .expect("init error");
    assert!(matches!(out.try_recv(), Ok(Outcome::InitError { .. })));
    assert_eq!(events[0].try_recv(), Ok(SlotEvent::InitFailed));
    assert_eq!(pool.process_exited(0, "exit status 1"), ExitAction::Wait);
    let (inv, _out) = invocation("b");
    assert!(pool.submit(inv).is_ok());
    assert_eq!(events[0].try_recv(), Ok(SlotEvent::Restart));
}

#[test]
fn a_dead_poll_does_not_lose_the_invocation() {
    let (pool, _events) = Pool::new(1, Duration::from_secs(3), 128, true);
    pool.process_started(0, None);
    drop(pool.poll_next(0).expect("poll"));
    let (inv, _out) = invocation("a");
    assert!(pool.submit(inv).is_ok());
    let mut next = pool.poll_next(0).expect("poll again");
    assert_eq!(delivered(&mut next).as_deref(), Some("a"));
}

#[test]
fn stopping_refuses_new_invocations() {
    let (pool, mut events) = Pool::new(2, Duration::from_secs(3), 128, true);
    pool.stop();
    let (inv, _out) = invocation("a");
    assert!(pool.submit(inv).is_err());
    assert_eq!(events[1].try_recv(), Ok(SlotEvent::Stop));
}

#[tokio::test(start_paused = true)]
async fn drained_ends_when_the_last_invocation_does_without_polling() {
    let (pool, _events) = Pool::new(1, Duration::from_secs(3), 128, true);
    pool.process_started(0, None);
    let mut next = pool.poll_next(0).expect("poll");
    let (a, _a_out) = invocation("a");
    let (b, _b_out) = invocation("b");
    assert!(pool.submit(a).is_ok());
    assert!(pool.submit(b).is_ok());
    assert_eq!(delivered(&mut next).as_deref(), Some("a"));
    pool.close();
    let mut drained = std::pin::pin!(pool.drained());
    // Paused time jumps ahead whenever nothing else can run: a minute passes at once.
    assert!(
        tokio::time::timeout(Duration::from_secs(60), &mut drained)
            .await
            .is_err()
    );
    let answer = || Outcome::Response {
        body: Bytes::new(),
        content_type: None,
    };
    pool.complete(0, "a", answer()).expect("complete a");
    assert!(futures::poll!(&mut drained).is_pending(), "b is queued");
    let mut next = pool.poll_next(0).expect("poll again");
    assert_eq!(delivered(&mut next).as_deref(), Some("b"));
    assert!(futures::poll!(&mut drained).is_pending(), "b is running");
    let before = tokio::time::Instant::now();
    pool.complete(0, "b", answer()).expect("complete b");
    drained.await;
    // A wait that polled would have let paused time move on to its next poll.
    assert_eq!(tokio::time::Instant::now(), before);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_holds_a_stop_until_it_ends() {
    let (pool, _events, _out) = running(true, "s");
    let mut drained = std::pin::pin!(pool.drained());
    assert!(futures::poll!(&mut drained).is_pending());
    let (_frames, body) = mpsc::channel(1);
    pool.begin_stream(0, "s", None, body).expect("stream");
    // The caller has the stream, but the handler is still writing it.
    assert!(futures::poll!(&mut drained).is_pending());
    assert_eq!(pool.in_flight(), 1);
    pool.end_stream(0, "s");
    assert!(futures::poll!(&mut drained).is_ready());
    assert_eq!(pool.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_begun_after_a_sidecar_timeout_does_not_hold_a_stop() {
    // Sidecar mode: the pool does not own the handler, so a timeout answers the caller and
    // leaves the slot busy until the handler answers late.
    let (pool, _events, mut out) = running(false, "late");
    assert!(!pool.expire(0, "late"), "sidecar mode kills nothing");
    assert!(matches!(out.try_recv(), Ok(Outcome::Timeout { .. })));
    assert_eq!(pool.in_flight(), 0);
    // The handler begins its answer after all: nobody waits for it.
    let (_frames, body) = mpsc::channel(1);
    pool.begin_stream(0, "late", None, body)
        .expect("late stream");
    assert_eq!(pool.in_flight(), 0);
    pool.close();
    let mut drained = std::pin::pin!(pool.drained());
    assert!(futures::poll!(&mut drained).is_ready());
}

#[tokio::test(start_paused = true)]
async fn closing_drops_queued_invocations_whose_caller_has_gone() {
    let (pool, _events) = Pool::new(1, Duration::from_secs(3), 128, true);
    pool.process_started(0, None);
    // No handler polls: both wait in the queue.
    let (gone, gone_out) = invocation("gone");
    let (waiting, _waiting_out) = invocation("waiting");
    assert!(pool.submit(gone).is_ok());
    assert!(pool.submit(waiting).is_ok());
    drop(gone_out);
    assert_eq!(pool.in_flight(), 2);
    pool.close();
    // The one whose caller still waits stays, and holds the stop.
    assert_eq!(pool.in_flight(), 1);
    let mut drained = std::pin::pin!(pool.drained());
    assert!(futures::poll!(&mut drained).is_pending());
    let mut next = pool.poll_next(0).expect("poll");
    assert_eq!(delivered(&mut next).as_deref(), Some("waiting"));
}
