//! The conversation's state machine, apart from the DOM and the socket: what each event means,
//! what to log, when to reconnect, what to send and resend, and how to pair replies.
//!
//! [`Session::handle`] takes one [`Input`] and the current time (milliseconds) and returns the
//! [`Command`]s for the driver to carry out; [`Session::view`] says what the page shows. Time and
//! randomness come in from outside, so every rule here is tested natively and in the browser.

use std::collections::VecDeque;

use wire::close;

use crate::link::{Due, Link};
pub use crate::link::{Status, Transport};

/// The page's wording. The tutorial's lines are its own, exactly; the end-to-end tests assert
/// against these.
pub mod lines {
    pub const SUPPORTED: &str = "WebSocket is supported by your browser.";
    pub const UNSUPPORTED: &str = "WebSocket not supported by your browser.";
    pub const OPENED: &str = "Connection is opened ...";
    /// Followed by the message's text.
    pub const RECEIVED: &str = "Message is received: ";
    pub const CLOSED: &str = "Connection is closed ...";
    /// Followed by the message's text (typed in the composer).
    pub const SENT: &str = "Message is sent: ";
    /// Followed by the text of a message sent before a disconnect and never answered.
    pub const RESENT: &str = "Message is sent again: ";
    /// Followed by the text of a message typed while disconnected.
    pub const QUEUED: &str = "Message is queued: ";

    /// The line for a received text message.
    pub fn received(text: &str) -> String {
        format!("{RECEIVED}{text}")
    }
}

/// Most messages waiting to be sent (typed while disconnected, or to be resent); the line that
/// refuses one more names it (a test keeps the two equal).
pub const QUEUE_LIMIT: usize = 100;
/// How many round-trip times the chart shows.
pub const RTT_HISTORY: usize = 30;

/// Something that happened: to the socket, in the browser, or by the user's hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The page started; the browser has (or lacks) the WebSocket API.
    Start { supported: bool },
    /// The connection is open: its first message has arrived (and comes next).
    Opened,
    /// A text message arrived.
    Received(String),
    /// A binary message arrived (the server never sends one); its length in bytes.
    ReceivedBinary(usize),
    /// The socket closed, cleanly or not (or never opened).
    Closed { code: u16, reason: String, clean: bool },
    /// The user sent this text from the composer.
    Compose(String),
    /// The user pressed Disconnect.
    Disconnect,
    /// The user pressed Connect.
    Connect,
    /// The browser's `online` and `offline` events.
    Online(bool),
    /// The tab became visible again.
    Visible,
    /// The time [`Session::wake_at`] asked for has come.
    Timer,
    /// The WebSocket probe ([`Command::Probe`]) delivered the server's greeting (which the
    /// driver keeps: the conversation goes on, it does not start again).
    ProbeReady,
    /// The probe closed before its greeting.
    ProbeFailed,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a new connection over this transport (replacing any old one).
    Open(Transport),
    /// Send this text on the open connection.
    Send(String),
    /// Close the open connection with 1000 (the user asked).
    Close,
    /// Open a WebSocket beside the long-polling connection, to see whether WebSocket gets
    /// through now; report [`Input::ProbeReady`] or [`Input::ProbeFailed`].
    Probe,
    /// Close the probe and forget it.
    DropProbe,
    /// Move onto the ready probe: it becomes the connection, and the long-polling session is
    /// closed (nothing is in flight on it).
    Switch,
    /// Add a line to the log.
    Log(Line),
}

/// How a log line is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sent,
    Received,
    System,
}

impl Kind {
    /// The line's class in the page.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sent => "sent",
            Kind::Received => "received",
            Kind::System => "system",
        }
    }
}

/// One log line; a reply carries its round-trip time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: Kind,
    pub text: String,
    pub rtt_ms: Option<u32>,
}

impl Line {
    fn new(kind: Kind, text: impl Into<String>) -> Self {
        Self { kind, text: text.into(), rtt_ms: None }
    }
}

/// What a close code means for reconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseClass {
    /// Going away, dropped, restarting...: reconnect with backoff.
    Retry,
    /// The server refused the oldest unanswered message (1009 too big, 1007 bad text, 1003
    /// binary): drop it, then reconnect, so one bad message cannot cause a reconnect loop.
    BlameMessage,
    /// Retrying cannot help (1008 policy, 1002 protocol error, 1010 extension): stop.
    Stop,
}

