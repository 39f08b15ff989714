//! The room at `/ws/room`: its path and query, its JSON frames, its limits and refusals.
//!
//! Clients send plain text (each text frame is one message to the room; the server parses no
//! JSON from clients). The server sends one JSON object per text frame, written by the
//! functions here so that every byte of the format is defined once. The browser reads them with
//! its own `JSON.parse`; native code can use [`Frame`] (feature `serde`).

/// The room's WebSocket endpoint (under the `/ws/` prefix that `trunk serve` and nginx proxy).
pub const PATH: &str = "/ws/room";
/// Query parameter: the epoch of the last message a resuming client received.
pub const QUERY_EPOCH: &str = "epoch";
/// Query parameter: the offset of the last message a resuming client received.
pub const QUERY_OFFSET: &str = "offset";

/// Default `--room-history`: messages kept for recovery.
pub const DEFAULT_HISTORY: usize = 1000;
/// Default `--room-rate`: messages per second one connection may publish (burst as many).
pub const DEFAULT_RATE: u32 = 20;
/// Most history messages a client that cannot be recovered gets on joining.
pub const RECENT_ON_JOIN: usize = 50;
/// Longest epoch the server accepts in a query (its own are 16 characters).
pub const MAX_EPOCH_LEN: usize = 32;

/// The `type` of each server frame.
pub mod kind {
    pub const JOINED: &str = "joined";
    pub const MESSAGE: &str = "message";
    pub const PRESENCE: &str = "presence";
    pub const REFUSED: &str = "refused";
}

/// `refused` reason: the connection published faster than `--room-rate`.
pub const REFUSED_RATE: &str = "rate limit: too many messages per second; this one was not sent";
/// `refused` reason: the broker (Redis) cannot be reached; the message was not published.
pub const REFUSED_BROKER: &str = "broker unavailable: this message was not sent; try again soon";

/// Close code for a client that fell a whole outgoing queue behind (RFC 6455 registry: "Try
/// Again Later"): it reconnects and recovers from its offset.
pub const CLOSE_SLOW: u16 = crate::close::TRY_AGAIN_LATER;
/// Reason sent with [`CLOSE_SLOW`].
pub const REASON_SLOW: &str = "too slow: fell a full queue behind; reconnect to recover";
/// Close code when the room's history was reset under a client (Redis lost its data): "Service
/// Restart"; the client reconnects and gets `recovered:false`.
pub const CLOSE_RESET: u16 = crate::close::SERVICE_RESTART;
/// Reason sent with [`CLOSE_RESET`].
pub const REASON_RESET: &str = "room history was reset (new epoch); reconnect";

/// Why a `/ws/room` query was refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// `epoch` is empty, too long, or has characters other than `A-Z a-z 0-9 - _`.
    Epoch,
    /// `offset` is not a whole number from 0 to 2^64-1.
    Offset,
    /// One of `epoch` and `offset` without the other.
    Half,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueryError::Epoch => {
                "bad `epoch`: expected 1 to 32 characters of A-Z, a-z, 0-9, `-` or `_`, \
                 as the server sent it in `joined`"
            }
            QueryError::Offset => {
                "bad `offset`: expected a whole number (the last offset received)"
            }
            QueryError::Half => "`epoch` and `offset` go together: give both to resume, or neither",
        })
    }
}

/// Where a client resumes from: the epoch and offset of the last message it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub epoch: String,
    pub offset: u64,
}

/// Parses a `/ws/room` query string (without `?`): nothing, or both `epoch` and `offset`.
/// Other parameters are ignored.
pub fn parse_query(query: &str) -> Result<Option<Resume>, QueryError> {
    let (mut epoch, mut offset) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == QUERY_EPOCH {
            if !is_epoch(value) {
                return Err(QueryError::Epoch);
            }
            epoch = Some(value.to_owned());
        } else if name == QUERY_OFFSET {
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            offset = Some(value.parse().ok().filter(|_| digits).ok_or(QueryError::Offset)?);
        }
    }
    match (epoch, offset) {
        (Some(epoch), Some(offset)) => Ok(Some(Resume { epoch, offset })),
        (None, None) => Ok(None),
        _ => Err(QueryError::Half),
    }
}

/// Whether `text` can be an epoch (what the server makes, and what a query may carry).
pub fn is_epoch(text: &str) -> bool {
    (1..=MAX_EPOCH_LEN).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `/ws/room?epoch=E&offset=N`, or `/ws/room` with nothing to resume from.
pub fn path_with_resume(resume: Option<&Resume>) -> String {
    match resume {
        Some(Resume { epoch, offset }) => {
            format!("{PATH}?{QUERY_EPOCH}={epoch}&{QUERY_OFFSET}={offset}")
        }
        None => PATH.to_owned(),
    }
}

/// `{"type":"joined","you":…,"epoch":…,"offset":…,"online":…,"recovered":…}`: the first frame.
pub fn joined(you: &str, epoch: &str, offset: u64, online: u32, recovered: bool) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"type\":\"joined\",\"you\":");
    push_json_string(&mut out, you);
    out.push_str(",\"epoch\":");
    push_json_string(&mut out, epoch);
    out.push_str(&format!(",\"offset\":{offset},\"online\":{online},\"recovered\":{recovered}}}"));
    out
}

