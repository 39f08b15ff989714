//! HTTP polling, the fallback for networks that block the WebSocket upgrade: its paths, its
//! batch format and its limits. The same echo and room as over `/ws/` and `/ws/room`, one
//! session per client instead of one socket.
//!
//! Everything lives under [`PREFIX`] (`/poll/`), which `trunk serve` and `deploy/nginx.conf`
//! forward. A session is named by the client: a random id of [`SID_MIN_LEN`] to [`SID_MAX_LEN`]
//! characters that it puts in every request's path, so a proxy in front of several instances can
//! hash on it and send all of a session's requests to the instance that holds it (nginx:
//! `hash $poll_session consistent`). The id is the session's only credential: clients make it
//! from at least 128 random bits.
//!
//! | request | does | answers |
//! |---|---|---|
//! | `POST /poll/SID/echo` | opens an echo session | 201; `Welcome!` waits for the first GET |
//! | `POST /poll/SID/room[?epoch=E&offset=N]` | opens a room session, resuming as `/ws/room` does | 201; `joined` and history wait |
//! | `GET /poll/SID` | long poll: waits until something is queued, at most the server's `--poll-timeout` (default [`DEFAULT_TIMEOUT_SECS`] s) | 200 with a batch, empty on timeout |
//! | `GET /poll/SID?wait=0` | short poll: answers at once | 200 with a batch, maybe empty |
//! | `POST /poll/SID` | sends a batch of messages (each as one WebSocket text message) | 204 |
//! | `DELETE /poll/SID` | closes the session (like Close 1000) | 204 |
//!
//! Refusals, each with a plain-text body that says why: 400 (bad id, path, query or batch), 403
//! (origin), 404 ([`UNKNOWN_SESSION`]: never opened, expired after the server's `--idle-timeout`
//! without a request, or closed; the client opens a new session), 405, 409 ([`POLL_PENDING`]: at
//! most one GET may wait per session; or the id is taken), 413 (a message over
//! `--max-message-size`, with the same reason as close code 1009), 503 with `Retry-After` (the
//! `--max-connections` limit, shared with WebSockets).
//!
//! A batch is a sequence of items, each `KIND LENGTH ':' PAYLOAD`, with no separators: `KIND` is
//! `m` (a message; the payload is its text) or `c` (the session is closed; the payload is the
//! close code, then a space and the reason if any); `LENGTH` is the payload's length in UTF-8
//! bytes, in decimal. `m5:hellom8:Welcome!` is two messages. A close is always the last item;
//! after it the session is gone. Length-prefixed rather than JSON, so that any text passes
//! through unescaped, and one parser ([`decode`]) serves the server, the page and the CLI.

use std::fmt;

/// The prefix of every polling path.
pub const PREFIX: &str = "/poll/";
/// The last segment of the request that opens an echo session.
pub const OPEN_ECHO: &str = "echo";
/// The last segment of the request that opens a room session.
pub const OPEN_ROOM: &str = "room";
/// Query parameter of a GET: `wait=0` answers at once (short polling).
pub const QUERY_WAIT: &str = "wait";
/// Default `--poll-timeout`: how long a GET waits for something to send. Under the 30 s or
/// more that proxies and browsers allow an idle request.
pub const DEFAULT_TIMEOUT_SECS: u64 = 25;
/// Shortest session id the server accepts.
pub const SID_MIN_LEN: usize = 16;
/// Longest session id the server accepts.
pub const SID_MAX_LEN: usize = 64;

/// Response header on every polling answer: the size in bytes of the request head (request
/// line and headers) as the server received it. A page can measure a response's size
/// (Resource Timing's `transferSize`) but not its own request's head; the Compare view adds
/// this to count both directions.
pub const HEADER_REQUEST_HEAD_BYTES: &str = "x-request-head-bytes";

/// Body of the 404 for a session the server does not hold.
pub const UNKNOWN_SESSION: &str =
    "unknown or expired polling session: open a new one (POST /poll/SID/echo or /room)";
/// Body of the 409 for a second GET while one is waiting.
pub const POLL_PENDING: &str = "a GET is already waiting for this session: at most one at a time";
/// Body of the 409 for an open with an id already in use.
pub const SID_TAKEN: &str = "this session id is already in use: pick a new random one";

/// Which application a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    Echo,
    Room,
}

