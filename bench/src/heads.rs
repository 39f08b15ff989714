//! `bench heads`: what connections holding half-sent request heads cost the server. Opens
//! `connections` plain TCP connections, each sending the start of a request head (`GET /
//! HTTP/1.1`, a `Host`, then an `X-Pad:` line padded to `bytes` and never finished), and
//! holds them. It waits until the server has read every byte (the kernel's receive queues of
//! the server's sockets, from `/proc/net/tcp`, are empty) and its RSS has stopped growing,
//! both with a deadline, then reports the RSS added per connection, checks the connections are
//! still open, and that one more connection sending a head of `over` bytes is answered 431.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{cpu, STEP};

/// How long RSS must not grow to count as settled.
const QUIET: Duration = Duration::from_millis(200);
/// How often the receive queues and RSS are read.
const POLL: Duration = Duration::from_millis(10);
/// The most waiting for the server to read everything, and then for RSS to settle, may take.
const DEADLINE: Duration = Duration::from_secs(20);

pub struct Plan {
    pub connections: usize,
    pub bytes: usize,
    pub over: usize,
}

/// What one run measured.
#[derive(Debug, Default, Serialize)]
pub struct HeadsResult {
    connections: usize,
    head_bytes: usize,
    rss_before_bytes: u64,
    rss_held_bytes: u64,
    rss_per_connection_bytes: f64,
    /// Opening the connections and writing their heads.
    open_seconds: f64,
    /// From the last byte written to RSS settled.
    settle_seconds: f64,
    /// The connection over the cap, from connecting to its answer and end.
    over_seconds: f64,
    /// Connections neither answered nor closed by the server when RSS was read.
    held_open: usize,
    over_bytes: usize,
    /// The status code the connection sending `over_bytes` got ("none" if it got no answer).
    over_status: String,
}

/// The start of a request head, `bytes` long, its last header line unfinished.
fn partial_head(bytes: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(bytes.max(head.len()), b'a');
    head
}

/// The `host:port` of a `ws://host:port/path` URL.
fn address(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("the URL must be ws://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.parse().with_context(|| format!("not an address: {authority}"))
}

pub async fn heads(url: &str, pid: u32, plan: Plan) -> Result<HeadsResult> {
    let addr = address(url)?;
    // One finished request first, so the accept path and the allocator's first arenas are
    // part of the baseline rather than of the first held connection.
    let _ = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    wait_read(addr.port(), 0).await?;
    let rss_before_bytes = settled_rss(pid).await?;

    let head = partial_head(plan.bytes);
    let opening = Instant::now();
    let mut held = Vec::with_capacity(plan.connections);
    while held.len() < plan.connections {
        let batch = (plan.connections - held.len()).min(100);
        let opened = futures_util::future::join_all((0..batch).map(|_| async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(&head).await?;
            anyhow::Ok(stream)
        }))
        .await;
        for stream in opened {
            held.push(stream.with_context(|| format!("connection {}", held.len() + 1))?);
        }
    }
    let written = Instant::now();
    let open_seconds = opening.elapsed().as_secs_f64();
    wait_read(addr.port(), plan.connections).await?;
    let rss_held_bytes = settled_rss(pid).await?;
    let settle_seconds = written.elapsed().as_secs_f64();

    // Still open: nothing to read within a moment (not an answer, not the end).
    let checks = held.iter_mut().map(|stream| async move {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await.is_err()
    });
    let held_open = futures_util::future::join_all(checks).await.iter().filter(|o| **o).count();

    let over = Instant::now();
    let answer = exchange(addr, &partial_head(plan.over)).await.unwrap_or_default();
    let over_status = status(&answer).unwrap_or("none").to_owned();
    let over_seconds = over.elapsed().as_secs_f64();
    drop(held);

    Ok(HeadsResult {
        connections: plan.connections,
        head_bytes: head.len(),
        rss_before_bytes,
        rss_held_bytes,
        rss_per_connection_bytes: rss_held_bytes.saturating_sub(rss_before_bytes) as f64
            / plan.connections.max(1) as f64,
        open_seconds,
        settle_seconds,
        over_seconds,
        held_open,
        over_bytes: plan.over,
        over_status,
    })
}

/// Sends `request` on a fresh connection and reads what comes back until the end (or an error
/// or [`STEP`]); a write cut short by the server's answer is not an error.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + STEP;
    while let Ok(Ok(n @ 1..)) =
        tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await
    {
        answer.extend_from_slice(&buf[..n]);
    }
    Ok(answer)
}

/// The status code of an HTTP/1.1 response.
fn status(answer: &[u8]) -> Option<&str> {
    let line = std::str::from_utf8(answer.get(..answer.len().min(64))?).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)
}

/// Waits until at least `connections` established sockets on the server's side of `port`
/// exist and none has unread bytes in its receive queue.
async fn wait_read(port: u16, connections: usize) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (sockets, unread) = server_queues(port)?;
        if sockets >= connections && unread == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not read the heads within {DEADLINE:?}: {sockets} of \
                 {connections} sockets, {unread} bytes unread"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Established TCP sockets whose local port is `port` (the server's side), and the bytes in
/// their receive queues, from `/proc/net/tcp` and `/proc/net/tcp6`.
fn server_queues(port: u16) -> Result<(usize, u64)> {
    let (mut sockets, mut unread) = (0, 0);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, _, state, queues, ..] = fields[..] else { continue };
            let local_port = local.rsplit_once(':').map(|(_, p)| u16::from_str_radix(p, 16));
            // State 01 is ESTABLISHED; the listener (0A) counts its backlog there instead.
            if local_port != Some(Ok(port)) || state != "01" {
                continue;
            }
            let rx = queues.split_once(':').map(|(_, rx)| u64::from_str_radix(rx, 16));
            sockets += 1;
            unread += rx.and_then(Result::ok).context("rx_queue")?;
        }
    }
    Ok((sockets, unread))
}

/// The server's RSS once it has not grown for [`QUIET`].
async fn settled_rss(pid: u32) -> Result<u64> {
    let deadline = Instant::now() + DEADLINE;
    let mut peak = cpu::rss_bytes(pid)?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let rss = cpu::rss_bytes(pid)?;
        if rss > peak {
            (peak, since) = (rss, Instant::now());
        } else if since.elapsed() >= QUIET {
            return Ok(rss);
        }
        ensure!(Instant::now() < deadline, "the server's RSS still grew after {DEADLINE:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_unfinished_and_exactly_as_long_as_asked() {
        let head = partial_head(16_000);
        assert_eq!(head.len(), 16_000);
        assert!(head.starts_with(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: aaa"));
        assert!(!head.ends_with(b"\r\n"));
    }

    #[test]
    fn addresses_and_statuses_are_read() {
        assert_eq!(address("ws://127.0.0.1:9000/ws").expect("v4").port(), 9000);
        assert_eq!(address("ws://[::1]:80/ws").expect("v6").port(), 80);
        assert_eq!(status(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), Some("431"));
        assert_eq!(status(b""), None);
    }
}
