//! The WebSocket endpoint: greeting, replies, ordering under concurrency, close codes.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wire::close;

use crate::helpers::{connect, next, spawn_app, spawn_without_bundle, Socket, STEP};

/// Reads until the server's Close frame and returns its code and reason; the stream must
/// then end cleanly.
async fn expect_close(socket: &mut Socket) -> (u16, String) {
    let code_and_reason = expect_close_frame(socket).await;
    let end = tokio::time::timeout(STEP, socket.next()).await.expect("stream ends in time");
    assert!(end.is_none(), "stream should end after Close, got {end:?}");
    code_and_reason
}

/// Reads until the server's Close frame and returns its code and reason.
async fn expect_close_frame(socket: &mut Socket) -> (u16, String) {
    loop {
        match next(socket).await {
            Message::Close(Some(frame)) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Message::Close(None) => panic!("Close frame without a code"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected Close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn welcome_is_the_first_message() {
    let app = spawn_app().await;
    // `connect` asserts the greeting.
    let _socket = connect(&app.ws_url()).await;
}

#[tokio::test]
async fn ws_without_trailing_slash_is_served_too() {
    let app = spawn_app().await;
    let mut socket = connect(&format!("ws://{}{}", app.addr, wire::WS_PATH_NO_SLASH)).await;
    socket.send(Message::text("hi")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("HI"));
}

#[tokio::test]
async fn text_comes_back_upper_cased_including_unicode() {
    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    for (sent, expected) in [
        (wire::HELLO, "HELLO THERE!"),
        ("straße", "STRASSE"),
        ("ǆemal ﬁx", "ǄEMAL FIX"),
        ("привет, 漢字 🎉", "ПРИВЕТ, 漢字 🎉"),
        ("", ""),
    ] {
        socket.send(Message::text(sent)).await.expect("send");
        assert_eq!(next(&mut socket).await, Message::text(expected), "reply to {sent:?}");
    }
}

#[tokio::test]
async fn a_hundred_concurrent_connections_each_get_their_own_replies_in_order() {
    const CONNECTIONS: usize = 100;
    const MESSAGES: usize = 20;
    let app = spawn_app().await;
    let url = app.ws_url();

    let clients = (0..CONNECTIONS).map(|c| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut socket = connect(&url).await;
            // Pipelined: all messages go out before any reply is read.
            for m in 0..MESSAGES {
                socket.feed(Message::text(format!("client {c} message {m}"))).await.expect("feed");
            }
            socket.flush().await.expect("flush");
            for m in 0..MESSAGES {
                let expected = wire::reply(&format!("client {c} message {m}"));
                assert_eq!(next(&mut socket).await, Message::text(expected));
            }
            socket.close(None).await.expect("close");
        })
    });
    for client in futures_util::future::join_all(clients).await {
        client.expect("client task succeeded");
    }
}

#[tokio::test]
async fn client_close_is_answered_with_the_same_code() {
    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    socket.send(Message::Close(Some(frame))).await.expect("send close");
    let (code, _) = expect_close(&mut socket).await;
    assert_eq!(code, close::NORMAL);
}

#[tokio::test]
async fn binary_is_refused_with_1003_and_a_reason() {
    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    socket.send(Message::binary(vec![0xde, 0xad])).await.expect("send");
    assert_eq!(
        expect_close(&mut socket).await,
        (close::UNSUPPORTED_DATA, close::REASON_BINARY.to_owned())
    );
}

#[tokio::test]
async fn message_at_the_limit_is_answered() {
    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    let text = "a".repeat(wire::limits::MAX_MESSAGE_BYTES);
    socket.send(Message::text(text.clone())).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text(wire::reply(&text)));
}

#[tokio::test]
async fn invalid_utf8_text_is_refused_with_1007() {
    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(frame)).await.expect("send raw frame");
    assert_eq!(
        expect_close(&mut socket).await,
        (close::INVALID_PAYLOAD, close::REASON_INVALID_UTF8.to_owned())
    );
}

#[tokio::test]
async fn bad_input_on_one_connection_leaves_the_others_alone() {
    let app = spawn_app().await;
    let mut good = connect(&app.ws_url()).await;
    let mut bad = connect(&app.ws_url()).await;
    bad.send(Message::binary(vec![1])).await.expect("send");
    assert_eq!(expect_close(&mut bad).await.0, close::UNSUPPORTED_DATA);

    good.send(Message::text("still here")).await.expect("send");
    assert_eq!(next(&mut good).await, Message::text("STILL HERE"));
}

