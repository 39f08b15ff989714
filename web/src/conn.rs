//! The socket side: gloo-net's WebSocket events as session [`Input`]s, and the room's JSON
//! frames as room inputs.

use std::ops::ControlFlow;

use futures_util::{Sink, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};

use crate::room;
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

/// One connection from open to close, for tests and tools: sends `first` (unless it is empty)
/// once open and reports every input to `on_input` until the connection closes or `on_input`
/// breaks (which closes it with 1000). A connection that fails reports [`Input::Closed`] without [`Input::Opened`].
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
        if !first.is_empty() {
            send(&mut socket, first.to_owned());
        }
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
    close_with(socket, wire::close::NORMAL, "")
}

/// Closes with `code` (1000 or 3000–4999) and `reason` (empty for none).
pub fn close_with(socket: WebSocket, code: u16, reason: &str) -> Result<(), OpenError> {
    let reason = (!reason.is_empty()).then_some(reason);
    socket.close(Some(code), reason).map_err(|error| OpenError(error.to_string()))
}

/// The room's input for one socket event (as [`to_input`] gives it): text frames decoded with
/// the browser's own `JSON.parse` (far smaller in the bundle than serde in wasm).
pub fn room_input(input: Input) -> Option<room::Input> {
    Some(match input {
        Input::Opened => room::Input::Opened,
        Input::Received(text) => match decode_frame(&text) {
            Some(frame) => room::Input::Frame(frame),
            None => room::Input::Unreadable(text),
        },
        Input::ReceivedBinary(len) => room::Input::Unreadable(format!("<{len} bytes>")),
        Input::Closed { code, reason, clean } => room::Input::Closed { code, reason, clean },
        // The socket gives no other inputs.
        _ => return None,
    })
}

/// One of the room's JSON frames (`wire::room`), or `None` for anything else: not JSON, not an
/// object, an unknown `type`, a field missing or of the wrong type, a number that is not a
/// whole one.
pub fn decode_frame(text: &str) -> Option<room::Frame> {
    use wasm_bindgen::JsValue;
    use wire::room::kind;

    let value = js_sys::JSON::parse(text).ok()?;
    if !value.is_object() {
        return None;
    }
    let get = |key: &str| js_sys::Reflect::get(&value, &JsValue::from_str(key)).ok();
    let text = |key: &str| get(key)?.as_string();
    let number = |key: &str| get(key)?.as_f64().filter(|n| *n >= 0.0 && n.fract() == 0.0);
    let count = |key: &str| number(key).filter(|n| *n <= f64::from(u32::MAX)).map(|n| n as u32);
    let frame = match text("type")?.as_str() {
        kind::JOINED => room::Frame::Joined {
            you: text("you")?,
            epoch: text("epoch")?,
            offset: number("offset")? as u64,
            online: count("online")?,
            recovered: get("recovered")?.as_bool()?,
        },
        kind::MESSAGE => room::Frame::Message {
            offset: number("offset")? as u64,
            time: number("time")?,
            from: text("from")?,
            text: text("text")?,
        },
        kind::PRESENCE => room::Frame::Presence { online: count("online")? },
        kind::REFUSED => room::Frame::Refused { reason: text("reason")? },
        _ => return None,
    };
    Some(frame)
}
