//! `server`: parses flags, sets up logging, binds, prints the URL and runs until Ctrl-C or
//! SIGTERM.

use anyhow::Context;
use clap::Parser;
use server::Config;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    server::telemetry::init();
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
    // The one line on stdout: people click it, scripts (`cargo xtask`) parse it.
    println!("{}{addr}/", wire::SERVING_ON);
    server::run(listener, config, shutdown_signal()).await.context("server failed")
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
