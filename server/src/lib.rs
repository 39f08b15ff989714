//! The realtime server as a library: [`router`] builds the app, [`run`] serves it on a bound
//! listener until a shutdown signal, then drains open connections.
//!
//! Tests bind `127.0.0.1:0`, call [`run`] and talk to the real thing.

pub mod app;
pub mod assets;
pub mod config;
pub mod connection;
pub mod io;
pub mod limits;
pub mod mailbox;
pub mod metrics;
pub mod ops;
pub mod origin;
pub mod poll;
pub mod room;
pub mod socket;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wake;
pub mod workers;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;
use tracing::{debug, error, info, warn, Span};

pub use config::Config;

use crate::io::WriteDeadline;
use crate::limits::{HttpSlot, HttpSlots, Slots};
use crate::metrics::{Metrics, RefusedReason};
use crate::origin::{HostPolicy, OriginPolicy};
use crate::room::Room;
use crate::ws::Accepted;

/// Shared by every request: configuration, the shutdown token that reaches each connection,
/// the tracker that lets shutdown wait for connection tasks, and what the upgrade needs (the
/// fields of [`Shared`], read through `Deref`). One `Arc`: axum clones the state for each
/// request's handler, and a clone of the fields themselves was a dozen reference counts up and
/// down per request.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub settings: Arc<connection::Settings>,
    pub origins: Arc<OriginPolicy>,
    pub hosts: Arc<HostPolicy>,
    pub slots: Arc<Slots>,
    pub http_slots: Arc<HttpSlots>,
    pub metrics: Arc<Metrics>,
    pub room: Arc<Room>,
    pub polls: Arc<poll::Sessions>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl AppState {
    /// The state for `config`; starts the room's background tasks (they stop with `shutdown`
    /// and are tracked, so must run inside a tokio runtime).
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let max = config.max_connections.unwrap_or_else(limits::default_max_connections);
        let max_http =
            config.max_http_connections.unwrap_or_else(limits::default_max_http_connections);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        Self(Arc::new(Shared {
            settings: Arc::new(connection::Settings::new(&config)),
            origins: Arc::new(OriginPolicy::new(config.allowed_origins.clone())),
            hosts: Arc::new(HostPolicy::new(config.allowed_hosts.clone())),
            slots: Slots::new(max, Arc::clone(&metrics)),
            http_slots: HttpSlots::new(max_http),
            room: Room::start(&config, Arc::clone(&metrics), &shutdown, &tracker),
            polls: Arc::default(),
            metrics,
            config: Arc::new(config),
            shutdown,
            tracker,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole HTTP surface: the echo WebSocket at `/ws/` (and `/ws`), the room at `/ws/room`,
/// both again over HTTP polling under `/poll/`, health, readiness and metrics, the page and its
/// assets.
pub fn router(state: AppState) -> Router {
    Router::new()
        // `any`, so a POST is refused (and counted) by the upgrade check, not by the router.
        .route(wire::WS_PATH, any(ws::handler))
        .route(wire::WS_PATH_NO_SLASH, any(ws::handler))
        .route(wire::room::PATH, any(ws::room_handler))
        .route(&format!("{}{{*rest}}", wire::poll::PREFIX), any(poll::handler))
        .route(wire::HEALTHZ_PATH, get(ops::healthz))
        .route(wire::READYZ_PATH, get(ops::readyz))
        .route(wire::METRICS_PATH, get(ops::metrics))
        .merge(assets::routes(&state.config.assets))
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        .with_state(state)
}

/// tower-http's default logs every 5xx at ERROR. A 503 is what a peer gets at a limit, during
/// shutdown or before the bundle is built: peers cause those at will, and each already has
/// its own INFO line where it is decided; only the others are an operator's business.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &Span) {
    match class {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            debug!(?latency, "answered 503");
        }
        ServerErrorsFailureClass::StatusCode(status) => {
            error!(%status, ?latency, "request failed");
        }
        ServerErrorsFailureClass::Error(error) => error!(%error, ?latency, "request failed"),
    }
}

/// What a TCP connection over `--max-http-connections` is sent before it is closed (see
/// [`limits`]): written straight from the accept loop, without reading the request.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain; charset=utf-8\r\n\
    retry-after: 5\r\n\
    connection: close\r\n\
    content-length: 74\r\n\
    \r\n\
    the server has --max-http-connections HTTP connections open; retry in 5 s\n";

/// How long [`run`] waits for the room's broker before it accepts connections.
pub const BROKER_STARTUP_WAIT: Duration = Duration::from_secs(2);

/// Serves on `listener` until `shutdown` completes; then stops accepting, turns `/readyz` to
/// 503, sends Close 1001 to every open WebSocket and waits for requests and connections to
/// finish, at most `config.shutdown_grace` in all.
///
/// Connections are served with hyper directly rather than `axum::serve`, which offers no
/// header-read timeout: here a TCP client that does not complete its request head within
/// `--handshake-timeout` is dropped (also between requests on a kept-alive connection). Each
/// connection's request buffer is capped at [`limits::HEAD_LIMIT`] (a longer head gets 431),
/// which also bounds how far hyper reads ahead into pipelined requests (it answers them one at
/// a time); writes go through [`WriteDeadline`], so a peer that stops reading a response is
/// dropped after `--send-timeout`; and TCP connections not upgraded count against
/// `--max-http-connections`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config);
    let app = router(state.clone());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.handshake_timeout)
        .max_buf_size(limits::HEAD_LIMIT);
    let workers =
        workers::Workers::start(state.config.workers.unwrap_or_else(workers::default_count))?;
    // With Redis, the room takes members once it has the room's epoch from it (see
    // `Room::ready`): wait for that a moment, so that a page reconnecting while this instance
    // starts waits in the listen backlog instead of being refused. Redis down at startup
    // does not keep the echo from serving.
    if tokio::time::timeout(BROKER_STARTUP_WAIT, state.room.until_ready()).await.is_err() {
        info!(
            waited = ?BROKER_STARTUP_WAIT,
            "room broker (Redis) not reached yet: serving, with room joins refused until it is"
        );
    }
    info!(
        workers = workers.count(),
        max_connections = state.slots.max(),
        max_http_connections = state.http_slots.max(),
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
        let Some(slot) = state.http_slots.try_open() else {
            refuse_busy(&tcp, peer, &state);
            continue;
        };
        let (http, app, connection_state) = (http.clone(), app.clone(), state.clone());
        match workers.next() {
            None => {
                state.tracker.spawn(serve_http(http, app, tcp, peer, slot, connection_state));
            }
            // Registered with the other worker's reactor, so that its readiness wakes that
            // worker (see `workers`).
            Some(worker) => match tcp.into_std() {
                Ok(tcp) => {
                    let serve = async move {
                        match TcpStream::from_std(tcp) {
                            Ok(tcp) => {
                                serve_http(http, app, tcp, peer, slot, connection_state).await;
                            }
                            Err(error) => debug!(%peer, %error, "cannot hand the connection over"),
                        }
                    };
                    state.tracker.spawn_on(serve, worker);
                }
                Err(error) => debug!(%peer, %error, "cannot hand the connection over"),
            },
        }
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
    // Whatever is still running on the other workers is dropped with them.
    workers.stop();
    Ok(())
}

/// Over `--max-http-connections`: [`BUSY_RESPONSE`] if the socket takes it at once (a fresh
/// socket's send buffer is empty), then close. Nothing is read or allocated.
fn refuse_busy(tcp: &TcpStream, peer: SocketAddr, state: &AppState) {
    let _ = tcp.try_write(BUSY_RESPONSE);
    state.metrics.refused(RefusedReason::Limit);
    info!(%peer, max_http_connections = state.http_slots.max(), "HTTP connection refused: at the limit");
}

/// Serves one TCP connection's HTTP/1.1 requests, and its upgrade; `_slot` is its place under
/// `--max-http-connections`, released when hyper hands the socket over or the connection ends.
async fn serve_http(
    http: http1::Builder,
    app: Router,
    tcp: TcpStream,
    peer: SocketAddr,
    _slot: HttpSlot,
    state: AppState,
) {
    // Replies are small and latency is the point: no Nagle delay.
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let accepted = Accepted { peer, at: Instant::now() };
    let hosts = Arc::clone(&state.hosts);
    let metrics = Arc::clone(&state.metrics);
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<Incoming>| {
        let host = hosts.check(request.version(), request.headers());
        request.extensions_mut().insert(accepted);
        let mut app = app.clone();
        let metrics = Arc::clone(&metrics);
        async move {
            if let Err(refused) = host {
                metrics.refused(RefusedReason::Host);
                info!(%peer, %refused, "request refused for its Host");
                return Ok((refused.status(), format!("{refused}\n")).into_response());
            }
            app.call(request).await
        }
    });
    let io = WriteDeadline::new(tcp, state.config.send_timeout);
    let connection = http.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = state.shutdown.cancelled() => {
            // Polling clients fetch their close over these connections (see
            // `poll::Sessions::drained`); then no new request is taken.
            tokio::select! {
                served = connection.as_mut() => served,
                () = state.polls.drained() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(error) = served {
        if stalled(&error) {
            let send_timeout = state.config.send_timeout;
            info!(%peer, ?send_timeout, "the peer stopped reading a response; dropping the connection");
            return;
        }
        let reason = if error.is_timeout() {
            RefusedReason::Timeout
        } else if error.is_parse() || error.is_parse_too_large() || error.is_incomplete_message() {
            RefusedReason::Malformed
        } else {
            debug!(%peer, ?error, "connection ended with an error");
            return;
        };
        state.metrics.refused(reason);
        info!(%peer, %error, reason = reason.as_str(), "HTTP connection dropped");
    }
}

/// Whether hyper's connection ended because [`WriteDeadline`] gave up on a write.
fn stalled(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if error.downcast_ref::<std::io::Error>().is_some_and(io::is_stalled) {
            return true;
        }
        source = error.source();
    }
    false
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
