//! The Compare view's measurement, apart from the DOM and the network: the same N messages over
//! WebSocket, long polling and short polling, one at a time, and what each run costs.
//!
//! A [`Run`] is one transport's run on a fresh connection or session. The driver
//! ([`crate::compare_page`]) tells it what arrived and when, and asks it for the next message;
//! the run pairs each reply with its message, keeps the round-trip times, counts requests and
//! bytes, and turns all that into a table [`Row`]. Time comes in from outside (milliseconds,
//! `performance.now()`), so every rule here is tested natively and in the browser.
//!
//! What the columns mean (the README says the same):
//! - **messages/s**: N divided by the time from the first message sent to the last reply
//!   received (opening the connection or session and reading the greeting are not in it).
//! - **median / p95 RTT**: per message, from just before it is sent to its reply's arrival;
//!   both by nearest rank (the median of an even count is the lower middle value).
//! - **HTTP requests**: polling, every fetch of the run (the open, each POST and GET, the
//!   DELETE); WebSocket, 1 (the upgrade).
//! - **bytes per message**: every byte of the run in both directions, headers included,
//!   divided by N. Polling: for each request, Resource Timing's `transferSize` (the response
//!   as the browser received it), the request body the page sent, and the request head's size
//!   as the server reports it ([`wire::poll::HEADER_REQUEST_HEAD_BYTES`]). WebSocket: the
//!   RFC 6455 frames of the run, exactly ([`frame_len`]: greeting, messages, replies and the
//!   closing handshake); the one-time opening handshake (the HTTP upgrade) is left out.

/// How many messages each transport carries unless the page says otherwise.
pub const DEFAULT_COUNT: u32 = 50;
/// The most messages a run may take (each transport's run is sequential).
pub const MAX_COUNT: u32 = 1000;
/// Short polling asks every this many milliseconds unless the page says otherwise. As short
/// as a polling page would dare (ten requests a second from every idle visitor), so the
/// comparison is the kindest to short polling that is still realistic; its round trip is
/// about one interval, since a reply waits for the next tick.
pub const DEFAULT_INTERVAL_MS: u32 = 100;
/// The interval's bounds.
pub const MIN_INTERVAL_MS: u32 = 10;
pub const MAX_INTERVAL_MS: u32 = 10_000;

/// The table's header row, in order (`index.html` declares it; a test keeps the two equal).
pub const HEADERS: [&str; 6] = [
    "transport",
    "messages/s",
    "median RTT (ms)",
    "p95 RTT (ms)",
    "HTTP requests",
    "bytes per message",
];

/// One way to carry the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    LongPolling,
    ShortPolling,
}

impl Transport {
    /// The order of the runs, which is also the table's.
    pub const ALL: [Transport; 3] =
        [Transport::WebSocket, Transport::LongPolling, Transport::ShortPolling];

    /// The row's name.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::LongPolling => "long polling",
            Transport::ShortPolling => "short polling",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Messages per transport, 1 to [`MAX_COUNT`].
    pub count: u32,
    /// Short polling's interval in milliseconds.
    pub interval_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { count: DEFAULT_COUNT, interval_ms: DEFAULT_INTERVAL_MS }
    }
}

impl Settings {
    /// The settings from the page's two number fields (`valueAsNumber`): a number out of range
    /// is brought into it, and anything that is not a number (NaN) gives the default.
    pub fn from_fields(count: f64, interval_ms: f64) -> Self {
        let number = |value: f64, default, min, max| {
            if value.is_nan() {
                default
            } else {
                (value as u32).clamp(min, max)
            }
        };
        Self {
            count: number(count, DEFAULT_COUNT, 1, MAX_COUNT),
            interval_ms: number(interval_ms, DEFAULT_INTERVAL_MS, MIN_INTERVAL_MS, MAX_INTERVAL_MS),
        }
    }
}

/// The `index`th message (from 1); the same on every transport.
pub fn message(index: u32) -> String {
    format!("compare {index}")
}

/// The server's reply to [`message`]`(index)` (its upper case, `wire::reply`; built here
/// rather than by `to_uppercase`, whose Unicode tables the bundle does not need).
pub fn reply(index: u32) -> String {
    format!("COMPARE {index}")
}

/// The bytes of one RFC 6455 frame with `payload` bytes: a 2-byte header, plus 2 or 8 for a
/// payload of 126 bytes or more, or of 65,536 or more; plus the 4-byte mask on frames the page
/// sends (`masked`).
pub fn frame_len(payload: usize, masked: bool) -> u64 {
    let extended = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    (2 + extended + if masked { 4 } else { 0 } + payload) as u64
}

