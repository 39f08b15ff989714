//! [`Socket`]: tungstenite's WebSocket protocol straight over the connection's `TcpStream`,
//! woken by the connection task's own waker.
//!
//! This is what `tokio_tungstenite::WebSocketStream` does, less its general machinery: that
//! adapter cannot know whether tungstenite is about to read or write, so every call registers
//! a proxy waker for each direction and every wake goes through one (`AtomicWaker`s, an `Arc`
//! per direction). Here both directions register the task's waker itself (tokio keeps one per
//! direction), which is all a connection task needs: whatever becomes ready, the task polls
//! the loop again. The socket is the `TcpStream` hyper upgraded, not hyper's boxed `Upgraded`
//! in front of it. Measured in `cargo xtask bench` (docs/BENCHMARKS.md, "What was tried").
//!
//! The contract is tokio-tungstenite's: [`Socket::next`] ends (`None`) after the peer's Close
//! was answered or the connection dropped, and is fused after any error; [`Socket::feed`]
//! queues a frame (flushing first only if an earlier write was left blocked); [`Socket::flush`]
//! writes out what is queued.

use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message, WebSocket};
use tracing::Span;

/// The server's end of one WebSocket.
#[derive(Debug)]
pub struct Socket {
    ws: WebSocket<Io>,
    /// The connection's span, for its log lines (see [`Socket::span`]).
    span: Span,
    /// The stream has ended or failed: [`Socket::next`] only says `None` from now on.
    ended: bool,
    /// No earlier write was left blocked (tokio-tungstenite's `Sink::poll_ready`).
    ready: bool,
}

impl Socket {
    /// The server's side of a connection upgraded on `tcp`, which had already read
    /// `read_ahead` past the request (a first frame sent together with it); `span` is the
    /// connection's.
    pub fn new(tcp: TcpStream, read_ahead: Vec<u8>, config: WebSocketConfig, span: Span) -> Self {
        let io = Io { tcp, waker: Waker::noop().clone() };
        let ws = WebSocket::from_partially_read(io, read_ahead, Role::Server, Some(config));
        Self { ws, span, ended: false, ready: true }
    }

    /// The connection's span (`conn{id=… peer=…}`), named as the explicit parent of each of
    /// its log lines. The task is not instrumented with it: entering and leaving a span at
    /// every poll, twice per message, cost 0.6 µs of the server's CPU per message at 1000
    /// connections (docs/BENCHMARKS.md, "What was tried"); a log line costs it only when it is
    /// written.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The next message: `None` once the connection is over.
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next message if one is already here (buffered, or readable without waiting):
    /// `None` if reading it would wait.
    pub fn try_next(&mut self) -> Option<Option<Result<Message, Error>>> {
        match self.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(next) => Some(next),
            Poll::Pending => None,
        }
    }

    /// Queues `message` to be written; tungstenite writes its buffer out once that holds
    /// `write_buffer_size`. Waits only to unblock an earlier write.
    #[allow(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
    pub fn feed(&mut self, message: Message) -> impl Future<Output = Result<(), Error>> + '_ {
        // Not an `async fn`, which would hold `message` twice (see `connection::serve`).
        async move {
            if !self.ready {
                poll_fn(|cx| self.poll_write(cx, WebSocket::flush)).await?;
                self.ready = true;
            }
            match self.ws.write(message) {
                Ok(()) => Ok(()),
                // Queued, but the socket is full: the next feed or flush waits for it.
                Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.ready = false;
                    Ok(())
                }
                Err(error) => Err(error),
            }
        }
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let flushed = poll_fn(|cx| self.poll_write(cx, WebSocket::flush)).await;
        self.ready = true;
        match flushed {
            // The Close handshake has just completed: nothing left to write is no failure.
            Err(Error::ConnectionClosed) => Ok(()),
            other => other,
        }
    }

    /// Queues `message` and writes it out.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// The TCP stream underneath, for what comes after the last frame (half-closing, then
    /// discarding what the peer still sends).
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.ws.get_mut().tcp
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        self.ws.get_mut().waker.clone_from(cx.waker());
        match self.ws.read() {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(error) => {
                self.ended = true;
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        write: fn(&mut WebSocket<Io>) -> Result<(), Error>,
    ) -> Poll<Result<(), Error>> {
        self.ws.get_mut().waker.clone_from(cx.waker());
        match write(&mut self.ws) {
            Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            done => Poll::Ready(done),
        }
    }
}

/// The `TcpStream` as the blocking-style `Read` and `Write` tungstenite calls, with "would
/// wait" as [`io::ErrorKind::WouldBlock`]; `waker` (the polling task's) is what tokio wakes
/// once it can go on.
#[derive(Debug)]
struct Io {
    tcp: TcpStream,
    waker: Waker,
}

impl Io {
    fn poll<R>(
        &mut self,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> io::Result<R> {
        let mut cx = Context::from_waker(&self.waker);
        match op(Pin::new(&mut self.tcp), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll(|tcp, cx| {
            let mut buf = ReadBuf::new(buf);
            tcp.poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
        })
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|tcp, cx| tcp.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(AsyncWrite::poll_flush)
    }
}
