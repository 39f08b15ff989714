//! Fan-out: one publisher at a fixed rate, many subscribers split over several server
//! instances that share one Redis; every delivery checked (order, no gap), its latency
//! (publish → receipt) measured, and the servers' CPU time, Redis's apart, and memory read.
//!
//! Two protocols: our room (`/ws/room`: `joined`, then history, then `message` frames with
//! consecutive offsets; a client publishes by sending a text frame) and Socket.IO v5 over
//! Engine.IO v4 on a WebSocket (`0{…}` open, `40` connect, `42["event",data]`, ping `2` →
//! pong `3`), whose reference server broadcasts each `publish` event to a room every socket
//! joined (`bench/socketio/server.js`).
//!
//! Each message's text is `SEQ TIME`, the sequence number from 0 and the send time in µs since
//! this process started (padded to the message size), so every subscriber checks that it got
//! 0, 1, 2, … with none missing, and the latency is read off the same clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use wire::room::Frame;

use crate::{cpu, Socket, STEP};

/// Each socket's read buffer: a few frames of the sizes sent here.
const READ_BUFFER: usize = 4096;
/// How many subscribers complete their handshake at once.
const CONNECT_BATCH: usize = 200;
/// The servers count as settled when, over one [`SETTLE_WINDOW`], they and Redis used less
/// than this share of a core (presence frames after the joins, garbage collection).
const SETTLE_SHARE: f64 = 0.05;
const SETTLE_WINDOW: Duration = Duration::from_millis(300);
/// The longest the servers are given to settle before the measurement starts anyway.
const SETTLE_AT_MOST: Duration = Duration::from_secs(20);

/// The wire protocol the servers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Our room: `ws://HOST:PORT/ws/room`.
    Ours,
    /// Socket.IO v5 / Engine.IO v4: `ws://HOST:PORT/socket.io/?EIO=4&transport=websocket`.
    Socketio,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub protocol: Protocol,
    /// One URL per server instance; subscriber `i` connects to `urls[i % len]`, the publisher
    /// to the first.
    pub urls: Vec<String>,
    /// The instances' process ids, in the order of `urls`.
    pub server_pids: Vec<u32>,
    pub redis_pid: u32,
    pub subscribers: usize,
    pub messages: u64,
    /// Messages per second the publisher sends.
    pub rate: f64,
    /// Bytes of each message's text.
    pub size: usize,
}

/// What one fan-out run measured.
#[derive(Debug, Default, Serialize)]
pub struct FanoutResult {
    protocol: Option<Protocol>,
    instances: usize,
    subscribers: usize,
    messages: u64,
    rate: f64,
    /// From the first publish to the last delivery.
    seconds: f64,
    /// Deliveries expected: subscribers × messages.
    expected: u64,
    /// Deliveries received in order (offsets and sequence numbers consecutive).
    delivered: u64,
    delivered_per_second: f64,
    /// CPU seconds of every server instance together, during the window.
    server_cpu_seconds: f64,
    /// The part of `server_cpu_seconds` spent in the kernel (system time).
    server_system_cpu_seconds: f64,
    delivered_per_server_cpu_second: f64,
    /// CPU seconds of Redis during the window (not in `server_cpu_seconds`).
    redis_cpu_seconds: f64,
    /// CPU seconds of this load generator during the window.
    generator_cpu_seconds: f64,
    /// CPU seconds of every other process, and interrupts, during the window.
    others_cpu_seconds: f64,
    latency_mean_us: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_max_us: u64,
    /// The servers' RSS together: started, nothing connected.
    rss_start_bytes: u64,
    /// With every subscriber joined, settled, before the first publish.
    rss_held_bytes: u64,
    /// After the last delivery, every subscriber still connected.
    rss_after_bytes: u64,
    rss_per_subscriber_held_bytes: f64,
    rss_per_subscriber_after_bytes: f64,
    /// Seconds until every subscriber had joined, and until the servers settled after that.
    connect_seconds: f64,
    settle_seconds: f64,
    /// Deliveries whose offset or sequence number was not the next one (a gap, a repeat, a
    /// reordering).
    out_of_order: u64,
    /// Deliveries that never arrived (expected − delivered − out of order, at least 0).
    missing: u64,
    /// Frames that were not what the protocol allows here (undecodable, `refused`, a close).
    wrong_frames: u64,
    /// Subscribers that saw anything wrong.
    subscribers_with_errors: u64,
    /// Everything that went wrong: out of order + missing + wrong frames.
    errors: u64,
}