/// When short polling asks next: one interval after the last tick, or now if that has passed
/// (a slow answer delays the schedule rather than bunching requests up).
pub fn next_tick(last_tick: f64, interval_ms: u32, now: f64) -> f64 {
    (last_tick + f64::from(interval_ms)).max(now)
}

/// Something arrived that is not what the run was waiting for: its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected(pub String);

/// One transport's run.
#[derive(Debug, Clone)]
pub struct Run {
    pub transport: Transport,
    count: u32,
    greeted: bool,
    sent: u32,
    /// When the message in flight was sent.
    in_flight: Option<f64>,
    first_sent_at: f64,
    last_reply_at: f64,
    rtts_us: Vec<u32>,
    requests: u32,
    bytes: u64,
}

impl Run {
    /// A run of `count` messages; a WebSocket run has made its one request (the upgrade).
    pub fn new(transport: Transport, count: u32) -> Self {
        Self {
            transport,
            count,
            greeted: false,
            sent: 0,
            in_flight: None,
            first_sent_at: 0.0,
            last_reply_at: 0.0,
            rtts_us: Vec::with_capacity(count as usize),
            requests: u32::from(transport == Transport::WebSocket),
            bytes: 0,
        }
    }

    /// The next message to send at `now`, if it is time for one: after the greeting, when
    /// nothing is in flight, until all have been sent.
    pub fn next(&mut self, now: f64) -> Option<String> {
        if !self.greeted || self.in_flight.is_some() || self.sent == self.count {
            return None;
        }
        self.sent += 1;
        if self.sent == 1 {
            self.first_sent_at = now;
        }
        self.in_flight = Some(now);
        let text = message(self.sent);
        self.frame(text.len(), true);
        Some(text)
    }

    /// A message arrived at `now`: first the greeting, then the reply to the message in
    /// flight. Anything else ends the run.
    pub fn received(&mut self, text: &str, now: f64) -> Result<(), Unexpected> {
        let expected = match self.in_flight {
            Some(sent_at) if text == reply(self.sent) => {
                self.in_flight = None;
                self.last_reply_at = now;
                // Rounded to the microsecond (`+ 0.5`: the time is never negative).
                self.rtts_us.push(((now - sent_at).max(0.0) * 1000.0 + 0.5) as u32);
                true
            }
            None if !self.greeted && text == wire::WELCOME => {
                self.greeted = true;
                true
            }
            _ => false,
        };
        if !expected {
            return Err(Unexpected(text.to_owned()));
        }
        self.frame(text.len(), false);
        Ok(())
    }

    /// How many messages have their reply.
    pub fn answered(&self) -> u32 {
        self.rtts_us.len() as u32
    }

    /// How many HTTP requests the run made.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Whether every message has its reply.
    pub fn finished(&self) -> bool {
        self.answered() == self.count
    }

    /// One HTTP request of a polling run, with the bytes known when it is answered (the
    /// request's body and head); its response's bytes come later, by [`Run::add_bytes`].
    pub fn request(&mut self, bytes: u64) {
        self.requests += 1;
        self.bytes += bytes;
    }

