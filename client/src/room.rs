//! `client room`: joins the server's room (`wire::room`), prints each message as one line
//! `OFFSET FROM: TEXT`, publishes each line of standard input, and at end of input exits once
//! its own messages have come back.
//!
//! stdout carries only message lines; `joined`, presence and refusals are `client: …` lines
//! on stderr, so a pipe sees the conversation and nothing else.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;
use wire::poll::Open;
use wire::room::{Frame, Resume};

use crate::{parse_url, Connection, Link};

/// `client room --help`'s long description.
pub const LONG_ABOUT: &str = "Join the room: print its messages, publish each line of standard \
    input.\n\n\
    Prints each message of the room as one line on stdout, `OFFSET FROM: TEXT` (control \
    characters in TEXT escaped, e.g. `\\n`): first the recent history (or, with --epoch and \
    --offset, every message after that one), then live messages, your own included. Each \
    non-empty line of standard input is published as one message. At end of input the client \
    waits until the history has been printed and each of its messages has come back (at most \
    --timeout after the last one did), then closes (Close 1000) and exits 0; so \
    `client room < /dev/null` prints the recent history and exits.\n\n\
    On stderr, one line each: `client: joined as NAME (epoch E, offset N, K online)` (then \
    `, recovered` or `, not recovered: …` when resuming), `client: K online` when that \
    changes, and `client: refused: REASON` for a message the server did not publish. A \
    refused message does not come back; if any was refused, the exit status is 1. Errors are \
    one line on stderr with exit status 1 (2 for bad arguments), as for the echo.\n\n\
    --transport long-polling (or auto, when the WebSocket fails) does all of this over HTTP \
    long polling at the `/poll/` path beside --url's endpoint, the resume point included.";

/// `client room [--url URL] [--transport T] [--timeout D] [--ca-file PATH] [--epoch E --offset N]`
#[derive(Debug, Clone, clap::Args)]
pub struct RoomArgs {
    /// WebSocket URL of the room: `ws://`, or `wss://` (as for the echo).
    #[arg(long, env = "CLIENT_ROOM_URL", default_value_t = default_url(), value_parser = parse_url)]
    pub url: Uri,

    #[command(flatten)]
    pub connection: Connection,

    /// Resume in this epoch (from an earlier `client: joined` line); needs --offset.
    #[arg(long, value_name = "E", requires = "offset")]
    pub epoch: Option<String>,

    /// Resume after this offset (the first number of the last line received): only the
    /// messages after it are printed, if the server still has them all; needs --epoch.
    #[arg(long, value_name = "N", requires = "epoch")]
    pub offset: Option<u64>,
}

impl RoomArgs {
    /// Where to resume from, if anywhere.
    pub fn resume(&self) -> Option<Resume> {
        Some(Resume { epoch: self.epoch.clone()?, offset: self.offset? })
    }
}

/// The room's default URL, `ws://127.0.0.1:8888/ws/room`.
pub fn default_url() -> Uri {
    // Built from constants only; a failure here is a bug in `wire`, caught by the tests.
    format!("ws://{}:{}{}", wire::DEFAULT_HOST, wire::DEFAULT_PORT, wire::room::PATH)
        .parse()
        .unwrap_or_default()
}

