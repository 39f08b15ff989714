//! Operational endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use crate::AppState;

/// The content type of the OpenMetrics text format that `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`: 200 while the process serves HTTP at all.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200, and 503 from the moment shutdown begins, so a load balancer sends new
/// connections elsewhere while this instance drains. A room whose broker is down leaves it 200
/// (the echo serves, the room keeps its members) and is named in the body.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    match state.room.degraded() {
        Some(why) => (StatusCode::OK, format!("ready; room degraded: {why}\n")),
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}

/// `GET /metrics`: every metric in the Prometheus/OpenMetrics text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.metrics.render())
}
