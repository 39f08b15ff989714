//! The plain HTTP path under attack (issue 13): a client that stops reading pipelined
//! responses, request heads over the cap, connections that never upgrade, missing and
//! repeated `Host`, DNS rebinding with `--allowed-host`, and what all of that logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use server::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    connect, metric, next, raw_request, raw_upgrade, read_to_end, spawn_app, spawn_with,
    test_config, STEP,
};

/// Everything logged on this thread while the guard lives. The test runtime is
/// single-threaded, so with [`one_worker`] that is every server task's events too.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        // tracing caches each callsite's interest process-wide, computed when the line
        // first runs. While only one dispatcher exists (ours, thread-local), it is computed
        // against the *registering* thread's default: a server worker thread or a sibling
        // test with no subscriber caches `never`, and our thread's event is then dropped
        // (tokio-rs/tracing#3611; it lost "Connection closed" in CI). A second, global
        // dispatcher makes tracing ask every live one instead, and ours says yes.
        static BASELINE: std::sync::Once = std::sync::Once::new();
        BASELINE.call_once(|| {
            let _ =
                tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
        });
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }

    /// Waits (at most STEP) for a line containing `needle`.
    async fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} logged:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every connection on the test's own thread, where [`Logs`] sees it: the default spreads
/// them over one runtime per core, whose threads log elsewhere.
fn one_worker() -> Config {
    Config { workers: Some(1), ..test_config() }
}

/// A bundle with one 1 MiB file, `big.wasm`, written once per process: tests run in
/// parallel, and rewriting it (which truncates) under another test's server cut that
/// server's response short (hyper: "user body write aborted", `NotEof`).
fn big_bundle() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("assets-hardening-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("index.html"), "<!doctype html>").expect("index");
        std::fs::write(dir.join("big.wasm"), vec![0u8; 1024 * 1024]).expect("big");
        dir
    })
    .clone()
}

/// 300 pipelined GETs of a 1 MiB file (300 MiB of responses), never read.
async fn stall_pipelined(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /big.wasm HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(300);
    tcp.write_all(request.as_bytes()).await.expect("the requests fit in the socket buffers");
    tcp
}

#[tokio::test]
async fn a_client_that_stops_reading_pipelined_responses_is_dropped_after_the_send_timeout() {
    const SEND_TIMEOUT: Duration = Duration::from_millis(300);
    let (logs, _guard) = Logs::capture();
    let assets = big_bundle();
    let app = spawn_with(Config { assets, send_timeout: SEND_TIMEOUT, ..one_worker() }).await;

    let started = Instant::now();
    let mut tcp = stall_pipelined(app.addr).await;
    logs.wait_for("the peer stopped reading a response").await;
    let took = started.elapsed();
    assert!(took >= SEND_TIMEOUT, "dropped after {took:?}, before the send timeout");
    assert!(took < SEND_TIMEOUT + Duration::from_secs(3), "dropped only after {took:?}");

    // What the kernel buffers held, then the end: far from the 300 MiB asked for.
    let received = read_to_end(&mut tcp).await.len();
    assert!(received < 64 * 1024 * 1024, "received {received} bytes");
    // The server still serves others.
    assert_eq!(crate::helpers::get(&app.url("/big.wasm")).await.body.len(), 1024 * 1024);
}

