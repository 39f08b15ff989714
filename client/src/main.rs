//! `client`: the tutorial's command-line WebSocket client. See the `client` library.

use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = client::parse_args();
    let code = match client::run(args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("client: error: {error:#}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    // Exit here rather than return: a pending read of standard input (stdin mode) would keep
    // the runtime, and so the process, alive until the user typed another line.
    std::process::exit(code);
}
