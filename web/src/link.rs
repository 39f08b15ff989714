//! The connection's lifecycle, shared by the echo ([`crate::session`]) and the room
//! ([`crate::room`]): connecting, open, waiting to reconnect, stopped; the attempt counter with
//! its backoff and stable-connection reset; the online flag; the status and its line; and
//! which transport carries the connection: WebSocket, or long polling when WebSocket is blocked.
//!
//! [`Link`] decides *when* to open a connection and *over what*, never *what* to do on it: each
//! state machine keeps its own rules (queueing, resending, pairing, resuming) and asks the link
//! whether to open now. No DOM, no clock: time comes in as `now` (milliseconds).
//!
//! **Fallback.** Every connection starts as a WebSocket. A connection counts as open at its
//! first message (the echo's greeting, the room's `joined`), not at the socket's `open` event:
//! some proxies answer the upgrade and then pass nothing. A WebSocket that closes before its
//! first message, or has none [`FIRST_FRAME_MS`] after it was created, is taken as blocked,
//! and the same attempt goes on at once over long polling (no backoff, no log line): the
//! status line says `Open (long polling: WebSocket blocked)`.
//!
//! **Moving back.** While open over long polling, the page tries a WebSocket *beside* it (a
//! probe) [`PROBE_FIRST_MS`] after the fallback, then after twice as long each time a probe
//! fails, up to every [`PROBE_CAP_MS`]. A probe that gets its first message is ready; the state
//! machine moves onto it once nothing is in flight on the polling session ([`Link::switched`]),
//! so no reply is split across two connections; the polling session is then closed. Any
//! reconnect (after a polling connection dropped) also starts with WebSocket again.

use crate::backoff::{self, Rng};

/// How long a new WebSocket may take to deliver its first message before the page takes
/// WebSocket as blocked and falls back to long polling: 3 s, from its creation (so a
/// connection that hangs before opening counts too).
pub const FIRST_FRAME_MS: f64 = 3_000.0;
/// While on long polling, the first probe of WebSocket comes this long after the connection
/// opened; each failed probe doubles the wait.
pub const PROBE_FIRST_MS: f64 = 10_000.0;
/// The longest wait between two probes: 5 minutes.
pub const PROBE_CAP_MS: f64 = 300_000.0;
/// What the status line adds while the connection goes over long polling.
pub const FALLBACK_NOTE: &str = "long polling: WebSocket blocked";

/// Where the connection is; also the page's `data-status` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Open,
    /// Closed unexpectedly; a reconnect is scheduled.
    Reconnecting,
    /// Closed unexpectedly while the browser is offline; reconnects when it is back.
    Offline,
    /// Closed, and staying closed: the user asked, or retrying cannot help.
    Closed,
    /// The browser has no WebSocket API.
    Unsupported,
}

impl Status {
    /// A stable name, used as the page's `data-status` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Open => "open",
            Status::Reconnecting => "reconnecting",
            Status::Offline => "offline",
            Status::Closed => "closed",
            Status::Unsupported => "unsupported",
        }
    }
}

/// What carries a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// `wire::poll`: a session of long-polling GETs and POSTed batches.
    LongPolling,
}

/// The status line for `status`, shared by the echo and the room: `Closed (1006),
/// reconnecting in 3 s`, with ` · 2 queued` when messages wait.
pub fn status_line(
    status: Status,
    reconnect_at: Option<f64>,
    last_close: Option<&(u16, String)>,
    stopped_because: Option<&str>,
    queued: usize,
    now: f64,
) -> String {
    let closed = match last_close {
        Some((code, reason)) if reason.is_empty() => format!("Closed ({code})"),
        Some((code, reason)) => format!("Closed ({code} {reason})"),
        None => "Closed".to_owned(),
    };
    let mut text = match (status, reconnect_at) {
        (Status::Connecting, _) => "Connecting ...".to_owned(),
        (Status::Open, _) => "Open".to_owned(),
        (Status::Reconnecting, Some(at)) => {
            let seconds = ((at - now).max(0.0) / 1000.0).ceil() as u32;
            format!("{closed}, reconnecting in {seconds} s")
        }
        (Status::Offline, _) => format!("{closed}; offline, reconnecting when back online"),
        (Status::Closed, _) => match stopped_because {
            Some(why) => format!("{closed}; not reconnecting: {why}"),
            None => "Disconnected".to_owned(),
        },
        (Status::Unsupported, _) => "WebSocket not supported".to_owned(),
        (Status::Reconnecting, None) => closed,
    };
    if queued > 0 {
        text.push_str(&format!(" · {queued} queued"));
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Before the page started, or without WebSocket.
    Idle,
    /// A WebSocket is taken as blocked at `deadline` (never, over long polling).
    Connecting {
        via: Transport,
        deadline: f64,
    },
    Open {
        since: f64,
        via: Transport,
    },
    /// Reconnect at `at` (when online).
    Waiting {
        at: f64,
    },
    /// Not reconnecting (until the user asks, where the page lets them).
    Stopped,
}

/// A WebSocket tried beside a long-polling connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    None,
    /// Open one at this time.
    At(f64),
    /// One is under way; it has failed if it has no message by `deadline`.
    Running {
        deadline: f64,
    },
    /// It delivered its first message: ready to take over.
    Ready,
}

