//! The application, apart from any transport: what each endpoint greets a connection with and
//! what it does with each message it receives.
//!
//! The echo at `/ws/` is the pure [`respond`]: a message in, a reply out. The room at
//! `/ws/room` is a [`Member`] of the [`crate::room::Room`]: its messages are published, and
//! everything it is sent comes from its mailbox. A transport (the WebSocket loop in
//! [`crate::connection`]) is a pump between its peer and an [`App`]; it decides nothing.

use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wire::close;

use crate::mailbox::End;
use crate::room::{Member, Refused};

/// What the echo does with messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The tutorial: greet with `Welcome!`, answer text upper-cased, refuse binary.
    Tutorial,
    /// Conformance testing (`--plain-echo`): no greeting, every message echoed unchanged.
    PlainEcho,
}

/// What the transport does with one incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this message back.
    Send(Message),
    /// Publish this text to the room (the room sends it back to everyone, this peer included).
    Publish(Utf8Bytes),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
    /// The peer started the closing handshake with this code (`None`: no code given).
    PeerClosed(Option<u16>),
    /// Nothing to send (tungstenite answers pings itself; pongs only prove the peer is alive).
    Nothing,
}

/// The echo's rule for one message.
pub fn respond(mode: Mode, message: Message) -> Action {
    match (mode, message) {
        (Mode::Tutorial, Message::Text(text)) => Action::Send(Message::text(wire::reply(&text))),
        (Mode::Tutorial, Message::Binary(_)) => {
            Action::Close(close::UNSUPPORTED_DATA, close::REASON_BINARY)
        }
        (Mode::PlainEcho, message @ (Message::Text(_) | Message::Binary(_))) => {
            Action::Send(message)
        }
        (_, message) => control(message),
    }
}

/// The room's rule for one message: text is published as it is, binary refused.
pub fn respond_in_room(message: Message) -> Action {
    match message {
        Message::Text(text) => Action::Publish(text),
        Message::Binary(_) => Action::Close(close::UNSUPPORTED_DATA, close::REASON_BINARY),
        message => control(message),
    }
}

fn control(message: Message) -> Action {
    match message {
        Message::Close(frame) => Action::PeerClosed(frame.map(|f| f.code.into())),
        _ => Action::Nothing,
    }
}

/// The close code and reason for a mailbox that was ended.
pub fn close_for_end(end: End) -> (u16, &'static str) {
    match end {
        End::Slow => (wire::room::CLOSE_SLOW, wire::room::REASON_SLOW),
        End::Reset => (wire::room::CLOSE_RESET, wire::room::REASON_RESET),
        End::Closed => (close::GOING_AWAY, close::REASON_SHUTDOWN),
    }
}

/// One connection's application.
#[derive(Debug)]
pub enum App {
    Echo(Mode),
    Room { member: Member, greeting: Vec<Utf8Bytes> },
}

impl App {
    /// The frames a new connection is greeted with: `Welcome!` (none in plain-echo mode), or
    /// the room's `joined` and history.
    pub fn take_greeting(&mut self) -> Vec<Utf8Bytes> {
        match self {
            App::Echo(Mode::Tutorial) => vec![Utf8Bytes::from_static(wire::WELCOME)],
            App::Echo(Mode::PlainEcho) => Vec::new(),
            App::Room { greeting, .. } => std::mem::take(greeting),
        }
    }

    /// What to do with one message.
    pub fn respond(&self, message: Message) -> Action {
        match self {
            App::Echo(mode) => respond(*mode, message),
            App::Room { .. } => respond_in_room(message),
        }
    }

    /// Whether frames can arrive that are not replies (the room's mailbox).
    pub fn has_mailbox(&self) -> bool {
        matches!(self, App::Room { .. })
    }

    /// The next frame pushed to this connection, or why it must close. Never completes for the
    /// echo (see [`App::has_mailbox`]).
    pub async fn pushed(&mut self) -> Result<Utf8Bytes, End> {
        match self {
            App::Echo(_) => std::future::pending().await,
            App::Room { member, .. } => member.next().await,
        }
    }

    /// A pushed frame that is already waiting.
    pub fn try_pushed(&mut self) -> Option<Utf8Bytes> {
        match self {
            App::Echo(_) => None,
            App::Room { member, .. } => member.try_next(),
        }
    }

    /// Publishes `text`; the `refused` frame to send back if it was not.
    pub async fn publish(&mut self, text: &str) -> Option<Utf8Bytes> {
        match self {
            App::Echo(_) => None,
            App::Room { member, .. } => match member.publish(text).await {
                Ok(()) => None,
                Err(refused @ (Refused::Rate | Refused::Broker)) => {
                    Some(Utf8Bytes::from(wire::room::refused(refused.reason())))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    use super::*;

    #[test]
    fn text_is_answered_upper_cased() {
        assert_eq!(
            respond(Mode::Tutorial, Message::text("straße")),
            Action::Send(Message::text("STRASSE"))
        );
    }

    #[test]
    fn binary_is_refused_with_1003() {
        let action = respond(Mode::Tutorial, Message::binary(vec![1, 2, 3]));
        assert_eq!(action, Action::Close(close::UNSUPPORTED_DATA, close::REASON_BINARY));
        assert_eq!(respond_in_room(Message::binary(vec![1])), action);
    }

    #[test]
    fn room_text_is_published_as_typed() {
        assert_eq!(
            respond_in_room(Message::text("{\"a\":1}")),
            Action::Publish("{\"a\":1}".into())
        );
    }

    #[test]
    fn plain_echo_sends_text_and_binary_back_unchanged() {
        for message in [Message::text("straße"), Message::binary(vec![0, 159, 146, 150])] {
            assert_eq!(respond(Mode::PlainEcho, message.clone()), Action::Send(message));
        }
    }

    #[test]
    fn close_frames_report_their_code() {
        let frame = CloseFrame { code: close::NORMAL.into(), reason: "bye".into() };
        for mode in [Mode::Tutorial, Mode::PlainEcho] {
            assert_eq!(
                respond(mode, Message::Close(Some(frame.clone()))),
                Action::PeerClosed(Some(close::NORMAL))
            );
            assert_eq!(respond(mode, Message::Close(None)), Action::PeerClosed(None));
        }
        assert_eq!(respond_in_room(Message::Close(None)), Action::PeerClosed(None));
    }

    #[test]
    fn pings_and_pongs_need_no_answer_from_the_application() {
        assert_eq!(respond(Mode::Tutorial, Message::Ping(vec![1].into())), Action::Nothing);
        assert_eq!(respond(Mode::PlainEcho, Message::Pong(vec![1].into())), Action::Nothing);
        assert_eq!(respond_in_room(Message::Pong(vec![1].into())), Action::Nothing);
    }

    #[test]
    fn ended_mailboxes_close_with_their_code() {
        assert_eq!(close_for_end(End::Slow).0, 1013);
        assert_eq!(close_for_end(End::Reset).0, 1012);
        assert_eq!(close_for_end(End::Closed).0, close::GOING_AWAY);
    }
}
