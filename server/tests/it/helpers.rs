//! `spawn_app()`: a real server on `127.0.0.1:0` with a small fake bundle, stopped on drop;
//! plain HTTP requests, raw sockets and metric scraping for the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, Request, StatusCode};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Marker text in the fake bundle's `index.html`.
pub const PAGE_MARKER: &str = "<title>test page</title>";
/// A trunk-style content-hashed file in the fake bundle.
pub const HASHED_WASM: &str = "web-0123456789abcdef_bg.wasm";
/// Longest any single step of a test may take before it fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// A running server; dropping it requests shutdown.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    assets: Option<PathBuf>,
}

impl TestServer {
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, wire::WS_PATH)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(STEP, task).await.expect("server stops in time");
            result.expect("server task").expect("server returns Ok");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(dir) = self.assets.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A server with a fake bundle (`index.html` and `app_bg.wasm`).
pub async fn spawn_app() -> TestServer {
    let assets = fresh_dir();
    std::fs::write(
        assets.join("index.html"),
        format!("<!doctype html>{PAGE_MARKER}<div id=log></div>"),
    )
    .expect("write index.html");
    std::fs::write(assets.join("app_bg.wasm"), b"\0asm\x01\0\0\0").expect("write wasm");
    // A content-hashed file as trunk names them, with precompressed copies as `cargo xtask
    // build` writes them (contents that tell which one was sent).
    std::fs::write(assets.join(HASHED_WASM), b"\0asm identity").expect("write");
    std::fs::write(assets.join(format!("{HASHED_WASM}.br")), b"brotli bytes").expect("write");
    std::fs::write(assets.join(format!("{HASHED_WASM}.gz")), b"gzip bytes").expect("write");
    let mut server = spawn_with(Config { assets: assets.clone(), ..test_config() }).await;
    server.assets = Some(assets);
    server
}

/// A server whose assets directory does not exist (the bundle was never built).
pub async fn spawn_without_bundle() -> TestServer {
    spawn_with(Config { assets: fresh_dir().join("missing"), ..test_config() }).await
}

pub fn test_config() -> Config {
    Config { port: 0, shutdown_grace: Duration::from_secs(5), ..Config::default() }
}

/// Binds first, then spawns: the port accepts connections before this returns.
pub async fn spawn_with(config: Config) -> TestServer {
    let listener = TcpListener::bind(config.addr()).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server::run(listener, config, async {
        let _ = rx.await;
    }));
    TestServer { addr, shutdown: Some(tx), task: Some(task), assets: None }
}

fn fresh_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "assets-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create assets dir");
    dir
}

/// Connects and consumes the greeting, asserting it is [`wire::WELCOME`].
pub async fn connect(url: &str) -> Socket {
    let (mut socket, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    assert_eq!(next(&mut socket).await, Message::text(wire::WELCOME));
    socket
}

/// The next message, failing the test after [`STEP`] or at end of stream.
pub async fn next(socket: &mut Socket) -> Message {
    tokio::time::timeout(STEP, socket.next())
        .await
        .expect("a message in time")
        .expect("stream still open")
        .expect("no protocol error")
}

/// An HTTP response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: header::HeaderName) -> String {
        self.headers.get(name).map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default()
    }
}

/// `GET url` on a fresh connection.
pub async fn get(url: &str) -> Reply {
    get_with(url, &[]).await
}

/// `GET url` with extra request headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).expect("request");
    let response = tokio::time::timeout(STEP, client.request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// The value of one sample in `/metrics` (`name` with its labels, e.g.
/// `ws_closes_total{code="1000"}`); 0 when absent, as Prometheus treats a missing counter.
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

impl TestServer {
    /// The server's `/metrics` text.
    pub async fn scrape(&self) -> String {
        let reply = get(&self.url(wire::METRICS_PATH)).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body
    }

    /// Polls `/metrics` until `name` reaches `value` (connection ends are counted when the
    /// connection task finishes, a moment after the client saw the close); fails after STEP.
    pub async fn wait_for_metric(&self, name: &str, value: f64) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let metrics = self.scrape().await;
            if metric(&metrics, name) >= value {
                return metrics;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not reach {value}:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A hand-written upgrade request for `/ws/` with `extra` header lines, and the server's
/// response head; the socket is returned as it is, for tests that misbehave on purpose.
pub async fn raw_upgrade(addr: std::net::SocketAddr, extra: &str) -> (TcpStream, String) {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
        wire::WS_PATH
    );
    raw_request(addr, request.as_bytes()).await
}

/// Sends `request` as it is on a new connection and reads the response head.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        let n = tokio::time::timeout(STEP, tcp.read(&mut byte)).await.expect("head in time");
        assert_eq!(n.expect("read"), 1, "connection closed in the response head: {head:?}");
        head.push(byte[0]);
    }
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

/// Reads until the peer closes the connection (or resets it); fails after STEP.
pub async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        match tokio::time::timeout(STEP, tcp.read(&mut buffer)).await.expect("closed in time") {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
}
