//! The page's fallback to long polling, in Chromium and in Firefox, behind the shipped nginx
//! (`deploy/nginx.conf`, changed by string substitution only): with the `Upgrade` header
//! dropped on the way, and with a WebSocket endpoint that answers the upgrade and then passes
//! nothing, the echo and the room fall back by themselves, talk, keep the tutorial's lines and
//! say so in their status lines. With the upgrade allowed again (nginx reloaded), both move
//! back to WebSocket without a line, a lost or a repeated message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fantoccini::Locator;
use web::link::FALLBACK_NOTE;
use web::session::lines;
use web::{page, room_page};

use crate::deploy::recommended_nginx;
use crate::support::{Browser, Engine, Paths, Server};

const LIMIT: Duration = Duration::from_secs(30);
/// Long enough for the page's first probe of WebSocket (10 s after it fell back; 30 s more if
/// that one came too early) on a loaded machine.
const MOVE_BACK_LIMIT: Duration = Duration::from_secs(75);
/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

/// The shipped line that passes a WebSocket upgrade on to the instances...
const PASS_UPGRADE: &str = "proxy_set_header Upgrade $realtime_upgrade;";
/// ...and what a proxy that strips `Upgrade` does instead.
const DROP_UPGRADE: &str = "proxy_set_header Upgrade \"\";";
/// Where the shipped config sends `/ws/`.
const WS_LOCATION: &str = "location /ws/ {\n        proxy_pass http://realtime;";

/// What a fresh page logs once the conversation has happened: the tutorial's lines.
fn tutorial_lines() -> Vec<String> {
    vec![
        lines::SUPPORTED.to_owned(),
        lines::OPENED.to_owned(),
        lines::received(wire::WELCOME),
        lines::received(&wire::reply(wire::HELLO)),
    ]
}

fn js_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A JS expression: the element `id`'s text is exactly `text`.
fn text_is(id: &str, text: &str) -> String {
    format!("document.getElementById('{id}').textContent === {}", js_string(text))
}

/// A JS expression: how many of the echo's log lines read exactly `line`.
fn echo_lines_js(line: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#{} p')).filter(p => p.textContent === {}).length",
        page::LOG_ID,
        js_string(line)
    )
}

/// A JS expression: how many of the room's messages read `text`.
fn room_messages_js(text: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#{} p.message span'))\
         .filter(s => s.textContent === {}).length",
        room_page::LOG_ID,
        js_string(text)
    )
}

async fn type_into(browser: &Browser, input: &str, text: &str) -> Result<()> {
    let field = browser.client.find(Locator::Id(input)).await?;
    field.send_keys(&format!("{text}{ENTER}")).await?;
    Ok(())
}

/// Sends `text` from the echo's composer and waits for its reply.
async fn echo(browser: &Browser, text: &str) -> Result<()> {
    type_into(browser, page::INPUT_ID, text).await?;
    let reply = lines::received(&wire::reply(text));
    browser
        .wait_until(
            &format!("answered {text:?}"),
            &format!("{} === 1", echo_lines_js(&reply)),
            LIMIT,
        )
        .await
}

/// Says `text` in the room and waits until it shows, once.
async fn say(browser: &Browser, text: &str) -> Result<()> {
    type_into(browser, room_page::INPUT_ID, text).await?;
    let shown = format!("{} === 1", room_messages_js(text));
    browser.wait_until(&format!("showing {text:?} in the room"), &shown, LIMIT).await
}

/// The room's notes, in order.
async fn room_notes(browser: &Browser) -> Result<Vec<String>> {
    let script = format!(
        "return Array.from(document.querySelectorAll('#{} p.note'), p => p.textContent);",
        room_page::LOG_ID
    );
    browser.eval(&script).await
}

