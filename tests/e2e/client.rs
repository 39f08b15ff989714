//! The page as a tool, in Chromium and in Firefox: the composer and round-trip times, markup
//! shown as text, reconnecting with queued messages across a server restart, Disconnect, and
//! the page under a sub-path. Also measures the time from navigation to the greeting.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fantoccini::Locator;
use web::session::lines;

use crate::support::{Browser, Engine, Nginx, Paths, Server};

const LIMIT: Duration = Duration::from_secs(30);
/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

/// The page's log lines, as a JS expression.
const LINES_JS: &str = "Array.from(document.querySelectorAll('#log p'), p => p.textContent)";

fn js_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A JS expression: how many log lines read exactly `line`.
fn count_js(line: &str) -> String {
    format!("{LINES_JS}.filter(t => t === {}).length", js_string(line))
}

async fn count(browser: &Browser, line: &str) -> Result<usize> {
    browser.eval(&format!("return {};", count_js(line))).await
}

/// Types `text` into the composer and presses Enter.
async fn type_and_enter(browser: &Browser, text: &str) -> Result<()> {
    let input = browser.client.find(Locator::Id(web::page::INPUT_ID)).await?;
    input.send_keys(&format!("{text}{ENTER}")).await?;
    Ok(())
}

/// Milliseconds from navigation start to the greeting's line, by the page's own clock; polled
/// as fast as WebDriver answers, so accurate to a few milliseconds.
async fn time_to_welcome(browser: &Browser) -> Result<f64> {
    let welcome = js_string(&lines::received(wire::WELCOME));
    let script = format!("return {LINES_JS}.includes({welcome}) ? performance.now() : null;");
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(ms) = browser.eval::<Option<f64>>(&script).await? {
            return Ok(ms);
        }
        ensure!(Instant::now() < deadline, "no Welcome after {LIMIT:?}");
    }
}

