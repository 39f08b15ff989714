//! The Room view in Chromium and in Firefox: two pages see each other's messages live, yours
//! marked; with the embedded engine a server restart (a new epoch: it keeps its history in
//! memory) is reported as history that could not be recovered; with two instances on Redis, a
//! page whose server is killed and started again reconnects by itself and shows what it missed.

use std::time::Duration;

use anyhow::{Context, Result};
use fantoccini::Locator;
use web::room::lines;
use web::room_page::{INPUT_ID, LOG_ID, PRESENCE_ID};

use crate::room_redis::{instance, Redis};
use crate::support::{Browser, Engine, Paths, Server};

const LIMIT: Duration = Duration::from_secs(30);
/// WebDriver's Enter key.
const ENTER: &str = "\u{E007}";

fn js_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A JS expression: the room's messages with this text, as `from|mine` strings.
fn messages_js(text: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#{LOG_ID} p.message'))\
         .filter(p => p.querySelector('span').textContent === {})\
         .map(p => p.querySelector('b').textContent + '|' + p.classList.contains('mine'))",
        js_string(text)
    )
}

/// A JS expression: how many of the room's notes read exactly `line`.
fn notes_js(line: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('#{LOG_ID} p.note'))\
         .filter(p => p.textContent === {}).length",
        js_string(line)
    )
}

fn status_is(status: &str) -> String {
    format!("document.getElementById('{LOG_ID}').dataset.status === '{status}'")
}

async fn say(browser: &Browser, text: &str) -> Result<()> {
    let input = browser.client.find(Locator::Id(INPUT_ID)).await?;
    input.send_keys(&format!("{text}{ENTER}")).await?;
    Ok(())
}

/// Waits until the page shows exactly one message `text`, and returns its `from|mine`.
async fn seen(browser: &Browser, text: &str) -> Result<String> {
    let what = format!("showing {text:?}");
    browser.wait_until(&what, &format!("{}.length === 1", messages_js(text)), LIMIT).await?;
    let found: Vec<String> = browser.eval(&format!("return {};", messages_js(text))).await?;
    Ok(found.concat())
}

async fn two_pages_talk_and_a_restart_is_reported(engine: Engine) -> Result<()> {
    let paths = Paths::get()?;
    let mut server = Server::start(&paths).await?;
    let port = server.addr.port();
    let (ann, bob) = (
        Browser::start_engine(&paths, engine).await?,
        Browser::start_engine(&paths, engine).await?,
    );
    for page in [&ann, &bob] {
        page.client.goto(&server.url("/")).await?;
        page.wait_until("in the room", &status_is("open"), LIMIT).await?;
    }
    let presence =
        format!("document.getElementById('{PRESENCE_ID}').textContent.startsWith('2 online')");
    ann.wait_until("two online", &presence, LIMIT).await?;

    // Each sees the other's message live; each sees its own marked.
    say(&ann, "hello from ann").await?;
    let on_ann = seen(&ann, "hello from ann").await?;
    let on_bob = seen(&bob, "hello from ann").await?;
    assert!(on_ann.ends_with("|true"), "{}: ann's own message is marked: {on_ann}", engine.name());
    assert!(on_bob.ends_with("|false"), "{}: not bob's: {on_bob}", engine.name());
    assert_eq!(on_ann.split('|').next(), on_bob.split('|').next(), "the same sender");
    say(&bob, "<b>hi</b> from bob").await?;
    assert!(seen(&ann, "<b>hi</b> from bob").await?.ends_with("|false"));
    let bold: usize =
        ann.eval(&format!("return document.querySelectorAll('#{LOG_ID} span b').length;")).await?;
    assert_eq!(bold, 0, "markup shown as text");
    ann.screenshot(&paths, "room").await?;

    // The server restarts on the same port: a new epoch, whose history cannot hold what the
    // old one had. Both pages reconnect by themselves and say so.
    server.proc.terminate()?;
    server.proc.wait(LIMIT).await?;
    ann.wait_until("reconnecting", &status_is("reconnecting"), LIMIT).await?;
    let _server = Server::start_on(&paths, port, &[]).await?;
    for page in [&ann, &bob] {
        page.wait_until(
            "told the history was reset",
            &format!("{} === 1", notes_js(lines::RESET)),
            LIMIT,
        )
        .await?;
        page.wait_until("back in the room", &status_is("open"), LIMIT).await?;
    }
    say(&bob, "after the restart").await?;
    seen(&ann, "after the restart").await?;
    seen(&ann, "hello from ann").await.context("the old lines stay, once")?;
    ann.close().await?;
    bob.close().await?;
    Ok(())
}

