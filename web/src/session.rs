//! The conversation's state and what each event shows, apart from the DOM that shows it.

/// The page's wording, the tutorial's own. The end-to-end tests assert against these.
pub mod lines {
    pub const SUPPORTED: &str = "WebSocket is supported by your browser.";
    pub const UNSUPPORTED: &str = "WebSocket not supported by your browser.";
    pub const OPENED: &str = "Connection is opened ...";
    /// Followed by the message's text.
    pub const RECEIVED: &str = "Message is received: ";
    pub const CLOSED: &str = "Connection is closed ...";

    /// The line for a received text message.
    pub fn received(text: &str) -> String {
        format!("{RECEIVED}{text}")
    }
}

/// Something that happened to the connection, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The browser has (or lacks) the WebSocket API.
    Supported(bool),
    /// The connection is open.
    Opened,
    /// A text message arrived.
    Received(String),
    /// A binary message arrived (the server never sends one); its length in bytes.
    ReceivedBinary(usize),
    /// The connection is closed, cleanly or not.
    Closed { code: u16, reason: String, clean: bool },
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Open,
    Closed,
    /// The browser has no WebSocket API.
    Unsupported,
}

impl Status {
    /// A stable name, used as the log element's `data-status` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Open => "open",
            Status::Closed => "closed",
            Status::Unsupported => "unsupported",
        }
    }
}

/// The state a page shows: where the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub status: Status,
}

impl Default for Session {
    fn default() -> Self {
        Self { status: Status::Connecting }
    }
}

impl Session {
    /// Applies `event` and returns the line the page logs for it.
    pub fn apply(&mut self, event: &Event) -> String {
        match event {
            Event::Supported(true) => lines::SUPPORTED.to_owned(),
            Event::Supported(false) => {
                self.status = Status::Unsupported;
                lines::UNSUPPORTED.to_owned()
            }
            Event::Opened => {
                self.status = Status::Open;
                lines::OPENED.to_owned()
            }
            Event::Received(text) => lines::received(text),
            Event::ReceivedBinary(len) => lines::received(&format!("<{len} bytes of binary data>")),
            Event::Closed { .. } => {
                self.status = Status::Closed;
                lines::CLOSED.to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_normal_conversation_reads_like_the_tutorial() {
        let mut session = Session::default();
        let lines: Vec<String> = [
            Event::Supported(true),
            Event::Opened,
            Event::Received(wire::WELCOME.to_owned()),
            Event::Received(wire::reply(wire::HELLO)),
            Event::Closed { code: wire::close::GOING_AWAY, reason: String::new(), clean: true },
        ]
        .iter()
        .map(|event| session.apply(event))
        .collect();
        assert_eq!(
            lines,
            [
                "WebSocket is supported by your browser.",
                "Connection is opened ...",
                "Message is received: Welcome!",
                "Message is received: HELLO THERE!",
                "Connection is closed ...",
            ]
        );
        assert_eq!(session, Session { status: Status::Closed });
    }

    #[test]
    fn status_follows_the_connection() {
        let mut session = Session::default();
        assert_eq!(session.status, Status::Connecting);
        session.apply(&Event::Opened);
        assert_eq!(session.status, Status::Open);
        session.apply(&Event::Closed { code: 1006, reason: String::new(), clean: false });
        assert_eq!(session.status.as_str(), "closed");
    }

    #[test]
    fn a_browser_without_websocket_says_so() {
        let mut session = Session::default();
        assert_eq!(
            session.apply(&Event::Supported(false)),
            "WebSocket not supported by your browser."
        );
        assert_eq!(session.status, Status::Unsupported);
    }

    #[test]
    fn binary_messages_are_described_not_dumped() {
        let mut session = Session::default();
        assert_eq!(
            session.apply(&Event::ReceivedBinary(3)),
            "Message is received: <3 bytes of binary data>"
        );
    }
}