async fn the_page_as_a_tool(engine: Engine) -> Result<()> {
    let paths = Paths::get()?;
    let mut server = Server::start(&paths).await?;
    let port = server.addr.port();
    let browser = Browser::start_engine(&paths, engine).await?;

    browser.client.goto(&server.url("/")).await?;
    let to_welcome = time_to_welcome(&browser).await?;
    let report = format!("{}: navigation to Welcome in {to_welcome:.0} ms\n", engine.name());
    print!("{report}");
    std::fs::write(paths.out.join(format!("time-to-welcome-{}.txt", engine.name())), &report)?;
    let opened = browser.wait_for_lines(4, LIMIT).await?;
    assert_eq!(opened[3], lines::received(&wire::reply(wire::HELLO)));

    // Type and send: the reply comes back with its round-trip time; the field keeps focus.
    type_and_enter(&browser, "hi there").await?;
    let reply = js_string(&lines::received("HI THERE"));
    let reply_rtt = format!(
        "[...document.querySelectorAll('#log p.received')].find(p => p.textContent === {reply})?.dataset.rtt"
    );
    browser.wait_until("answered", &reply_rtt, LIMIT).await?;
    let rtt: String = browser.eval(&format!("return {reply_rtt};")).await?;
    ensure!(rtt.parse::<u32>().is_ok(), "the reply's round-trip time is {rtt:?}");
    assert_eq!(count(&browser, "Message is sent: hi there").await?, 1);
    let focused: String = browser.eval("return document.activeElement.id;").await?;
    assert_eq!(focused, web::page::INPUT_ID, "Enter keeps the focus in the field");
    let caption: String =
        browser.eval("return document.getElementById('rtt-caption').textContent;").await?;
    ensure!(caption.starts_with("Round trips: median "), "chart caption: {caption}");

    // Markup is shown as text and runs nothing.
    let markup = "<img src=x onerror=alert(1)>";
    type_and_enter(&browser, markup).await?;
    let shouted = lines::received(&wire::reply(markup));
    browser.wait_until("shown", &format!("{} === 1", count_js(&shouted)), LIMIT).await?;
    let images: usize =
        browser.eval("return document.querySelectorAll('#log img').length;").await?;
    assert_eq!(images, 0, "markup became an element");
    ensure!(browser.client.get_alert_text().await.is_err(), "an alert is open: the markup ran");
    browser.screenshot(&paths, "open").await?;

    // The server goes away: the page says so and keeps what is typed meanwhile.
    server.proc.terminate()?;
    server.proc.wait(LIMIT).await?;
    let status_is =
        |status: &str| format!("document.getElementById('log').dataset.status === '{status}'");
    browser.wait_until("reconnecting", &status_is("reconnecting"), LIMIT).await?;
    type_and_enter(&browser, "queued one").await?;
    type_and_enter(&browser, "queued two").await?;
    let status_text = "document.getElementById('status').textContent";
    browser
        .wait_until("2 queued", &format!("{status_text}.endsWith(' · 2 queued')"), LIMIT)
        .await?;
    browser.screenshot(&paths, "reconnecting").await?;

    // The server comes back on the same port: the page reconnects by itself and sends both.
    let server = Server::start_on(&paths, port, &[]).await?;
    let both = format!(
        "{} === 1 && {} === 1",
        count_js(&lines::received("QUEUED ONE")),
        count_js(&lines::received("QUEUED TWO"))
    );
    browser.wait_until("both queued messages answered", &both, LIMIT).await?;
    browser.wait_until("open", &status_is("open"), LIMIT).await?;
    for (line, times) in [
        (lines::received(wire::WELCOME), 2),
        ("Message is queued: queued one".to_owned(), 1),
        ("Message is sent: queued one".to_owned(), 1),
        ("Message is sent: queued two".to_owned(), 1),
        (lines::received("HI THERE"), 1),
        (lines::CLOSED.to_owned(), 1),
    ] {
        assert_eq!(count(&browser, &line).await?, times, "{}: {line:?}", engine.name());
    }
    let resent: usize = browser
        .eval(&format!(
            "return {LINES_JS}.filter(t => t.startsWith({})).length;",
            js_string(lines::RESENT)
        ))
        .await?;
    assert_eq!(resent, 0, "everything sent before the restart had been answered");

    // Disconnect stops reconnecting: not even going online or becoming visible brings it back.
    // The page's other socket, the room's, reconnects after the restart on its own schedule:
    // wait until it is back, so the only new connection counted below is the echo's.
    let room_open =
        format!("document.getElementById('{}').dataset.status === 'open'", web::room_page::LOG_ID);
    browser.wait_until("room open again", &room_open, LIMIT).await?;
    let accepted = server.metric("ws_connections_total").await?;
    browser.client.find(Locator::Id(web::page::TOGGLE_ID)).await?.click().await?;
    browser.wait_until("closed", &status_is("closed"), LIMIT).await?;
    let shown: String = browser.eval(&format!("return {status_text};")).await?;
    assert_eq!(shown, "Disconnected");
    browser
        .eval::<serde_json::Value>(
            "window.dispatchEvent(new Event('online')); \
             document.dispatchEvent(new Event('visibilitychange')); return null;",
        )
        .await?;
    browser.client.find(Locator::Id(web::page::TOGGLE_ID)).await?.click().await?;
    browser.wait_until("open again", &status_is("open"), LIMIT).await?;
    server.wait_for_metric("ws_connections_total", accepted + 1.0, LIMIT).await?;
    assert_eq!(
        server.metric("ws_connections_total").await?,
        accepted + 1.0,
        "exactly one new connection: the one Connect asked for"
    );
    browser.screenshot(&paths, "page").await?;

    // At phone width the chart goes under the log, and nothing is wider than the screen.
    browser.client.set_window_size(390, 844).await?;
    let overflow: bool = browser
        .eval("return document.documentElement.scrollWidth > document.documentElement.clientWidth;")
        .await?;
    assert!(!overflow, "{}: the page scrolls sideways at phone width", engine.name());
    browser.screenshot(&paths, "phone").await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_page_as_a_tool_in_chromium() -> Result<()> {
    the_page_as_a_tool(Engine::Chromium).await
}

#[tokio::test]
async fn the_page_as_a_tool_in_firefox() -> Result<()> {
    the_page_as_a_tool(Engine::Firefox).await
}

#[tokio::test]
async fn the_page_under_a_sub_path_finds_its_socket() -> Result<()> {
    let paths = Paths::get()?;
    let server = Server::start(&paths).await?;
    // A proxy that serves the app under /app/ and strips the prefix.
    let location = format!(
        "location /app/ {{
    proxy_pass http://127.0.0.1:{}/;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection \"upgrade\";
    proxy_set_header Host $host;
}}",
        server.addr.port()
    );
    let nginx = Nginx::start(&paths, "sub-path", &location).await?;
    let browser = Browser::start(&paths).await?;
    browser.client.goto(&nginx.url("/app/")).await?;
    let shown = browser.wait_for_lines(4, LIMIT).await.context("the page under /app/")?;
    assert_eq!(shown[2], lines::received(wire::WELCOME));
    type_and_enter(&browser, "from a sub-path").await?;
    let answered = format!("{} === 1", count_js(&lines::received("FROM A SUB-PATH")));
    browser.wait_until("answered", &answered, LIMIT).await?;
    browser.close().await?;
    Ok(())
}