/// What every `message` frame starts with; the offset follows, then [`message_rest`].
///
/// Split so that the Redis engine can let Redis put the offset in (it is assigned there) while
/// the rest is encoded once, by the instance that received the message.
pub const MESSAGE_PREFIX: &str = "{\"type\":\"message\",\"offset\":";

/// The part of a `message` frame after its offset: `,"time":…,"from":…,"text":…}`.
pub fn message_rest(time_ms: u64, from: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + from.len() + 48);
    out.push_str(&format!(",\"time\":{time_ms},\"from\":"));
    push_json_string(&mut out, from);
    out.push_str(",\"text\":");
    push_json_string(&mut out, text);
    out.push('}');
    out
}

/// `{"type":"message","offset":…,"time":…,"from":…,"text":…}`: one message of the room.
pub fn message(offset: u64, time_ms: u64, from: &str, text: &str) -> String {
    format!("{MESSAGE_PREFIX}{offset}{}", message_rest(time_ms, from, text))
}

/// `{"type":"presence","online":…}`: how many clients are in the room, over all instances.
pub fn presence(online: u32) -> String {
    format!("{{\"type\":\"presence\",\"online\":{online}}}")
}

/// `{"type":"refused","reason":…}`: a message that was not published.
pub fn refused(reason: &str) -> String {
    let mut out = String::from("{\"type\":\"refused\",\"reason\":");
    push_json_string(&mut out, reason);
    out.push('}');
    out
}

/// Appends `text` as a JSON string (RFC 8259: quote, backslash and control characters escaped).
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = c as usize;
                out.push_str("\\u00");
                out.push(HEX[n >> 4] as char);
                out.push(HEX[n & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A server frame, decoded (for native clients and tests; the browser uses `JSON.parse`).
#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame {
    Joined { you: String, epoch: String, offset: u64, online: u32, recovered: bool },
    Message { offset: u64, time: u64, from: String, text: String },
    Presence { online: u32 },
    Refused { reason: String },
}

#[cfg(feature = "serde")]
impl Frame {
    /// Decodes one text frame from the server.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_to_a_resume_point_or_nothing() {
        assert_eq!(parse_query(""), Ok(None));
        assert_eq!(parse_query("x=1"), Ok(None));
        assert_eq!(
            parse_query("epoch=ab-C_9&offset=42"),
            Ok(Some(Resume { epoch: "ab-C_9".into(), offset: 42 }))
        );
        assert_eq!(
            parse_query("offset=0&epoch=e"),
            Ok(Some(Resume { epoch: "e".into(), offset: 0 }))
        );
    }

    #[test]
    fn malformed_queries_say_what_is_wrong() {
        assert_eq!(parse_query("epoch=&offset=1"), Err(QueryError::Epoch));
        assert_eq!(parse_query("epoch=a%20b&offset=1"), Err(QueryError::Epoch));
        assert_eq!(
            parse_query(&format!("epoch={}&offset=1", "a".repeat(33))),
            Err(QueryError::Epoch)
        );
        assert_eq!(parse_query("epoch=e&offset=-1"), Err(QueryError::Offset));
        assert_eq!(parse_query("epoch=e&offset=+1"), Err(QueryError::Offset));
        assert_eq!(parse_query("epoch=e&offset=18446744073709551616"), Err(QueryError::Offset));
        assert_eq!(parse_query("epoch=e"), Err(QueryError::Half));
        assert_eq!(parse_query("offset=3"), Err(QueryError::Half));
        assert!(QueryError::Epoch.to_string().contains("epoch"));
    }

    #[test]
    fn resume_paths_round_trip_through_the_parser() {
        let resume = Resume { epoch: "k3x9".into(), offset: 7 };
        let path = path_with_resume(Some(&resume));
        assert_eq!(path, "/ws/room?epoch=k3x9&offset=7");
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        assert_eq!(parse_query(query), Ok(Some(resume)));
        assert_eq!(path_with_resume(None), PATH);
    }

    #[test]
    fn frames_are_the_documented_json() {
        assert_eq!(
            joined("guest-7f3a", "e1", 5, 2, true),
            r#"{"type":"joined","you":"guest-7f3a","epoch":"e1","offset":5,"online":2,"recovered":true}"#
        );
        assert_eq!(
            message(6, 1700000000000, "guest-7f3a", "hi \"there\"\n\\"),
            r#"{"type":"message","offset":6,"time":1700000000000,"from":"guest-7f3a","text":"hi \"there\"\n\\"}"#
        );
        assert_eq!(presence(3), r#"{"type":"presence","online":3}"#);
        assert_eq!(refused("x"), r#"{"type":"refused","reason":"x"}"#);
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\u{1}\u{1f}é🎉");
        assert_eq!(out, "\"a\\u0001\\u001fé🎉\"");
    }

    #[test]
    fn room_close_reasons_fit_in_a_control_frame() {
        assert!(REASON_SLOW.len() <= 123);
        assert!(REASON_RESET.len() <= 123);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn frames_decode_back() {
        let text = message(6, 1, "guest-1", "a\u{1}\"b");
        assert_eq!(
            Frame::parse(&text).expect("valid"),
            Frame::Message { offset: 6, time: 1, from: "guest-1".into(), text: "a\u{1}\"b".into() }
        );
        assert_eq!(
            Frame::parse(&joined("g", "e", 0, 1, false)).expect("valid"),
            Frame::Joined {
                you: "g".into(),
                epoch: "e".into(),
                offset: 0,
                online: 1,
                recovered: false
            }
        );
    }
}
