//! Long and short polling under `/poll/` against the real server: order and batching, the
//! one-waiting-GET rule, timeouts, expiry, unknown sessions, limits, origin, shutdown, the room
//! over polling beside WebSocket members, and the metrics by transport.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use futures_util::{SinkExt, StreamExt};
use server::testing::{request, Reply};
use server::Config;
use tokio_tungstenite::tungstenite::Message;
use wire::poll::{self as contract, Item};
use wire::room::Frame;

use crate::helpers::{connect, metric, next, spawn_with, test_config, TestServer};

/// A fresh session id (unique within this test binary, the shape clients make).
fn sid() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test{:028x}",
        (u128::from(std::process::id()) << 32) + N.fetch_add(1, Ordering::Relaxed) as u128
    )
}

fn url(server: &TestServer, path: &str) -> String {
    server.url(path)
}

async fn open(server: &TestServer, sid: &str, open: contract::Open) -> Reply {
    request(Method::POST, &url(server, &contract::open_path(sid, open)), &[], "").await
}

async fn get(server: &TestServer, sid: &str, wait: bool) -> Reply {
    let path = contract::session_path(sid);
    let path = if wait { path } else { format!("{path}?{}=0", contract::QUERY_WAIT) };
    request(Method::GET, &url(server, &path), &[], "").await
}

async fn post(server: &TestServer, sid: &str, texts: &[&str]) -> Reply {
    let mut batch = String::new();
    for text in texts {
        contract::push_message(&mut batch, text);
    }
    request(Method::POST, &url(server, &contract::session_path(sid)), &[], &batch).await
}

/// The messages of a batch (a close item fails the test).
fn messages(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    contract::decode(&reply.body)
        .expect("a well-formed batch")
        .into_iter()
        .map(|item| match item {
            Item::Message(text) => text.to_owned(),
            Item::Close(code, reason) => panic!("unexpected close {code} {reason}"),
        })
        .collect()
}

async fn open_echo(server: &TestServer) -> String {
    let sid = sid();
    let opened = open(server, &sid, contract::Open::Echo).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    assert_eq!(messages(&get(server, &sid, true).await), [wire::WELCOME]);
    sid
}

/// A long poll on its own task, returned once the server counts it as waiting (the session's
/// second long poll: the first took the greeting).
async fn poll_in_background(server: &TestServer, sid: &str) -> tokio::task::JoinHandle<Reply> {
    let url = url(server, &contract::session_path(sid));
    let waiting = tokio::spawn(async move { request(Method::GET, &url, &[], "").await });
    server.wait_for_metric("poll_requests_total{kind=\"long\"}", 2.0).await;
    waiting
}

fn config() -> Config {
    Config { poll_timeout: Duration::from_secs(5), ..test_config() }
}

#[tokio::test]
async fn the_echo_answers_in_order_and_batches_what_waits() {
    let server = spawn_with(config()).await;
    let sid = open_echo(&server).await;
    for batch in [&["Hello there!"][..], &["one", "two", "straße", "m3:abc"]] {
        assert_eq!(post(&server, &sid, batch).await.status, StatusCode::NO_CONTENT);
    }
    // All five replies were queued before this GET: one batch, in order.
    assert_eq!(
        messages(&get(&server, &sid, true).await),
        ["HELLO THERE!", "ONE", "TWO", "STRASSE", "M3:ABC"]
    );
    let reply = get(&server, &sid, false).await;
    assert_eq!(messages(&reply), Vec::<String>::new(), "nothing left");
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    let head: usize = reply
        .header(contract::HEADER_REQUEST_HEAD_BYTES.parse().expect("name"))
        .parse()
        .expect("a number");
    assert!((40..400).contains(&head), "the request head's size: {head}");
}

#[tokio::test]
async fn a_long_poll_waits_for_the_reply_and_only_one_may_wait() {
    let server = spawn_with(config()).await;
    let sid = open_echo(&server).await;
    let waiting = poll_in_background(&server, &sid).await;
    let second = get(&server, &sid, true).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.body.trim(), contract::POLL_PENDING);
    assert!(!waiting.is_finished(), "the first GET still waits");
    assert_eq!(post(&server, &sid, &["late"]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&waiting.await.expect("GET")), ["LATE"]);
    // Once answered, the next GET may wait again.
    assert_eq!(messages(&get(&server, &sid, false).await), Vec::<String>::new());
}

#[tokio::test]
async fn a_long_poll_with_nothing_to_send_answers_empty_at_the_timeout() {
    let server =
        spawn_with(Config { poll_timeout: Duration::from_millis(300), ..test_config() }).await;
    let sid = open_echo(&server).await;
    let reply = get(&server, &sid, true).await;
    assert_eq!(messages(&reply), Vec::<String>::new());
    // The session lives on.
    assert_eq!(post(&server, &sid, &["still here"]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&get(&server, &sid, true).await), ["STILL HERE"]);
}

