//! The command-line client (the tutorial's Python `websocket-client` example): connect, print
//! the greeting, send messages and print each reply, then close cleanly; and `client room`
//! ([`room`]), a line-oriented member of the server's room.
//!
//! Output is one received text per line on stdout, so it composes with pipes; errors go to
//! stderr as one line and the exit code is non-zero. `wss://` goes through rustls ([`tls`]),
//! which is why this is a crate of its own: TLS never enters the server's build. Both talk
//! over a WebSocket or, with `--transport long-polling` (or `auto`, when the WebSocket is
//! blocked), over HTTP long polling ([`poll`]); [`link`] hides which.

pub mod link;
pub mod poll;
pub mod room;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::http::Uri;
use wire::poll::Open;

pub use link::{Link, Transport};

/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: &str = "10s";

/// `client [--url URL] [--transport T] [--timeout DURATION] [--ca-file PATH] [MESSAGE]...`,
/// or `client room [OPTIONS]`.
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
        With --transport long-polling the same conversation goes over HTTP long polling, at \
        the `/poll/` path beside the WebSocket endpoint of --url (`ws://host/ws/` polls \
        `http://host/poll/`, `wss://` polls `https://` with the same certificate checks). With \
        --transport auto the client tries the WebSocket first and uses long polling if the \
        WebSocket fails or delivers no first message within 3 s (saying so on stderr).\n\n\
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
    /// How long to wait for the connection, for each reply to a MESSAGE argument and each
    /// reply still due at end of input (the room: for `joined`, and for the last messages to
    /// come back after end of input), and for the closing handshake; over long polling also
    /// for each request but the long poll itself (e.g. `10s`, `500ms`).
    #[arg(long, env = "CLIENT_TIMEOUT", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,

    /// PEM file of CA certificates to trust for `wss://` besides the system's (a private CA).
    /// Ignored for `ws://`, so the variable can stay set.
    #[arg(long, env = "CLIENT_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// How to reach the server. `--url` stays the WebSocket URL either way: long polling
    /// uses the `/poll/` path beside its endpoint.
    #[arg(long, env = "CLIENT_TRANSPORT", value_enum, default_value_t = Transport::WebSocket)]
    pub transport: Transport,
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
    let mut link = Link::open(&args.url, Open::Echo, &args.connection).await?;
    let result = echo(&mut link, args.messages, args.connection.timeout).await;
    if result.is_err() {
        link.abandon().await;
    }
    result
}

/// The echo over an open link: the greeting, then each message and its reply.
async fn echo(link: &mut Link, messages: Vec<String>, timeout: Duration) -> anyhow::Result<()> {
    let greeting = link.next_within(timeout).await?;
    println!("{greeting}");
    if messages.is_empty() {
        return relay_stdin(link, timeout).await;
    }
    for message in messages {
        link.send(message).await?;
        println!("{}", link.next_within(timeout).await?);
    }
    link.close(timeout, |_| Ok(())).await
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

/// Stdin mode: each line is sent as it is read; replies are printed as they arrive. At end of
/// input, the replies still due (one per message) are awaited before closing, each within
/// `timeout`.
async fn relay_stdin(link: &mut Link, timeout: Duration) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut unanswered = 0u64;
    loop {
        tokio::select! {
            line = lines.next_line() => match line.context("cannot read standard input")? {
                Some(line) => {
                    link.send(line).await?;
                    unanswered += 1;
                }
                None => break,
            },
            text = link.next() => {
                println!("{}", text?);
                unanswered = unanswered.saturating_sub(1);
            }
        }
    }
    for _ in 0..unanswered {
        println!("{}", link.next_within(timeout).await?);
    }
    link.close(timeout, |text| {
        println!("{text}");
        Ok(())
    })
    .await
}

/// A close code and reason as the error lines show them: `1001 (server shutting down)`.
fn describe_close(code: u16, reason: &str) -> String {
    if reason.is_empty() {
        code.to_string()
    } else {
        format!("{code} ({reason})")
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
    fn transport_defaults_to_websocket_and_auto_waits_as_the_help_says() {
        let args = Args::try_parse_from(["client"]).expect("parse");
        assert_eq!(args.connection.transport, Transport::WebSocket);
        let args = Args::try_parse_from(["client", "--transport", "long-polling"]).expect("parse");
        assert_eq!(args.connection.transport, Transport::LongPolling);
        let Some(Command::Room(room)) =
            Args::try_parse_from(["client", "room", "--transport", "auto"]).expect("parse").command
        else {
            panic!("not the room");
        };
        assert_eq!(room.connection.transport, Transport::Auto);
        assert!(Args::try_parse_from(["client", "--transport", "web-socket"]).is_err());
        // `--help` and the `auto` value's description say 3 s.
        assert_eq!(link::AUTO_WAIT, Duration::from_secs(3));
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
