//! The invocation queue and the handler slots: the state machine at the heart of the runtime.
//!
//! One slot is one handler process (or, in sidecar mode, the one handler someone else runs),
//! with its own Runtime API address, so a `/next` always says which process asks. Invocations
//! wait in a FIFO queue until a slot's `/next` is pending; the slot is then busy until the
//! handler posts a response or an error, times out, or dies.
//!
//! All state sits behind one `std::sync::Mutex` held only for short, non-async sections; the
//! HTTP handlers and the per-slot supervisors call in, and the pool tells a supervisor what to
//! do to its process through a [`SlotEvent`] channel. Nothing here spawns or kills itself, so
//! the transitions are tested without processes.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    invocation::{Delivery, Invocation, Outcome, error_body},
    report,
};

/// What the pool asks of a slot's supervisor.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotEvent {
    /// An invocation was delivered; kill the process if it is still running at `deadline`.
    Started {
        request_id: String,
        deadline: Instant,
    },
    /// The handler reported an init error: end the process.
    InitFailed,
    /// Demand arrived for a failed slot: start a process again.
    Restart,
    /// The runtime is shutting down: stop the process gracefully.
    Stop,
}

/// What a supervisor does after its process exited.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitAction {
    Restart(Duration),
    /// Leave the slot failed until demand asks for a restart.
    Wait,
    Done,
}

/// The runtime is shutting down and takes no new invocations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the runtime is shutting down")]
pub struct Stopping;

/// Runtime API refusals, as the AWS emulator renders them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RapiError {
    #[error("State transition from {from} to {to} failed for runtime.")]
    InvalidStateTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("Invalid request ID")]
    InvalidRequestId,
}

impl RapiError {
    /// The `errorType` of the error body.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidStateTransition { .. } => "InvalidStateTransition",
            Self::InvalidRequestId => "InvalidRequestID",
        }
    }
}

#[derive(Debug)]
struct Active {
    request_id: String,
    /// `None` once the caller has been answered (a timeout in sidecar mode, where the late
    /// response is still accepted and dropped).
    reply: Option<oneshot::Sender<Outcome>>,
    started: Instant,
    init: Option<Duration>,
    /// The caller has the stream; END/REPORT wait for its end.
    streaming: bool,
}

#[derive(Debug)]
enum Phase {
    /// A process was spawned and has not polled `/next` yet.
    Starting,
    /// The process is being ended on purpose (timeout, crash) and will be replaced.
    Restarting,
    /// Initialised, between invocations, not polling.
    Idle,
    /// Initialised and polling `/next`; the sender completes that poll.
    Waiting(Option<oneshot::Sender<Delivery>>),
    Busy(Active),
    /// Init failed with this error body; restarted only when an invocation asks.
    Failed(Bytes),
    Stopped,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Self::Starting | Self::Restarting => "Starting",
            Self::Idle | Self::Waiting(_) => "Ready",
            Self::Busy(_) => "Invoking",
            Self::Failed(_) => "InitError",
            Self::Stopped => "Stopped",
        }
    }

    fn initialised(&self) -> bool {
        matches!(self, Self::Idle | Self::Waiting(_) | Self::Busy(_))
    }

    fn healthy(&self) -> bool {
        !matches!(self, Self::Failed(_) | Self::Stopped)
    }
}

#[derive(Debug)]
struct Slot {
    phase: Phase,
    /// The running process's peak-memory reader (none in sidecar mode).
    memory: Option<Arc<report::MemoryProbe>>,
    spawned_at: Instant,
    /// Measured at the first `/next` of a process, reported with its first invocation.
    init: Option<Duration>,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Invocation>,
    slots: Vec<Slot>,
    stopping: bool,
    /// No new invocations are taken (the runtime is finishing those it has).
    closed: bool,
    announced_ready: bool,
    announced_init_failed: bool,
}