#[tokio::test]
async fn a_silent_session_expires_and_then_is_unknown() {
    let server = spawn_with(Config {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        poll_timeout: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let sid = open_echo(&server).await;
    let metrics = server.wait_for_metric("poll_sessions_ended_total{why=\"expired\"}", 1.0).await;
    assert_eq!(metric(&metrics, "sessions_open{transport=\"polling\"}"), 0.0);
    let reply = get(&server, &sid, false).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body.trim(), contract::UNKNOWN_SESSION);
    assert_eq!(post(&server, &sid, &["x"]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_waiting_long_poll_keeps_its_session_alive() {
    let server = spawn_with(Config {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        poll_timeout: Duration::from_millis(900),
        ..test_config()
    })
    .await;
    let sid = open_echo(&server).await;
    // Three idle timeouts pass while the GET waits: the session is not silent.
    assert_eq!(messages(&get(&server, &sid, true).await), Vec::<String>::new());
    assert_eq!(post(&server, &sid, &["alive"]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&get(&server, &sid, true).await), ["ALIVE"]);
}

#[tokio::test]
async fn bad_requests_get_their_own_status_and_reason() {
    let server = spawn_with(config()).await;
    let sid = open_echo(&server).await;
    let unknown = get(&server, &self::sid(), false).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let status = |reply: Reply| reply.status;
    assert_eq!(
        status(request(Method::GET, &url(&server, "/poll/short"), &[], "").await),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(open(&server, &sid, contract::Open::Echo).await),
        StatusCode::CONFLICT,
        "an id in use"
    );
    let wrong = request(
        Method::GET,
        &url(&server, &contract::open_path(&sid, contract::Open::Echo)),
        &[],
        "",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header(header::ALLOW), "POST");
    let session = url(&server, &contract::session_path(&sid));
    let put = request(Method::PUT, &session, &[], "").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    for (body, why) in [
        ("m5:ab", "malformed batch at byte 0"),
        ("c4:1000", "messages only"),
        ("x", "malformed"),
        ("é1:a", "malformed batch at byte 0"),
    ] {
        let reply = request(Method::POST, &session, &[], body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.body.contains(why), "{body}: {}", reply.body);
    }
    let room = request(
        Method::POST,
        &url(
            &server,
            &format!("{}?epoch=a", contract::open_path(&self::sid(), contract::Open::Room)),
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(room.status, StatusCode::BAD_REQUEST);
    assert!(room.body.contains("go together"), "{}", room.body);
    // The session is unharmed by all of it.
    assert_eq!(post(&server, &sid, &["fine"]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&get(&server, &sid, true).await), ["FINE"]);
    let metrics = server.scrape().await;
    assert_eq!(metric(&metrics, "poll_refused_total{reason=\"malformed\"}"), 6.0);
    assert_eq!(metric(&metrics, "poll_refused_total{reason=\"method\"}"), 2.0);
    assert_eq!(metric(&metrics, "poll_refused_total{reason=\"taken\"}"), 1.0);
    assert_eq!(metric(&metrics, "poll_refused_total{reason=\"unknown\"}"), 1.0);
}

#[tokio::test]
async fn a_message_over_the_limit_gets_413_with_the_1009_reason() {
    let server = spawn_with(Config { max_message_size: 1024, ..config() }).await;
    let sid = open_echo(&server).await;
    let big = "x".repeat(1025);
    let reply = post(&server, &sid, &[&big]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body.trim(), wire::close::reason_too_big(1024));
    // A body far over the limit is refused as it arrives, not read to its end.
    let huge = "m9:123456789".repeat(100_000);
    let session = url(&server, &contract::session_path(&sid));
    let reply = request(Method::POST, &session, &[], &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // At the limit is fine.
    let most = "y".repeat(1024);
    assert_eq!(post(&server, &sid, &[&most]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&get(&server, &sid, true).await), ["Y".repeat(1024)]);
}

#[tokio::test]
async fn sessions_and_websockets_share_the_connection_limit() {
    let server = spawn_with(Config { max_connections: Some(1), ..config() }).await;
    let sid = open_echo(&server).await;
    let refused = open(&server, &self::sid(), contract::Open::Echo).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header(header::RETRY_AFTER), "5");
    let upgrade = tokio_tungstenite::connect_async(server.ws_url()).await;
    assert!(upgrade.is_err(), "the WebSocket is refused too");
    // Closing the session frees its slot.
    let deleted =
        request(Method::DELETE, &url(&server, &contract::session_path(&sid)), &[], "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    server.wait_for_metric("poll_sessions_ended_total{why=\"closed\"}", 1.0).await;
    let _socket = connect(&server.ws_url()).await;
    assert_eq!(get(&server, &sid, false).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_origin_check_applies_to_polling() {
    let server = spawn_with(config()).await;
    let sid = sid();
    let path = url(&server, &contract::open_path(&sid, contract::Open::Echo));
    let refused = request(Method::POST, &path, &[("origin", "http://evil.example")], "").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&server, &sid, false).await.status, StatusCode::NOT_FOUND, "nothing opened");
    let origin = format!("http://{}", server.addr);
    let same = request(Method::POST, &path, &[("origin", &origin)], "").await;
    assert_eq!(same.status, StatusCode::CREATED);
    assert_eq!(metric(&server.scrape().await, "poll_refused_total{reason=\"origin\"}"), 1.0);
}

#[tokio::test]
async fn shutdown_answers_a_waiting_poll_with_1001() {
    let server = spawn_with(config()).await;
    let sid = open_echo(&server).await;
    let waiting = poll_in_background(&server, &sid).await;
    let stopped = tokio::spawn(server.stop());
    let reply = waiting.await.expect("GET");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        contract::decode(&reply.body).expect("batch"),
        [Item::Close(wire::close::GOING_AWAY, wire::close::REASON_SHUTDOWN)]
    );
    stopped.await.expect("stopped");
}

#[tokio::test]
async fn a_polling_member_shares_the_room_with_websocket_members() {
    let server = spawn_with(config()).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(server.room_url()).await.expect("join");
    let Frame::Joined { .. } = frame(next(&mut socket).await) else { panic!("joined first") };

    let sid = sid();
    assert_eq!(open(&server, &sid, contract::Open::Room).await.status, StatusCode::CREATED);
    let greeting = messages(&get(&server, &sid, true).await);
    let Frame::Joined { you, epoch, .. } = frame(Message::text(greeting[0].clone())) else {
        panic!("joined first: {greeting:?}")
    };
    assert_eq!(post(&server, &sid, &["from polling"]).await.status, StatusCode::NO_CONTENT);
    // The WebSocket member sees it (after any presence frames).
    let offset = loop {
        if let Frame::Message { offset, from, text, .. } = frame(next(&mut socket).await) {
            assert_eq!((from.as_str(), text.as_str()), (you.as_str(), "from polling"));
            break offset;
        }
    };
    socket.send(Message::text("from a socket")).await.expect("send");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::helpers::STEP;
    while seen.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "only {seen:?}");
        for text in messages(&get(&server, &sid, true).await) {
            if let Frame::Message { offset, text, .. } = frame(Message::text(text)) {
                seen.push((offset, text));
            }
        }
    }
    assert_eq!(
        seen,
        [(offset, "from polling".to_owned()), (offset + 1, "from a socket".to_owned())]
    );

    // A new session resumes from there, as a reconnecting WebSocket would.
    let resumed = self::sid();
    let path = format!(
        "{}?epoch={epoch}&offset={offset}",
        contract::open_path(&resumed, contract::Open::Room)
    );
    assert_eq!(
        request(Method::POST, &url(&server, &path), &[], "").await.status,
        StatusCode::CREATED
    );
    let greeting = messages(&get(&server, &resumed, true).await);
    let Frame::Joined { recovered, .. } = frame(Message::text(greeting[0].clone())) else {
        panic!()
    };
    assert!(recovered);
    let missed: Vec<_> = greeting[1..]
        .iter()
        .filter_map(|text| match frame(Message::text(text.clone())) {
            Frame::Message { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(missed, ["from a socket"]);
}

fn frame(message: Message) -> Frame {
    Frame::parse(message.to_text().expect("text")).expect("a room frame")
}

#[tokio::test]
async fn metrics_count_each_transport_apart() {
    let server = spawn_with(config()).await;
    let mut socket = connect(&server.ws_url()).await;
    socket.send(Message::text("ws")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("WS"));

    let sid = open_echo(&server).await;
    assert_eq!(post(&server, &sid, &["a", "b"]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&get(&server, &sid, false).await).len(), 2);
    let metrics = server.scrape().await;
    let m = |name: &str| metric(&metrics, name);
    assert_eq!(m("sessions_open{transport=\"polling\"}"), 1.0);
    assert_eq!(m("sessions_open{transport=\"websocket\"}"), 1.0);
    assert_eq!(m("ws_connections_open"), 1.0, "WebSockets only");
    assert_eq!(m("transport_messages_received_total{transport=\"polling\"}"), 2.0);
    assert_eq!(m("transport_messages_sent_total{transport=\"polling\"}"), 3.0, "Welcome! and two");
    assert_eq!(m("transport_messages_received_total{transport=\"websocket\"}"), 1.0);
    assert_eq!(m("transport_messages_sent_total{transport=\"websocket\"}"), 2.0);
    assert_eq!(m("poll_requests_total{kind=\"open\"}"), 1.0);
    assert_eq!(m("poll_requests_total{kind=\"send\"}"), 1.0);
    assert_eq!(m("poll_requests_total{kind=\"short\"}"), 1.0);
    assert_eq!(m("poll_requests_total{kind=\"long\"}"), 1.0, "the greeting's GET");
}

#[tokio::test]
async fn a_polling_member_that_stops_polling_is_ended_as_slow_with_1013() {
    let server = spawn_with(Config { room_rate: 10_000, ..config() }).await;
    let sid = sid();
    assert_eq!(open(&server, &sid, contract::Open::Room).await.status, StatusCode::CREATED);
    let (socket, _) = tokio_tungstenite::connect_async(server.room_url()).await.expect("join");
    // The publisher reads its own echoes as they come, so that it is never the slow one.
    let (mut sink, mut stream) = futures_util::StreamExt::split(socket);
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let total = 2 * wire_capacity() + 100;
    for n in 0..total {
        sink.send(Message::text(format!("m{n}"))).await.expect("send");
    }
    // The poller holds one queue of frames and its mailbox another; then the hub ends it.
    server.wait_for_metric("room_slow_consumers_total", 1.0).await;
    let (mut frames, mut close) = (0, None);
    let deadline = tokio::time::Instant::now() + crate::helpers::STEP;
    while close.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no close after {frames} frames");
        let reply = get(&server, &sid, false).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        for item in contract::decode(&reply.body).expect("batch") {
            match item {
                Item::Message(_) => frames += 1,
                Item::Close(code, reason) => close = Some((code, reason.to_owned())),
            }
        }
    }
    assert_eq!(close, Some((wire::room::CLOSE_SLOW, wire::room::REASON_SLOW.to_owned())));
    assert!(frames <= 2 * wire_capacity() + 4, "bounded: {frames} frames held");
    assert_eq!(get(&server, &sid, false).await.status, StatusCode::NOT_FOUND);
    server.wait_for_metric("poll_sessions_ended_total{why=\"slow\"}", 1.0).await;
    drain.abort();
}

fn wire_capacity() -> usize {
    server::poll::OUT_CAPACITY
}

#[tokio::test]
async fn a_client_that_only_sends_is_held_back_then_refused_503() {
    let server = spawn_with(Config { send_timeout: Duration::from_millis(300), ..config() }).await;
    let sid = open_echo(&server).await;
    let full: Vec<String> = (0..server::poll::OUT_CAPACITY).map(|n| n.to_string()).collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    assert_eq!(post(&server, &sid, &full).await.status, StatusCode::NO_CONTENT);
    // The replies fill the queue; the pump takes nothing more, and a POST is refused after the
    // send timeout instead of holding more (its batch is taken back: never handled).
    let mut refused = None;
    for n in 0..10 {
        let reply = post(&server, &sid, &["more"]).await;
        if reply.status != StatusCode::NO_CONTENT {
            refused = Some((n, reply));
            break;
        }
    }
    let (accepted, reply) = refused.expect("refused within 10 POSTs");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert!(reply.body.contains("GET them"), "{}", reply.body);
    // Reading catches up, and every accepted message is answered, in order.
    let mut replies = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::helpers::STEP;
    while replies.len() < full.len() + accepted {
        assert!(tokio::time::Instant::now() < deadline, "{} replies", replies.len());
        replies.extend(messages(&get(&server, &sid, true).await));
    }
    assert_eq!(replies[..full.len()], full[..]);
    assert!(replies[full.len()..].iter().all(|r| r == "MORE"), "{:?}", &replies[full.len()..]);
    assert_eq!(post(&server, &sid, &["again"]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(messages(&get(&server, &sid, true).await), ["AGAIN"]);
}

#[tokio::test]
async fn delete_answers_a_waiting_poll_with_1000() {
    let server = spawn_with(config()).await;
    let sid = open_echo(&server).await;
    let session = url(&server, &contract::session_path(&sid));
    let waiting = poll_in_background(&server, &sid).await;
    assert_eq!(request(Method::DELETE, &session, &[], "").await.status, StatusCode::NO_CONTENT);
    let reply = waiting.await.expect("GET");
    assert_eq!(contract::decode(&reply.body), Ok(vec![Item::Close(wire::close::NORMAL, "")]));
    assert_eq!(get(&server, &sid, false).await.status, StatusCode::NOT_FOUND);
}
