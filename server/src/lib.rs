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

use std::future::{Future, IntoFuture};
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

/// Serves on `listener` until `shutdown` completes, then stops accepting, sends Close 1001 to
/// every open WebSocket and waits for HTTP requests and WebSocket connections to finish, at
/// most `config.shutdown_grace` in all.
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

    let mut serve = std::pin::pin!(axum::serve(listener, app)
        .with_graceful_shutdown(token.clone().cancelled_owned())
        .into_future());
    tokio::select! {
        // Only an accept error ends serving before the signal.
        result = &mut serve => return result,
        () = shutdown => token.cancel(),
    }

    // `with_graceful_shutdown` does not wait for upgraded connections; the tracker does. One
    // deadline covers both, so a silent HTTP client cannot hold shutdown up either.
    tracker.close();
    info!(connections = tracker.len(), "shutting down");
    let drain = async {
        let served = serve.await;
        tracker.wait().await;
        served
    };
    match tokio::time::timeout(grace, drain).await {
        Ok(served) => served,
        Err(_) => {
            warn!(
                connections = tracker.len(),
                ?grace,
                "still open after the grace period; closing"
            );
            Ok(())
        }
    }
}
