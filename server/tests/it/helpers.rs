//! The server's test helpers: `spawn_app()` (the real server on `127.0.0.1:0` with a small fake
//! bundle) over `server::testing`, the one way tests start the server; WebSocket and raw-socket
//! helpers; HTTP and metric helpers re-exported from there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use server::testing::{get, get_with, metric, spawn_with, test_config, TestServer, STEP};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Marker text in the fake bundle's `index.html`.
pub const PAGE_MARKER: &str = "<title>test page</title>";
/// A trunk-style content-hashed file in the fake bundle.
pub const HASHED_WASM: &str = "web-0123456789abcdef_bg.wasm";

/// A server with a fake bundle (`index.html` and `app_bg.wasm`), deleted when it is dropped.
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
    server.remove_on_drop(assets);
    server
}

/// A server whose assets directory does not exist (the bundle was never built).
pub async fn spawn_without_bundle() -> TestServer {
    spawn_with(Config { assets: fresh_dir().join("missing"), ..test_config() }).await
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
