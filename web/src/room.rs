//! The room's state machine, apart from the DOM and the socket: joining, the message order,
//! where to resume from, what a reconnect recovered, refusals, presence, and reconnecting.
//!
//! Like [`crate::session`], [`Room::handle`] takes one [`Input`] (frames already decoded into
//! [`Frame`]s by the driver) and the time, and returns [`Command`]s; [`Room::view`] says what
//! the page shows. No DOM, no clock, no JSON: every rule is tested natively and in the browser.
//!
//! **Order and the resume point.** Offsets in an epoch are consecutive. After joining, the
//! page expects the message after the last one it has; an offset at or below it is a duplicate
//! (ignored, with a line), one beyond it a gap: the page closes the socket and reconnects with
//! backoff from its last message, so a skip becomes a recovery, never a silent hole. The resume
//! point is the epoch and offset of the last message received (or of the room's top when it
//! joined without recovery: older history is shown but never asked for again).
//!
//! **Recovery.** On reconnect the page asks for `?epoch=E&offset=N`. With `recovered: true` the
//! messages after N follow, checked to be consecutive and counted; when the last of them
//! (`joined.offset`) has arrived, the page logs how many were recovered and then sends what
//! waited. With `recovered: false` it says that missed messages could not be recovered (the
//! history was reset when the epoch changed) and shows the latest ones.
//!
//! **Your messages.** A message is acknowledged by coming back from the room under one of the
//! names this page has had (a new connection may get a new one). Messages typed while
//! disconnected are queued; ones sent but not yet acknowledged when the connection dropped are
//! matched against the recovered messages, and only those the room never had are sent again
//! (without recovery the page cannot tell, and sends them again: at least once). A `refused`
//! frame answers the oldest unacknowledged message. The size limit is learned from a 1009 as in
//! the echo ([`crate::session::learned_limit`]).

use std::collections::VecDeque;

use wire::close;
use wire::room::Resume;

use crate::link::{Due, Link, Status, Transport};
use crate::session::{classify, learned_limit, over_limit_line, preview, CloseClass, QUEUE_LIMIT};

/// The room's wording; the end-to-end tests assert against these.
pub mod lines {
    /// Followed by the name the server gave this page.
    pub const JOINED: &str = "Joined the room as ";
    /// After a reconnect whose missed messages all arrived: `Reconnected: 3 missed messages
    /// recovered`.
    pub fn recovered(count: u64) -> String {
        match count {
            0 => "Reconnected: no messages were missed".to_owned(),
            1 => "Reconnected: 1 missed message recovered".to_owned(),
            n => format!("Reconnected: {n} missed messages recovered"),
        }
    }
    /// After a reconnect in a new epoch (the server restarted, or the broker lost its data).
    pub const RESET: &str =
        "Reconnected: the room's history was reset; missed messages could not be recovered";
    /// After a reconnect whose missed messages are no longer all kept.
    pub const NOT_RECOVERED: &str =
        "Reconnected: some missed messages could not be recovered; showing the latest";
    pub const CLOSED: &str = "Room connection is closed ...";
    /// Followed by the message's text.
    pub const QUEUED: &str = "Message is queued: ";
    /// The reason the page gives when it closes the socket itself to recover a gap.
    pub const GAP_REASON: &str = "messages went missing";
}

/// The offset and time of a message, and who sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Joined {
        you: String,
        epoch: String,
        offset: u64,
        online: u32,
        recovered: bool,
    },
    /// `time` in milliseconds since the Unix epoch.
    Message {
        offset: u64,
        time: f64,
        from: String,
        text: String,
    },
    Presence {
        online: u32,
    },
    Refused {
        reason: String,
    },
}

/// Something that happened to the room's socket, in the browser, or by the user's hand.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start {
        supported: bool,
    },
    Opened,
    Frame(Frame),
    /// A text frame that is not one of the room's (its start, for the log).
    Unreadable(String),
    Closed {
        code: u16,
        reason: String,
        clean: bool,
    },
    Compose(String),
    Online(bool),
    Visible,
    Timer,
    /// The WebSocket probe ([`Command::Probe`]) delivered its first frame, the `joined` it
    /// would resume with.
    ProbeReady(Frame),
    /// The probe closed before its first frame, or that frame was not a `joined`.
    ProbeFailed,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open the room's connection over this transport, for this WebSocket path
    /// (`wire::room::path_with_resume`, relative to the page's socket base; long polling
    /// opens beside it with the same resume query).
    Open(Transport, String),
    Send(String),
    /// Close the connection with this code and reason and forget it: no close event comes
    /// back.
    Close(u16, &'static str),
    Log(Entry),
    /// Open a WebSocket at this path beside the long-polling connection (see
    /// [`crate::session::Command::Probe`]); park it after its first frame.
    Probe(String),
    /// Close the probe and forget it.
    DropProbe,
    /// Move onto the ready probe and close the long-polling session; the probe's frames after
    /// its `joined` come next.
    Switch,
}

/// One line of the room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message of the room; `mine` when this page sent it.
    Message { offset: u64, time_ms: u64, from: String, text: String, mine: bool },
    /// A line about the connection or the room.
    Note(String),
}

/// What the page shows besides the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub status: Status,
    pub status_text: String,
    /// `3 online · you are guest-7f3a`, once joined.
    pub presence: String,
    pub composer_enabled: bool,
}