#[tokio::test]
async fn room_two_pages_talk_and_a_restart_is_reported_in_chromium() -> Result<()> {
    two_pages_talk_and_a_restart_is_reported(Engine::Chromium).await
}

#[tokio::test]
async fn room_two_pages_talk_and_a_restart_is_reported_in_firefox() -> Result<()> {
    two_pages_talk_and_a_restart_is_reported(Engine::Firefox).await
}

async fn a_killed_server_restarted_recovers_what_its_page_missed(engine: Engine) -> Result<()> {
    let paths = Paths::get()?;
    let redis = Redis::start(&paths, &format!("page-{}", engine.name())).await?;
    let a = instance(&paths, &redis.url(), 0).await?;
    let a_port = a.addr.port();
    let b = instance(&paths, &redis.url(), 0).await?;
    let (ann, bob) = (
        Browser::start_engine(&paths, engine).await?,
        Browser::start_engine(&paths, engine).await?,
    );
    ann.client.goto(&a.url("/")).await?;
    bob.client.goto(&b.url("/")).await?;
    for page in [&ann, &bob] {
        page.wait_until("in the room", &status_is("open"), LIMIT).await?;
    }
    say(&ann, "before the kill").await?;
    seen(&bob, "before the kill").await?;
    seen(&ann, "before the kill").await?;

    // Ann's server is killed; the room carries on without her, on the other instance.
    drop(a);
    ann.wait_until("reconnecting", &status_is("reconnecting"), LIMIT).await?;
    for text in ["missed one", "missed two"] {
        say(&bob, text).await?;
        seen(&bob, text).await?;
    }
    // Typed while away: sent once she is back and caught up.
    say(&ann, "typed while away").await?;

    // Her server starts again where the page expects it: she reconnects by herself, resumes
    // from her last message, and gets exactly what she missed.
    let _a = instance(&paths, &redis.url(), a_port).await?;
    ann.wait_until("recovered", &format!("{} === 1", notes_js(&lines::recovered(2))), LIMIT)
        .await?;
    seen(&ann, "missed one").await?;
    seen(&ann, "missed two").await?;
    assert!(seen(&bob, "typed while away").await?.ends_with("|false"));
    assert!(seen(&ann, "typed while away").await?.ends_with("|true"));
    let order: Vec<String> = ann
        .eval(&format!(
            "return Array.from(document.querySelectorAll('#{LOG_ID} p.message span'), s => s.textContent);"
        ))
        .await?;
    assert_eq!(order, ["before the kill", "missed one", "missed two", "typed while away"]);
    // The killed instance's member count expires from Redis: presence settles at the two pages.
    let two =
        format!("document.getElementById('{PRESENCE_ID}').textContent.startsWith('2 online')");
    for page in [&ann, &bob] {
        page.wait_until("two online", &two, LIMIT).await?;
    }
    ann.screenshot(&paths, "room-recovered").await?;
    bob.screenshot(&paths, "room-other").await?;
    ann.close().await?;
    bob.close().await?;
    Ok(())
}

#[tokio::test]
async fn room_a_killed_server_restarted_recovers_what_its_page_missed_in_chromium() -> Result<()> {
    a_killed_server_restarted_recovers_what_its_page_missed(Engine::Chromium).await
}

#[tokio::test]
async fn room_a_killed_server_restarted_recovers_what_its_page_missed_in_firefox() -> Result<()> {
    a_killed_server_restarted_recovers_what_its_page_missed(Engine::Firefox).await
}