#[tokio::test]
async fn shutdown_closes_open_connections_with_1001() {
    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    let url = app.ws_url();
    let stopping = tokio::spawn(app.stop());
    assert_eq!(
        expect_close(&mut socket).await,
        (close::GOING_AWAY, close::REASON_SHUTDOWN.to_owned())
    );
    tokio::time::timeout(STEP, stopping).await.expect("stops in time").expect("stop task");
    assert!(tokio_tungstenite::connect_async(url).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn websocket_works_when_the_bundle_is_missing() {
    let app = spawn_without_bundle().await;
    let mut socket = connect(&app.ws_url()).await;
    socket.send(Message::text("ok")).await.expect("send");
    assert_eq!(next(&mut socket).await, Message::text("OK"));
}

#[tokio::test]
async fn plain_echo_mode_sends_no_greeting_and_echoes_text_and_binary_unchanged() {
    let config = server::Config { plain_echo: true, ..crate::helpers::test_config() };
    let app = crate::helpers::spawn_with(config).await;
    let (mut socket, _) =
        tokio::time::timeout(STEP, tokio_tungstenite::connect_async(app.ws_url()))
            .await
            .expect("in time")
            .expect("connect");
    for message in [Message::text("straße"), Message::binary(vec![0, 1, 2, 255]), Message::text("")]
    {
        socket.send(message.clone()).await.expect("send");
        assert_eq!(next(&mut socket).await, message, "echoed unchanged, and no greeting first");
    }
}

#[tokio::test]
async fn metrics_move_by_exactly_what_a_conversation_did() {
    use crate::helpers::metric;

    let app = spawn_app().await;
    let mut socket = connect(&app.ws_url()).await;
    let texts = ["one", "straße", ""];
    for text in texts {
        socket.send(Message::text(text)).await.expect("send");
        assert_eq!(next(&mut socket).await, Message::text(wire::reply(text)));
    }
    let frame = CloseFrame { code: CloseCode::Normal, reason: "done".into() };
    socket.send(Message::Close(Some(frame))).await.expect("close");
    expect_close(&mut socket).await;

    let metrics = app.wait_for_metric("ws_closes_total{code=\"1000\"}", 1.0).await;
    let received: usize = texts.iter().map(|t| t.len()).sum();
    let sent: usize =
        wire::WELCOME.len() + texts.iter().map(|t| wire::reply(t).len()).sum::<usize>();
    for (name, expected) in [
        ("ws_connections_total", 1),
        ("ws_connections_open", 0),
        ("ws_messages_received_total", texts.len()),
        ("ws_received_bytes_total", received),
        ("ws_messages_sent_total", texts.len() + 1),
        ("ws_sent_bytes_total", sent),
        ("ws_closes_total{code=\"1000\"}", 1),
        ("ws_handshake_duration_seconds_count", 1),
        ("ws_idle_closes_total", 0),
    ] {
        assert_eq!(metric(&metrics, name), expected as f64, "{name}:\n{metrics}");
    }
}

/// Connections dealt to three worker runtimes (two of them threads of their own, whatever this
/// machine's core count) each talk, interleaved, and shut down with 1001.
#[tokio::test]
async fn connections_on_every_worker_talk_and_close_on_shutdown() {
    let server = crate::helpers::spawn_with(server::Config {
        workers: Some(3),
        ..crate::helpers::test_config()
    })
    .await;
    let mut sockets = Vec::new();
    for _ in 0..6 {
        sockets.push(connect(&server.ws_url()).await);
    }
    for round in 0..3 {
        for (n, socket) in sockets.iter_mut().enumerate() {
            socket.send(Message::text(format!("w{n}r{round}"))).await.expect("send");
        }
        for (n, socket) in sockets.iter_mut().enumerate() {
            assert_eq!(next(socket).await, Message::text(format!("W{n}R{round}")));
        }
    }
    let stopped = tokio::spawn(server.stop());
    for socket in &mut sockets {
        assert_eq!(expect_close(socket).await.0, close::GOING_AWAY);
    }
    stopped.await.expect("stopped");
}
