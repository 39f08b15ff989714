//! The page in a real browser: the tutorial's log lines, exactly and in order.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use web::session::lines;

use crate::support::{free_port, Browser, Nginx, Paths, Proc, Server};

/// Long enough for a loaded CI machine; a passing run takes about a second.
const PAGE_LIMIT: Duration = Duration::from_secs(30);

/// What a fresh load of the page shows once the conversation has happened.
fn expected_open_lines() -> Vec<String> {
    vec![
        lines::SUPPORTED.to_owned(),
        lines::OPENED.to_owned(),
        lines::received(wire::WELCOME),
        lines::received(&wire::reply(wire::HELLO)),
    ]
}

#[tokio::test]
async fn served_page_logs_the_conversation_then_the_close() -> Result<()> {
    let paths = Paths::get()?;
    let mut server = Server::start(&paths).await?;
    let browser = Browser::start(&paths).await?;

    browser.client.goto(&server.url("/")).await?;
    let shown = browser.wait_for_lines(4, PAGE_LIMIT).await?;
    assert_eq!(shown, expected_open_lines());
    assert_eq!(browser.status().await?.as_deref(), Some("open"));

    let png = browser.client.screenshot().await?;
    ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    std::fs::write(paths.out.join("page.png"), png).context("save the screenshot")?;

    // A graceful stop closes the socket with 1001; the page says it is closed, once, and
    // keeps trying to reconnect.
    server.proc.terminate()?;
    let shown = browser.wait_for_lines(5, PAGE_LIMIT).await?;
    assert_eq!(shown[..4], expected_open_lines()[..]);
    assert_eq!(shown[4], lines::CLOSED);
    assert_eq!(shown.len(), 5, "{shown:?}");
    assert_eq!(browser.status().await?.as_deref(), Some("reconnecting"));
    browser.close().await?;

    let status = server.proc.wait(PAGE_LIMIT).await?;
    assert!(status.success(), "server exit: {status}");
    let log = server.proc.output();
    for expected in ["New connection", "New message", "Connection closed", "code=1001"] {
        assert!(log.contains(expected), "server log lacks {expected:?}:\n{log}");
    }
    // Each connection's lines carry its id and the peer's address (the page opens two: the
    // echo and the room).
    for line in
        log.lines().filter(|l| l.contains("New connection") || l.contains("Connection closed"))
    {
        let id = line.split("conn{id=").nth(1).and_then(|rest| rest.split(' ').next());
        assert!(matches!(id, Some("1" | "2")), "{line}");
        assert!(line.contains(" peer=127.0.0.1:"), "{line}");
    }
    Ok(())
}

#[tokio::test]
async fn the_page_stays_connected_across_many_ping_intervals() -> Result<()> {
    let paths = Paths::get()?;
    // Pings every 100 ms; 300 ms without a pong would close the connection.
    let server =
        Server::start_with(&paths, &["--ping-interval", "100ms", "--idle-timeout", "300ms"])
            .await?;
    let browser = Browser::start(&paths).await?;
    browser.client.goto(&server.url("/")).await?;
    assert_eq!(browser.wait_for_lines(4, PAGE_LIMIT).await?, expected_open_lines());

    // Twenty intervals: Chromium answers each ping by itself.
    server.wait_for_metric("ws_pings_sent_total", 20.0, PAGE_LIMIT).await?;
    assert_eq!(browser.log_lines().await?, expected_open_lines(), "nothing closed");
    assert_eq!(browser.status().await?.as_deref(), Some("open"));
    assert_eq!(server.metric("ws_idle_closes_total").await?, 0.0);
    // The page holds two sockets: the echo and the room.
    assert_eq!(server.metric("ws_connections_open").await?, 2.0);
    browser.close().await?;
    Ok(())
}

/// The tutorial's own nginx snippet, verbatim but for the backend's port.
fn tutorial_nginx_snippet(backend_port: u16) -> String {
    format!(
        "location / {{
    proxy_pass http://localhost:{backend_port};
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection \"upgrade\";
    proxy_set_header Host $host;
}}"
    )
}