/// Opens the page through nginx and waits until the echo and the room both run over long
/// polling; checks the log is the tutorial's and that the two talk.
async fn falls_back_and_talks(browser: &Browser, url: &str, server: &Server) -> Result<()> {
    browser.client.goto(url).await?;
    let polling = format!("Open ({FALLBACK_NOTE})");
    browser.wait_until("on long polling", &text_is(page::STATUS_ID, &polling), LIMIT).await?;
    browser
        .wait_until(
            "the tutorial's four lines",
            &format!("{} === 1", echo_lines_js(&tutorial_lines()[3])),
            LIMIT,
        )
        .await?;
    assert_eq!(browser.log_lines().await?, tutorial_lines(), "{}", browser.engine.name());
    assert_eq!(browser.status().await?.as_deref(), Some("open"));
    browser
        .wait_until("the room on long polling", &text_is(room_page::STATUS_ID, &polling), LIMIT)
        .await?;

    echo(browser, "over long polling").await?;
    say(browser, "room over long polling").await?;
    // Both ran on polling sessions; no WebSocket reached the server.
    assert_eq!(server.metric("sessions_open{transport=\"polling\"}").await?, 2.0);
    assert_eq!(server.metric("sessions_open{transport=\"websocket\"}").await?, 0.0);
    Ok(())
}

/// The lines the echo shows after [`falls_back_and_talks`], then `more` exchanged.
fn expected_lines(more: &[&str]) -> Vec<String> {
    let mut expected = tutorial_lines();
    for text in ["over long polling"].iter().chain(more) {
        expected.push(format!("{}{text}", lines::SENT));
        expected.push(lines::received(&wire::reply(text)));
    }
    expected
}

