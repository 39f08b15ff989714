//! `--transport long-polling` and `--transport auto` against the real server: the same output
//! as over the WebSocket for the echo and the room, the refusals (404, 413, 503, a bad
//! resume point) as one line each, `https://` polling with `--ca-file`, and `auto` falling
//! back behind a [`Proxy`] that blocks the WebSocket the two ways real middleboxes do.
//!
//! The proxy is a few lines of TCP relay rather than nginx, so these tests need nothing but
//! the server: it reads each request's head, and (like a proxy that does not know WebSocket)
//! drops `Upgrade`, or (like one that answers the upgrade and then buffers forever) passes the
//! `101` and nothing after it. It relays one request per connection (`Connection: close`), so
//! the client's reconnecting is exercised too. The end-to-end tests do the same through nginx.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use hyper::StatusCode;
use server::testing::test_config;
use tokio::task::JoinHandle;

use super::*;

/// What the proxy does with a WebSocket upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrades {
    /// Passed on as it came: the WebSocket works.
    Pass,
    /// `Upgrade` and `Connection` dropped: the server sees a plain GET and refuses it.
    Strip,
    /// Passed on, the server's `101` relayed, then nothing in either direction.
    Swallow,
}

/// A TCP relay in front of the server that logs each request line.
struct Proxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    backend: Arc<Mutex<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(backend: SocketAddr, upgrades: Upgrades) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let backend = Arc::new(Mutex::new(backend));
        let target = Arc::clone(&backend);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                let backend = *target.lock().expect("backend");
                tokio::spawn(async move {
                    let _ = relay(inbound, backend, upgrades, log).await;
                });
            }
        });
        Self { addr, requests, backend, task }
    }

    /// Sends every connection from now on to `backend` (as a load balancer does when an
    /// instance is replaced).
    fn point_at(&self, backend: SocketAddr) {
        *self.backend.lock().expect("backend") = backend;
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The request lines seen so far (`POST /poll/…/echo HTTP/1.1`).
    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("log").clone()
    }

    /// How many requests were for `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|line| line.split(' ').nth(1).is_some_and(|path| path.starts_with(prefix)))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads up to and including the blank line that ends a head: the head, and what came after.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(at + 4);
            return Ok((buffer, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buffer.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

async fn relay(
    mut inbound: TcpStream,
    backend: SocketAddr,
    upgrades: Upgrades,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut inbound).await?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n").filter(|line| !line.is_empty());
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<&str> = lines.collect();
    log.lock().expect("log").push(request_line.clone());
    let named = |header: &str, name: &str| {
        header.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
    };
    let upgrade = headers.iter().any(|header| named(header, "upgrade"));
    let mut outbound = TcpStream::connect(backend).await?;
    if upgrade && upgrades != Upgrades::Strip {
        outbound.write_all(head.as_bytes()).await?;
        outbound.write_all(&rest).await?;
        if upgrades == Upgrades::Pass {
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
            return Ok(());
        }
        let (response, _frames) = read_head(&mut outbound).await?;
        inbound.write_all(&response).await?;
        // Both stay open; nothing passes.
        let mut sink = [0u8; 4096];
        let mut other = [0u8; 4096];
        loop {
            tokio::select! {
                n = inbound.read(&mut sink) => if n? == 0 { return Ok(()) },
                n = outbound.read(&mut other) => if n? == 0 { return Ok(()) },
            }
        }
    }
    let mut rewritten = format!("{request_line}\r\n");
    for header in headers {
        if !named(header, "upgrade") && !named(header, "connection") {
            rewritten.push_str(header);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    outbound.write_all(rewritten.as_bytes()).await?;
    outbound.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

const POLLING: [&str; 2] = ["--transport", "long-polling"];

/// `args` with `--transport long-polling` after them.
fn polling<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &POLLING].concat()
}

// --- the echo ---

#[tokio::test]
async fn the_echo_over_long_polling_prints_what_the_websocket_prints() {
    let app = spawn_app().await;
    let url = app.ws_url();
    let arguments = ["--url", &url, "Hello, World", "straße", ""];
    let expected = format!("{}\nHELLO, WORLD\nSTRASSE\n\n", wire::WELCOME);
    let over_ws = client(&arguments, None).await;
    assert_eq!(over_ws.stdout, expected, "stderr: {}", over_ws.stderr);
    let run = client(&polling(&arguments), None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), (expected.as_str(), ""));

    let input = "one\ntwo\n\nthree\n";
    let expected = format!("{}\nONE\nTWO\n\nTHREE\n", wire::WELCOME);
    let over_ws = client(&["--url", &url], Some(input)).await;
    assert_eq!(over_ws.stdout, expected, "stderr: {}", over_ws.stderr);
    let run = client(&polling(&["--url", &url]), Some(input)).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), (expected.as_str(), ""));
}

