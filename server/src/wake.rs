//! [`OnWake`]: a future that is polled again only once it has woken its task.
//!
//! The connection loop's `select!` polls every branch each time the task runs, that is twice
//! per message: the shutdown token (a mutex inside `tokio_util`) and the keepalive timer (a
//! timer entry, at 1000 connections mostly out of the CPU's cache). They almost never have
//! news. Wrapped in [`OnWake`], a branch costs an atomic swap until its own waker
//! fires. Measured in `cargo xtask bench` (docs/BENCHMARKS.md, "What was tried").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// `inner`, polled only when its waker has fired since its last poll (and on the first poll,
/// after it was ready, and after [`OnWake::force`]).
#[derive(Debug)]
pub struct OnWake<F> {
    inner: F,
    signal: Arc<Signal>,
    /// The waker `inner` is given: it notes the wake in `signal`, then wakes the task.
    proxy: Waker,
    /// The task waker last handed to `signal`, to see whether the task's waker changed.
    task: Option<Waker>,
}

/// Shared by an [`OnWake`] and the waker it gives its inner future.
#[derive(Debug)]
struct Signal {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future + Unpin> OnWake<F> {
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), task: Mutex::new(None) });
        let proxy = Waker::from(Arc::clone(&signal));
        Self { inner, signal, proxy, task: None }
    }

    /// The inner future, to change it (a timer's deadline): it is polled at the next poll.
    pub fn force(&mut self) -> &mut F {
        self.signal.woken.store(true, Ordering::Release);
        &mut self.inner
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if !this.task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *this.signal.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            this.task = Some(task);
        }
        // Cleared before polling: a wake during the poll is seen next time.
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.proxy));
        if polled.is_ready() {
            // A reusable future (a timer) registers its next wake only when polled again.
            this.signal.woken.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_timer_behind_it_fires_and_can_be_moved() {
        let sleep = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3600)));
        let mut timer = OnWake::new(sleep);
        // Polled, and pending, while something else finishes first.
        let fired = tokio::select! {
            () = &mut timer => true,
            () = tokio::time::sleep(Duration::from_millis(10)) => false,
        };
        assert!(!fired);
        let moved = tokio::time::Instant::now() + Duration::from_millis(30);
        timer.force().as_mut().reset(moved);
        tokio::time::timeout(Duration::from_secs(5), &mut timer).await.expect("fired");
        assert!(tokio::time::Instant::now() >= moved, "fired before its new deadline");
    }

    #[tokio::test]
    async fn a_cancellation_is_seen_even_after_polls_without_news() {
        let token = tokio_util::sync::CancellationToken::new();
        let cancelled = std::pin::pin!(token.cancelled());
        let mut cancelled = OnWake::new(cancelled);
        for _ in 0..3 {
            assert!(futures_util::poll!(&mut cancelled).is_pending());
        }
        let canceller = token.clone();
        tokio::spawn(async move { canceller.cancel() });
        tokio::time::timeout(Duration::from_secs(5), &mut cancelled).await.expect("seen");
    }
}
