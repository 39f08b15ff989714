//! The command-line client (the tutorial's Python `websocket-client` example): connect, print
//! the greeting, send messages and print each reply, then close cleanly; and `client room`
//! ([`room`]), a line-oriented member of the server's room.
//!
//! Output is one received text per line on stdout, so it composes with pipes; errors go to
//! stderr as one line and the exit code is non-zero. `wss://` goes through rustls ([`tls`]),
//! which is why this is a crate of its own: TLS never enters the server's build.

pub mod room;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
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

/// `client [--url URL] [--timeout DURATION] [--ca-file PATH] [MESSAGE]...`, or
/// `client room [OPTIONS]`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "client",
    version,
    about = "Send messages to the realtime server and print its replies.",
    long_about = "Send messages to the realtime server and print its replies.\n\n\
        Prints the server's greeting, then sends each MESSAGE and prints its reply, one per line. \
        With no MESSAGE, sends each line of standard input and prints replies as they arrive; \
        end of input closes the connection. Errors are one line on stderr, with exit status 1 \
        (2 for bad arguments).\n\n\
        `client room [OPTIONS]`, with `room` as the first argument, joins the room instead \
        (see `client room --help`). Anywhere else `room` is a MESSAGE; to send it alone, \
        write `client -- room`.",
    args_conflicts_with_subcommands = true,
    // `client help` sends "help" to the echo, as it always did.
    disable_help_subcommand = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// WebSocket URL of the server: `ws://`, or `wss://` (TLS, verified against the system's
    /// root certificates and `--ca-file`).
    #[arg(long, env = "CLIENT_URL", default_value_t = default_url(), value_parser = parse_url)]
    pub url: Uri,

    #[command(flatten)]
    pub connection: Connection,

    /// Messages to send; without any, lines are read from standard input.
    pub messages: Vec<String>,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Join the room: print its messages, publish each line of standard input.
    #[command(long_about = room::LONG_ABOUT)]
    Room(room::RoomArgs),
}

/// How to connect, the same for the echo and the room.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// How long to wait for the connection, for each reply to a MESSAGE argument (the room:
    /// for `joined`, and for the last messages to come back after end of input), and for the
    /// closing handshake (e.g. `10s`, `500ms`).
    #[arg(long, env = "CLIENT_TIMEOUT", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,

    /// PEM file of CA certificates to trust for `wss://` besides the system's (a private CA).
    /// Ignored for `ws://`, so the variable can stay set.
    #[arg(long, env = "CLIENT_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
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
        let room = std::env::args_os().nth(1).is_some_and(|first| first == "room");
        eprintln!("{}", usage_error_line(&error.render().to_string(), room));
        std::process::exit(2);
    })
}

/// Clap's error as one line: its first paragraph (which may name the missing arguments on
/// lines of their own), joined, with a pointer to the right `--help`.
fn usage_error_line(rendered: &str, room: bool) -> String {
    let lines: Vec<&str> =
        rendered.lines().map(str::trim).take_while(|line| !line.is_empty()).collect();
    let help = if room { "client room --help" } else { "client --help" };
    format!("client: {} (see `{help}`)", lines.join(" "))
}

/// Runs the client to completion: the echo, or the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Room(room)) = args.command {
        return room::run(room).await;
    }
    let timeout = args.connection.timeout;
    let mut socket = connect(&args.url, &args.connection).await?;
    let greeting = next_text(&mut socket, timeout).await?;
    println!("{greeting}");

    if args.messages.is_empty() {
        relay_stdin(&mut socket, timeout).await
    } else {
        for message in args.messages {
            socket.send(Message::text(message)).await.context("cannot send")?;
            println!("{}", next_text(&mut socket, timeout).await?);
        }
        close(&mut socket, timeout, |_| Ok(())).await
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

/// An HTTP body as one line: whitespace runs (line breaks included) become one space, and
/// more than [`MAX_BODY_CHARS`] characters are cut with `…`.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = words.char_indices().nth(MAX_BODY_CHARS) {
        words.truncate(cut);
        words.push('…');
    }
    words
}

/// Most characters of a refusing server's body shown in the error line.
const MAX_BODY_CHARS: usize = 300;

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
    close(socket, timeout, |text| {
        println!("{text}");
        Ok(())
    })
    .await
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
        assert_eq!(args.connection.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    }

    #[test]
    fn room_is_a_subcommand_first_and_a_message_after_dashes_or_other_messages() {
        let args = Args::try_parse_from(["client", "room"]).expect("parse");
        assert!(matches!(args.command, Some(Command::Room(_))));
        for argv in [&["client", "--", "room"][..], &["client", "hi", "room"]] {
            let args = Args::try_parse_from(argv).expect("parse");
            assert!(args.command.is_none(), "{argv:?}");
            assert_eq!(args.messages.last().map(String::as_str), Some("room"));
        }
    }

    #[test]
    fn help_is_a_message_not_a_subcommand() {
        let args = Args::try_parse_from(["client", "help"]).expect("parse");
        assert!(args.command.is_none());
        assert_eq!(args.messages, ["help"]);
    }

    #[test]
    fn usage_errors_are_one_line_naming_what_is_missing() {
        let error = Args::try_parse_from(["client", "room", "--epoch", "e"]).expect_err("half");
        let line = usage_error_line(&error.render().to_string(), true);
        assert!(line.starts_with("client: error: the following required arguments"), "{line}");
        assert!(line.contains("--offset <N>"), "{line}");
        assert!(line.ends_with("(see `client room --help`)"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn room_after_an_echo_option_is_a_message() {
        let args = Args::try_parse_from(["client", "--timeout", "1s", "room"]).expect("parse");
        assert!(args.command.is_none());
        assert_eq!(args.messages, ["room"]);
    }

    #[test]
    fn a_refusing_servers_body_becomes_one_short_line() {
        assert_eq!(one_line(b"bad `epoch`:\n  expected\r\n"), "bad `epoch`: expected");
        let long = one_line("é".repeat(500).as_bytes());
        assert_eq!(long.chars().count(), MAX_BODY_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
