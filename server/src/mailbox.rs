//! A connection's bounded outgoing queue: the hub posts encoded frames into it, a transport
//! pump (today the WebSocket loop) takes them out and writes them to its peer.
//!
//! The hub holds the only [`Postbox`] of each mailbox and never waits on it: a full mailbox
//! means its peer fell a whole queue behind, so the hub ends it ([`End::Slow`]) instead of
//! slowing anyone else down. The pump then sees the end after the frames already queued, and
//! closes its peer with a code that says why.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Frames one connection may have waiting before it counts as too slow. A live chat posts a few
/// per second; 256 covers a burst of that many while the peer's network hiccups.
pub const CAPACITY: usize = 256;

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

impl End {
    fn code(self) -> u8 {
        match self {
            End::Slow => 1,
            End::Reset => 2,
            End::Closed => 3,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => End::Slow,
            2 => End::Reset,
            _ => End::Closed,
        }
    }
}

/// The owner's side: posts frames without waiting.
#[derive(Debug)]
pub struct Postbox {
    tx: mpsc::Sender<Utf8Bytes>,
    end: Arc<AtomicU8>,
}

/// The pump's side.
#[derive(Debug)]
pub struct Mailbox {
    rx: mpsc::Receiver<Utf8Bytes>,
    end: Arc<AtomicU8>,
}

/// One mailbox, as its two halves.
pub fn new() -> (Postbox, Mailbox) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let end = Arc::new(AtomicU8::new(0));
    (Postbox { tx, end: Arc::clone(&end) }, Mailbox { rx, end })
}

/// The mailbox was full (or its pump is gone): the owner should end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Postbox {
    /// Queues `frame` (a clone of shared bytes: nothing is copied), or says the mailbox is full.
    pub fn post(&self, frame: &Utf8Bytes) -> Result<(), Full> {
        self.tx.try_send(frame.clone()).map_err(|_| Full)
    }

    /// Ends the mailbox for `why`; the pump sees it after the frames already queued.
    pub fn end(self, why: End) {
        self.end.store(why.code(), Ordering::Release);
    }
}

impl Mailbox {
    /// The next frame, or why the mailbox ended.
    pub async fn recv(&mut self) -> Result<Utf8Bytes, End> {
        match self.rx.recv().await {
            Some(frame) => Ok(frame),
            None => Err(self.ended()),
        }
    }

    /// A frame that is already waiting, if any (for writing a burst in one go).
    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        self.rx.try_recv().ok()
    }

    fn ended(&self) -> End {
        End::from_code(self.end.load(Ordering::Acquire))
    }
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
        for _ in 0..CAPACITY {
            assert!(mailbox.recv().await.is_ok());
        }
        assert_eq!(mailbox.recv().await, Err(End::Closed));
    }
}