/// `url` with `?epoch=E&offset=N` (or `&…` after a query it already has). The epoch is
/// percent-encoded, not checked: the server judges it, and its 400 says what is wrong.
pub fn resume_url(url: &Uri, resume: Option<&Resume>) -> anyhow::Result<Uri> {
    let Some(Resume { epoch, offset }) = resume else { return Ok(url.clone()) };
    let url = url.to_string();
    let separator = if url.contains('?') { '&' } else { '?' };
    let (epoch_name, offset_name) = (wire::room::QUERY_EPOCH, wire::room::QUERY_OFFSET);
    let epoch = percent_encode(epoch);
    let resumed = format!("{url}{separator}{epoch_name}={epoch}&{offset_name}={offset}");
    resumed.parse().with_context(|| format!("cannot add the resume point to {url}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One message as its stdout line: `OFFSET FROM: TEXT`, with control characters in `from`
/// and `text` escaped (`\n`, `\u{1b}`), so a message is always one line and cannot drive the
/// terminal.
pub fn message_line(offset: u64, from: &str, text: &str) -> String {
    format!("{offset} {}: {}", escape_controls(from), escape_controls(text))
}

fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// The stderr line for `joined`.
pub fn joined_line(
    you: &str,
    epoch: &str,
    offset: u64,
    online: u32,
    recovered: Option<bool>,
) -> String {
    let you = escape_controls(you);
    let epoch = escape_controls(epoch);
    let resumed = match recovered {
        None => "",
        Some(true) => ", recovered",
        Some(false) => ", not recovered: the recent history follows",
    };
    format!("client: joined as {you} (epoch {epoch}, offset {offset}, {online} online){resumed}")
}

/// What the client knows of its place in the room, and how its own messages are doing.
#[derive(Debug, Default)]
struct Member {
    you: String,
    /// The room's latest offset when we joined (`joined`'s offset): the history ends there,
    /// and what comes after it is live.
    joined_at: u64,
    /// Whether history up to `joined_at` is still to come (`joined` promises it unless the
    /// room was empty or a resume found nothing missed).
    history_due: bool,
    /// The highest offset printed.
    seen: u64,
    /// Members online, as last told (presence is printed only when it changes).
    online: u32,
    sent: u64,
    /// Our messages that came back (live, `from` us).
    back: u64,
    refused: u64,
}

impl Member {
    fn new(you: String, joined_at: u64, resume: Option<&Resume>, recovered: bool) -> Self {
        let up_to_date = recovered && resume.is_some_and(|r| r.offset >= joined_at);
        let history_due = joined_at > 0 && !up_to_date;
        Self { you, joined_at, history_due, ..Self::default() }
    }

    fn pending(&self) -> u64 {
        self.sent.saturating_sub(self.back + self.refused)
    }

    /// Whether the history `joined` announced has all been printed.
    fn caught_up(&self) -> bool {
        !self.history_due || self.seen >= self.joined_at
    }

    /// Acts on one server frame: prints it where it belongs and counts our own messages. Returns
    /// whether that was progress to wait for (one of ours settled, or history arrived).
    fn handle(&mut self, text: &str) -> anyhow::Result<bool> {
        let frame = Frame::parse(text)
            .map_err(|error| anyhow!("unreadable frame from the server ({error}): {text:.200}"))?;
        match frame {
            Frame::Message { offset, from, text, .. } => {
                println!("{}", message_line(offset, &from, &text));
                let history = !self.caught_up();
                self.seen = self.seen.max(offset);
                // Only live messages can be ours: an earlier connection may have had our name.
                if from == self.you && offset > self.joined_at && self.pending() > 0 {
                    self.back += 1;
                    return Ok(true);
                }
                return Ok(history);
            }
            Frame::Refused { reason } => {
                eprintln!("client: refused: {}", escape_controls(&reason));
                if self.pending() > 0 {
                    self.refused += 1;
                    return Ok(true);
                }
            }
            Frame::Presence { online } => {
                if online != self.online {
                    self.online = online;
                    eprintln!("client: {online} online");
                }
            }
            Frame::Joined { you, epoch, offset, online, recovered } => {
                // Only ever the first frame; if another came, the newer one is what counts.
                eprintln!("{}", joined_line(&you, &epoch, offset, online, Some(recovered)));
                self.you = you;
                self.joined_at = offset;
                self.online = online;
            }
        }
        Ok(false)
    }
}

/// Runs `client room` to completion.
pub async fn run(args: RoomArgs) -> anyhow::Result<()> {
    let resume = args.resume();
    let url = resume_url(&args.url, resume.as_ref())?;
    let mut link = Link::open(&url, Open::Room, &args.connection).await?;
    let result = converse(&mut link, args.connection.timeout, resume.as_ref()).await;
    if result.is_err() {
        link.abandon().await;
    }
    result
}

/// The room over an open link: `joined`, then messages both ways until input ends and our
/// messages are back.
async fn converse(
    link: &mut Link,
    timeout: Duration,
    resume: Option<&Resume>,
) -> anyhow::Result<()> {
    let mut member = join(link, timeout, resume).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    // When input ended, or the last progress after that: the wait for the rest counts from
    // there.
    let mut progress_at = Instant::now();
    while input_open || member.pending() > 0 || !member.caught_up() {
        tokio::select! {
            line = lines.next_line(), if input_open => {
                match line.context("cannot read standard input")? {
                    Some(line) if line.is_empty() => {}
                    Some(line) => {
                        link.send(line).await?;
                        member.sent += 1;
                    }
                    None => {
                        input_open = false;
                        progress_at = Instant::now();
                    }
                }
            }
            text = link.next() => {
                if member.handle(&text?)? {
                    progress_at = Instant::now();
                }
            }
            () = tokio::time::sleep_until(progress_at + timeout), if !input_open => {
                if member.pending() > 0 {
                    bail!(
                        "{} of {} messages did not come back from the server within {timeout:?}",
                        member.pending(),
                        member.sent
                    );
                }
                // Only history is missing, which `joined` promised: not worth failing over.
                break;
            }
        }
    }
    link.close(timeout, |text| member.handle(text).map(drop)).await?;
    if member.refused > 0 {
        bail!("{} of {} messages were refused and not published", member.refused, member.sent);
    }
    Ok(())
}

/// Waits for `joined` (the first frame) and prints its line.
async fn join(
    link: &mut Link,
    timeout: Duration,
    resume: Option<&Resume>,
) -> anyhow::Result<Member> {
    let text = link.next_within(timeout).await?;
    match Frame::parse(&text) {
        Ok(Frame::Joined { you, epoch, offset, online, recovered }) => {
            let resumed = resume.is_some().then_some(recovered);
            eprintln!("{}", joined_line(&you, &epoch, offset, online, resumed));
            Ok(Member { online, ..Member::new(you, offset, resume, recovered) })
        }
        _ => bail!("expected `joined` first from the room, got: {text:.200}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_default_url_is_the_rooms_path_on_the_default_port() {
        assert_eq!(default_url().to_string(), "ws://127.0.0.1:8888/ws/room");
        assert_eq!(default_url().path(), wire::room::PATH);
    }

    #[test]
    fn the_resume_point_goes_into_the_query() {
        let resume = Resume { epoch: "k3x9".into(), offset: 7 };
        let url = resume_url(&default_url(), Some(&resume)).expect("url");
        assert_eq!(url.path_and_query().map(|p| p.as_str()), Some("/ws/room?epoch=k3x9&offset=7"));
        assert_eq!(
            url.path_and_query().map(|p| p.as_str()),
            Some(wire::room::path_with_resume(Some(&resume)).as_str())
        );
        let with_query: Uri = "ws://h/ws/room?x=1".parse().expect("uri");
        let url = resume_url(&with_query, Some(&resume)).expect("url");
        assert_eq!(url.query(), Some("x=1&epoch=k3x9&offset=7"));
        assert_eq!(resume_url(&with_query, None).expect("url"), with_query);
    }

    #[test]
    fn a_bad_epoch_is_encoded_for_the_server_to_judge() {
        let resume = Resume { epoch: "a b&c#".into(), offset: 1 };
        let url = resume_url(&default_url(), Some(&resume)).expect("url");
        let query = url.query().expect("query");
        assert_eq!(query, "epoch=a%20b%26c%23&offset=1");
        assert_eq!(wire::room::parse_query(query), Err(wire::room::QueryError::Epoch));
    }

    #[test]
    fn messages_are_one_line_each() {
        assert_eq!(message_line(42, "guest-7f3a", "hello"), "42 guest-7f3a: hello");
        assert_eq!(message_line(1, "g", "a\nb\u{1b}[2J"), "1 g: a\\nb\\u{1b}[2J");
        assert_eq!(message_line(1, "g", "tab\tand \\ stay"), "1 g: tab\\tand \\ stay");
    }

    #[test]
    fn joined_says_whether_a_resume_worked() {
        let line = joined_line("guest-7f3a", "e1", 5, 2, None);
        assert_eq!(line, "client: joined as guest-7f3a (epoch e1, offset 5, 2 online)");
        assert!(joined_line("g", "e", 0, 1, Some(true)).ends_with("online), recovered"));
        assert!(joined_line("g", "e", 0, 1, Some(false)).contains("not recovered"));
    }

    #[test]
    fn history_is_due_up_to_the_joined_offset_unless_there_is_none() {
        assert!(Member::new("g".into(), 0, None, false).caught_up());
        let fresh = Member::new("g".into(), 5, None, false);
        assert!(!fresh.caught_up());
        let resume = Resume { epoch: "e".into(), offset: 5 };
        assert!(Member::new("g".into(), 5, Some(&resume), true).caught_up());
        assert!(!Member::new("g".into(), 5, Some(&resume), false).caught_up());
        let behind = Resume { epoch: "e".into(), offset: 3 };
        let mut member = Member::new("g".into(), 5, Some(&behind), true);
        let message = |offset| wire::room::message(offset, 0, "other", "x");
        assert!(member.handle(&message(4)).expect("history"));
        assert!(!member.caught_up());
        assert!(member.handle(&message(5)).expect("history"));
        assert!(member.caught_up());
        assert!(!member.handle(&message(6)).expect("live"));
    }

    #[test]
    fn only_live_messages_from_us_settle_ours() {
        let mut member = Member { you: "me".into(), joined_at: 10, sent: 2, ..Member::default() };
        let message = |offset, from| wire::room::message(offset, 0, from, "x");
        assert!(!member.handle(&message(9, "me")).expect("history, not awaited"));
        assert!(!member.handle(&message(11, "other")).expect("someone else"));
        assert!(member.handle(&message(12, "me")).expect("ours"));
        assert!(member.handle(&wire::room::refused(wire::room::REFUSED_RATE)).expect("refused"));
        assert_eq!((member.pending(), member.back, member.refused), (0, 1, 1));
        // Nothing pending: a stray echo or refusal changes nothing.
        assert!(!member.handle(&message(13, "me")).expect("stray"));
        assert!(!member.handle(&wire::room::presence(3)).expect("presence"));
        assert_eq!(member.online, 3);
        assert!(member.handle("{\"type\":\"nonsense\"}").is_err());
    }

    #[test]
    fn epoch_and_offset_go_together() {
        let parse = |argv: &[&str]| crate::Args::try_parse_from(argv);
        assert!(parse(&["client", "room", "--epoch", "e"]).is_err());
        assert!(parse(&["client", "room", "--offset", "1"]).is_err());
        assert!(parse(&["client", "room", "--epoch", "e", "--offset", "x"]).is_err());
        let args = parse(&["client", "room", "--epoch", "e", "--offset", "1"]).expect("parse");
        let Some(crate::Command::Room(room)) = args.command else { panic!("not room") };
        assert_eq!(room.resume(), Some(Resume { epoch: "e".into(), offset: 1 }));
    }
}
