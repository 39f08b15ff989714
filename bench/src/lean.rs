//! The echo measured by a lean generator: raw TCP, pre-encoded frames, one `write` per message
//! and one reused read buffer per connection, the clock started just before the write, and a
//! warm-up before counting. Built to load the server, not itself.
//!
//! Why a second generator: the tungstenite generator ([`crate::echo`]) spends about as much CPU
//! per message as the server under test, so at 1000 connections it is the bottleneck and paces
//! every connection alike; the server's run queue never fills, and fairness and the tail look
//! perfect. This one costs a fraction of that, so the server saturates, and what its scheduler
//! does with 1000 ready connections (which get served again and again, which wait) shows up in
//! each connection's count and in every round trip.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{cpu, message, EchoResult, Tally, STEP};

/// The largest server frame this generator reads (the replies are 32 bytes).
const READ_BUFFER: usize = 4096;

/// The `ws://host:port/path` pieces.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("ws://").context("a ws:// URL")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((authority.to_owned(), format!("/{path}")))
}

/// One connection: upgraded by hand, greeting read.
struct Conn {
    tcp: TcpStream,
    buffer: Vec<u8>,
    filled: usize,
}

impl Conn {
    async fn open(authority: &str, path: &str) -> Result<Self> {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(authority))
            .await
            .context("connect in time")??;
        tcp.set_nodelay(true)?;
        let mut conn = Self { tcp, buffer: vec![0; READ_BUFFER], filled: 0 };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        conn.tcp.write_all(request.as_bytes()).await?;
        // The response head, then whatever follows it (the greeting may come in the same read).
        let head_end = loop {
            conn.fill().await?;
            if let Some(at) = find(&conn.buffer[..conn.filled], b"\r\n\r\n") {
                break at + 4;
            }
        };
        ensure!(conn.buffer.starts_with(b"HTTP/1.1 101"), "not upgraded");
        conn.buffer.copy_within(head_end..conn.filled, 0);
        conn.filled -= head_end;
        let greeting = conn.frame().await?;
        ensure!(greeting == wire::WELCOME.as_bytes(), "expected the greeting");
        Ok(conn)
    }

    async fn fill(&mut self) -> Result<()> {
        ensure!(self.filled < self.buffer.len(), "a frame larger than the read buffer");
        let n = self.tcp.read(&mut self.buffer[self.filled..]).await?;
        ensure!(n > 0, "the server closed the connection");
        self.filled += n;
        Ok(())
    }

    /// The next data frame's payload (pings and pongs skipped), consumed from the buffer.
    async fn frame(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some((opcode, start, end)) = parse(&self.buffer[..self.filled])? {
                let payload = self.buffer[start..end].to_vec();
                self.buffer.copy_within(end..self.filled, 0);
                self.filled -= end;
                match opcode {
                    0x1 => return Ok(payload),
                    0x9 | 0xA => continue,
                    other => bail!("unexpected opcode {other:#x}"),
                }
            }
            self.fill().await?;
        }
    }
}

/// A complete unmasked server frame at the start of `bytes`: its opcode and payload range.
fn parse(bytes: &[u8]) -> Result<Option<(u8, usize, usize)>> {
    if bytes.len() < 2 {
        return Ok(None);
    }
    ensure!(bytes[0] & 0x80 != 0, "fragmented frames are not expected");
    ensure!(bytes[1] & 0x80 == 0, "a server frame must not be masked");
    let (len, start) = match bytes[1] & 0x7F {
        126 if bytes.len() >= 4 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        126 => return Ok(None),
        127 => bail!("no 64-bit lengths here"),
        len => (usize::from(len), 2),
    };
    Ok((bytes.len() >= start + len).then_some((bytes[0] & 0x0F, start, start + len)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A masked client text frame (mask key 0, which RFC 6455 allows: the payload goes as is).
fn text_frame(payload: &str) -> Vec<u8> {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 8);
    frame.push(0x81);
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// Closed loop, one message in flight per connection: `warmup`, then `window` counted.
pub async fn echo(
    url: &str,
    pid: u32,
    connections: usize,
    warmup: Duration,
    window: Duration,
    size: usize,
) -> Result<EchoResult> {
    let (authority, path) = split_url(url)?;
    let mut conns = Vec::with_capacity(connections);
    while conns.len() < connections {
        let batch = (connections - conns.len()).min(200);
        let opened =
            futures_util::future::join_all((0..batch).map(|_| Conn::open(&authority, &path))).await;
        for conn in opened {
            conns.push(conn.with_context(|| format!("connection {}", conns.len() + 1))?);
        }
    }
    let start = Instant::now() + warmup;
    let deadline = start + window;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, conn)| tokio::spawn(talk(c, conn, start, deadline, size)))
        .collect();
    tokio::time::sleep_until(start.into()).await;
    let before = cpu::Snapshot::take(pid)?;
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.context("a connection's task")?);
    }
    let after = cpu::Snapshot::take(pid)?;
    Ok(EchoResult::from_tallies(connections, 1, window, &tallies, &before, &after))
}

/// One connection's closed loop: counts only round trips that start inside the window, and
/// stops at its end (the connection is then dropped: the server sees a reset, not a close).
async fn talk(c: usize, mut conn: Conn, start: Instant, deadline: Instant, size: usize) -> Tally {
    let mut tally = Tally::default();
    for n in 0u64.. {
        let text = message(c, n, size);
        let frame = text_frame(&text);
        let expected = wire::reply(&text);
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        if conn.tcp.write_all(&frame).await.is_err() {
            tally.errors += 1;
            break;
        }
        match tokio::time::timeout(STEP, conn.frame()).await {
            Ok(Ok(reply)) if reply == expected.as_bytes() => {
                if sent >= start {
                    tally.replies += 1;
                    tally.rtts_us.push(sent.elapsed().as_micros() as u64);
                }
            }
            _ => {
                tally.errors += 1;
                break;
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_encoded_and_parsed_as_rfc_6455_says() {
        assert_eq!(text_frame("hi"), [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        assert_eq!(parse(&[0x81, 0x02, b'H', b'I']).expect("valid"), Some((1, 2, 4)));
        assert_eq!(parse(&[0x81, 0x02, b'H']).expect("valid"), None);
        assert!(parse(&[0x81, 0x82, 0, 0, 0, 0]).is_err(), "masked");
        assert_eq!(split_url("ws://127.0.0.1:1/ws/").expect("url").1, "/ws/");
    }
}
