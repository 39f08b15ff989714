//! Keepalive and dead peers: pings, the idle timeout and the handshake timeout, with short
//! intervals so each test takes well under a second.

use std::time::Duration;

use futures_util::SinkExt;
use server::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wire::close;

use crate::helpers::{
    connect, metric, next, raw_upgrade, read_to_end, spawn_with, test_config, Socket, TestServer,
};

const PING: Duration = Duration::from_millis(50);
const IDLE: Duration = Duration::from_millis(200);

async fn spawn_keepalive() -> TestServer {
    spawn_with(Config { ping_interval: PING, idle_timeout: IDLE, ..test_config() }).await
}

/// The bytes of an unmasked server Close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut frame = vec![0x88, u8::try_from(2 + reason.len()).expect("short reason")];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame
}

#[tokio::test]
async fn a_peer_that_goes_silent_after_the_handshake_is_pinged_then_closed() {
    let app = spawn_keepalive().await;
    let started = Instant::now();
    // A raw socket: it never answers a ping, as a dead peer would not.
    let (mut silent, head) = raw_upgrade(app.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A normal client alongside, reading (so answering pings) the whole time.
    let good = tokio::spawn(talk_after_pings(connect(&app.ws_url()).await, 10));

    let bytes = read_to_end(&mut silent).await;
    assert!(
        started.elapsed() >= IDLE,
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
    let welcome = [&[0x81, 8][..], wire::WELCOME.as_bytes()].concat();
    assert!(bytes.starts_with(&welcome), "{bytes:?}");
    let pings = bytes.windows(2).filter(|pair| *pair == [0x89, 0]).count();
    assert!(pings >= 2, "expected pings before the close: {bytes:?}");
    assert!(
        bytes.ends_with(&close_frame(close::GOING_AWAY, close::REASON_IDLE)),
        "expected Close 1001 with the idle reason last: {bytes:?}"
    );
    let metrics = app.wait_for_metric("ws_idle_closes_total", 1.0).await;
    assert_eq!(metric(&metrics, "ws_closes_total{code=\"1001\"}"), 1.0);

    // The other connection kept answering its pings and is still served.
    good.await.expect("the normal client was served throughout");
    assert_eq!(metric(&app.scrape().await, "ws_idle_closes_total"), 1.0);
}

/// Reads until `pings` pings have arrived (answering each, as browsers do), then proves the
/// connection still works.
async fn talk_after_pings(mut socket: Socket, pings: usize) {
    let mut seen = 0;
    while seen < pings {
        match next(&mut socket).await {
            Message::Ping(_) => seen += 1,
            other => panic!("expected only pings while idle, got {other:?}"),
        }
    }
    socket.send(Message::text("after the pings")).await.expect("send");
    loop {
        match next(&mut socket).await {
            Message::Ping(_) => continue,
            reply => break assert_eq!(reply, Message::text("AFTER THE PINGS")),
        }
    }
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected_across_many_intervals() {
    let app = spawn_keepalive().await;
    let socket = connect(&app.ws_url()).await;
    let started = Instant::now();
    // tokio-tungstenite answers each ping as it reads.
    talk_after_pings(socket, 10).await;
    assert!(started.elapsed() > 2 * IDLE, "{:?}", started.elapsed());
    let metrics = app.scrape().await;
    assert_eq!(metric(&metrics, "ws_idle_closes_total"), 0.0);
    assert!(metric(&metrics, "ws_pings_sent_total") >= 10.0, "{metrics}");
}

#[tokio::test]
async fn connections_that_never_finish_their_request_head_are_dropped() {
    const HANDSHAKE: Duration = Duration::from_millis(200);
    let app = spawn_with(Config { handshake_timeout: HANDSHAKE, ..test_config() }).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    let mut half = TcpStream::connect(app.addr).await.expect("connect");
    half.write_all(b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock")
        .await
        .expect("write half a request");
    let mut good = connect(&app.ws_url()).await;

    for tcp in [&mut silent, &mut half] {
        read_to_end(tcp).await;
        assert!(started.elapsed() >= HANDSHAKE, "dropped after {:?}", started.elapsed());
    }
    app.wait_for_metric("ws_upgrades_refused_total{reason=\"timeout\"}", 2.0).await;

    // The upgraded connection is past the handshake: the timeout no longer applies to it.
    good.send(Message::text("fine")).await.expect("send");
    assert_eq!(next(&mut good).await, Message::text("FINE"));
}
