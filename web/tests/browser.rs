//! Browser tests (wasm-bindgen-test in headless Chromium): the page's DOM, the driver without
//! WebSocket, and real WebSocket conversations with a real server that `cargo xtask test`
//! starts. (The session's state-machine tests run here too, from the library's unit tests.)
//!
//! The server's URL is fixed at compile time through `WS_TEST_URL`, because the test runner
//! passes no environment to the browser.
#![cfg(target_arch = "wasm32")]

use std::ops::ControlFlow;

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web::conn;
use web::page::{Page, LOG_LIMIT};
use web::room::{self, Entry, Frame};
use web::room_page::RoomPage;
use web::session::{lines, Input, Kind, Line, Status, View};

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

fn window() -> web_sys::Window {
    web_sys::window().expect("a window")
}

/// The real `index.html`, whose `<main id="app">` holds the page's controls.
const INDEX_HTML: &str = include_str!("../../index.html");

/// A fresh copy of the markup from `open` to `close` in `index.html` in the test document,
/// replacing the element with `id` that a previous test mounted.
fn mount(id: &str, open: &str, close: &str) {
    let document = window().document().expect("a document");
    if let Some(old) = document.get_element_by_id(id) {
        old.remove();
    }
    let start = INDEX_HTML.find(open).expect("index.html has the element");
    let end = INDEX_HTML[start..].find(close).expect("its end") + start + close.len();
    let holder = document.create_element("div").expect("element");
    holder.set_inner_html(&INDEX_HTML[start..end]);
    document.body().expect("body").append_child(&holder).expect("append");
}

/// The echo's controls from `index.html`, found by [`Page::find`] as the real page finds them.
fn mounted() -> Page {
    mount("app", "<main id=\"app\">", "</main>");
    Page::find(&window().document().expect("a document")).expect("the controls")
}

/// The room's controls from `index.html`.
fn mounted_room() -> RoomPage {
    mount("room", "<section id=\"room\"", "</section>");
    RoomPage::find(&window().document().expect("a document")).expect("the room's controls")
}

/// The page's socket folder for the test server (`ws://ADDR/`).
fn socket_base() -> String {
    server_url().strip_suffix("ws/").expect("WS_TEST_URL ends in ws/").to_owned()
}

fn line(kind: Kind, text: &str) -> Line {
    Line { kind, text: text.to_owned(), rtt_ms: None }
}

#[wasm_bindgen_test]
fn log_lines_are_inserted_as_text_not_html() {
    let page = mounted();
    let markup = "<img src=x onerror=alert(1)> & <script>alert(1)</script>";
    page.append(&line(Kind::Received, markup)).expect("append");
    let last = page.log.last_element_child().expect("the new line");
    assert_eq!(last.tag_name(), "P");
    assert_eq!(last.class_name(), "received");
    assert_eq!(last.text_content().as_deref(), Some(markup));
    assert_eq!(last.child_element_count(), 0, "markup must not become elements");
}

#[wasm_bindgen_test]
fn replies_carry_their_round_trip_time_and_the_log_is_capped() {
    let page = mounted();
    let reply = Line { kind: Kind::Received, text: lines::received("HI"), rtt_ms: Some(12) };
    page.append(&reply).expect("append");
    let last = page.log.last_element_child().expect("line");
    assert_eq!(last.get_attribute("data-rtt").as_deref(), Some("12"));
    assert_eq!(
        last.text_content().as_deref(),
        Some("Message is received: HI"),
        "the text stays the tutorial's"
    );

    for i in 0..LOG_LIMIT + 20 {
        page.append(&line(Kind::Sent, &i.to_string())).expect("append");
    }
    assert_eq!(page.log.child_element_count(), LOG_LIMIT);
    let first = page.log.first_element_child().expect("oldest");
    assert_eq!(first.text_content().as_deref(), Some("20"), "the oldest lines went first");
}

#[wasm_bindgen_test]
fn the_view_sets_status_buttons_and_chart() {
    let page = mounted();
    let view = View {
        status: Status::Reconnecting,
        status_text: "Closed (1006), reconnecting in 3 s · 2 queued".to_owned(),
        can_disconnect: true,
        composer_enabled: true,
        rtts: vec![10, 20, 5],
    };
    page.render(&view).expect("render");
    assert_eq!(page.status.text_content().as_deref(), Some(view.status_text.as_str()));
    assert_eq!(page.status.get_attribute("role").as_deref(), Some("status"));
    assert_eq!(page.log.get_attribute("data-status").as_deref(), Some("reconnecting"));
    assert_eq!(page.toggle.text_content().as_deref(), Some("Disconnect"));
    assert!(!page.input.has_attribute("disabled"));
    let caption =
        window().document().and_then(|d| d.get_element_by_id("rtt-caption")).expect("caption");
    assert_eq!(
        caption.text_content().as_deref(),
        Some("Round trips: median 10 ms of the last 3, top 20 ms")
    );

    page.render(&View { can_disconnect: false, composer_enabled: false, ..view }).expect("render");
    assert_eq!(page.toggle.text_content().as_deref(), Some("Connect"));
    assert!(page.input.has_attribute("disabled"));
    assert!(page.send.has_attribute("disabled"));
}

