//! `floor`: the least CPU a tokio WebSocket echo can spend per message, the yardstick for
//! issue 15's "messages per server CPU-second" rows (docs/BENCHMARKS.md, "The floor").
//!
//! One current-thread runtime, the raw `TcpStream`, frames parsed by hand, one `read` and one
//! `write` per burst. It is no server: it trusts the handshake, takes only masked frames under
//! 126 bytes (the benchmark's), and has no limits, timers, Close handling, logging or metrics.
//! Whatever a real server spends above it is its own code; what this spends is tokio's and
//! the kernel's. Run it like the reference servers, then point `bench` at it:
//!
//! ```text
//! taskset -c 0 target/release/examples/floor      # prints "Serving on http://127.0.0.1:PORT/"
//! taskset -c 1 target/release/bench --url ws://127.0.0.1:PORT/ws/ --server-pid PID lean ...
//! ```
//!
//! `TCP_NODELAY` is set as `server` sets it (`NAGLE=1` leaves it off, as fastwebsockets does).

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind((wire::DEFAULT_HOST, 0)).await?;
        println!("{}{}/", wire::SERVING_ON, listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            tokio::spawn(async move {
                // A peer that leaves is no news here.
                let _ = serve(tcp).await;
            });
        }
    })
}

async fn serve(mut tcp: TcpStream) -> Result<()> {
    if std::env::var_os("NAGLE").is_none() {
        tcp.set_nodelay(true)?;
    }
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let head_end = loop {
        let n = tcp.read(&mut buf[len..]).await?;
        anyhow::ensure!(n > 0, "closed during the handshake");
        len += n;
        if let Some(at) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_owned())
        })
        .context("no Sec-WebSocket-Key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&[0x81, wire::WELCOME.len() as u8]);
    out.extend_from_slice(wire::WELCOME.as_bytes());
    tcp.write_all(&out).await?;
    buf.copy_within(head_end..len, 0);
    len -= head_end;
    loop {
        // Every whole frame in the buffer: 2 bytes of header, 4 of mask, the payload.
        out.clear();
        let mut at = 0;
        while len - at >= 6 {
            let size = usize::from(buf[at + 1] & 0x7f);
            anyhow::ensure!(size < 126, "only frames under 126 bytes");
            if len - at < 6 + size {
                break;
            }
            let mask = [buf[at + 2], buf[at + 3], buf[at + 4], buf[at + 5]];
            out.extend_from_slice(&[0x81, size as u8]);
            let payload = &buf[at + 6..at + 6 + size];
            out.extend(
                payload.iter().zip(mask.iter().cycle()).map(|(b, m)| (b ^ m).to_ascii_uppercase()),
            );
            at += 6 + size;
        }
        buf.copy_within(at..len, 0);
        len -= at;
        if !out.is_empty() {
            tcp.write_all(&out).await?;
        }
        let n = tcp.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
}