/// What a subscriber expects next: the sequence number in the text (both protocols) and the
/// room's offset (ours). Anything else is a gap, a repeat or a reordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    seq: u64,
    offset: u64,
}

impl Expect {
    /// Whether `offset` is the next one; either way the next is the one after it.
    fn offset(&mut self, offset: u64) -> bool {
        let next = offset == self.offset;
        self.offset = offset + 1;
        next
    }

    /// Whether `seq` is the next one; either way the next is the one after it.
    fn seq(&mut self, seq: u64) -> bool {
        let next = seq == self.seq;
        self.seq = seq + 1;
        next
    }
}

/// One subscriber's tally.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    out_of_order: u64,
    wrong_frames: u64,
    latencies_us: Vec<u32>,
}

/// The instant every message's send time is counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The text of message `seq`: `SEQ TIME` padded with `.` to `size` bytes.
fn message_text(seq: u64, size: usize) -> String {
    let mut text = format!("{seq} {}", now_us());
    while text.len() < size {
        text.push('.');
    }
    text
}

/// Reads `SEQ TIME` back.
fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split(' ');
    let seq = words.next()?.parse().ok()?;
    let sent = words.next()?.trim_end_matches('.').parse().ok()?;
    Some((seq, sent))
}

/// `42["publish","TEXT"]` (TEXT is digits, a space and dots: nothing to escape).
fn socketio_event(event: &str, text: &str) -> String {
    format!("42[\"{event}\",\"{text}\"]")
}

/// The payload of a Socket.IO `42["message",DATA]` packet, if `packet` is one.
fn socketio_message(packet: &str) -> Option<String> {
    let (event, data): (String, String) = serde_json::from_str(packet.strip_prefix("42")?).ok()?;
    (event == "message").then_some(data)
}

/// Engine.IO's ping and pong packets.
const EIO_PING: &str = "2";
const EIO_PONG: &str = "3";

/// Connects and completes the protocol's handshake; returns the socket and, for our room, the
/// offset the room was at (history frames carry offsets up to it; live ones follow it).
async fn join(protocol: Protocol, url: &str) -> Result<(Socket, u64)> {
    // tungstenite zeroes its whole read buffer (128 KiB by default) before every read: at one
    // small frame per read that was half of this process's CPU time.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (mut socket, _) = tokio::time::timeout(STEP, connect)
        .await
        .context("connect in time")?
        .with_context(|| format!("connect to {url}"))?;
    match protocol {
        Protocol::Ours => {
            let text = next_text(&mut socket).await?;
            match Frame::parse(&text) {
                Ok(Frame::Joined { offset, .. }) => Ok((socket, offset)),
                _ => bail!("expected a `joined` frame first, got {text:?}"),
            }
        }
        Protocol::Socketio => {
            let open = next_text(&mut socket).await?;
            if !open.starts_with('0') {
                bail!("expected an Engine.IO open packet `0{{…}}`, got {open:?}");
            }
            socket.send(Message::text("40")).await.context("send the Socket.IO connect")?;
            loop {
                let packet = next_text(&mut socket).await?;
                if packet.starts_with("40") {
                    return Ok((socket, 0));
                }
                if packet == EIO_PING {
                    socket.send(Message::text(EIO_PONG)).await.context("pong")?;
                    continue;
                }
                bail!("expected the Socket.IO connect answer `40{{…}}`, got {packet:?}");
            }
        }
    }
}

/// The next text frame, within [`STEP`].
async fn next_text(socket: &mut Socket) -> Result<String> {
    loop {
        match tokio::time::timeout(STEP, socket.next()).await.context("a frame in time")? {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            other => bail!("expected a text frame, got {other:?}"),
        }
    }
}