/// How the page treats a close code.
pub fn classify(code: u16) -> CloseClass {
    match code {
        close::MESSAGE_TOO_BIG | close::INVALID_PAYLOAD | close::UNSUPPORTED_DATA => {
            CloseClass::BlameMessage
        }
        close::POLICY_VIOLATION | close::PROTOCOL_ERROR | close::MANDATORY_EXTENSION => {
            CloseClass::Stop
        }
        _ => CloseClass::Retry,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outgoing {
    text: String,
    resend: bool,
    /// Not logged when sent (the tutorial's automatic `Hello there!`).
    quiet: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct InFlight {
    text: String,
    sent_at: f64,
    quiet: bool,
}

/// What the page shows besides the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub status: Status,
    /// The status line, e.g. `Closed (1006), reconnecting in 3 s · 2 queued`.
    pub status_text: String,
    /// Whether the toggle button offers Disconnect (else Connect).
    pub can_disconnect: bool,
    /// Whether the composer is usable (it is while disconnected too: messages queue).
    pub composer_enabled: bool,
    /// The last round-trip times, oldest first, in milliseconds.
    pub rtts: Vec<u32>,
}

/// The conversation.
#[derive(Debug, Clone)]
pub struct Session {
    link: Link,
    /// The server's greeting came on this connection (the first message is not a reply).
    greeted: bool,
    greeting_sent: bool,
    /// "Connection is closed ..." was logged since the last open: failed retries add no line.
    close_logged: bool,
    user_closing: bool,
    outbox: VecDeque<Outgoing>,
    in_flight: VecDeque<InFlight>,
    rtts: Vec<u32>,
    /// The server's message limit, once learned; see [`learned_limit`].
    limit: Option<usize>,
}

/// The limit named by a 1009 close's reason (`wire::close::reason_too_big`), if it names one.
///
/// The page cannot know a server's `--max-message-size` in advance, so it does not refuse
/// anything by the compiled-in default: it sends, and when the server closes with 1009 its
/// reason names the limit in force. From then on the page checks against that learned limit
/// and refuses a bigger message before sending it (until the page is reloaded: a server
/// restarted with a bigger limit is learned again only by a fresh page).
pub fn learned_limit(reason: &str) -> Option<usize> {
    let rest = reason.strip_prefix(close::REASON_TOO_BIG_PREFIX)?;
    rest.strip_suffix(" bytes")?.parse().ok()
}

/// The line for a message refused before sending because it is over the learned limit.
pub fn over_limit_line(size: usize, limit: usize) -> String {
    format!("Message is not sent: {size} bytes is over the server's limit of {limit} bytes")
}

impl Session {
    /// A session whose reconnect delays come from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            link: Link::new(seed),
            greeted: false,
            greeting_sent: false,
            close_logged: false,
            user_closing: false,
            outbox: VecDeque::new(),
            in_flight: VecDeque::new(),
            rtts: Vec::new(),
            limit: None,
        }
    }

    /// Applies one input at time `now` (ms) and returns what to do.
    pub fn handle(&mut self, input: Input, now: f64) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Start { supported } => {
                if self.link.start(supported, now) {
                    out.push(log(Kind::System, lines::SUPPORTED));
                    self.open(&mut out);
                } else {
                    out.push(log(Kind::System, lines::UNSUPPORTED));
                }
            }
            Input::Opened => {
                out.push(log(Kind::System, lines::OPENED));
                self.close_logged = false;
                self.link.opened(now);
                self.greeted = false;
                if !self.greeting_sent {
                    self.greeting_sent = true;
                    let hello =
                        Outgoing { text: wire::HELLO.to_owned(), resend: false, quiet: true };
                    self.outbox.push_front(hello);
                }
                while let Some(message) = self.outbox.pop_front() {
                    self.send(message, now, &mut out);
                }
            }
            Input::Received(text) => self.received(text, now, &mut out),
            Input::ReceivedBinary(len) => {
                let text = format!("<{len} bytes of binary data>");
                out.push(log(Kind::Received, lines::received(&text)));
            }
            Input::Closed { code, reason, .. } => self.closed(code, reason, now, &mut out),
            Input::Compose(text) => self.compose(text, now, &mut out),
            Input::Disconnect => {
                if self.link.connected() {
                    self.user_closing = true;
                    out.push(Command::Close);
                } else if self.link.waiting() {
                    self.link.stop(None);
                }
            }
            Input::Connect => {
                if self.link.connect(now) {
                    self.open(&mut out);
                }
            }
            Input::Online(online) => {
                if self.link.on_online(online, now) {
                    self.open(&mut out);
                }
            }
            Input::Visible => {
                if self.link.on_visible(now) {
                    self.open(&mut out);
                }
            }
            Input::Timer => match self.link.on_timer(now) {
                Due::Open | Due::FallBack => self.open(&mut out),
                Due::Probe => out.push(Command::Probe),
                Due::DropProbe => out.push(Command::DropProbe),
                Due::Nothing => {}
            },
            Input::ProbeReady => {
                if self.link.probe_ready() {
                    self.switch_when_idle(now, &mut out);
                } else {
                    out.push(Command::DropProbe);
                }
            }
            Input::ProbeFailed => self.link.probe_failed(now),
        }
        out
    }

    /// When the driver should deliver [`Input::Timer`]: the reconnect time, and meanwhile
    /// often enough to count the seconds down.
    pub fn wake_at(&self, now: f64) -> Option<f64> {
        self.link.wake_at(now)
    }

    /// What the page shows at time `now`.
    pub fn view(&self, now: f64) -> View {
        let status = self.status();
        View {
            status,
            status_text: self.link.status_line(status, self.outbox.len(), now),
            can_disconnect: self.link.connected() || self.link.waiting(),
            composer_enabled: self.link.supported(),
            rtts: self.rtts.clone(),
        }
    }

    /// Where the connection is.
    pub fn status(&self) -> Status {
        self.link.status()
    }

    /// Messages waiting to be sent.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Opens a connection (the link has just said to, and over what).
    fn open(&mut self, out: &mut Vec<Command>) {
        self.user_closing = false;
        out.push(Command::Open(self.link.transport()));
    }

    /// Moves onto a ready probe once every message sent has its reply, so that no reply is
    /// left on the old connection and the pairing of replies stays in order.
    fn switch_when_idle(&mut self, now: f64, out: &mut Vec<Command>) {
        if self.link.probe_is_ready() && self.in_flight.is_empty() {
            self.link.switched(now);
            out.push(Command::Switch);
        }
    }

    fn send(&mut self, message: Outgoing, now: f64, out: &mut Vec<Command>) {
        if !message.quiet {
            let prefix = if message.resend { lines::RESENT } else { lines::SENT };
            out.push(log(Kind::Sent, format!("{prefix}{}", message.text)));
        }
        out.push(Command::Send(message.text.clone()));
        self.in_flight.push_back(InFlight {
            text: message.text,
            sent_at: now,
            quiet: message.quiet,
        });
    }

    fn received(&mut self, text: String, now: f64, out: &mut Vec<Command>) {
        // The first message on each connection is the server's greeting, not a reply.
        if self.link.is_open() && !self.greeted {
            self.greeted = true;
            out.push(log(Kind::Received, lines::received(&text)));
            return;
        }
        let mut line = Line::new(Kind::Received, lines::received(&text));
        // Replies come back in order: the oldest unanswered message is the one answered.
        if let Some(sent) = self.in_flight.pop_front() {
            let rtt = (now - sent.sent_at).max(0.0).round() as u32;
            line.rtt_ms = Some(rtt);
            if self.rtts.len() == RTT_HISTORY {
                self.rtts.remove(0);
            }
            self.rtts.push(rtt);
        }
        out.push(Command::Log(line));
        self.switch_when_idle(now, out);
    }

    fn compose(&mut self, text: String, now: f64, out: &mut Vec<Command>) {
        if text.is_empty() || !self.link.supported() {
            return;
        }
        if let Some(limit) = self.limit.filter(|limit| text.len() > *limit) {
            out.push(log(Kind::System, over_limit_line(text.len(), limit)));
            return;
        }
        let message = Outgoing { text, resend: false, quiet: false };
        if self.link.is_open() {
            self.send(message, now, out);
        } else if self.outbox.len() >= QUEUE_LIMIT {
            let why = "Message is not queued: 100 messages are already waiting";
            out.push(log(Kind::System, why));
        } else {
            out.push(log(Kind::Sent, format!("{}{}", lines::QUEUED, message.text)));
            self.outbox.push_back(message);
        }
    }

    fn closed(&mut self, code: u16, reason: String, now: f64, out: &mut Vec<Command>) {
        if !self.link.connected() {
            return;
        }
        // A WebSocket that never delivered the greeting: blocked; the same attempt goes on
        // over long polling, with no line (nothing was sent on it).
        if !self.user_closing && self.link.fall_back() {
            return self.open(out);
        }
        if !self.close_logged {
            self.close_logged = true;
            out.push(log(Kind::System, lines::CLOSED));
        }
        // Sent but never answered: first in line for the next connection, in order.
        for sent in self.in_flight.drain(..).rev() {
            let resend = Outgoing { text: sent.text, resend: true, quiet: false };
            self.outbox.push_front(resend);
        }
        let class = classify(code);
        let shown = if reason.is_empty() { code.to_string() } else { format!("{code} {reason}") };
        // A 1009 names the limit: the blamed message is the first one over it (and any other
        // over it would only be refused again). Otherwise: the oldest.
        let limit = (code == close::MESSAGE_TOO_BIG).then(|| learned_limit(&reason)).flatten();
        if self.link.closed(code, reason, now) {
            out.push(Command::DropProbe);
        }
        if self.user_closing {
            self.link.stop(None);
            return;
        }
        match class {
            CloseClass::Stop => {
                let why = format!("Not reconnecting: the server closed with {shown}");
                out.push(log(Kind::System, why));
                self.link.stop(Some("retrying cannot help"));
                return;
            }
            CloseClass::BlameMessage => {
                self.limit = limit.or(self.limit);
                let mut blamed = VecDeque::new();
                match limit {
                    Some(limit) if self.outbox.iter().any(|m| m.text.len() > limit) => {
                        (blamed, self.outbox) =
                            self.outbox.drain(..).partition(|m| m.text.len() > limit);
                    }
                    _ => blamed.extend(self.outbox.pop_front()),
                }
                for dropped in blamed {
                    let text = preview(&dropped.text);
                    let why =
                        format!("Message is dropped, the server refused it ({shown}): {text}");
                    out.push(log(Kind::System, why));
                }
            }
            CloseClass::Retry => {}
        }
        self.link.retry(now);
    }
}