#[tokio::test]
async fn a_request_head_over_the_cap_gets_431_and_one_under_it_is_served() {
    let app = spawn_app().await;
    let addr = app.addr;
    let under = "a".repeat(server::limits::HEAD_LIMIT / 2);
    let request = format!("GET /nope HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {under}\r\n\r\n");
    let (_tcp, head) = raw_request(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Never finished: the server answers once the buffer is full, not at the timeout.
    let over = "a".repeat(server::limits::HEAD_LIMIT + 1);
    let request = format!("GET /nope HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {over}");
    let (_tcp, head) = raw_request(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    app.wait_for_metric("ws_upgrades_refused_total{reason=\"malformed\"}", 1.0).await;
}

#[tokio::test]
async fn connections_that_never_upgrade_count_against_max_http_connections() {
    let app = spawn_with(Config { max_http_connections: Some(2), ..test_config() }).await;
    let silent = [
        TcpStream::connect(app.addr).await.expect("connect"),
        TcpStream::connect(app.addr).await.expect("connect"),
    ];
    // Both are accepted once a third is refused: the accept loop takes them in order.
    let mut third = TcpStream::connect(app.addr).await.expect("connect");
    let answer = String::from_utf8_lossy(&read_to_end(&mut third).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 5\r\n"), "{answer}");
    assert!(answer.contains("--max-http-connections"), "{answer}");
    assert_eq!(
        server::ws::RETRY_AFTER_SECONDS,
        5,
        "the canned 503 says 5 s, as the upgrade's does"
    );

    drop(silent);
    // Their slots come back once the server has seen them close.
    let deadline = Instant::now() + STEP;
    while status_line(app.addr, "/healthz").await != "HTTP/1.1 200 OK" {
        assert!(Instant::now() < deadline, "the slots never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = app.scrape().await;
    assert!(metric(&metrics, "ws_upgrades_refused_total{reason=\"limit\"}") >= 1.0, "{metrics}");
}

/// The status line of `GET path` on a new connection, or `""` if it was reset.
async fn status_line(addr: std::net::SocketAddr, path: &str) -> String {
    let Ok(mut tcp) = TcpStream::connect(addr).await else { return String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let answer = read_to_end(&mut tcp).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_upgraded_connection_gives_its_http_slot_back() {
    let app = spawn_with(Config { max_http_connections: Some(1), ..test_config() }).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(connect(&app.ws_url()).await);
    }
    for socket in &mut sockets {
        futures_util::SinkExt::send(socket, Message::text("hi")).await.expect("send");
        assert_eq!(next(socket).await, Message::text("HI"));
    }
}

#[tokio::test]
async fn a_missing_or_repeated_host_gets_400() {
    let app = spawn_app().await;
    let addr = app.addr;
    for (what, request, status) in [
        ("no Host", "GET / HTTP/1.1\r\n\r\n".to_owned(), "HTTP/1.1 400"),
        ("two", format!("GET / HTTP/1.1\r\nHost: {addr}\r\nHost: {addr}\r\n\r\n"), "HTTP/1.1 400"),
        ("malformed", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_owned(), "HTTP/1.1 400"),
        ("HTTP/1.0 may omit it", "GET / HTTP/1.0\r\n\r\n".to_owned(), "HTTP/1.0 200"),
    ] {
        let (_tcp, head) = raw_request(addr, request.as_bytes()).await;
        assert!(head.starts_with(status), "{what}: {head}");
    }
    // An upgrade too, before any of its own checks.
    let request = format!(
        "GET {} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        wire::WS_PATH
    );
    let (_tcp, head) = raw_request(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Counted, under one label whatever the Host said.
    app.wait_for_metric("ws_upgrades_refused_total{reason=\"host\"}", 4.0).await;
}

#[tokio::test]
async fn a_repeated_sec_websocket_key_gets_400() {
    let app = spawn_app().await;
    let (_tcp, head) =
        raw_upgrade(app.addr, "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// An upgrade as a page on `host` would send it after its name was pointed at the server.
fn rebinding_upgrade(host: &str) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        wire::WS_PATH
    )
}

#[tokio::test]
async fn with_allowed_host_a_rebinding_request_is_refused_and_addresses_still_work() {
    let config =
        Config { allowed_hosts: vec!["app.example".parse().expect("host")], ..test_config() };
    let app = spawn_with(config).await;
    let port = app.addr.port();

    let attacker = format!("attacker.example:{port}");
    let (_tcp, head) = raw_request(app.addr, rebinding_upgrade(&attacker).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
    let page = raw_request(
        app.addr,
        format!("GET /metrics HTTP/1.1\r\nHost: {attacker}\r\n\r\n").as_bytes(),
    )
    .await
    .1;
    assert!(page.starts_with("HTTP/1.1 421"), "{page}");
    app.wait_for_metric("ws_upgrades_refused_total{reason=\"host\"}", 2.0).await;

    for host in [
        format!("app.example:{port}"),
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".to_owned(),
    ] {
        let (_tcp, head) = raw_request(app.addr, rebinding_upgrade(&host).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{host}: {head}");
    }
    // The real client, by address.
    let _socket = connect(&app.ws_url()).await;
}

#[tokio::test]
async fn without_allowed_host_any_name_is_served() {
    let app = spawn_app().await;
    let host = format!("anything.example:{}", app.addr.port());
    let (_tcp, head) = raw_request(app.addr, rebinding_upgrade(&host).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[tokio::test]
async fn what_a_peer_can_cause_is_logged_at_info_or_below() {
    let (logs, _guard) = Logs::capture();
    let config = Config {
        assets: big_bundle(),
        max_connections: Some(1),
        max_http_connections: Some(3),
        send_timeout: Duration::from_millis(200),
        allowed_hosts: vec!["app.example".parse().expect("host")],
        ..one_worker()
    };
    let app = spawn_with(config).await;
    let addr = app.addr;

    // Closes right after sending an upgrade.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(rebinding_upgrade(&addr.to_string()).as_bytes()).await.expect("write");
    drop(tcp);
    // A TCP close without a Close frame: 1006, in the log as in the metric.
    let socket = connect(&app.ws_url()).await;
    drop(socket);
    app.wait_for_metric("ws_closes_total{code=\"1006\"}", 1.0).await;
    logs.wait_for("Connection closed code=1006").await;
    // 431, no Host, a foreign Host, a reader that stalls.
    let too_long =
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX: {}", "a".repeat(server::limits::HEAD_LIMIT));
    assert!(raw_request(addr, too_long.as_bytes()).await.1.starts_with("HTTP/1.1 431"));
    assert!(raw_request(addr, b"GET / HTTP/1.1\r\n\r\n").await.1.starts_with("HTTP/1.1 400"));
    let foreign = b"GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n";
    assert!(raw_request(addr, foreign).await.1.starts_with("HTTP/1.1 421"));
    let _stalled = stall_pipelined(addr).await;
    logs.wait_for("the peer stopped reading a response").await;
    // 503 at the WebSocket limit.
    let held = connect(&app.ws_url()).await;
    let (_tcp, head) = raw_upgrade(addr, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // 503 at the HTTP limit: silent connections until one is refused.
    let mut silent = Vec::new();
    while !logs.text().contains("HTTP connection refused: at the limit") {
        assert!(silent.len() < 10, "never refused:\n{}", logs.text());
        silent.push(TcpStream::connect(addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);

    let text = logs.text();
    let loud: Vec<&str> =
        text.lines().filter(|line| line.contains(" WARN ") || line.contains(" ERROR ")).collect();
    assert!(loud.is_empty(), "peers made the server log WARN or ERROR:\n{}", loud.join("\n"));
    assert!(!text.contains("code=1002"), "a TCP close logged as a bad message:\n{text}");
    for said in
        ["upgrade refused", "request refused for its Host", "HTTP connection refused: at the limit"]
    {
        assert!(text.contains(said), "no {said:?} in:\n{text}");
    }
}
