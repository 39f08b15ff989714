//! One WebSocket connection: the pump between the socket and its [`App`], which keeps the
//! connection alive and closes it cleanly.
//!
//! [`serve`] is the only code that talks to an upgraded socket: one task, one `select!` over
//! the shutdown token, the app's mailbox (the room's pushes), the next frame and the keepalive
//! timer (the next ping or the idle deadline, whichever comes first), in that order. What to
//! do with each frame is decided by the app ([`crate::app::respond`] for the echo); how the
//! connection ended is one [`Ending`], logged and counted in one place.

use std::fmt;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use wire::close;

use crate::app::{self, Action, App, Mode};
use crate::metrics::Metrics;
use crate::socket::Socket;
use crate::wake::OnWake;
use crate::Config;

/// How long to wait for the peer's answer after this side sent a Close frame.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// After a message that could not be parsed to its end (too big, bad UTF-8, broken framing),
/// the rest of what the peer sends is read and thrown away, at most this much, so the Close
/// frame reaches it instead of a TCP reset (see [`close_unread`]).
pub const DISCARD_LIMIT: u64 = 16 * 1024 * 1024;

/// tungstenite's read buffer per connection. Its default, 128 KiB, is allocated eagerly for
/// every socket: 1.3 GB for 10,000 idle connections (axum's defaults hold 137 KB per idle
/// connection in `cargo xtask bench`). The tutorial's messages are tens of bytes, and 512 B
/// still takes a burst of a dozen of them per `read()`; a bigger message grows the buffer to
/// its own size on demand (and it keeps that size while the connection lives), read 512 B per
/// call. Measured (docs/BENCHMARKS.md): 4 KiB → 1 KiB took 3 KB off each idle connection,
/// 1 KiB → 512 B another 0.5 KB (5,339 → 4,838 B at 10,000), and neither moved a throughput
/// figure beyond noise (pipelined 64 × 16 included).
pub const READ_BUFFER_SIZE: usize = 512;
/// How much outgoing data tungstenite gathers before writing it to the socket when frames
/// are queued without a flush. Grown on demand, not allocated up front. Every send here
/// flushes, so this only matters for batching.
pub const WRITE_BUFFER_SIZE: usize = 8 * 1024;
/// Upper-casing can make UTF-8 text at most three times longer (`ΐ`, 2 bytes, becomes
/// `Ϊ́`, 6 bytes), so a reply may be that much bigger than the largest message.
const MAX_REPLY_GROWTH: usize = 3;
/// A room frame is its text as a JSON string: a control character (1 byte) becomes `\u00XX`
/// (6 bytes), plus the frame's own fields.
const MAX_ROOM_FRAME_GROWTH: usize = 6;
const ROOM_FRAME_OVERHEAD: usize = 256;

/// The per-connection part of [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_message_size: usize,
    too_big_reason: Utf8Bytes,
}

impl Settings {
    pub fn new(config: &Config) -> Self {
        Self {
            mode: if config.plain_echo { Mode::PlainEcho } else { Mode::Tutorial },
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            send_timeout: config.send_timeout,
            max_message_size: config.max_message_size,
            too_big_reason: close::reason_too_big(config.max_message_size).into(),
        }
    }

