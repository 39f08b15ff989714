//! `bench`: the load generator `cargo xtask bench` drives against each server (ours and the
//! references), one scenario per run, printing its result as one JSON line.
//!
//! Every reply is checked against the contract (`Welcome!` first, then each message
//! upper-cased, in order); a wrong or missing reply is counted, never ignored. The server's
//! CPU time is read from `/proc/PID/stat` at the edges of the measured window, so connection
//! setup is not counted, and so is everyone else's CPU (from `/proc/stat`), to spot a noisy
//! window.

mod cpu;
mod fanout;
mod heads;
mod lean;
mod polling;
mod soak;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any single connect or reply may take before it counts as missing.
const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Load generator for `cargo xtask bench`.")]
struct Flags {
    /// The server's WebSocket URL (fan-out: one per instance, repeated).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// The server's process id, to read its CPU time and memory (fan-out: one per instance,
    /// in the order of the URLs).
    #[arg(long, required = true)]
    server_pid: Vec<u32>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Closed-loop echo: each connection keeps `pipeline` messages in flight for `seconds`.
    Echo {
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Closed-loop echo from the lean generator ([`lean`]): raw frames, one message in flight
    /// per connection, `warmup` seconds, then `seconds` counted.
    Lean {
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Connect, upgrade, read the greeting, close; `concurrency` at a time, for `seconds`.
    Handshakes {
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        seconds: f64,
    },
    /// Opens `connections`, reports the server's memory, then checks each still answers.
    Idle {
        #[arg(long)]
        connections: usize,
    },
    /// Holds `held` connections open while a churn of short connections runs beside them for
    /// at least `seconds` and `churn` connections; samples the server's RSS every second.
    Soak {
        #[arg(long, default_value_t = 10_000)]
        held: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 200_000)]
        churn: u64,
        /// Source addresses for the churn, 127.0.0.2 onwards.
        #[arg(long, default_value_t = 8)]
        sources: u8,
    },
    /// Holds `connections` plain connections, each having sent `bytes` of a request head it
    /// never finishes; reports the server's RSS added per connection, and checks that one more
    /// sending a head of `over` bytes is answered (431 expected; the caller checks).
    Heads {
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value_t = 16_000)]
        bytes: usize,
        #[arg(long, default_value_t = 20_000)]
        over: usize,
    },
    /// One publisher sends `messages` at `rate` per second to `subscribers` split over the
    /// instances (`--url` each); every delivery checked, latency and CPU measured.
    Fanout {
        #[arg(long, value_enum)]
        protocol: fanout::Protocol,
        /// The Redis the instances share, whose CPU time is reported apart.
        #[arg(long)]
        redis_pid: u32,
        #[arg(long)]
        subscribers: usize,
        #[arg(long)]
        messages: u64,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Long-polling echo: each of `connections` sessions keeps one message in flight over HTTP
    /// (a POST carries it, the waiting GET brings the reply); `warmup` seconds, then a window
    /// of `seconds`.
    Polling {
        #[arg(long, value_enum)]
        protocol: polling::Protocol,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        warmup: f64,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
}

/// What one echo run measured.
#[derive(Debug, Default, Serialize)]
struct EchoResult {
    connections: usize,
    pipeline: usize,
    seconds: f64,
    messages: u64,
    messages_per_second: f64,
    rtt_mean_us: f64,
    rtt_p50_us: u64,
    rtt_p99_us: u64,
    rtt_max_us: u64,
    /// Fewest replies any connection got, divided by the mean.
    fairness: f64,
    server_cpu_seconds: f64,
    messages_per_server_cpu_second: f64,
    /// The server's user-space CPU time per message, in µs: what its own code costs, the
    /// kernel's socket work aside (most of the total at one message in flight).
    server_user_us_per_message: f64,
    /// CPU seconds used by every process but the server and this one during the window.
    others_cpu_seconds: f64,
    errors: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let flags = Flags::parse();
    // The client side holds as many sockets as the server: take the whole fd allowance.
    raise_fd_limit();
    let (url, server_pid) = (flags.url[0].as_str(), flags.server_pid[0]);
    let line = match flags.scenario {
        Scenario::Echo { connections, pipeline, seconds, size } => {
            let result = echo(url, server_pid, connections, pipeline, secs(seconds), size).await?;
            serde_json::to_string(&result)?
        }
        Scenario::Lean { connections, warmup, seconds, size } => {
            let warmup = Duration::from_secs_f64(warmup.max(0.0));
            let result =
                lean::echo(url, server_pid, connections, warmup, secs(seconds), size).await?;
            serde_json::to_string(&result)?
        }
        Scenario::Handshakes { concurrency, seconds } => {
            let result = handshakes(url, server_pid, concurrency, secs(seconds)).await?;
            serde_json::to_string(&result)?
        }
        Scenario::Idle { connections } => {
            let result = idle(url, server_pid, connections).await?;
            serde_json::to_string(&result)?
        }
        Scenario::Soak { held, seconds, churn, sources } => {
            let plan =
                soak::Plan { held, churn_for: secs(seconds), churn_at_least: churn, sources };
            let result = soak::soak(url, server_pid, plan).await?;
            serde_json::to_string(&result)?
        }
        Scenario::Heads { connections, bytes, over } => {
            let plan = heads::Plan { connections, bytes, over };
            serde_json::to_string(&heads::heads(url, server_pid, plan).await?)?
        }
        Scenario::Fanout { protocol, redis_pid, subscribers, messages, rate, size } => {
            let plan = fanout::Plan {
                protocol,
                urls: flags.url,
                server_pids: flags.server_pid,
                redis_pid,
                subscribers,
                messages,
                rate,
                size,
            };
            serde_json::to_string(&fanout::fanout(plan).await?)?
        }
        Scenario::Polling { protocol, connections, warmup, seconds, size } => {
            let plan = polling::Plan {
                protocol,
                url: url.to_owned(),
                server_pid,
                connections,
                warmup: Duration::from_secs_f64(warmup.max(0.0)),
                window: secs(seconds),
                size,
            };
            serde_json::to_string(&polling::polling(plan).await?)?
        }
    };
    println!("{line}");
    Ok(())
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.1))
}

fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Connects and checks the greeting.
async fn connect(url: &str) -> Result<Socket> {
    let (mut socket, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .context("connect in time")?
        .context("connect")?;
    match tokio::time::timeout(STEP, next_data(&mut socket)).await.context("greeting in time")? {
        Some(text) if text == wire::WELCOME => Ok(socket),
        other => bail!("expected {:?}, got {other:?}", wire::WELCOME),
    }
}

/// The next text message (pings are answered by tungstenite as it reads).
async fn next_data<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Binary(_) | Message::Close(_)) | Err(_) => return None,
        }
    }
}

/// Opens `count` connections, 200 at a time.
async fn connect_all(url: &str, count: usize) -> Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let batch = (count - sockets.len()).min(200);
        let opened = futures_util::future::join_all((0..batch).map(|_| connect(url))).await;
        for socket in opened {
            sockets.push(
                socket.with_context(|| format!("connection {} of {count}", sockets.len() + 1))?,
            );
        }
    }
    Ok(sockets)
}

/// The `n`-th message of connection `c`: `size` bytes of lower-case text, unique per message.
fn message(c: usize, n: u64, size: usize) -> String {
    let mut text = format!("c{c}m{n}x");
    while text.len() < size {
        text.push('a');
    }
    text
}

/// What one connection saw in an echo window.
#[derive(Debug, Default)]
struct Tally {
    replies: u64,
    errors: u64,
    rtts_us: Vec<u64>,
}

async fn echo(
    url: &str,
    pid: u32,
    connections: usize,
    pipeline: usize,
    window: Duration,
    size: usize,
) -> Result<EchoResult> {
    let sockets = connect_all(url, connections).await?;
    let before = cpu::Snapshot::take(pid)?;
    let started = Instant::now();
    let deadline = started + window;
    // One task per connection: tokio's scheduler serves them in turn, where one future
    // joining them all would starve some once this core is saturated (and blame the server).
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(c, socket)| tokio::spawn(talk(c, socket, pipeline, deadline, size)))
        .collect();
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.context("a connection's task")?);
    }
    let elapsed = started.elapsed();
    let after = cpu::Snapshot::take(pid)?;

    Ok(EchoResult::from_tallies(connections, pipeline, elapsed, &tallies, &before, &after))
}

impl EchoResult {
    /// The figures of an echo window from each connection's tally and the CPU snapshots at its
    /// edges (shared by both generators).
    fn from_tallies(
        connections: usize,
        pipeline: usize,
        elapsed: Duration,
        tallies: &[Tally],
        before: &cpu::Snapshot,
        after: &cpu::Snapshot,
    ) -> Self {
        let mut result = EchoResult {
            connections,
            pipeline,
            seconds: elapsed.as_secs_f64(),
            ..EchoResult::default()
        };
        let mut rtts: Vec<u64> = Vec::new();
        let mut fewest = u64::MAX;
        for tally in tallies {
            result.messages += tally.replies;
            result.errors += tally.errors;
            fewest = fewest.min(tally.replies);
            rtts.extend_from_slice(&tally.rtts_us);
        }
        rtts.sort_unstable();
        let percentile = |p: f64| {
            rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0)
        };
        result.messages_per_second = result.messages as f64 / result.seconds;
        result.rtt_mean_us = rtts.iter().sum::<u64>() as f64 / rtts.len().max(1) as f64;
        result.rtt_p50_us = percentile(0.50);
        result.rtt_p99_us = percentile(0.99);
        result.rtt_max_us = rtts.last().copied().unwrap_or(0);
        let mean = result.messages as f64 / connections as f64;
        result.fairness = if mean > 0.0 { fewest as f64 / mean } else { 0.0 };
        result.server_cpu_seconds = after.server_seconds - before.server_seconds;
        result.others_cpu_seconds = (after.total_seconds - before.total_seconds)
            - result.server_cpu_seconds
            - (after.own_seconds - before.own_seconds);
        result.messages_per_server_cpu_second =
            result.messages as f64 / result.server_cpu_seconds.max(0.01);
        result.server_user_us_per_message =
            (after.server_user_seconds - before.server_user_seconds) * 1e6
                / result.messages.max(1) as f64;
        result
    }
}

