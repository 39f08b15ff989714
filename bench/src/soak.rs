//! The soak: connections held open with the keepalive on while a churn of short connections
//! (connect → send → reply → close) runs beside them, and the server's RSS sampled over time.
//! A leak shows as RSS that does not come back once the churn stops.
//!
//! The churn's sockets are spread over several loopback source addresses (127.0.0.2, .3, …):
//! every closed connection leaves a TIME_WAIT entry for its address pair, and one source
//! address runs out of ephemeral ports long before 200,000 connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::{connect_all, cpu, message, next_data, Socket, STEP};

/// How many churn connections are in progress at once.
const CHURN_CONCURRENCY: usize = 32;
/// How long the server is left alone before "before" and "after" are read.
const SETTLE: Duration = Duration::from_secs(5);
/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// RSS after the churn may exceed RSS before it by this fraction and still count as back.
const BACK_WITHIN: f64 = 0.10;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Connections held open for the whole run.
    pub held: usize,
    /// How long the churn runs at least.
    pub churn_for: Duration,
    /// How many churn connections it makes at least (it runs on past `churn_for` until then,
    /// up to four times `churn_for`).
    pub churn_at_least: u64,
    /// Source addresses for the churn: 127.0.0.2 onwards.
    pub sources: u8,
}

/// One RSS sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    t: f64,
    rss_bytes: u64,
    /// Churn connections completed so far.
    churned: u64,
}

/// What the soak measured.
#[derive(Debug, Serialize)]
pub struct SoakResult {
    held: usize,
    churned: u64,
    /// When the churn ran, in seconds since the run started.
    churn_from: f64,
    churn_to: f64,
    churn_seconds: f64,
    churn_per_second: f64,
    rss_start_bytes: u64,
    /// With the held connections open, settled, before the churn.
    rss_before_churn_bytes: u64,
    rss_peak_bytes: u64,
    /// Settled after the churn stopped, the held connections still open.
    rss_after_churn_bytes: u64,
    /// `rss_after_churn_bytes / rss_before_churn_bytes - 1`.
    growth: f64,
    back_within_10_percent: bool,
    /// Held connections that still answered a message at the end.
    held_answering: usize,
    errors: u64,
    samples: Vec<Sample>,
}