    /// tungstenite's limits and buffers for one connection.
    ///
    /// Incoming messages and frames are capped at `--max-message-size`. Outgoing, the loop
    /// queues the replies to a burst of messages that had already arrived and flushes once
    /// (waiting at most `--send-timeout`), and it reads nothing new until the flush is done:
    /// a peer that never reads holds at most `WRITE_BUFFER_SIZE` plus one reply here, and the
    /// kernel's socket buffers. The write-buffer cap is a second line of defence sized to the
    /// largest possible reply.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let largest_reply = self
            .max_message_size
            .saturating_mul(MAX_REPLY_GROWTH)
            .max(self.max_message_size.saturating_mul(MAX_ROOM_FRAME_GROWTH) + ROOM_FRAME_OVERHEAD);
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .write_buffer_size(WRITE_BUFFER_SIZE)
            .max_write_buffer_size(WRITE_BUFFER_SIZE + largest_reply + 64)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// The close code and reason for a read error the peer should hear about; `None` for errors
/// where the connection is already gone. tungstenite reports a TCP close without a Close frame
/// as a protocol error (`ResetWithoutClosingHandshake`); it is no bad message but a dropped
/// connection (1006), and logged and counted as one.
pub fn close_for_error(
    error: &tungstenite::Error,
    settings: &Settings,
) -> Option<(u16, Utf8Bytes)> {
    match error {
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => None,
        tungstenite::Error::Capacity(_) => {
            Some((close::MESSAGE_TOO_BIG, settings.too_big_reason.clone()))
        }
        tungstenite::Error::Utf8(_) => {
            Some((close::INVALID_PAYLOAD, close::REASON_INVALID_UTF8.into()))
        }
        tungstenite::Error::Protocol(_) => {
            Some((close::PROTOCOL_ERROR, close::REASON_PROTOCOL.into()))
        }
        _ => None,
    }
}

/// Who started a closing handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Peer,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A Close frame with this code was sent by `by` (and answered, or waited for).
    Closed { code: u16, by: Side },
    /// Nothing arrived for `--idle-timeout`: closed with 1001.
    Idle,
    /// The peer read nothing for `--send-timeout`: dropped without a Close frame, since it
    /// would not be read either.
    Stalled,
    /// The TCP connection ended without a closing handshake.
    Dropped,
}

impl Ending {
    /// The close code the connection ended with (1006 when there was none).
    pub fn code(self) -> u16 {
        match self {
            Ending::Closed { code, .. } => code,
            Ending::Idle => close::GOING_AWAY,
            Ending::Stalled | Ending::Dropped => close::ABNORMAL,
        }
    }

    fn count(self, metrics: &Metrics) {
        metrics.closed(self.code());
        match self {
            Ending::Idle => metrics.idle_closes.inc(),
            Ending::Stalled => metrics.stalled_closes.inc(),
            Ending::Closed { .. } | Ending::Dropped => 0,
        };
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Closed { by: Side::Peer, .. } => "closed by the peer",
            Ending::Closed { by: Side::Server, .. } => "closed by the server",
            Ending::Idle => "idle timeout: nothing received",
            Ending::Stalled => "the peer stopped reading",
            Ending::Dropped => "dropped without a close",
        })
    }
}

/// Why an outgoing frame did not go out.
#[derive(Debug)]
enum SendError {
    /// The socket failed: the connection is gone.
    Socket,
    /// The peer read nothing for the send timeout.
    Stalled,
}

impl From<SendError> for Ending {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Socket => Ending::Dropped,
            SendError::Stalled => Ending::Stalled,
        }
    }
}

/// Runs one connection to its end: greets, hands each message to the app in order, writes
/// what the app pushes, pings, and closes with a code on bad input, silence, a full mailbox or
/// shutdown. Logs and counts how it ended.
///
/// Not an `async fn`: one stores each argument twice in its future (rust-lang/rust#62958),
/// here the socket and the app, 456 B of every idle connection's memory. The block uses them
/// where it captured them.
#[allow(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
pub fn serve<'a>(
    mut socket: Socket,
    mut app: App,
    settings: &'a Settings,
    shutdown: &'a CancellationToken,
    metrics: &'a Metrics,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        info!(parent: socket.span(), "New connection");
        metrics.connections.inc();
        let mut greeted = Ok(());
        for frame in app.take_greeting() {
            greeted = queue_data(&mut socket, Message::Text(frame), settings, metrics).await;
            if greeted.is_err() {
                break;
            }
        }
        if greeted.is_ok() {
            greeted = flush(&mut socket, settings.send_timeout).await;
        }
        let ending = match greeted {
            Ok(()) => run_loop(&mut socket, &mut app, settings, shutdown, metrics).await,
            Err(error) => error.into(),
        };
        ending.count(metrics);
        info!(parent: socket.span(), code = ending.code(), ending = %ending, "Connection closed");
    }
}

/// Most pushed frames written in one go before the loop looks at the socket again.
const PUSH_BATCH: usize = 64;

