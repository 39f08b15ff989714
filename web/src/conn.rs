//! The connection side: [`Conn`], one connection over either transport (gloo-net's WebSocket
//! or a long-polling [`Polling`] session) reporting the same session [`Input`]s; [`Probe`], a
//! WebSocket tried beside a polling connection; and the room's JSON frames as room inputs.

use std::ops::ControlFlow;
use std::task::{Context, Poll};

use futures_util::{Sink, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};

use crate::poll::Polling;
use crate::room;
use crate::session::Input;

/// One connection over either transport, as the state machines see it: [`Input::Opened`] at
/// its first message, just before that message (a WebSocket that opens and then passes
/// nothing is not open: see [`crate::link`]), then [`Input::Received`] for each message, and
/// one [`Input::Closed`] at the end, also for a connection that never opened.
pub struct Conn {
    carrier: Carrier,
    /// Whether `Opened` was reported.
    opened: bool,
    /// The first message, reported right after `Opened`.
    held: Option<Input>,
}

enum Carrier {
    WebSocket(WebSocket),
    Polling(Polling),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let carrier = match &self.carrier {
            Carrier::WebSocket(_) => "WebSocket",
            Carrier::Polling(_) => "long polling",
        };
        f.debug_struct("Conn").field("carrier", &carrier).field("opened", &self.opened).finish()
    }
}

impl Conn {
    /// Starts connecting a WebSocket to `url`.
    pub fn websocket(url: &str) -> Result<Self, OpenError> {
        Ok(Self::new(Carrier::WebSocket(open(url)?)))
    }

    /// Opens a long-polling session of `app` under the polling `base`, with `query` (the
    /// room's resume point, or empty).
    pub fn polling(base: &str, app: wire::poll::Open, query: &str) -> Result<Self, OpenError> {
        let polling = Polling::open(base, app, query).map_err(|error| OpenError(error.0))?;
        Ok(Self::new(Carrier::Polling(polling)))
    }

    fn new(carrier: Carrier) -> Self {
        Self { carrier, opened: false, held: None }
    }

    /// Sends `text` (the connection is open).
    pub fn send(&mut self, text: String) {
        match &mut self.carrier {
            Carrier::WebSocket(socket) => send(socket, text),
            Carrier::Polling(polling) => polling.send(&text),
        }
    }

    /// Closes with `code` and `reason` (a polling session is deleted, whatever the code). No
    /// close event comes back.
    pub fn close(self, code: u16, reason: &str) {
        match self.carrier {
            Carrier::WebSocket(socket) => {
                let _ = close_with(socket, code, reason);
            }
            Carrier::Polling(polling) => polling.close(),
        }
    }

    /// The next input; `Ready(None)` once the connection has ended (after its close).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Input>> {
        if let Some(first) = self.held.take() {
            return Poll::Ready(Some(first));
        }
        loop {
            let input = match &mut self.carrier {
                Carrier::WebSocket(socket) => match socket.poll_next_unpin(cx) {
                    Poll::Ready(Some(item)) => match to_input(item) {
                        Some(input) => input,
                        None => continue,
                    },
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
                Carrier::Polling(polling) => match polling.poll_next(cx) {
                    Poll::Ready(Some(input)) => input,
                    other => return other,
                },
            };
            if !self.opened && !matches!(input, Input::Closed { .. }) {
                self.opened = true;
                self.held = Some(input);
                return Poll::Ready(Some(Input::Opened));
            }
            return Poll::Ready(Some(input));
        }
    }
}

/// A WebSocket opened beside a long-polling connection to see whether WebSocket gets through
/// now. It reports its first message; then it is parked (its later messages wait in the
/// socket's queue) until it becomes the connection ([`Probe::into_conn`]) or is dropped.
pub struct Probe {
    socket: WebSocket,
    ready: bool,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("ready", &self.ready).finish()
    }
}

impl Probe {
    pub fn open(url: &str) -> Result<Self, OpenError> {
        Ok(Self { socket: open(url)?, ready: false })
    }

    /// Its first text message (`Ok`), or `Err(())` if it closed before one; pending forever
    /// after either.
    pub fn poll_first(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, ()>> {
        while !self.ready {
            match self.socket.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Message::Text(text)))) => {
                    self.ready = true;
                    return Poll::Ready(Ok(text));
                }
                // An error event comes before the close; wait for the close.
                Poll::Ready(Some(Err(WebSocketError::ConnectionError))) => {}
                Poll::Ready(_) => {
                    self.ready = true;
                    return Poll::Ready(Err(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// The probe as the connection, open (its first message was taken).
    pub fn into_conn(self) -> Conn {
        Conn { carrier: Carrier::WebSocket(self.socket), opened: true, held: None }
    }

    /// Closes it with 1000.
    pub fn close(self) {
        let _ = close(self.socket);
    }
}

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
