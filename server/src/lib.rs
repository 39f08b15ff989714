//! The realtime server as a library: [`router`] builds the app, [`run`] serves it on a bound
//! listener until a shutdown signal, then drains open WebSocket connections.
//!
//! Tests bind `127.0.0.1:0`, call [`run`] and talk to the real thing.

pub mod assets;
pub mod client;
pub mod config;
pub mod connection;
pub mod telemetry;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

pub use config::Config;

/// Shared by every request: configuration, the shutdown token that reaches each connection,
/// and the tracker that lets shutdown wait for connection tasks.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }
}

/// The whole HTTP surface: the WebSocket at `/ws/` (and `/ws`), the page and its assets.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(wire::WS_PATH, get(ws::handler))
        .route(wire::WS_PATH_NO_SLASH, get(ws::handler))
        .merge(assets::routes(&state.config.assets))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes, then sends Close 1001 to every open
/// WebSocket and waits up to `config.shutdown_grace` for them to finish.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config);
    let token = state.shutdown.clone();
    let tracker = state.tracker.clone();
    let grace = state.config.shutdown_grace;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();

    let signal = token.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            signal.cancel();
        })
        .await?;

    // `with_graceful_shutdown` does not wait for upgraded connections; the tracker does.
    token.cancel();
    tracker.close();
    if !tracker.is_empty() {
        info!(connections = tracker.len(), "closing WebSocket connections");
    }
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(connections = tracker.len(), ?grace, "connections still open after the grace period");
    }
    Ok(())
}