fn log(kind: Kind, text: impl Into<String>) -> Command {
    Command::Log(Line::new(kind, text))
}

/// At most 80 characters of a message, for a line about it.
pub(crate) fn preview(text: &str) -> String {
    let mut shown: String = text.chars().take(80).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::{self, Rng};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The log lines among `commands`.
    fn logged(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(line) => Some(line.text.clone()),
                _ => None,
            })
            .collect()
    }

    fn sent(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Send(text) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    const WS: Transport = Transport::WebSocket;
    const POLLING: Transport = Transport::LongPolling;

    /// A reconnect attempt that fails on both transports at `now`: the WebSocket closes before
    /// its greeting (the same attempt goes on over long polling), then long polling fails too.
    /// Returns what the second close gave.
    fn fail_attempt(session: &mut Session, now: f64) -> Vec<Command> {
        let out = session.handle(closed(close::ABNORMAL), now);
        assert_eq!(out, [Command::Open(POLLING)], "falls back at once, quietly");
        session.handle(closed(close::ABNORMAL), now)
    }

    fn closed(code: u16) -> Input {
        Input::Closed { code, reason: String::new(), clean: false }
    }

    /// A session that has started, opened, and been greeted, at t = 0.
    fn open_session() -> Session {
        let mut session = Session::new(1);
        session.handle(Input::Start { supported: true }, 0.0);
        session.handle(Input::Opened, 0.0);
        session.handle(Input::Received(wire::WELCOME.into()), 1.0);
        session.handle(Input::Received(wire::reply(wire::HELLO)), 2.0);
        session
    }

    #[test]
    fn a_normal_conversation_reads_like_the_tutorial() {
        let mut session = Session::new(1);
        let mut commands = Vec::new();
        for (input, at) in [
            (Input::Start { supported: true }, 0.0),
            (Input::Opened, 10.0),
            (Input::Received(wire::WELCOME.into()), 11.0),
            (Input::Received(wire::reply(wire::HELLO)), 13.0),
        ] {
            commands.extend(session.handle(input, at));
        }
        assert_eq!(
            logged(&commands),
            [
                "WebSocket is supported by your browser.",
                "Connection is opened ...",
                "Message is received: Welcome!",
                "Message is received: HELLO THERE!",
            ]
        );
        assert_eq!(sent(&commands), [wire::HELLO]);
        assert_eq!(commands[1], Command::Open(WS));
        assert_eq!(session.status(), Status::Open);
        assert_eq!(session.view(13.0).rtts, [3], "Hello's reply is paired with it");
    }

    #[test]
    fn replies_are_paired_in_order_with_their_round_trip_times() {
        let mut session = open_session();
        let mut out = session.handle(Input::Compose("one".into()), 100.0);
        out.extend(session.handle(Input::Compose("two".into()), 105.0));
        assert_eq!(logged(&out), ["Message is sent: one", "Message is sent: two"]);
        assert_eq!(sent(&out), ["one", "two"]);
        let first = session.handle(Input::Received("ONE".into()), 112.0);
        let second = session.handle(Input::Received("TWO".into()), 140.0);
        let rtt = |out: &[Command]| match &out[0] {
            Command::Log(line) => (line.kind, line.rtt_ms),
            other => panic!("{other:?}"),
        };
        assert_eq!(rtt(&first), (Kind::Received, Some(12)));
        assert_eq!(rtt(&second), (Kind::Received, Some(35)));
        assert_eq!(session.view(140.0).rtts, [2, 12, 35]);
    }

    #[test]
    fn the_chart_keeps_the_last_rtts_only() {
        let mut session = open_session();
        for i in 0..(RTT_HISTORY + 5) {
            let at = 1000.0 * i as f64;
            session.handle(Input::Compose("x".into()), at);
            session.handle(Input::Received("X".into()), at + 7.0);
        }
        let rtts = session.view(0.0).rtts;
        assert_eq!(rtts.len(), RTT_HISTORY);
        assert!(rtts.iter().all(|rtt| *rtt == 7));
    }

    #[test]
    fn an_unexpected_close_schedules_a_reconnect_within_the_first_window() {
        let mut session = open_session();
        let out = session.handle(closed(close::GOING_AWAY), 1_000.0);
        assert_eq!(logged(&out), [lines::CLOSED]);
        assert_eq!(session.status(), Status::Reconnecting);
        let at = session.wake_at(1_000.0).expect("a wake-up");
        assert!(at <= 1_250.0, "counts down at least every 250 ms");
        let view = session.view(1_000.0);
        assert!(
            view.status_text.starts_with("Closed (1001), reconnecting in "),
            "{}",
            view.status_text
        );
        assert!(view.can_disconnect);
        // Within the first window (1 s), the timer opens a new socket.
        assert_eq!(session.handle(Input::Timer, 2_000.0), [Command::Open(WS)]);
        assert_eq!(session.status(), Status::Connecting);
    }

    #[test]
    fn the_backoff_grows_with_failures_and_resets_after_a_stable_connection() {
        let mut session = open_session();
        let mut now = 0.0;
        let mut delays = Vec::new();
        session.handle(closed(close::ABNORMAL), now);
        for _ in 0..6 {
            let Some(at) = session.link.reconnect_at() else { panic!("waiting") };
            delays.push((at - now).round() as u32);
            now = at;
            assert_eq!(session.handle(Input::Timer, now), [Command::Open(WS)]);
            fail_attempt(&mut session, now);
        }
        // The same as the generator's own schedule for this seed: one window per failure.
        let mut rng = Rng::new(1);
        let expected: Vec<u32> =
            (0..6).map(|attempt| rng.delay_ms(attempt).round() as u32).collect();
        assert_eq!(delays, expected);

        // A connection that stays up long enough starts the schedule over.
        let Some(at) = session.link.reconnect_at() else { panic!("waiting") };
        session.handle(Input::Timer, at);
        session.handle(Input::Opened, at);
        session.handle(closed(close::ABNORMAL), at + backoff::STABLE_MS);
        let Some(next) = session.link.reconnect_at() else { panic!("waiting") };
        assert!(next - (at + backoff::STABLE_MS) < backoff::BASE_MS, "back to the first window");
    }

    #[test]
    fn messages_typed_while_disconnected_are_queued_and_sent_in_order_on_reconnect() {
        let mut session = open_session();
        session.handle(closed(close::GOING_AWAY), 0.0);
        let out = session.handle(Input::Compose("first".into()), 10.0);
        assert_eq!(logged(&out), ["Message is queued: first"]);
        assert!(sent(&out).is_empty());
        session.handle(Input::Compose("second".into()), 20.0);
        assert_eq!(session.queued(), 2);
        assert!(session.view(20.0).status_text.ends_with(" · 2 queued"));

        session.handle(Input::Visible, 30.0);
        let out = session.handle(Input::Opened, 40.0);
        assert_eq!(sent(&out), ["first", "second"], "no Hello again");
        assert_eq!(session.queued(), 0);
        // The greeting is logged like the first one, then the replies pair up.
        let welcome = session.handle(Input::Received(wire::WELCOME.into()), 41.0);
        assert_eq!(logged(&welcome), ["Message is received: Welcome!"]);
        session.handle(Input::Received("FIRST".into()), 45.0);
        assert_eq!(session.view(45.0).rtts.last(), Some(&5));
    }

    #[test]
    fn unanswered_messages_are_resent_once_after_reconnect_and_marked() {
        let mut session = open_session();
        session.handle(Input::Compose("answered".into()), 10.0);
        session.handle(Input::Received("ANSWERED".into()), 11.0);
        session.handle(Input::Compose("lost 1".into()), 12.0);
        session.handle(Input::Compose("lost 2".into()), 13.0);
        session.handle(closed(close::ABNORMAL), 14.0);
        session.handle(Input::Compose("typed later".into()), 15.0);
        assert_eq!(session.queued(), 3);

        session.handle(Input::Timer, 10_000.0);
        let out = session.handle(Input::Opened, 10_000.0);
        assert_eq!(sent(&out), ["lost 1", "lost 2", "typed later"]);
        assert_eq!(
            logged(&out),
            [
                lines::OPENED,
                "Message is sent again: lost 1",
                "Message is sent again: lost 2",
                "Message is sent: typed later",
            ]
        );
    }

    #[test]
    fn a_close_that_blames_a_message_drops_it_and_reconnects() {
        for code in [close::MESSAGE_TOO_BIG, close::INVALID_PAYLOAD, close::UNSUPPORTED_DATA] {
            let mut session = open_session();
            session.handle(Input::Compose("bad".into()), 10.0);
            session.handle(Input::Compose("good".into()), 11.0);
            let out =
                session.handle(Input::Closed { code, reason: "refused".into(), clean: true }, 12.0);
            let expected =
                format!("Message is dropped, the server refused it ({code} refused): bad");
            assert_eq!(logged(&out), [lines::CLOSED, expected.as_str()]);
            assert_eq!(session.status(), Status::Reconnecting);
            session.handle(Input::Visible, 13.0);
            let out = session.handle(Input::Opened, 14.0);
            assert_eq!(sent(&out), ["good"], "{code}: only the innocent message is resent");
        }
    }

    #[test]
    fn a_close_that_retrying_cannot_help_stops_and_says_why() {
        for code in [close::POLICY_VIOLATION, close::PROTOCOL_ERROR] {
            let mut session = open_session();
            let out =
                session.handle(Input::Closed { code, reason: "origin".into(), clean: true }, 5.0);
            let expected = format!("Not reconnecting: the server closed with {code} origin");
            assert_eq!(logged(&out), [lines::CLOSED, expected.as_str()]);
            assert_eq!(session.status(), Status::Closed);
            assert_eq!(session.wake_at(5.0), None);
            assert!(session.handle(Input::Visible, 6.0).is_empty());
            assert!(session.handle(Input::Online(true), 7.0).is_empty());
            let text = session.view(7.0).status_text;
            assert!(text.ends_with("not reconnecting: retrying cannot help"), "{text}");
            // The user can still try.
            assert_eq!(session.handle(Input::Connect, 8.0), [Command::Open(WS)]);
        }
    }

    #[test]
    fn going_away_and_abnormal_closes_retry() {
        for code in [close::GOING_AWAY, close::ABNORMAL, close::NO_STATUS, 1011, 1012, 4000] {
            assert_eq!(classify(code), CloseClass::Retry, "{code}");
        }
    }

    #[test]
    fn a_disconnect_the_user_asked_for_does_not_reconnect() {
        let mut session = open_session();
        session.handle(Input::Compose("pending".into()), 10.0);
        assert_eq!(session.handle(Input::Disconnect, 11.0), [Command::Close]);
        let out = session.handle(
            Input::Closed { code: close::NORMAL, reason: String::new(), clean: true },
            12.0,
        );
        assert_eq!(logged(&out), [lines::CLOSED]);
        assert_eq!(session.status(), Status::Closed);
        assert_eq!(session.view(12.0).status_text, "Disconnected · 1 queued");
        assert!(!session.view(12.0).can_disconnect);
        assert!(session.handle(Input::Timer, 60_000.0).is_empty());
        assert!(session.handle(Input::Online(true), 60_000.0).is_empty());
        // Connect resends what was unanswered.
        assert_eq!(session.handle(Input::Connect, 60_001.0), [Command::Open(WS)]);
        let out = session.handle(Input::Opened, 60_002.0);
        assert_eq!(sent(&out), ["pending"]);
    }

    #[test]
    fn disconnect_while_waiting_cancels_the_reconnect() {
        let mut session = open_session();
        session.handle(closed(close::ABNORMAL), 0.0);
        assert!(session.handle(Input::Disconnect, 1.0).is_empty());
        assert_eq!(session.status(), Status::Closed);
        assert_eq!(session.wake_at(1.0), None);
    }

    #[test]
    fn offline_waits_for_the_network_and_online_reconnects_at_once() {
        let mut session = open_session();
        session.handle(Input::Online(false), 0.0);
        session.handle(closed(close::ABNORMAL), 1.0);
        assert_eq!(session.status(), Status::Offline);
        assert_eq!(session.wake_at(1.0), None, "no retries while offline");
        assert!(session.handle(Input::Timer, 100_000.0).is_empty());
        assert!(session.view(2.0).status_text.contains("offline"));
        assert_eq!(session.handle(Input::Online(true), 100_001.0), [Command::Open(WS)]);
    }

    #[test]
    fn a_visible_tab_reconnects_at_once() {
        let mut session = open_session();
        session.handle(closed(close::ABNORMAL), 0.0);
        assert_eq!(session.handle(Input::Visible, 1.0), [Command::Open(WS)]);
        // Visible while open changes nothing.
        session.handle(Input::Opened, 2.0);
        assert!(session.handle(Input::Visible, 3.0).is_empty());
    }

    #[test]
    fn the_countdown_shows_whole_seconds_left() {
        let mut session = open_session();
        session.handle(closed(close::ABNORMAL), 0.0);
        session.link.wait_until(3_000.0);
        assert_eq!(session.view(0.0).status_text, "Closed (1006), reconnecting in 3 s");
        assert_eq!(session.view(2_100.0).status_text, "Closed (1006), reconnecting in 1 s");
    }

    #[test]
    fn the_limit_is_learned_from_the_servers_1009_not_assumed() {
        // A server with a bigger limit than the default: nothing is refused in advance.
        let mut session = open_session();
        let big = "a".repeat(wire::limits::MAX_MESSAGE_BYTES + 1);
        assert_eq!(sent(&session.handle(Input::Compose(big.clone()), 10.0)), [big.as_str()]);
        session.handle(Input::Received(wire::reply(&big)), 11.0);

        // A server whose limit is 1000: the 1009's reason names it; the message over it is
        // dropped (not the innocent one before it) and the next big one refused locally.
        session.handle(Input::Compose("small".into()), 20.0);
        session.handle(Input::Compose("b".repeat(1001)), 21.0);
        let reason = close::reason_too_big(1000);
        let out = session.handle(
            Input::Closed { code: close::MESSAGE_TOO_BIG, reason: reason.clone(), clean: true },
            22.0,
        );
        let dropped = format!(
            "Message is dropped, the server refused it (1009 {reason}): {}…",
            "b".repeat(80)
        );
        assert_eq!(logged(&out), [lines::CLOSED, dropped.as_str()]);
        session.handle(Input::Visible, 23.0);
        assert_eq!(sent(&session.handle(Input::Opened, 24.0)), ["small"]);
        session.handle(Input::Received(wire::WELCOME.into()), 25.0);
        let out = session.handle(Input::Compose("c".repeat(1001)), 26.0);
        assert!(sent(&out).is_empty());
        assert_eq!(logged(&out), [over_limit_line(1001, 1000)]);
        assert_eq!(
            over_limit_line(1001, 1000),
            "Message is not sent: 1001 bytes is over the server's limit of 1000 bytes"
        );
        assert_eq!(sent(&session.handle(Input::Compose("c".repeat(1000)), 27.0)).len(), 1);
    }

    #[test]
    fn limits_are_read_from_the_reason_only_when_it_names_one() {
        assert_eq!(learned_limit(&close::reason_too_big(1 << 20)), Some(1 << 20));
        assert_eq!(learned_limit("message too big"), None);
        assert_eq!(learned_limit(""), None);
        assert_eq!(learned_limit("message too big: the limit is -1 bytes"), None);
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut session = open_session();
        session.handle(closed(close::ABNORMAL), 0.0);
        for i in 0..QUEUE_LIMIT {
            session.handle(Input::Compose(i.to_string()), 1.0);
        }
        let out = session.handle(Input::Compose("one too many".into()), 2.0);
        assert_eq!(logged(&out), ["Message is not queued: 100 messages are already waiting"]);
        assert_eq!(session.queued(), QUEUE_LIMIT);
    }

    #[test]
    fn a_browser_without_websocket_says_so_and_sends_nothing() {
        let mut session = Session::new(1);
        let out = session.handle(Input::Start { supported: false }, 0.0);
        assert_eq!(logged(&out), ["WebSocket not supported by your browser."]);
        assert_eq!(out.len(), 1, "no socket is opened");
        assert_eq!(session.status(), Status::Unsupported);
        let view = session.view(0.0);
        assert!(!view.composer_enabled);
        assert!(!view.can_disconnect);
        assert!(session.handle(Input::Compose("hi".into()), 1.0).is_empty());
        assert!(session.handle(Input::Connect, 2.0).is_empty());
    }

    #[test]
    fn a_failed_first_connection_retries_without_logging_an_open() {
        let mut session = Session::new(3);
        session.handle(Input::Start { supported: true }, 0.0);
        let out = fail_attempt(&mut session, 5.0);
        assert_eq!(logged(&out), [lines::CLOSED]);
        assert_eq!(session.status(), Status::Reconnecting);
    }

    #[test]
    fn failed_retries_add_no_line_until_the_next_open() {
        let mut session = open_session();
        assert_eq!(logged(&session.handle(closed(close::GOING_AWAY), 0.0)), [lines::CLOSED]);
        for at in [10_000.0, 30_000.0] {
            assert_eq!(session.handle(Input::Timer, at), [Command::Open(WS)]);
            assert!(logged(&fail_attempt(&mut session, at)).is_empty());
        }
        session.handle(Input::Visible, 40_000.0);
        session.handle(Input::Opened, 40_000.0);
        assert_eq!(logged(&session.handle(closed(close::ABNORMAL), 41_000.0)), [lines::CLOSED]);
    }

    #[test]
    fn binary_messages_are_described_not_dumped() {
        let mut session = open_session();
        let out = session.handle(Input::ReceivedBinary(3), 0.0);
        assert_eq!(logged(&out), ["Message is received: <3 bytes of binary data>"]);
    }

    #[test]
    fn long_messages_are_shortened_in_lines_about_them() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(preview(&long), format!("{}…", "é".repeat(80)));
        assert_eq!(preview(&"x".repeat(80)), "x".repeat(80));
    }

    /// A session that fell back to long polling at t = 0 (its WebSocket closed before the
    /// greeting) and has been greeted over it at t = 10.
    fn polling_session() -> Session {
        let mut session = Session::new(1);
        session.handle(Input::Start { supported: true }, 0.0);
        assert_eq!(session.handle(closed(close::ABNORMAL), 0.0), [Command::Open(POLLING)]);
        session.handle(Input::Opened, 8.0);
        session.handle(Input::Received(wire::WELCOME.into()), 9.0);
        session.handle(Input::Received(wire::reply(wire::HELLO)), 10.0);
        session
    }

    #[test]
    fn a_blocked_websocket_falls_back_and_the_log_reads_like_the_tutorial() {
        for blocked in [
            // The upgrade refused or stripped: the socket closes before it opens.
            |session: &mut Session| session.handle(closed(close::ABNORMAL), 50.0),
            // The upgrade answered, then nothing: the first-message deadline passes.
            |session: &mut Session| {
                assert_eq!(session.wake_at(1.0), Some(crate::link::FIRST_FRAME_MS));
                assert!(session.handle(Input::Timer, crate::link::FIRST_FRAME_MS - 1.0).is_empty());
                session.handle(Input::Timer, crate::link::FIRST_FRAME_MS)
            },
        ] {
            let mut session = Session::new(1);
            let mut all = session.handle(Input::Start { supported: true }, 0.0);
            assert_eq!(all[1], Command::Open(WS));
            let out = blocked(&mut session);
            assert_eq!(out, [Command::Open(POLLING)], "at once, without a line");
            assert_eq!(
                session.view(60.0).status_text,
                "Connecting (long polling: WebSocket blocked) ..."
            );
            all.extend(out);
            for (input, at) in [
                (Input::Opened, 3_100.0),
                (Input::Received(wire::WELCOME.into()), 3_101.0),
                (Input::Received(wire::reply(wire::HELLO)), 3_105.0),
            ] {
                all.extend(session.handle(input, at));
            }
            assert_eq!(
                logged(&all),
                [
                    lines::SUPPORTED,
                    lines::OPENED,
                    "Message is received: Welcome!",
                    "Message is received: HELLO THERE!"
                ]
            );
            assert_eq!(sent(&all), [wire::HELLO], "Hello once, over long polling");
            assert_eq!(session.status(), Status::Open);
            assert_eq!(session.view(3_105.0).status_text, "Open (long polling: WebSocket blocked)");
            assert_eq!(session.view(3_105.0).rtts, [5]);
        }
    }

    #[test]
    fn the_queue_resend_and_reconnect_rules_hold_over_long_polling() {
        let mut session = polling_session();
        session.handle(Input::Compose("answered".into()), 20.0);
        session.handle(Input::Received("ANSWERED".into()), 21.0);
        session.handle(Input::Compose("lost".into()), 22.0);
        // The polling session expires (404: a dropped connection).
        let out = session.handle(closed(close::ABNORMAL), 23.0);
        assert_eq!(logged(&out), [lines::CLOSED]);
        assert_eq!(session.status(), Status::Reconnecting);
        let out = session.handle(Input::Compose("typed later".into()), 24.0);
        assert_eq!(logged(&out), ["Message is queued: typed later"]);
        // The reconnect tries WebSocket first, and gets through this time.
        assert_eq!(session.handle(Input::Visible, 25.0), [Command::Open(WS)]);
        let out = session.handle(Input::Opened, 26.0);
        assert_eq!(sent(&out), ["lost", "typed later"]);
        assert_eq!(
            logged(&out),
            [lines::OPENED, "Message is sent again: lost", "Message is sent: typed later"]
        );
        assert_eq!(session.view(26.0).status_text, "Open");
        // A refusal over polling (413, as 1009 with the server's reason) drops the message.
        let mut session = polling_session();
        session.handle(Input::Compose("x".repeat(2000)), 30.0);
        let (code, reason) = crate::poll::close_for(413, &close::reason_too_big(1000));
        let out = session.handle(Input::Closed { code, reason, clean: false }, 31.0);
        assert!(logged(&out)[1].starts_with("Message is dropped, the server refused it (1009"));
        assert_eq!(session.queued(), 0);
        // A 403 stops, as a 1008 would.
        let mut session = polling_session();
        let (code, reason) = crate::poll::close_for(403, "origin not allowed");
        session.handle(Input::Closed { code, reason, clean: false }, 40.0);
        assert_eq!(session.status(), Status::Closed);
    }

    #[test]
    fn moving_back_waits_for_the_replies_then_switches_without_a_line() {
        let mut session = polling_session();
        let probe_at = 8.0 + crate::link::PROBE_FIRST_MS;
        assert_eq!(session.wake_at(100.0), Some(probe_at));
        session.handle(Input::Compose("one".into()), probe_at - 5.0);
        assert_eq!(session.handle(Input::Timer, probe_at), [Command::Probe]);
        // The probe is greeted while "one" waits for its reply on long polling: no move yet.
        assert!(session.handle(Input::ProbeReady, probe_at + 10.0).is_empty());
        assert_eq!(
            session.view(probe_at + 10.0).status_text,
            "Open (long polling: WebSocket blocked)"
        );
        let out = session.handle(Input::Received("ONE".into()), probe_at + 15.0);
        assert_eq!(logged(&out), ["Message is received: ONE"]);
        assert_eq!(out.last(), Some(&Command::Switch), "once the reply is in");
        assert_eq!(session.status(), Status::Open);
        assert_eq!(session.view(probe_at + 15.0).status_text, "Open");
        assert_eq!(session.view(probe_at + 15.0).rtts.last(), Some(&20));
        // The conversation goes on over the WebSocket: no greeting again, replies pair up.
        let out = session.handle(Input::Compose("two".into()), probe_at + 20.0);
        assert_eq!(
            (logged(&out), sent(&out)),
            (vec!["Message is sent: two".to_owned()], vec!["two".to_owned()])
        );
        let out = session.handle(Input::Received("TWO".into()), probe_at + 23.0);
        assert_eq!(logged(&out), ["Message is received: TWO"]);
        assert_eq!(session.view(probe_at + 23.0).rtts.last(), Some(&3));
        assert_eq!(session.wake_at(probe_at + 23.0), None, "no more probes");
        // A later drop reconnects over WebSocket and logs as always.
        let out = session.handle(closed(close::GOING_AWAY), probe_at + 30.0);
        assert_eq!(logged(&out), [lines::CLOSED]);
    }

    #[test]
    fn a_failed_probe_leaves_long_polling_alone_and_a_drop_forgets_the_probe() {
        let mut session = polling_session();
        let probe_at = 8.0 + crate::link::PROBE_FIRST_MS;
        session.handle(Input::Timer, probe_at);
        assert!(session.handle(Input::ProbeFailed, probe_at + 1.0).is_empty());
        assert_eq!(
            session.view(probe_at + 1.0).status_text,
            "Open (long polling: WebSocket blocked)"
        );
        let next = session.wake_at(probe_at + 1.0).expect("another probe");
        assert_eq!(next - (probe_at + 1.0), 2.0 * crate::link::PROBE_FIRST_MS);
        // A probe that stays silent is dropped at its deadline.
        assert_eq!(session.handle(Input::Timer, next), [Command::Probe]);
        let deadline = next + crate::link::FIRST_FRAME_MS;
        assert_eq!(session.handle(Input::Timer, deadline), [Command::DropProbe]);
        // A greeting from a probe nobody waits for: dropped.
        assert_eq!(session.handle(Input::ProbeReady, deadline + 1.0), [Command::DropProbe]);
        // The polling connection drops while a probe is under way: the probe goes too.
        let at = session.wake_at(deadline + 1.0).expect("another probe");
        session.handle(Input::Timer, at);
        let out = session.handle(closed(close::ABNORMAL), at + 1.0);
        assert!(out.contains(&Command::DropProbe), "{out:?}");
        assert_eq!(logged(&out), [lines::CLOSED]);
        assert_eq!(session.handle(Input::ProbeReady, at + 2.0), [Command::DropProbe]);
    }

    #[test]
    fn disconnect_while_on_long_polling_stops_without_falling_back_again() {
        let mut session = polling_session();
        assert_eq!(session.handle(Input::Disconnect, 20.0), [Command::Close]);
        session.handle(
            Input::Closed { code: close::NORMAL, reason: String::new(), clean: true },
            21.0,
        );
        assert_eq!(session.status(), Status::Closed);
        // Connect starts with WebSocket again; closing it while it connects does not fall back.
        assert_eq!(session.handle(Input::Connect, 22.0), [Command::Open(WS)]);
        assert_eq!(session.handle(Input::Disconnect, 23.0), [Command::Close]);
        let out = session.handle(
            Input::Closed { code: close::NORMAL, reason: String::new(), clean: true },
            24.0,
        );
        assert!(!out.iter().any(|c| matches!(c, Command::Open(_))), "{out:?}");
        assert_eq!(session.status(), Status::Closed);
    }
}