/// What has come due at a timer (see [`Link::on_timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Reconnect now, over [`Link::transport`] (always WebSocket).
    Open,
    /// The WebSocket being opened had no first message in time: open over long polling now
    /// (replacing it).
    FallBack,
    /// Open a WebSocket probe beside the long-polling connection.
    Probe,
    /// The probe had no first message in time: drop it (the next one is scheduled).
    DropProbe,
}

/// One connection's lifecycle.
#[derive(Debug, Clone)]
pub struct Link {
    state: State,
    supported: bool,
    online: bool,
    /// Failed connections in a row since the last stable one.
    attempt: u32,
    last_close: Option<(u16, String)>,
    /// Why reconnecting stopped, if it stopped for a reason other than the user.
    stopped_because: Option<&'static str>,
    probe: Probe,
    /// How long after the next long-polling open the first probe waits.
    probe_wait: f64,
    rng: Rng,
}

impl Link {
    /// A link whose reconnect delays come from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: State::Idle,
            supported: true,
            online: true,
            attempt: 0,
            last_close: None,
            stopped_because: None,
            probe: Probe::None,
            probe_wait: PROBE_FIRST_MS,
            rng: Rng::new(seed),
        }
    }

    /// The page started at `now`; returns whether to open the first connection.
    pub fn start(&mut self, supported: bool, now: f64) -> bool {
        self.supported = supported;
        if supported {
            self.open(now);
        }
        supported
    }

    /// A connection is being opened at `now`, over WebSocket (the caller opens it).
    pub fn open(&mut self, now: f64) {
        let deadline = now + FIRST_FRAME_MS;
        self.state = State::Connecting { via: Transport::WebSocket, deadline };
        self.stopped_because = None;
        self.probe = Probe::None;
    }

    /// The transport of the connection being opened or open.
    pub fn transport(&self) -> Transport {
        match self.state {
            State::Connecting { via, .. } | State::Open { via, .. } => via,
            _ => Transport::WebSocket,
        }
    }

    /// The connection delivered its first message at `now`: it is open.
    pub fn opened(&mut self, now: f64) {
        let via = self.transport();
        self.state = State::Open { since: now, via };
        self.probe = match via {
            Transport::WebSocket => {
                self.probe_wait = PROBE_FIRST_MS;
                Probe::None
            }
            Transport::LongPolling => Probe::At(now + self.probe_wait),
        };
    }

    /// The connection closed: if it was a WebSocket that never delivered a message, goes on
    /// over long polling and returns true (open it now, quietly). Otherwise the caller goes
    /// on with [`Link::closed`].
    pub fn fall_back(&mut self) -> bool {
        let blocked = matches!(self.state, State::Connecting { via: Transport::WebSocket, .. });
        if blocked {
            let deadline = f64::INFINITY;
            self.state = State::Connecting { via: Transport::LongPolling, deadline };
        }
        blocked
    }

    /// The user asked to connect: returns whether to open a connection now (counting afresh).
    pub fn connect(&mut self, now: f64) -> bool {
        let open = self.supported && matches!(self.state, State::Stopped | State::Waiting { .. });
        if open {
            self.attempt = 0;
            self.open(now);
        }
        open
    }

    /// The connection closed at `now` with `code` and `reason`: remembers them for the status
    /// line, and starts the backoff over if the connection had been stable. Then the caller
    /// either [`Link::stop`]s or [`Link::retry`]s. Returns whether a probe was under way or
    /// ready (the caller drops it).
    pub fn closed(&mut self, code: u16, reason: String, now: f64) -> bool {
        if let State::Open { since, .. } = self.state {
            if now - since >= backoff::STABLE_MS {
                self.attempt = 0;
            }
        }
        self.last_close = Some((code, reason));
        self.take_probe()
    }

    /// Schedules the next attempt after the backoff delay.
    pub fn retry(&mut self, now: f64) {
        let delay = self.rng.delay_ms(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Waiting { at: now + delay };
    }

    /// Stops reconnecting, for `why` (`None`: the user asked).
    pub fn stop(&mut self, why: Option<&'static str>) {
        self.state = State::Stopped;
        self.stopped_because = why;
    }

    /// The browser's `online` and `offline` events: returns whether to open a connection now.
    pub fn on_online(&mut self, online: bool, now: f64) -> bool {
        self.online = online;
        online && self.on_visible(now)
    }

    /// The tab became visible: returns whether to open a connection now (waiting, and online).
    pub fn on_visible(&mut self, now: f64) -> bool {
        let open = matches!(self.state, State::Waiting { .. }) && self.online;
        if open {
            self.open(now);
        }
        open
    }

    /// The time [`Link::wake_at`] asked for has come: what is due now.
    pub fn on_timer(&mut self, now: f64) -> Due {
        match (self.state, self.probe) {
            (State::Waiting { at }, _) if self.online && now >= at => {
                self.open(now);
                Due::Open
            }
            (State::Connecting { deadline, .. }, _) if now >= deadline => {
                self.fall_back();
                Due::FallBack
            }
            (State::Open { .. }, Probe::At(at)) if now >= at => {
                self.probe = Probe::Running { deadline: now + FIRST_FRAME_MS };
                Due::Probe
            }
            (State::Open { .. }, Probe::Running { deadline }) if now >= deadline => {
                self.probe_failed(now);
                Due::DropProbe
            }
            _ => Due::Nothing,
        }
    }

    /// The probe closed, or had nothing in time: the next one waits twice as long.
    pub fn probe_failed(&mut self, now: f64) {
        if matches!(self.probe, Probe::Running { .. }) {
            self.probe_wait = (self.probe_wait * 2.0).min(PROBE_CAP_MS);
            self.probe = Probe::At(now + self.probe_wait);
        }
    }

    /// The probe delivered its first message: returns whether one was under way (if not, the
    /// caller drops it).
    pub fn probe_ready(&mut self) -> bool {
        let running = matches!(self.probe, Probe::Running { .. });
        if running {
            self.probe = Probe::Ready;
        }
        running
    }

    /// Whether a ready probe waits to take over.
    pub fn probe_is_ready(&self) -> bool {
        self.probe == Probe::Ready
    }

    /// Forgets the probe; returns whether there was one under way or ready.
    fn take_probe(&mut self) -> bool {
        let had = matches!(self.probe, Probe::Running { .. } | Probe::Ready);
        self.probe = Probe::None;
        had
    }

    /// The ready probe took over at `now`: the connection is a WebSocket, open.
    pub fn switched(&mut self, now: f64) {
        self.state = State::Open { since: now, via: Transport::WebSocket };
        self.probe = Probe::None;
        self.probe_wait = PROBE_FIRST_MS;
    }

    /// When the driver should deliver a timer: the reconnect time (and meanwhile often enough
    /// to count the seconds down), the WebSocket's first-message deadline, or the probe's.
    pub fn wake_at(&self, now: f64) -> Option<f64> {
        match (self.state, self.probe) {
            (State::Waiting { at }, _) if self.online => Some(at.min(now + 250.0)),
            (State::Connecting { deadline, .. }, _) if deadline.is_finite() => Some(deadline),
            (State::Open { .. }, Probe::At(at) | Probe::Running { deadline: at }) => Some(at),
            _ => None,
        }
    }

    /// When the next attempt is due, while one is scheduled.
    pub fn reconnect_at(&self) -> Option<f64> {
        match self.state {
            State::Waiting { at } => Some(at),
            _ => None,
        }
    }

    /// Whether the browser has the WebSocket API.
    pub fn supported(&self) -> bool {
        self.supported
    }

    /// Whether the connection is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether a connection exists (connecting or open): a close event is expected for it.
    pub fn connected(&self) -> bool {
        matches!(self.state, State::Connecting { .. } | State::Open { .. })
    }

    /// Whether a reconnect is scheduled.
    pub fn waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// Where the connection is (an open one counts as [`Status::Open`]).
    pub fn status(&self) -> Status {
        match self.state {
            _ if !self.supported => Status::Unsupported,
            State::Idle | State::Connecting { .. } => Status::Connecting,
            State::Open { .. } => Status::Open,
            State::Waiting { .. } if !self.online => Status::Offline,
            State::Waiting { .. } => Status::Reconnecting,
            State::Stopped => Status::Closed,
        }
    }

    /// The status line for `status` (the link's own, or the caller's refinement of it), with
    /// [`FALLBACK_NOTE`] while connecting or open over long polling.
    pub fn status_line(&self, status: Status, queued: usize, now: f64) -> String {
        let last_close = self.last_close.as_ref();
        let text =
            status_line(status, self.reconnect_at(), last_close, self.stopped_because, queued, now);
        let polling = self.transport() == Transport::LongPolling && self.connected();
        // After the status's first word: `Open (long polling: …)`, `Connecting (…) ...`.
        let word = match status {
            Status::Open if polling => "Open",
            Status::Connecting if polling => "Connecting",
            _ => return text,
        };
        let rest = text.strip_prefix(word).unwrap_or_default();
        format!("{word} ({FALLBACK_NOTE}){rest}")
    }

    /// Moves a scheduled reconnect to `at` (tests of the countdown).
    #[cfg(test)]
    pub(crate) fn wait_until(&mut self, at: f64) {
        self.state = State::Waiting { at };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn started() -> Link {
        let mut link = Link::new(1);
        assert!(link.start(true, 0.0));
        link.opened(0.0);
        link
    }

    /// A link that fell back to long polling at 0 and opened over it at 10.
    fn polling() -> Link {
        let mut link = Link::new(1);
        assert!(link.start(true, 0.0));
        assert!(link.fall_back());
        assert_eq!(link.transport(), Transport::LongPolling);
        link.opened(10.0);
        link
    }

    #[test]
    fn a_close_waits_for_the_backoff_then_the_timer_opens() {
        let mut link = started();
        link.closed(1006, String::new(), 10.0);
        link.retry(10.0);
        assert_eq!(link.status(), Status::Reconnecting);
        let at = link.reconnect_at().expect("scheduled");
        assert!(at - 10.0 < backoff::BASE_MS);
        assert_eq!(link.on_timer(at - 1.0), Due::Nothing);
        assert_eq!(link.on_timer(at), Due::Open);
        assert_eq!(link.status(), Status::Connecting);
        assert_eq!(link.transport(), Transport::WebSocket);
        assert_eq!(link.on_timer(at + 1.0), Due::Nothing, "once");
    }

    #[test]
    fn offline_holds_retries_and_online_opens_at_once() {
        let mut link = started();
        assert!(!link.on_online(false, 1.0));
        link.closed(1006, String::new(), 1.0);
        link.retry(1.0);
        assert_eq!(link.status(), Status::Offline);
        assert_eq!(link.wake_at(1.0), None);
        assert!(!link.on_visible(1.0));
        assert_eq!(link.on_timer(1e9), Due::Nothing);
        assert!(link.on_online(true, 2.0));
    }

    #[test]
    fn a_stopped_link_opens_only_when_asked() {
        let mut link = started();
        link.closed(1008, "policy".into(), 1.0);
        link.stop(Some("retrying cannot help"));
        assert_eq!(link.status(), Status::Closed);
        assert!(!link.on_visible(2.0) && !link.on_online(true, 2.0));
        assert_eq!(link.on_timer(1e9), Due::Nothing);
        assert_eq!(
            link.status_line(link.status(), 0, 2.0),
            "Closed (1008 policy); not reconnecting: retrying cannot help"
        );
        assert!(link.connect(3.0));
        assert_eq!(link.status(), Status::Connecting);
    }

    #[test]
    fn without_websocket_nothing_opens() {
        let mut link = Link::new(1);
        assert!(!link.start(false, 0.0));
        assert_eq!(link.status(), Status::Unsupported);
        assert!(!link.connect(1.0));
    }

    #[test]
    fn a_websocket_that_closes_before_its_first_message_falls_back_at_once() {
        let mut link = Link::new(1);
        link.start(true, 0.0);
        assert_eq!(link.transport(), Transport::WebSocket);
        assert_eq!(link.wake_at(0.0), Some(FIRST_FRAME_MS), "the first-message deadline");
        assert!(link.fall_back());
        assert_eq!(link.transport(), Transport::LongPolling);
        assert_eq!(link.status(), Status::Connecting);
        assert_eq!(link.wake_at(1.0), None, "no deadline over long polling");
        assert_eq!(
            link.status_line(link.status(), 0, 1.0),
            format!("Connecting ({FALLBACK_NOTE}) ...")
        );
        // Long polling failing too is an ordinary failed attempt: no second fallback.
        assert!(!link.fall_back());
        link.opened(5.0);
        assert_eq!(
            link.status_line(Status::Open, 0, 6.0),
            "Open (long polling: WebSocket blocked)"
        );
        // An open connection that closes does not fall back either: it reconnects, over
        // WebSocket first.
        assert!(!link.fall_back());
        link.closed(1006, String::new(), 7.0);
        link.retry(7.0);
        let at = link.reconnect_at().expect("scheduled");
        assert_eq!(link.on_timer(at), Due::Open);
        assert_eq!(link.transport(), Transport::WebSocket);
    }

    #[test]
    fn a_websocket_silent_past_the_deadline_falls_back() {
        let mut link = Link::new(1);
        link.start(true, 100.0);
        assert_eq!(link.on_timer(100.0 + FIRST_FRAME_MS - 1.0), Due::Nothing);
        assert_eq!(link.on_timer(100.0 + FIRST_FRAME_MS), Due::FallBack);
        assert_eq!(link.transport(), Transport::LongPolling);
        assert_eq!(link.on_timer(1e9), Due::Nothing, "long polling has no deadline");
        // A WebSocket that delivers in time stays.
        let mut link = Link::new(1);
        link.start(true, 0.0);
        link.opened(FIRST_FRAME_MS - 1.0);
        assert_eq!(link.on_timer(1e9), Due::Nothing);
        assert_eq!(link.status_line(link.status(), 0, 1e9), "Open");
    }

    #[test]
    fn probes_come_later_and_further_apart_after_each_failure() {
        let mut link = polling();
        assert_eq!(link.wake_at(10.0), Some(10.0 + PROBE_FIRST_MS));
        let mut now = 10.0 + PROBE_FIRST_MS;
        assert_eq!(link.on_timer(now - 1.0), Due::Nothing);
        let mut waits = Vec::new();
        for round in 0..8 {
            assert_eq!(link.on_timer(now), Due::Probe, "round {round}");
            assert!(!link.probe_is_ready());
            if round % 2 == 0 {
                // The probe closes before its first message.
                link.probe_failed(now + 5.0);
                now += 5.0;
            } else {
                // The probe stays silent: the deadline drops it.
                assert_eq!(link.wake_at(now), Some(now + FIRST_FRAME_MS));
                now += FIRST_FRAME_MS;
                assert_eq!(link.on_timer(now), Due::DropProbe);
            }
            let next = link.wake_at(now).expect("the next probe");
            waits.push((next - now) / 1000.0);
            now = next;
        }
        assert_eq!(waits, [20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0, 300.0]);
        assert_eq!(link.status(), Status::Open, "the polling connection is untouched");
    }

    #[test]
    fn a_ready_probe_takes_over_when_the_caller_says_and_then_no_more_probes() {
        let mut link = polling();
        let at = 10.0 + PROBE_FIRST_MS;
        assert_eq!(link.on_timer(at), Due::Probe);
        assert!(link.probe_ready());
        assert!(link.probe_is_ready());
        assert_eq!(link.wake_at(at), None, "nothing to time while it waits to take over");
        assert!(!link.probe_ready(), "once");
        link.switched(at + 1.0);
        assert_eq!(link.transport(), Transport::WebSocket);
        assert_eq!(link.status_line(link.status(), 0, at + 2.0), "Open");
        assert_eq!(link.wake_at(at + 2.0), None);
        assert!(!link.probe_is_ready());
        // A later fallback probes after the first wait again.
        link.closed(1006, String::new(), at + 3.0);
        link.retry(at + 3.0);
        assert!(link.on_visible(at + 3.0));
        assert!(link.fall_back());
        link.opened(at + 4.0);
        assert_eq!(link.wake_at(at + 4.0), Some(at + 4.0 + PROBE_FIRST_MS));
    }

    #[test]
    fn a_close_forgets_the_probe_and_a_stale_one_is_refused() {
        let mut link = polling();
        assert!(!link.probe_ready(), "none was asked for");
        let at = 10.0 + PROBE_FIRST_MS;
        link.on_timer(at);
        assert!(link.closed(1006, String::new(), at + 1.0), "one was under way");
        link.retry(at + 1.0);
        assert!(!link.probe_ready());
        assert!(!link.probe_is_ready());
    }
}