    /// Bytes measured apart from the requests (Resource Timing's, read after the run).
    pub fn add_bytes(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// The WebSocket's closing handshake: the page's Close with code 1000 and no reason, and
    /// the server's answer, which echoes it (as RFC 6455 section 5.5.1 has it, and tungstenite
    /// does).
    pub fn closed(&mut self) {
        self.frame(2, true);
        self.frame(2, false);
    }

    fn frame(&mut self, payload: usize, masked: bool) {
        if self.transport == Transport::WebSocket {
            self.bytes += frame_len(payload, masked);
        }
    }

    /// The run's table row (meaningful once it has [`finished`](Run::finished)).
    pub fn row(&self) -> Row {
        let duration_us = (((self.last_reply_at - self.first_sent_at) * 1000.0) as u64).max(1);
        Row {
            transport: self.transport,
            rate_tenths: u64::from(self.answered()) * 10_000_000 / duration_us,
            median_us: nearest_rank(&self.rtts_us, 50),
            p95_us: nearest_rank(&self.rtts_us, 95),
            requests: self.requests,
            bytes_per_message: self.bytes.div_ceil(u64::from(self.count).max(1)),
        }
    }
}

/// The `percent`th percentile of `values` by nearest rank: the smallest value that at least
/// `percent` % of them do not exceed (0 for none). Counting instead of sorting: a few hundred
/// values, and much less code in the bundle.
pub fn nearest_rank(values: &[u32], percent: usize) -> u32 {
    let rank = (values.len() * percent).div_ceil(100).max(1);
    let at_or_below = |v: u32| values.iter().filter(|&&x| x <= v).count();
    values.iter().copied().filter(|&v| at_or_below(v) >= rank).min().unwrap_or(0)
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub transport: Transport,
    /// Messages per second, in tenths.
    pub rate_tenths: u64,
    /// Round-trip times in microseconds.
    pub median_us: u32,
    pub p95_us: u32,
    pub requests: u32,
    /// Rounded up.
    pub bytes_per_message: u64,
}

impl Row {
    /// The row's cells after the transport's name, as the table shows them: one decimal for
    /// rates and milliseconds, whole numbers for counts (integers only: no float formatting
    /// in the bundle).
    pub fn cells(&self) -> [String; 5] {
        [
            tenths(self.rate_tenths),
            ms(self.median_us),
            ms(self.p95_us),
            self.requests.to_string(),
            self.bytes_per_message.to_string(),
        ]
    }
}

/// Microseconds as milliseconds with one decimal, rounded up: `1234` as `1.3`.
pub fn ms(us: u32) -> String {
    tenths(u64::from(us).div_ceil(100))
}

/// `123` tenths as `12.3`.
fn tenths(value: u64) -> String {
    format!("{}.{}", value / 10, value % 10)
}

/// The bar chart's width in its `viewBox`, where the bars start, and how long the longest is.
pub const CHART_WIDTH: u32 = 300;
pub const BAR_X: u32 = 120;
pub const BAR_MAX: u32 = CHART_WIDTH - BAR_X;

/// Bar lengths for `values` (the longest gets [`BAR_MAX`]); at least 1, so every row shows.
pub fn bars(values: &[u32]) -> Vec<u32> {
    let top = u64::from(values.iter().copied().max().unwrap_or(0).max(1));
    values.iter().map(|&v| ((u64::from(v) * u64::from(BAR_MAX) / top) as u32).max(1)).collect()
}

/// The status line while `transport` runs, with `answered` of `count` replies in.
pub fn progress(transport: Transport, answered: u32, count: u32) -> String {
    format!("Comparing: {}, {answered} of {count} messages answered", transport.label())
}

/// The status line once every run finished.
pub fn done(settings: Settings) -> String {
    format!(
        "Done: {} messages over each transport, one at a time; short polling every {} ms",
        settings.count, settings.interval_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A run of `count` messages, each answered `rtt_ms` after it was sent.
    fn run(transport: Transport, count: u32, rtt_ms: f64) -> Run {
        let mut run = Run::new(transport, count);
        let mut now = 1000.0;
        assert_eq!(run.next(now), None, "nothing before the greeting");
        run.received(wire::WELCOME, now).expect("the greeting");
        while let Some(text) = run.next(now) {
            assert_eq!(run.next(now), None, "one in flight");
            now += rtt_ms;
            let reply = wire::reply(&text);
            run.received(&reply, now).expect("the reply");
        }
        run
    }

    #[test]
    fn the_replies_are_the_servers() {
        for index in [1, 9, 50, 1000] {
            assert_eq!(reply(index), wire::reply(&message(index)));
        }
    }

    #[test]
    fn one_message_in_flight_each_paired_with_its_reply() {
        let run = run(Transport::LongPolling, 3, 2.5);
        assert!(run.finished());
        assert_eq!(run.rtts_us, [2500, 2500, 2500]);
        let row = run.row();
        // 3 messages in 7.5 ms.
        assert_eq!(row.rate_tenths, 4000);
        assert_eq!(row.median_us, 2500);
        assert_eq!(row.p95_us, 2500);
        assert_eq!(row.cells(), ["400.0", "2.5", "2.5", "0", "0"]);
    }

    #[test]
    fn anything_out_of_order_ends_the_run() {
        let mut run = Run::new(Transport::WebSocket, 2);
        assert_eq!(run.received("COMPARE 1", 0.0), Err(Unexpected("COMPARE 1".into())));
        run.received(wire::WELCOME, 0.0).expect("greeting");
        assert_eq!(run.received(wire::WELCOME, 0.0), Err(Unexpected(wire::WELCOME.into())));
        assert_eq!(run.next(1.0).as_deref(), Some("compare 1"));
        assert_eq!(run.received("COMPARE 2", 2.0), Err(Unexpected("COMPARE 2".into())));
        run.received("COMPARE 1", 2.0).expect("its reply");
        assert_eq!(run.received("COMPARE 1", 3.0), Err(Unexpected("COMPARE 1".into())));
        assert!(!run.finished());
    }

    #[test]
    fn websocket_bytes_are_its_frames_without_the_handshake() {
        let mut run = run(Transport::WebSocket, 2, 1.0);
        run.closed();
        // Welcome! (2 + 8), "compare N" masked (2 + 4 + 9) and "COMPARE N" (2 + 9) twice, the
        // Close frames (2 + 4 + 2, 2 + 2).
        let total = 10 + 2 * (15 + 11) + 8 + 4;
        let row = run.row();
        assert_eq!(row.requests, 1);
        assert_eq!(row.bytes_per_message, (total as u64).div_ceil(2));
        assert_eq!(frame_len(125, false), 127);
        assert_eq!(frame_len(126, true), 134);
        assert_eq!(frame_len(65_535, false), 65_539);
        assert_eq!(frame_len(65_536, true), 65_550);
    }

    #[test]
    fn polling_counts_requests_and_their_bytes() {
        let mut run = run(Transport::ShortPolling, 4, 100.0);
        for _ in 0..11 {
            run.request(250);
        }
        run.add_bytes(1250);
        let row = run.row();
        assert_eq!(row.requests, 11);
        assert_eq!(row.bytes_per_message, 1000);
        assert_eq!(row.rate_tenths, 100);
    }

    #[test]
    fn median_and_p95_of_the_samples() {
        assert_eq!(nearest_rank(&[], 95), 0);
        assert_eq!(nearest_rank(&[7], 95), 7);
        let values: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(nearest_rank(&values, 95), 95);
        assert_eq!(nearest_rank(&values, 50), 50);
        // 50 values: rank 48.
        let values: Vec<u32> = (1..=50).collect();
        assert_eq!(nearest_rank(&values, 95), 48);
        assert_eq!(nearest_rank(&[5, 5, 5, 1], 95), 5);
        assert_eq!(nearest_rank(&[3, 1, 2], 95), 3);

        let mut run = Run::new(Transport::WebSocket, 4);
        run.received(wire::WELCOME, 0.0).expect("greeting");
        for (at, rtt) in [(0.0, 0.3), (1.0, 0.1), (2.0, 9.0), (20.0, 0.2)] {
            let text = run.next(at).expect("a message");
            run.received(&wire::reply(&text), at + rtt).expect("reply");
        }
        let row = run.row();
        assert_eq!((row.median_us, row.p95_us), (200, 9000), "the lower middle value");
        assert_eq!(row.cells()[1..3], ["0.2", "9.0"]);
    }

    #[test]
    fn settings_from_the_fields() {
        assert_eq!(Settings::from_fields(f64::NAN, f64::NAN), Settings::default());
        assert_eq!(Settings::from_fields(20.0, 250.0), Settings { count: 20, interval_ms: 250 });
        assert_eq!(
            Settings::from_fields(0.0, 1.5),
            Settings { count: 1, interval_ms: MIN_INTERVAL_MS }
        );
        let huge = Settings::from_fields(1e12, -5.0);
        assert_eq!(huge, Settings { count: MAX_COUNT, interval_ms: MIN_INTERVAL_MS });
    }

    #[test]
    fn short_polling_keeps_its_schedule() {
        assert_eq!(next_tick(1000.0, 100, 1003.0), 1100.0);
        assert_eq!(next_tick(1000.0, 100, 1250.0), 1250.0);
    }

    #[test]
    fn bars_scale_to_the_longest() {
        assert_eq!(bars(&[300, 100_000, 50_000]), [1, BAR_MAX, BAR_MAX / 2]);
        assert_eq!(bars(&[0, 0, 0]), [1, 1, 1]);
    }

    #[test]
    fn the_status_lines() {
        assert_eq!(
            progress(Transport::ShortPolling, 3, 50),
            "Comparing: short polling, 3 of 50 messages answered"
        );
        assert!(done(Settings::default()).starts_with("Done: 50 messages"));
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_page_declares_the_header_row_and_the_rows() {
        let html = include_str!("../../index.html");
        let header: String =
            HEADERS.iter().map(|h| format!("<th scope=\"col\">{h}</th>")).collect();
        assert!(html.contains(&header), "index.html's Compare table lacks {header}");
        let bar = format!("id=\"compare-bar-0\" x=\"{BAR_X}\"");
        assert!(html.contains(&bar), "the chart's bars start at {BAR_X}");
        assert!(html.contains(&format!("viewBox=\"0 0 {CHART_WIDTH} ")), "the chart's width");
        for transport in Transport::ALL {
            let row = format!("<th scope=\"row\">{}</th>", transport.label());
            assert!(html.contains(&row), "index.html lacks {row}");
        }
    }
}
