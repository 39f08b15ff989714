//! The shipped deployment, tested with a real nginx: `deploy/nginx.conf` in front of two server
//! instances (the page, `/ws/`, caching and compression), a quiet socket that outlives nginx's
//! read timeout, and a rolling restart under 50 talking clients.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use web::session::lines;

use crate::support::{header, http_raw, Browser, Nginx, Paths, Server};

const LIMIT: Duration = Duration::from_secs(30);

/// A shipped file from `deploy/` with each `(from, to)` replaced; fails if the file no longer
/// contains a `from`, so these tests follow the file rather than a copy of it.
pub fn shipped(paths: &Paths, file: &str, replacements: &[(&str, String)]) -> Result<String> {
    let path = paths.root.join("deploy").join(file);
    let mut text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    for (from, to) in replacements {
        ensure!(text.contains(from), "deploy/{file} no longer contains `{from}`");
        text = text.replace(from, to);
    }
    Ok(text)
}

/// The replacements that point `deploy/nginx.conf` (or `nginx-tls.conf`) at this test's
/// instances and bundle; nothing else changes.
pub fn instances_and_bundle(
    dist: &Path,
    a: SocketAddr,
    b: SocketAddr,
) -> Vec<(&'static str, String)> {
    vec![
        ("root /opt/realtime/dist;", format!("root {};", dist.display())),
        ("server 127.0.0.1:8001 ", format!("server {a} ")),
        ("server 127.0.0.1:8002 ", format!("server {b} ")),
    ]
}

/// nginx running the recommended plain-HTTP configuration, with `extra` replacements.
pub async fn recommended_nginx(
    paths: &Paths,
    name: &str,
    a: SocketAddr,
    b: SocketAddr,
    extra: &[(&'static str, String)],
) -> Result<Nginx> {
    Nginx::start_http(paths, name, 1, |addrs| {
        let mut replacements = instances_and_bundle(&paths.dist, a, b);
        replacements.push(("listen 80;", format!("listen {};", addrs[0])));
        replacements.push(("listen [::]:80;", String::new()));
        replacements.extend_from_slice(extra);
        shipped(paths, "nginx.conf", &replacements)
    })
    .await
}

fn request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")
}

/// The bundle's `.wasm` file name.
pub fn wasm_name(dist: &Path) -> Result<String> {
    std::fs::read_dir(dist)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.ends_with("_bg.wasm"))
        .context("no .wasm in dist/")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and reads the greeting.
async fn connect(url: &str) -> Result<Socket> {
    let (mut socket, _) =
        tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url)).await??;
    match tokio::time::timeout(LIMIT, socket.next()).await? {
        Some(Ok(Message::Text(text))) if text.as_str() == wire::WELCOME => Ok(socket),
        other => bail!("expected the greeting, got {other:?}"),
    }
}

#[tokio::test]
async fn recommended_config_serves_the_page_and_proxies_to_two_instances() -> Result<()> {
    let paths = Paths::get()?;
    let a = Server::start(&paths).await?;
    let b = Server::start(&paths).await?;
    let nginx = recommended_nginx(&paths, "recommended", a.addr, b.addr, &[]).await?;

    // The page, from nginx, talking to the instances through it.
    let browser = Browser::start(&paths).await?;
    browser.client.goto(&nginx.url("/")).await?;
    let shown = browser.wait_for_lines(4, LIMIT).await?;
    assert_eq!(shown[2], lines::received(wire::WELCOME));
    assert_eq!(shown[3], lines::received(&wire::reply(wire::HELLO)));
    browser.close().await?;

    // /ws/ answers through nginx, and new connections spread over both instances.
    let url = format!("ws://{}{}", nginx.addr, wire::WS_PATH);
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(connect(&url).await?);
    }
    sockets[0].send(Message::text("through nginx")).await?;
    match tokio::time::timeout(LIMIT, sockets[0].next()).await? {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "THROUGH NGINX"),
        other => bail!("expected the reply, got {other:?}"),
    }
    for server in [&a, &b] {
        let open = server.metric("ws_connections_open").await?;
        ensure!(open >= 2.0, "least_conn should balance: an instance holds {open} of 5");
    }

    // The hashed .wasm: cached for a year, sent gzipped, as wasm.
    let wasm = wasm_name(&paths.dist)?;
    let (head, body) =
        http_raw(nginx.addr, &request(&format!("/{wasm}"), "Accept-Encoding: gzip\r\n")).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "cache-control"),
        Some("public, max-age=31536000, immutable"),
        "{head}"
    );
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/wasm"), "{head}");
    let raw = std::fs::metadata(paths.dist.join(&wasm))?.len();
    ensure!((body.len() as u64) < raw, "{} compressed bytes for a {raw}-byte file", body.len());

    check_vary(nginx.addr, &paths.dist, &wasm).await?;

    // The page itself is revalidated; health goes to the instances.
    let (head, _) = http_raw(nginx.addr, &request("/", "")).await?;
    assert_eq!(header(&head, "cache-control"), Some("no-cache"), "{head}");
    let (head, body) = http_raw(nginx.addr, &request(wire::HEALTHZ_PATH, "")).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    let (head, _) = http_raw(nginx.addr, &request(wire::METRICS_PATH, "")).await?;
    assert!(head.starts_with("HTTP/1.1 404"), "/metrics is not proxied: {head}");
    Ok(())
}

