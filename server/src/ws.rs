//! The WebSocket endpoints, `/ws/` (the echo) and `/ws/room`: checks the upgrade request
//! (RFC 6455 §4.2.1, the room's query, origin, connection limit), answers 101 and hands the
//! upgraded socket to its own task with its [`App`].
//!
//! The handshake is done here rather than by axum's `WebSocketUpgrade` for two reasons: every
//! refusal gets its own status, body and metric, and the connection task owns the raw socket,
//! which [`connection`] needs to close cleanly after a message it could not read to its end.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{error, info, info_span};

use crate::app::App;
use crate::connection;
use crate::limits::Slot;
use crate::metrics::{RefusedReason, Transport};
use crate::origin::OriginRefused;
use crate::socket::Socket;
use crate::AppState;

/// The only WebSocket protocol version (RFC 6455).
const VERSION: &str = "13";
/// What `Retry-After` tells a client refused for the connection limit, in seconds.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// Where and when the TCP connection carrying a request was accepted; inserted into each
/// request's extensions by [`crate::run`].
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub peer: SocketAddr,
    pub at: Instant,
}

/// Why an upgrade request was turned away; each maps to one status and body.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("a WebSocket upgrade must be a GET request")]
    Method,
    #[error(
        "this is the WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)"
    )]
    NotAnUpgrade,
    #[error("unsupported Sec-WebSocket-Version `{0}`: this server speaks version 13")]
    Version(String),
    #[error("Sec-WebSocket-Key is missing, repeated, or not 16 bytes in base64")]
    Key,
    #[error("{0}")]
    Query(wire::room::QueryError),
    #[error("this connection cannot be upgraded (HTTP/1.1 is required)")]
    NotUpgradable,
    #[error("{0}")]
    Origin(#[from] OriginRefused),
    #[error(
        "the server has {max} WebSocket connections open, its limit (--max-connections); \
         retry in {RETRY_AFTER_SECONDS} s"
    )]
    Full { max: usize },
    #[error("{}; retry in {RETRY_AFTER_SECONDS} s", crate::room::NOT_READY)]
    RoomNotReady,
}

