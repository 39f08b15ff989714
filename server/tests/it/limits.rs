//! Limits and bad input: the connection limit, malformed upgrades, oversized messages from a
//! peer that keeps sending, and a peer that never reads. Each also checks that another open
//! connection is unaffected.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use server::Config;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message};
use wire::close;

use crate::helpers::{
    connect, metric, next, raw_request, read_to_end, spawn_app, spawn_with, test_config, Socket,
    STEP,
};

/// Proves `socket` is still served normally.
async fn still_served(socket: &mut Socket) {
    socket.send(Message::text("still here")).await.expect("send");
    assert_eq!(next(socket).await, Message::text("STILL HERE"));
}

#[tokio::test]
async fn over_the_connection_limit_the_upgrade_gets_503_with_retry_after() {
    let app = spawn_with(Config { max_connections: Some(2), ..test_config() }).await;
    let mut first = connect(&app.ws_url()).await;
    let second = connect(&app.ws_url()).await;

    let refused = tokio_tungstenite::connect_async(app.ws_url()).await.expect_err("over the limit");
    let tungstenite::Error::Http(response) = refused else { panic!("expected 503, got {refused}") };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("--max-connections"), "{body}");
    assert_eq!(metric(&app.scrape().await, "ws_upgrades_refused_total{reason=\"limit\"}"), 1.0);

    still_served(&mut first).await;
    drop(second);
    app.wait_for_metric("ws_closes_total{code=\"1006\"}", 1.0).await;
    let _third = connect(&app.ws_url()).await;
    let metrics = app.scrape().await;
    assert_eq!(metric(&metrics, "ws_connections_open"), 2.0, "{metrics}");
}

#[tokio::test]
async fn malformed_upgrades_get_a_client_error_and_are_counted() {
    let app = spawn_app().await;
    let mut open = connect(&app.ws_url()).await;
    let addr = app.addr;
    let upgrade_without = |skip: &str, version: &str| {
        let mut request = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\n", wire::WS_PATH);
        for line in [
            "Upgrade: websocket".to_owned(),
            "Connection: Upgrade".to_owned(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
            format!("Sec-WebSocket-Version: {version}"),
        ] {
            if !line.starts_with(skip) || skip.is_empty() {
                request.push_str(&line);
                request.push_str("\r\n");
            }
        }
        request + "\r\n"
    };
    let cases = [
        ("no key", upgrade_without("Sec-WebSocket-Key", "13"), "HTTP/1.1 400"),
        ("version 12", upgrade_without("", "12"), "HTTP/1.1 426"),
        ("no Upgrade header", upgrade_without("Upgrade", "13"), "HTTP/1.1 426"),
        ("POST", upgrade_without("", "13").replacen("GET", "POST", 1), "HTTP/1.1 405"),
    ];
    for (what, request, status) in &cases {
        let (_tcp, head) = raw_request(addr, request.as_bytes()).await;
        assert!(head.starts_with(status), "{what}: {head}");
        if *what == "version 12" {
            assert!(head.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{head}");
        }
    }
    // Not HTTP at all (a TLS ClientHello): hyper answers 400 or closes, never panics.
    let (mut tcp, _) = {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
            .await
            .expect("write");
        (tcp, ())
    };
    let answer = read_to_end(&mut tcp).await;
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");

    app.wait_for_metric("ws_upgrades_refused_total{reason=\"malformed\"}", 5.0).await;
    still_served(&mut open).await;
}

#[tokio::test]
async fn an_oversized_message_gets_1009_and_a_clean_close_not_a_reset() {
    let app = spawn_app().await;
    let mut other = connect(&app.ws_url()).await;
    for size in [wire::limits::MAX_MESSAGE_BYTES + 1, 2 * 1024 * 1024] {
        let mut socket = connect(&app.ws_url()).await;
        // The server refuses at the frame header; the rest of the message is still sent.
        socket.send(Message::text("a".repeat(size))).await.expect("the whole message is sent");
        let frame = loop {
            match next(&mut socket).await {
                Message::Close(Some(frame)) => break frame,
                Message::Ping(_) => continue,
                other => panic!("expected Close, got {other:?}"),
            }
        };
        assert_eq!(u16::from(frame.code), close::MESSAGE_TOO_BIG);
        assert_eq!(frame.reason.as_str(), close::reason_too_big(wire::limits::MAX_MESSAGE_BYTES));
        // Then the stream ends cleanly: no "connection reset".
        let end = tokio::time::timeout(STEP, socket.next()).await.expect("ends in time");
        assert!(end.is_none(), "{size} bytes: expected a clean end, got {end:?}");
    }
    still_served(&mut other).await;
}

#[tokio::test]
async fn a_peer_still_sending_fragments_past_the_limit_gets_its_1009() {
    let app = spawn_with(Config { max_message_size: 16 * 1024, ..test_config() }).await;
    let mut other = connect(&app.ws_url()).await;
    let socket = connect(&app.ws_url()).await;
    let (mut sink, mut stream) = socket.split();

    // 256 fragments of 8 KiB: the limit is hit at the third; the writer keeps going.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 8 * 1024];
        let mut sent = 0;
        for i in 0..256 {
            let opcode =
                if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            let frame = Frame::message(chunk.clone(), opcode, i == 255);
            if sink.send(Message::Frame(frame)).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let frame = loop {
        match tokio::time::timeout(STEP, stream.next()).await.expect("in time") {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("expected Close, got {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), close::MESSAGE_TOO_BIG);
    assert_eq!(frame.reason.as_str(), close::reason_too_big(16 * 1024));
    let sent = tokio::time::timeout(STEP, writer).await.expect("writer ends").expect("writer");
    assert!(sent > 3, "the writer was cut off after {sent} fragments");
    still_served(&mut other).await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_dropped_after_the_send_timeout() {
    const SEND_TIMEOUT: Duration = Duration::from_millis(300);
    let app = spawn_with(Config { send_timeout: SEND_TIMEOUT, ..test_config() }).await;
    let mut other = connect(&app.ws_url()).await;
    let mut deaf = connect(&app.ws_url()).await;

    // 60 KiB messages, 60 KiB replies, never read: the socket buffers fill, the server's send
    // waits, and after the send timeout the server drops the connection; our sends then fail.
    let message = Message::text("x".repeat(60 * 1024));
    let mut sent = 0;
    while sent < 10_000 {
        match tokio::time::timeout(STEP, deaf.send(message.clone())).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => panic!("our send blocked for {STEP:?}: the server neither read nor dropped"),
        }
    }
    assert!(sent < 10_000, "the server kept reading from a peer that never reads");
    let metrics = app.wait_for_metric("ws_stalled_closes_total", 1.0).await;
    // The server stopped reading once its reply could not be written: it holds at most one
    // reply, not one per message sent.
    let received = metric(&metrics, "ws_messages_received_total");
    assert!(received < f64::from(sent), "received {received} of {sent}");
    still_served(&mut other).await;
}
