//! `cargo xtask bench`: our server against the references (the tutorial's Tornado server,
//! axum with its defaults, fastwebsockets), scenario by scenario, servers interleaved, each
//! server pinned to one core and the load generator (`bench`) to the other; then a table of
//! medians, written to `docs/BENCHMARKS.md`. `--smoke` runs one short round and only checks
//! that every server answers every message correctly, so the benchmark cannot rot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::process::{cargo, output, start_announcing, step};
use crate::target_dir;

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
}

impl Plan {
    /// The full benchmark: three rounds of 5-second windows, 10,000 idle connections.
    pub const FULL: Plan =
        Plan { rounds: 3, seconds: 5.0, idle_connections: 10_000, many: 1000, at_fd_limit: true };
    /// The test command's check: one round of short windows, fewer connections.
    pub const SMOKE: Plan =
        Plan { rounds: 1, seconds: 0.5, idle_connections: 200, many: 200, at_fd_limit: false };

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
        echo("echo, 64 connections", 64, 1),
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
    ]
}

/// Builds everything, runs the plan and prints (and, for the full plan, writes) the table.
pub fn run(root: &Path, plan: Plan, write_docs: bool) -> Result<()> {
    // Two invocations: built together, cargo would unify their features (axum's `ws`, which
    // only the reference uses) into the server, which `cargo xtask run` then rebuilds.
    step("building the server and the benchmark (release)", || {
        cargo(root, &["build", "--release", "--locked", "--package", "server"])?;
        cargo(root, &["build", "--release", "--locked", "--package", "bench"])
    })?;
    let python = crate::venv::ensure_tornado(root)?;
    // The references do not raise their file-descriptor limit as ours does: raise this
    // process's soft limit to the hard one, which every server started here inherits.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        println!("    cannot raise the file-descriptor limit: {error}");
    }
    let release = target_dir(root).join("release");
    let pin = Pinning::detect();
    if !pin.enabled {
        println!("    taskset or a second core is missing: processes are not pinned");
    }

    let scenarios = scenarios(plan);
    // results[scenario][server] = one JSON result per round.
    let mut results: Vec<Vec<Vec<Value>>> = vec![vec![Vec::new(); SERVERS.len()]; scenarios.len()];
    for round in 0..plan.rounds {
        for (s, scenario) in scenarios.iter().enumerate() {
            // Interleaved, and in a different order each round.
            for i in 0..SERVERS.len() {
                let which = (i + round) % SERVERS.len();
                let server = SERVERS[which];
                let label = format!("round {}: {} on {}", round + 1, scenario.label, server.name());
                let result =
                    step(&label, || measure(root, &release, &python, server, scenario, pin))?;
                results[s][which].push(result);
            }
        }
    }

    let table = table(&results, plan)?;
    println!("{table}");
    let errors: u64 = results.iter().flatten().flatten().map(|r| number(r, "errors") as u64).sum();
    ensure!(errors == 0, "{errors} wrong or missing replies (see the table)");
    if write_docs {
        write_benchmarks(root, &table, plan)?;
    }
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
    let (guard, addr) = start_announcing(command)?;
    let out = pin
        .command(1, &release.join("bench"))
        .args(["--url", &format!("ws://{addr}{}", wire::WS_PATH)])
        .args(["--server-pid", &guard.pid().to_string()])
        .args(&scenario.args)
        .stderr(Stdio::inherit())
        .output()
        .context("run the load generator")?;
    drop(guard);
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
    (1, "rtt_mean_us", "echo, 64 connections: mean round trip (µs)", Format::Integer),
    (1, "rtt_p99_us", "echo, 64 connections: p99 round trip (µs)", Format::Integer),
    (
        2,
        "messages_per_server_cpu_second",
        "echo, MANY connections: messages per server CPU-second",
        Format::Thousands,
    ),
    (2, "fairness", "echo, MANY connections: fairness (fewest replies ÷ mean)", Format::Ratio),
    (2, "rtt_mean_us", "echo, MANY connections: mean round trip (µs)", Format::Integer),
    (
        3,
        "messages_per_server_cpu_second",
        "pipelined, 64 × 16: messages per server CPU-second",
        Format::Thousands,
    ),
    (4, "handshakes_per_server_cpu_second", "handshakes per server CPU-second", Format::Thousands),
    (
        5,
        "rss_per_connection_bytes",
        "server RSS per idle connection, IDLE open (bytes)",
        Format::Integer,
    ),
    (6, "answered", "connections held at the fd limit, answering (of LIMIT)", Format::Integer),
];

#[derive(Debug, Clone, Copy)]
enum Format {
    Thousands,
    Integer,
    Ratio,
}

impl Format {
    fn show(self, value: f64) -> String {
        match self {
            Format::Thousands => format!("{:.1}k", value / 1000.0),
            Format::Integer => format!("{value:.0}"),
            Format::Ratio => format!("{value:.2}"),
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
fn write_benchmarks(root: &Path, table: &str, plan: Plan) -> Result<()> {
    const BEGIN: &str = "<!-- generated by `cargo xtask bench`: begin -->";
    const END: &str = "<!-- generated by `cargo xtask bench`: end -->";
    let path: PathBuf = root.join("docs/BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let (before, rest) = doc.split_once(BEGIN).context("docs/BENCHMARKS.md has no begin marker")?;
    let (_, after) = rest.split_once(END).context("docs/BENCHMARKS.md has no end marker")?;
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
    let generated = format!(
        "{BEGIN}\n\nMachine: {cores} cores, {cpu}; {kernel}; {rustc}. Command: `cargo xtask bench` \
         ({} rounds of {} s windows, medians; servers interleaved; each server pinned to core 0 \
         and the load generator to core 1 with `taskset`; 32-byte messages).\n\n{table}\n{END}",
        plan.rounds, plan.seconds
    );
    std::fs::write(&path, format!("{before}{generated}{after}"))?;
    println!("    wrote {}", path.display());
    Ok(())
}