/// One subscriber: reads until it has every message, or until `give_up` turns true; checks
/// each delivery against the one it expects next.
async fn subscribe(
    protocol: Protocol,
    mut socket: Socket,
    base: u64,
    messages: u64,
    mut give_up: watch::Receiver<bool>,
) -> (Tally, Socket) {
    let mut tally =
        Tally { latencies_us: Vec::with_capacity(messages as usize), ..Tally::default() };
    let mut expect = Expect { seq: 0, offset: base + 1 };
    while expect.seq < messages {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            () = turned_true(&mut give_up) => break,
        };
        let received = now_us();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                tally.wrong_frames += 1;
                continue;
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                tally.wrong_frames += 1;
                break;
            }
        };
        let payload = match protocol {
            Protocol::Ours => match Frame::parse(&text) {
                Ok(Frame::Message { offset, .. }) if offset <= base => continue, // history
                Ok(Frame::Message { offset, text, .. }) => {
                    if !expect.offset(offset) {
                        tally.out_of_order += 1;
                    }
                    text
                }
                Ok(Frame::Presence { .. }) => continue,
                Ok(Frame::Joined { .. } | Frame::Refused { .. }) | Err(_) => {
                    tally.wrong_frames += 1;
                    continue;
                }
            },
            Protocol::Socketio => {
                if text.as_str() == EIO_PING {
                    if socket.send(Message::text(EIO_PONG)).await.is_err() {
                        tally.wrong_frames += 1;
                        break;
                    }
                    continue;
                }
                match socketio_message(&text) {
                    Some(data) => data,
                    None => {
                        tally.wrong_frames += 1;
                        continue;
                    }
                }
            }
        };
        match parse_text(&payload) {
            Some((seq, sent)) if expect.seq(seq) => {
                tally.delivered += 1;
                tally.latencies_us.push(received.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
            Some(_) => tally.out_of_order += 1,
            None => tally.wrong_frames += 1,
        }
    }
    (tally, socket)
}

/// Resolves once `signal` is true (or its sender is gone).
async fn turned_true(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|value| *value).await;
}

/// What the publisher saw.
#[derive(Debug, Default)]
struct Published {
    sent: u64,
    wrong_frames: u64,
    /// When the last message went out (µs on the [`epoch`] clock).
    last_sent_us: u64,
}

/// The publisher: sends `messages` at `rate` per second (catching up after a late tick, so the
/// rate holds on average), and reads everything it is sent meanwhile (ours delivers the room
/// to it too; Socket.IO pings it) until `stop` turns true.
async fn publish(
    protocol: Protocol,
    mut socket: Socket,
    messages: u64,
    rate: f64,
    size: usize,
    sent_all: tokio::sync::oneshot::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) -> Published {
    let mut published = Published::default();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut sent_all = Some(sent_all);
    loop {
        tokio::select! {
            _ = ticker.tick(), if published.sent < messages => {
                let text = message_text(published.sent, size);
                let frame = match protocol {
                    Protocol::Ours => text,
                    Protocol::Socketio => socketio_event("publish", &text),
                };
                if socket.send(Message::text(frame)).await.is_err() {
                    published.wrong_frames += 1;
                    break;
                }
                published.sent += 1;
                if published.sent == messages {
                    published.last_sent_us = now_us();
                    if let Some(tx) = sent_all.take() {
                        let _ = tx.send(published.last_sent_us);
                    }
                }
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => match protocol {
                    Protocol::Ours => {
                        if matches!(Frame::parse(&text), Ok(Frame::Refused { .. }) | Err(_)) {
                            published.wrong_frames += 1;
                        }
                    }
                    Protocol::Socketio => {
                        if text.as_str() == EIO_PING
                            && socket.send(Message::text(EIO_PONG)).await.is_err()
                        {
                            published.wrong_frames += 1;
                            break;
                        }
                    }
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    published.wrong_frames += 1;
                    break;
                }
            },
            () = turned_true(&mut stop) => break,
        }
    }
    let _ = socket.close(None).await;
    published
}

