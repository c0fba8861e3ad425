//! Write phases: what a connection sends goes out after its serving thread has run every task
//! that was ready, all connections' sends together, just before the thread waits for events.
//!
//! Each task used to write as soon as it had something to send, so a serving thread alternated
//! a read and a write per connection, and every write woke the peer for one message. HAProxy
//! reads everything that is ready, then writes everything: its peers (the client, the instance)
//! are woken once for several messages, and find more to do each time they are. On this
//! 2-core machine, where the client, the gateway and the instance share the CPUs, that was the
//! larger part of the gap to HAProxy (docs/benchmarks.md, "Sessions and write phases").
//!
//! A connection's bytes wait in its [`Outbox`], in order. The first send queued after a flush
//! wakes the thread's [`flusher`] task, which runs after the tasks that were ready then, and the
//! thread also calls [`flush_queued`] before it parks (its runtime's `on_thread_park`); either
//! writes every queued outbox without blocking. What does not fit in the socket is finished by a
//! drainer task that waits for the socket to take more (and gives up after `SEND_STALL` without
//! progress); only one writer (the flush, that drainer, or a large direct write) touches a socket
//! at a time. On a thread that does not write in phases, a send is written at once.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use tokio::{io::AsyncWrite, net::tcp::OwnedWriteHalf, sync::Notify};

/// A thread's queue holds at most this many outboxes before they are written anyway.
const MAX_QUEUED: usize = 256;
/// A pending buffer larger than this is not kept once written (after a large answer).
const KEEP_PENDING: usize = 256 * 1024;
/// A drainer whose socket takes nothing for this long gives up: the peer stopped reading, and
/// the socket closes rather than staying open for ever.
const SEND_STALL: Duration = Duration::from_secs(60);

thread_local! {
    /// `Some` on a thread that writes in phases.
    static QUEUED: RefCell<Option<Queue>> = const { RefCell::new(None) };
}

/// The outboxes of one serving thread that wait to be written.
struct Queue {
    list: Vec<Arc<Inner>>,
    /// The thread's [`flusher`] task, woken when the list stops being empty.
    flusher: Option<Waker>,
}

/// Marks this thread as one that writes in phases: it runs [`flusher`] and calls
/// [`flush_queued`] before it parks. Sends made on it wait for either.
pub fn flush_before_park_here() {
    let _ = QUEUED.try_with(|q| {
        if let Ok(mut q) = q.try_borrow_mut() {
            q.get_or_insert_with(|| Queue {
                list: Vec::new(),
                flusher: None,
            });
        }
    });
}

/// A serving thread's flusher task. Woken by the first send queued after a flush, it runs after
/// the tasks that were ready then, which is when the thread would park on a quiet thread; on a
/// thread that stays busy without parking (a task that yields, one that used up its budget), it
/// is what writes the queue.
pub async fn flusher() {
    std::future::poll_fn(|cx| {
        flush_queued();
        let _ = QUEUED.try_with(|q| {
            if let Ok(mut q) = q.try_borrow_mut()
                && let Some(q) = q.as_mut()
                && !q.flusher.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
            {
                q.flusher = Some(cx.waker().clone());
            }
        });
        Poll::<()>::Pending
    })
    .await;
}

/// Writes every outbox queued on this thread (as much of each as its socket takes now).
pub fn flush_queued() {
    let taken = QUEUED
        .try_with(|q| {
            let mut q = q.try_borrow_mut().ok()?;
            let q = q.as_mut()?;
            (!q.list.is_empty()).then(|| std::mem::take(&mut q.list))
        })
        .ok()
        .flatten();
    let Some(mut list) = taken else {
        return;
    };
    for inner in list.drain(..) {
        let mut state = inner.lock();
        state.queued = false;
        if !state.draining {
            inner.write_now(&mut state);
        }
    }
    // The emptied list goes back, keeping its capacity.
    let _ = QUEUED.try_with(|q| {
        if let Ok(mut q) = q.try_borrow_mut()
            && let Some(q) = q.as_mut()
            && q.list.is_empty()
        {
            q.list = list;
        }
    });
}

/// The sending side of one connection, shared by what writes to it (the connection, a request
/// body sending `100 Continue`), and by the thread's queue while it waits there.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Told when `pending` empties or the socket fails.
    drained: Notify,
}

struct State {
    writer: OwnedWriteHalf,
    /// Bytes not written yet, in order.
    pending: BytesMut,
    /// In this thread's queue.
    queued: bool,
    /// A drainer task owns the writing until `pending` is empty.
    draining: bool,
    /// The socket failed: nothing more is written.
    failed: Option<io::ErrorKind>,
    /// A task waits on `drained` (telling it costs a lock, so only when one does).
    waiting: bool,
}

