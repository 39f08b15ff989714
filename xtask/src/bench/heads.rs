//! Half-sent request heads, the third part of `cargo xtask bench`: what connections that have
//! sent most of a request head, and then nothing, cost our server (issue 13). Our server only
//! (pinned to core 0), release build, `--max-connections 5` (the WebSocket limit does not
//! bound them), `--max-http-connections` raised above the plan's count and
//! `--handshake-timeout` raised to 60 s so none is refused or dropped while measuring; the
//! load generator (`bench heads`, core 1) holds the connections, waits until the server has
//! read every byte and its RSS has settled, and sends one head over the cap, which must get
//! 431.

use std::path::Path;

use anyhow::{ensure, Result};
use serde_json::Value;

use super::{generate, machine, number, replace_generated, Pinning, Plan};
use crate::process::{start_announcing, step};

/// The server's cap on a request head (`server::limits::HEAD_LIMIT`, which xtask does not
/// link). Were the server's cap raised past [`OVER`], the 431 check below would fail.
const HEAD_LIMIT: usize = 16 * 1024;
/// What each held connection sends: just under the cap, never finishing the head.
const HELD_BYTES: usize = 16_000;
/// What the one extra connection sends: over the cap.
const OVER: usize = 20_000;
/// The handshake timeout for the run (the default is 10 s): ample for the full plan.
const HANDSHAKE_TIMEOUT: &str = "60s";

/// Runs the scenario once, prints its table and, with `write_docs`, writes it to
/// `docs/BENCHMARKS.md`. Fails unless every held connection was still open, the extra one got
/// 431, and each held connection cost less than twice the cap: a sanity bound on the
/// measurement (a buffer per connection near 400 KB, as before the cap, would fail it), not a
/// speed assertion.
pub(super) fn run(
    root: &Path,
    release: &Path,
    pin: Pinning,
    plan: Plan,
    write_docs: bool,
) -> Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let n = plan.heads;
    let label = format!("{n} connections holding half-sent request heads, on ours");
    let result = step(&label, || {
        let max_http = (n + 64).to_string();
        let mut command = pin.command(0, &release.join("server"));
        command.arg("--assets").arg(root.join("dist"));
        command.args(["--port", "0", "--max-connections", "5", "--max-http-connections"]);
        command.args([max_http.as_str(), "--handshake-timeout", HANDSHAKE_TIMEOUT]);
        command.stderr(std::process::Stdio::null());
        let (guard, addr) = start_announcing(command)?;
        let args = ["heads", "--connections", &n.to_string()];
        let sizes = ["--bytes", &HELD_BYTES.to_string(), "--over", &OVER.to_string()];
        generate(release, pin, addr, guard.pid(), &[&args[..], &sizes[..]].concat())
    })?;
    let table = table(&result);
    println!("{table}");

    let per = number(&result, "rss_per_connection_bytes");
    let open = number(&result, "held_open") as usize;
    let status = result.get("over_status").and_then(Value::as_str).unwrap_or("none");
    ensure!(open == n, "only {open} of {n} connections holding a half-sent head were still open");
    ensure!(status == "431", "a head of {OVER} bytes got {status}, not 431");
    // A sanity bound, not a speed assertion: far above what a connection costs at the cap
    // (about 24 kB), far below the 400 KB of hyper's default buffer.
    ensure!(
        per < 2.0 * HEAD_LIMIT as f64,
        "each half-sent head cost {per:.0} bytes of server RSS, over twice the cap ({HEAD_LIMIT})"
    );
    if write_docs {
        let generated = format!(
            "{}. Command: `cargo xtask bench` (or `--heads`): our server (release) on core 0 \
             with `--max-connections 5`, `--max-http-connections {}` and \
             `--handshake-timeout {HANDSHAKE_TIMEOUT}` (raised from 10 s so that no connection \
             is dropped while measuring), the load generator on core 1; load average before \
             the run {}.\n\n{table}",
            machine(),
            n + 64,
            load.join(" / "),
        );
        replace_generated(root, "heads ", &generated)?;
    }
    Ok(())
}

fn table(result: &Value) -> String {
    let mb = |key| number(result, key) / 1e6;
    let per = number(result, "rss_per_connection_bytes");
    let n = number(result, "connections");
    format!(
        "| | |\n|---|---|\n\
         | connections holding a half-sent head | {n:.0} |\n\
         | head sent by each (never finished) | {:.0} bytes |\n\
         | the server's head cap | {HEAD_LIMIT} bytes (16 KiB) |\n\
         | server RSS before / holding them | {:.1} MB / {:.1} MB |\n\
         | **RSS added per connection** | **{per:.0} bytes ({:.1} kB, {:.2} × the cap)** |\n\
         | still open when measured | {:.0} of {n:.0} |\n\
         | from the last byte sent to RSS settled (read, then 200 ms without growth) | {:.2} s |\n\
         | one more connection sending {:.0} bytes of head | {} |\n",
        number(result, "head_bytes"),
        mb("rss_before_bytes"),
        mb("rss_held_bytes"),
        per / 1000.0,
        per / HEAD_LIMIT as f64,
        number(result, "held_open"),
        number(result, "settle_seconds"),
        number(result, "over_bytes"),
        result.get("over_status").and_then(Value::as_str).unwrap_or("none"),
    )
}
