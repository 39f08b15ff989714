//! One conversation with the server over either transport (`--transport`): a WebSocket, or a
//! long-polling session ([`crate::poll`]), or `auto`, WebSocket first and polling if it is
//! blocked. The echo and the room talk to a [`Link`] and never know which it is.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use wire::poll::Open;

use crate::{one_line, poll, tls, Connection};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How `auto` waits for the WebSocket's first message (the greeting, or the room's `joined`),
/// counted from the start of the connection, before it gives up on it and uses long polling.
/// An unblocked WebSocket delivers it within a round trip or two; a proxy that answers the
/// upgrade and then passes nothing never does. Three seconds leaves a slow network room and
/// still falls back before a person would give up; never more than `--timeout`.
pub const AUTO_WAIT: Duration = Duration::from_secs(3);

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// A WebSocket at `--url`.
    #[value(name = "websocket")]
    WebSocket,
    /// HTTP long polling under `/poll/` beside the WebSocket endpoint of `--url`.
    LongPolling,
    /// WebSocket, then long polling if it does not deliver its first message within 3 s.
    Auto,
}

/// A conversation under way.
#[derive(Debug)]
pub enum Link {
    WebSocket {
        socket: Box<Socket>,
        /// The first text, when `auto` had to read it to know the socket works.
        first: Option<String>,
    },
    Polling(poll::Session),
}

impl Link {
    /// Connects to `url` (a `ws://` or `wss://` URL, its query included) over
    /// `connection.transport`; `open` says which application a polling session runs.
    pub async fn open(url: &Uri, open: Open, connection: &Connection) -> anyhow::Result<Self> {
        match connection.transport {
            Transport::WebSocket => Ok(Self::WebSocket {
                socket: Box::new(connect(url, connection).await?),
                first: None,
            }),
            Transport::LongPolling => {
                Ok(Self::Polling(poll::Session::open(url, open, connection).await?))
            }
            Transport::Auto => {
                let wait = AUTO_WAIT.min(connection.timeout);
                let attempt = async {
                    let mut socket = connect(url, connection).await?;
                    let first = next_ws_text(&mut socket).await?;
                    anyhow::Ok((socket, first))
                };
                let why = match tokio::time::timeout(wait, attempt).await {
                    Ok(Ok((socket, first))) => {
                        return Ok(Self::WebSocket { socket: Box::new(socket), first: Some(first) })
                    }
                    Ok(Err(error)) => format!("{error:#}"),
                    Err(_) => format!("no message from {url} within {wait:?}"),
                };
                let session = poll::Session::open(url, open, connection)
                    .await
                    .map_err(|error| anyhow!("{error:#} (after the WebSocket failed: {why})"))?;
                // Not on stdout, which carries the conversation only.
                eprintln!("client: using long polling (the WebSocket failed: {why})");
                Ok(Self::Polling(session))
            }
        }
    }

    /// Which transport carries the conversation.
    pub fn transport(&self) -> Transport {
        match self {
            Self::WebSocket { .. } => Transport::WebSocket,
            Self::Polling(_) => Transport::LongPolling,
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, text: String) -> anyhow::Result<()> {
        match self {
            Self::WebSocket { socket, .. } => {
                socket.send(Message::text(text)).await.context("cannot send")
            }
            Self::Polling(session) => session.send(&text).await,
        }
    }

    /// The next text from the server; an error once the conversation has ended (the server
    /// closed it, or the connection failed). Cancel-safe, for `select!`.
    pub async fn next(&mut self) -> anyhow::Result<String> {
        match self {
            Self::WebSocket { socket, first } => match first.take() {
                Some(text) => Ok(text),
                None => next_ws_text(socket).await,
            },
            Self::Polling(session) => session.next().await,
        }
    }

    /// [`Link::next`], failing if nothing comes within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(timeout, self.next())
            .await
            .map_err(|_| anyhow!("no reply from the server within {timeout:?}"))?
    }

    /// Ends the conversation cleanly (Close 1000, or DELETE), handing over texts that arrive
    /// before the server has acknowledged it.
    pub async fn close(
        &mut self,
        timeout: Duration,
        on_text: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            Self::WebSocket { socket, .. } => close(socket, timeout, on_text).await,
            Self::Polling(session) => session.close(timeout, on_text).await,
        }
    }

    /// After a failure: lets the server free what it holds for us now. A WebSocket does that
    /// by itself when the process exits and the TCP connection goes; a polling session would
    /// otherwise wait for the server's idle timeout.
    pub async fn abandon(self) {
        if let Self::Polling(session) = self {
            session.abandon().await;
        }
    }
}

/// Opens the WebSocket, over TLS for `wss://`; `--timeout` bounds TCP, TLS and the upgrade.
async fn connect(url: &Uri, connection: &Connection) -> anyhow::Result<Socket> {
    let connector = if url.scheme_str() == Some("wss") {
        Connector::Rustls(Arc::new(tls::client_config(connection.ca_file.as_deref())?))
    } else {
        Connector::Plain
    };
    let timeout = connection.timeout;
    // No Nagle delay: the messages are small and the replies awaited one by one.
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    let (socket, _) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow!("timed out after {timeout:?}"))
        .and_then(|connected| connected.map_err(|error| anyhow!(explain_connect(&error))))
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(socket)
}

/// One line for a failed connection: TLS failures in plain words; a refused upgrade with the
/// server's explanation (its response body, e.g. why a room query is bad); otherwise
/// tungstenite's own message (which already includes its source).
fn explain_connect(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Io(io) => tls::explain_connect(io).unwrap_or_else(|| error.to_string()),
        Error::Http(response) => {
            let body = response.body().as_deref().map(one_line).unwrap_or_default();
            if body.is_empty() {
                error.to_string()
            } else {
                format!("{error}: {body}")
            }
        }
        _ => error.to_string(),
    }
}

/// The next text message, skipping control frames; an error for anything that ends the
/// conversation.
async fn next_ws_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        if let Some(text) = received(socket.next().await)? {
            return Ok(text);
        }
    }
}

/// Interprets one read: text is returned, control frames give `None`, anything that ends the
/// conversation is an error.
fn received(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> anyhow::Result<Option<String>> {
    match message {
        None => bail!("the server closed the connection"),
        Some(Err(error)) => Err(error).context("connection failed"),
        Some(Ok(Message::Text(text))) => Ok(Some(text.as_str().to_owned())),
        Some(Ok(Message::Close(frame))) => {
            bail!("the server closed the connection: {}", describe(frame.as_ref()))
        }
        Some(Ok(Message::Binary(data))) => {
            bail!("unexpected binary message ({} bytes)", data.len())
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(None),
    }
}

/// Sends Close 1000 and reads until the server answers it, handing over texts still in flight.
async fn close(
    socket: &mut Socket,
    timeout: Duration,
    mut on_text: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    socket.send(Message::Close(Some(frame))).await.context("cannot send Close")?;
    let drain = async {
        while let Some(message) = socket.next().await {
            match message.context("connection failed while closing")? {
                Message::Text(text) => on_text(text.as_str())?,
                Message::Close(Some(frame)) if frame.code != CloseCode::Normal => {
                    bail!("the server closed the connection: {}", describe(Some(&frame)))
                }
                _ => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, drain)
        .await
        .map_err(|_| anyhow!("the server did not answer Close within {timeout:?}"))?
}

fn describe(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "no close code".to_owned(),
        Some(frame) => crate::describe_close(u16::from(frame.code), &frame.reason),
    }
}
