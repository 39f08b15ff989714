//! Fan-out, the second part of `cargo xtask bench`: one publisher at a fixed rate, subscribers
//! split over two instances that share one Redis, for our room (`server --redis-url`) and for
//! Socket.IO 4.8 with `@socket.io/redis-streams-adapter` (`bench/socketio/server.js`, from
//! npm). Both instances and Redis run on core 0, the load generator (`bench fanout`) on core 1;
//! a fresh Redis and fresh instances for every measurement. Every delivery is checked (order,
//! no gap): one wrong or missing fails the run, the smoke plan's too.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;

use super::{
    generate_against, machine, median, noise, number, quieter, replace_generated, Format, Pinning,
    Plan,
};
use crate::process::{
    apt_install, free_port, installing, output, run as run_command, start_announcing, step,
    wait_for_port, Guard,
};
use crate::setup;

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Ours,
    SocketIo,
}

const PEERS: [Peer; 2] = [Peer::Ours, Peer::SocketIo];
/// Server instances per measurement, all on one Redis.
const INSTANCES: usize = 2;
/// Where the Socket.IO reference lives (its `package.json` pins what `npm ci` installs).
pub(super) const SOCKETIO_DIR: &str = "bench/socketio";

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::SocketIo => "Socket.IO 4.8",
        }
    }

    /// The load generator's `--protocol`.
    fn protocol(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::SocketIo => "socketio",
        }
    }

    fn url(self, addr: SocketAddr) -> String {
        match self {
            Peer::Ours => format!("ws://{addr}{}", wire::room::PATH),
            Peer::SocketIo => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
        }
    }
}

/// The targets of the issue, checked against the medians.
const CPU_TARGET: f64 = 3.0;
/// Bytes of server RSS per subscriber (6 KB, read as 6,000 bytes: the stricter reading).
const RSS_TARGET: f64 = 6000.0;

/// Runs the plan's fan-out rounds, prints the table and, with `write_docs`, writes it to
/// `docs/BENCHMARKS.md`; fails when any delivery was wrong or missing.
pub(super) fn run(
    root: &Path,
    release: &Path,
    pin: Pinning,
    plan: Plan,
    write_docs: bool,
) -> Result<()> {
    setup::redis_server()?;
    let redis = setup::find_redis_server().context("redis-server not found after installing it")?;
    ensure_socketio(root)?;
    let messages = |rate: f64| (rate * plan.fanout_seconds).round().max(1.0) as u64;
    let sizes = plan.fanout;
    let mut remeasured = 0;
    // results[size][peer] = one JSON result per round.
    let mut results: Vec<Vec<Vec<Value>>> = vec![vec![Vec::new(); PEERS.len()]; sizes.len()];
    for round in 0..plan.rounds {
        for (s, &(subscribers, rate)) in sizes.iter().enumerate() {
            for i in 0..PEERS.len() {
                let which = (i + round) % PEERS.len();
                let peer = PEERS[which];
                let label = format!(
                    "round {}: fan-out to {subscribers} subscribers on {}",
                    round + 1,
                    peer.name()
                );
                let once =
                    || measure(root, release, &redis, pin, peer, subscribers, messages(rate), rate);
                let show = |result: &Value| println!("    {}", summary(result));
                let first = step(&label, once)?;
                show(&first);
                let result = quieter(plan, &label, first, &mut remeasured, once, show)?;
                results[s][which].push(result);
            }
        }
    }
    let table = table(&results, sizes)?;
    let busiest = results.iter().flatten().flatten().filter_map(noise).fold(0.0, f64::max);
    println!("{table}");
    let errors: f64 = results.iter().flatten().flatten().map(|r| number(r, "errors")).sum();
    if write_docs {
        let generated = format!(
            "{}. Command: `cargo xtask bench` ({} rounds, medians; contenders interleaved; a \
             fresh Redis and two fresh instances for each measurement; both instances and \
             Redis pinned to core 0, the load generator to core 1 with `taskset`; one \
             publisher for {} s, {}; 32-byte texts; {remeasured} noisy measurements taken \
             again; in the measurements kept, other processes used at most {:.0} % of a \
             core).\n\n{table}\n{}",
            machine(),
            plan.rounds,
            plan.fanout_seconds,
            sizes
                .iter()
                .map(|(n, rate)| format!("{rate} messages per second to {n} subscribers"))
                .collect::<Vec<_>>()
                .join(", "),
            busiest * 100.0,
            targets(&results, sizes)?
        );
        replace_generated(root, "fanout ", &generated)?;
    }
    ensure!(errors == 0.0, "{errors} fan-out deliveries wrong or missing (see the table)");
    Ok(())
}

