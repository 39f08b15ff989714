//! The DOM side: mounts the page's controls, appends log lines as text, and shows a
//! [`View`](crate::session::View). It decides nothing: the session does.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element, HtmlElement, HtmlInputElement};

use crate::chart;
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
/// Most lines kept in the log; older ones are removed.
pub const LOG_LIMIT: u32 = 500;
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
        let find = |id: &str| document.get_element_by_id(id).ok_or_else(|| JsValue::from(id));
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
        let log = &self.log;
        let at_bottom = log.scroll_top() + log.client_height() + 8 >= log.scroll_height();
        let paragraph = self.document.create_element("p")?;
        paragraph.set_class_name(line.kind.as_str());
        paragraph.set_text_content(Some(&line.text));
        if let Some(rtt) = line.rtt_ms {
            paragraph.set_attribute("data-rtt", &rtt.to_string())?;
        }
        log.append_child(&paragraph)?;
        while log.child_element_count() > LOG_LIMIT {
            match log.first_element_child() {
                Some(oldest) => oldest.remove(),
                None => break,
            }
        }
        if at_bottom {
            log.set_scroll_top(log.scroll_height());
        }
        Ok(())
    }

    /// Shows the status line, the buttons' state and the round-trip chart.
    pub fn render(&self, view: &View) -> Result<(), JsValue> {
        if self.status.text_content().as_deref() != Some(&view.status_text) {
            self.status.set_text_content(Some(&view.status_text));
        }
        self.log.set_attribute("data-status", view.status.as_str())?;
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
        let text = self.input.value();
        self.input.set_value("");
        let _ = self.input.unchecked_ref::<HtmlElement>().focus();
        text
    }
}

fn set_flag(element: &Element, name: &str, on: bool) -> Result<(), JsValue> {
    if on {
        element.set_attribute(name, "")
    } else {
        element.remove_attribute(name)
    }
}