#[tokio::test]
async fn page_through_the_tutorials_nginx_snippet_on_a_non_default_port() -> Result<()> {
    // `Host $host` drops nginx's port, while the page's Origin keeps it: a same-host check
    // that compares ports (Tornado's) answers 403 here.
    let paths = Paths::get()?;
    let server = Server::start(&paths).await?;
    let nginx =
        Nginx::start(&paths, "tutorial", &tutorial_nginx_snippet(server.addr.port())).await?;
    let browser = Browser::start(&paths).await?;

    browser.client.goto(&nginx.url("/")).await?;
    let shown = browser.wait_for_lines(4, PAGE_LIMIT).await;
    let shown = shown.with_context(|| format!("nginx output:\n{}", nginx.proc.output()))?;
    assert_eq!(shown, expected_open_lines());
    assert_eq!(server.metric("ws_upgrades_refused_total{reason=\"origin\"}").await?, 0.0);
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn page_through_trunk_serve_reaches_the_server_via_its_proxy() -> Result<()> {
    let paths = Paths::get()?;
    let server = Server::start(&paths).await?;
    let trunk = Trunk::start(&paths, server.addr.port()).await?;
    let browser = Browser::start(&paths).await?;

    // Reached as `localhost`: trunk sends the backend `Host: 127.0.0.1` and the browser's host
    // in `X-Forwarded-Host`, so only the forwarded header matches the page's origin.
    browser.client.goto(&trunk.url).await?;
    let shown = browser.wait_for_lines(4, PAGE_LIMIT).await;
    let shown = shown.with_context(|| format!("trunk output:\n{}", trunk.proc.output()))?;
    assert_eq!(shown, expected_open_lines());
    browser.close().await?;
    Ok(())
}

/// `trunk serve` with the workspace's own Trunk.toml, its proxy pointed at the test's server.
struct Trunk {
    proc: Proc,
    url: String,
}

impl Trunk {
    /// Trunk resolves paths from its config file's folder, so the config goes into a scratch
    /// folder that links to the workspace's sources; only the proxy's port is changed.
    async fn start(paths: &Paths, backend_port: u16) -> Result<Self> {
        let dir = paths.out.join("trunk-root");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for name in ["index.html", "web", "wire", "Cargo.toml", "Cargo.lock"] {
            std::os::unix::fs::symlink(paths.root.join(name), dir.join(name))?;
        }
        let config = std::fs::read_to_string(paths.root.join("Trunk.toml"))?;
        let default_backend =
            format!("backend = \"ws://127.0.0.1:{}{}\"", wire::DEFAULT_PORT, wire::WS_PATH);
        ensure!(config.contains(&default_backend), "Trunk.toml lacks `{default_backend}`");
        let config = config.replace(
            &default_backend,
            &format!("backend = \"ws://127.0.0.1:{backend_port}{}\"", wire::WS_PATH),
        );
        std::fs::write(dir.join("Trunk.toml"), config)?;

        let port = free_port()?;
        let mut command = tokio::process::Command::new("trunk");
        command
            .arg("serve")
            .arg("--config")
            .arg(dir.join("Trunk.toml"))
            .args(["--release", "--no-autoreload", "--port", &port.to_string()])
            .env("TRUNK_SKIP_VERSION_CHECK", "true");
        let mut proc = Proc::spawn_group("trunk serve", &mut command)?;
        // Trunk builds first (cargo has the release bundle cached) and then listens.
        proc.wait_for_output(Duration::from_secs(300), |out| {
            out.contains("server listening at").then_some(())
        })
        .await?;
        crate::support::wait_for_port(([127, 0, 0, 1], port).into(), PAGE_LIMIT).await?;
        Ok(Self { proc, url: format!("http://localhost:{port}/") })
    }
}