/// One line per measurement, for the log.
fn summary(result: &Value) -> String {
    format!(
        "{:.0} of {:.0} delivered in {:.2} s, {:.0}/s, {:.0} per server CPU-second (servers \
         {:.2} s, Redis {:.2} s), p50 {:.1} ms, p99 {:.1} ms, RSS per subscriber {:.0} B held \
         / {:.0} B after, {:.0} errors; joined in {:.1} s, settled in {:.1} s",
        number(result, "delivered"),
        number(result, "expected"),
        number(result, "seconds"),
        number(result, "delivered_per_second"),
        number(result, "delivered_per_server_cpu_second"),
        number(result, "server_cpu_seconds"),
        number(result, "redis_cpu_seconds"),
        number(result, "latency_p50_us") / 1000.0,
        number(result, "latency_p99_us") / 1000.0,
        number(result, "rss_per_subscriber_held_bytes"),
        number(result, "rss_per_subscriber_after_bytes"),
        number(result, "errors"),
        number(result, "connect_seconds"),
        number(result, "settle_seconds"),
    )
}

/// A fresh Redis and two fresh instances of `peer`, then one `bench fanout` run.
#[allow(clippy::too_many_arguments)]
fn measure(
    root: &Path,
    release: &Path,
    redis: &Path,
    pin: Pinning,
    peer: Peer,
    subscribers: usize,
    messages: u64,
    rate: f64,
) -> Result<Value> {
    let port = free_port()?;
    let mut command = pin.command(0, redis);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly"])
        .arg("no")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let redis_guard = Guard::spawn(&mut command)?;
    wait_for_port(port, Duration::from_secs(10)).context("redis-server did not start")?;
    let redis_url = format!("redis://127.0.0.1:{port}");
    // Started side by side: Node takes about a second to load Socket.IO.
    let instances = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..INSTANCES)
            .map(|_| {
                scope.spawn(|| start_instance(root, release, pin, peer, &redis_url, subscribers))
            })
            .collect();
        starting
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err(anyhow!("starting panicked"))))
            .collect::<Result<Vec<_>>>()
    })?;
    let servers: Vec<(String, u32)> =
        instances.iter().map(|(guard, addr)| (peer.url(*addr), guard.pid())).collect();
    let args = [
        "fanout".to_owned(),
        "--protocol".to_owned(),
        peer.protocol().to_owned(),
        "--redis-pid".to_owned(),
        redis_guard.pid().to_string(),
        "--subscribers".to_owned(),
        subscribers.to_string(),
        "--messages".to_owned(),
        messages.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
    ];
    let result = generate_against(release, pin, &servers, &args);
    drop(instances);
    drop(redis_guard);
    result
}

/// One instance of `peer` on core 0, on the Redis at `redis_url`.
fn start_instance(
    root: &Path,
    release: &Path,
    pin: Pinning,
    peer: Peer,
    redis_url: &str,
    subscribers: usize,
) -> Result<(Guard, SocketAddr)> {
    let mut command = match peer {
        Peer::Ours => {
            let mut command = pin.command(0, &release.join("server"));
            // The publisher is one connection sending far above the default per-connection
            // rate; every subscriber of the run fits under the connection limit.
            command
                .arg("--assets")
                .arg(root.join("dist"))
                .args(["--redis-url", redis_url, "--room-rate", "1000000"])
                .args(["--max-connections", &(subscribers + 64).to_string()]);
            command
        }
        Peer::SocketIo => {
            let mut command = pin.command(0, Path::new("node"));
            command.arg(root.join(SOCKETIO_DIR).join("server.js")).args(["--redis-url", redis_url]);
            command
        }
    };
    command.args(["--port", "0"]).stderr(Stdio::null());
    start_announcing(command)
}

/// `npm ci` in `bench/socketio` unless every dependency its `package.json` pins is installed
/// at that version (npm itself from apt if absent).
pub(super) fn ensure_socketio(root: &Path) -> Result<()> {
    let dir = root.join(SOCKETIO_DIR);
    let wanted = pinned_dependencies(&dir)?;
    let stale = wanted
        .iter()
        .find(|(name, version)| installed_version(&dir, name).as_deref() != Some(version.as_str()));
    let Some((name, version)) = stale else {
        let list: Vec<String> = wanted.iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!("    {} (in {SOCKETIO_DIR}): present", list.join(", "));
        return Ok(());
    };
    println!("    {name} {version} (in {SOCKETIO_DIR}): missing");
    if output("npm", &["--version"]).is_none() {
        apt_install(&["nodejs", "npm"], "Node.js and npm (the Socket.IO reference)")?;
    }
    installing(&format!("Socket.IO and its Redis adapter (npm ci in {SOCKETIO_DIR})"), "seconds");
    run_command(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(&dir))
        .context("cannot install the Socket.IO reference from npm")
}