/// The connection's one `select!` loop.
async fn run_loop(
    socket: &mut Socket,
    app: &mut App,
    settings: &Settings,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) -> Ending {
    // One timer for both keepalive deadlines, the next ping and the idle timeout (a timer is
    // memory every idle connection holds). Re-armed lazily: each frame only records the time;
    // the timer moves when it fires.
    let mut last_heard = Instant::now();
    let mut next_ping = last_heard + settings.ping_interval;
    let keepalive = next_ping.min(last_heard + settings.idle_timeout);
    let keepalive = std::pin::pin!(tokio::time::sleep_until(keepalive));
    let mut keepalive = OnWake::new(keepalive);
    let cancelled = std::pin::pin!(shutdown.cancelled());
    let mut cancelled = OnWake::new(cancelled);
    let mut peer_code = None;
    // The loop's future is part of every connection's memory, and its size is its largest
    // await's: the paths taken once (closing) or rarely (a ping, a publish to the room) await
    // boxed futures, which cost an allocation when taken instead of their size in every idle
    // connection (with the `fn`s below that are not `async fn`: 2,712 -> 1,880 B for
    // `serve`'s future, RSS per idle connection 4,900 -> 4,070 B).
    // A frame that had already arrived when the last reply was queued (see below).
    let mut arrived = None;
    let has_mailbox = app.has_mailbox();

    loop {
        let frame = if let Some(frame) = arrived.take() {
            frame
        } else {
            // In this order, and no further once one is ready: shutdown first, so that even a
            // peer that never stops sending sees it; then what the app pushes, so that a peer
            // busy sending still gets the room's messages in time; then the socket, so that a
            // message costs no polls of the timers (they only matter once the peer is quiet,
            // and tokio's cooperative budget still lets them run under a flood).
            tokio::select! {
                biased;
                () = &mut cancelled, if peer_code.is_none() => {
                    return Box::pin(close_from_here(socket, close::GOING_AWAY, close::REASON_SHUTDOWN.into(), settings, CLOSE_HANDSHAKE_TIMEOUT)).await;
                }
                pushed = app.pushed(), if has_mailbox && peer_code.is_none() => {
                    let frame = match pushed {
                        Ok(frame) => frame,
                        Err(end) => {
                            let (code, reason) = app::close_for_end(end);
                            info!(parent: socket.span(), code, reason, "closing: the room ended this member");
                            return Box::pin(close_from_here(socket, code, reason.into(), settings, CLOSE_HANDSHAKE_TIMEOUT)).await;
                        }
                    };
                    if let Err(error) = write_pushed(socket, app, frame, settings, metrics).await {
                        return error.into();
                    }
                    continue;
                }
                frame = socket.next() => frame,
                () = &mut keepalive => {
                    let now = Instant::now();
                    let idle_deadline = last_heard + settings.idle_timeout;
                    if idle_deadline <= now {
                        info!(parent: socket.span(), idle_timeout = ?settings.idle_timeout, "nothing received for the idle timeout; closing");
                        // The peer is probably gone: wait for its Close no longer than it was silent.
                        let wait = settings.idle_timeout.min(CLOSE_HANDSHAKE_TIMEOUT);
                        Box::pin(close_from_here(socket, close::GOING_AWAY, close::REASON_IDLE.into(), settings, wait)).await;
                        return Ending::Idle;
                    }
                    if next_ping <= now {
                        if let Err(error) = Box::pin(send(socket, Message::Ping(Bytes::new()), settings.send_timeout)).await {
                            return error.into();
                        }
                        metrics.pings_sent.inc();
                        // A late ping moves the next one back (as `MissedTickBehavior::Delay`).
                        next_ping = now + settings.ping_interval;
                    }
                    keepalive.force().as_mut().reset(next_ping.min(idle_deadline));
                    continue;
                }
            }
        };
        last_heard = Instant::now();
        let message = match frame {
            // The stream ends after the peer's Close was answered, or on a dropped connection.
            None => return peer_closed(peer_code),
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                debug!(parent: socket.span(), %error, "read failed");
                return match close_for_error(&error, settings) {
                    Some((code, reason)) => {
                        info!(parent: socket.span(), code, %reason, "closing after a bad message");
                        Box::pin(close_unread(socket, code, reason, settings)).await
                    }
                    None => peer_closed(peer_code),
                };
            }
        };
        if let Message::Text(text) = &message {
            debug!(parent: socket.span(), len = text.len(), text = text.as_str(), "New message");
        }
        if let Message::Text(_) | Message::Binary(_) = &message {
            metrics.received(message.len());
        }
        let reply = match app.respond(message) {
            Action::Send(reply) => Some(reply),
            Action::Publish(text) => Box::pin(app.publish(&text)).await.map(Message::Text),
            Action::Close(code, reason) => {
                return Box::pin(close_from_here(
                    socket,
                    code,
                    reason.into(),
                    settings,
                    CLOSE_HANDSHAKE_TIMEOUT,
                ))
                .await;
            }
            // tungstenite queues the answering Close; the next read flushes it and ends.
            Action::PeerClosed(code) => {
                peer_code = Some(code.unwrap_or(close::NO_STATUS));
                None
            }
            Action::Nothing => None,
        };
        if let Some(reply) = reply {
            if let Err(error) = queue_data(socket, reply, settings, metrics).await {
                return error.into();
            }
        }
        // What the room pushed meanwhile goes out with the replies: a member publishing a
        // burst longer than its mailbox gets its own messages back as part of it instead of
        // becoming its own slow consumer (the look-ahead below keeps reading).
        if has_mailbox {
            for _ in 0..PUSH_BATCH {
                let Some(frame) = app.try_pushed() else { break };
                if let Err(error) =
                    queue_data(socket, Message::Text(frame), settings, metrics).await
                {
                    return error.into();
                }
            }
        }
        // Replies to a burst of messages go out in one write: while the next frame is already
        // here (in tungstenite's buffer or the socket's), answer it first; flush once nothing
        // more has arrived.
        if let Some(frame) = socket.try_next() {
            arrived = Some(frame);
            continue;
        }
        if let Err(error) = flush(socket, settings.send_timeout).await {
            return error.into();
        }
    }
}

