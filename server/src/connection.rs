//! One WebSocket connection: the loop that reads frames, answers them and closes cleanly.
//!
//! The loop is generic over any `Stream + Sink` of axum messages and is the only place that
//! talks to the socket; what to do with each frame is decided by the pure [`respond`].

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use wire::close;

/// How long to wait for the peer's answer after this side sent a Close frame.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one outgoing frame may wait on a peer that does not read; then the connection is
/// dropped, so a stalled client cannot pin a task and its buffers forever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connection loop does with one incoming frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this text back.
    Reply(String),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
    /// The peer started the closing handshake with this code (`None`: no code given).
    PeerClosed(Option<u16>),
    /// Nothing to send (pings and pongs are answered by the protocol layer).
    Nothing,
}

/// The application's rule for one frame: text is answered upper-cased, binary is refused.
pub fn respond(message: &Message) -> Action {
    match message {
        Message::Text(text) => Action::Reply(wire::reply(text.as_str())),
        Message::Binary(_) => Action::Close(close::UNSUPPORTED_DATA, close::REASON_BINARY),
        Message::Close(frame) => Action::PeerClosed(frame.as_ref().map(|f| f.code)),
        Message::Ping(_) | Message::Pong(_) => Action::Nothing,
    }
}

/// The close code and reason to send when reading failed, if the peer should get one.
pub fn close_for_error(error: &axum::Error) -> Option<(u16, &'static str)> {
    let inner = std::error::Error::source(error)?;
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((close::MESSAGE_TOO_BIG, close::REASON_TOO_BIG)),
        tungstenite::Error::Utf8(_) => Some((close::INVALID_PAYLOAD, close::REASON_INVALID_UTF8)),
        tungstenite::Error::Protocol(_) => Some((close::PROTOCOL_ERROR, close::REASON_PROTOCOL)),
        _ => None,
    }
}

/// Runs one connection to its end: greets, answers each text message in order, and closes
/// with a code on bad input or when `shutdown` is cancelled.
pub async fn serve<S>(mut socket: S, peer: SocketAddr, shutdown: CancellationToken)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    info!(%peer, "New connection");
    let code = match send(&mut socket, Message::text(wire::WELCOME)).await {
        Ok(()) => run_loop(&mut socket, peer, &shutdown).await,
        Err(error) => {
            debug!(%peer, %error, "could not send the greeting");
            None
        }
    };
    info!(%peer, code = code.unwrap_or(close::ABNORMAL), "Connection closed");
}

/// The connection's one `select!` loop. Returns the close code, or `None` if the connection
/// dropped without a closing handshake.
async fn run_loop<S>(socket: &mut S, peer: SocketAddr, shutdown: &CancellationToken) -> Option<u16>
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let mut peer_code = None;
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled(), if peer_code.is_none() => {
                return Some(close_from_here(socket, close::GOING_AWAY, close::REASON_SHUTDOWN).await);
            }
            frame = socket.next() => frame,
        };
        let message = match frame {
            // The stream ends after the peer's Close was answered, or on a dropped connection.
            None => return peer_code,
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                debug!(%peer, %error, "read failed");
                return match close_for_error(&error) {
                    Some((code, reason)) => Some(close_from_here(socket, code, reason).await),
                    None => peer_code,
                };
            }
        };
        if let Message::Text(text) = &message {
            debug!(%peer, len = text.len(), text = text.as_str(), "New message");
        }
        match respond(&message) {
            Action::Reply(reply) => {
                if let Err(error) = send(socket, Message::text(reply)).await {
                    debug!(%peer, %error, "could not send the reply");
                    return peer_code;
                }
            }
            Action::Close(code, reason) => {
                return Some(close_from_here(socket, code, reason).await)
            }
            // tungstenite queues the answering Close; the next read flushes it and ends.
            Action::PeerClosed(code) => peer_code = Some(code.unwrap_or(close::NO_STATUS)),
            Action::Nothing => {}
        }
    }
}

/// Why an outgoing frame did not go out.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Socket(#[from] axum::Error),
    #[error("the peer read nothing for {SEND_TIMEOUT:?}")]
    Stalled,
}

/// Sends one frame, giving up on a peer that has stopped reading.
async fn send<S>(socket: &mut S, message: Message) -> Result<(), SendError>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(SendError::Stalled),
    }
}

/// Sends a Close frame with `code`, waits (bounded) for the peer to answer it, and returns
/// `code`: whatever the peer does, that is how this side closed.
async fn close_from_here<S>(socket: &mut S, code: u16, reason: &'static str) -> u16
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame { code, reason: reason.into() };
    if send(socket, Message::Close(Some(frame))).await.is_ok() {
        let drain = async { while let Some(Ok(_)) = socket.next().await {} };
        // The timeout only stops waiting for a silent peer.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_answered_upper_cased() {
        assert_eq!(respond(&Message::text("straße")), Action::Reply("STRASSE".into()));
    }

    #[test]
    fn binary_is_refused_with_1003() {
        let action = respond(&Message::binary(vec![1, 2, 3]));
        assert_eq!(action, Action::Close(close::UNSUPPORTED_DATA, close::REASON_BINARY));
    }

    #[test]
    fn close_frames_report_their_code() {
        let frame = CloseFrame { code: close::NORMAL, reason: "bye".into() };
        assert_eq!(respond(&Message::Close(Some(frame))), Action::PeerClosed(Some(close::NORMAL)));
        assert_eq!(respond(&Message::Close(None)), Action::PeerClosed(None));
    }

    #[test]
    fn pings_need_no_answer_from_the_application() {
        assert_eq!(respond(&Message::Ping(vec![1].into())), Action::Nothing);
        assert_eq!(respond(&Message::Pong(vec![1].into())), Action::Nothing);
    }
}
