//! The room at `/ws/room` with the embedded engine: order and offsets, history and recovery,
//! presence, the publish rate, a slow consumer among many, bad queries and shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wire::room::{Frame, Resume};

use crate::helpers::{next, raw_request, spawn_with, test_config, Socket, TestServer, STEP};

/// A member: its socket and what its `joined` said.
struct Member {
    socket: Socket,
    you: String,
    epoch: String,
    offset: u64,
    online: u32,
    recovered: bool,
}

async fn join(server: &TestServer, resume: Option<&Resume>) -> Member {
    let url = format!("ws://{}{}", server.addr, wire::room::path_with_resume(resume));
    let (socket, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    joined(socket).await
}

async fn joined(mut socket: Socket) -> Member {
    match frame(&mut socket).await {
        Frame::Joined { you, epoch, offset, online, recovered } => {
            Member { socket, you, epoch, offset, online, recovered }
        }
        other => panic!("expected joined first, got {other:?}"),
    }
}

/// The next frame, decoded (keepalive pings skipped).
async fn frame(socket: &mut Socket) -> Frame {
    loop {
        match next(socket).await {
            Message::Text(text) => {
                return Frame::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next `message` frame as (offset, from, text), skipping presence frames.
async fn message(socket: &mut Socket) -> (u64, String, String) {
    loop {
        match frame(socket).await {
            Frame::Message { offset, from, text, .. } => return (offset, from, text),
            Frame::Presence { .. } => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// `n` messages, asserting their offsets are consecutive from `first`.
async fn messages(socket: &mut Socket, first: u64, n: u64) -> Vec<String> {
    let mut texts = Vec::new();
    for expected in first..first + n {
        let (offset, _, text) = message(socket).await;
        assert_eq!(offset, expected, "offsets must be consecutive");
        texts.push(text);
    }
    texts
}

async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.expect("send");
}

fn room_config() -> server::Config {
    server::Config { room_rate: 100_000, ..test_config() }
}

#[tokio::test]
async fn every_member_sees_one_order_with_consecutive_offsets() {
    let server = spawn_with(room_config()).await;
    let mut a = join(&server, None).await;
    assert_eq!((a.offset, a.recovered, a.online), (0, false, 1));
    assert!(a.you.starts_with("guest-"), "{}", a.you);
    assert!(wire::room::is_epoch(&a.epoch), "{}", a.epoch);
    let mut b = join(&server, None).await;
    assert_eq!(b.epoch, a.epoch);
    assert_ne!(b.you, a.you);

    // Both publish at once; both see the same sequence, each its own message included.
    for i in 0..20 {
        send(&mut a.socket, &format!("a{i}")).await;
        send(&mut b.socket, &format!("b{i}")).await;
    }
    let seen_a = messages(&mut a.socket, 1, 40).await;
    let seen_b = messages(&mut b.socket, 1, 40).await;
    assert_eq!(seen_a, seen_b);
    let from_a: Vec<_> = seen_a.iter().filter(|t| t.starts_with('a')).cloned().collect();
    assert_eq!(from_a, (0..20).map(|i| format!("a{i}")).collect::<Vec<_>>(), "per-sender order");
    // The text is kept as typed, JSON-looking or not.
    send(&mut a.socket, "{\"not\":\"parsed\"} \u{1} é").await;
    let (offset, from, text) = message(&mut b.socket).await;
    assert_eq!(
        (offset, from.as_str(), text.as_str()),
        (41, a.you.as_str(), "{\"not\":\"parsed\"} \u{1} é")
    );
}

#[tokio::test]
async fn a_fresh_join_gets_the_last_fifty_then_live_messages() {
    let server = spawn_with(room_config()).await;
    let mut publisher = join(&server, None).await;
    for i in 1..=60 {
        send(&mut publisher.socket, &format!("m{i}")).await;
    }
    messages(&mut publisher.socket, 1, 60).await;
    let mut late = join(&server, None).await;
    assert_eq!((late.offset, late.recovered), (60, false));
    let history = messages(&mut late.socket, 11, 50).await;
    assert_eq!(history.first().map(String::as_str), Some("m11"));
    send(&mut publisher.socket, "live").await;
    assert_eq!(messages(&mut late.socket, 61, 1).await, ["live"]);
}

#[tokio::test]
async fn a_resume_recovers_exactly_what_was_missed() {
    let server = spawn_with(room_config()).await;
    let mut stayer = join(&server, None).await;
    let mut leaver = join(&server, None).await;
    send(&mut stayer.socket, "before").await;
    messages(&mut leaver.socket, 1, 1).await;
    let epoch = leaver.epoch.clone();
    leaver.socket.close(None).await.expect("close");

    for i in 0..5 {
        send(&mut stayer.socket, &format!("missed {i}")).await;
    }
    messages(&mut stayer.socket, 1, 6).await;
    let resume = Resume { epoch, offset: 1 };
    let mut back = join(&server, Some(&resume)).await;
    assert!(back.recovered);
    assert_eq!(back.offset, 6);
    let missed = messages(&mut back.socket, 2, 5).await;
    assert_eq!(missed, (0..5).map(|i| format!("missed {i}")).collect::<Vec<_>>());
    send(&mut stayer.socket, "after").await;
    assert_eq!(messages(&mut back.socket, 7, 1).await, ["after"]);
    let metrics = server.wait_for_metric("room_joins_total{outcome=\"recovered\"}", 1.0).await;
    assert!(metrics.contains("room_joins_total{outcome=\"fresh\"} 2"), "{metrics}");
}

#[tokio::test]
async fn an_unknown_epoch_or_an_offset_older_than_the_history_is_not_recovered() {
    let server = spawn_with(server::Config { room_history: 5, ..room_config() }).await;
    let mut publisher = join(&server, None).await;
    for i in 1..=8 {
        send(&mut publisher.socket, &format!("m{i}")).await;
    }
    messages(&mut publisher.socket, 1, 8).await;
    let epoch = publisher.epoch.clone();

    // The history keeps 4..=8: resuming from 3 recovers, from 2 does not.
    let mut ok = join(&server, Some(&Resume { epoch: epoch.clone(), offset: 3 })).await;
    assert!(ok.recovered);
    assert_eq!(messages(&mut ok.socket, 4, 5).await.len(), 5);
    let mut old = join(&server, Some(&Resume { epoch, offset: 2 })).await;
    assert!(!old.recovered);
    assert_eq!(messages(&mut old.socket, 4, 5).await.len(), 5, "the most recent ones instead");
    let mut other = join(&server, Some(&Resume { epoch: "another-epoch".into(), offset: 8 })).await;
    assert!(!other.recovered);
    assert_eq!(other.epoch, publisher.epoch);
    assert_eq!(messages(&mut other.socket, 4, 5).await.len(), 5);
    server.wait_for_metric("room_joins_total{outcome=\"lost\"}", 2.0).await;
}

#[tokio::test]
async fn presence_follows_members_joining_and_leaving() {
    let server = spawn_with(room_config()).await;
    let mut a = join(&server, None).await;
    let b = join(&server, None).await;
    assert_eq!(b.online, 2);
    assert_eq!(presence_until(&mut a.socket, 2).await, 2);
    drop(b);
    assert_eq!(presence_until(&mut a.socket, 1).await, 1);
}

/// Reads presence frames until one says `online`.
async fn presence_until(socket: &mut Socket, online: u32) -> u32 {
    loop {
        if let Frame::Presence { online: now } = frame(socket).await {
            if now == online {
                return now;
            }
        }
    }
}

#[tokio::test]
async fn over_the_rate_a_message_is_refused_and_the_connection_stays() {
    let server = spawn_with(server::Config { room_rate: 3, ..test_config() }).await;
    let mut a = join(&server, None).await;
    for i in 0..5 {
        send(&mut a.socket, &format!("m{i}")).await;
    }
    let (mut published, mut refused) = (Vec::new(), 0);
    while published.len() + refused < 5 {
        match frame(&mut a.socket).await {
            Frame::Message { text, .. } => published.push(text),
            Frame::Refused { reason } => {
                assert_eq!(reason, wire::room::REFUSED_RATE);
                refused += 1;
            }
            Frame::Presence { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(published, ["m0", "m1", "m2"], "the burst is the rate");
    assert_eq!(refused, 2);
    server.wait_for_metric("room_refused_total{reason=\"rate\"}", 2.0).await;
    // Still a member: another member's message arrives.
    let mut b = join(&server, None).await;
    send(&mut b.socket, "still here?").await;
    assert_eq!(messages(&mut a.socket, 4, 1).await, ["still here?"]);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_1013_while_a_hundred_others_get_everything() {
    let server = spawn_with(room_config()).await;
    let mut others = Vec::new();
    for _ in 0..100 {
        others.push(join(&server, None).await);
    }
    // The slow one: a tiny receive buffer, and it stops reading after `joined`.
    let tcp = TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("small buffer");
    let tcp = tcp.connect(server.addr).await.expect("connect");
    let url = format!("ws://{}{}", server.addr, wire::room::PATH);
    let (socket, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("upgrade");
    let mut slow = joined(socket).await;

    // The publisher reads what the room sends it on a task of its own, so that it is never the
    // slow one itself.
    let (mut publisher, mut echoes) = join(&server, None).await.socket.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    // The others read at the publisher's pace, by construction: each says how far it got,
    // and the publisher sends a batch only once all have read the one before. Unpaced, on a
    // loaded machine, the test's one thread (the publisher and the hundred readers) could
    // leave a reader a mailbox behind, and the room rightly closed it as slow too.
    let (readers, progress): (Vec<_>, Vec<_>) = others
        .into_iter()
        .map(|mut member| {
            let (seen, progress) = tokio::sync::watch::channel(0u64);
            let reader = tokio::spawn(async move {
                // Every message, consecutive, until the publisher's last one.
                let mut expected = 1;
                loop {
                    let (offset, _, text) = message(&mut member.socket).await;
                    assert_eq!(offset, expected, "no gap, no duplicate");
                    expected += 1;
                    seen.send_replace(offset);
                    if text == "last" {
                        return offset;
                    }
                }
            });
            (reader, progress)
        })
        .unzip();
    // Publish until the slow one is found out: that takes what the kernel buffers between the
    // server and it hold (the server's send buffer grows to a few MiB on Linux), then a whole
    // mailbox.
    const BATCH: u64 = 100;
    let text = "x".repeat(4000);
    let mut published = 0u64;
    loop {
        for mut seen in progress.iter().cloned() {
            let caught_up = seen.wait_for(|&offset| offset + BATCH >= published);
            tokio::time::timeout(STEP, caught_up).await.expect("read in time").expect("reading");
        }
        for _ in 0..BATCH {
            publisher.send(Message::text(text.as_str())).await.expect("publish");
        }
        published += BATCH;
        let metrics = server.scrape().await;
        if crate::helpers::metric(&metrics, "room_slow_consumers_total") >= 1.0 {
            break;
        }
        assert!(published < 5000, "the slow consumer was never closed:\n{metrics}");
    }
    publisher.send(Message::text("last")).await.expect("publish");
    let total = published + 1;
    for reader in readers {
        let last = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("in time")
            .expect("every message");
        assert_eq!(last, total);
    }

    drain.abort();

    // Reading again, the slow one gets what was queued for it, in order, then the 1013.
    let mut expected = 1;
    loop {
        match tokio::time::timeout(STEP, slow.socket.next()).await.expect("in time") {
            Some(Ok(Message::Text(text))) => match Frame::parse(&text).expect("frame") {
                Frame::Message { offset, .. } => {
                    assert_eq!(offset, expected, "no gap before the close");
                    expected += 1;
                }
                Frame::Presence { .. } => {}
                other => panic!("{other:?}"),
            },
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(close.code, CloseCode::from(wire::room::CLOSE_SLOW));
                assert_eq!(close.reason.as_str(), wire::room::REASON_SLOW);
                break;
            }
            other => panic!("expected messages then Close 1013, got {other:?}"),
        }
    }
    assert!(expected <= total, "it was cut off before the end");
    server.wait_for_metric("ws_closes_total{code=\"1013\"}", 1.0).await;
}

#[tokio::test]
async fn a_malformed_resume_query_gets_400_saying_what_is_wrong() {
    let server = spawn_with(room_config()).await;
    for (query, expected) in [
        ("epoch=no%20spaces&offset=1", wire::room::QueryError::Epoch),
        ("epoch=abc&offset=minus1", wire::room::QueryError::Offset),
        ("epoch=abc", wire::room::QueryError::Half),
    ] {
        let request = format!(
            "GET {}?{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            wire::room::PATH,
            server.addr
        );
        let (mut tcp, head) = raw_request(server.addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{query}: {head}");
        let body = crate::helpers::read_to_end(&mut tcp).await;
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&expected.to_string()), "{query}: {body}");
    }
}

#[tokio::test]
async fn binary_and_oversized_messages_close_as_on_the_echo() {
    let server = spawn_with(room_config()).await;
    let mut a = join(&server, None).await;
    a.socket.send(Message::binary(vec![1, 2])).await.expect("send");
    let close = close_of(&mut a.socket).await;
    assert_eq!(close, (wire::close::UNSUPPORTED_DATA, wire::close::REASON_BINARY.to_owned()));
    let mut b = join(&server, None).await;
    send(&mut b.socket, &"x".repeat(wire::limits::MAX_MESSAGE_BYTES + 1)).await;
    let close = close_of(&mut b.socket).await;
    assert_eq!(
        close,
        (
            wire::close::MESSAGE_TOO_BIG,
            wire::close::reason_too_big(wire::limits::MAX_MESSAGE_BYTES)
        )
    );
}

/// Skips frames until the Close; its code and reason.
async fn close_of(socket: &mut Socket) -> (u16, String) {
    loop {
        match tokio::time::timeout(STEP, socket.next()).await.expect("in time") {
            Some(Ok(Message::Close(Some(close)))) => {
                return (close.code.into(), close.reason.to_string())
            }
            Some(Ok(_)) => {}
            other => panic!("expected a Close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_sends_1001_to_room_members() {
    let server = spawn_with(room_config()).await;
    let mut a = join(&server, None).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(
        close_of(&mut a.socket).await,
        (wire::close::GOING_AWAY, wire::close::REASON_SHUTDOWN.to_owned())
    );
    stopping.await.expect("stopped");
}

/// With `--redis-url`, until this instance has reached Redis once, the room's epoch is its own:
/// joins are refused with 503 and `Retry-After` on both transports (a page would otherwise be
/// told its history was reset, twice), while the echo serves.
#[tokio::test]
async fn before_its_broker_is_reached_the_room_refuses_joins_with_503_and_the_echo_serves() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nothing_there = listener.local_addr().expect("address");
    drop(listener);
    let mut config = room_config();
    config.redis_url = Some(format!("redis://{nothing_there}").parse().expect("a Redis URL"));
    let server = spawn_with(config).await;

    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        wire::room::PATH,
        server.addr
    );
    let (mut tcp, head) = raw_request(server.addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("retry-after: {}\r\n", server::ws::RETRY_AFTER_SECONDS)),
        "{head}"
    );
    let body = crate::helpers::read_to_end(&mut tcp).await;
    assert!(String::from_utf8_lossy(&body).contains(server::room::NOT_READY), "{body:?}");

    let sid = "not-ready-session-0001";
    let path = wire::poll::open_path(sid, wire::poll::Open::Room);
    let polled =
        server::testing::request(axum::http::Method::POST, &server.url(&path), &[], "").await;
    assert_eq!(polled.status, axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}", polled.body);
    assert!(polled.body.contains(server::room::NOT_READY), "{}", polled.body);

    let (mut echo, _) = tokio_tungstenite::connect_async(server.ws_url()).await.expect("echo");
    assert_eq!(next(&mut echo).await, Message::text(wire::WELCOME));

    let ready = crate::helpers::get(&server.url("/readyz")).await;
    assert_eq!(ready.status, axum::http::StatusCode::OK);
    assert!(ready.body.contains("waiting for its broker"), "{}", ready.body);
    let metrics = server.scrape().await;
    assert!(metrics.contains("ws_upgrades_refused_total{reason=\"unready\"} 1\n"), "{metrics}");
    assert!(metrics.contains("poll_refused_total{reason=\"unready\"} 1\n"), "{metrics}");
}

/// A member that publishes a burst longer than its mailbox, all in one write, reads its own
/// messages back afterwards: the server sends what the room pushed while it reads the burst,
/// so the publisher is not closed as its own slow consumer (1013).
#[tokio::test]
async fn a_burst_longer_than_the_mailbox_comes_back_whole_to_its_publisher() {
    let server = spawn_with(room_config()).await;
    let mut a = join(&server, None).await;
    let total = 3 * server::mailbox::CAPACITY as u64;
    for n in 0..total {
        a.socket.feed(Message::text(format!("b{n}"))).await.expect("queue");
    }
    a.socket.flush().await.expect("one write");
    let texts = messages(&mut a.socket, a.offset + 1, total).await;
    assert_eq!(texts.last().map(String::as_str), Some(format!("b{}", total - 1).as_str()));
}