impl Outbox {
    pub fn new(writer: OwnedWriteHalf) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    writer,
                    pending: BytesMut::new(),
                    queued: false,
                    draining: false,
                    failed: None,
                    waiting: false,
                }),
                drained: Notify::new(),
            }),
        }
    }

    /// Sends `data` after what was sent before, and empties it (handing it a spare buffer with
    /// capacity, when there is one). Returns how many bytes still wait to be written; an error is
    /// an earlier write's.
    pub fn send(&self, data: &mut BytesMut) -> io::Result<usize> {
        let mut state = self.inner.lock();
        if let Some(kind) = state.failed {
            data.clear();
            return Err(io::Error::new(kind, "an earlier write failed"));
        }
        if state.pending.is_empty() {
            // No copy: the bytes become the pending buffer, and the old one comes back.
            std::mem::swap(&mut state.pending, data);
        } else {
            state.pending.extend_from_slice(data);
            data.clear();
        }
        self.schedule(&mut state);
        Ok(state.pending.len())
    }

    /// `send`, then waits for the bytes to be written when more than `most` wait, so that a
    /// large answer or body does not pile up in memory.
    pub async fn send_holding_at_most(&self, data: &mut BytesMut, most: usize) -> io::Result<()> {
        if self.send(data)? > most {
            self.flushed().await?;
        }
        Ok(())
    }

    /// Sends `data` after what was sent before (copied: for small, rare messages).
    pub fn send_slice(&self, data: &[u8]) -> io::Result<()> {
        let mut state = self.inner.lock();
        if let Some(kind) = state.failed {
            return Err(io::Error::new(kind, "an earlier write failed"));
        }
        state.pending.extend_from_slice(data);
        self.schedule(&mut state);
        Ok(())
    }

    /// The error that stopped writing, if one did.
    pub fn failure(&self) -> Option<io::Error> {
        let kind = self.inner.lock().failed?;
        Some(io::Error::new(kind, "writing failed"))
    }

    /// Waits until everything sent so far is written (or the socket failed).
    pub async fn flushed(&self) -> io::Result<()> {
        loop {
            let notified = self.inner.drained.notified();
            tokio::pin!(notified);
            // Registered before the state is looked at, so a drainer's news is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.inner.lock();
                if let Some(kind) = state.failed {
                    return Err(io::Error::new(kind, "writing failed"));
                }
                if state.pending.is_empty() {
                    return Ok(());
                }
                if !state.draining {
                    // Queued or not, write it now rather than at the next park.
                    self.inner.write_now(&mut state);
                    continue;
                }
                state.waiting = true;
            }
            notified.await;
        }
    }

    /// Sends `data` and waits until it is written: for large bodies, which are not copied.
    /// Fails with `TimedOut`, as a drainer does, when the peer takes nothing for `SEND_STALL`.
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.flushed().await?;
        // This task owns the socket meanwhile: a send made now waits in `pending` until after
        // `data` (see `Owner`).
        let _owner = Owner::claim(self);
        let mut at = 0;
        loop {
            let before = at;
            let step = std::future::poll_fn(|cx| {
                let mut state = self.inner.lock();
                match poll_write(&state.writer, data, &mut at, cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(Drain::Done)),
                    Poll::Ready(Err(e)) => {
                        // Later sends fail too, rather than write after a gap.
                        self.inner.fail(&mut state, e.kind());
                        Poll::Ready(Err(e))
                    }
                    // Some went: the stall timer starts again.
                    Poll::Pending if at > before => Poll::Ready(Ok(Drain::Progress)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match tokio::time::timeout(SEND_STALL, step).await {
                Ok(Ok(Drain::Done)) => return Ok(()),
                Ok(Ok(Drain::Progress)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let mut state = self.inner.lock();
                    self.inner.fail(&mut state, io::ErrorKind::TimedOut);
                    let message = format!("the peer took nothing for {SEND_STALL:?}");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, message));
                }
            }
        }
    }

    /// Closes the sending side once what was sent is written (a FIN after the last answer).
    pub async fn shutdown(&self) -> io::Result<()> {
        self.flushed().await?;
        let mut state = self.inner.lock();
        let mut cx = Context::from_waker(Waker::noop());
        // A TCP write half shuts down at once; it never returns Pending.
        match Pin::new(&mut state.writer).poll_shutdown(&mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    /// Gets the pending bytes written: at the thread's next park, or now.
    fn schedule(&self, state: &mut State) {
        if state.queued || state.draining || state.pending.is_empty() {
            return;
        }
        let queued = QUEUED
            .try_with(|q| {
                let mut q = q.try_borrow_mut().ok()?;
                let q = q.as_mut()?;
                if q.list.len() >= MAX_QUEUED {
                    return Some(false);
                }
                q.list.push(Arc::clone(&self.inner));
                if q.list.len() == 1
                    && let Some(flusher) = &q.flusher
                {
                    flusher.wake_by_ref();
                }
                Some(true)
            })
            .ok()
            .flatten();
        match queued {
            Some(true) => state.queued = true,
            Some(false) => {
                // A full queue is written now (this outbox is not in it: it is locked here).
                flush_queued();
                self.inner.write_now(state);
            }
            None => self.inner.write_now(state),
        }
    }
}

/// The socket's writer while a caller writes straight to it: sends made meanwhile are kept in
/// `pending` (as while a drainer writes), and scheduled when it lets go, however it ends.
struct Owner<'a>(&'a Outbox);

