//! The wire contract: every protocol fact the server, the browser client, the command-line
//! client and the tests must agree on, defined once.
//!
//! No dependencies (but `serde`, for native decoders only), so the wasm bundle and the native
//! binaries can both import it.

pub mod poll;
pub mod room;

use std::net::{Ipv4Addr, SocketAddr};

/// The WebSocket endpoint. The server also answers on [`WS_PATH_NO_SLASH`].
pub const WS_PATH: &str = "/ws/";
/// `/ws` without the trailing slash, routed to the same handler for forgiving clients.
pub const WS_PATH_NO_SLASH: &str = "/ws";

/// The first message the server sends on every new connection.
pub const WELCOME: &str = "Welcome!";
/// The message the browser client sends once the connection is open.
pub const HELLO: &str = "Hello there!";

/// Liveness probe: 200 while the process serves HTTP.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness probe: 200, then 503 from the moment shutdown begins.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus metrics in the text exposition format.
pub const METRICS_PATH: &str = "/metrics";

/// Address the server binds and the command-line client connects to by default.
pub const DEFAULT_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Port of the original Tornado tutorial.
pub const DEFAULT_PORT: u16 = 8888;

/// How the `server` binary announces its address on stdout (`Serving on http://ADDR/`);
/// `cargo xtask` and the end-to-end tests read the address back with [`served_addr`].
pub const SERVING_ON: &str = "Serving on http://";

/// The address in a [`SERVING_ON`] line, if `line` is one.
pub fn served_addr(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix(SERVING_ON)?.trim_end_matches('/').parse().ok()
}

/// `ws://127.0.0.1:8888/ws/`: the command-line client's default URL.
pub fn default_ws_url() -> String {
    format!("ws://{DEFAULT_HOST}:{DEFAULT_PORT}{WS_PATH}")
}

/// The reply rule: a text message comes back in its Unicode upper-case form.
///
/// Same as Python's `str.upper()` (the original server's rule), including special
/// casing that changes the length: `straße` → `STRASSE`.
pub fn reply(text: &str) -> String {
    text.to_uppercase()
}

/// WebSocket close codes (RFC 6455 §7.4.1) this application sends or reports.
pub mod close {
    /// Normal closure: the client or server is done.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (or the page is going away).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol (e.g. an unmasked client frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer sent a data type this endpoint does not accept (binary, here).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Reported by a browser when the close frame carried no status code.
    pub const NO_STATUS: u16 = 1005;
    /// Reported locally when the connection dropped without a close frame.
    pub const ABNORMAL: u16 = 1006;
    /// A text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The peer broke a policy of the endpoint; retrying will not help.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message was larger than the server's limit ([`super::limits::MAX_MESSAGE_BYTES`] by
    /// default); the reason is [`reason_too_big`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The client wanted an extension the server did not offer.
    pub const MANDATORY_EXTENSION: u16 = 1010;
    /// The server is restarting (here: the room's history was reset); reconnecting helps.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The server is overloaded for this client (here: it fell too far behind); retry.
    pub const TRY_AGAIN_LATER: u16 = 1013;

    /// Close reason sent with [`UNSUPPORTED_DATA`] when a binary message arrives.
    pub const REASON_BINARY: &str = "binary messages are not supported; send text";
    /// Close reason sent with [`GOING_AWAY`] when the server shuts down.
    pub const REASON_SHUTDOWN: &str = "server shutting down";
    /// Close reason sent with [`GOING_AWAY`] when nothing (no message, no pong) arrived for the
    /// server's idle timeout.
    pub const REASON_IDLE: &str = "idle timeout: no message or pong received";
    /// Start of the reason sent with [`MESSAGE_TOO_BIG`]; [`reason_too_big`] adds the limit.
    pub const REASON_TOO_BIG_PREFIX: &str = "message too big: the limit is ";

    /// Close reason sent with [`MESSAGE_TOO_BIG`]: names the limit, so a client can say why.
    pub fn reason_too_big(limit: usize) -> String {
        format!("{REASON_TOO_BIG_PREFIX}{limit} bytes")
    }
    /// Close reason sent with [`INVALID_PAYLOAD`].
    pub const REASON_INVALID_UTF8: &str = "text message is not valid UTF-8";
    /// Close reason sent with [`PROTOCOL_ERROR`].
    pub const REASON_PROTOCOL: &str = "WebSocket protocol error";
}

/// Size limits enforced by the server.
pub mod limits {
    /// Largest message (after reassembly of fragments) the server accepts, in bytes.
    ///
    /// The tutorial's messages are a few bytes; 64 KiB leaves room for real chat text while
    /// bounding what one peer can make the server buffer.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_uppercases_ascii() {
        assert_eq!(reply("Hello there!"), "HELLO THERE!");
    }

    #[test]
    fn reply_follows_unicode_special_casing() {
        assert_eq!(reply("straße"), "STRASSE");
        assert_eq!(reply("ﬁx"), "FIX");
        assert_eq!(reply("ǆemal"), "ǄEMAL");
        assert_eq!(reply("привет"), "ПРИВЕТ");
    }

    #[test]
    fn reply_leaves_caseless_text_alone() {
        assert_eq!(reply(""), "");
        assert_eq!(reply("123 !? 漢字 🎉"), "123 !? 漢字 🎉");
    }

    #[test]
    fn too_big_reason_names_the_limit() {
        assert_eq!(close::reason_too_big(65536), "message too big: the limit is 65536 bytes");
    }

    #[test]
    fn close_reasons_fit_in_a_control_frame() {
        // RFC 6455: a control frame's payload is at most 125 bytes, 2 of them the code.
        for reason in [
            close::REASON_BINARY,
            close::REASON_SHUTDOWN,
            &close::reason_too_big(usize::MAX),
            close::REASON_IDLE,
            close::REASON_INVALID_UTF8,
            close::REASON_PROTOCOL,
        ] {
            assert!(reason.len() <= 123, "{reason}");
        }
    }

    #[test]
    fn served_addr_reads_the_announced_address_back() {
        let addr: SocketAddr = "127.0.0.1:41234".parse().expect("addr");
        assert_eq!(served_addr(&format!("{SERVING_ON}{addr}/\n")), Some(addr));
        let v6: SocketAddr = "[::1]:8888".parse().expect("addr");
        assert_eq!(served_addr(&format!("{SERVING_ON}{v6}/")), Some(v6));
        assert_eq!(served_addr("INFO New connection"), None);
    }

    #[test]
    fn default_url_points_at_the_default_port_and_path() {
        assert_eq!(default_ws_url(), "ws://127.0.0.1:8888/ws/");
    }
}