/// `Vary: Accept-Encoding` from the shipped `gzip_vary on` on every answer for a file with a
/// `.gz`: 200 gzipped or not, 304 by `If-None-Match` and by `If-Modified-Since`, and a range.
/// nginx's `gzip_static` ignores `Range` when it sends the `.gz` (a whole 200); a client that
/// takes no gzip gets its 206 of the plain file.
async fn check_vary(nginx: SocketAddr, dist: &Path, wasm: &str) -> Result<()> {
    let path = format!("/{wasm}");
    let varies = |head: &str| {
        header(head, "vary").is_some_and(|vary| {
            vary.split(',').any(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    };
    for (page, accept) in [("/", "gzip"), ("/", "identity"), (&path, "gzip"), (&path, "identity")] {
        let accept = format!("Accept-Encoding: {accept}\r\n");
        let (head, _) = http_raw(nginx, &request(page, &accept)).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{page} {accept}: {head}");
        assert!(varies(&head), "{page} {accept}: {head}");

        let etag = header(&head, "etag").context("an ETag")?.to_owned();
        let modified = header(&head, "last-modified").context("a Last-Modified")?.to_owned();
        for condition in
            [format!("If-None-Match: {etag}"), format!("If-Modified-Since: {modified}")]
        {
            let extra = format!("{accept}{condition}\r\n");
            let (head, _) = http_raw(nginx, &request(page, &extra)).await?;
            assert!(head.starts_with("HTTP/1.1 304"), "{page} {extra}: {head}");
            assert!(varies(&head), "{page} {extra}: {head}");
        }
    }
    let range = "Range: bytes=0-9\r\n";
    let (head, body) =
        http_raw(nginx, &request(&path, &format!("Accept-Encoding: gzip\r\n{range}"))).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "gzip_static sends the whole .gz: {head}");
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert!(body.len() > 10 && varies(&head), "{head}");
    let (head, body) =
        http_raw(nginx, &request(&path, &format!("Accept-Encoding: identity\r\n{range}"))).await?;
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    let plain = std::fs::read(dist.join(wasm))?;
    let content_range = format!("bytes 0-9/{}", plain.len());
    assert_eq!(header(&head, "content-range"), Some(content_range.as_str()), "{head}");
    assert_eq!(body, plain[..10]);
    assert!(varies(&head), "{head}");
    Ok(())
}

#[test]
fn both_shipped_configurations_send_vary() -> Result<()> {
    let paths = Paths::get()?;
    for file in ["nginx.conf", "nginx-tls.conf"] {
        // `shipped` fails if the line is missing.
        shipped(
            &paths,
            file,
            &[("gzip_static on;", String::new()), ("gzip_vary on;", String::new())],
        )?;
    }
    Ok(())
}

#[tokio::test]
async fn a_quiet_socket_outlives_nginxs_read_timeout_thanks_to_pings() -> Result<()> {
    let paths = Paths::get()?;
    let server =
        Server::start_with(&paths, &["--ping-interval", "500ms", "--idle-timeout", "1500ms"])
            .await?;
    // nginx cuts an upstream connection that sends nothing for 2 s.
    let shorter = [("proxy_read_timeout 75s;", "proxy_read_timeout 2s;".to_owned())];
    let nginx = recommended_nginx(&paths, "idle", server.addr, server.addr, &shorter).await?;
    let mut socket = connect(&format!("ws://{}{}", nginx.addr, wire::WS_PATH)).await?;

    // 8 s of silence from our side: four read timeouts. tungstenite answers each ping.
    let mut pings = 0;
    while pings < 16 {
        match tokio::time::timeout(LIMIT, socket.next()).await? {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => bail!("after {pings} pings, expected another, got {other:?}"),
        }
    }
    socket.send(Message::text("still here")).await?;
    loop {
        match tokio::time::timeout(LIMIT, socket.next()).await? {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Text(text))) => break assert_eq!(text.as_str(), "STILL HERE"),
            other => bail!("expected the reply, got {other:?}"),
        }
    }
    assert_eq!(server.metric("ws_idle_closes_total").await?, 0.0);
    Ok(())
}

/// What one client of the rolling-restart test saw.
#[derive(Debug, Default)]
struct Report {
    connects: usize,
    failed_connects: usize,
    going_away: usize,
    sent: u64,
    answered: BTreeSet<u64>,
}

