//! The socket side: gloo-net's WebSocket events as session [`Input`]s.

use std::ops::ControlFlow;

use futures_util::{Sink, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};

use crate::session::Input;

/// Why a connection could not even be attempted (a malformed URL, say).
#[derive(Debug)]
pub struct OpenError(pub String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot open a WebSocket: {}", self.0)
    }
}

/// Starts connecting to `url`; the socket reports its opening through `poll_ready`.
pub fn open(url: &str) -> Result<WebSocket, OpenError> {
    WebSocket::open(url).map_err(|error| OpenError(error.to_string()))
}

/// Sends `text` on an open socket at once: the browser buffers it, so there is nothing to wait
/// for (and the page's loop stays a single `await`).
pub fn send(socket: &mut WebSocket, text: String) {
    if std::pin::Pin::new(socket).start_send(Message::Text(text)).is_err() {
        web_sys::console::warn_1(&"cannot send on the WebSocket".into());
    }
}

/// Whether a socket whose `poll_ready` completed is open (rather than failed).
pub fn is_open(socket: &WebSocket) -> bool {
    matches!(socket.state(), State::Open)
}

/// The session input for one item of the socket's stream; `None` for the error events the
/// browser sends without detail (a close always follows them).
pub fn to_input(item: Result<Message, WebSocketError>) -> Option<Input> {
    match item {
        Ok(Message::Text(text)) => Some(Input::Received(text)),
        Ok(Message::Bytes(bytes)) => Some(Input::ReceivedBinary(bytes.len())),
        Err(WebSocketError::ConnectionClose(close)) => {
            let detail = format!(
                "WebSocket closed: code {}, reason \"{}\", clean {}",
                close.code, close.reason, close.was_clean
            );
            web_sys::console::info_1(&detail.into());
            Some(Input::Closed { code: close.code, reason: close.reason, clean: close.was_clean })
        }
        Err(error) => {
            web_sys::console::warn_1(&format!("WebSocket error: {error}").into());
            None
        }
    }
}

/// One connection from open to close, for tests and tools: sends `first` once open and reports
/// every input to `on_input` until the connection closes or `on_input` breaks (which closes it
/// with 1000). A connection that fails reports [`Input::Closed`] without [`Input::Opened`].
pub async fn run(
    url: &str,
    first: &str,
    mut on_input: impl FnMut(Input) -> ControlFlow<()>,
) -> Result<(), OpenError> {
    let mut socket = open(url)?;
    let ready = futures_util::future::poll_fn(|cx| socket.poll_ready_unpin(cx)).await;
    if ready.is_ok() && is_open(&socket) {
        if on_input(Input::Opened).is_break() {
            return close(socket);
        }
        send(&mut socket, first.to_owned());
    }
    while let Some(item) = socket.next().await {
        if let Some(input) = to_input(item) {
            if on_input(input).is_break() {
                return close(socket);
            }
        }
    }
    Ok(())
}

/// Closes with 1000 (normal), as the page does when the user disconnects.
pub fn close(socket: WebSocket) -> Result<(), OpenError> {
    socket.close(Some(wire::close::NORMAL), None).map_err(|error| OpenError(error.to_string()))
}
