//! `cargo xtask bench`: our server against the references (the tutorial's Tornado server,
//! axum with its defaults, fastwebsockets), scenario by scenario, servers interleaved, each
//! server pinned to one core and the load generator (`bench`) to the other; then a table of
//! medians, written to `docs/BENCHMARKS.md`. Then fan-out (`fanout.rs`): our room against
//! Socket.IO, two instances each on one Redis. Then half-sent request heads (`heads.rs`): what
//! connections holding an unfinished head cost our server. Then long polling (`polling.rs`):
//! our `/poll/` echo against Socket.IO's polling transport, beside our WebSocket echo. Then
//! instructions (`instructions.rs`): user-space instructions per message and per handshake,
//! ours and fastwebsockets', counted by callgrind. `--smoke`
//! runs one short round and only checks that every server answers every message correctly, so
//! the benchmark cannot rot.

mod fanout;
mod heads;
mod instructions;
mod polling;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::process::{cargo, output, start_announcing, step};
use crate::{chart, target_dir};

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Ours,
    Axum,
    FastWebSockets,
    Tornado,
}

const SERVERS: [Server; 4] = [Server::Ours, Server::FastWebSockets, Server::Axum, Server::Tornado];

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Axum => "axum (defaults)",
            Server::FastWebSockets => "fastwebsockets",
            Server::Tornado => "Tornado",
        }
    }
}

/// One measured scenario: the `bench` arguments and the figure the table shows.
#[derive(Debug, Clone)]
struct Scenario {
    label: &'static str,
    args: Vec<String>,
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    rounds: usize,
    seconds: f64,
    idle_connections: usize,
    many: usize,
    /// Also hold as many connections as the file-descriptor limit allows (1 % headroom).
    at_fd_limit: bool,
    /// Measure a window again (up to [`REMEASURE`] times) when other processes were busy in it.
    remeasure: bool,
    /// Fan-out: (subscribers, the publisher's messages per second), measured in this order.
    fanout: &'static [(usize, f64)],
    /// Fan-out: how long the publisher publishes.
    fanout_seconds: f64,
    /// Connections holding a half-sent request head.
    heads: usize,
    /// Long polling: seconds of warm-up before each window (of `seconds`).
    polling_warmup: f64,
    /// Instructions: every row (pipelined and handshakes too), not only the echo's.
    instructions_full: bool,
}

/// How many times a noisy window is measured again; the quietest one counts.
const REMEASURE: usize = 2;
/// A window is noisy when the rest of the machine (every process but the server and the load
/// generator, and interrupts) used more than this share of one core during it.
const NOISY_SHARE: f64 = 0.25;

impl Plan {
    /// The full benchmark: three rounds of 5-second windows, 10,000 idle connections.
    pub const FULL: Plan = Plan {
        rounds: 3,
        seconds: 5.0,
        idle_connections: 10_000,
        many: 1000,
        at_fd_limit: true,
        remeasure: true,
        // 40,000 deliveries a second at either size: both contenders keep up on one core
        // (Socket.IO at 10,000 used about three quarters of it), and so does the load generator.
        fanout: &[(1000, 40.0), (10_000, 4.0)],
        fanout_seconds: 15.0,
        heads: 500,
        // Node's JIT and both servers' allocators settle within the first second.
        polling_warmup: 2.0,
        instructions_full: true,
    };
    /// The test command's check: one round of short windows, fewer connections.
    pub const SMOKE: Plan = Plan {
        rounds: 1,
        // Long enough for every connection of every server (Tornado's 200 included) to get
        // dozens of replies; the smoke run checks that, not speed.
        seconds: 0.25,
        idle_connections: 200,
        many: 200,
        at_fd_limit: false,
        remeasure: false,
        fanout: &[(20, 500.0)],
        fanout_seconds: 0.1,
        // Not fewer: below a few hundred, the allocator's one-off growth shows (about 29-31 kB
        // per connection at 20 to 100, pinned to one core, against 24 kB at 300 and 500), too
        // close to the smoke check's bound of twice the cap.
        heads: 300,
        polling_warmup: 0.2,
        instructions_full: false,
    };

    /// How many connections "at the fd limit" opens: the hard limit less our server's default
    /// headroom (1 %, at least 64), or a few hundred when the plan does not go there.
    fn limit_connections(self) -> usize {
        if !self.at_fd_limit {
            return 300;
        }
        let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(_, hard)| hard);
        let hard = hard.min(1_000_000);
        usize::try_from(hard - (hard / 100).max(64)).unwrap_or(300)
    }
}