/// CPU seconds so far of each process in `pids`, summed.
fn cpu_of(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|pid| cpu::process_seconds_of(*pid)).sum()
}

fn system_cpu_of(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|pid| cpu::system_seconds_of(*pid)).sum()
}

fn rss_of(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|pid| cpu::rss_bytes(*pid)).sum()
}

/// Waits until the servers and Redis are nearly idle (or [`SETTLE_AT_MOST`] has passed).
async fn settle(pids: &[u32]) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let before = cpu_of(pids)?;
        tokio::time::sleep(SETTLE_WINDOW).await;
        let used = cpu_of(pids)? - before;
        if used < SETTLE_SHARE * SETTLE_WINDOW.as_secs_f64() || started.elapsed() > SETTLE_AT_MOST {
            return Ok(started.elapsed());
        }
    }
}

pub async fn fanout(plan: Plan) -> Result<FanoutResult> {
    epoch();
    if plan.urls.is_empty() || plan.urls.len() != plan.server_pids.len() {
        bail!("fan-out needs one --url per --server-pid, at least one");
    }
    let (protocol, messages) = (plan.protocol, plan.messages);
    let mut busy_pids = plan.server_pids.clone();
    busy_pids.push(plan.redis_pid);
    let rss_start_bytes = rss_of(&plan.server_pids)?;

    // Subscribers first, each read by its own task from the moment it joined (presence
    // frames arrive while the others join).
    let connect_started = Instant::now();
    let (give_up_tx, give_up) = watch::channel(false);
    let mut subscribers = Vec::with_capacity(plan.subscribers);
    while subscribers.len() < plan.subscribers {
        let from = subscribers.len();
        let batch = (plan.subscribers - from).min(CONNECT_BATCH);
        let joins = (from..from + batch).map(|i| join(protocol, &plan.urls[i % plan.urls.len()]));
        for (i, joined) in futures_util::future::join_all(joins).await.into_iter().enumerate() {
            let (socket, base) = joined
                .with_context(|| format!("subscriber {} of {}", from + i + 1, plan.subscribers))?;
            subscribers.push(tokio::spawn(subscribe(
                protocol,
                socket,
                base,
                messages,
                give_up.clone(),
            )));
        }
    }
    let (publisher, _) = join(protocol, &plan.urls[0]).await.context("the publisher")?;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let settle_seconds = settle(&busy_pids).await?.as_secs_f64();
    let rss_held_bytes = rss_of(&plan.server_pids)?;

    let own_before = cpu::process_seconds_of(std::process::id())?;
    let machine_before = cpu::machine_busy_seconds()?;
    let servers_before = cpu_of(&plan.server_pids)?;
    let system_before = system_cpu_of(&plan.server_pids)?;
    let redis_before = cpu::process_seconds_of(plan.redis_pid)?;
    let started_us = now_us();
    let (stop_tx, stop) = watch::channel(false);
    let (sent_all_tx, sent_all) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn(publish(
        protocol,
        publisher,
        messages,
        plan.rate,
        plan.size,
        sent_all_tx,
        stop,
    ));
    // Subscribers that have not got everything [`STEP`] after the last publish give up.
    tokio::spawn(async move {
        let deadline = match sent_all.await {
            Ok(_) => tokio::time::Instant::now() + STEP,
            Err(_) => tokio::time::Instant::now(),
        };
        tokio::time::sleep_until(deadline).await;
        let _ = give_up_tx.send(true);
    });
    let mut tallies = Vec::with_capacity(subscribers.len());
    let mut sockets = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let (tally, socket) = subscriber.await.context("a subscriber's task")?;
        tallies.push(tally);
        sockets.push(socket);
    }
    let finished_us = now_us();
    let servers_after = cpu_of(&plan.server_pids)?;
    let system_after = system_cpu_of(&plan.server_pids)?;
    let redis_after = cpu::process_seconds_of(plan.redis_pid)?;
    let own_after = cpu::process_seconds_of(std::process::id())?;
    let machine_after = cpu::machine_busy_seconds()?;
    let rss_after_bytes = rss_of(&plan.server_pids)?;
    let _ = stop_tx.send(true);
    let published = publisher.await.context("the publisher's task")?;
    if published.sent < messages {
        bail!("the publisher sent only {} of {messages} messages", published.sent);
    }
    drop(sockets);

    let n = plan.subscribers as f64;
    let mut result = FanoutResult {
        protocol: Some(protocol),
        instances: plan.urls.len(),
        subscribers: plan.subscribers,
        messages,
        rate: plan.rate,
        seconds: (finished_us - started_us) as f64 / 1e6,
        expected: plan.subscribers as u64 * messages,
        server_cpu_seconds: servers_after - servers_before,
        server_system_cpu_seconds: system_after - system_before,
        redis_cpu_seconds: redis_after - redis_before,
        generator_cpu_seconds: own_after - own_before,
        rss_start_bytes,
        rss_held_bytes,
        rss_after_bytes,
        rss_per_subscriber_held_bytes: rss_held_bytes.saturating_sub(rss_start_bytes) as f64 / n,
        rss_per_subscriber_after_bytes: rss_after_bytes.saturating_sub(rss_start_bytes) as f64 / n,
        connect_seconds,
        settle_seconds,
        wrong_frames: published.wrong_frames,
        ..FanoutResult::default()
    };
    result.others_cpu_seconds = (machine_after - machine_before)
        - result.server_cpu_seconds
        - result.redis_cpu_seconds
        - result.generator_cpu_seconds;
    let mut latencies: Vec<u32> = Vec::with_capacity(result.expected as usize);
    for tally in &tallies {
        result.delivered += tally.delivered;
        result.out_of_order += tally.out_of_order;
        result.wrong_frames += tally.wrong_frames;
        if tally.out_of_order + tally.wrong_frames > 0 || tally.delivered < messages {
            result.subscribers_with_errors += 1;
        }
        latencies.extend_from_slice(&tally.latencies_us);
    }
    result.missing = result.expected.saturating_sub(result.delivered + result.out_of_order);
    result.errors = result.out_of_order + result.missing + result.wrong_frames;
    result.delivered_per_second = result.delivered as f64 / result.seconds.max(1e-6);
    result.delivered_per_server_cpu_second =
        result.delivered as f64 / result.server_cpu_seconds.max(0.01);
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0, |v| u64::from(*v))
    };
    result.latency_mean_us =
        latencies.iter().map(|v| u64::from(*v)).sum::<u64>() as f64 / latencies.len().max(1) as f64;
    result.latency_p50_us = percentile(0.50);
    result.latency_p99_us = percentile(0.99);
    result.latency_max_us = latencies.last().map_or(0, |v| u64::from(*v));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_carry_their_sequence_and_send_time() {
        let text = message_text(41, 32);
        assert_eq!(text.len(), 32);
        let (seq, sent) = parse_text(&text).expect("parses");
        assert_eq!(seq, 41);
        assert!(sent <= now_us());
        assert_eq!(parse_text("7 1234"), Some((7, 1234)));
        assert_eq!(parse_text("x 1"), None);
    }

    #[test]
    fn gaps_repeats_and_reorderings_are_caught() {
        let mut expect = Expect { seq: 0, offset: 11 };
        assert!(expect.offset(11) && expect.seq(0));
        assert!(expect.offset(12) && expect.seq(1));
        assert!(!expect.offset(14), "offset 13 skipped");
        assert!(!expect.seq(3), "seq 2 skipped");
        assert!(expect.offset(15) && expect.seq(4), "in step again after the gap");
        assert!(!expect.seq(4), "a repeat");
        assert!(!expect.offset(15), "a repeated offset");
    }

    #[test]
    fn socketio_packets_round_trip() {
        let packet = socketio_event("message", "3 99..");
        assert_eq!(packet, r#"42["message","3 99.."]"#);
        assert_eq!(socketio_message(&packet).as_deref(), Some("3 99.."));
        assert_eq!(socketio_message(r#"42["other","x"]"#), None);
        assert_eq!(socketio_message("2"), None);
    }
}