#[tokio::test]
async fn a_long_conversation_over_polling_goes_by_http_only_and_in_order() {
    let app = spawn_app().await;
    // One request per connection: the client opens a new one for each.
    let proxy = Proxy::start(app.addr, Upgrades::Pass).await;
    let texts: Vec<String> = (1..=60).map(|n| format!("message {n} ünd ✓")).collect();
    let input: String = texts.iter().map(|text| format!("{text}\n")).collect();
    let run = client(&polling(&["--url", &proxy.url(wire::WS_PATH)]), Some(&input)).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let mut expected = format!("{}\n", wire::WELCOME);
    for text in &texts {
        expected.push_str(&wire::reply(text));
        expected.push('\n');
    }
    assert_eq!(run.stdout, expected);
    assert_eq!(proxy.count(wire::WS_PATH), 0, "{:?}", proxy.requests());
    let requests = proxy.requests();
    let session = requests[0]
        .strip_prefix(&format!("POST {}", wire::poll::PREFIX))
        .and_then(|rest| rest.strip_suffix(&format!("/{} HTTP/1.1", wire::poll::OPEN_ECHO)))
        .unwrap_or_else(|| panic!("opened with {:?}", requests[0]));
    assert!(wire::poll::is_sid(session) && session.len() >= 32, "{session}");
    // Every message was one POST to the session, and the conversation ended with a DELETE.
    let own = format!("{} HTTP/1.1", wire::poll::session_path(session));
    assert_eq!(requests.iter().filter(|l| **l == format!("POST {own}")).count(), texts.len());
    assert!(requests.iter().any(|l| *l == format!("GET {own}")), "{requests:?}");
    assert_eq!(requests.iter().filter(|l| **l == format!("DELETE {own}")).count(), 1);
}

#[tokio::test]
async fn each_run_is_a_new_session() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr, Upgrades::Pass).await;
    for _ in 0..2 {
        let run = client(&polling(&["--url", &proxy.url(wire::WS_PATH), "hi"]), None).await;
        assert_eq!(run.stdout, format!("{}\nHI\n", wire::WELCOME), "{}", run.stderr);
    }
    let opens: BTreeSet<String> = proxy
        .requests()
        .into_iter()
        .filter(|line| line.ends_with(&format!("/{} HTTP/1.1", wire::poll::OPEN_ECHO)))
        .collect();
    assert_eq!(opens.len(), 2, "{opens:?}");
}

// --- the room ---