/// One connection's closed loop: keeps `pipeline` messages in flight until `deadline`, then
/// collects the outstanding replies; every reply is checked.
async fn talk(
    c: usize,
    mut socket: Socket,
    pipeline: usize,
    deadline: Instant,
    size: usize,
) -> Tally {
    let mut tally = Tally::default();
    let mut in_flight = std::collections::VecDeque::with_capacity(pipeline);
    let mut n = 0u64;
    loop {
        let open = Instant::now() < deadline;
        if open && in_flight.len() < pipeline {
            let text = message(c, n, size);
            n += 1;
            let expected = wire::reply(&text);
            if socket.send(Message::text(text)).await.is_err() {
                tally.errors += 1;
                break;
            }
            in_flight.push_back((expected, Instant::now()));
            continue;
        }
        let Some((expected, sent)) = in_flight.pop_front() else { break };
        match tokio::time::timeout(STEP, next_data(&mut socket)).await {
            Ok(Some(reply)) if reply == expected => {
                tally.replies += 1;
                tally.rtts_us.push(sent.elapsed().as_micros() as u64);
            }
            _ => {
                tally.errors += 1 + in_flight.len() as u64;
                break;
            }
        }
    }
    let _ = socket.close(None).await;
    tally
}

/// What one handshake run measured.
#[derive(Debug, Default, Serialize)]
struct HandshakeResult {
    concurrency: usize,
    seconds: f64,
    handshakes: u64,
    handshakes_per_second: f64,
    server_cpu_seconds: f64,
    handshakes_per_server_cpu_second: f64,
    /// The server's user-space CPU time per handshake, in µs (see `EchoResult`).
    server_user_us_per_handshake: f64,
    others_cpu_seconds: f64,
    errors: u64,
}

async fn handshakes(
    url: &str,
    pid: u32,
    concurrency: usize,
    window: Duration,
) -> Result<HandshakeResult> {
    let before = cpu::Snapshot::take(pid)?;
    let started = Instant::now();
    let deadline = started + window;
    let workers = (0..concurrency).map(|_| async move {
        let (mut done, mut errors) = (0u64, 0u64);
        while Instant::now() < deadline {
            match connect(url).await {
                Ok(mut socket) => {
                    done += 1;
                    let _ = socket.close(None).await;
                    // The server's answering Close ends the handshake on both sides.
                    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, socket.next()).await {}
                }
                Err(_) => errors += 1,
            }
        }
        (done, errors)
    });
    let counts = futures_util::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let after = cpu::Snapshot::take(pid)?;
    let handshakes: u64 = counts.iter().map(|c| c.0).sum();
    let server_cpu_seconds = after.server_seconds - before.server_seconds;
    Ok(HandshakeResult {
        concurrency,
        seconds: elapsed.as_secs_f64(),
        handshakes,
        handshakes_per_second: handshakes as f64 / elapsed.as_secs_f64(),
        server_cpu_seconds,
        handshakes_per_server_cpu_second: handshakes as f64 / server_cpu_seconds.max(0.01),
        server_user_us_per_handshake: (after.server_user_seconds - before.server_user_seconds)
            * 1e6
            / handshakes.max(1) as f64,
        others_cpu_seconds: (after.total_seconds - before.total_seconds)
            - server_cpu_seconds
            - (after.own_seconds - before.own_seconds),
        errors: counts.iter().map(|c| c.1).sum(),
    })
}

/// What one idle run measured.
#[derive(Debug, Default, Serialize)]
struct IdleResult {
    connections: usize,
    rss_before_bytes: u64,
    rss_held_bytes: u64,
    rss_per_connection_bytes: f64,
    answered: usize,
    errors: usize,
}

async fn idle(url: &str, pid: u32, connections: usize) -> Result<IdleResult> {
    let rss_before_bytes = cpu::rss_bytes(pid)?;
    let mut sockets = connect_all(url, connections).await?;
    // Let the server settle (allocations freed after the handshakes) before reading its RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_held_bytes = cpu::rss_bytes(pid)?;
    let mut answered = 0;
    for chunk in sockets.chunks_mut(500) {
        let checks = chunk.iter_mut().enumerate().map(|(c, socket)| async move {
            let text = message(c, 0, 32);
            socket.send(Message::text(text.clone())).await.ok()?;
            let reply = tokio::time::timeout(STEP, next_data(socket)).await.ok()??;
            (reply == wire::reply(&text)).then_some(())
        });
        answered += futures_util::future::join_all(checks).await.iter().flatten().count();
    }
    let errors = connections - answered;
    drop(sockets);
    Ok(IdleResult {
        connections,
        rss_before_bytes,
        rss_held_bytes,
        rss_per_connection_bytes: (rss_held_bytes.saturating_sub(rss_before_bytes)) as f64
            / connections as f64,
        answered,
        errors,
    })
}