fn scenarios(plan: Plan) -> Vec<Scenario> {
    let seconds = plan.seconds.to_string();
    let echo = |label, connections: usize, pipeline: usize| Scenario {
        label,
        args: [
            "echo",
            "--connections",
            &connections.to_string(),
            "--pipeline",
            &pipeline.to_string(),
            "--seconds",
            &seconds,
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    vec![
        echo("echo, 1 connection", 1, 1),
        echo(polling::WEBSOCKET_SCENARIO, 64, 1),
        echo("echo, many connections", plan.many, 1),
        echo("pipelined, 64 connections × 16", 64, 16),
        Scenario {
            label: "handshakes, 16 at a time",
            args: ["handshakes", "--concurrency", "16", "--seconds", &seconds]
                .map(str::to_owned)
                .to_vec(),
        },
        Scenario {
            label: "idle connections",
            args: vec![
                "idle".to_owned(),
                "--connections".to_owned(),
                plan.idle_connections.to_string(),
            ],
        },
        Scenario {
            label: "idle connections at the fd limit",
            args: vec![
                "idle".to_owned(),
                "--connections".to_owned(),
                plan.limit_connections().to_string(),
            ],
        },
        // The lean generator (bench/src/lean.rs) costs a fraction of what the server does per
        // message, so the server saturates and its scheduling shows in fairness and the tail;
        // the tungstenite generator above paces itself and every connection alike.
        Scenario {
            label: "echo, many connections, lean generator",
            args: vec![
                "lean".to_owned(),
                "--connections".to_owned(),
                plan.many.to_string(),
                "--warmup".to_owned(),
                (plan.seconds / 5.0).min(1.0).to_string(),
                "--seconds".to_owned(),
                seconds.clone(),
            ],
        },
    ]
}

/// Builds everything, runs the plan and prints (and, for the full plan, writes) the tables:
/// the echo scenarios, then fan-out, then half-sent request heads, then long polling (beside
/// the echo scenarios' WebSocket figure at 64 connections), then instructions.
pub fn run(root: &Path, plan: Plan, write_docs: bool) -> Result<()> {
    let (release, pin) = prepare(root)?;
    let websocket_64 = echo_scenarios(root, &release, pin, plan, write_docs)?;
    fanout::run(root, &release, pin, plan, write_docs)?;
    heads::run(root, &release, pin, plan, write_docs)?;
    polling::run(root, &release, pin, plan, write_docs, Some(websocket_64))?;
    instructions::run_all(root, &release, pin, plan, write_docs)
}

/// `cargo xtask bench --instructions`: only the instructions part of [`run`].
pub fn instructions_only(root: &Path, plan: Plan, write_docs: bool) -> Result<()> {
    let (release, pin) = prepare(root)?;
    instructions::run_all(root, &release, pin, plan, write_docs)
}

/// `cargo xtask bench --polling`: only the long-polling part of [`run`] (which then measures
/// our WebSocket echo at 64 connections itself).
pub fn polling_only(root: &Path, plan: Plan, write_docs: bool) -> Result<()> {
    let (release, pin) = prepare(root)?;
    polling::run(root, &release, pin, plan, write_docs, None)
}

/// `cargo xtask bench --heads`: only the half-sent request heads part of [`run`].
pub fn heads_only(root: &Path, plan: Plan, write_docs: bool) -> Result<()> {
    let (release, pin) = prepare(root)?;
    heads::run(root, &release, pin, plan, write_docs)
}

/// `cargo xtask bench --fanout`: only the fan-out part of [`run`].
pub fn fanout_only(root: &Path, plan: Plan, write_docs: bool) -> Result<()> {
    let (release, pin) = prepare(root)?;
    fanout::run(root, &release, pin, plan, write_docs)
}

/// Runs the echo scenarios; returns our server's results at 64 connections (one per round),
/// which the long-polling table shows beside its own.
fn echo_scenarios(
    root: &Path,
    release: &Path,
    pin: Pinning,
    plan: Plan,
    write_docs: bool,
) -> Result<Vec<Value>> {
    let python = crate::venv::ensure_tornado(root)?;

    let scenarios = scenarios(plan);
    let mut remeasured = 0;
    // results[scenario][server] = one JSON result per round.
    let mut results: Vec<Vec<Vec<Value>>> = vec![vec![Vec::new(); SERVERS.len()]; scenarios.len()];
    for round in 0..plan.rounds {
        for (s, scenario) in scenarios.iter().enumerate() {
            // Interleaved, and in a different order each round.
            for i in 0..SERVERS.len() {
                let which = (i + round) % SERVERS.len();
                let server = SERVERS[which];
                let label = format!("round {}: {} on {}", round + 1, scenario.label, server.name());
                let run = || measure(root, release, &python, server, scenario, pin);
                // A failed run (a connection reset while opening 10,000) is measured once more
                // on a fresh server; a second failure fails the benchmark.
                let mut result = step(&label, run).or_else(|error| {
                    println!("    {error:#}");
                    step(&format!("{label}, again after that failure"), run)
                })?;
                result = quieter(plan, &label, result, &mut remeasured, run, |_| {})?;
                results[s][which].push(result);
            }
        }
    }

    let table = table(&results, plan)?;
    println!("{table}");
    let errors: u64 = results.iter().flatten().flatten().map(|r| number(r, "errors") as u64).sum();
    ensure!(errors == 0, "{errors} wrong or missing replies (see the table)");
    if write_docs {
        write_benchmarks(root, &table, plan, remeasured)?;
        chart::summary(
            &root.join(SUMMARY_CHART),
            &bars(&results),
            plan.many,
            plan.idle_connections,
        )?;
        println!("    wrote {SUMMARY_CHART}");
    }
    let ours = SERVERS.iter().position(|s| *s == Server::Ours).unwrap_or(0);
    let echo_64 = scenarios.iter().position(|s| s.label == polling::WEBSOCKET_SCENARIO);
    Ok(echo_64.map(|s| results[s][ours].clone()).unwrap_or_default())
}

/// The summary chart, next to docs/BENCHMARKS.md.
const SUMMARY_CHART: &str = "docs/bench.svg";
/// The soak's chart.
const SOAK_CHART: &str = "docs/bench-soak.svg";

/// The share of one core the rest of the machine used during an echo or handshake window.
/// While other processes were busy in `result`'s window (over [`NOISY_SHARE`] of a core),
/// measures again with `once`, at most [`REMEASURE`] times, keeping the quieter result; counts
/// each extra run in `remeasured` and shows each with `show`.
fn quieter(
    plan: Plan,
    label: &str,
    mut result: Value,
    remeasured: &mut usize,
    once: impl Fn() -> Result<Value>,
    show: impl Fn(&Value),
) -> Result<Value> {
    for _ in 0..REMEASURE {
        let Some(share) = noise(&result).filter(|s| plan.remeasure && *s > NOISY_SHARE) else {
            break;
        };
        *remeasured += 1;
        let again = format!("{label}, again: others used {:.0} % of a core", share * 100.0);
        let retry = step(&again, &once)?;
        show(&retry);
        if noise(&retry) < Some(share) {
            result = retry;
        }
    }
    Ok(result)
}

fn noise(result: &Value) -> Option<f64> {
    let seconds = number(result, "seconds");
    (seconds > 0.0 && result.get("others_cpu_seconds").is_some())
        .then(|| number(result, "others_cpu_seconds") / seconds)
}

/// The summary chart's figures, medians as in the table.
fn bars(results: &[Vec<Vec<Value>>]) -> Vec<chart::ServerBars> {
    SERVERS
        .iter()
        .enumerate()
        .map(|(s, server)| chart::ServerBars {
            name: server.name(),
            echo_64: median(&results[1][s], "messages_per_server_cpu_second"),
            echo_many: median(&results[2][s], "messages_per_server_cpu_second"),
            rss_per_connection: median(&results[5][s], "rss_per_connection_bytes"),
        })
        .collect()
}

/// Builds the server and the load generator, raises the fd limit, detects pinning.
fn prepare(root: &Path) -> Result<(PathBuf, Pinning)> {
    // Two invocations: built together, cargo would unify their features (axum's `ws`, which
    // only the reference uses) into the server, which `cargo xtask run` then rebuilds.
    step("building the server and the benchmark (release)", || {
        cargo(root, &["build", "--release", "--locked", "--package", "server"])?;
        cargo(root, &["build", "--release", "--locked", "--package", "bench"])
    })?;
    // The references do not raise their file-descriptor limit as ours does: raise this
    // process's soft limit to the hard one, which every server started here inherits.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        println!("    cannot raise the file-descriptor limit: {error}");
    }
    let pin = Pinning::detect();
    if !pin.enabled {
        println!("    taskset or a second core is missing: processes are not pinned");
    }
    Ok((target_dir(root).join("release"), pin))
}

/// `cargo xtask bench --soak SECONDS`: our server alone, 10,000 connections held with the
/// keepalive on while at least 200,000 short connections churn beside them for at least
/// `seconds`; server RSS sampled every second. Writes the soak's part of docs/BENCHMARKS.md
/// and its chart, and fails when RSS does not come back to within 10 % of its level before
/// the churn, or any connection went wrong.
pub fn soak(root: &Path, seconds: u64) -> Result<()> {
    let (release, pin) = prepare(root)?;
    let seconds = seconds.to_string();
    let args =
        ["soak", "--held", "10000", "--churn", "200000", "--seconds", &seconds, "--sources", "8"];
    let result = step("soak: our server", || {
        let (guard, addr) = start_server(root, &release, Path::new(""), Server::Ours, pin)?;
        generate(&release, pin, addr, guard.pid(), &args)
    })?;
    let samples: Vec<(f64, f64)> = result
        .get("samples")
        .and_then(Value::as_array)
        .map(|samples| {
            samples.iter().map(|s| (number(s, "t"), number(s, "rss_bytes") / 1e6)).collect()
        })
        .unwrap_or_default();
    let churn = (number(&result, "churn_from"), number(&result, "churn_to"));
    let held = number(&result, "held") as usize;
    let mb = |key| number(&result, key) / 1e6;
    let back = result.get("back_within_10_percent").and_then(Value::as_bool) == Some(true);
    let errors = number(&result, "errors");
    let summary = format!(
        "{}. Command: `cargo xtask bench --soak {seconds}` (our server on core 0, the load \
         generator on core 1).\n\n\
         | | |\n|---|---|\n\
         | connections held open (keepalive on) | {held} |\n\
         | churned beside them (connect, message, close; from 127.0.0.2–.9) | {:.0} in {:.0} s ({:.0}/s) |\n\
         | server RSS before the churn | {:.1} MB |\n\
         | server RSS at its peak | {:.1} MB |\n\
         | server RSS after the churn, settled | {:.1} MB ({:+.1} %) |\n\
         | back within 10 % | {} |\n\
         | held connections answering at the end | {:.0} of {held} |\n\
         | wrong or missing replies, failed connections | {errors:.0} |\n\n\
         ![server RSS over the soak](bench-soak.svg)\n",
        machine(),
        number(&result, "churned"),
        number(&result, "churn_seconds"),
        number(&result, "churn_per_second"),
        mb("rss_before_churn_bytes"),
        mb("rss_peak_bytes"),
        mb("rss_after_churn_bytes"),
        number(&result, "growth") * 100.0,
        if back { "yes" } else { "**no**" },
        number(&result, "held_answering"),
    );
    println!("{summary}");
    replace_generated(root, "soak ", &summary)?;
    chart::soak(&root.join(SOAK_CHART), &samples, churn, held)?;
    println!("    wrote {SOAK_CHART}");
    ensure!(errors == 0.0, "{errors} connections went wrong during the soak");
    ensure!(back, "server RSS did not come back to within 10 % of its level before the churn");
    Ok(())
}

/// Whether processes can be pinned: `taskset` present and at least two cores.
#[derive(Debug, Clone, Copy)]
struct Pinning {
    enabled: bool,
}

impl Pinning {
    fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { enabled: cores >= 2 && output("taskset", &["--version"]).is_some() }
    }

    /// `program` on `core` (through `taskset`, which execs it: the pid stays the program's).
    fn command(self, core: usize, program: &Path) -> Command {
        if self.enabled {
            let mut command = Command::new("taskset");
            command.args(["-c", &core.to_string()]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

/// Starts `server` on core 0, runs one scenario with `bench` on core 1, returns its JSON.
fn measure(
    root: &Path,
    release: &Path,
    python: &Path,
    server: Server,
    scenario: &Scenario,
    pin: Pinning,
) -> Result<Value> {
    let (guard, addr) = start_server(root, release, python, server, pin)?;
    generate(release, pin, addr, guard.pid(), &scenario.args)
}

/// Starts `server` on core 0 and waits for its address.
fn start_server(
    root: &Path,
    release: &Path,
    python: &Path,
    server: Server,
    pin: Pinning,
) -> Result<(crate::process::Guard, SocketAddr)> {
    let mut command = match server {
        Server::Ours => {
            let mut command = pin.command(0, &release.join("server"));
            command.arg("--assets").arg(root.join("dist"));
            command
        }
        Server::Axum => pin.command(0, &release.join("ref-axum")),
        Server::FastWebSockets => pin.command(0, &release.join("ref-fastwebsockets")),
        Server::Tornado => {
            let mut command = pin.command(0, python);
            command.arg(root.join("bench/tornado/server.py")).arg("--quiet");
            command
        }
    };
    command.args(["--port", "0"]).stderr(Stdio::null());
    start_announcing(command)
}

/// Runs the load generator on core 1 against the server at `addr` (process `pid`) and
/// returns the JSON line it prints.
fn generate(
    release: &Path,
    pin: Pinning,
    addr: SocketAddr,
    pid: u32,
    args: &[impl AsRef<std::ffi::OsStr>],
) -> Result<Value> {
    generate_against(release, pin, &[(format!("ws://{addr}{}", wire::WS_PATH), pid)], args)
}

/// [`generate`] against several servers: `(URL, process id)` each.
fn generate_against(
    release: &Path,
    pin: Pinning,
    servers: &[(String, u32)],
    args: &[impl AsRef<std::ffi::OsStr>],
) -> Result<Value> {
    let mut command = pin.command(1, &release.join("bench"));
    for (url, pid) in servers {
        command.args(["--url", url, "--server-pid", &pid.to_string()]);
    }
    let out =
        command.args(args).stderr(Stdio::inherit()).output().context("run the load generator")?;
    if !out.status.success() {
        bail!("the load generator failed ({})", out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("the load generator said: {line}"))
}

fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The median of `key` over rounds.
fn median(rounds: &[Value], key: &str) -> f64 {
    let mut values: Vec<f64> = rounds.iter().map(|r| number(r, key)).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The rows of the table: (scenario index, figure key, label, format).
const ROWS: &[(usize, &str, &str, Format)] = &[
    (
        0,
        "messages_per_server_cpu_second",
        "echo, 1 connection: messages per server CPU-second",
        Format::Thousands,
    ),
    (0, "rtt_mean_us", "echo, 1 connection: mean round trip (µs)", Format::Integer),
    (
        1,
        "messages_per_server_cpu_second",
        "echo, 64 connections: messages per server CPU-second",
        Format::Thousands,
    ),
    (
        1,
        "server_user_us_per_message",
        "echo, 64 connections: server user CPU per message (µs)",
        Format::Hundredths,
    ),
    (1, "messages_per_second", "echo, 64 connections: messages per second", Format::Thousands),
    (1, "rtt_mean_us", "echo, 64 connections: mean round trip (µs)", Format::Integer),
    (1, "rtt_p50_us", "echo, 64 connections: p50 round trip (µs)", Format::Integer),
    (1, "rtt_p99_us", "echo, 64 connections: p99 round trip (µs)", Format::Integer),
    (
        2,
        "messages_per_server_cpu_second",
        "echo, MANY connections: messages per server CPU-second",
        Format::Thousands,
    ),
    (2, "fairness", "echo, MANY connections: fairness (fewest replies ÷ mean)", Format::Ratio),
    (2, "messages_per_second", "echo, MANY connections: messages per second", Format::Thousands),
    (2, "rtt_mean_us", "echo, MANY connections: mean round trip (µs)", Format::Integer),
    (2, "rtt_p50_us", "echo, MANY connections: p50 round trip (µs)", Format::Integer),
    (2, "rtt_p99_us", "echo, MANY connections: p99 round trip (µs)", Format::Integer),
    (2, "rtt_max_us", "echo, MANY connections: max round trip (µs)", Format::Integer),
    (
        3,
        "messages_per_server_cpu_second",
        "pipelined, 64 × 16: messages per server CPU-second",
        Format::Thousands,
    ),
    (4, "handshakes_per_server_cpu_second", "handshakes per server CPU-second", Format::Thousands),
    (
        4,
        "server_user_us_per_handshake",
        "handshakes: server user CPU per handshake (µs)",
        Format::Integer,
    ),
    (
        5,
        "rss_per_connection_bytes",
        "server RSS per idle connection, IDLE open (bytes)",
        Format::Integer,
    ),
    (6, "answered", "connections held at the fd limit, answering (of LIMIT)", Format::Integer),
    (
        7,
        "messages_per_server_cpu_second",
        "lean generator, MANY connections: messages per server CPU-second",
        Format::Thousands,
    ),
    (
        7,
        "server_user_us_per_message",
        "lean generator, MANY connections: server user CPU per message (µs)",
        Format::Hundredths,
    ),
    (7, "fairness", "lean generator, MANY connections: fairness", Format::Ratio),
    (7, "rtt_p50_us", "lean generator, MANY connections: p50 round trip (µs)", Format::Integer),
    (7, "rtt_p99_us", "lean generator, MANY connections: p99 round trip (µs)", Format::Integer),
];

#[derive(Debug, Clone, Copy)]
enum Format {
    Thousands,
    Integer,
    Ratio,
    /// Two decimals (small microsecond figures).
    Hundredths,
    /// Microseconds shown as milliseconds.
    Millis,
}

impl Format {
    fn show(self, value: f64) -> String {
        match self {
            Format::Millis => format!("{:.1}", value / 1000.0),
            Format::Thousands => format!("{:.1}k", value / 1000.0),
            Format::Integer => format!("{value:.0}"),
            Format::Ratio | Format::Hundredths => format!("{value:.2}"),
        }
    }
}

/// The markdown table of medians, with ours as a ratio of fastwebsockets and Tornado.
fn table(results: &[Vec<Vec<Value>>], plan: Plan) -> Result<String> {
    let mut out = String::new();
    let names: Vec<&str> = SERVERS.iter().map(|s| s.name()).collect();
    writeln!(out, "| | {} | ours ÷ fastwebsockets | ours ÷ Tornado |", names.join(" | "))?;
    writeln!(out, "|---|{}---|---|", "---|".repeat(SERVERS.len()))?;
    for (scenario, key, label, format) in ROWS {
        let label = label
            .replace("MANY", &plan.many.to_string())
            .replace("IDLE", &plan.idle_connections.to_string())
            .replace("LIMIT", &plan.limit_connections().to_string());
        let values: Vec<f64> =
            (0..SERVERS.len()).map(|s| median(&results[*scenario][s], key)).collect();
        let shown: Vec<String> = values.iter().map(|v| format.show(*v)).collect();
        let ratio = |reference: f64| {
            if reference > 0.0 {
                format!("{:.2}×", values[0] / reference)
            } else {
                "–".to_owned()
            }
        };
        writeln!(
            out,
            "| {label} | {} | {} | {} |",
            shown.join(" | "),
            ratio(values[1]),
            ratio(values[3])
        )?;
    }
    let errors: Vec<String> = (0..SERVERS.len())
        .map(|s| {
            results
                .iter()
                .map(|r| r[s].iter().map(|v| number(v, "errors")).sum::<f64>())
                .sum::<f64>()
        })
        .map(|e| format!("{e:.0}"))
        .collect();
    writeln!(out, "| wrong or missing replies | {} | | |", errors.join(" | "))?;
    Ok(out)
}

/// Replaces the generated part of `docs/BENCHMARKS.md` (between the markers) with this run's
/// table, machine and command.
fn write_benchmarks(root: &Path, table: &str, plan: Plan, remeasured: usize) -> Result<()> {
    let generated = format!(
        "{}. Command: `cargo xtask bench` ({} rounds of {} s windows, medians; servers \
         interleaved; each server pinned to core 0 and the load generator to core 1 with \
         `taskset`; 32-byte messages; {remeasured} noisy windows measured again).\n\n{table}\n\
         ![messages per server CPU-second and RSS per idle connection](bench.svg)\n",
        machine(),
        plan.rounds,
        plan.seconds
    );
    replace_generated(root, "", &generated)
}

/// Replaces the part of `docs/BENCHMARKS.md` between the markers named `which` (`""` for the
/// main table, `"soak "` for the soak, `"fanout "`, `"heads "`, `"polling "`) with `generated`.
fn replace_generated(root: &Path, which: &str, generated: &str) -> Result<()> {
    let begin = format!("<!-- generated by `cargo xtask bench`: {which}begin -->");
    let end = format!("<!-- generated by `cargo xtask bench`: {which}end -->");
    let path: PathBuf = root.join("docs/BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let (before, rest) =
        doc.split_once(&begin).with_context(|| format!("docs/BENCHMARKS.md has no {begin}"))?;
    let (_, after) =
        rest.split_once(&end).with_context(|| format!("docs/BENCHMARKS.md has no {end}"))?;
    std::fs::write(&path, format!("{before}{begin}\n\n{generated}\n{end}{after}"))?;
    println!("    wrote {}", path.display());
    Ok(())
}

/// "Machine: cores, CPU; kernel; rustc".
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = output("uname", &["-sr"]).unwrap_or_default();
    let rustc = output("rustc", &["--version"]).unwrap_or_default();
    format!("Machine: {cores} cores, {cpu}; {kernel}; {rustc}")
}