#[tokio::test]
async fn the_room_over_long_polling_prints_history_live_and_its_own_messages() {
    let app = spawn_app().await;
    let mut peer = Peer::join(&app).await;
    let first = peer.say("first").await;

    let mut client = RoomClient::start(&polling(&["--url", &app.room_url()])).await;
    assert_eq!(client.epoch, peer.epoch);
    assert_eq!(client.line().await, peer.line(first, "first"));
    let live = peer.say("live\nand on one line").await;
    assert_eq!(client.line().await, peer.line(live, "live\\nand on one line"));

    client.type_line("from polling").await;
    let (offset, from) = peer.hear("from polling").await;
    assert_eq!(from, client.name);
    assert_eq!(client.line().await, client.own(offset, "from polling"));

    let run = client.finish().await;
    assert_success(&run);
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn room_stdin_over_polling_is_published_and_the_client_exits_once_it_is_back() {
    let app = spawn_app().await;
    let mut peer = Peer::join(&app).await;
    let run =
        client(&polling(&["room", "--url", &app.room_url()]), Some("one\n\ntwo\nthree\n")).await;
    assert_published_one_two_three(&run, &mut peer).await;
}

#[tokio::test]
async fn a_resume_over_polling_prints_only_the_missed_messages() {
    let app = spawn_app().await;
    let mut peer = Peer::join(&app).await;
    let last_seen = peer.say("seen").await.to_string();
    let missed = [peer.say("missed 1").await, peer.say("missed 2").await];

    let args = ["room", "--url", &app.room_url(), "--epoch", &peer.epoch, "--offset", &last_seen];
    let run = client(&polling(&args), Some("")).await;
    assert_success(&run);
    let joined = run.stderr.lines().next().unwrap_or_default();
    assert!(joined.ends_with(", recovered"), "{}", run.stderr);
    let expected =
        format!("{}\n{}\n", peer.line(missed[0], "missed 1"), peer.line(missed[1], "missed 2"));
    assert_eq!(run.stdout, expected);

    let args = ["room", "--url", &app.room_url(), "--epoch", "not.an.epoch", "--offset", "1"];
    let run = client(&polling(&args), None).await;
    let reason = wire::room::QueryError::Epoch.to_string();
    run.assert_one_line_error(&["cannot connect to", "(long polling)", "400", &reason]);
}

// --- auto ---

#[tokio::test]
async fn auto_stays_on_the_websocket_when_it_works() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr, Upgrades::Pass).await;
    let run =
        client(&["--transport", "auto", "--url", &proxy.url(wire::WS_PATH), "hi"], None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        (format!("{}\nHI\n", wire::WELCOME).as_str(), "")
    );
    assert_eq!(proxy.count(wire::poll::PREFIX), 0, "{:?}", proxy.requests());
    assert_eq!(proxy.count(wire::WS_PATH), 1, "{:?}", proxy.requests());
}

#[tokio::test]
async fn auto_falls_back_when_a_proxy_strips_the_upgrade() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr, Upgrades::Strip).await;
    let url = proxy.url(wire::WS_PATH);
    // Without a fallback, the WebSocket is refused.
    let refused = StatusCode::UPGRADE_REQUIRED.as_u16().to_string();
    client(&["--url", &url, "hi"], None)
        .await
        .assert_one_line_error(&["cannot connect to", &refused]);

    let run = client(&["--transport", "auto", "--url", &url, "Hello, World"], None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nHELLO, WORLD\n", wire::WELCOME));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("client: using long polling (the WebSocket failed: "),
        "{}",
        run.stderr
    );
    assert!(proxy.count(wire::poll::PREFIX) >= 3, "{:?}", proxy.requests());

    // The room too, from the environment.
    let mut peer = Peer::join(&app).await;
    let mut command = client_command(&["room", "--url", &proxy.url(wire::room::PATH)]);
    command.env("CLIENT_TRANSPORT", "auto");
    let run = super::run(command, Some("through the fallback\n")).await;
    assert_success(&run);
    assert!(run.stderr.starts_with("client: using long polling"), "{}", run.stderr);
    let (offset, from) = peer.hear("through the fallback").await;
    assert_eq!(run.stdout, format!("{offset} {from}: through the fallback\n"));
}

#[tokio::test]
async fn auto_falls_back_when_the_upgrade_is_answered_but_nothing_passes() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr, Upgrades::Swallow).await;
    let args = ["--transport", "auto", "--url", &proxy.url(wire::WS_PATH), "still here"];
    let run = client(&args, None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nSTILL HERE\n", wire::WELCOME));
    let wait = format!("{:?}", ::client::link::AUTO_WAIT);
    assert!(
        run.stderr.contains(&format!(
            "no message from ws://{}{} within {wait}",
            proxy.addr,
            wire::WS_PATH
        )),
        "{}",
        run.stderr
    );
    assert_eq!(proxy.count(wire::WS_PATH), 1, "{:?}", proxy.requests());
}

#[tokio::test]
async fn auto_with_nothing_listening_names_both_failures() {
    let url = format!("ws://127.0.0.1:{}{}", free_port(), wire::WS_PATH);
    let run = client(&["--transport", "auto", "--url", &url, "hi"], None).await;
    let base = format!(
        "http://127.0.0.1:{}",
        url.split(':').nth(2).and_then(|p| p.split('/').next()).unwrap_or_default()
    );
    run.assert_one_line_error(&[
        "cannot connect to",
        &base,
        "refused",
        "after the WebSocket failed",
    ]);
}