pub async fn soak(url: &str, pid: u32, plan: Plan) -> Result<SoakResult> {
    let addr = server_addr(url)?;
    let started = Instant::now();
    let rss = || cpu::rss_bytes(pid);
    let rss_start_bytes = rss()?;
    let mut samples = vec![Sample { t: 0.0, rss_bytes: rss_start_bytes, churned: 0 }];

    let sockets = connect_all(url, plan.held).await?;
    let (check, checked) = watch::channel(false);
    let holders: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(c, socket)| tokio::spawn(hold(c, socket, checked.clone())))
        .collect();
    let churned = Arc::new(AtomicU64::new(0));
    let mut sample = || -> Result<u64> {
        let rss_bytes = rss()?;
        let t = started.elapsed().as_secs_f64();
        samples.push(Sample { t, rss_bytes, churned: churned.load(Ordering::Relaxed) });
        Ok(rss_bytes)
    };
    // Settled: the handshakes' transient allocations freed, the keepalive running.
    let rss_before_churn_bytes = settle(&mut sample).await?;

    let (stop, stopped) = watch::channel(false);
    let errors = Arc::new(AtomicU64::new(0));
    let churn_started = Instant::now();
    let workers: Vec<_> = (0..CHURN_CONCURRENCY)
        .map(|w| {
            let source = Ipv4Addr::new(127, 0, 0, 2 + (w % usize::from(plan.sources.max(1))) as u8);
            let (url, churned, errors, stopped) =
                (url.to_owned(), churned.clone(), errors.clone(), stopped.clone());
            tokio::spawn(async move {
                while !*stopped.borrow() {
                    match tokio::time::timeout(STEP, once(&url, addr, source)).await {
                        Ok(Ok(())) => churned.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let hard_stop = churn_started + plan.churn_for * 4;
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        sample()?;
        let elapsed = churn_started.elapsed();
        let enough =
            elapsed >= plan.churn_for && churned.load(Ordering::Relaxed) >= plan.churn_at_least;
        if enough || Instant::now() >= hard_stop {
            break;
        }
    }
    let _ = stop.send(true);
    for worker in workers {
        worker.await.context("a churn worker")?;
    }
    let churn_seconds = churn_started.elapsed().as_secs_f64();
    let churn_from = (churn_started - started).as_secs_f64();

    let rss_after_churn_bytes = settle(&mut sample).await?;
    let _ = check.send(true);
    let mut held_answering = 0;
    for holder in holders {
        if holder.await.context("a held connection's task")? {
            held_answering += 1;
        }
    }

    let churned = churned.load(Ordering::Relaxed);
    let growth = rss_after_churn_bytes as f64 / rss_before_churn_bytes.max(1) as f64 - 1.0;
    let rss_peak_bytes = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    let errors = errors.load(Ordering::Relaxed) + (plan.held - held_answering) as u64;
    Ok(SoakResult {
        held: plan.held,
        churned,
        churn_from,
        churn_to: churn_from + churn_seconds,
        churn_seconds,
        churn_per_second: churned as f64 / churn_seconds,
        rss_start_bytes,
        rss_before_churn_bytes,
        rss_peak_bytes,
        rss_after_churn_bytes,
        growth,
        back_within_10_percent: growth <= BACK_WITHIN,
        held_answering,
        errors,
        samples,
    })
}

/// Samples for [`SETTLE`], one sample every [`SAMPLE_EVERY`]; returns the last.
async fn settle(sample: &mut impl FnMut() -> Result<u64>) -> Result<u64> {
    let until = Instant::now() + SETTLE;
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let rss = sample()?;
        if Instant::now() >= until {
            return Ok(rss);
        }
    }
}

/// Keeps one connection open, reading (tungstenite answers the server's pings as it reads),
/// until `check` turns true; then sends a message and says whether the right reply came.
async fn hold(c: usize, mut socket: Socket, mut check: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = check.changed() => break,
            frame = socket.next() => match frame {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return false,
            },
        }
    }
    let text = message(c, 0, 32);
    if socket.send(Message::text(text.clone())).await.is_err() {
        return false;
    }
    let reply = tokio::time::timeout(STEP, next_data(&mut socket)).await;
    let _ = socket.close(None).await;
    matches!(reply, Ok(Some(reply)) if reply == wire::reply(&text))
}

/// One churn connection from `source`: connect, greeting, one message and its reply, close
/// (waiting for the server's answering Close).
async fn once(url: &str, server: SocketAddr, source: Ipv4Addr) -> Result<()> {
    let tcp = TcpSocket::new_v4()?;
    tcp.bind(SocketAddr::from((source, 0))).with_context(|| format!("bind {source}"))?;
    let stream = tcp.connect(server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.context("upgrade")?;
    if next_data(&mut socket).await.as_deref() != Some(wire::WELCOME) {
        bail!("no greeting");
    }
    socket.send(Message::text("churn")).await?;
    if next_data(&mut socket).await.as_deref() != Some("CHURN") {
        bail!("wrong reply");
    }
    socket.close(None).await?;
    while let Some(Ok(_)) = socket.next().await {}
    Ok(())
}

/// The server's address from a `ws://HOST:PORT/...` URL.
fn server_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("a ws:// URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.parse().with_context(|| format!("{authority:?} is not an IP address and port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_address_comes_from_the_url() {
        let addr = server_addr("ws://127.0.0.1:8888/ws/").expect("parsed");
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 8888)));
        assert!(server_addr("wss://example.com/ws/").is_err());
    }
}
