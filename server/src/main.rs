//! `server`: parses flags, sets up logging, binds, prints the URL and runs until Ctrl-C or
//! SIGTERM.

use std::future::Future;

use anyhow::Context;
use clap::Parser;
use server::Config;
use tokio::net::TcpListener;

/// Single-threaded: this runtime is the first of the workers (`server::workers`); `run`
/// starts one more per core beside it.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(error) = config.validate() {
        clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{error}\n")).exit();
    }
    server::telemetry::init();
    // Each WebSocket is a file descriptor; the default --max-connections follows this limit.
    if let Err(error) = server::limits::raise_fd_limit() {
        tracing::warn!(%error, "cannot raise the file-descriptor limit");
    }
    let listener = TcpListener::bind(config.addr())
        .await
        .with_context(|| format!("cannot listen on {}", config.addr()))?;
    let addr = listener.local_addr().context("cannot read the bound address")?;
    if !config.assets.join("index.html").is_file() {
        tracing::warn!(
            assets = %config.assets.display(),
            "no index.html in the assets directory; build it with `{}`",
            server::assets::BUILD_COMMAND
        );
    }
    let shutdown = shutdown_signal()?;
    // The one line on stdout: people click it, scripts (`cargo xtask`) parse it.
    println!("{}{addr}/", wire::SERVING_ON);
    // Served from a task of its own, like every connection the accept loop keeps for itself.
    let served = tokio::spawn(server::run(listener, config, shutdown));
    served.await.context("the server task panicked")?.context("server failed")
}

/// Registers the Ctrl-C and SIGTERM handlers now (before the URL is announced, so a
/// supervisor's SIGTERM always means a graceful stop) and completes on either.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
