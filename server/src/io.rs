//! [`WriteDeadline`]: a TCP stream whose writes fail once the peer has read nothing for a while,
//! so a client that stops reading an HTTP response is dropped as one on `/ws/` is.
//!
//! hyper has a timeout for reading a request head, none for writing a response: a client that
//! pipelines requests and never reads the answers parks a response in `poll_write` for ever,
//! with the kernel's socket buffers full. Wrapping the stream below hyper covers every response
//! (the page, the `.wasm`, `/metrics`, refusals, the polling endpoints). An upgraded WebSocket
//! leaves it behind ([`crate::socket`] takes the bare stream): [`crate::connection`] bounds each
//! of its writes itself, with the same duration.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error a stalled write fails with (inside an [`io::ErrorKind::TimedOut`]).
#[derive(Debug, thiserror::Error)]
#[error("the peer read nothing for the send timeout")]
struct Stalled;

/// `inner`, with every write that makes no progress for `limit` failed with
/// [`io::ErrorKind::TimedOut`]. Progress is any byte accepted by the kernel: a slow reader
/// that keeps reading is never cut off, one that stops is, `limit` after it stopped.
#[derive(Debug)]
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Armed when a write first waits; disarmed by any progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, stalled_since: None }
    }

    /// The stream, for a connection that bounds its writes itself from now on.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Called when a write is pending: arms the timer on the first wait and fails once it fires.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let timer = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        timer.as_mut().reset(Instant::now() + limit);
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, Stalled))
    }

    /// Turns the inner write's result into ours: progress disarms the timer, a wait polls it.
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Pending => match self.poll_stall(cx) {
                Poll::Ready(error) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }
}

/// Whether `error` is a write this adapter gave up on.
pub fn is_stalled(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<Stalled>())
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.after_write(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        let (near, _far) = tokio::io::duplex(64);
        let mut writer = WriteDeadline::new(near, Duration::from_millis(200));
        let started = Instant::now();
        let error = writer.write_all(&[0; 1024]).await.expect_err("never read");
        assert!(is_stalled(&error), "{error}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut writer = WriteDeadline::new(near, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut buffer = [0; 64];
            let mut total = 0;
            while total < 512 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += far.read(&mut buffer).await.expect("read");
            }
        });
        // 8 reads 100 ms apart: 800 ms in all, never 300 ms without progress.
        writer.write_all(&[0; 512]).await.expect("kept being read");
        reader.await.expect("reader");
    }
}