#[wasm_bindgen_test]
async fn without_websocket_the_page_says_so_and_disables_the_composer() {
    // Take the API away, as an old browser would lack it.
    let window = window();
    let api = js_sys::Reflect::get(&window, &"WebSocket".into()).expect("WebSocket");
    js_sys::Reflect::delete_property(&window, &"WebSocket".into()).expect("delete");
    let supported = web::websocket_supported(&window);
    js_sys::Reflect::set(&window, &"WebSocket".into(), &api).expect("restore");
    assert!(!supported);

    let (page, room_page) = (mounted(), mounted_room());
    let (log, input) = (page.log.clone(), page.input.clone());
    let room_input = room_page.input.clone();
    wasm_bindgen_futures::spawn_local(web::run(page, room_page, socket_base(), supported, 1));
    // The driver handles its first inputs before it first waits.
    gloo_timers::future::TimeoutFuture::new(0).await;
    let first = log.first_element_child().and_then(|p| p.text_content());
    assert_eq!(first.as_deref(), Some(lines::UNSUPPORTED));
    assert_eq!(log.child_element_count(), 1);
    assert_eq!(log.get_attribute("data-status").as_deref(), Some("unsupported"));
    assert!(input.has_attribute("disabled"));
    assert!(room_input.has_attribute("disabled"));
}

