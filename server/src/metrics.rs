//! Prometheus metrics: what `/metrics` shows, registered once and updated where things happen.
//!
//! Names follow Prometheus conventions: counters end in `_total` (the encoder adds it),
//! durations are in seconds. Every metric is documented in the README.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why an upgrade (or a would-be upgrade's TCP connection) was turned away.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefusedReason {
    /// 403: the `Origin` is not allowed.
    Origin,
    /// 503: `--max-connections` are open.
    Limit,
    /// 4xx or a closed socket: not a valid WebSocket upgrade, or not HTTP at all.
    Malformed,
    /// The request head did not arrive within `--handshake-timeout`.
    Timeout,
}

impl RefusedReason {
    /// The `reason` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Limit => "limit",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    code: u16,
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
            "Connections ended, by close code (1006: no closing handshake)",
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

        Self {
            registry,
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

    /// Counts a connection's end under its close code.
    pub fn closed(&self, code: u16) {
        self.closes.get_or_create(&CloseLabels { code }).inc();
    }

    /// Counts an upgrade turned away.
    pub fn refused(&self, reason: RefusedReason) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    pub fn handshake_took(&self, duration: Duration) {
        self.handshake_seconds.observe(duration.as_secs_f64());
    }

    /// Counts a data message received.
    pub fn received(&self, bytes: usize) {
        self.messages_received.inc();
        self.bytes_received.inc_by(bytes as u64);
    }

    /// Counts a data message sent.
    pub fn sent(&self, bytes: usize) {
        self.messages_sent.inc();
        self.bytes_sent.inc_by(bytes as u64);
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
}
