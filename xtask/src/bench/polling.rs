//! Long-polling echo, the fourth part of `cargo xtask bench`: our server's `/poll/` echo
//! (`wire::poll`) against Socket.IO 4.8's HTTP long-polling transport (`bench/socketio/echo.js`,
//! Engine.IO v4), beside our WebSocket echo at the same 64 connections. Each server on core 0,
//! a fresh one per measurement; the load generator (`bench polling`, core 1) keeps one message
//! in flight per session: a POST carries it, the long-poll GET that is always waiting brings
//! the reply. A warm-up, then a fixed window; every reply is checked, and one wrong or missing
//! fails the run (the smoke plan's too).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::fanout::{ensure_socketio, SOCKETIO_DIR};
use super::{
    generate_against, machine, median, noise, number, quieter, replace_generated, Format, Pinning,
    Plan, Server,
};
use crate::process::{start_announcing, step};

/// Sessions, each keeping one message in flight, as in [`WEBSOCKET_SCENARIO`].
const CONNECTIONS: usize = 64;
/// The echo scenario whose figures for our server the table shows beside polling's.
pub(super) const WEBSOCKET_SCENARIO: &str = "echo, 64 connections";
/// Bytes of each message (the load generator's default), as in the WebSocket echo.
const SIZE: usize = 32;
/// The target: our polling messages per server CPU-second over Socket.IO's.
const TARGET: f64 = 2.0;

/// A long-polling contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ours,
    SocketIo,
}

const PEERS: [Peer; 2] = [Peer::Ours, Peer::SocketIo];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours, long polling",
            Peer::SocketIo => "Socket.IO 4.8, polling",
        }
    }

    /// The load generator's `--protocol`.
    fn protocol(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::SocketIo => "socketio",
        }
    }

    /// The load generator's `--url`: for ours the echo's WebSocket URL, whose polling base the
    /// generator derives as the page and the CLI do; for Socket.IO its polling transport.
    fn url(self, addr: std::net::SocketAddr) -> String {
        match self {
            Peer::Ours => format!("ws://{addr}{}", wire::WS_PATH),
            Peer::SocketIo => format!("http://{addr}/socket.io/?EIO=4&transport=polling"),
        }
    }
}

/// Runs the plan's long-polling rounds, prints the table and, with `write_docs`, writes it to
/// `docs/BENCHMARKS.md`. `websocket` holds our WebSocket echo at 64 connections from this
/// run's echo scenarios (one result per round); without it (`--polling` alone) that figure is
/// measured here too, interleaved with the others. Fails when any reply was wrong or missing.
pub(super) fn run(
    root: &Path,
    release: &Path,
    pin: Pinning,
    plan: Plan,
    write_docs: bool,
    websocket: Option<Vec<Value>>,
) -> Result<()> {
    ensure_socketio(root)?;
    let mut remeasured = 0;
    // results[peer] = one JSON result per round.
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); PEERS.len()];
    let mut measured_websocket = Vec::new();
    let echo_64 = super::scenarios(plan)
        .into_iter()
        .find(|s| s.label == WEBSOCKET_SCENARIO)
        .context("the echo scenarios have no 64-connection echo")?;
    for round in 0..plan.rounds {
        for i in 0..PEERS.len() {
            let which = (i + round) % PEERS.len();
            let peer = PEERS[which];
            let label = format!(
                "round {}: long-polling echo, {CONNECTIONS} connections, on {}",
                round + 1,
                peer.name()
            );
            let once = || measure(root, release, pin, plan, peer);
            let show = |result: &Value| println!("    {}", summary(result));
            let first = step(&label, once)?;
            show(&first);
            let result = quieter(plan, &label, first, &mut remeasured, once, show)?;
            results[which].push(result);
        }
        if websocket.is_none() {
            let label = format!("round {}: {} on ours (WebSocket)", round + 1, echo_64.label);
            let once = || {
                let (guard, addr) =
                    super::start_server(root, release, Path::new(""), Server::Ours, pin)?;
                super::generate(release, pin, addr, guard.pid(), &echo_64.args)
            };
            let first = step(&label, once)?;
            let result = quieter(plan, &label, first, &mut remeasured, once, |_| {})?;
            measured_websocket.push(result);
        }
    }
    let websocket = websocket.unwrap_or(measured_websocket);
    let table = table(&results, &websocket)?;
    println!("{table}");
    let busiest = results.iter().flatten().filter_map(noise).fold(0.0, f64::max);
    let errors: f64 = results.iter().flatten().chain(&websocket).map(|r| number(r, "errors")).sum();
    if write_docs {
        let generated = format!(
            "{}. Command: `cargo xtask bench` (or `--polling`; {} rounds, medians; contenders \
             interleaved, a fresh server for each measurement, pinned to core 0, the load \
             generator to core 1; {CONNECTIONS} sessions each keeping one {SIZE}-byte \
             message in flight; {} s of warm-up, then a {} s window; {remeasured} noisy \
             measurements taken again; in the polling measurements kept, other processes used \
             at most {:.0} % of a core).\n\n{table}\n{}",
            machine(),
            plan.rounds,
            plan.polling_warmup,
            plan.seconds,
            busiest * 100.0,
            target(&results)?,
        );
        replace_generated(root, "polling ", &generated)?;
    }
    ensure!(errors == 0.0, "{errors} long-polling replies wrong or missing (see the table)");
    Ok(())
}