/// Where the messages after `joined` stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not joined yet on this connection.
    Joining,
    /// Without recovery: history up to `until`, in increasing order, last shown `shown`.
    History { until: u64, shown: Option<u64> },
    /// Recovering the missed messages up to `until`; `count` so far. `quiet` after a move
    /// from long polling to WebSocket: nothing was missed, so nothing is said.
    CatchUp { until: u64, count: u64, quiet: bool },
    /// Every message must be the one after the resume point.
    Live,
}

/// The room, as this page sees it.
#[derive(Debug, Clone)]
pub struct Room {
    link: Link,
    phase: Phase,
    close_logged: bool,
    resume: Option<Resume>,
    /// Every name the server gave this page, the current one last.
    names: Vec<String>,
    members: Option<u32>,
    limit: Option<usize>,
    outbox: VecDeque<String>,
    /// Sent on this connection, not yet back from the room.
    in_flight: VecDeque<String>,
    /// The ready probe's `joined`, until it takes over.
    probe_joined: Option<Frame>,
    /// After a move onto a probe: messages up to here came by long polling already; the
    /// probe's copies are skipped without a word.
    skip_through: Option<u64>,
}

impl Room {
    pub fn new(seed: u64) -> Self {
        Self {
            link: Link::new(seed),
            phase: Phase::Joining,
            close_logged: false,
            resume: None,
            names: Vec::new(),
            members: None,
            limit: None,
            outbox: VecDeque::new(),
            in_flight: VecDeque::new(),
            probe_joined: None,
            skip_through: None,
        }
    }