/// A client that behaves like the page: sends a message every 300 ms, pairs replies, and on a
/// close reconnects at once and resends what was not answered. Stops once told to and every
/// message has its reply.
async fn talk(id: usize, url: String, mut stop: watch::Receiver<bool>) -> Result<Report> {
    let mut report = Report::default();
    let mut unanswered: VecDeque<u64> = VecDeque::new();
    let prefix = format!("C{id} M");
    loop {
        let mut socket = match connect(&url).await {
            Ok(socket) => socket,
            Err(error) => {
                report.failed_connects += 1;
                ensure!(report.failed_connects < 20, "client {id} cannot connect: {error:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        report.connects += 1;
        for n in &unanswered {
            socket.send(Message::text(format!("c{id} m{n}"))).await?;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            if *stop.borrow() && unanswered.is_empty() {
                let _ = socket.close(None).await;
                return Ok(report);
            }
            tokio::select! {
                _ = tick.tick(), if !*stop.borrow() => {
                    let n = report.sent;
                    report.sent += 1;
                    unanswered.push_back(n);
                    if socket.send(Message::text(format!("c{id} m{n}"))).await.is_err() {
                        break;
                    }
                }
                _ = stop.changed() => {}
                frame = tokio::time::timeout(LIMIT, socket.next()) => match frame.context("a reply or close in time")? {
                    Some(Ok(Message::Text(text))) => {
                        let n: u64 = text.strip_prefix(&prefix).and_then(|n| n.parse().ok())
                            .with_context(|| format!("client {id}: unexpected {text}"))?;
                        unanswered.retain(|m| *m != n);
                        report.answered.insert(n);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        if frame.is_some_and(|f| u16::from(f.code) == wire::close::GOING_AWAY) {
                            report.going_away += 1;
                        }
                        // Let tungstenite finish the closing handshake, then reconnect.
                        while let Some(Ok(_)) = socket.next().await {}
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    }
}

#[tokio::test]
async fn a_rolling_restart_loses_no_conversation() -> Result<()> {
    const CLIENTS: usize = 50;
    let paths = Paths::get()?;
    let mut a = Server::start(&paths).await?;
    let b = Server::start(&paths).await?;
    let a_port = a.addr.port();
    let nginx = recommended_nginx(&paths, "rolling", a.addr, b.addr, &[]).await?;
    let url = format!("ws://{}{}", nginx.addr, wire::WS_PATH);

    let (stop, stopped) = watch::channel(false);
    let clients: Vec<_> =
        (0..CLIENTS).map(|id| tokio::spawn(talk(id, url.clone(), stopped.clone()))).collect();
    let open = |a: f64, b: f64| a + b;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let on_a = loop {
        let (on_a, on_b) =
            (a.metric("ws_connections_open").await?, b.metric("ws_connections_open").await?);
        let talked = a.metric("ws_messages_received_total").await?
            + b.metric("ws_messages_received_total").await?;
        if open(on_a, on_b) == CLIENTS as f64 && talked >= 2.0 * CLIENTS as f64 {
            ensure!(on_a > 0.0 && on_b > 0.0, "the clients are not spread: {on_a} / {on_b}");
            break on_a;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{on_a} + {on_b} clients connected, {talked} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Stop instance A as a deployment would: SIGTERM, its clients get 1001 and move to B.
    a.proc.terminate()?;
    let status = a.proc.wait(LIMIT).await?;
    ensure!(status.success(), "instance A exited with {status}");
    b.wait_for_metric("ws_connections_open", CLIENTS as f64, LIMIT).await?;

    // A comes back on its port; new connections reach it again (once nginx's fail_timeout for
    // it has passed).
    let a = Server::start_on(&paths, a_port, &[]).await?;
    let mut probes = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while a.metric("ws_connections_total").await? < 1.0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no new connection reached the restarted instance"
        );
        probes.push(connect(&url).await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    stop.send(true)?;
    let (mut going_away, mut connects, mut messages) = (0, 0, 0);
    for (id, client) in clients.into_iter().enumerate() {
        let report =
            tokio::time::timeout(LIMIT, client).await??.with_context(|| format!("client {id}"))?;
        assert_eq!(report.answered.len() as u64, report.sent, "client {id}: {report:?}");
        assert_eq!(report.failed_connects, 0, "client {id}: a new connection failed: {report:?}");
        going_away += report.going_away;
        connects += report.connects;
        messages += report.sent;
    }
    assert_eq!(going_away as f64, on_a, "every client of A, and only those, got 1001");
    assert_eq!(connects, CLIENTS + going_away, "each moved client reconnected once");
    println!(
        "rolling restart: {going_away} of {CLIENTS} clients moved from A to B, {messages} \
         messages all answered, {} probes until A took new connections again",
        probes.len()
    );
    Ok(())
}
