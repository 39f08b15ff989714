//! The connection's lifecycle, shared by the echo ([`crate::session`]) and the room
//! ([`crate::room`]): connecting, open, waiting to reconnect, stopped; the attempt counter with
//! its backoff and stable-connection reset; the online flag; the status and its line.
//!
//! [`Link`] decides *when* to open a socket, never *what* to do on it: each state machine keeps
//! its own rules (queueing, resending, pairing, resuming) and asks the link whether to open now.
//! No DOM, no clock: time comes in as `now` (milliseconds).

use crate::backoff::{self, Rng};

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
    Connecting,
    Open {
        since: f64,
    },
    /// Reconnect at `at` (when online).
    Waiting {
        at: f64,
    },
    /// Not reconnecting (until the user asks, where the page lets them).
    Stopped,
}

/// One socket's lifecycle.
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
            rng: Rng::new(seed),
        }
    }

    /// The page started; returns whether to open the first socket.
    pub fn start(&mut self, supported: bool) -> bool {
        self.supported = supported;
        if supported {
            self.open();
        }
        supported
    }

    /// A socket is being opened (the caller opens it).
    pub fn open(&mut self) {
        self.state = State::Connecting;
        self.stopped_because = None;
    }

    /// The socket opened at `now`.
    pub fn opened(&mut self, now: f64) {
        self.state = State::Open { since: now };
    }

    /// The user asked to connect: returns whether to open a socket now (counting afresh).
    pub fn connect(&mut self) -> bool {
        let open = self.supported && matches!(self.state, State::Stopped | State::Waiting { .. });
        if open {
            self.attempt = 0;
            self.open();
        }
        open
    }

    /// The socket closed at `now` with `code` and `reason`: remembers them for the status
    /// line, and starts the backoff over if the connection had been stable. Then the caller
    /// either [`Link::stop`]s or [`Link::retry`]s.
    pub fn closed(&mut self, code: u16, reason: String, now: f64) {
        if let State::Open { since } = self.state {
            if now - since >= backoff::STABLE_MS {
                self.attempt = 0;
            }
        }
        self.last_close = Some((code, reason));
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

    /// The browser's `online` and `offline` events: returns whether to open a socket now.
    pub fn on_online(&mut self, online: bool) -> bool {
        self.online = online;
        online && self.on_visible()
    }

    /// The tab became visible: returns whether to open a socket now (waiting, and online).
    pub fn on_visible(&mut self) -> bool {
        let open = matches!(self.state, State::Waiting { .. }) && self.online;
        if open {
            self.open();
        }
        open
    }

    /// The time [`Link::wake_at`] asked for has come: returns whether to open a socket now.
    pub fn on_timer(&mut self, now: f64) -> bool {
        let open = matches!(self.state, State::Waiting { at } if self.online && now >= at);
        if open {
            self.open();
        }
        open
    }

    /// When the driver should deliver a timer: the reconnect time, and meanwhile often enough
    /// to count the seconds down.
    pub fn wake_at(&self, now: f64) -> Option<f64> {
        match self.state {
            State::Waiting { at } if self.online => Some(at.min(now + 250.0)),
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

    /// Whether the socket is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether a socket exists (connecting or open): a close event is expected for it.
    pub fn connected(&self) -> bool {
        matches!(self.state, State::Connecting | State::Open { .. })
    }

    /// Whether a reconnect is scheduled.
    pub fn waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// Where the connection is (an open socket counts as [`Status::Open`]).
    pub fn status(&self) -> Status {
        match self.state {
            _ if !self.supported => Status::Unsupported,
            State::Idle | State::Connecting => Status::Connecting,
            State::Open { .. } => Status::Open,
            State::Waiting { .. } if !self.online => Status::Offline,
            State::Waiting { .. } => Status::Reconnecting,
            State::Stopped => Status::Closed,
        }
    }

    /// The status line for `status` (the link's own, or the caller's refinement of it).
    pub fn status_line(&self, status: Status, queued: usize, now: f64) -> String {
        let last_close = self.last_close.as_ref();
        status_line(status, self.reconnect_at(), last_close, self.stopped_because, queued, now)
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
        assert!(link.start(true));
        link.opened(0.0);
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
        assert!(!link.on_timer(at - 1.0));
        assert!(link.on_timer(at));
        assert_eq!(link.status(), Status::Connecting);
        assert!(!link.on_timer(at + 1.0), "once");
    }

    #[test]
    fn offline_holds_retries_and_online_opens_at_once() {
        let mut link = started();
        assert!(!link.on_online(false));
        link.closed(1006, String::new(), 1.0);
        link.retry(1.0);
        assert_eq!(link.status(), Status::Offline);
        assert_eq!(link.wake_at(1.0), None);
        assert!(!link.on_visible());
        assert!(!link.on_timer(1e9));
        assert!(link.on_online(true));
    }

    #[test]
    fn a_stopped_link_opens_only_when_asked() {
        let mut link = started();
        link.closed(1008, "policy".into(), 1.0);
        link.stop(Some("retrying cannot help"));
        assert_eq!(link.status(), Status::Closed);
        assert!(!link.on_visible() && !link.on_online(true) && !link.on_timer(1e9));
        assert_eq!(
            link.status_line(link.status(), 0, 2.0),
            "Closed (1008 policy); not reconnecting: retrying cannot help"
        );
        assert!(link.connect());
        assert_eq!(link.status(), Status::Connecting);
    }

    #[test]
    fn without_websocket_nothing_opens() {
        let mut link = Link::new(1);
        assert!(!link.start(false));
        assert_eq!(link.status(), Status::Unsupported);
        assert!(!link.connect());
    }
}
