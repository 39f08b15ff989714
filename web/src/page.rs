//! The DOM side: mounts the page's controls, appends log lines as text, and shows a
//! [`View`](crate::session::View). It decides nothing: the session does.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element, HtmlInputElement};

use crate::chart;
pub use crate::dom::LOG_LIMIT;
use crate::dom::{self, find, set_flag};
use crate::session::{Line, View};

/// The element the log lines go into.
pub const LOG_ID: &str = "log";
/// The status line.
pub const STATUS_ID: &str = "status";
/// The composer's form, text field and buttons.
pub const FORM_ID: &str = "composer";
pub const INPUT_ID: &str = "message";
pub const SEND_ID: &str = "send";
pub const TOGGLE_ID: &str = "toggle";
/// The round-trip chart's polyline, median line and caption.
pub const RTT_LINE_ID: &str = "rtt-line";
pub const RTT_MEDIAN_ID: &str = "rtt-median";
pub const RTT_CAPTION_ID: &str = "rtt-caption";
/// What the toggle button's `data-action` says it will do.
pub const ACTION_DISCONNECT: &str = "disconnect";
pub const ACTION_CONNECT: &str = "connect";

/// The mounted page.
#[derive(Debug, Clone)]
pub struct Page {
    document: Document,
    pub log: Element,
    pub status: Element,
    pub form: Element,
    pub input: HtmlInputElement,
    pub send: Element,
    pub toggle: Element,
    rtt_line: Element,
    rtt_median: Element,
    rtt_caption: Element,
}

impl Page {
    /// Finds the controls, which `index.html` declares (the markup is HTML's business, and it
    /// costs the wasm nothing). Nothing from the network or the user ever goes through HTML:
    /// lines and statuses are set as text.
    pub fn find(document: &Document) -> Result<Self, JsValue> {
        let find = |id| find(document, id);
        Ok(Self {
            document: document.clone(),
            log: find(LOG_ID)?,
            status: find(STATUS_ID)?,
            form: find(FORM_ID)?,
            input: find(INPUT_ID)?.dyn_into()?,
            send: find(SEND_ID)?,
            toggle: find(TOGGLE_ID)?,
            rtt_line: find(RTT_LINE_ID)?,
            rtt_median: find(RTT_MEDIAN_ID)?,
            rtt_caption: find(RTT_CAPTION_ID)?,
        })
    }

    /// Appends `line` as a new paragraph marked with its kind (and round-trip time). The text
    /// is never parsed as HTML. Past [`LOG_LIMIT`] lines the oldest go; the log follows new
    /// lines unless the reader has scrolled up.
    pub fn append(&self, line: &Line) -> Result<(), JsValue> {
        let paragraph = self.document.create_element("p")?;
        paragraph.set_class_name(line.kind.as_str());
        paragraph.set_text_content(Some(&line.text));
        if let Some(rtt) = line.rtt_ms {
            paragraph.set_attribute("data-rtt", &rtt.to_string())?;
        }
        dom::append_line(&self.log, &paragraph)
    }

    /// Shows the status line, the buttons' state and the round-trip chart.
    pub fn render(&self, view: &View) -> Result<(), JsValue> {
        dom::show_status(&self.status, &self.log, view.status, &view.status_text)?;
        let (action, label) = if view.can_disconnect {
            (ACTION_DISCONNECT, "Disconnect")
        } else {
            (ACTION_CONNECT, "Connect")
        };
        self.toggle.set_attribute("data-action", action)?;
        self.toggle.set_text_content(Some(label));
        for control in [self.input.unchecked_ref::<Element>(), &self.send, &self.toggle] {
            set_flag(control, "disabled", !view.composer_enabled)?;
        }

        let plot = chart::plot(&view.rtts);
        self.rtt_line.set_attribute("points", &plot.points)?;
        let (y, caption) = match plot.median {
            Some((y, median)) => (
                y,
                format!(
                    "Round trips: median {median} ms of the last {}, top {} ms",
                    view.rtts.len(),
                    plot.top_ms
                ),
            ),
            None => (chart::HEIGHT, "Round trips: none yet".to_owned()),
        };
        let y = y.to_string();
        self.rtt_median.set_attribute("y1", &y)?;
        self.rtt_median.set_attribute("y2", &y)?;
        self.rtt_caption.set_text_content(Some(&caption));
        Ok(())
    }

    /// Whether the tab is hidden (`document.hidden`).
    pub fn hidden(&self) -> bool {
        self.document.hidden()
    }

    /// Takes the composer's text (clearing it) and keeps the focus in the field.
    pub fn take_message(&self) -> String {
        dom::take_value(&self.input)
    }
}
