//! `spawn_app()`: a real server on `127.0.0.1:0` with a small fake bundle, stopped on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use server::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Marker text in the fake bundle's `index.html`.
pub const PAGE_MARKER: &str = "<title>test page</title>";
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
