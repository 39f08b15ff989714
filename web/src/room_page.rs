//! The room's DOM: its log of messages (sender, time, yours marked) and notes, its status
//! line, who is online, and its composer. It decides nothing: [`crate::room`] does.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element, HtmlInputElement};

use crate::dom::{self, find, set_flag, set_text};
use crate::room::{Entry, View};

/// The room's log, status line, presence line, composer form, field and button.
pub const LOG_ID: &str = "room-log";
pub const STATUS_ID: &str = "room-status";
pub const PRESENCE_ID: &str = "room-online";
pub const FORM_ID: &str = "room-composer";
pub const INPUT_ID: &str = "room-message";
pub const SEND_ID: &str = "room-send";

/// The mounted room view.
#[derive(Debug, Clone)]
pub struct RoomPage {
    document: Document,
    pub log: Element,
    pub status: Element,
    pub presence: Element,
    pub form: Element,
    pub input: HtmlInputElement,
    pub send: Element,
}

impl RoomPage {
    /// Finds the room's controls, which `index.html` declares.
    pub fn find(document: &Document) -> Result<Self, JsValue> {
        let find = |id| find(document, id);
        Ok(Self {
            document: document.clone(),
            log: find(LOG_ID)?,
            status: find(STATUS_ID)?,
            presence: find(PRESENCE_ID)?,
            form: find(FORM_ID)?,
            input: find(INPUT_ID)?.dyn_into()?,
            send: find(SEND_ID)?,
        })
    }

    /// Appends an entry: a message as `<p class="message mine" data-offset="7"><time>12:03
    /// </time><b>guest-7f3a</b><span>text</span></p>` (`mine` only for this page's), a note
    /// as `<p class="note">`. Everything is set as text; the log keeps [`LOG_LIMIT`](crate::page::LOG_LIMIT) lines and
    /// follows new ones unless the reader scrolled up.
    pub fn append(&self, entry: &Entry) -> Result<(), JsValue> {
        let paragraph = self.document.create_element("p")?;
        match entry {
            Entry::Message { offset, time_ms, from, text, mine } => {
                paragraph.set_class_name(if *mine { "message mine" } else { "message" });
                paragraph.set_attribute("data-offset", &offset.to_string())?;
                let date = js_sys::Date::new(&JsValue::from_f64(*time_ms as f64));
                let time = self.child(&paragraph, "time", &clock(&date))?;
                if let Some(iso) = date.to_iso_string().as_string() {
                    time.set_attribute("datetime", &iso)?;
                }
                self.child(&paragraph, "b", from)?;
                self.child(&paragraph, "span", text)?;
            }
            Entry::Note(text) => {
                paragraph.set_class_name("note");
                paragraph.set_text_content(Some(text));
            }
        }
        dom::append_line(&self.log, &paragraph)
    }

    fn child(&self, parent: &Element, tag: &str, text: &str) -> Result<Element, JsValue> {
        let element = self.document.create_element(tag)?;
        element.set_text_content(Some(text));
        parent.append_child(&element)?;
        Ok(element)
    }

    /// Shows the status line, who is online, and whether the composer is usable.
    pub fn render(&self, view: &View) -> Result<(), JsValue> {
        dom::show_status(&self.status, &self.log, view.status, &view.status_text)?;
        set_text(&self.presence, &view.presence);
        for control in [self.input.unchecked_ref::<Element>(), &self.send] {
            set_flag(control, "disabled", !view.composer_enabled)?;
        }
        Ok(())
    }

    /// Takes the composer's text (clearing it) and keeps the focus in the field.
    pub fn take_message(&self) -> String {
        dom::take_value(&self.input)
    }
}

/// `HH:MM` in the browser's time zone.
fn clock(date: &js_sys::Date) -> String {
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}
