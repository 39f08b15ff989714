//! Prometheus metrics: what `/metrics` shows, registered once and updated where things happen.
//!
//! Names follow Prometheus conventions: counters end in `_total` (the encoder adds it),
//! durations are in seconds. Every metric is documented in the README.
//!
//! **Labels come from fixed sets.** Each label value is an enum or a `&'static str` chosen by a
//! `match`, never text or a number a peer sent: a label a peer could choose would let it create
//! series without bound (a client closing with each code from 3000 to 4999 once grew
//! `/metrics` from 2 KB to 64 KB). A new label a peer can influence gets the same treatment:
//! map it onto a closed set first, with one value for "anything else". Today's labels:
//! `ws_closes_total{code}` ([`close_label`]: 18 values), `ws_upgrades_refused_total{reason}`
//! ([`RefusedReason`]: 6), `room_refused_total{reason}` ([`RoomRefusal`]: 2),
//! `room_joins_total{outcome}` (3, from [`Metrics::room_joined`]'s `match`),
//! `sessions_open{transport}`, `transport_messages_received_total{transport}` and
//! `transport_messages_sent_total{transport}` ([`Transport`]: 2), `poll_requests_total{kind}`
//! ([`PollKind`]: 5), `poll_refused_total{reason}` ([`PollRefusal`]: 9) and
//! `poll_sessions_ended_total{why}` ([`PollEnd`]: 6).

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why an upgrade (or a would-be upgrade's TCP connection) was turned away. A fixed set: a
/// peer's request decides which one, never what it says (the header that failed is logged, not
/// labelled).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefusedReason {
    /// 403: the `Origin` is not allowed.
    Origin,
    /// 503: `--max-connections` are open.
    Limit,
    /// 503: a room join before the room is ready (it has not reached Redis since it started).
    Unready,
    /// 4xx or a closed socket: not a valid WebSocket upgrade, or not HTTP at all.
    Malformed,
    /// The request head did not arrive within `--handshake-timeout`.
    Timeout,
    /// 400 or 421: a request's `Host` was missing, repeated, malformed, or not one that
    /// `--allowed-host` lets in (any request, not only upgrades: the check comes first).
    Host,
}

impl RefusedReason {
    /// The `reason` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Limit => "limit",
            Self::Unready => "unready",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::Host => "host",
        }
    }
}

impl EncodeLabelValue for RefusedReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: RefusedReason,
}

/// Why the room did not publish a message. A fixed set, like every label here.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RoomRefusal {
    /// Over `--room-rate`.
    Rate,
    /// Redis could not be reached.
    Broker,
}

impl EncodeLabelValue for RoomRefusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let text = match self {
            Self::Rate => "rate",
            Self::Broker => "broker",
        };
        EncodeLabelValue::encode(&text, encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoomRefusedLabels {
    reason: RoomRefusal,
}

/// How a join went: `fresh` (no resume point), `recovered`, or `lost` (could not be recovered).
/// `&'static str` from the `match` in [`Metrics::room_joined`] only: the peer's epoch and
/// offset decide which, and never appear in it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JoinLabels {
    outcome: &'static str,
}

/// Generates a fixed-set label enum: each variant with its label text.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The label's value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_enum! {
    /// How a client reaches the echo or the room.
    Transport {
        /// `/ws/` and `/ws/room`.
        WebSocket => "websocket",
        /// `/poll/`: long or short polling (one session either way; see [`PollKind`]).
        Polling => "polling",
    }
}

label_enum! {
    /// What a request under `/poll/` asked for.
    PollKind {
        /// `POST /poll/SID/echo` or `/room`.
        Open => "open",
        /// A GET that may wait.
        Long => "long",
        /// A GET with `wait=0`.
        Short => "short",
        /// A POST of messages.
        Send => "send",
        /// A DELETE.
        Close => "close",
    }
}

label_enum! {
    /// Why a request under `/poll/` was refused.
    PollRefusal {
        /// 400: a bad path, query, batch or body.
        Malformed => "malformed",
        /// 403: the `Origin` is not allowed.
        Origin => "origin",
        /// 404: no such session (never opened, expired or closed).
        Unknown => "unknown",
        /// 409: a second GET while one waits.
        Pending => "pending",
        /// 409: an open with an id in use.
        Taken => "taken",
        /// 413: a message over `--max-message-size`.
        TooBig => "too_big",
        /// 503: `--max-connections` are open, or the session's queue stayed full.
        Limit => "limit",
        /// 503: a room session opened before the room is ready (see `Room::ready`).
        Unready => "unready",
        /// 405: a method the path does not take.
        Method => "method",
    }
}