    /// Applies one input at time `now` (ms) and returns what to do.
    pub fn handle(&mut self, input: Input, now: f64) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Start { supported } => {
                if self.link.start(supported, now) {
                    self.open(&mut out);
                }
            }
            Input::Opened => {
                self.link.opened(now);
                self.phase = Phase::Joining;
            }
            Input::Frame(frame) if self.link.is_open() => {
                self.frame(frame, now, &mut out);
                // The frame may have been the last reply a ready probe waited for.
                self.switch_when_idle(now, &mut out);
            }
            Input::Frame(_) => {}
            Input::Unreadable(text) => {
                out.push(note(format!("Unreadable frame from the room: {}", preview(&text))))
            }
            Input::Closed { code, reason, .. } => self.closed(code, reason, now, &mut out),
            Input::Compose(text) => self.compose(text, &mut out),
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
                Due::Probe => {
                    out.push(Command::Probe(wire::room::path_with_resume(self.resume.as_ref())))
                }
                Due::DropProbe => out.push(Command::DropProbe),
                Due::Nothing => {}
            },
            Input::ProbeReady(joined @ Frame::Joined { .. }) if self.link.probe_ready() => {
                self.probe_joined = Some(joined);
                self.switch_when_idle(now, &mut out);
            }
            Input::ProbeReady(_) => {
                self.link.probe_failed(now);
                out.push(Command::DropProbe);
            }
            Input::ProbeFailed => self.link.probe_failed(now),
        }
        out
    }

    /// When the driver should deliver [`Input::Timer`].
    pub fn wake_at(&self, now: f64) -> Option<f64> {
        self.link.wake_at(now)
    }

    /// Where the connection is.
    pub fn status(&self) -> Status {
        match self.link.status() {
            // Open once joined: before that, nothing can be said about the room.
            Status::Open if self.phase == Phase::Joining => Status::Connecting,
            status => status,
        }
    }

    /// What the page shows at time `now`.
    pub fn view(&self, now: f64) -> View {
        let status = self.status();
        let status_text = self.link.status_line(status, self.outbox.len(), now);
        let presence = match (status, self.members, self.names.last()) {
            (Status::Open, Some(n), Some(you)) => format!("{n} online · you are {you}"),
            _ => String::new(),
        };
        View { status, status_text, presence, composer_enabled: self.link.supported() }
    }

    /// The epoch and offset the next connection resumes from.
    pub fn resume(&self) -> Option<&Resume> {
        self.resume.as_ref()
    }

    /// Messages waiting to be sent.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Opens a connection from the resume point (the link has just said to, and over what).
    fn open(&mut self, out: &mut Vec<Command>) {
        self.phase = Phase::Joining;
        let path = wire::room::path_with_resume(self.resume.as_ref());
        out.push(Command::Open(self.link.transport(), path));
    }

    /// Moves onto the ready probe once the room is joined and every message sent has come
    /// back. The probe resumed from where the page was when it opened; what long polling
    /// brought since is skipped on it, so nothing shows twice, and nothing is missed: the
    /// probe has had every message after its resume point.
    fn switch_when_idle(&mut self, now: f64, out: &mut Vec<Command>) {
        let joined = !matches!(self.phase, Phase::Joining | Phase::CatchUp { .. });
        if !(self.link.probe_is_ready() && joined && self.in_flight.is_empty()) {
            return;
        }
        let Some(frame) = self.probe_joined.take() else { return };
        self.link.switched(now);
        out.push(Command::Switch);
        match (frame, &self.resume) {
            (Frame::Joined { you, epoch, offset, online, recovered: true }, Some(from))
                if from.epoch == epoch =>
            {
                self.members = Some(online);
                if !self.names.contains(&you) {
                    self.names.push(you);
                }
                self.skip_through = Some(from.offset);
                let until = offset.max(from.offset);
                self.phase = if from.offset >= until {
                    Phase::Live
                } else {
                    Phase::CatchUp { until, count: 0, quiet: true }
                };
            }
            // The room changed under the probe (a new epoch, history gone): as any join.
            (frame, _) => self.frame(frame, now, out),
        }
    }

    fn frame(&mut self, frame: Frame, now: f64, out: &mut Vec<Command>) {
        match frame {
            Frame::Joined { you, epoch, offset, online, recovered } => {
                self.members = Some(online);
                self.close_logged = false;
                if !self.names.contains(&you) {
                    self.names.push(you.clone());
                }
                let previous = self.resume.take();
                let same_epoch = previous.as_ref().is_some_and(|p| p.epoch == epoch);
                match previous {
                    Some(from) if recovered && same_epoch => {
                        let until = offset.max(from.offset);
                        self.resume = Some(from);
                        self.phase = Phase::CatchUp { until, count: 0, quiet: false };
                        self.caught_up(out);
                    }
                    _ => {
                        let line = match previous {
                            None => format!("{}{you}", lines::JOINED),
                            Some(_) if same_epoch => lines::NOT_RECOVERED.to_owned(),
                            Some(_) => lines::RESET.to_owned(),
                        };
                        out.push(note(line));
                        self.resume = Some(Resume { epoch, offset });
                        self.phase = Phase::History { until: offset, shown: None };
                        self.flush(out);
                    }
                }
            }
            Frame::Message { offset, time, from, text } => {
                self.message(offset, time, from, text, now, out)
            }
            Frame::Presence { online } => self.members = Some(online),
            Frame::Refused { reason } => {
                let line = match self.in_flight.pop_front() {
                    Some(text) => format!("Message is not sent ({reason}): {}", preview(&text)),
                    None => format!("The room refused a message: {reason}"),
                };
                out.push(note(line));
            }
        }
    }

    fn message(
        &mut self,
        offset: u64,
        time: f64,
        from: String,
        text: String,
        now: f64,
        out: &mut Vec<Command>,
    ) {
        let Some(last) = self.resume.as_ref().map(|resume| resume.offset) else { return };
        if self.skip_through.is_some_and(|through| offset <= through) {
            return;
        }
        match self.phase {
            Phase::Joining => return,
            Phase::History { until, shown } if offset <= until => {
                if shown.is_some_and(|shown| offset <= shown) {
                    return repeated(offset, out);
                }
                self.phase = if offset == until {
                    Phase::Live
                } else {
                    Phase::History { until, shown: Some(offset) }
                };
            }
            _ if offset <= last => return repeated(offset, out),
            _ if offset > last + 1 => {
                let missing = if offset == last + 2 {
                    format!("Message {} did not arrive", last + 1)
                } else {
                    format!("Messages {}–{} did not arrive", last + 1, offset - 1)
                };
                out.push(note(format!("{missing}: reconnecting to recover them")));
                out.push(Command::Close(close::NORMAL, lines::GAP_REASON));
                return self.lost(close::NORMAL, lines::GAP_REASON.to_owned(), now, out);
            }
            phase => {
                if let Some(resume) = self.resume.as_mut() {
                    resume.offset = offset;
                }
                self.phase = match phase {
                    Phase::CatchUp { until, count, quiet } => {
                        Phase::CatchUp { until, count: count + 1, quiet }
                    }
                    _ => Phase::Live,
                };
            }
        }
        let mine = self.names.contains(&from);
        if mine {
            if let Some(at) = self.in_flight.iter().position(|sent| *sent == text) {
                self.in_flight.remove(at);
            } else if let Some(at) = self.outbox.iter().position(|queued| *queued == text) {
                // Sent before the connection dropped and recovered now: not to be sent again.
                self.outbox.remove(at);
            }
        }
        let time_ms = time.max(0.0) as u64;
        out.push(Command::Log(Entry::Message { offset, time_ms, from, text, mine }));
        self.caught_up(out);
    }

    /// Ends a catch-up whose last message has arrived: says what was recovered, sends what
    /// waited.
    fn caught_up(&mut self, out: &mut Vec<Command>) {
        if let (Phase::CatchUp { until, count, quiet }, Some(resume)) = (self.phase, &self.resume) {
            if resume.offset >= until {
                self.phase = Phase::Live;
                if !quiet {
                    out.push(note(lines::recovered(count)));
                }
                self.flush(out);
            }
        }
    }

    /// Sends every queued message (the socket is open and joined).
    fn flush(&mut self, out: &mut Vec<Command>) {
        while let Some(text) = self.outbox.pop_front() {
            self.send(text, out);
        }
    }

    fn send(&mut self, text: String, out: &mut Vec<Command>) {
        out.push(Command::Send(text.clone()));
        self.in_flight.push_back(text);
    }

    fn compose(&mut self, text: String, out: &mut Vec<Command>) {
        if text.is_empty() || !self.link.supported() {
            return;
        }
        if let Some(limit) = self.limit.filter(|limit| text.len() > *limit) {
            out.push(note(over_limit_line(text.len(), limit)));
            return;
        }
        let joined =
            self.link.is_open() && !matches!(self.phase, Phase::Joining | Phase::CatchUp { .. });
        if joined {
            self.send(text, out);
        } else if self.outbox.len() >= QUEUE_LIMIT {
            out.push(note(format!(
                "Message is not queued: {QUEUE_LIMIT} messages are already waiting"
            )));
        } else {
            out.push(note(format!("{}{}", lines::QUEUED, preview(&text))));
            self.outbox.push_back(text);
        }
    }

    fn closed(&mut self, code: u16, reason: String, now: f64, out: &mut Vec<Command>) {
        if !self.link.connected() {
            return;
        }
        // A WebSocket that never delivered `joined`: blocked; the same attempt goes on over
        // long polling, quietly.
        if self.link.fall_back() {
            return self.open(out);
        }
        self.lost(code, reason, now, out);
    }

    /// The connection is gone (closed by the server, dropped, or closed here to recover).
    fn lost(&mut self, code: u16, reason: String, now: f64, out: &mut Vec<Command>) {
        if !self.close_logged {
            self.close_logged = true;
            out.push(note(lines::CLOSED));
        }
        self.members = None;
        self.phase = Phase::Joining;
        self.probe_joined = None;
        self.skip_through = None;
        // Unacknowledged: first in line for the next connection, unless the room has them.
        for text in self.in_flight.drain(..).rev() {
            self.outbox.push_front(text);
        }
        let shown = if reason.is_empty() { code.to_string() } else { format!("{code} {reason}") };
        let limit = (code == close::MESSAGE_TOO_BIG).then(|| learned_limit(&reason)).flatten();
        if self.link.closed(code, reason, now) {
            out.push(Command::DropProbe);
        }
        match classify(code) {
            CloseClass::Stop => {
                out.push(note(format!(
                    "Not reconnecting to the room: the server closed with {shown}"
                )));
                self.link.stop(Some("retrying cannot help"));
                return;
            }
            CloseClass::BlameMessage => {
                self.limit = limit.or(self.limit);
                let mut blamed = VecDeque::new();
                match self.limit {
                    Some(limit) if self.outbox.iter().any(|m| m.len() > limit) => {
                        (blamed, self.outbox) =
                            self.outbox.drain(..).partition(|m| m.len() > limit);
                    }
                    _ => blamed.extend(self.outbox.pop_front()),
                }
                for text in blamed {
                    let text = preview(&text);
                    out.push(note(format!(
                        "Message is dropped, the server refused it ({shown}): {text}"
                    )));
                }
            }
            CloseClass::Retry => {}
        }
        self.link.retry(now);
    }
}