/// Writes `first` and whatever else the app has already queued (up to [`PUSH_BATCH`]) in one
/// flush.
async fn write_pushed(
    socket: &mut Socket,
    app: &mut App,
    first: Utf8Bytes,
    settings: &Settings,
    metrics: &Metrics,
) -> Result<(), SendError> {
    queue_data(socket, Message::Text(first), settings, metrics).await?;
    for _ in 1..PUSH_BATCH {
        match app.try_pushed() {
            Some(frame) => queue_data(socket, Message::Text(frame), settings, metrics).await?,
            None => break,
        }
    }
    flush(socket, settings.send_timeout).await
}

fn peer_closed(peer_code: Option<u16>) -> Ending {
    match peer_code {
        Some(code) => Ending::Closed { code, by: Side::Peer },
        None => Ending::Dropped,
    }
}

/// Queues one data message without flushing (tungstenite writes it out once its buffer holds
/// `WRITE_BUFFER_SIZE`), and counts it. The caller flushes.
#[allow(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
fn queue_data<'a>(
    socket: &'a mut Socket,
    message: Message,
    settings: &'a Settings,
    metrics: &'a Metrics,
) -> impl Future<Output = Result<(), SendError>> + 'a {
    // Not an `async fn`, which would hold `message` twice (see `serve`).
    async move {
        let len = message.len();
        bounded(socket, settings.send_timeout, async move |socket| socket.feed(message).await)
            .await?;
        metrics.sent(len);
        Ok(())
    }
}

/// Writes out whatever is queued, giving up on a peer that has stopped reading.
async fn flush(socket: &mut Socket, limit: Duration) -> Result<(), SendError> {
    bounded(socket, limit, Socket::flush).await
}

/// Sends one frame and waits until it is written, giving up on a peer that has stopped
/// reading: this wait is what bounds the server's outgoing memory per connection.
async fn send(socket: &mut Socket, message: Message, limit: Duration) -> Result<(), SendError> {
    bounded(socket, limit, async move |socket| socket.send(message).await).await
}

