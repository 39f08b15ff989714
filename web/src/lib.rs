//! The browser client: checks for WebSocket support, connects to `/ws/` on the page's own
//! host, sends `Hello there!` and logs the conversation on the page, as the tutorial's
//! JavaScript did, in Rust.
//!
//! [`session`] holds the state and wording, [`page`] the DOM, [`conn`] the socket.

pub mod conn;
pub mod page;
pub mod session;
pub mod url;

#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use std::ops::ControlFlow;

use wasm_bindgen::JsValue;

use crate::page::Log;
use crate::session::{Event, Session};

/// Entry point, called by the binary's `main` once the bundle is loaded.
pub fn start() {
    install_panic_hook();
    if let Err(error) = try_start() {
        web_sys::console::error_2(&"cannot start the page:".into(), &error);
    }
}

/// Sends panic messages to the browser console instead of an opaque `unreachable` trap.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("panic: {info}").into());
    }));
}

fn try_start() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let document = window.document().ok_or("no document")?;
    let log = Log::attach(document)?;
    let mut session = Session::default();

    let supported = js_sys::Reflect::has(&window, &"WebSocket".into())?;
    show(&log, &mut session, Event::Supported(supported));
    if !supported {
        return Ok(());
    }

    let url = url::for_page(&window)?;
    wasm_bindgen_futures::spawn_local(async move {
        let result = conn::run(&url, wire::HELLO, |event| {
            show(&log, &mut session, event);
            ControlFlow::Continue(())
        })
        .await;
        if let Err(error) = result {
            web_sys::console::error_1(&error.to_string().into());
            show(
                &log,
                &mut session,
                Event::Closed {
                    code: wire::close::ABNORMAL,
                    reason: error.to_string(),
                    clean: false,
                },
            );
        }
    });
    Ok(())
}

/// Applies `event` to the session and shows the result. The close line is the tutorial's;
/// its code and reason go to the console.
fn show(log: &Log, session: &mut Session, event: Event) {
    if let Event::Closed { code, reason, clean } = &event {
        let detail = format!("WebSocket closed: code {code}, reason \"{reason}\", clean {clean}");
        web_sys::console::info_1(&detail.into());
    }
    let line = session.apply(&event);
    let shown = log.append(&line).and_then(|()| log.set_status(session.status));
    if let Err(error) = shown {
        web_sys::console::error_2(&"cannot update the page:".into(), &error);
    }
}