#[wasm_bindgen_test]
async fn real_server_greets_then_answers_hello_upper_cased() {
    let mut inputs = Vec::new();
    conn::run(server_url(), wire::HELLO, |input| {
        let received = matches!(input, Input::Received(_));
        inputs.push(input);
        let replies = inputs.iter().filter(|i| matches!(i, Input::Received(_))).count();
        if received && replies == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
    .expect("the socket opens");

    assert_eq!(
        inputs,
        [
            Input::Opened,
            Input::Received(wire::WELCOME.to_owned()),
            Input::Received(wire::reply(wire::HELLO)),
        ]
    );
}

#[wasm_bindgen_test]
async fn nothing_listening_reports_an_abnormal_close_without_opening() {
    let mut inputs = Vec::new();
    conn::run(refused_url(), wire::HELLO, |input| {
        inputs.push(input);
        ControlFlow::Continue(())
    })
    .await
    .expect("opening is attempted");

    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(
        matches!(&inputs[0], Input::Closed { code, clean: false, .. } if *code == wire::close::ABNORMAL),
        "{inputs:?}"
    );
}

/// The server refuses a message over its limit with 1009 and its reason, and the browser gets
/// both (it used to get 1006: the server dropped the socket with the message unread, and the
/// reset discarded the Close frame). Whether Chromium then calls the close clean is its own
/// call and depends on timing: the server's Close can reach it while it is still sending the
/// message (it sends a 2 MiB message in 64 KiB frames), and then it stops mid-message and closes
/// the TCP connection without a closing handshake of its own. The server's side of this (read
/// and discard until the peer's FIN, never a reset) is tested with a native client that is
/// still sending, in server/tests/it/limits.rs.
#[wasm_bindgen_test]
async fn an_oversized_message_is_refused_with_a_1009_the_browser_actually_receives() {
    let limit = wire::limits::MAX_MESSAGE_BYTES;
    for size in [70 * 1024, 2 * 1024 * 1024] {
        let mut inputs = Vec::new();
        conn::run(server_url(), &"a".repeat(size), |input| {
            inputs.push(input);
            ControlFlow::Continue(())
        })
        .await
        .expect("the socket opens");

        let closed = inputs.iter().find_map(|input| match input {
            Input::Closed { code, reason, .. } => Some((*code, reason.clone())),
            _ => None,
        });
        assert_eq!(
            closed,
            Some((wire::close::MESSAGE_TOO_BIG, wire::close::reason_too_big(limit))),
            "{size} bytes: {inputs:?}"
        );
    }
}

#[wasm_bindgen_test]
fn room_messages_show_sender_time_and_whose_as_text() {
    let page = mounted_room();
    let markup = "<img src=x onerror=alert(1)>";
    let entry = |mine| Entry::Message {
        offset: 7,
        time_ms: 1_700_000_000_000,
        from: "guest-7f3a".to_owned(),
        text: markup.to_owned(),
        mine,
    };
    page.append(&entry(true)).expect("append");
    let last = page.log.last_element_child().expect("the message");
    assert_eq!(last.class_name(), "message mine");
    assert_eq!(last.get_attribute("data-offset").as_deref(), Some("7"));
    let part = |selector: &str| {
        last.query_selector(selector).expect("selector").and_then(|e| e.text_content())
    };
    assert_eq!(part("b").as_deref(), Some("guest-7f3a"));
    assert_eq!(part("span").as_deref(), Some(markup));
    assert_eq!(last.query_selector("img").expect("selector"), None, "markup stays text");
    let date = js_sys::Date::new(&1_700_000_000_000.0.into());
    let clock = format!("{:02}:{:02}", date.get_hours(), date.get_minutes());
    assert_eq!(part("time"), Some(clock));

    page.append(&entry(false)).expect("append");
    assert_eq!(page.log.last_element_child().expect("line").class_name(), "message");
    page.append(&Entry::Note("Joined the room as g".to_owned())).expect("append");
    let note = page.log.last_element_child().expect("note");
    assert_eq!(
        (note.class_name(), note.text_content()),
        ("note".into(), Some("Joined the room as g".into()))
    );
}

#[wasm_bindgen_test]
fn the_room_view_sets_status_presence_and_composer() {
    let page = mounted_room();
    let view = room::View {
        status: Status::Open,
        status_text: "Open".to_owned(),
        presence: "3 online · you are g".to_owned(),
        composer_enabled: true,
    };
    page.render(&view).expect("render");
    assert_eq!(page.status.text_content().as_deref(), Some("Open"));
    assert_eq!(page.log.get_attribute("data-status").as_deref(), Some("open"));
    assert_eq!(page.presence.text_content().as_deref(), Some("3 online · you are g"));
    assert!(!page.input.has_attribute("disabled"));
    page.render(&room::View { composer_enabled: false, ..view }).expect("render");
    assert!(page.send.has_attribute("disabled"));
}

#[wasm_bindgen_test]
fn room_frames_decode_with_the_browsers_json_parse() {
    use wire::room as w;
    assert_eq!(
        conn::decode_frame(&w::joined("guest-1", "e1", 5, 2, true)),
        Some(Frame::Joined {
            you: "guest-1".into(),
            epoch: "e1".into(),
            offset: 5,
            online: 2,
            recovered: true
        })
    );
    assert_eq!(
        conn::decode_frame(&w::message(6, 1_700_000_000_000, "g", "a\u{1}\"b🎉")),
        Some(Frame::Message {
            offset: 6,
            time: 1_700_000_000_000.0,
            from: "g".into(),
            text: "a\u{1}\"b🎉".into()
        })
    );
    assert_eq!(conn::decode_frame(&w::presence(3)), Some(Frame::Presence { online: 3 }));
    assert_eq!(
        conn::decode_frame(&w::refused(w::REFUSED_RATE)),
        Some(Frame::Refused { reason: w::REFUSED_RATE.into() })
    );
    for bad in [
        "",
        "not json",
        "null",
        "5",
        "\"joined\"",
        "[]",
        "{}",
        r#"{"type":"shout"}"#,
        r#"{"type":"presence"}"#,
        r#"{"type":"presence","online":"3"}"#,
        r#"{"type":"presence","online":-1}"#,
        r#"{"type":"presence","online":1.5}"#,
        r#"{"type":"message","offset":1,"time":2,"from":"g"}"#,
    ] {
        assert_eq!(conn::decode_frame(bad), None, "{bad}");
    }
}

/// The real server's room: `joined` first, then this page's own message back as its
/// acknowledgement; a second connection resuming from that message is recovered with nothing
/// missed.
#[wasm_bindgen_test]
async fn the_real_room_joins_echoes_and_recovers() {
    let url = web::url::socket_url(&socket_base(), wire::room::PATH);
    let text = format!("browser test {}", js_sys::Math::random());
    let mut frames = Vec::new();
    conn::run(&url, &text, |input| {
        let done = matches!(&input, Input::Received(t) if t.contains(&text));
        if let Some(room::Input::Frame(frame)) = conn::room_input(input) {
            frames.push(frame);
        }
        if done {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
    .expect("the socket opens");
    let Some(Frame::Joined { epoch, recovered: false, .. }) = frames.first().cloned() else {
        panic!("joined first: {frames:?}")
    };
    let Some(Frame::Message { offset, text: echoed, .. }) = frames.last().cloned() else {
        panic!("the message last: {frames:?}")
    };
    assert_eq!(echoed, text);

    let resume = wire::room::Resume { epoch: epoch.clone(), offset };
    let url = web::url::socket_url(&socket_base(), &wire::room::path_with_resume(Some(&resume)));
    let mut first = None;
    conn::run(&url, "", |input| match conn::room_input(input) {
        Some(room::Input::Frame(frame)) => {
            first = Some(frame);
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .await
    .expect("the socket opens");
    assert!(
        matches!(&first, Some(Frame::Joined { epoch: e, offset: o, recovered: true, .. }) if *e == epoch && *o >= offset),
        "{first:?}"
    );
}
