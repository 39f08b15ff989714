//! The command-line client (the tutorial's Python `websocket-client` example): connect, print
//! the greeting, send messages and print each reply, then close cleanly.
//!
//! Output is one received text per line on stdout, so it composes with pipes; errors go to
//! stderr as one line and the exit code is non-zero. `wss://` goes through rustls ([`tls`]),
//! which is why this is a crate of its own: TLS never enters the server's build.

pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: &str = "10s";

/// `client [--url URL] [--timeout DURATION] [--ca-file PATH] [MESSAGE]...`
#[derive(Debug, Clone, Parser)]
#[command(
    name = "client",
    version,
    about = "Send messages to the realtime server and print its replies.",
    long_about = "Send messages to the realtime server and print its replies.\n\n\
        Prints the server's greeting, then sends each MESSAGE and prints its reply, one per line. \
        With no MESSAGE, sends each line of standard input and prints replies as they arrive; \
        end of input closes the connection. Errors are one line on stderr, with exit status 1 \
        (2 for bad arguments)."
)]
pub struct Args {
    /// WebSocket URL of the server: `ws://`, or `wss://` (TLS, verified against the system's
    /// root certificates and `--ca-file`).
    #[arg(long, env = "CLIENT_URL", default_value_t = default_url(), value_parser = parse_url)]
    pub url: Uri,

    /// How long to wait for the connection, for each reply to a MESSAGE argument, and for the
    /// closing handshake (e.g. `10s`, `500ms`).
    #[arg(long, env = "CLIENT_TIMEOUT", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,

    /// PEM file of CA certificates to trust for `wss://` besides the system's (a private CA).
    /// Ignored for `ws://`, so the variable can stay set.
    #[arg(long, env = "CLIENT_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Messages to send; without any, lines are read from standard input.
    pub messages: Vec<String>,
}

/// Why a `--url` was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Syntax(#[from] tokio_tungstenite::tungstenite::http::uri::InvalidUri),
    #[error("the URL must start with ws:// or wss:// (e.g. {})", wire::default_ws_url())]
    Scheme,
    #[error("the URL has no host")]
    Host,
}

/// The default server URL, `ws://127.0.0.1:8888/ws/`.
pub fn default_url() -> Uri {
    // Built from constants only; a failure here is a bug in `wire`, caught by its tests.
    wire::default_ws_url().parse().unwrap_or_default()
}

/// Accepts `ws://host[:port]/path` and `wss://host[:port]/path`.
pub fn parse_url(text: &str) -> Result<Uri, UrlError> {
    let uri: Uri = text.parse()?;
    match uri.scheme_str() {
        Some("ws" | "wss") => {}
        _ => return Err(UrlError::Scheme),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(UrlError::Host);
    }
    Ok(uri)
}

/// Parses a duration such as `250ms`, `10s` or `1m 30s` (the server's format).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{error} (expected e.g. `250ms`, `5s`, `1m`)"))
}

/// Parses the command line; a mistake is reported as one line (`client: error: …`), not as
/// clap's multi-line usage. `--help` and `--version` print as usual.
pub fn parse_args() -> Args {
    Args::try_parse().unwrap_or_else(|error| {
        use clap::error::ErrorKind;
        if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            error.exit();
        }
        let rendered = error.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        eprintln!("client: {first} (see `client --help`)");
        std::process::exit(2);
    })
}

/// Runs the client to completion.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut socket = connect(&args).await?;
    let greeting = next_text(&mut socket, args.timeout).await?;
    println!("{greeting}");

    if args.messages.is_empty() {
        relay_stdin(&mut socket, args.timeout).await
    } else {
        for message in args.messages {
            socket.send(Message::text(message)).await.context("cannot send")?;
            println!("{}", next_text(&mut socket, args.timeout).await?);
        }
        close(&mut socket, args.timeout, |_| {}).await
    }
}

/// Opens the WebSocket, over TLS for `wss://`; `--timeout` bounds TCP, TLS and the upgrade.
async fn connect(args: &Args) -> anyhow::Result<Socket> {
    let url = &args.url;
    let connector = if url.scheme_str() == Some("wss") {
        Connector::Rustls(Arc::new(tls::client_config(args.ca_file.as_deref())?))
    } else {
        Connector::Plain
    };
    // No Nagle delay: the messages are small and the replies awaited one by one.
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    let (socket, _) = tokio::time::timeout(args.timeout, connecting)
        .await
        .map_err(|_| anyhow!("timed out after {:?}", args.timeout))
        .and_then(|connected| connected.map_err(|error| anyhow!(explain_connect(&error))))
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(socket)
}

/// One line for a failed connection: TLS failures in plain words, otherwise tungstenite's own
/// message (which already includes its source).
fn explain_connect(error: &tokio_tungstenite::tungstenite::Error) -> String {
    match error {
        tokio_tungstenite::tungstenite::Error::Io(io) => {
            tls::explain_connect(io).unwrap_or_else(|| error.to_string())
        }
        _ => error.to_string(),
    }
}

/// Stdin mode: each line is sent as it is read; replies are printed as they arrive.
async fn relay_stdin(socket: &mut Socket, timeout: Duration) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line.context("cannot read standard input")? {
                Some(line) => socket.send(Message::text(line)).await.context("cannot send")?,
                None => break,
            },
            message = socket.next() => match received(message)? {
                Some(text) => println!("{text}"),
                None => continue,
            },
        }
    }
    // Replies still in flight arrive before the server's answer to our Close.
    close(socket, timeout, |text| println!("{text}")).await
}

/// Waits for the next text message, skipping control frames.
async fn next_text(socket: &mut Socket, timeout: Duration) -> anyhow::Result<String> {
    loop {
        let message = tokio::time::timeout(timeout, socket.next())
            .await
            .map_err(|_| anyhow!("no reply from the server within {timeout:?}"))?;
        if let Some(text) = received(message)? {
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
    mut on_text: impl FnMut(&str),
) -> anyhow::Result<()> {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    socket.send(Message::Close(Some(frame))).await.context("cannot send Close")?;
    let drain = async {
        while let Some(message) = socket.next().await {
            match message.context("connection failed while closing")? {
                Message::Text(text) => on_text(text.as_str()),
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
        Some(frame) if frame.reason.is_empty() => u16::from(frame.code).to_string(),
        Some(frame) => format!("{} ({})", u16::from(frame.code), frame.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_is_the_wire_default() {
        assert_eq!(default_url().to_string(), wire::default_ws_url());
    }

    #[test]
    fn urls_must_be_websocket_urls_with_a_host() {
        assert!(parse_url("ws://127.0.0.1:8888/ws/").is_ok());
        assert!(parse_url("wss://example.org/ws/").is_ok());
        assert!(matches!(parse_url("http://127.0.0.1/ws/"), Err(UrlError::Scheme)));
        assert!(matches!(parse_url("127.0.0.1:8888"), Err(UrlError::Scheme)));
        assert!(matches!(parse_url("ws:// bad"), Err(UrlError::Syntax(_))));
    }

    #[test]
    fn ca_file_is_a_path() {
        let args = Args::try_parse_from(["client", "--ca-file", "ca.pem"]).expect("parse");
        assert_eq!(args.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    }
}
