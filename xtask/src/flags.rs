//! The `cargo xtask` command line.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Set up, build, run and test the realtime app.")]
pub struct Flags {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install missing tools, build the release bundle and server, and run the app on
    /// http://127.0.0.1:8888 (arguments after `--` go to the server, e.g. `-- --port 9000`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Development loop: the server on 8888 plus `trunk serve` on 8080 (rebuilds the page on
    /// changes, proxies /ws/ to the server). Ctrl-C stops both.
    Dev,
    /// Install whatever the tests need and run every check: fmt, clippy (native and wasm32),
    /// unit and integration tests, browser tests and end-to-end tests.
    Test,
    /// Install missing tools and build the release bundle (dist/) and the release server.
    Build,
    /// Only install missing tools (add `--browser` for Chromium and chromedriver).
    Setup {
        #[arg(long)]
        browser: bool,
    },
    /// Print the size of the built bundle (.wasm and .js, raw and gzip -9).
    Size,
    /// Measure our server against Tornado, axum's defaults and fastwebsockets (servers pinned
    /// to one core, the load generator to the other) and write the table to
    /// docs/BENCHMARKS.md and docs/bench.svg. `--smoke`: one short round that only checks
    /// every reply. `--soak SECONDS`: our server alone, 10,000 connections held while at least
    /// 200,000 churn beside them for at least SECONDS; RSS over time to docs/bench-soak.svg.
    /// `--fanout`: only the fan-out part (our room against Socket.IO, two instances on one
    /// Redis each), with `--smoke` its short check. `--heads`: only the half-sent request
    /// heads (what connections holding an unfinished head cost our server, and the 431).
    /// `--polling`: only the long-polling echo (ours against Socket.IO's polling transport,
    /// beside our WebSocket echo), with `--smoke` its short check. `--instructions`: only the
    /// user-space instructions per message and per handshake, ours and fastwebsockets', counted
    /// by callgrind (with `--smoke`, one row).
    Bench {
        #[arg(long, conflicts_with = "soak")]
        smoke: bool,
        #[arg(long, value_name = "SECONDS")]
        soak: Option<u64>,
        #[arg(long, conflicts_with = "soak")]
        fanout: bool,
        #[arg(long, conflicts_with_all = ["soak", "fanout"])]
        heads: bool,
        #[arg(long, conflicts_with_all = ["soak", "fanout", "heads"])]
        polling: bool,
        #[arg(long, conflicts_with_all = ["soak", "fanout", "heads", "polling"])]
        instructions: bool,
    },
}