async fn upgrade_dropped_falls_back_then_moves_back(engine: Engine) -> Result<()> {
    let paths = Paths::get()?;
    let server = Server::start(&paths).await?;
    let name = format!("fallback-strip-{}", engine.name());
    let drop = [(PASS_UPGRADE, DROP_UPGRADE.to_owned())];
    let nginx = recommended_nginx(&paths, &name, server.addr, server.addr, &drop).await?;
    let browser = Browser::start_engine(&paths, engine).await?;
    falls_back_and_talks(&browser, &nginx.url("/"), &server)
        .await
        .with_context(|| format!("nginx output:\n{}", nginx.proc.output()))?;
    browser.screenshot(&paths, "fallback").await?;

    // The proxy lets the upgrade through again: at its next probe the page moves back, with
    // nothing said, nothing lost and nothing repeated.
    allow_upgrade(&paths, &name, nginx.addr).await?;
    browser
        .wait_until("back on WebSocket", &text_is(page::STATUS_ID, "Open"), MOVE_BACK_LIMIT)
        .await?;
    browser
        .wait_until(
            "the room back on WebSocket",
            &text_is(room_page::STATUS_ID, "Open"),
            MOVE_BACK_LIMIT,
        )
        .await?;
    server.wait_for_metric("sessions_open{transport=\"websocket\"}", 2.0, LIMIT).await?;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while server.metric("sessions_open{transport=\"polling\"}").await? > 0.0 {
        ensure!(tokio::time::Instant::now() < deadline, "the polling sessions were not closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    echo(&browser, "over WebSocket again").await?;
    assert_eq!(browser.log_lines().await?, expected_lines(&["over WebSocket again"]));
    say(&browser, "room over WebSocket again").await?;
    for text in ["room over long polling", "room over WebSocket again"] {
        let count: usize = browser.eval(&format!("return {};", room_messages_js(text))).await?;
        assert_eq!(count, 1, "{}: {text:?} shown once", engine.name());
    }
    // The polling session left the room: only this page is in it, under the probe's name.
    let one = format!(
        "document.getElementById('{}').textContent.startsWith('1 online')",
        room_page::PRESENCE_ID
    );
    browser.wait_until("one online", &one, LIMIT).await?;
    let notes = room_notes(&browser).await?;
    assert_eq!(notes.len(), 1, "only the join: {notes:?}");
    assert!(notes[0].starts_with(web::room::lines::JOINED), "{notes:?}");
    browser.screenshot(&paths, "fallback-moved-back").await?;
    browser.close().await?;
    Ok(())
}

/// Rewrites the running nginx's configuration to pass the upgrade again and reloads it
/// (SIGHUP to the master, whose pid and config live in the prefix `Nginx::start_http` made for
/// `name`); returns once a WebSocket gets through it.
async fn allow_upgrade(paths: &Paths, name: &str, addr: SocketAddr) -> Result<()> {
    let prefix = paths.out.join(format!("nginx-{name}"));
    let conf = prefix.join("nginx.conf");
    let text =
        std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
    ensure!(text.contains(DROP_UPGRADE), "{} does not drop the upgrade", conf.display());
    std::fs::write(&conf, text.replace(DROP_UPGRADE, PASS_UPGRADE))?;
    let pid = std::fs::read_to_string(prefix.join("nginx.pid"))?.trim().to_owned();
    let status = std::process::Command::new("sh")
        .args(["-c", "kill -s HUP \"$0\"", &pid])
        .status()
        .context("kill -s HUP")?;
    ensure!(status.success(), "kill -s HUP {pid}: {status}");
    let url = format!("ws://{addr}{}", wire::WS_PATH);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(&url)).await
        {
            let _ = socket.close(None).await;
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "nginx still refuses the upgrade");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fallback_upgrade_dropped_falls_back_then_moves_back_in_chromium() -> Result<()> {
    upgrade_dropped_falls_back_then_moves_back(Engine::Chromium).await
}

#[tokio::test]
async fn fallback_upgrade_dropped_falls_back_then_moves_back_in_firefox() -> Result<()> {
    upgrade_dropped_falls_back_then_moves_back(Engine::Firefox).await
}

/// A WebSocket endpoint that completes every opening handshake (101) and then sends nothing,
/// as some proxies do; it counts the handshakes. Its sockets stay open until it is dropped.
struct Silent {
    addr: SocketAddr,
    upgraded: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let upgraded = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&upgraded);
        let task = tokio::spawn(async move {
            // Dropped (and every socket with it) when the accept loop is aborted.
            let mut held = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                held.spawn(async move {
                    if let Ok(_socket) = tokio_tungstenite::accept_async(stream).await {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Ok(Self { addr, upgraded, task })
    }

    fn upgraded(&self) -> usize {
        self.upgraded.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upgrade_answered_then_silent_falls_back(engine: Engine) -> Result<()> {
    let paths = Paths::get()?;
    let server = Server::start(&paths).await?;
    let silent = Silent::start().await?;
    let name = format!("fallback-silent-{}", engine.name());
    let to_silent = format!("location /ws/ {{\n        proxy_pass http://{};", silent.addr);
    let extra = [(WS_LOCATION, to_silent)];
    let nginx = recommended_nginx(&paths, &name, server.addr, server.addr, &extra).await?;
    let browser = Browser::start_engine(&paths, engine).await?;
    falls_back_and_talks(&browser, &nginx.url("/"), &server)
        .await
        .with_context(|| format!("nginx output:\n{}", nginx.proc.output()))?;
    // Both sockets were answered with 101 before the page gave up on them.
    ensure!(silent.upgraded() >= 2, "{} upgrades reached the silent endpoint", silent.upgraded());
    echo(&browser, "still long polling").await?;
    assert_eq!(browser.log_lines().await?, expected_lines(&["still long polling"]));
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn fallback_upgrade_answered_then_silent_falls_back_in_chromium() -> Result<()> {
    upgrade_answered_then_silent_falls_back(Engine::Chromium).await
}

#[tokio::test]
async fn fallback_upgrade_answered_then_silent_falls_back_in_firefox() -> Result<()> {
    upgrade_answered_then_silent_falls_back(Engine::Firefox).await
}
