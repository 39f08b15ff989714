//! The `/ws/` endpoint: accepts the WebSocket upgrade and hands the socket to its own task.

use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use tracing::warn;

use crate::connection;
use crate::AppState;

/// Upgrades the request and runs [`connection::serve`] as a tracked task, so shutdown can
/// reach it and wait for it.
pub async fn handler(
    upgrade: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    let shutdown = state.shutdown.child_token();
    // Taken now, not when the upgrade completes: a connection upgraded while the server is
    // shutting down is still waited for, and still gets its Close 1001.
    let tracked = state.tracker.token();
    upgrade
        .max_message_size(wire::limits::MAX_MESSAGE_BYTES)
        .max_frame_size(wire::limits::MAX_MESSAGE_BYTES)
        .on_failed_upgrade(move |error| warn!(%peer, %error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            connection::serve(socket, peer, shutdown).await;
            drop(tracked);
        })
}