impl Refusal {
    /// The `reason` label this refusal is counted under.
    pub fn reason(&self) -> RefusedReason {
        match self {
            Refusal::Origin(_) => RefusedReason::Origin,
            Refusal::Full { .. } => RefusedReason::Limit,
            Refusal::RoomNotReady => RefusedReason::Unready,
            _ => RefusedReason::Malformed,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match &self {
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::NotAnUpgrade | Refusal::Version(_) => StatusCode::UPGRADE_REQUIRED,
            Refusal::Key | Refusal::NotUpgradable | Refusal::Query(_) => StatusCode::BAD_REQUEST,
            Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::Full { .. } | Refusal::RoomNotReady => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        match &self {
            Refusal::Method => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            Refusal::NotAnUpgrade => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            }
            Refusal::Version(_) => {
                headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
            }
            Refusal::Full { .. } | Refusal::RoomNotReady => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

/// Checks that a request is a well-formed WebSocket upgrade and returns its
/// `Sec-WebSocket-Accept` value.
pub fn check_upgrade(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    if method != Method::GET {
        return Err(Refusal::Method);
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refusal::NotAnUpgrade);
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        Some(version) if version == VERSION => {}
        other => {
            let got = other.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(Refusal::Version(got.unwrap_or_else(|| "(none)".to_owned())));
        }
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else { return Err(Refusal::Key) };
    if !is_base64_of_16_bytes(key.as_bytes()) {
        return Err(Refusal::Key);
    }
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|_| Refusal::Key)
}

/// Whether a comma-separated header has `token` (case-insensitive) in any of its values.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// 16 bytes in base64 are 22 characters of the alphabet and `==`.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Which application an upgraded connection runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Echo,
    /// The room, resuming from this point if given.
    Room(Option<wire::room::Resume>),
}

/// `GET /ws/`: upgrades the request, or refuses it with a status and a body that says why.
pub async fn handler(State(state): State<AppState>, request: Request) -> Response {
    serve_upgrade(state, request, |_| Ok(Endpoint::Echo))
}

/// `GET /ws/room[?epoch=E&offset=N]`: the same, for the room; a malformed query gets 400, and
/// a room that is not [`crate::room::Room::ready`] 503.
pub async fn room_handler(State(state): State<AppState>, request: Request) -> Response {
    let ready = state.room.ready();
    serve_upgrade(state, request, |request| {
        let query = request.uri().query().unwrap_or_default();
        let resume = wire::room::parse_query(query).map_err(Refusal::Query)?;
        if !ready {
            return Err(Refusal::RoomNotReady);
        }
        Ok(Endpoint::Room(resume))
    })
}

fn serve_upgrade(
    state: AppState,
    mut request: Request,
    endpoint: impl FnOnce(&Request) -> Result<Endpoint, Refusal>,
) -> Response {
    let accepted = request.extensions().get::<Accepted>().copied().unwrap_or(Accepted {
        peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        at: Instant::now(),
    });
    match upgrade(&state, &mut request, accepted, endpoint) {
        Ok(response) => response,
        Err(refusal) => {
            state.metrics.refused(refusal.reason());
            info!(peer = %accepted.peer, reason = refusal.reason().as_str(), %refusal, "upgrade refused");
            refusal.into_response()
        }
    }
}

fn upgrade(
    state: &AppState,
    request: &mut Request,
    accepted: Accepted,
    endpoint: impl FnOnce(&Request) -> Result<Endpoint, Refusal>,
) -> Result<Response, Refusal> {
    let accept = check_upgrade(request.method(), request.headers())?;
    let endpoint = endpoint(request)?;
    state.origins.check(request.headers())?;
    let slot = state
        .slots
        .try_open(Transport::WebSocket)
        .ok_or(Refusal::Full { max: state.slots.max() })?;
    let on_upgrade =
        request.extensions_mut().remove::<OnUpgrade>().ok_or(Refusal::NotUpgradable)?;
    spawn_connection(state, on_upgrade, slot, accepted, endpoint);

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Runs [`connection::serve`] as a tracked task once hyper has handed over the socket, so
/// shutdown reaches it and waits for it. Tracked from now, not from when the upgrade
/// completes: a connection upgraded while the server shuts down still gets its Close 1001.
/// A room member joins once the socket is there, so its history is cut at that moment.
fn spawn_connection(
    state: &AppState,
    on_upgrade: OnUpgrade,
    slot: Slot,
    accepted: Accepted,
    endpoint: Endpoint,
) {
    let settings = state.settings.clone();
    let room = state.room.clone();
    let metrics = state.metrics.clone();
    let shutdown = state.shutdown.child_token();
    let span = info_span!("conn", id = slot.id, peer = %accepted.peer);
    state.tracker.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                // The peer closed before hyper had written the 101 (or shutdown came first):
                // its doing, nothing for an operator.
                Err(error) => {
                    info!(parent: &span, %error, "the connection ended before the upgrade completed");
                    return;
                }
            };
            metrics.handshake_took(accepted.at.elapsed());
            // The socket itself, not hyper's boxed `Upgraded` in front of it (see `Socket`).
            // What hyper had read past the request (a first frame sent with it) comes along.
            let Ok(parts) = upgraded.downcast::<TokioIo<crate::io::WriteDeadline<TcpStream>>>()
            else {
                error!(parent: &span, "an upgraded connection is not the stream `serve_http` gave hyper");
                return;
            };
            let app = match endpoint {
                Endpoint::Echo => App::Echo(settings.mode),
                Endpoint::Room(resume) => {
                    let (member, greeting) = span.in_scope(|| room.join(resume.as_ref()));
                    App::Room { member, greeting }
                }
            };
            let socket = take_over(parts, settings.websocket_config(), span);
            // On the heap, so the task is small: inline, the connection's future was stored
            // twice over in this one (rust-lang/rust#62958), and tokio copies a task's future
            // several times as it spawns and ends it. Boxed, this task's future is 168 B (it
            // was 5.6 KB): 3 % fewer instructions per handshake (docs/BENCHMARKS.md, part 4).
            Box::pin(connection::serve(socket, app, &settings, &shutdown, &metrics)).await;
            drop(slot);
        },
    );
}

/// The WebSocket on the stream hyper upgraded. `parts` goes here: its `read_buf` is hyper's
/// whole read buffer (8 KiB, whatever it still holds), and kept alive beside the connection it
/// doubled the server's memory per idle connection.
fn take_over(
    parts: hyper::upgrade::Parts<TokioIo<crate::io::WriteDeadline<TcpStream>>>,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    span: tracing::Span,
) -> Socket {
    Socket::new(parts.io.into_inner().into_inner(), parts.read_buf.to_vec(), config, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        headers
    }

    #[test]
    fn a_valid_upgrade_gets_the_rfc_accept_key() {
        // The example from RFC 6455 §1.3.
        let accept = check_upgrade(&Method::GET, &upgrade_headers()).expect("valid");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_malformed_upgrade_gets_its_own_status() {
        let status = |method: Method, edit: &dyn Fn(&mut HeaderMap)| {
            let mut headers = upgrade_headers();
            edit(&mut headers);
            let refusal = check_upgrade(&method, &headers).expect_err("refused");
            assert_eq!(refusal.reason(), RefusedReason::Malformed);
            refusal.into_response().status()
        };
        assert_eq!(status(Method::POST, &|_| {}), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            status(Method::GET, &|h| drop(h.remove(header::UPGRADE))),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status(Method::GET, &|h| {
                h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("12"));
            }),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status(Method::GET, &|h| drop(h.remove(header::SEC_WEBSOCKET_KEY))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(Method::GET, &|h| {
                h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(Method::GET, &|h| {
                h.append(
                    header::SEC_WEBSOCKET_KEY,
                    HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
                );
            }),
            StatusCode::BAD_REQUEST,
            "a repeated key"
        );
    }

    #[test]
    fn a_wrong_version_is_told_which_one_to_use() {
        let mut headers = upgrade_headers();
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("12"));
        let response = check_upgrade(&Method::GET, &headers).expect_err("v12").into_response();
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn the_limit_refusal_says_when_to_retry() {
        let response = Refusal::Full { max: 3 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
