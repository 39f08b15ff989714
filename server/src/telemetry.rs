//! Logging setup: `tracing` events to stderr, filtered by `RUST_LOG` or a default scoped to
//! this crate.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Used when `RUST_LOG` is unset: connection open/close at info, each message needs `debug`.
pub const DEFAULT_FILTER: &str = "server=info,tower_http=warn";

/// Installs the global subscriber. Stdout stays free for what the binaries print on purpose.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
