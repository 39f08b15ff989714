//! The command-line client over long polling through the shipped `deploy/nginx.conf` in front
//! of two server instances: every request of a session reaches the instance that holds it
//! (nginx hashes on the session id in the path), shown by each instance's own counters; the
//! room across instances through Redis, resume included; and `--transport auto` falling back
//! when nginx is configured to drop `Upgrade`.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use wire::room::Frame;

use crate::deploy::recommended_nginx;
use crate::room_redis::{instance, Redis};
use crate::support::{Paths, Server};

const LIMIT: Duration = Duration::from_secs(30);

/// The `client` binary with its standard streams piped, killed if the test fails; none of the
/// `CLIENT_*` variables leak in from the environment running the tests.
fn client_command(paths: &Paths, args: &[&str]) -> Command {
    let mut command = Command::new(&paths.client_bin);
    command.args(args);
    for name in
        ["CLIENT_URL", "CLIENT_ROOM_URL", "CLIENT_TIMEOUT", "CLIENT_CA_FILE", "CLIENT_TRANSPORT"]
    {
        command.env_remove(name);
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

/// Runs the client to completion with `input` on its standard input.
async fn run_client(paths: &Paths, args: &[&str], input: &str) -> Result<Output> {
    let mut child = client_command(paths, args)
        .spawn()
        .with_context(|| format!("run {} (`cargo build -p client`)", paths.client_bin.display()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    Ok(tokio::time::timeout(LIMIT, child.wait_with_output()).await.context("client exits")??)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One instance's polling counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    open: u64,
    long: u64,
    send: u64,
    close: u64,
    /// Requests for a session this instance does not hold (404).
    unknown: u64,
}

impl Counts {
    async fn of(server: &Server) -> Result<Self> {
        let requests = |kind: &str| format!("poll_requests_total{{kind=\"{kind}\"}}");
        let count = |value: f64| value as u64;
        Ok(Self {
            open: count(server.metric(&requests("open")).await?),
            long: count(server.metric(&requests("long")).await?),
            send: count(server.metric(&requests("send")).await?),
            close: count(server.metric(&requests("close")).await?),
            unknown: count(server.metric("poll_refused_total{reason=\"unknown\"}").await?),
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            open: self.open - before.open,
            long: self.long - before.long,
            send: self.send - before.send,
            close: self.close - before.close,
            unknown: self.unknown - before.unknown,
        }
    }
}

/// What each of the two instances counted while `during` ran.
async fn counted<T>(
    servers: [&Server; 2],
    during: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, [Counts; 2])> {
    let before = [Counts::of(servers[0]).await?, Counts::of(servers[1]).await?];
    let value = during.await?;
    let after = [Counts::of(servers[0]).await?, Counts::of(servers[1]).await?];
    Ok((value, [after[0].since(before[0]), after[1].since(before[1])]))
}

/// Which instance held the one session opened meanwhile; fails unless the other instance saw
/// none of its requests.
fn holder(counts: [Counts; 2]) -> Result<usize> {
    let Some(holder) = counts.iter().position(|c| c.open == 1) else {
        bail!("no instance opened exactly one session: {counts:?}");
    };
    ensure!(
        counts[1 - holder] == Counts::default(),
        "requests reached the other instance: {counts:?}"
    );
    Ok(holder)
}

#[tokio::test]
async fn a_long_polling_session_stays_on_the_instance_that_holds_it() -> Result<()> {
    const MESSAGES: usize = 25;
    let paths = Paths::get()?;
    let a = Server::start(&paths).await?;
    let b = Server::start(&paths).await?;
    let nginx = recommended_nginx(&paths, "client-polling", a.addr, b.addr, &[]).await?;
    let url = format!("ws://{}{}", nginx.addr, wire::WS_PATH);

    let mut held = [0; 2];
    for session in 1..=4 {
        let texts: Vec<String> =
            (1..=MESSAGES).map(|n| format!("session {session}, message {n}: ünïcode ✓")).collect();
        let input: String = texts.iter().map(|text| format!("{text}\n")).collect();
        let args = ["--transport", "long-polling", "--url", &url];
        let (output, counts) = counted([&a, &b], run_client(&paths, &args, &input)).await?;
        ensure!(output.status.success(), "client failed: {}", text(&output.stderr));
        let mut expected = format!("{}\n", wire::WELCOME);
        for text in &texts {
            expected.push_str(&format!("{}\n", wire::reply(text)));
        }
        // Every reply, in order: not one request of this conversation went astray.
        assert_eq!(text(&output.stdout), expected);
        assert_eq!(text(&output.stderr), "");
        let holder = holder(counts)?;
        let own = counts[holder];
        assert_eq!((own.open, own.send, own.close), (1, MESSAGES as u64, 1), "{counts:?}");
        ensure!(own.long >= 1, "no long poll: {counts:?}");
        held[holder] += 1;
    }
    println!("4 polling sessions through nginx, by instance: {held:?}");
    Ok(())
}

/// A member of the room on one instance, over a WebSocket straight to it.
struct Peer {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    you: String,
}

impl Peer {
    async fn join(server: &Server) -> Result<Self> {
        let url = format!("ws://{}{}", server.addr, wire::room::PATH);
        let (socket, _) =
            tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(&url)).await??;
        let mut peer = Self { socket, you: String::new() };
        match peer.frame().await? {
            Frame::Joined { you, .. } => peer.you = you,
            other => bail!("expected joined, got {other:?}"),
        }
        Ok(peer)
    }

    async fn frame(&mut self) -> Result<Frame> {
        loop {
            let message = tokio::time::timeout(LIMIT, self.socket.next())
                .await
                .context("a frame in time")?
                .context("the room closed")??;
            if let Message::Text(text) = message {
                return Ok(Frame::parse(&text)?);
            }
        }
    }

    /// Waits for the message `text` from anyone: its offset and sender.
    async fn hear(&mut self, text: &str) -> Result<(u64, String)> {
        loop {
            if let Frame::Message { offset, from, text: heard, .. } = self.frame().await? {
                if heard == text {
                    return Ok((offset, from));
                }
            }
        }
    }

    /// Publishes `text`; its offset, once it has come back.
    async fn say(&mut self, text: &str) -> Result<u64> {
        self.socket.send(Message::text(text)).await?;
        let (offset, from) = self.hear(text).await?;
        ensure!(from == self.you, "{text:?} came back from {from}");
        Ok(offset)
    }

    fn line(&self, offset: u64, text: &str) -> String {
        format!("{offset} {}: {text}", self.you)
    }
}

async fn next_line<R: AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> Result<String> {
    tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .context("a line in time")??
        .context("the client's output ended")
}

#[tokio::test]
async fn the_room_over_long_polling_spans_instances_through_redis() -> Result<()> {
    let paths = Paths::get()?;
    let redis = Redis::start(&paths, "client-polling").await?;
    let a = instance(&paths, &redis.url(), 0).await?;
    let b = instance(&paths, &redis.url(), 0).await?;
    let nginx = recommended_nginx(&paths, "client-polling-room", a.addr, b.addr, &[]).await?;
    let url = format!("ws://{}{}", nginx.addr, wire::room::PATH);
    let mut on_a = Peer::join(&a).await?;
    let mut on_b = Peer::join(&b).await?;

    let member = async {
        let args = ["room", "--transport", "long-polling", "--url", &url];
        let mut child = client_command(&paths, &args).spawn().context("run the client")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let joined = next_line(&mut stderr).await?;
        let (name, rest) = joined
            .strip_prefix("client: joined as ")
            .and_then(|rest| rest.split_once(" (epoch "))
            .with_context(|| format!("not joined: {joined}"))?;
        let (name, epoch) =
            (name.to_owned(), rest.split(',').next().unwrap_or_default().to_owned());

        // Messages published on either instance reach the polling member, wherever it is.
        let from_a = on_a.say("hello from A").await?;
        assert_eq!(next_line(&mut stdout).await?, on_a.line(from_a, "hello from A"));
        let from_b = on_b.say("hello from B").await?;
        assert_eq!(next_line(&mut stdout).await?, on_b.line(from_b, "hello from B"));

        // And what it publishes reaches both.
        let stdin = child.stdin.as_mut().context("stdin")?;
        stdin.write_all(b"hello from polling\n").await?;
        let (offset, from) = on_a.hear("hello from polling").await?;
        assert_eq!((offset, &from), (on_b.hear("hello from polling").await?.0, &name));
        assert_eq!(next_line(&mut stdout).await?, format!("{offset} {name}: hello from polling"));

        drop(child.stdin.take());
        let status = tokio::time::timeout(LIMIT, child.wait()).await.context("exits")??;
        let mut rest = String::new();
        while let Some(line) = stderr.next_line().await? {
            rest.push_str(&line);
            rest.push('\n');
        }
        ensure!(status.success(), "client room failed: {rest}");
        Ok((epoch, offset))
    };
    let ((epoch, offset), counts) = counted([&a, &b], member).await?;
    let holder = holder(counts)?;
    assert_eq!((counts[holder].send, counts[holder].close), (1, 1), "{counts:?}");
    println!("the polling member was held by instance {}", ["A", "B"][holder]);

    // Away, then back with its resume point: only what it missed, from both instances.
    let missed = [on_a.say("while away, on A").await?, on_b.say("while away, on B").await?];
    let offset = offset.to_string();
    let args = [
        "room",
        "--transport",
        "long-polling",
        "--url",
        &url,
        "--epoch",
        &epoch,
        "--offset",
        &offset,
    ];
    let output = run_client(&paths, &args, "").await?;
    let stderr = text(&output.stderr);
    ensure!(output.status.success(), "resume failed: {stderr}");
    ensure!(stderr.lines().next().is_some_and(|l| l.ends_with(", recovered")), "{stderr}");
    let expected = format!(
        "{}\n{}\n",
        on_a.line(missed[0], "while away, on A"),
        on_b.line(missed[1], "while away, on B")
    );
    assert_eq!(text(&output.stdout), expected);
    Ok(())
}

#[tokio::test]
async fn auto_falls_back_when_nginx_drops_the_upgrade() -> Result<()> {
    let paths = Paths::get()?;
    let a = Server::start(&paths).await?;
    let b = Server::start(&paths).await?;
    // As a proxy that does not know WebSocket: neither header reaches the instances.
    let drop_upgrade = [
        (
            "proxy_set_header Upgrade $realtime_upgrade;",
            "proxy_set_header Upgrade \"\";".to_owned(),
        ),
        (
            "proxy_set_header Connection $realtime_connection;",
            "proxy_set_header Connection \"\";".to_owned(),
        ),
    ];
    let nginx = recommended_nginx(&paths, "client-auto", a.addr, b.addr, &drop_upgrade).await?;
    let url = format!("ws://{}{}", nginx.addr, wire::WS_PATH);

    let refused = run_client(&paths, &["--url", &url, "hi"], "").await?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    ensure!(
        stderr.starts_with("client: error: cannot connect to") && stderr.lines().count() == 1,
        "{stderr}"
    );

    let output =
        run_client(&paths, &["--transport", "auto", "--url", &url, "through nginx"], "").await?;
    let stderr = text(&output.stderr);
    ensure!(output.status.success(), "client failed: {stderr}");
    assert_eq!(text(&output.stdout), format!("{}\nTHROUGH NGINX\n", wire::WELCOME));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    ensure!(stderr.starts_with("client: using long polling (the WebSocket failed: "), "{stderr}");
    Ok(())
}