// --- refusals and ends ---

#[tokio::test]
async fn nothing_listening_or_no_endpoint_in_the_url_is_a_one_line_error() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}{}", wire::WS_PATH);
    let run = client(&polling(&["--url", &url, "hi"]), None).await;
    let base = format!("http://127.0.0.1:{port}{}", wire::poll::PREFIX);
    run.assert_one_line_error(&["cannot connect to", &base, "(long polling)", "refused"]);

    let run =
        client(&polling(&["--url", &format!("ws://127.0.0.1:{port}/elsewhere"), "hi"]), None).await;
    run.assert_one_line_error(&["cannot poll beside", "/elsewhere", wire::room::PATH]);
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_with_the_reason_on_both_transports() {
    let limit = 16;
    let app =
        testing::spawn_with(server::Config { max_message_size: limit, ..test_config() }).await;
    let big = "x".repeat(limit + 1);
    let reason = wire::close::reason_too_big(limit);
    let run = client(&polling(&["--url", &app.ws_url(), &big]), None).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stdout, format!("{}\n", wire::WELCOME));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    for needle in ["client: error: the server refused the message", "413", &reason] {
        assert!(run.stderr.contains(needle), "no {needle:?} in {}", run.stderr);
    }
    let run = client(&["--url", &app.ws_url(), &big], None).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(&reason), "{}", run.stderr);
}

#[tokio::test]
async fn a_full_server_is_a_one_line_error_with_retry_after() {
    let config = server::Config { max_connections: Some(1), ..test_config() };
    let app = testing::spawn_with(config).await;
    let _peer = Peer::join(&app).await;
    let run = client(&polling(&["--url", &app.ws_url(), "hi"]), None).await;
    run.assert_one_line_error(&["cannot connect to", "503", "retry after", "--max-connections"]);
}

#[tokio::test]
async fn the_server_going_away_ends_a_polling_conversation_with_its_close() {
    let app = spawn_app().await;
    let mut child = spawn_client(&polling(&["--url", &app.ws_url()]));
    let _stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(next_line(&mut stdout).await.as_deref(), Some(wire::WELCOME));

    app.stop().await;
    let output =
        tokio::time::timeout(STEP, child.wait_with_output()).await.expect("exits").expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let close = format!("{} ({})", wire::close::GOING_AWAY, wire::close::REASON_SHUTDOWN);
    assert!(stderr.contains(&format!("the server closed the connection: {close}")), "{stderr}");
}

#[tokio::test]
async fn a_session_the_server_forgot_ends_like_a_dropped_connection() {
    // A short --poll-timeout, so the waiting GET comes back soon and the next one reaches an
    // instance that never heard of the session (the relay sends it to another server).
    let config = server::Config { poll_timeout: Duration::from_millis(300), ..test_config() };
    let app = testing::spawn_with(config).await;
    let other = testing::spawn_with(test_config()).await;
    let proxy = Proxy::start(app.addr, Upgrades::Pass).await;
    let mut child = spawn_client(&polling(&["--url", &proxy.url(wire::WS_PATH)]));
    let _stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(next_line(&mut stdout).await.as_deref(), Some(wire::WELCOME));
    proxy.point_at(other.addr);

    let output =
        tokio::time::timeout(STEP, child.wait_with_output()).await.expect("exits").expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needle in [
        "the server closed the connection: the polling session is gone",
        "404",
        wire::poll::UNKNOWN_SESSION,
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
    }
}

// --- https:// ---

#[tokio::test]
async fn polling_over_https_trusts_the_ca_file_as_wss_does() {
    let app = spawn_app().await;
    let pki = new_pki();
    let front = spawn_tls_front(Arc::clone(&pki.server), app.addr).await;
    let url = format!("wss://{front}{}", wire::WS_PATH);
    let right = temp_file("ca.pem", &pki.ca_pem);
    let args = ["--url", &url, "--ca-file", right.to_str().expect("utf-8"), "over https"];
    let run = client(&polling(&args), None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nOVER HTTPS\n", wire::WELCOME));

    let run = client(&polling(&["--url", &url, "hi"]), None).await;
    let base = format!("https://{front}{}", wire::poll::PREFIX);
    run.assert_one_line_error(&["cannot connect to", &base, "not trusted", "--ca-file"]);
}
