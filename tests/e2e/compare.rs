//! The Compare view in Chromium and Firefox behind the shipped nginx configuration (two
//! instances): Compare runs the default 50 messages over WebSocket, long polling and short
//! polling, and the table shows WebSocket with fewer HTTP requests and fewer bytes per message
//! than both polling modes. The numbers are printed (and saved as
//! `target/e2e/compare-ENGINE.txt`, the view as `compare-ENGINE.png`); only their order is
//! asserted, never a speed.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::Locator;
use web::compare::{Transport, HEADERS};
use web::compare_page::{RUN_ID, STATUS_ID, TABLE_ID, VIEW_ID};

use crate::deploy::recommended_nginx;
use crate::support::{Browser, Engine, Paths, Server};

/// The page's load, and then all three runs (short polling alone takes 50 intervals of 100 ms).
const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn compare_in_chromium_behind_nginx() -> Result<()> {
    compare(Engine::Chromium).await
}

#[tokio::test]
async fn compare_in_firefox_behind_nginx() -> Result<()> {
    compare(Engine::Firefox).await
}

/// One row of the finished table, as numbers.
#[derive(Debug)]
struct Measured {
    requests: u64,
    bytes_per_message: u64,
}

async fn compare(engine: Engine) -> Result<()> {
    let paths = Paths::get()?;
    let a = Server::start(&paths).await?;
    let b = Server::start(&paths).await?;
    let name = format!("compare-{}", engine.name());
    let nginx = recommended_nginx(&paths, &name, a.addr, b.addr, &[]).await?;
    let browser = Browser::start_engine(&paths, engine).await?;
    browser.client.goto(&nginx.url("/")).await?;
    // The echo's conversation: the page is loaded and its wasm is running.
    browser.wait_for_lines(4, LIMIT).await?;

    browser.client.find(Locator::Id(RUN_ID)).await?.click().await?;
    let status = wait_for_view(&browser, &["done", "failed"]).await?;
    let text: String = browser
        .eval(&format!("return document.getElementById('{STATUS_ID}').textContent;"))
        .await?;
    ensure!(status == "done", "{}: Compare {status}: {text}", engine.name());

    let table: Vec<Vec<String>> = browser
        .eval(&format!(
            "return Array.from(document.querySelectorAll('#{TABLE_ID} tr'), \
             tr => Array.from(tr.children, cell => cell.textContent));"
        ))
        .await?;
    println!("Compare in {} ({text}):", engine.name());
    for row in &table {
        println!("  {}", row.join(" | "));
    }
    std::fs::write(
        paths.out.join(format!("{name}.txt")),
        table.iter().map(|row| row.join(" | ") + "\n").collect::<String>(),
    )?;
    assert_eq!(table.len(), 1 + Transport::ALL.len(), "{table:?}");
    assert_eq!(table[0], HEADERS, "the header row");
    let mut rows = Vec::new();
    for (row, transport) in table[1..].iter().zip(Transport::ALL) {
        assert_eq!(row.len(), HEADERS.len(), "{row:?}");
        assert_eq!(row[0], transport.label());
        for cell in &row[1..] {
            let number: f64 = cell.parse().with_context(|| format!("a number in {row:?}"))?;
            ensure!(number.is_finite() && number >= 0.0, "{row:?}");
        }
        rows.push(Measured { requests: row[4].parse()?, bytes_per_message: row[5].parse()? });
    }
    let [websocket, long, short] = &rows[..] else { bail!("three rows: {rows:?}") };
    assert_eq!(websocket.requests, 1, "one upgrade");
    // Opening the session, the greeting's GET, one POST and one GET per message at least, and
    // the DELETE.
    let at_least = 2 * 50 + 3;
    for polling in [long, short] {
        ensure!(polling.requests >= at_least, "{polling:?}: fewer than {at_least} requests");
        ensure!(websocket.requests < polling.requests, "{websocket:?} vs {polling:?}");
        ensure!(
            websocket.bytes_per_message < polling.bytes_per_message,
            "{websocket:?} vs {polling:?}"
        );
    }

    // The view whole, in the viewport (an element's screenshot is cut at its edge).
    browser.eval::<()>(&format!("document.getElementById('{VIEW_ID}').scrollIntoView();")).await?;
    let view = browser.client.find(Locator::Id(VIEW_ID)).await?;
    let png = view.screenshot().await?;
    ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    std::fs::write(paths.out.join(format!("{name}.png")), png)?;
    browser.close().await?;
    Ok(())
}

/// Polls the view's `data-status` until it is one of `wanted`.
async fn wait_for_view(browser: &Browser, wanted: &[&str]) -> Result<String> {
    let deadline = Instant::now() + LIMIT;
    let script = format!(
        "const v = document.getElementById('{VIEW_ID}'); \
         return [v.dataset.status, document.getElementById('{STATUS_ID}').textContent];"
    );
    loop {
        let (status, text): (String, String) = browser.eval(&script).await?;
        if wanted.contains(&status.as_str()) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("{}: Compare still {status} after {LIMIT:?}: {text}", browser.engine.name());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
