//! The realtime server as a library: [`router`] builds the app, [`run`] serves it on a bound
//! listener until a shutdown signal, then drains open connections.
//!
//! Tests bind `127.0.0.1:0`, call [`run`] and talk to the real thing.

pub mod app;
pub mod assets;
pub mod config;
pub mod connection;
pub mod limits;
pub mod mailbox;
pub mod metrics;
pub mod ops;
pub mod origin;
pub mod room;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{any, get};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tower_http::trace::TraceLayer;
use tracing::{debug, error, info, warn};

pub use config::Config;

use crate::limits::Slots;
use crate::metrics::{Metrics, RefusedReason};
use crate::origin::OriginPolicy;
use crate::room::Room;
use crate::ws::Accepted;

/// Shared by every request: configuration, the shutdown token that reaches each connection,
/// the tracker that lets shutdown wait for connection tasks, and what the upgrade needs.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub settings: Arc<connection::Settings>,
    pub origins: Arc<OriginPolicy>,
    pub slots: Arc<Slots>,
    pub metrics: Arc<Metrics>,
    pub room: Arc<Room>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl AppState {
    /// The state for `config`; starts the room's background tasks (they stop with `shutdown`
    /// and are tracked, so must run inside a tokio runtime).
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let max = config.max_connections.unwrap_or_else(limits::default_max_connections);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        Self {
            settings: Arc::new(connection::Settings::new(&config)),
            origins: Arc::new(OriginPolicy::new(config.allowed_origins.clone())),
            slots: Slots::new(max, Arc::clone(&metrics)),
            room: Room::start(&config, Arc::clone(&metrics), &shutdown, &tracker),
            metrics,
            config: Arc::new(config),
            shutdown,
            tracker,
        }
    }
}

/// The whole HTTP surface: the echo WebSocket at `/ws/` (and `/ws`), the room at `/ws/room`,
/// health, readiness and metrics, the page and its assets.
pub fn router(state: AppState) -> Router {
    Router::new()
        // `any`, so a POST is refused (and counted) by the upgrade check, not by the router.
        .route(wire::WS_PATH, any(ws::handler))
        .route(wire::WS_PATH_NO_SLASH, any(ws::handler))
        .route(wire::room::PATH, any(ws::room_handler))
        .route(wire::HEALTHZ_PATH, get(ops::healthz))
        .route(wire::READYZ_PATH, get(ops::readyz))
        .route(wire::METRICS_PATH, get(ops::metrics))
        .merge(assets::routes(&state.config.assets))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes; then stops accepting, turns `/readyz` to
/// 503, sends Close 1001 to every open WebSocket and waits for requests and connections to
/// finish, at most `config.shutdown_grace` in all.
///
/// Connections are served with hyper directly rather than `axum::serve`, which offers no
/// header-read timeout: here a TCP client that does not complete its request head within
/// `--handshake-timeout` is dropped (also between requests on a kept-alive connection).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config);
    let app = router(state.clone());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(state.config.handshake_timeout);
    info!(
        max_connections = state.slots.max(),
        ping_interval = ?state.config.ping_interval,
        idle_timeout = ?state.config.idle_timeout,
        "accepting connections"
    );

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        state.tracker.spawn(serve_http(http.clone(), app.clone(), tcp, peer, state.clone()));
    }

    // Stop accepting, then let every connection task see the token: HTTP connections finish
    // their request, WebSocket connections send 1001. One deadline covers both, so a silent
    // HTTP client cannot hold shutdown up either.
    drop(listener);
    state.shutdown.cancel();
    state.tracker.close();
    info!(connections = state.tracker.len(), "shutting down");
    if tokio::time::timeout(state.config.shutdown_grace, state.tracker.wait()).await.is_err() {
        warn!(
            connections = state.tracker.len(),
            grace = ?state.config.shutdown_grace,
            "still open after the grace period; closing"
        );
    }
    Ok(())
}

/// Serves one TCP connection's HTTP/1.1 requests, and its upgrade.
async fn serve_http(
    http: http1::Builder,
    app: Router,
    tcp: TcpStream,
    peer: SocketAddr,
    state: AppState,
) {
    // Replies are small and latency is the point: no Nagle delay.
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let accepted = Accepted { peer, at: Instant::now() };
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(accepted);
        app.clone().call(request)
    });
    let connection = http.serve_connection(TokioIo::new(tcp), service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = state.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        let reason = if error.is_timeout() {
            RefusedReason::Timeout
        } else if error.is_parse() || error.is_parse_too_large() || error.is_incomplete_message() {
            RefusedReason::Malformed
        } else {
            debug!(%peer, %error, "connection ended with an error");
            return;
        };
        state.metrics.refused(reason);
        info!(%peer, %error, reason = reason.as_str(), "HTTP connection dropped");
    }
}

/// After a failed `accept()`: per-connection errors are skipped; anything else (running out
/// of file descriptors) is logged and retried after a pause instead of spinning.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    error!(%error, "accept failed; retrying in 100 ms (file-descriptor limit?)");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
