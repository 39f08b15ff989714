//! DOM helpers shared by the echo's page ([`crate::page`]) and the room's
//! ([`crate::room_page`]): finding controls, appending to a bounded log, setting the status,
//! flags and the composer. Everything is set as text, never parsed as HTML.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element, HtmlElement, HtmlInputElement};

use crate::link::Status;

/// Most lines kept in a log; older ones are removed.
pub const LOG_LIMIT: u32 = 500;

/// The element with this `id`, or the id as the error.
pub fn find(document: &Document, id: &str) -> Result<Element, JsValue> {
    document.get_element_by_id(id).ok_or_else(|| JsValue::from(id))
}

/// Appends `paragraph` to `log`; past [`LOG_LIMIT`] lines the oldest go, and the log follows
/// new lines unless the reader has scrolled up.
pub fn append_line(log: &Element, paragraph: &Element) -> Result<(), JsValue> {
    let at_bottom = log.scroll_top() + log.client_height() + 8 >= log.scroll_height();
    log.append_child(paragraph)?;
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

/// Sets `element`'s text, unless it already says so.
pub fn set_text(element: &Element, text: &str) {
    if element.text_content().as_deref() != Some(text) {
        element.set_text_content(Some(text));
    }
}

/// Shows the status line and marks the log with the status's name (`data-status`).
pub fn show_status(
    line: &Element,
    log: &Element,
    status: Status,
    text: &str,
) -> Result<(), JsValue> {
    set_text(line, text);
    log.set_attribute("data-status", status.as_str())
}

/// Sets or removes a boolean attribute such as `disabled`.
pub fn set_flag(element: &Element, name: &str, on: bool) -> Result<(), JsValue> {
    if on {
        element.set_attribute(name, "")
    } else {
        element.remove_attribute(name)
    }
}

/// Takes the composer's text (clearing it) and keeps the focus in the field.
pub fn take_value(input: &HtmlInputElement) -> String {
    let text = input.value();
    input.set_value("");
    let _ = input.unchecked_ref::<HtmlElement>().focus();
    text
}
