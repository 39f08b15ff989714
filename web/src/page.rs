//! The DOM side: the `#log` element that shows one line per event, inserted as text.

use wasm_bindgen::JsValue;
use web_sys::{Document, Element};

use crate::session::Status;

/// The id of the element the log lines go into (`<div id="log">` in `index.html`).
pub const LOG_ID: &str = "log";

/// The page's log: a container element that receives one `<p>` per line.
#[derive(Debug, Clone)]
pub struct Log {
    document: Document,
    element: Element,
}

impl Log {
    /// Finds `#log` in `document`, or creates it at the end of `<body>`.
    pub fn attach(document: Document) -> Result<Self, JsValue> {
        let element = match document.get_element_by_id(LOG_ID) {
            Some(element) => element,
            None => {
                let element = document.create_element("div")?;
                element.set_id(LOG_ID);
                let body = document.body().ok_or("the page has no <body>")?;
                body.append_child(&element)?;
                element
            }
        };
        Ok(Self { document, element })
    }

    /// Appends `line` as a new paragraph. The text is never parsed as HTML.
    pub fn append(&self, line: &str) -> Result<(), JsValue> {
        let paragraph = self.document.create_element("p")?;
        paragraph.set_text_content(Some(line));
        self.element.append_child(&paragraph)?;
        Ok(())
    }

    /// Shows the connection status as the element's `data-status` attribute (for styling and
    /// for tests that wait on it).
    pub fn set_status(&self, status: Status) -> Result<(), JsValue> {
        self.element.set_attribute("data-status", status.as_str())
    }

    /// The element the lines go into.
    pub fn element(&self) -> &Element {
        &self.element
    }
}
