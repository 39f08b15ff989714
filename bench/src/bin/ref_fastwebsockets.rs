//! `ref-fastwebsockets`: the speed reference for `cargo xtask bench`, the contract of `server` on
//! fastwebsockets 0.10 and hyper 1, the way fastwebsockets' own `examples/echo_server.rs` is
//! written.
//!
//! hyper's HTTP/1 connection `with_upgrades()`, `fastwebsockets::upgrade::upgrade`, a
//! `FragmentCollector` (whole messages, text checked as UTF-8), the connection task
//! `unconstrained` as in the example; `Welcome!`, then one upper-cased reply per text message.
//! The library answers pings and Close itself (`auto_pong`, `auto_close`). Unlike the example,
//! the runtime is tokio's multi-threaded one, as for `server` and `ref-axum`, so all three
//! differ only in their WebSocket stacks; and only `/ws/` upgrades (404 elsewhere, 400 for a
//! request there that is not an upgrade). Like the example: no `TCP_NODELAY`, no timeouts, no
//! limits, no logging.
//!
//! `--log` adds what the tutorial asks of every server, and `server` does by default: a
//! "New connection" and a "Connection closed" line at INFO for each WebSocket, in a
//! `conn{id peer}` span, through tracing-subscriber's formatter to stderr. With it, the
//! handshake figure compares the two stacks doing the same work (docs/BENCHMARKS.md). Without
//! it, the connection task is the example's, untouched.
//!
//! `ref-fastwebsockets [--port PORT] [--log]` prints `Serving on http://127.0.0.1:PORT/` (port
//! 0, the default, picks a free one) and serves until SIGINT or SIGTERM.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use fastwebsockets::upgrade::{self, UpgradeFut};
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Whether `--log` was given.
static LOG: AtomicBool = AtomicBool::new(false);

/// The reference fastwebsockets server for `cargo xtask bench`.
#[derive(Debug, Parser)]
#[command(name = "ref-fastwebsockets")]
struct Flags {
    /// Port to listen on at 127.0.0.1; 0 picks a free one (the printed URL has it).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Log each connection's opening and end at INFO, as the tutorial (and `server`) does.
    #[arg(long)]
    log: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let flags = Flags::parse();
    LOG.store(flags.log, Ordering::Relaxed);
    if flags.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "ref_fastwebsockets=info,tower_http=warn",
            ))
            .with_writer(io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
            .init();
    }
    let listener = TcpListener::bind((wire::DEFAULT_HOST, flags.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", wire::DEFAULT_HOST, flags.port))?;
    let addr = listener.local_addr().context("cannot read the bound address")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    // Rust's stdout is line-buffered even into a pipe: the line is out before serving starts.
    println!("{}{addr}/", wire::SERVING_ON);
    tokio::select! {
        () = accept_loop(listener) => {}
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Serves each accepted connection in its own task, for ever.
async fn accept_loop(listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // A peer that gave up before `accept` costs nothing; anything else (out of file
                // descriptors) is waited out, as `axum::serve` does, rather than ending the
                // server in the middle of a benchmark.
                if !is_connection_error(&error) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| server_upgrade(request, peer)),
                )
                .with_upgrades();
            // A peer that hangs up mid-request is no news.
            let _ = connection.await;
        });
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn server_upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Empty<Bytes>>> {
    if req.uri().path() != wire::WS_PATH {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    if !upgrade::is_upgrade_request(&req) {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    let (response, fut) = upgrade::upgrade(&mut req)?;
    if LOG.load(Ordering::Relaxed) {
        tokio::spawn(logged(fut, peer));
        return Ok(response);
    }
    tokio::spawn(async move {
        // The peer leaving without a Close (or breaking the protocol) ends the connection; the
        // reference says nothing about it.
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

/// `--log`: the connection task with the tutorial's two lines, in a span numbered as
/// `server` numbers its connections.
async fn logged(fut: UpgradeFut, peer: SocketAddr) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let span = tracing::info_span!("conn", id = NEXT.fetch_add(1, Ordering::Relaxed), %peer);
    tracing::info!(parent: &span, "New connection");
    let ended = tokio::task::unconstrained(handle_client(fut)).await;
    let (code, ending) =
        if ended.is_ok() { (1000, "closed by the peer") } else { (1006, "dropped") };
    tracing::info!(parent: &span, code, ending, "Connection closed");
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

/// One connection: `Welcome!`, then a reply to each text message until the peer closes.
async fn handle_client(fut: UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    ws.write_frame(Frame::text(Payload::Borrowed(wire::WELCOME.as_bytes()))).await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            // `read_frame` has already sent the Close reply (`auto_close`).
            OpCode::Close => break,
            OpCode::Text => {
                // Checked by the collector already; a failure here cannot happen.
                let text =
                    std::str::from_utf8(&frame.payload).map_err(|_| WebSocketError::InvalidUTF8)?;
                let upper = wire::reply(text);
                ws.write_frame(Frame::text(Payload::Owned(upper.into_bytes()))).await?;
            }
            _ => {}
        }
    }
    Ok(())
}