/// The shared queue and slots of one runtime.
pub struct Pool {
    state: Mutex<State>,
    timeout: Duration,
    memory_mb: u32,
    /// Whether the pool owns the processes (spawn mode) or serves an external handler.
    owns_processes: bool,
    events: Vec<mpsc::UnboundedSender<SlotEvent>>,
    ready: watch::Sender<bool>,
    /// [`Pool::in_flight`] as of the last change, so a stop waits for zero without polling.
    in_flight: watch::Sender<usize>,
    output: report::Output,
}

impl Pool {
    /// A pool of `slots` slots writing to stdout; returns each slot's event receiver for its
    /// supervisor.
    #[cfg(test)]
    pub fn new(
        slots: usize,
        timeout: Duration,
        memory_mb: u32,
        owns_processes: bool,
    ) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<SlotEvent>>) {
        Self::with_output(
            slots,
            timeout,
            memory_mb,
            owns_processes,
            report::Output::Stdout,
        )
    }

    /// As [`Pool::new`], writing START / END / REPORT and the announcements to `output`.
    pub fn with_output(
        slots: usize,
        timeout: Duration,
        memory_mb: u32,
        owns_processes: bool,
        output: report::Output,
    ) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<SlotEvent>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..slots).map(|_| mpsc::unbounded_channel()).unzip();
        let now = Instant::now();
        let state = State {
            queue: VecDeque::new(),
            slots: (0..slots)
                .map(|_| Slot {
                    phase: Phase::Starting,
                    memory: None,
                    spawned_at: now,
                    init: None,
                })
                .collect(),
            stopping: false,
            closed: false,
            announced_ready: false,
            announced_init_failed: false,
        };
        let pool = Self {
            state: Mutex::new(state),
            timeout,
            memory_mb,
            owns_processes,
            events: senders,
            ready: watch::channel(false).0,
            in_flight: watch::channel(0).0,
            output,
        };
        (Arc::new(pool), receivers)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every slot initialised and the runtime not stopping.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// How many invocations are queued or running.
    pub fn in_flight(&self) -> usize {
        count_in_flight(&self.lock())
    }

    /// Completes once no invocation is queued or running (at once when none is).
    pub async fn drained(&self) {
        let mut in_flight = self.in_flight.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = in_flight.wait_for(|n| *n == 0).await;
    }

    /// Queues an invocation; refused when the runtime is stopping.
    pub fn submit(&self, invocation: Invocation) -> Result<(), Stopping> {
        let mut st = self.lock();
        if st.stopping || st.closed {
            return Err(Stopping);
        }
        st.queue.push_back(invocation);
        if !st.slots.iter().any(|s| s.phase.healthy()) {
            if self.owns_processes {
                for (i, slot) in st.slots.iter_mut().enumerate() {
                    if matches!(slot.phase, Phase::Failed(_)) {
                        slot.phase = Phase::Restarting;
                        self.send(i, SlotEvent::Restart);
                    }
                }
            } else if let Some(body) = first_failure(&st) {
                fail_queue(&mut st, &body);
            }
        }
        self.dispatch(&mut st);
        self.refresh(&mut st);
        Ok(())
    }

    /// A handler polls `/next`: the returned receiver completes when an invocation is
    /// delivered to this slot (at once when one is queued).
    pub fn poll_next(&self, slot: usize) -> Result<oneshot::Receiver<Delivery>, RapiError> {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        if let Phase::Busy(_) = s.phase {
            return Err(RapiError::InvalidStateTransition {
                from: s.phase.name(),
                to: "Invoking",
            });
        }
        if !s.phase.initialised() {
            s.init = Some(s.spawned_at.elapsed());
        }
        let (tx, rx) = oneshot::channel();
        s.phase = Phase::Waiting(Some(tx));
        self.dispatch(&mut st);
        self.refresh(&mut st);
        Ok(rx)
    }

    /// The handler posted a response or an error for `request_id`. The caller is answered at
    /// once; the END/REPORT lines are returned, to be written once that answer is out.
    pub fn complete(
        &self,
        slot: usize,
        request_id: &str,
        outcome: Outcome,
    ) -> Result<Option<report::EndReport>, RapiError> {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        let active = match &s.phase {
            Phase::Busy(a) if a.request_id == request_id => {
                match std::mem::replace(&mut s.phase, Phase::Idle) {
                    Phase::Busy(a) => a,
                    _ => return Err(RapiError::InvalidRequestId),
                }
            }
            Phase::Busy(_) => return Err(RapiError::InvalidRequestId),
            other => {
                return Err(RapiError::InvalidStateTransition {
                    from: other.name(),
                    to: "InvocationResponse",
                });
            }
        };
        let duration = active.started.elapsed();
        let memory = s.memory.clone();
        self.refresh(&mut st);
        drop(st);
        let Some(reply) = active.reply else {
            return Ok(None); // answered already (a timeout in sidecar mode)
        };
        let _ = reply.send(outcome);
        Ok(Some(report::EndReport {
            output: self.output.clone(),
            request_id: active.request_id,
            duration,
            memory_mb: self.memory_mb,
            memory,
            init: active.init,
        }))
    }

    /// The handler began a streamed response: the caller gets `body` now, and the slot stays
    /// busy (and under its deadline) until [`Pool::end_stream`].
    pub fn begin_stream(
        &self,
        slot: usize,
        request_id: &str,
        content_type: Option<String>,
        body: mpsc::Receiver<Frame<Bytes>>,
    ) -> Result<(), RapiError> {
        let mut st = self.lock();
        match &mut st.slots[slot].phase {
            Phase::Busy(a) if a.request_id == request_id && !a.streaming => {
                // A stream begun after its caller was answered (a timeout in sidecar mode) goes
                // nowhere: it is dropped, and neither counts as in flight (a stop would wait on
                // it with no deadline left) nor reports its end a second time.
                if let Some(reply) = a.reply.take() {
                    a.streaming = true;
                    let _ = reply.send(Outcome::Stream { content_type, body });
                }
                self.refresh(&mut st);
                Ok(())
            }
            Phase::Busy(_) => Err(RapiError::InvalidRequestId),
            other => Err(RapiError::InvalidStateTransition {
                from: other.name(),
                to: "InvocationResponse",
            }),
        }
    }

    /// A streamed response ended (completely or with an error trailer).
    pub fn end_stream(&self, slot: usize, request_id: &str) {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        let Phase::Busy(active) = &s.phase else {
            return;
        };
        if active.request_id != request_id {
            return;
        }
        if active.streaming {
            self.report_end(
                request_id,
                active.started.elapsed(),
                s.memory.clone(),
                active.init,
            );
        }
        s.phase = Phase::Idle;
        self.refresh(&mut st);
    }

    /// The handler posted `/init/error`.
    pub fn init_error(&self, slot: usize, body: Bytes) -> Result<(), RapiError> {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        if !matches!(s.phase, Phase::Starting | Phase::Restarting) {
            return Err(RapiError::InvalidStateTransition {
                from: s.phase.name(),
                to: "InitError",
            });
        }
        s.phase = Phase::Failed(body.clone());
        self.send(slot, SlotEvent::InitFailed);
        self.after_failure(&mut st, &body);
        Ok(())
    }

    /// A process has not initialised within the init timeout. Returns whether it is still
    /// starting (then the slot has failed and the process must be killed).
    pub fn init_expired(&self, slot: usize, after: Duration) -> bool {
        let mut st = self.lock();
        if !matches!(st.slots[slot].phase, Phase::Starting) {
            return false;
        }
        let body = error_body(
            "Sandbox.Timedout",
            &format!(
                "Init phase timed out after {:.2} seconds",
                after.as_secs_f64()
            ),
        );
        st.slots[slot].phase = Phase::Failed(body.clone());
        self.after_failure(&mut st, &body);
        true
    }

    /// The deadline of `request_id` passed. Returns whether the process must be killed.
    pub fn expire(&self, slot: usize, request_id: &str) -> bool {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        let Phase::Busy(active) = &mut s.phase else {
            return false;
        };
        if active.request_id != request_id {
            return false;
        }
        let (id, init) = (active.request_id.clone(), active.init);
        if let Some(reply) = active.reply.take() {
            let _ = reply.send(Outcome::Timeout {
                after: self.timeout,
            });
        } else if active.streaming {
            // The stream ends with an error when its process is killed below.
            active.streaming = false;
        } else {
            return false;
        }
        self.report_end(&id, self.timeout, s.memory.clone(), init);
        if self.owns_processes {
            s.phase = Phase::Restarting;
        }
        self.refresh(&mut st);
        self.owns_processes
    }

    /// A supervisor started a process for `slot`.
    pub fn process_started(&self, slot: usize, pid: Option<u32>) {
        let mut st = self.lock();
        let s = &mut st.slots[slot];
        s.phase = Phase::Starting;
        s.memory = pid.map(|pid| Arc::new(report::MemoryProbe::new(pid)));
        s.spawned_at = Instant::now();
        s.init = None;
        self.refresh(&mut st);
    }

    /// A supervisor could not spawn the process at all.
    pub fn spawn_failed(&self, slot: usize, message: &str) {
        let body = error_body("Runtime.ExitError", message);
        let mut st = self.lock();
        st.slots[slot].phase = Phase::Failed(body.clone());
        self.after_failure(&mut st, &body);
    }

    /// A slot's process exited; `how` reads like "exit status 1" or "signal: killed".
    pub fn process_exited(&self, slot: usize, how: &str) -> ExitAction {
        let mut st = self.lock();
        let stopping = st.stopping;
        let s = &mut st.slots[slot];
        s.memory = None;
        let uptime = s.spawned_at.elapsed();
        let phase = std::mem::replace(&mut s.phase, Phase::Restarting);
        let action = match phase {
            _ if stopping => {
                s.phase = Phase::Stopped;
                ExitAction::Done
            }
            Phase::Stopped => {
                s.phase = Phase::Stopped;
                ExitAction::Done
            }
            Phase::Busy(active) => {
                if active.streaming {
                    self.report_end(
                        &active.request_id,
                        active.started.elapsed(),
                        None,
                        active.init,
                    );
                }
                if let Some(reply) = active.reply {
                    let message = format!(
                        "RequestId: {} Error: Runtime exited with error: {how}",
                        active.request_id
                    );
                    self.report_end(
                        &active.request_id,
                        active.started.elapsed(),
                        None,
                        active.init,
                    );
                    let _ = reply.send(Outcome::Crash {
                        body: error_body("Runtime.ExitError", &message),
                    });
                }
                ExitAction::Restart(Duration::ZERO)
            }
            Phase::Restarting => ExitAction::Restart(Duration::ZERO),
            // A process that dies soon after starting is not restarted in a hot loop.
            Phase::Idle | Phase::Waiting(_) => {
                ExitAction::Restart(if uptime < Duration::from_secs(1) {
                    Duration::from_secs(1)
                } else {
                    Duration::ZERO
                })
            }
            Phase::Starting => {
                let body = error_body(
                    "Runtime.ExitError",
                    &format!("Runtime exited before it was ready: {how}"),
                );
                s.phase = Phase::Failed(body.clone());
                self.after_failure(&mut st, &body);
                ExitAction::Wait
            }
            Phase::Failed(body) => {
                s.phase = Phase::Failed(body);
                if st.queue.is_empty() {
                    ExitAction::Wait
                } else {
                    st.slots[slot].phase = Phase::Restarting;
                    ExitAction::Restart(Duration::ZERO)
                }
            }
        };
        self.refresh(&mut st);
        action
    }

    /// Takes no new invocations; those queued or running go on. Queued ones whose caller has
    /// gone are dropped now: only a `/next` would drop them otherwise, and a stop waiting for
    /// them would wait for a handler that may never ask again.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.retain(|invocation| !invocation.reply.is_closed());
        self.refresh(&mut st);
    }

    /// Refuses new invocations and asks every supervisor to stop its process.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stopping = true;
        for i in 0..st.slots.len() {
            self.send(i, SlotEvent::Stop);
        }
        self.refresh(&mut st);
    }

    fn send(&self, slot: usize, event: SlotEvent) {
        if let Some(tx) = self.events.get(slot) {
            let _ = tx.send(event);
        }
    }

    /// Hands queued invocations to waiting slots, first come first served.
    fn dispatch(&self, st: &mut State) {
        while let Some(invocation) = st.queue.pop_front() {
            if invocation.reply.is_closed() {
                continue; // the caller went away while it waited
            }
            let Some(slot) = st
                .slots
                .iter()
                .position(|s| matches!(s.phase, Phase::Waiting(Some(_))))
            else {
                st.queue.push_front(invocation);
                return;
            };
            let s = &mut st.slots[slot];
            let Phase::Waiting(Some(tx)) = std::mem::replace(&mut s.phase, Phase::Idle) else {
                continue;
            };
            let deadline_epoch_ms = (SystemTime::now() + self.timeout)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let delivery = Delivery {
                request_id: invocation.request_id.clone(),
                payload: invocation.payload.clone(),
                deadline_epoch_ms,
                trace_id: invocation.trace_id.clone(),
                client_context: invocation.client_context.clone(),
                cognito_identity: invocation.cognito_identity.clone(),
            };
            if tx.send(delivery).is_err() {
                // That poll's connection is gone; the handler will poll again.
                st.queue.push_front(invocation);
                continue;
            }
            // Still before the handler can see the event: the poll is answered after this
            // section releases the lock.
            self.output
                .emit(&report::start_line(&invocation.request_id));
            let now = Instant::now();
            self.send(
                slot,
                SlotEvent::Started {
                    request_id: invocation.request_id.clone(),
                    deadline: now + self.timeout,
                },
            );
            s.phase = Phase::Busy(Active {
                request_id: invocation.request_id,
                reply: Some(invocation.reply),
                started: now,
                init: s.init.take(),
                streaming: false,
            });
        }
    }

    /// After a slot failed to initialise: announce it once, and answer the queue with the
    /// failure when no other slot could serve it.
    fn after_failure(&self, st: &mut State, body: &Bytes) {
        if !st.announced_init_failed {
            st.announced_init_failed = true;
            self.output.emit(report::INIT_FAILED);
        }
        if !st.slots.iter().any(|s| s.phase.healthy()) {
            fail_queue(st, body);
        }
        self.refresh(st);
    }

    /// Publishes what follows from the state: every change to the queue or the slots ends here.
    fn refresh(&self, st: &mut State) {
        let in_flight = count_in_flight(st);
        self.in_flight
            .send_if_modified(|n| std::mem::replace(n, in_flight) != in_flight);
        let ready = !st.stopping && st.slots.iter().all(|s| s.phase.initialised());
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
        if ready && !st.announced_ready {
            st.announced_ready = true;
            self.output.emit(report::READY);
        }
    }

    fn report_end(
        &self,
        request_id: &str,
        duration: Duration,
        memory: Option<Arc<report::MemoryProbe>>,
        init: Option<Duration>,
    ) {
        report::EndReport {
            request_id: request_id.to_owned(),
            duration,
            memory_mb: self.memory_mb,
            memory,
            init,
            output: self.output.clone(),
        }
        .emit();
    }
}

/// Invocations queued or running whose caller still waits for the answer or is still being
/// sent a streamed one: a stop waits for both, so no answer is cut short.
fn count_in_flight(st: &State) -> usize {
    st.queue.len()
        + st.slots
            .iter()
            .filter(|s| matches!(&s.phase, Phase::Busy(a) if a.reply.is_some() || a.streaming))
            .count()
}

fn first_failure(st: &State) -> Option<Bytes> {
    st.slots.iter().find_map(|s| match &s.phase {
        Phase::Failed(body) => Some(body.clone()),
        _ => None,
    })
}

fn fail_queue(st: &mut State, body: &Bytes) {
    for invocation in st.queue.drain(..) {
        let _ = invocation
            .reply
            .send(Outcome::InitError { body: body.clone() });
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