/// Runs one write operation for at most `limit`: a peer that lets it wait that long has
/// stopped reading. The timer is set only once the write has to wait: most writes are done at
/// their first poll, and a timer for each would cost a clock read and a timer entry per frame.
/// Logs a failure in the connection's span.
#[allow(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
fn bounded<'a, W>(
    socket: &'a mut Socket,
    limit: Duration,
    write: W,
) -> impl Future<Output = Result<(), SendError>> + 'a
where
    W: for<'s> AsyncFnOnce(&'s mut Socket) -> Result<(), tungstenite::Error> + 'a,
{
    // Not an `async fn`, which would hold `write` (and the frame in it) twice.
    async move {
        let written = {
            let mut write = std::pin::pin!(write(socket));
            match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
                Poll::Ready(written) => Some(written),
                // Boxed: the timer is 112 B of every connection's future otherwise, for the rare
                // write that has to wait.
                Poll::Pending => Box::pin(tokio::time::timeout(limit, write)).await.ok(),
            }
        };
        match written {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => {
                debug!(parent: socket.span(), %error, "write failed");
                Err(SendError::Socket)
            }
            None => {
                info!(parent: socket.span(), send_timeout = ?limit, "the peer stopped reading; dropping the connection");
                Err(SendError::Stalled)
            }
        }
    }
}

/// Sends a Close frame with `code` and `reason`.
async fn send_close(
    socket: &mut Socket,
    code: u16,
    reason: Utf8Bytes,
    settings: &Settings,
) -> Result<(), SendError> {
    let frame = CloseFrame { code: code.into(), reason };
    send(socket, Message::Close(Some(frame)), settings.send_timeout).await
}

/// Sends a Close frame and waits (at most `wait`) for the peer's answering Close, reading and
/// ignoring whatever it still sends before it.
async fn close_from_here(
    socket: &mut Socket,
    code: u16,
    reason: Utf8Bytes,
    settings: &Settings,
    wait: Duration,
) -> Ending {
    if let Err(error) = send_close(socket, code, reason, settings).await {
        return error.into();
    }
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    // The timeout only stops waiting for a silent peer.
    let _ = tokio::time::timeout(wait, drain).await;
    Ending::Closed { code, by: Side::Server }
}

/// Closes after a read error, when the peer's bytes can no longer be parsed as frames (a
/// message over the limit is refused at its header, with the rest of it unread).
///
/// Simply dropping the socket with unread data makes the kernel send a TCP reset, and a reset
/// makes the peer discard what it has not read yet, the Close frame included: Chromium then
/// reports 1006 instead of the server's code. So: send the Close frame, half-close (FIN), then
/// read and discard until the peer closes its side, at most [`DISCARD_LIMIT`] bytes and
/// [`CLOSE_HANDSHAKE_TIMEOUT`].
async fn close_unread(
    socket: &mut Socket,
    code: u16,
    reason: Utf8Bytes,
    settings: &Settings,
) -> Ending {
    if let Err(error) = send_close(socket, code, reason, settings).await {
        return error.into();
    }
    let io = socket.tcp_mut();
    let discard = async {
        io.shutdown().await?;
        // On the heap: a stack array here would be part of every connection's future, closing or not.
        let mut buffer = vec![0; 4096];
        let mut total = 0;
        while total < DISCARD_LIMIT {
            match io.read(&mut buffer).await? {
                0 => break,
                n => total += n as u64,
            }
        }
        Ok::<_, std::io::Error>(total)
    };
    let discarded = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, discard).await;
    let span = socket.span();
    match discarded {
        Ok(Ok(discarded)) => debug!(parent: span, discarded, "peer closed after the Close frame"),
        Ok(Err(error)) => debug!(parent: span, %error, "discarding after the Close frame failed"),
        Err(_) => debug!(parent: span, "peer still sending after the Close frame; dropping"),
    }
    Ending::Closed { code, by: Side::Server }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_casing_grows_text_at_most_threefold() {
        let worst = "\u{0390}";
        assert_eq!(wire::reply(worst).len(), MAX_REPLY_GROWTH * worst.len());
    }

    #[test]
    fn a_tcp_close_without_a_close_frame_is_no_bad_message() {
        let settings = Settings::new(&Config::default());
        let reset = tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        );
        assert_eq!(close_for_error(&reset, &settings), None);
        let bad =
            tungstenite::Error::Protocol(tungstenite::error::ProtocolError::NonZeroReservedBits);
        assert_eq!(
            close_for_error(&bad, &settings).map(|(code, _)| code),
            Some(close::PROTOCOL_ERROR)
        );
    }

    #[test]
    fn endings_map_to_close_codes() {
        assert_eq!(Ending::Idle.code(), close::GOING_AWAY);
        assert_eq!(Ending::Stalled.code(), close::ABNORMAL);
        assert_eq!(Ending::Closed { code: 1009, by: Side::Server }.code(), 1009);
    }
}
