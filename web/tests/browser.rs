//! Browser tests (wasm-bindgen-test in headless Chromium): the DOM log, and a real WebSocket
//! conversation with a real server that `cargo xtask test` starts.
//!
//! The server's URL is fixed at compile time through `WS_TEST_URL`, because the test runner
//! passes no environment to the browser.
#![cfg(target_arch = "wasm32")]

use std::ops::ControlFlow;

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web::conn;
use web::page::Log;
use web::session::Event;

wasm_bindgen_test_configure!(run_in_browser);

fn server_url() -> &'static str {
    match option_env!("WS_TEST_URL") {
        Some(url) => url,
        None => panic!(
            "WS_TEST_URL is unset: run `cargo xtask test`, which starts a server and sets it"
        ),
    }
}

/// A URL on a port where nothing listens (chosen by `cargo xtask test`; not one of the ports
/// browsers refuse to dial, so the test sees a real refused connection).
fn refused_url() -> &'static str {
    match option_env!("WS_TEST_REFUSED_URL") {
        Some(url) => url,
        None => panic!("WS_TEST_REFUSED_URL is unset: run `cargo xtask test`"),
    }
}

fn document() -> web_sys::Document {
    web_sys::window().and_then(|w| w.document()).expect("a document")
}

#[wasm_bindgen_test]
fn log_lines_are_inserted_as_text_not_html() {
    let log = Log::attach(document()).expect("log element");
    let before = log.element().child_element_count();
    log.append("<b>bold?</b> & <script>alert(1)</script>").expect("append");

    let element = log.element();
    assert_eq!(element.child_element_count(), before + 1);
    let last = element.last_element_child().expect("the new line");
    assert_eq!(last.tag_name(), "P");
    assert_eq!(last.text_content().as_deref(), Some("<b>bold?</b> & <script>alert(1)</script>"));
    assert_eq!(last.child_element_count(), 0, "markup must not become elements");
}

#[wasm_bindgen_test]
async fn real_server_greets_then_answers_hello_upper_cased() {
    let mut events = Vec::new();
    conn::run(server_url(), wire::HELLO, |event| {
        let received = matches!(event, Event::Received(_));
        events.push(event);
        let replies = events.iter().filter(|e| matches!(e, Event::Received(_))).count();
        if received && replies == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
    .expect("the socket opens");

    assert_eq!(
        events,
        [
            Event::Opened,
            Event::Received(wire::WELCOME.to_owned()),
            Event::Received(wire::reply(wire::HELLO)),
        ]
    );
}

#[wasm_bindgen_test]
async fn nothing_listening_reports_an_abnormal_close_without_opening() {
    let mut events = Vec::new();
    conn::run(refused_url(), wire::HELLO, |event| {
        events.push(event);
        ControlFlow::Continue(())
    })
    .await
    .expect("opening is attempted");

    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], Event::Closed { code, clean: false, .. } if *code == wire::close::ABNORMAL),
        "{events:?}"
    );
}