/// One line per measurement, for the log.
fn summary(result: &Value) -> String {
    format!(
        "{:.0} messages in {:.2} s, {:.0}/s, {:.0} per server CPU-second (server {:.2} s, load \
         generator {:.2} s), p50 {:.2} ms, p99 {:.2} ms, {:.2} requests per message, {:.0} \
         connections reopened, {:.0} errors{}; opened in {:.2} s, closed in {:.2} s",
        number(result, "messages"),
        number(result, "seconds"),
        number(result, "messages_per_second"),
        number(result, "messages_per_server_cpu_second"),
        number(result, "server_cpu_seconds"),
        number(result, "generator_cpu_seconds"),
        number(result, "rtt_p50_us") / 1000.0,
        number(result, "rtt_p99_us") / 1000.0,
        number(result, "requests_per_message"),
        number(result, "reopened"),
        number(result, "errors"),
        result
            .get("first_error")
            .and_then(Value::as_str)
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        number(result, "open_seconds"),
        number(result, "close_seconds"),
    )
}

/// A fresh `peer` on core 0, then one run of the load generator (core 1) against it.
fn measure(root: &Path, release: &Path, pin: Pinning, plan: Plan, peer: Peer) -> Result<Value> {
    let (guard, addr) = match peer {
        Peer::Ours => super::start_server(root, release, Path::new(""), Server::Ours, pin)?,
        Peer::SocketIo => {
            let mut command = pin.command(0, Path::new("node"));
            command.arg(root.join(SOCKETIO_DIR).join("echo.js")).args(["--port", "0"]);
            command.stderr(Stdio::null());
            start_announcing(command)?
        }
    };
    let args = [
        "polling".to_owned(),
        "--protocol".to_owned(),
        peer.protocol().to_owned(),
        "--connections".to_owned(),
        CONNECTIONS.to_string(),
        "--warmup".to_owned(),
        plan.polling_warmup.to_string(),
        "--seconds".to_owned(),
        plan.seconds.to_string(),
    ];
    generate_against(release, pin, &[(peer.url(addr), guard.pid())], &args)
}

/// The rows of the table: (figure key, label, format, whether the WebSocket echo has the
/// figure and ours ÷ Socket.IO means something).
const ROWS: &[(&str, &str, Format, bool)] = &[
    ("messages_per_server_cpu_second", "messages per server CPU-second", Format::Thousands, true),
    ("messages_per_second", "messages per second", Format::Thousands, true),
    ("rtt_p50_us", "p50 round trip (µs)", Format::Integer, true),
    ("rtt_p99_us", "p99 round trip (µs)", Format::Integer, true),
    ("rtt_mean_us", "mean round trip (µs)", Format::Integer, true),
    ("server_cpu_seconds", "server CPU-seconds in the window", Format::Ratio, false),
    ("generator_share", "load generator's share of its core", Format::Ratio, false),
    ("requests_per_message", "HTTP requests per message", Format::Ratio, false),
];

/// The markdown table of medians: ours and Socket.IO over polling, ours over WebSocket, and
/// ours over Socket.IO.
fn table(results: &[Vec<Value>], websocket: &[Value]) -> Result<String> {
    let mut out = String::new();
    let names: Vec<&str> = PEERS.iter().map(|p| p.name()).collect();
    writeln!(
        out,
        "| echo, {CONNECTIONS} connections | {} | ours, WebSocket | ours ÷ Socket.IO (polling) |",
        names.join(" | ")
    )?;
    writeln!(out, "|---|{}---|---|", "---|".repeat(PEERS.len()))?;
    for (key, label, format, compared) in ROWS {
        let values: Vec<f64> = results.iter().map(|rounds| median(rounds, key)).collect();
        let shown: Vec<String> = values.iter().map(|v| format.show(*v)).collect();
        let (ws, ratio) = if *compared && values[1] > 0.0 {
            (format.show(median(websocket, key)), format!("{:.2}×", values[0] / values[1]))
        } else {
            ("–".to_owned(), "–".to_owned())
        };
        writeln!(out, "| {label} | {} | {ws} | {ratio} |", shown.join(" | "))?;
    }
    let checked: Vec<String> = results
        .iter()
        .map(|rounds| {
            let sum = |key| rounds.iter().map(|r| number(r, key)).sum::<f64>();
            format!("{:.0} / {:.0}", sum("messages"), sum("errors"))
        })
        .collect();
    let ws_errors: f64 = websocket.iter().map(|r| number(r, "errors")).sum();
    let ws_messages: f64 = websocket.iter().map(|r| number(r, "messages")).sum();
    writeln!(
        out,
        "| replies checked / wrong or missing | {} | {ws_messages:.0} / {ws_errors:.0} | |",
        checked.join(" | ")
    )?;
    Ok(out)
}

/// The target, met or not, with the medians it was judged on.
fn target(results: &[Vec<Value>]) -> Result<String> {
    let ours = median(&results[0], "messages_per_server_cpu_second");
    let theirs = median(&results[1], "messages_per_server_cpu_second");
    let ratio = if theirs > 0.0 { ours / theirs } else { 0.0 };
    let verdict = if ratio >= TARGET { "met" } else { "**not met**" };
    let mut out = String::new();
    writeln!(out, "| target | ours | Socket.IO | |")?;
    writeln!(out, "|---|---|---|---|")?;
    writeln!(
        out,
        "| ≥ {TARGET}× Socket.IO's polling messages per server CPU-second | {:.1}k | {:.1}k | \
         {verdict} ({ratio:.2}×) |",
        ours / 1000.0,
        theirs / 1000.0
    )?;
    Ok(out)
}
