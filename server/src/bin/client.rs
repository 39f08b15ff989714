//! `client`: the tutorial's command-line WebSocket client. See [`server::client`].

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = server::client::Args::parse();
    match server::client::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("client: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