impl<'a> Owner<'a> {
    fn claim(outbox: &'a Outbox) -> Self {
        outbox.inner.lock().draining = true;
        Self(outbox)
    }
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        let mut state = self.0.inner.lock();
        state.draining = false;
        self.0.schedule(&mut state);
        self.0.inner.tell_waiting(&mut state);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave the state torn: every change is a field write.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes as much of `pending` as the socket takes now; hands the rest to a drainer.
    fn write_now(self: &Arc<Self>, state: &mut State) {
        // Nothing else polls this socket's writability now (no drainer, no direct write), so a
        // waker that does nothing may stand in until the drainer registers its own.
        let mut cx = Context::from_waker(Waker::noop());
        let mut at = 0;
        let written = poll_write(&state.writer, &state.pending, &mut at, &mut cx);
        state.pending.advance(at);
        match written {
            Poll::Ready(Ok(())) => self.all_written(state),
            Poll::Ready(Err(e)) => self.fail(state, e.kind()),
            Poll::Pending => self.start_drainer(state),
        }
    }

    /// `pending` is empty: a large buffer is let go, and a waiting task told.
    fn all_written(&self, state: &mut State) {
        if state.pending.capacity() > KEEP_PENDING {
            state.pending = BytesMut::new();
        }
        self.tell_waiting(state);
    }

    fn tell_waiting(&self, state: &mut State) {
        if std::mem::take(&mut state.waiting) {
            self.drained.notify_waiters();
        }
    }

    fn fail(&self, state: &mut State, kind: io::ErrorKind) {
        state.failed = Some(kind);
        state.pending = BytesMut::new();
        state.draining = false;
        self.tell_waiting(state);
    }

    fn start_drainer(self: &Arc<Self>, state: &mut State) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.fail(state, io::ErrorKind::WouldBlock);
            return;
        };
        state.draining = true;
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            loop {
                let step = std::future::poll_fn(|cx| inner.poll_drain(cx));
                match tokio::time::timeout(SEND_STALL, step).await {
                    Ok(Drain::Progress) => {}
                    Ok(Drain::Done) => return,
                    Err(_) => {
                        let mut state = inner.lock();
                        inner.fail(&mut state, io::ErrorKind::TimedOut);
                        return;
                    }
                }
            }
        });
    }

    /// The drainer's step: writes `pending` as the socket takes it; ready when it is all
    /// written (or failed), or when some went and the socket is full again.
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<Drain> {
        let mut state = self.lock();
        if state.failed.is_some() {
            return Poll::Ready(Drain::Done);
        }
        let mut at = 0;
        let written = poll_write(&state.writer, &state.pending, &mut at, cx);
        state.pending.advance(at);
        match written {
            Poll::Ready(Ok(())) => {
                state.draining = false;
                self.all_written(&mut state);
                Poll::Ready(Drain::Done)
            }
            Poll::Ready(Err(e)) => {
                self.fail(&mut state, e.kind());
                Poll::Ready(Drain::Done)
            }
            // Some went: the stall timer starts again.
            Poll::Pending if at > 0 => Poll::Ready(Drain::Progress),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes `buf[*at..]` as the socket takes it, moving `at` on. `Pending` when the socket is
/// full, with `cx`'s waker registered for when it takes more.
fn poll_write(
    writer: &OwnedWriteHalf,
    buf: &[u8],
    at: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let stream = writer.as_ref();
    while *at < buf.len() {
        match stream.try_write(&buf[*at..]) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::task::ready!(stream.poll_write_ready(cx))?;
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// What a drainer's step came to.
enum Drain {
    Progress,
    Done,
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
