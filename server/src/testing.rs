//! The one way tests start the real server (feature `testing`): [`spawn_with`] binds
//! `127.0.0.1:0` and spawns [`crate::run`]; the [`TestServer`] it returns knows its URLs, scrapes
//! `/metrics`, and requests shutdown when dropped.
//!
//! Test code: failures panic with a message (a test fails instead of hanging), and every wait
//! is bounded by [`STEP`]. Used by the server's integration tests and the client's CLI tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Config;

/// Longest any single step of a test may take before it fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// A running server; dropping it requests shutdown (without waiting: use [`TestServer::stop`]
/// to wait for [`crate::run`] to return).
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    remove_on_drop: Option<PathBuf>,
}

/// The configuration tests start from: port 0, the default limits, a 5 s shutdown grace.
pub fn test_config() -> Config {
    Config { port: 0, shutdown_grace: Duration::from_secs(5), ..Config::default() }
}

/// A server with [`test_config`].
pub async fn spawn() -> TestServer {
    spawn_with(test_config()).await
}

/// Binds first, then spawns: the port accepts connections before this returns.
pub async fn spawn_with(config: Config) -> TestServer {
    let listener = TcpListener::bind(config.addr()).await.expect("bind the test server");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(crate::run(listener, config, async {
        let _ = rx.await;
    }));
    TestServer { addr, shutdown: Some(tx), task: Some(task), remove_on_drop: None }
}

impl TestServer {
    /// `ws://ADDR/ws/`: the echo.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, wire::WS_PATH)
    }

    /// `ws://ADDR/ws/room`: the room.
    pub fn room_url(&self) -> String {
        format!("ws://{}{}", self.addr, wire::room::PATH)
    }

    /// `http://ADDR` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Deletes `dir` (e.g. the test's fake bundle) when this server is dropped.
    pub fn remove_on_drop(&mut self, dir: PathBuf) {
        self.remove_on_drop = Some(dir);
    }

    /// Requests shutdown and waits for `run` to return, which must be in time and `Ok`.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(STEP, task).await.expect("server stops in time");
            result.expect("server task").expect("server returns Ok");
        }
    }

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

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(dir) = self.remove_on_drop.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The value of one sample in `/metrics` (`name` with its labels, e.g.
/// `ws_closes_total{code="1000"}`); 0 when absent, as Prometheus treats a missing counter.
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The header's value, or `""` when absent.
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
    request(Method::GET, url, headers, "").await
}

/// Any request, on a fresh connection, read whole (the polling tests' client).
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body.to_owned())).expect("request");
    let response = tokio::time::timeout(STEP, client.request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(
        STEP,
        axum::body::to_bytes(Body::new(response.into_body()), usize::MAX),
    )
    .await
    .expect("body in time")
    .expect("body");
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}
