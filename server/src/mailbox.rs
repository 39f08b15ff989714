//! A connection's bounded outgoing queue: the hub posts encoded frames into it, a transport
//! pump (today the WebSocket loop) takes them out and writes them to its peer.
//!
//! The hub holds the only [`Postbox`] of each mailbox and never waits on it: a full mailbox
//! means its peer fell a whole queue behind, so the hub ends it ([`End::Slow`]) instead of
//! slowing anyone else down. The pump then sees the end after the frames already queued, and
//! closes its peer with a code that says why.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Frames one connection may have waiting before it counts as too slow. A live chat posts a few
/// per second; 256 covers a burst of that many while the peer's network hiccups.
pub const CAPACITY: usize = 256;
/// What an emptied queue keeps allocated: a burst grows it, and it gives the rest back once the
/// pump has caught up, so 10,000 idle members do not each hold their largest burst.
const KEEP: usize = 8;

/// Why a mailbox was ended by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer fell [`CAPACITY`] frames behind.
    Slow,
    /// The room's history was reset (a new epoch): what the peer has no longer lines up.
    Reset,
    /// The owner went away (shutdown).
    Closed,
}

/// One queue behind a lock, with the pump's waker. Chosen over a tokio channel for its size:
/// an idle member's mailbox is one small allocation (the queue allocates on first use), where
/// a bounded channel allocates a block of 32 slots up front (about 1.2 KB per member in
/// `cargo xtask bench`'s fan-out).
#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Utf8Bytes>,
    end: Option<End>,
    waker: Option<Waker>,
    pump_gone: bool,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    // Nothing here can be left half-done by a panic; carry on with the state as it is.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The owner's side: posts frames without waiting.
#[derive(Debug)]
pub struct Postbox(Shared);

/// The pump's side.
#[derive(Debug)]
pub struct Mailbox(Shared);

/// One mailbox, as its two halves.
pub fn new() -> (Postbox, Mailbox) {
    let shared = Shared::default();
    (Postbox(Arc::clone(&shared)), Mailbox(shared))
}

/// The mailbox was full (or its pump is gone): the owner should end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Postbox {
    /// Queues `frame` (a clone of shared bytes: nothing is copied), or says the mailbox is full.
    pub fn post(&self, frame: &Utf8Bytes) -> Result<(), Full> {
        let mut inner = lock(&self.0);
        if inner.pump_gone || inner.frames.len() >= CAPACITY {
            return Err(Full);
        }
        inner.frames.push_back(frame.clone());
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Ends the mailbox for `why`; the pump sees it after the frames already queued.
    pub fn end(self, why: End) {
        self.finish(why);
    }

    fn finish(&self, why: End) {
        let mut inner = lock(&self.0);
        inner.end.get_or_insert(why);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Postbox {
    fn drop(&mut self) {
        self.finish(End::Closed);
    }
}

impl Mailbox {
    /// The next frame, or why the mailbox ended.
    pub async fn recv(&mut self) -> Result<Utf8Bytes, End> {
        poll_fn(|cx| {
            let mut inner = lock(&self.0);
            if let Some(frame) = pop(&mut inner) {
                return Poll::Ready(Ok(frame));
            }
            if let Some(end) = inner.end {
                return Poll::Ready(Err(end));
            }
            match &inner.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => inner.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// A frame that is already waiting, if any (for writing a burst in one go).
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        pop(&mut lock(&self.0))
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut inner = lock(&self.0);
        inner.pump_gone = true;
        inner.frames = VecDeque::new();
    }
}

fn pop(inner: &mut Inner) -> Option<Utf8Bytes> {
    let frame = inner.frames.pop_front();
    if inner.frames.is_empty() && inner.frames.capacity() > KEEP {
        inner.frames.shrink_to(KEEP);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_come_out_in_order_then_the_end_and_its_reason() {
        let (postbox, mut mailbox) = new();
        postbox.post(&"a".into()).expect("room");
        postbox.post(&"b".into()).expect("room");
        postbox.end(End::Slow);
        assert_eq!(mailbox.recv().await, Ok("a".into()));
        assert_eq!(mailbox.try_recv(), Some("b".into()));
        assert_eq!(mailbox.recv().await, Err(End::Slow));
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_instead_of_waiting() {
        let (postbox, mut mailbox) = new();
        for _ in 0..CAPACITY {
            postbox.post(&"x".into()).expect("room");
        }
        assert_eq!(postbox.post(&"x".into()), Err(Full));
        assert!(mailbox.try_recv().is_some());
        assert_eq!(postbox.post(&"x".into()), Ok(()));
        drop(postbox);
        assert_eq!(mailbox.0.lock().map(|i| i.frames.capacity() >= CAPACITY).ok(), Some(true));
        for _ in 0..CAPACITY {
            assert!(mailbox.recv().await.is_ok());
        }
        assert_eq!(mailbox.recv().await, Err(End::Closed));
        let capacity = mailbox.0.lock().map(|inner| inner.frames.capacity()).unwrap_or(0);
        assert!(capacity <= KEEP, "an emptied queue gives its memory back: {capacity}");
    }

    #[tokio::test]
    async fn a_gone_pump_refuses_posts() {
        let (postbox, mailbox) = new();
        drop(mailbox);
        assert_eq!(postbox.post(&"x".into()), Err(Full));
    }

    #[tokio::test]
    async fn a_waiting_pump_is_woken_by_a_post() {
        let (postbox, mut mailbox) = new();
        let pump = tokio::spawn(async move { mailbox.recv().await });
        tokio::task::yield_now().await;
        postbox.post(&"late".into()).expect("room");
        assert_eq!(pump.await.expect("pump"), Ok("late".into()));
    }
}
