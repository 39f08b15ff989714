//! Drives one WebSocket connection with gloo-net and reports what happens as [`Event`]s.

use std::ops::ControlFlow;

use futures_util::{SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};

use crate::session::Event;

/// Why a connection could not even be attempted.
#[derive(Debug)]
pub struct OpenError(pub String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot open a WebSocket: {}", self.0)
    }
}

/// Opens `url`, sends `greeting` once open, and reports every event to `on_event` until the
/// connection closes or `on_event` breaks (which closes it with 1000).
///
/// A connection that fails reports [`Event::Closed`] without [`Event::Opened`] and returns
/// `Ok`: the failure is an event the page shows, not an error.
pub async fn run(
    url: &str,
    greeting: &str,
    mut on_event: impl FnMut(Event) -> ControlFlow<()>,
) -> Result<(), OpenError> {
    let mut socket = WebSocket::open(url).map_err(|error| OpenError(error.to_string()))?;

    // Ready once the handshake finished, either way; only an open socket gets the greeting.
    let ready = futures_util::future::poll_fn(|cx| socket.poll_ready_unpin(cx)).await;
    if ready.is_ok() && matches!(socket.state(), State::Open) {
        if on_event(Event::Opened).is_break() {
            return close(socket);
        }
        if let Err(error) = socket.send(Message::Text(greeting.to_owned())).await {
            web_sys::console::warn_1(&format!("cannot send the greeting: {error}").into());
        }
    }

    while let Some(item) = socket.next().await {
        let event = match item {
            Ok(Message::Text(text)) => Event::Received(text),
            Ok(Message::Bytes(bytes)) => Event::ReceivedBinary(bytes.len()),
            Err(WebSocketError::ConnectionClose(close)) => {
                Event::Closed { code: close.code, reason: close.reason, clean: close.was_clean }
            }
            // The browser reports errors without detail and always follows them with a close.
            Err(error) => {
                web_sys::console::warn_1(&format!("WebSocket error: {error}").into());
                continue;
            }
        };
        if on_event(event).is_break() {
            return close(socket);
        }
    }
    Ok(())
}

fn close(socket: WebSocket) -> Result<(), OpenError> {
    socket.close(Some(wire::close::NORMAL), None).map_err(|error| OpenError(error.to_string()))
}