/// What a polling path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/poll/SID`: an open session.
    Session(&'a str),
    /// `/poll/SID/echo` or `/poll/SID/room`: opening one.
    Open(&'a str, Open),
}

/// Whether `sid` can name a session: [`SID_MIN_LEN`] to [`SID_MAX_LEN`] of `A-Z a-z 0-9 - _`.
pub fn is_sid(sid: &str) -> bool {
    (SID_MIN_LEN..=SID_MAX_LEN).contains(&sid.len())
        && sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a request path under [`PREFIX`] names; `None` for anything else.
pub fn parse_path(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix(PREFIX)?;
    let (sid, open) = match rest.split_once('/') {
        None => (rest, None),
        Some((sid, OPEN_ECHO)) => (sid, Some(Open::Echo)),
        Some((sid, OPEN_ROOM)) => (sid, Some(Open::Room)),
        Some(_) => return None,
    };
    if !is_sid(sid) {
        return None;
    }
    Some(match open {
        None => Target::Session(sid),
        Some(open) => Target::Open(sid, open),
    })
}

/// `/poll/SID`: where a session's GETs, POSTs and DELETE go.
pub fn session_path(sid: &str) -> String {
    format!("{PREFIX}{sid}")
}

/// `/poll/SID/echo` or `/poll/SID/room` (add the room's resume query, [`crate::room::path_with_resume`]'s).
pub fn open_path(sid: &str, open: Open) -> String {
    let last = match open {
        Open::Echo => OPEN_ECHO,
        Open::Room => OPEN_ROOM,
    };
    format!("{PREFIX}{sid}/{last}")
}

/// The polling base for a WebSocket endpoint's URL, the way the page and the CLI find it:
/// `ws://host/ws/` and `ws://host/ws/room` → `http://host/poll/`, `wss://host/app/ws/` →
/// `https://host/app/poll/`. The query is dropped. `None` if the URL is not ws(s) or its path
/// does not end in `/ws/`, `/ws` or `/ws/room`.
pub fn base_for(ws_url: &str) -> Option<String> {
    let (scheme, rest) = ws_url.split_once("://")?;
    let scheme = match scheme {
        "ws" => "http",
        "wss" => "https",
        _ => return None,
    };
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{path}");
    let dir = [crate::room::PATH, crate::WS_PATH, crate::WS_PATH_NO_SLASH]
        .iter()
        .find_map(|endpoint| path.strip_suffix(endpoint))?;
    Some(format!("{scheme}://{authority}{dir}{PREFIX}"))
}

/// One item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// A message, as one WebSocket text message would carry it.
    Message(&'a str),
    /// The session was closed with this code and reason, as a Close frame would say.
    Close(u16, &'a str),
}

/// Appends a message item to a batch.
pub fn push_message(batch: &mut String, text: &str) {
    push_item(batch, 'm', text.len());
    batch.push_str(text);
}

/// Appends a close item (the last of a batch).
pub fn push_close(batch: &mut String, code: u16, reason: &str) {
    let payload = if reason.is_empty() { code.to_string() } else { format!("{code} {reason}") };
    push_item(batch, 'c', payload.len());
    batch.push_str(&payload);
}

fn push_item(batch: &mut String, kind: char, len: usize) {
    batch.push(kind);
    batch.push_str(&len.to_string());
    batch.push(':');
}

/// How many bytes a message item of `text_len` bytes takes in a batch: `m`, the length, `:`.
pub fn message_item_len(text_len: usize) -> usize {
    2 + decimal_digits(text_len) + text_len
}

fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// At this byte: not `m` or `c`, a length without digits or `:`, or a length past the end
    /// or not on a character boundary.
    Malformed(usize),
    /// A close item with a code that is not a number.
    CloseCode,
    /// An item after a close.
    AfterClose,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Malformed(at) => write!(
                f,
                "malformed batch at byte {at}: expected items `m<length>:<text>` \
                 (length in UTF-8 bytes)"
            ),
            BatchError::CloseCode => f.write_str("malformed batch: a close item needs a code"),
            BatchError::AfterClose => f.write_str("malformed batch: an item after the close"),
        }
    }
}

impl std::error::Error for BatchError {}