/// `dependencies` of `DIR/package.json`: (name, exact version).
fn pinned_dependencies(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join("package.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let manifest: Value = serde_json::from_str(&text)?;
    let deps = manifest
        .get("dependencies")
        .and_then(Value::as_object)
        .with_context(|| format!("{} has no dependencies", path.display()))?;
    Ok(deps.iter().map(|(name, v)| (name.clone(), v.as_str().unwrap_or("").to_owned())).collect())
}

/// The version of `name` installed in `DIR/node_modules`, if any.
fn installed_version(dir: &Path, name: &str) -> Option<String> {
    let path: PathBuf = dir.join("node_modules").join(name).join("package.json");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    manifest.get("version")?.as_str().map(str::to_owned)
}

/// The rows of the table, per subscriber count: (figure key, label, format).
const ROWS: &[(&str, &str, Format)] = &[
    ("delivered_per_second", "messages delivered per second", Format::Thousands),
    (
        "delivered_per_server_cpu_second",
        "delivered per server CPU-second (both instances)",
        Format::Thousands,
    ),
    ("server_cpu_seconds", "server CPU-seconds (both instances)", Format::Ratio),
    ("server_system_cpu_seconds", "of which in the kernel", Format::Ratio),
    ("redis_cpu_seconds", "Redis CPU-seconds (apart)", Format::Ratio),
    ("latency_p50_us", "latency p50, publish → receipt (ms)", Format::Millis),
    ("latency_p99_us", "latency p99 (ms)", Format::Millis),
    ("latency_max_us", "latency max (ms)", Format::Millis),
    ("rss_per_subscriber_held_bytes", "server RSS per subscriber, joined (bytes)", Format::Integer),
    (
        "rss_per_subscriber_after_bytes",
        "server RSS per subscriber, after the run (bytes)",
        Format::Integer,
    ),
];

/// The markdown table of medians, ours as a ratio of Socket.IO.
fn table(results: &[Vec<Vec<Value>>], sizes: &[(usize, f64)]) -> Result<String> {
    let mut out = String::new();
    let names: Vec<&str> = PEERS.iter().map(|p| p.name()).collect();
    writeln!(out, "| | {} | ours ÷ Socket.IO |", names.join(" | "))?;
    writeln!(out, "|---|{}---|", "---|".repeat(PEERS.len()))?;
    for (s, (subscribers, _)) in sizes.iter().enumerate() {
        for (key, label, format) in ROWS {
            let values: Vec<f64> = (0..PEERS.len()).map(|p| median(&results[s][p], key)).collect();
            let shown: Vec<String> = values.iter().map(|v| format.show(*v)).collect();
            let ratio = if values[1] > 0.0 {
                format!("{:.2}×", values[0] / values[1])
            } else {
                "–".to_owned()
            };
            writeln!(
                out,
                "| {subscribers} subscribers: {label} | {} | {ratio} |",
                shown.join(" | ")
            )?;
        }
        let checked: Vec<String> = (0..PEERS.len())
            .map(|p| {
                let sum = |key| results[s][p].iter().map(|r| number(r, key)).sum::<f64>();
                format!("{:.0} / {:.0}", sum("expected"), sum("errors"))
            })
            .collect();
        writeln!(
            out,
            "| {subscribers} subscribers: deliveries checked / wrong or missing | {} | |",
            checked.join(" | ")
        )?;
    }
    Ok(out)
}

/// The targets, each met or not, with the medians it was judged on.
fn targets(results: &[Vec<Vec<Value>>], sizes: &[(usize, f64)]) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "| target | subscribers | ours | Socket.IO | |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    for (s, (subscribers, _)) in sizes.iter().enumerate() {
        let m = |p: usize, key: &str| median(&results[s][p], key);
        let (ours, theirs) =
            (m(0, "delivered_per_server_cpu_second"), m(1, "delivered_per_server_cpu_second"));
        let ratio = if theirs > 0.0 { ours / theirs } else { 0.0 };
        writeln!(
            out,
            "| ≥ {CPU_TARGET}× Socket.IO's deliveries per server CPU-second | {subscribers} | \
             {:.1}k | {:.1}k | {} ({ratio:.2}×) |",
            ours / 1000.0,
            theirs / 1000.0,
            verdict(ratio >= CPU_TARGET)
        )?;
        let (ours, theirs) = (m(0, "latency_p99_us"), m(1, "latency_p99_us"));
        writeln!(
            out,
            "| p99 latency no worse than Socket.IO's | {subscribers} | {:.1} ms | {:.1} ms | {} |",
            ours / 1000.0,
            theirs / 1000.0,
            verdict(ours <= theirs)
        )?;
        let ours =
            m(0, "rss_per_subscriber_held_bytes").max(m(0, "rss_per_subscriber_after_bytes"));
        let theirs =
            m(1, "rss_per_subscriber_held_bytes").max(m(1, "rss_per_subscriber_after_bytes"));
        writeln!(
            out,
            "| ≤ 6 KB (6,000 B) server RSS per subscriber (the larger of joined and after) | \
             {subscribers} | {ours:.0} B | {theirs:.0} B | {} |",
            verdict(ours <= RSS_TARGET)
        )?;
    }
    Ok(out)
}
