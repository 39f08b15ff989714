//! `ref-axum`: the Rust status quo for `cargo xtask bench`, the contract of `server` in the shape
//! of axum 0.8's own `examples/websockets`, with axum's defaults throughout.
//!
//! `WebSocketUpgrade` as it comes (no size limits or buffers set), `on_upgrade`, `Welcome!`, then
//! one upper-cased reply per text message; pings and the closing handshake are answered by
//! axum's tungstenite underneath. `axum::serve` as it comes too: unlike `server`, no
//! `TCP_NODELAY`, no keepalive pings, no timeouts, no limits, no logging.
//!
//! `ref-axum [--port PORT]` prints `Serving on http://127.0.0.1:PORT/` (port 0, the default,
//! picks a free one) and serves until SIGINT or SIGTERM.

use anyhow::{Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// The reference axum WebSocket server for `cargo xtask bench`.
#[derive(Debug, Parser)]
#[command(name = "ref-axum")]
struct Flags {
    /// Port to listen on at 127.0.0.1; 0 picks a free one (the printed URL has it).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let flags = Flags::parse();
    let app = Router::new().route(wire::WS_PATH, any(ws_handler));
    let listener = TcpListener::bind((wire::DEFAULT_HOST, flags.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", wire::DEFAULT_HOST, flags.port))?;
    let addr = listener.local_addr().context("cannot read the bound address")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    // Rust's stdout is line-buffered even into a pipe: the line is out before serving starts.
    println!("{}{addr}/", wire::SERVING_ON);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
        .await
        .context("server failed")
}

async fn ws_handler(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(handle_socket)
}

/// One connection. Reads until the stream ends: after a Close arrives, the next `recv` sends the
/// queued Close reply and then returns `None`.
async fn handle_socket(mut socket: WebSocket) {
    if socket.send(Message::Text(wire::WELCOME.into())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(text) = message {
            let reply = wire::reply(&text);
            if socket.send(Message::Text(reply.into())).await.is_err() {
                return;
            }
        }
    }
}