fn repeated(offset: u64, out: &mut Vec<Command>) {
    out.push(note(format!("Ignored a repeated message (offset {offset})")));
}

fn note(text: impl Into<String>) -> Command {
    Command::Log(Entry::Note(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Rng;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn notes(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(Entry::Note(text)) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// The messages shown, as `offset from: text` (with `*` when mine).
    fn shown(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Log(Entry::Message { offset, from, text, mine, .. }) => {
                    Some(format!("{offset} {from}{}: {text}", if *mine { "*" } else { "" }))
                }
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

    fn joined(you: &str, epoch: &str, offset: u64, recovered: bool) -> Input {
        let (you, epoch) = (you.to_owned(), epoch.to_owned());
        Input::Frame(Frame::Joined { you, epoch, offset, online: 2, recovered })
    }

    fn message(offset: u64, from: &str, text: &str) -> Input {
        let (from, text) = (from.to_owned(), text.to_owned());
        Input::Frame(Frame::Message { offset, time: 1_700_000_000_000.0, from, text })
    }

    const WS: Transport = Transport::WebSocket;

    fn closed(code: u16) -> Input {
        Input::Closed { code, reason: String::new(), clean: false }
    }

    fn resume(epoch: &str, offset: u64) -> Option<Resume> {
        Some(Resume { epoch: epoch.to_owned(), offset })
    }

    /// A room joined as `me` in epoch `e1` whose history ended at offset 2.
    fn joined_room() -> Room {
        let mut room = Room::new(1);
        room.handle(Input::Start { supported: true }, 0.0);
        room.handle(Input::Opened, 1.0);
        room.handle(joined("me", "e1", 2, false), 2.0);
        room.handle(message(1, "ann", "one"), 3.0);
        room.handle(message(2, "me", "two"), 3.0);
        room
    }

    /// Closes the room's connection and opens it again; returns the path it asked for.
    fn reconnect(room: &mut Room, at: f64) -> String {
        room.handle(closed(close::GOING_AWAY), at);
        let out = room.handle(Input::Visible, at + 1.0);
        let [Command::Open(_, path)] = &out[..] else { panic!("{out:?}") };
        room.handle(Input::Opened, at + 2.0);
        path.clone()
    }

    #[test]
    fn joining_shows_the_history_in_order_and_marks_yours() {
        let mut room = Room::new(1);
        assert_eq!(
            room.handle(Input::Start { supported: true }, 0.0),
            [Command::Open(WS, "/ws/room".to_owned())]
        );
        room.handle(Input::Opened, 1.0);
        assert_eq!(room.status(), Status::Connecting, "open, but not joined yet");
        let mut out = room.handle(joined("me", "e1", 2, false), 2.0);
        out.extend(room.handle(message(1, "ann", "one"), 3.0));
        out.extend(room.handle(message(2, "me", "two"), 3.0));
        assert_eq!(notes(&out), ["Joined the room as me"]);
        assert_eq!(shown(&out), ["1 ann: one", "2 me*: two"]);
        assert_eq!(room.status(), Status::Open);
        let view = room.view(3.0);
        assert_eq!(view.status_text, "Open");
        assert_eq!(view.presence, "2 online · you are me");
        assert_eq!(room.resume(), resume("e1", 2).as_ref());
    }

    #[test]
    fn live_messages_move_the_resume_point_and_presence_the_count() {
        let mut room = joined_room();
        let out = room.handle(message(3, "bob", "hi"), 10.0);
        assert_eq!(shown(&out), ["3 bob: hi"]);
        assert_eq!(room.resume(), resume("e1", 3).as_ref());
        room.handle(Input::Frame(Frame::Presence { online: 5 }), 11.0);
        assert!(room.view(11.0).presence.starts_with("5 online"));
        // Times pass through as milliseconds; the page formats them.
        let out = room.handle(message(4, "bob", "x"), 12.0);
        assert!(matches!(&out[0], Command::Log(Entry::Message { time_ms: 1_700_000_000_000, .. })));
    }

    #[test]
    fn your_message_is_sent_once_and_acknowledged_by_coming_back() {
        let mut room = joined_room();
        let out = room.handle(Input::Compose("hello".into()), 10.0);
        assert_eq!(sent(&out), ["hello"]);
        assert!(notes(&out).is_empty(), "shown when the room has it, not before");
        let out = room.handle(message(3, "me", "hello"), 11.0);
        assert_eq!(shown(&out), ["3 me*: hello"]);
        // Acknowledged: a reconnect sends nothing again.
        let path = reconnect(&mut room, 20.0);
        assert_eq!(path, "/ws/room?epoch=e1&offset=3");
        let out = room.handle(joined("me2", "e1", 3, true), 23.0);
        assert_eq!(notes(&out), [lines::recovered(0)]);
        assert!(sent(&out).is_empty());
    }

    #[test]
    fn a_reconnect_resumes_and_counts_the_recovered_messages() {
        let mut room = joined_room();
        let path = reconnect(&mut room, 10.0);
        assert_eq!(path, "/ws/room?epoch=e1&offset=2");
        assert_eq!(room.view(12.0).status, Status::Connecting);
        let mut out = room.handle(joined("me-again", "e1", 5, true), 13.0);
        assert!(notes(&out).is_empty(), "the count comes once they are all here");
        for (offset, text) in [(3, "a"), (4, "b"), (5, "c")] {
            out.extend(room.handle(message(offset, "ann", text), 14.0));
        }
        assert_eq!(shown(&out), ["3 ann: a", "4 ann: b", "5 ann: c"]);
        assert_eq!(notes(&out), ["Reconnected: 3 missed messages recovered"]);
        assert_eq!(room.resume(), resume("e1", 5).as_ref());
        assert_eq!(lines::recovered(1), "Reconnected: 1 missed message recovered");
        // Both names are this page's.
        let out = room.handle(message(6, "me", "old name"), 15.0);
        assert_eq!(shown(&out), ["6 me*: old name"]);
    }

    #[test]
    fn messages_typed_meanwhile_are_sent_after_the_recovered_ones_and_not_twice() {
        let mut room = joined_room();
        room.handle(Input::Compose("in flight".into()), 10.0);
        room.handle(closed(close::ABNORMAL), 11.0);
        let out = room.handle(Input::Compose("typed later".into()), 12.0);
        assert_eq!(notes(&out), ["Message is queued: typed later"]);
        assert_eq!(room.view(12.0).status_text.rsplit(" · ").next(), Some("2 queued"));
        room.handle(Input::Visible, 13.0);
        assert!(sent(&room.handle(Input::Opened, 14.0)).is_empty(), "not before joining");
        assert!(sent(&room.handle(joined("me", "e1", 3, true), 15.0)).is_empty());
        // The room had published "in flight" before the drop: it is among the recovered.
        let out = room.handle(message(3, "me", "in flight"), 16.0);
        assert_eq!(shown(&out), ["3 me*: in flight"]);
        assert_eq!(sent(&out), ["typed later"], "only what the room never had");
        assert_eq!(room.queued(), 0);
    }

    #[test]
    fn without_recovery_the_page_says_so_and_sends_what_waited() {
        // Same epoch, history no longer kept.
        let mut room = joined_room();
        room.handle(Input::Compose("unacknowledged".into()), 9.0);
        reconnect(&mut room, 10.0);
        let mut out = room.handle(joined("me", "e1", 80, false), 13.0);
        assert_eq!(notes(&out), [lines::NOT_RECOVERED]);
        assert_eq!(sent(&out), ["unacknowledged"], "cannot tell: at least once");
        out = room.handle(message(31, "ann", "recent"), 14.0);
        assert_eq!(shown(&out), ["31 ann: recent"], "history starts anywhere");
        assert_eq!(room.resume(), resume("e1", 80).as_ref());

        // A new epoch: the history was reset.
        let mut room = joined_room();
        reconnect(&mut room, 10.0);
        let out = room.handle(joined("me", "e2", 0, false), 13.0);
        assert_eq!(notes(&out), [lines::RESET]);
        assert_eq!(room.resume(), resume("e2", 0).as_ref());
        assert_eq!(shown(&room.handle(message(1, "ann", "new"), 14.0)), ["1 ann: new"]);
    }

    #[test]
    fn a_gap_closes_and_reconnects_from_the_last_message() {
        let mut room = joined_room();
        let out = room.handle(message(5, "ann", "too far"), 10.0);
        assert!(shown(&out).is_empty());
        assert_eq!(
            notes(&out),
            ["Messages 3–4 did not arrive: reconnecting to recover them", lines::CLOSED]
        );
        assert!(out.contains(&Command::Close(close::NORMAL, lines::GAP_REASON)));
        assert_eq!(room.status(), Status::Reconnecting);
        let text = room.view(10.0).status_text;
        assert!(text.starts_with("Closed (1000 messages went missing), reconnecting in"), "{text}");
        let Some(at) = room.wake_at(10.0) else { panic!("a wake-up") };
        assert!(at <= 260.0);
        assert_eq!(
            room.handle(Input::Timer, 2_000.0),
            [Command::Open(WS, "/ws/room?epoch=e1&offset=2".to_owned())]
        );
        // A close for the socket the page closed itself adds nothing.
        let mut room = joined_room();
        room.handle(message(4, "ann", "x"), 10.0);
        assert!(room.handle(closed(close::NORMAL), 11.0).is_empty());
    }

    #[test]
    fn a_gap_during_recovery_is_a_gap_too() {
        let mut room = joined_room();
        reconnect(&mut room, 10.0);
        room.handle(joined("me", "e1", 6, true), 13.0);
        room.handle(message(3, "ann", "a"), 14.0);
        let out = room.handle(message(5, "ann", "c"), 14.0);
        assert_eq!(notes(&out)[0], "Message 4 did not arrive: reconnecting to recover them");
        assert_eq!(room.resume(), resume("e1", 3).as_ref());
    }

    #[test]
    fn duplicates_are_ignored_with_a_line() {
        let mut room = joined_room();
        room.handle(message(3, "ann", "once"), 10.0);
        let out = room.handle(message(3, "ann", "once"), 11.0);
        assert!(shown(&out).is_empty());
        assert_eq!(notes(&out), ["Ignored a repeated message (offset 3)"]);
        assert_eq!(room.status(), Status::Open);
        // In the history too.
        let mut room = Room::new(1);
        room.handle(Input::Start { supported: true }, 0.0);
        room.handle(Input::Opened, 1.0);
        room.handle(joined("me", "e1", 9, false), 2.0);
        room.handle(message(8, "ann", "a"), 3.0);
        assert!(shown(&room.handle(message(8, "ann", "a"), 3.0)).is_empty());
        assert_eq!(shown(&room.handle(message(9, "ann", "b"), 3.0)).len(), 1);
        assert_eq!(shown(&room.handle(message(10, "ann", "live"), 3.0)).len(), 1);
    }

    #[test]
    fn a_refusal_answers_the_oldest_unacknowledged_message() {
        let mut room = joined_room();
        room.handle(Input::Compose("first".into()), 10.0);
        room.handle(Input::Compose("second".into()), 10.0);
        let refused = Frame::Refused { reason: wire::room::REFUSED_RATE.to_owned() };
        let out = room.handle(Input::Frame(refused.clone()), 11.0);
        assert_eq!(
            notes(&out),
            [format!("Message is not sent ({}): first", wire::room::REFUSED_RATE)]
        );
        assert_eq!(room.status(), Status::Open, "the connection stays open");
        room.handle(message(3, "me", "second"), 12.0);
        // Nothing is left to be sent again.
        reconnect(&mut room, 20.0);
        assert!(sent(&room.handle(joined("me", "e1", 3, true), 23.0)).is_empty());
        let out = room.handle(Input::Frame(refused), 24.0);
        assert_eq!(
            notes(&out),
            [format!("The room refused a message: {}", wire::room::REFUSED_RATE)]
        );
    }

    #[test]
    fn closes_reconnect_with_backoff_like_the_echo() {
        let mut room = joined_room();
        for code in [close::GOING_AWAY, wire::room::CLOSE_SLOW, wire::room::CLOSE_RESET] {
            let out = room.handle(closed(code), 100.0);
            assert_eq!(
                notes(&out).len(),
                usize::from(code == close::GOING_AWAY),
                "once per outage"
            );
            assert_eq!(room.status(), Status::Reconnecting, "{code}");
            assert_eq!(room.view(100.0).presence, "", "no count while away");
            let Some(at) = room.link.reconnect_at() else { panic!("waiting") };
            room.handle(Input::Timer, at);
            room.handle(Input::Opened, at);
        }
        // Offline: no retries until the browser is back online.
        let mut room = joined_room();
        room.handle(Input::Online(false), 1.0);
        room.handle(closed(close::ABNORMAL), 2.0);
        assert_eq!(room.status(), Status::Offline);
        assert_eq!(room.wake_at(2.0), None);
        assert_eq!(room.handle(Input::Online(true), 3.0).len(), 1);
        // Retrying cannot help: stop.
        let mut room = joined_room();
        let out = room.handle(closed(close::POLICY_VIOLATION), 5.0);
        assert_eq!(notes(&out)[1], "Not reconnecting to the room: the server closed with 1008");
        assert_eq!(room.status(), Status::Closed);
        assert!(room.handle(Input::Visible, 6.0).is_empty());
    }

    #[test]
    fn the_backoff_grows_with_failed_attempts() {
        let mut room = joined_room();
        let mut now = 0.0;
        let mut delays = Vec::new();
        room.handle(closed(close::ABNORMAL), now);
        for _ in 0..5 {
            let Some(at) = room.link.reconnect_at() else { panic!("waiting") };
            delays.push((at - now).round() as u32);
            now = at;
            room.handle(Input::Timer, now);
            // The WebSocket fails (long polling is tried at once), then long polling does.
            assert!(matches!(
                &room.handle(closed(close::ABNORMAL), now)[..],
                [Command::Open(Transport::LongPolling, _)]
            ));
            room.handle(closed(close::ABNORMAL), now);
        }
        let mut rng = Rng::new(1);
        let expected: Vec<u32> = (0..5).map(|a| rng.delay_ms(a).round() as u32).collect();
        assert_eq!(delays, expected);
    }

    #[test]
    fn the_size_limit_is_learned_from_a_1009() {
        let mut room = joined_room();
        let big = "a".repeat(70 * 1024);
        assert_eq!(sent(&room.handle(Input::Compose(big.clone()), 10.0)).len(), 1);
        room.handle(Input::Compose("fine".into()), 10.0);
        let reason = close::reason_too_big(65_536);
        let out = room.handle(
            Input::Closed { code: close::MESSAGE_TOO_BIG, reason: reason.clone(), clean: true },
            11.0,
        );
        let dropped = format!(
            "Message is dropped, the server refused it (1009 {reason}): {}…",
            "a".repeat(80)
        );
        assert_eq!(notes(&out), [lines::CLOSED, dropped.as_str()]);
        assert_eq!(room.queued(), 1, "the innocent one stays");
        let out = room.handle(Input::Compose(big), 12.0);
        assert_eq!(notes(&out), [over_limit_line(70 * 1024, 65_536)]);
    }

    #[test]
    fn without_websocket_nothing_opens() {
        let mut room = Room::new(1);
        assert!(room.handle(Input::Start { supported: false }, 0.0).is_empty());
        assert_eq!(room.status(), Status::Unsupported);
        assert!(!room.view(0.0).composer_enabled);
        assert!(room.handle(Input::Compose("x".into()), 1.0).is_empty());
    }

    #[test]
    fn unreadable_frames_are_logged_not_fatal() {
        let mut room = joined_room();
        let out = room.handle(Input::Unreadable("{\"type\":\"new\"}".into()), 1.0);
        assert_eq!(notes(&out), ["Unreadable frame from the room: {\"type\":\"new\"}"]);
        assert_eq!(room.status(), Status::Open);
    }

    const POLLING: Transport = Transport::LongPolling;

    /// A room whose WebSocket was blocked, joined over long polling as `me` in `e1` with its
    /// history ending at offset 2 (opened at t = 1).
    fn polling_room() -> Room {
        let mut room = Room::new(1);
        room.handle(Input::Start { supported: true }, 0.0);
        let out = room.handle(closed(close::ABNORMAL), 0.5);
        assert_eq!(out, [Command::Open(POLLING, "/ws/room".to_owned())], "quietly");
        room.handle(Input::Opened, 1.0);
        let mut out = room.handle(joined("me", "e1", 2, false), 1.0);
        out.extend(room.handle(message(1, "ann", "one"), 1.0));
        out.extend(room.handle(message(2, "me", "two"), 1.0));
        assert_eq!(notes(&out), ["Joined the room as me"]);
        assert_eq!(shown(&out), ["1 ann: one", "2 me*: two"]);
        room
    }

    /// Runs the probe of a polling room to its `joined` (as `me2`, at `top`), at the first
    /// probe time; returns what that gave and the probe's path.
    fn probe_joins(room: &mut Room, top: u64) -> (Vec<Command>, String) {
        let at = 1.0 + crate::link::PROBE_FIRST_MS;
        let out = room.handle(Input::Timer, at);
        let [Command::Probe(path)] = &out[..] else { panic!("{out:?}") };
        let ready = Input::ProbeReady(Frame::Joined {
            you: "me2".into(),
            epoch: "e1".into(),
            offset: top,
            online: 3,
            recovered: true,
        });
        (room.handle(ready, at + 1.0), path.clone())
    }

    #[test]
    fn a_blocked_websocket_falls_back_and_the_room_works_over_long_polling() {
        let mut room = polling_room();
        let view = room.view(2.0);
        assert_eq!(view.status_text, "Open (long polling: WebSocket blocked)");
        assert_eq!(view.presence, "2 online · you are me");
        assert_eq!(sent(&room.handle(Input::Compose("hi".into()), 3.0)), ["hi"]);
        // A silent WebSocket falls back at its deadline, with the same resume point.
        let mut room = joined_room();
        let path = reconnect(&mut room, 10.0);
        assert_eq!(path, "/ws/room?epoch=e1&offset=2");
        let mut room = joined_room();
        room.handle(closed(close::GOING_AWAY), 10.0);
        room.handle(Input::Visible, 11.0);
        let deadline = 11.0 + crate::link::FIRST_FRAME_MS;
        assert_eq!(room.wake_at(12.0), Some(deadline));
        assert_eq!(
            room.handle(Input::Timer, deadline),
            [Command::Open(POLLING, "/ws/room?epoch=e1&offset=2".to_owned())]
        );
        room.handle(Input::Opened, deadline + 1.0);
        let out = room.handle(joined("me", "e1", 3, true), deadline + 1.0);
        assert!(notes(&out).is_empty(), "the count comes with the last one");
        let out = room.handle(message(3, "bob", "missed"), deadline + 1.0);
        assert_eq!(notes(&out), [lines::recovered(1)], "resumed over long polling");
    }

    #[test]
    fn moving_back_skips_what_long_polling_brought_and_misses_nothing() {
        let mut room = polling_room();
        // While the probe opens, long polling brings 3, and "mine" is sent.
        let at = 1.0 + crate::link::PROBE_FIRST_MS;
        room.handle(message(3, "ann", "three"), at - 1.0);
        assert_eq!(sent(&room.handle(Input::Compose("mine".into()), at - 1.0)), ["mine"]);
        let (out, path) = probe_joins(&mut room, 3);
        assert_eq!(path, "/ws/room?epoch=e1&offset=3", "from where the page was");
        assert!(out.is_empty(), "not while \"mine\" is in flight: {out:?}");
        // "mine" comes back over long polling (4): now the probe takes over.
        let out = room.handle(message(4, "me", "mine"), at + 2.0);
        assert_eq!(shown(&out), ["4 me*: mine"]);
        assert_eq!(out.last(), Some(&Command::Switch));
        assert_eq!(room.view(at + 2.0).status_text, "Open");
        // The probe has everything after 3: 4 again (skipped without a word), then 5 and on.
        let mut out = room.handle(message(4, "me", "mine"), at + 3.0);
        out.extend(room.handle(message(5, "bob", "five"), at + 3.0));
        assert_eq!(shown(&out), ["5 bob: five"]);
        assert!(notes(&out).is_empty(), "{out:?}");
        assert_eq!(room.resume(), resume("e1", 5).as_ref());
        assert_eq!(room.view(at + 3.0).presence, "3 online · you are me2");
        // Sent over the WebSocket now, and acknowledged under either name.
        assert_eq!(sent(&room.handle(Input::Compose("after".into()), at + 4.0)), ["after"]);
        assert_eq!(shown(&room.handle(message(6, "me2", "after"), at + 5.0)), ["6 me2*: after"]);
        assert_eq!(room.wake_at(at + 5.0), None, "no more probes");
    }

    #[test]
    fn a_probe_that_joined_before_the_last_polled_messages_catches_up_quietly() {
        let mut room = polling_room();
        // The probe joined when the room's top was 5; long polling had only 2 then.
        let (out, _) = probe_joins(&mut room, 5);
        assert_eq!(out, [Command::Switch], "nothing in flight: at once");
        let mut out = Vec::new();
        for (offset, text) in [(3, "a"), (4, "b"), (5, "c"), (6, "live")] {
            out.extend(room.handle(message(offset, "ann", text), 20_000.0));
        }
        assert_eq!(shown(&out), ["3 ann: a", "4 ann: b", "5 ann: c", "6 ann: live"]);
        assert!(notes(&out).is_empty(), "a move, not a reconnect: {out:?}");
        // Typed during the catch-up: sent once it is over.
        let mut room = polling_room();
        probe_joins(&mut room, 4);
        let out = room.handle(Input::Compose("during".into()), 20_000.0);
        assert_eq!(notes(&out), ["Message is queued: during"]);
        room.handle(message(3, "ann", "a"), 20_001.0);
        assert_eq!(sent(&room.handle(message(4, "ann", "b"), 20_001.0)), ["during"]);
        // A gap on the probe is a gap: recovered by reconnecting.
        let mut room = polling_room();
        probe_joins(&mut room, 5);
        let out = room.handle(message(4, "ann", "b"), 20_000.0);
        assert!(out.contains(&Command::Close(close::NORMAL, lines::GAP_REASON)), "{out:?}");
    }

    #[test]
    fn a_probe_into_a_changed_room_is_reported_like_any_join() {
        let mut room = polling_room();
        let at = 1.0 + crate::link::PROBE_FIRST_MS;
        room.handle(Input::Timer, at);
        let out = room.handle(
            Input::ProbeReady(Frame::Joined {
                you: "me2".into(),
                epoch: "e2".into(),
                offset: 0,
                online: 1,
                recovered: false,
            }),
            at,
        );
        assert_eq!(out[0], Command::Switch);
        assert_eq!(notes(&out), [lines::RESET]);
        assert_eq!(room.resume(), resume("e2", 0).as_ref());
        // A probe whose first frame is not `joined` failed.
        let mut room = polling_room();
        room.handle(Input::Timer, at);
        let out = room.handle(Input::ProbeReady(Frame::Presence { online: 2 }), at + 1.0);
        assert_eq!(out, [Command::DropProbe]);
        assert_eq!(room.wake_at(at + 1.0), Some(at + 1.0 + 2.0 * crate::link::PROBE_FIRST_MS));
        // The polling connection drops while the probe waits: both go, and the reconnect
        // resumes over WebSocket first.
        let mut room = polling_room();
        room.handle(Input::Compose("in flight".into()), 2.0);
        let (out, _) = probe_joins(&mut room, 2);
        assert!(out.is_empty());
        let out = room.handle(closed(close::ABNORMAL), at + 2.0);
        assert!(out.contains(&Command::DropProbe), "{out:?}");
        let out = room.handle(Input::Visible, at + 3.0);
        assert_eq!(out, [Command::Open(WS, "/ws/room?epoch=e1&offset=2".to_owned())]);
        room.handle(Input::Opened, at + 4.0);
        let out = room.handle(joined("me3", "e1", 3, true), at + 4.0);
        assert!(sent(&out).is_empty());
        let out = room.handle(message(3, "me", "in flight"), at + 4.0);
        assert!(sent(&out).is_empty(), "the room had it: not sent again");
        assert_eq!(notes(&out), [lines::recovered(1)]);
    }
}