/// Reads a batch into its items, in order.
pub fn decode(batch: &str) -> Result<Vec<Item<'_>>, BatchError> {
    let mut items = Vec::new();
    let mut at = 0;
    let bytes = batch.as_bytes();
    while let Some(&kind) = bytes.get(at) {
        if matches!(items.last(), Some(Item::Close(..))) {
            return Err(BatchError::AfterClose);
        }
        // The length's digits, read by hand (no `parse` in the page's bundle): 1 to 20 of
        // them, then `:`; a length that overflows is malformed.
        let malformed = BatchError::Malformed(at);
        let mut colon = at + 1;
        let mut len: usize = 0;
        while let Some(digit) = bytes.get(colon).and_then(|b| b.checked_sub(b'0')) {
            if digit > 9 || colon - at > 20 {
                break;
            }
            len = len
                .checked_mul(10)
                .and_then(|n| n.checked_add(digit.into()))
                .ok_or(malformed.clone())?;
            colon += 1;
        }
        if colon == at + 1 || bytes.get(colon) != Some(&b':') {
            return Err(malformed);
        }
        let end = colon.checked_add(1 + len).filter(|&end| end <= bytes.len());
        let payload = end.and_then(|end| batch.get(colon + 1..end)).ok_or(malformed.clone())?;
        items.push(match kind {
            b'm' => Item::Message(payload),
            b'c' => {
                let (code, reason) = payload.split_once(' ').unwrap_or((payload, ""));
                Item::Close(code.parse().map_err(|_| BatchError::CloseCode)?, reason)
            }
            _ => return Err(malformed),
        });
        at = colon + 1 + len;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_any_text() {
        let texts = ["Welcome!", "", "m3:abc", "line\nbreak", "straße 漢字 🎉", "c4:1000"];
        let mut batch = String::new();
        for text in texts {
            push_message(&mut batch, text);
        }
        push_close(&mut batch, 1001, "server shutting down");
        let items = decode(&batch).expect("decodes");
        let mut expected: Vec<Item<'_>> = texts.iter().map(|t| Item::Message(t)).collect();
        expected.push(Item::Close(1001, "server shutting down"));
        assert_eq!(items, expected);
    }

    #[test]
    fn the_format_is_as_documented() {
        let mut batch = String::new();
        push_message(&mut batch, "hello");
        push_message(&mut batch, "Welcome!");
        assert_eq!(batch, "m5:hellom8:Welcome!");
        assert_eq!(message_item_len(5), "m5:hello".len());
        assert_eq!(message_item_len(12), "m12:".len() + 12);
        let mut close = String::new();
        push_close(&mut close, 1000, "");
        assert_eq!(close, "c4:1000");
        assert_eq!(decode(&close), Ok(vec![Item::Close(1000, "")]));
        assert_eq!(decode(""), Ok(vec![]));
    }

    #[test]
    fn malformed_batches_are_refused_with_where() {
        assert_eq!(decode("x1:a"), Err(BatchError::Malformed(0)));
        assert_eq!(decode("m:a"), Err(BatchError::Malformed(0)));
        assert_eq!(decode("m1a"), Err(BatchError::Malformed(0)));
        assert_eq!(decode("m1:am5:ab"), Err(BatchError::Malformed(4)));
        assert_eq!(decode("m+1:a"), Err(BatchError::Malformed(0)));
        assert_eq!(decode("m99999999999999999999999:a"), Err(BatchError::Malformed(0)));
        // A length that ends inside a character: refused, never a panic.
        assert_eq!(decode("m1:ß"), Err(BatchError::Malformed(0)));
        // Any byte where a kind or a length should be, never a panic.
        assert_eq!(decode("é1:a"), Err(BatchError::Malformed(0)));
        assert_eq!(decode("m1:am\u{e9}1:a"), Err(BatchError::Malformed(4)));
        assert_eq!(decode("m1é:a"), Err(BatchError::Malformed(0)));
        for cut in 0..=12 {
            let text = "m2:ßßc4:1000";
            if let Some(prefix) = text.get(..cut) {
                let _ = decode(prefix);
            }
        }
        assert_eq!(decode("c2:ab"), Err(BatchError::CloseCode));
        assert_eq!(decode("c4:1000m1:a"), Err(BatchError::AfterClose));
    }

    #[test]
    fn paths_name_sessions_and_opens() {
        let sid = "0123456789abcdef0123456789abcdef";
        assert_eq!(parse_path(&session_path(sid)), Some(Target::Session(sid)));
        assert_eq!(parse_path(&open_path(sid, Open::Echo)), Some(Target::Open(sid, Open::Echo)));
        assert_eq!(parse_path(&open_path(sid, Open::Room)), Some(Target::Open(sid, Open::Room)));
        assert_eq!(parse_path("/poll/short"), None);
        assert_eq!(parse_path(&format!("/poll/{sid}/other")), None);
        assert_eq!(parse_path(&format!("/poll/{sid}/echo/")), None);
        assert_eq!(parse_path("/poll/0123456789abcdef.0123456789"), None);
        assert_eq!(parse_path(&format!("/poll/{}", "a".repeat(SID_MAX_LEN + 1))), None);
        assert_eq!(parse_path(&format!("/ws/{sid}")), None);
    }

    #[test]
    fn the_polling_base_sits_beside_the_socket() {
        let base = |url| base_for(url);
        assert_eq!(base("ws://127.0.0.1:8888/ws/").as_deref(), Some("http://127.0.0.1:8888/poll/"));
        assert_eq!(base("ws://h/ws").as_deref(), Some("http://h/poll/"));
        assert_eq!(base("ws://h/ws/room?epoch=a&offset=1").as_deref(), Some("http://h/poll/"));
        assert_eq!(base("wss://h:8443/app/ws/").as_deref(), Some("https://h:8443/app/poll/"));
        assert_eq!(base("http://h/ws/"), None);
        assert_eq!(base("ws://h/other"), None);
    }
}