label_enum! {
    /// Why a polling session ended.
    PollEnd {
        /// The client sent DELETE.
        Closed => "closed",
        /// No request for `--idle-timeout`.
        Expired => "expired",
        /// The server shut down (1001).
        Shutdown => "shutdown",
        /// A room member whose queue was full (1013).
        Slow => "slow",
        /// The room's history was reset (1012).
        Reset => "reset",
        /// The application closed it (a close code of its own).
        Refused => "refused",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: Transport,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollKindLabels {
    kind: PollKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollRefusedLabels {
    reason: PollRefusal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollEndLabels {
    why: PollEnd,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    /// From [`close_label`] only.
    code: &'static str,
}

/// The `code` label of `ws_closes_total` for a close code: one of a fixed set of 18, whatever
/// the peer sent.
///
/// - Each code the IANA WebSocket registry names (RFC 6455 §7.4.1 and the registry's
///   additions 1012-1015), as its number: `1000` to `1003` and `1005` to `1015`; `1005` when
///   the peer's Close had no code, `1006` when there was no closing handshake at all.
/// - `registered` for 3000-3999, the range RFC 6455 §7.4.2 leaves to libraries, frameworks
///   and applications, which register their codes with IANA one by one (3000 Unauthorized,
///   3003 Forbidden, 3008 Timeout, ...); none of them means anything to this server. (Not
///   `library`: tungstenite calls 3000-3999 `Iana` and 4000-4999 `Library`.)
/// - `private` for 4000-4999, private use: whatever a client's own protocol means by them.
/// - `invalid` for everything else: 0-999, the reserved 1004, the unassigned 1016-2999 and
///   5000 and above (a peer that sends one is answered with 1002, but the label does not rely
///   on that).
pub fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        1014 => "1014",
        1015 => "1015",
        3000..=3999 => "registered",
        4000..=4999 => "private",
        _ => "invalid",
    }
}

/// Every metric the server exports, plus the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub connections_max: Gauge,
    pub connections: Counter,
    pub messages_received: Counter,
    pub messages_sent: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub pings_sent: Counter,
    pub idle_closes: Counter,
    pub stalled_closes: Counter,
    closes: Family<CloseLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    handshake_seconds: Histogram,
    pub room_members: Gauge,
    pub room_published: Counter,
    pub room_delivered: Counter,
    pub room_slow: Counter,
    pub room_broker_up: Gauge,
    room_refused: Family<RoomRefusedLabels, Counter>,
    room_joins: Family<JoinLabels, Counter>,
    sessions_open: Family<TransportLabels, Gauge>,
    transport_received: Family<TransportLabels, Counter>,
    transport_sent: Family<TransportLabels, Counter>,
    /// The `transport="websocket"` members of the two families above, looked up once: they
    /// move with every WebSocket message, and a family lookup is a lock and a hash.
    websocket_received: Counter,
    websocket_sent: Counter,
    poll_requests: Family<PollKindLabels, Counter>,
    poll_refused: Family<PollRefusedLabels, Counter>,
    poll_ended: Family<PollEndLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connections_open = Gauge::default();
        let connections_max = Gauge::default();
        let connections = Counter::default();
        let messages_received = Counter::default();
        let messages_sent = Counter::default();
        let bytes_received = Counter::default();
        let bytes_sent = Counter::default();
        let pings_sent = Counter::default();
        let idle_closes = Counter::default();
        let stalled_closes = Counter::default();
        let closes = Family::<CloseLabels, Counter>::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        // 0.5 ms .. ~4 s: a loopback upgrade is sub-millisecond, a slow client's seconds.
        let handshake_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));

        let r = &mut registry;
        r.register(
            "ws_connections_open",
            "WebSocket connections open now",
            connections_open.clone(),
        );
        r.register(
            "ws_connections_max",
            "Most WebSocket connections allowed at once (--max-connections)",
            connections_max.clone(),
        );
        r.register("ws_connections", "WebSocket connections accepted", connections.clone());
        r.register("ws_messages_received", "Data messages received", messages_received.clone());
        r.register(
            "ws_messages_sent",
            "Data messages sent (replies and the greeting; not pings)",
            messages_sent.clone(),
        );
        r.register(
            "ws_received_bytes",
            "Payload bytes of data messages received",
            bytes_received.clone(),
        );
        r.register("ws_sent_bytes", "Payload bytes of data messages sent", bytes_sent.clone());
        r.register("ws_pings_sent", "Keepalive pings sent", pings_sent.clone());
        r.register(
            "ws_closes",
            "Connections ended, by close code (1006: no closing handshake; registered: 3000-3999; \
             private: 4000-4999; invalid: any other unregistered code)",
            closes.clone(),
        );
        r.register(
            "ws_idle_closes",
            "Connections closed because nothing arrived for --idle-timeout",
            idle_closes.clone(),
        );
        r.register(
            "ws_stalled_closes",
            "Connections dropped because the peer read nothing for --send-timeout",
            stalled_closes.clone(),
        );
        r.register(
            "ws_upgrades_refused",
            "Upgrade attempts turned away, by reason",
            refused.clone(),
        );
        r.register(
            "ws_handshake_duration_seconds",
            "From TCP accept to the upgraded WebSocket",
            handshake_seconds.clone(),
        );

        let room_members = Gauge::default();
        let room_published = Counter::default();
        let room_delivered = Counter::default();
        let room_slow = Counter::default();
        let room_broker_up = Gauge::default();
        let room_refused = Family::<RoomRefusedLabels, Counter>::default();
        let room_joins = Family::<JoinLabels, Counter>::default();
        r.register("room_members", "Room members connected to this instance", room_members.clone());
        r.register(
            "room_published",
            "Messages this instance published to the room",
            room_published.clone(),
        );
        r.register(
            "room_delivered",
            "Room frames queued for members of this instance (messages and presence)",
            room_delivered.clone(),
        );
        r.register(
            "room_slow_consumers",
            "Room members closed with 1013 because their queue was full",
            room_slow.clone(),
        );
        r.register(
            "room_broker_up",
            "1 while the room's broker works (always with the embedded engine; Redis reachable)",
            room_broker_up.clone(),
        );
        r.register("room_refused", "Room messages not published, by reason", room_refused.clone());
        r.register(
            "room_joins",
            "Room joins by outcome: fresh, recovered, or lost (resume point no longer in history)",
            room_joins.clone(),
        );

        let sessions_open = Family::<TransportLabels, Gauge>::default();
        let transport_received = Family::<TransportLabels, Counter>::default();
        let transport_sent = Family::<TransportLabels, Counter>::default();
        let poll_requests = Family::<PollKindLabels, Counter>::default();
        let poll_refused = Family::<PollRefusedLabels, Counter>::default();
        let poll_ended = Family::<PollEndLabels, Counter>::default();
        let r = &mut registry;
        r.register(
            "sessions_open",
            "Clients connected now, by transport (websocket or polling; both count against \
             --max-connections)",
            sessions_open.clone(),
        );
        r.register(
            "transport_messages_received",
            "Data messages received, by transport",
            transport_received.clone(),
        );
        r.register(
            "transport_messages_sent",
            "Data messages sent (replies, greetings, room frames), by transport",
            transport_sent.clone(),
        );
        r.register(
            "poll_requests",
            "Requests under /poll/, by kind (open, long, short, send, close)",
            poll_requests.clone(),
        );
        r.register(
            "poll_refused",
            "Requests under /poll/ refused, by reason",
            poll_refused.clone(),
        );
        r.register("poll_sessions_ended", "Polling sessions ended, by why", poll_ended.clone());
        for transport in [Transport::WebSocket, Transport::Polling] {
            let labels = TransportLabels { transport };
            let _ = sessions_open.get_or_create(&labels);
            let _ = transport_received.get_or_create(&labels);
            let _ = transport_sent.get_or_create(&labels);
        }
        let websocket = TransportLabels { transport: Transport::WebSocket };
        let websocket_received = transport_received.get_or_create(&websocket).clone();
        let websocket_sent = transport_sent.get_or_create(&websocket).clone();

        Self {
            registry,
            sessions_open,
            websocket_received,
            websocket_sent,
            transport_received,
            transport_sent,
            poll_requests,
            poll_refused,
            poll_ended,
            room_members,
            room_published,
            room_delivered,
            room_slow,
            room_broker_up,
            room_refused,
            room_joins,
            connections_open,
            connections_max,
            connections,
            messages_received,
            messages_sent,
            bytes_received,
            bytes_sent,
            pings_sent,
            idle_closes,
            stalled_closes,
            closes,
            refused,
            handshake_seconds,
        }
    }

    /// Counts a connection's end under its close code's label ([`close_label`]).
    pub fn closed(&self, code: u16) {
        self.closes.get_or_create(&CloseLabels { code: close_label(code) }).inc();
    }

    /// Counts an upgrade turned away.
    pub fn refused(&self, reason: RefusedReason) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Counts a room join.
    pub fn room_joined(&self, resumed: bool, recovered: bool) {
        let outcome = match (resumed, recovered) {
            (false, _) => "fresh",
            (true, true) => "recovered",
            (true, false) => "lost",
        };
        self.room_joins.get_or_create(&JoinLabels { outcome }).inc();
    }

    /// Counts one room frame queued for `delivered` members, and `slow` members ended.
    pub fn room_fanned_out(&self, delivered: usize, slow: usize) {
        self.room_delivered.inc_by(delivered as u64);
        if slow > 0 {
            self.room_slow.inc_by(slow as u64);
        }
    }

    /// Counts a room message not published.
    pub fn room_refused(&self, reason: RoomRefusal) {
        self.room_refused.get_or_create(&RoomRefusedLabels { reason }).inc();
    }

    pub fn handshake_took(&self, duration: Duration) {
        self.handshake_seconds.observe(duration.as_secs_f64());
    }

    /// Counts a data message received on a WebSocket.
    pub fn received(&self, bytes: usize) {
        self.messages_received.inc();
        self.bytes_received.inc_by(bytes as u64);
        self.websocket_received.inc();
    }

    /// Counts a data message sent on a WebSocket.
    pub fn sent(&self, bytes: usize) {
        self.messages_sent.inc();
        self.bytes_sent.inc_by(bytes as u64);
        self.websocket_sent.inc();
    }

    /// Counts `n` data messages received over `transport`.
    pub fn transport_received(&self, transport: Transport, n: usize) {
        self.transport_received.get_or_create(&TransportLabels { transport }).inc_by(n as u64);
    }

    /// Counts `n` data messages sent over `transport`.
    pub fn transport_sent(&self, transport: Transport, n: usize) {
        self.transport_sent.get_or_create(&TransportLabels { transport }).inc_by(n as u64);
    }

    /// A client connected over `transport` (`+1`) or went (`-1`).
    pub fn session_opened(&self, transport: Transport, delta: i64) {
        self.sessions_open.get_or_create(&TransportLabels { transport }).inc_by(delta);
    }

    /// Counts a request under `/poll/`.
    pub fn poll_request(&self, kind: PollKind) {
        self.poll_requests.get_or_create(&PollKindLabels { kind }).inc();
    }

    /// Counts a request under `/poll/` refused.
    pub fn poll_refused(&self, reason: PollRefusal) {
        self.poll_refused.get_or_create(&PollRefusedLabels { reason }).inc();
    }

    /// Counts a polling session's end.
    pub fn poll_ended(&self, why: PollEnd) {
        self.poll_ended.get_or_create(&PollEndLabels { why }).inc();
    }

    /// The text exposition format, as `/metrics` serves it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_shows_counters_with_labels() {
        let metrics = Metrics::new();
        metrics.received(5);
        metrics.closed(1009);
        metrics.refused(RefusedReason::Origin);
        let text = metrics.render();
        assert!(text.contains("ws_messages_received_total 1\n"), "{text}");
        assert!(text.contains("ws_received_bytes_total 5\n"), "{text}");
        assert!(text.contains("ws_closes_total{code=\"1009\"} 1\n"), "{text}");
        assert!(text.contains("ws_upgrades_refused_total{reason=\"origin\"} 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn every_close_code_maps_onto_eighteen_labels() {
        let labels: std::collections::BTreeSet<_> = (0..=u16::MAX).map(close_label).collect();
        assert_eq!(labels.len(), 18, "{labels:?}");
        for code in (1000..=1003).chain(1005..=1015) {
            assert_eq!(close_label(code), code.to_string());
        }
        assert_eq!(close_label(wire::close::NO_STATUS), "1005");
        assert_eq!(close_label(wire::close::ABNORMAL), "1006");
        for (code, label) in [
            (3000, "registered"),
            (3999, "registered"),
            (4000, "private"),
            (4999, "private"),
            (0, "invalid"),
            (999, "invalid"),
            (1004, "invalid"),
            (1016, "invalid"),
            (2999, "invalid"),
            (5000, "invalid"),
            (u16::MAX, "invalid"),
        ] {
            assert_eq!(close_label(code), label, "{code}");
        }
    }

    #[test]
    fn two_thousand_registered_and_private_codes_make_two_series() {
        let metrics = Metrics::new();
        let before = metrics.render().len();
        for code in 3000..=4999 {
            metrics.closed(code);
        }
        let text = metrics.render();
        assert!(text.contains("ws_closes_total{code=\"registered\"} 1000\n"), "{text}");
        assert!(text.contains("ws_closes_total{code=\"private\"} 1000\n"), "{text}");
        assert_eq!(text.matches("ws_closes_total{").count(), 2, "{text}");
        assert!(text.len() < before + 1000, "{} bytes from {before}", text.len());
    }
}
