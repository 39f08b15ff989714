//! The room across instances through a real `redis-server`: two server binaries behind the
//! shipped nginx configuration, an instance killed mid-stream, an instance cut off from Redis
//! and reconnected, Redis stopped and started again with and without its data.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use wire::room::{Frame, Resume};

use crate::deploy::recommended_nginx;
use crate::support::{free_port, http_get, wait_for_port, Paths, Proc, Server};

const LIMIT: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Debian's `redis-server` on a free port, its data in a directory of its own (append-only
/// file, so a graceful stop keeps it); killed when dropped.
pub struct Redis {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    pub async fn start(paths: &Paths, name: &str) -> Result<Self> {
        let dir = paths.out.join(format!("redis-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self { proc: None, port: free_port()?, dir };
        redis.launch().await?;
        Ok(redis)
    }

    async fn launch(&mut self) -> Result<()> {
        let binary = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let mut command = Command::new(&binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            // The append-only file keeps the data across a restart (`stop`). Not fsynced per
            // write: a stopped or killed process's writes are in the page cache and survive
            // it (only a machine crash would lose them), and an fsync per write stalled Redis
            // past the room's 2 s publish timeout ("broker unavailable") while builds kept
            // the disk busy.
            .args(["--appendonly", "yes", "--appendfsync", "no", "--dir"])
            .arg(&self.dir);
        let proc = Proc::spawn("redis-server", &mut command).with_context(|| {
            format!("cannot start {binary:?} (`cargo xtask test` installs Debian's redis-server)")
        })?;
        self.proc = Some(proc);
        wait_for_port(self.addr(), LIMIT).await
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// SIGTERM: Redis writes its append-only file and exits.
    async fn stop(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate()?;
            proc.wait(LIMIT).await?;
        }
        Ok(())
    }

    /// Stopped, its data deleted, and started again on the same port: as after a crash that
    /// lost everything.
    async fn restart_empty(&mut self) -> Result<()> {
        self.stop().await?;
        std::fs::remove_dir_all(&self.dir)?;
        std::fs::create_dir_all(&self.dir)?;
        self.launch().await
    }
}

/// A TCP relay in front of Redis that the test can cut (every relayed connection dropped, new
/// ones closed at once) and restore: one instance losing Redis while the others keep it.
struct Cut {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Cut {
    async fn start(to: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, watch) = tokio::sync::watch::channel(0u64);
        let flag = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if flag.load(Ordering::Acquire) {
                    continue; // dropped: closed at once
                }
                let mut watch = watch.clone();
                // Only a cut after this connection began ends it.
                watch.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.changed() => {}
                    }
                });
            }
        });
        Ok(Self { addr, cut, generation, task })
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn set(&self, cut: bool) {
        self.cut.store(cut, Ordering::Release);
        if cut {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A room server instance on `redis`, with a rate that lets the test publish quickly.
pub async fn instance(paths: &Paths, redis: &str, port: u16) -> Result<Server> {
    let args = ["--redis-url", redis, "--room-rate", "10000", "--shutdown-grace", "1s"];
    let server = Server::start_on(paths, port, &args).await?;
    server.wait_for_metric("room_broker_up", 1.0, LIMIT).await?;
    Ok(server)
}

/// A member of the room: its socket and resume point.
struct Member {
    socket: Socket,
    joined: Frame,
    resume: Option<Resume>,
}

async fn join(addr: SocketAddr, resume: Option<&Resume>) -> Result<Member> {
    let url = format!("ws://{addr}{}", wire::room::path_with_resume(resume));
    let (mut socket, _) =
        tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(&url)).await??;
    let joined = next_frame(&mut socket).await?;
    let Frame::Joined { epoch, offset, .. } = &joined else {
        bail!("expected joined, got {joined:?}")
    };
    let resume = Some(Resume { epoch: epoch.clone(), offset: *offset });
    Ok(Member { socket, joined, resume })
}

/// The next frame (pings skipped), within [`LIMIT`] in all.
async fn next_frame(socket: &mut Socket) -> Result<Frame> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await.context("a frame in time")? {
            Some(Ok(Message::Text(text))) => return Ok(Frame::parse(&text)?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => bail!("expected a frame, got {other:?}"),
        }
    }
}

impl Member {
    /// The next `message` frame as (offset, text), skipping presence; keeps the resume point.
    async fn message(&mut self) -> Result<(u64, String)> {
        loop {
            match next_frame(&mut self.socket).await? {
                Frame::Message { offset, text, .. } => {
                    if let Some(resume) = &mut self.resume {
                        resume.offset = offset;
                    }
                    return Ok((offset, text));
                }
                Frame::Presence { .. } => {}
                other => bail!("expected a message, got {other:?}"),
            }
        }
    }

    /// `n` messages with consecutive offsets from `first`; their texts.
    async fn messages(&mut self, first: u64, n: u64) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for expected in first..first + n {
            let (offset, text) = self.message().await?;
            ensure!(offset == expected, "offset {offset}, expected {expected}: a gap or duplicate");
            texts.push(text);
        }
        Ok(texts)
    }

    /// The next `refused` frame's reason, skipping presence.
    async fn refused(&mut self) -> Result<String> {
        loop {
            match next_frame(&mut self.socket).await? {
                Frame::Refused { reason } => return Ok(reason),
                Frame::Presence { .. } => {}
                other => bail!("expected refused, got {other:?}"),
            }
        }
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        Ok(self.socket.send(Message::text(text)).await?)
    }

    fn epoch(&self) -> String {
        match &self.joined {
            Frame::Joined { epoch, .. } => epoch.clone(),
            _ => String::new(),
        }
    }
}

#[tokio::test]
async fn instances_share_one_order_and_a_killed_instances_clients_recover_on_the_other(
) -> Result<()> {
    let paths = Paths::get()?;
    let redis = Redis::start(&paths, "share").await?;
    let a = instance(&paths, &redis.url(), 0).await?;
    let b = instance(&paths, &redis.url(), 0).await?;
    let nginx = recommended_nginx(&paths, "room", a.addr, b.addr, &[]).await?;

    // Published on A, received on B, in order.
    let mut on_a = join(a.addr, None).await?;
    let mut on_b = join(b.addr, None).await?;
    ensure!(on_a.epoch() == on_b.epoch(), "one epoch for the room");
    for i in 0..20 {
        on_a.send(&format!("a{i}")).await?;
    }
    let seen = on_b.messages(1, 20).await?;
    ensure!(seen == (0..20).map(|i| format!("a{i}")).collect::<Vec<_>>(), "{seen:?}");
    on_a.messages(1, 20).await?;

    // Clients through nginx, spread over both instances by least_conn.
    let mut through = Vec::new();
    for _ in 0..6 {
        through.push(join(nginx.addr, None).await?);
    }
    let on_a_count = a.metric("room_members").await?;
    ensure!(on_a_count >= 3.0, "nginx should put some clients on A ({on_a_count} there)");
    drop(on_a);

    // B publishes a stream; A is killed in the middle of it.
    // Each message is sent once the previous one came back (its acknowledgement), so the
    // publisher's own queue never fills.
    let publisher = tokio::spawn(async move {
        for i in 0..200 {
            on_b.send(&format!("s{i}")).await?;
            on_b.message().await?;
        }
        on_b.send("end").await?;
        anyhow::Ok(on_b)
    });
    let readers: Vec<_> = through
        .into_iter()
        .map(|member| tokio::spawn(follow_until_end(member, nginx.addr)))
        .collect();
    b.wait_for_metric("room_published_total", 50.0, LIMIT).await?;
    drop(a); // SIGKILL, mid-stream
    let mut recovered = 0;
    for reader in readers {
        let (texts, reconnects) = reader.await??;
        let expected: Vec<String> =
            (0..200).map(|i| format!("s{i}")).chain(["end".into()]).collect();
        ensure!(texts == expected, "every message once, in order: {texts:?}");
        recovered += reconnects;
    }
    // A held `on_a` and the rest of its members came through nginx.
    let through_a = on_a_count as usize - 1;
    ensure!(recovered >= through_a, "A's {through_a} clients reconnected ({recovered} reconnects)");
    publisher.await??;
    ensure!(b.metric("room_joins_total{outcome=\"recovered\"}").await? >= through_a as f64);
    Ok(())
}

/// Reads the room through nginx from its first offset until the message `end`, reconnecting
/// with its resume point whenever the connection drops; returns the stream's texts (those
/// published after the first 20) and how many times it reconnected (each must have been
/// `recovered:true`).
async fn follow_until_end(mut member: Member, nginx: SocketAddr) -> Result<(Vec<String>, usize)> {
    let mut texts = Vec::new();
    let mut reconnects = 0;
    let mut last = 0;
    loop {
        match member.message().await {
            Ok((offset, text)) => {
                ensure!(offset == last + 1, "offset {offset} after {last}: a gap or duplicate");
                last = offset;
                let done = text == "end";
                if offset > 20 {
                    texts.push(text);
                }
                if done {
                    return Ok((texts, reconnects));
                }
            }
            Err(_) => {
                ensure!(reconnects < 5, "too many reconnects");
                reconnects += 1;
                let resume = member.resume.clone();
                member = retry_join(nginx, resume.as_ref()).await?;
                let Frame::Joined { recovered, .. } = member.joined else { bail!("joined") };
                ensure!(recovered, "resuming from {resume:?} must recover");
                member.resume = resume;
            }
        }
    }
}

/// Joins, retrying while nginx still sends some attempts to the dead instance.
async fn retry_join(addr: SocketAddr, resume: Option<&Resume>) -> Result<Member> {
    let deadline = Instant::now() + LIMIT;
    loop {
        match join(addr, resume).await {
            Ok(member) => return Ok(member),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_refuses_then_catches_up_by_itself() -> Result<()> {
    let paths = Paths::get()?;
    let redis = Redis::start(&paths, "cut").await?;
    let cut = Cut::start(redis.addr()).await?;
    let a = instance(&paths, &cut.url(), 0).await?;
    let b = instance(&paths, &redis.url(), 0).await?;
    let mut stayer = join(a.addr, None).await?;
    let mut on_b = join(b.addr, None).await?;
    on_b.send("before").await?;
    ensure!(stayer.messages(1, 1).await? == ["before"]);
    on_b.messages(1, 1).await?;

    cut.set(true);
    a.wait_for_metric_below("room_broker_up", 1.0, LIMIT).await?;
    let ready = http_get(a.addr, wire::READYZ_PATH).await?;
    ensure!(ready.contains("room degraded: broker unavailable"), "/readyz: {ready}");
    // The echo is not affected.
    let (mut echo, _) =
        tokio_tungstenite::connect_async(format!("ws://{}{}", a.addr, wire::WS_PATH)).await?;
    ensure!(matches!(echo.next().await, Some(Ok(Message::Text(t))) if t.as_str() == wire::WELCOME));
    echo.send(Message::text("still")).await?;
    ensure!(matches!(echo.next().await, Some(Ok(Message::Text(t))) if t.as_str() == "STILL"));
    // The room refuses, and keeps the member.
    stayer.send("lost?").await?;
    let reason = stayer.refused().await?;
    ensure!(reason == wire::room::REFUSED_BROKER, "{reason}");
    ensure!(a.metric("room_refused_total{reason=\"broker\"}").await? >= 1.0);
    // Meanwhile B publishes.
    for i in 0..5 {
        on_b.send(&format!("meanwhile {i}")).await?;
    }
    on_b.messages(2, 5).await?;

    cut.set(false);
    let missed = stayer.messages(2, 5).await?;
    ensure!(missed == (0..5).map(|i| format!("meanwhile {i}")).collect::<Vec<_>>(), "{missed:?}");
    a.wait_for_metric("room_broker_up", 1.0, LIMIT).await?;
    ensure!(http_get(a.addr, wire::READYZ_PATH).await? == "ready\n");
    stayer.send("back").await?;
    ensure!(on_b.messages(7, 1).await? == ["back"]);
    Ok(())
}

#[tokio::test]
async fn redis_restarted_keeps_the_epoch_and_restarted_empty_makes_a_new_one() -> Result<()> {
    let paths = Paths::get()?;
    let mut redis = Redis::start(&paths, "restart").await?;
    let a = instance(&paths, &redis.url(), 0).await?;
    let mut member = join(a.addr, None).await?;
    let epoch = member.epoch();
    for i in 0..3 {
        member.send(&format!("m{i}")).await?;
    }
    member.messages(1, 3).await?;

    // Stopped: the room refuses and says so; the member stays.
    redis.stop().await?;
    a.wait_for_metric_below("room_broker_up", 1.0, LIMIT).await?;
    member.send("while down").await?;
    ensure!(member.refused().await? == wire::room::REFUSED_BROKER);
    // Started again with its data: the same epoch, and the room works by itself.
    redis.launch().await?;
    a.wait_for_metric("room_broker_up", 1.0, LIMIT).await?;
    member.send("after").await?;
    ensure!(member.messages(4, 1).await? == ["after"]);
    let again = join(a.addr, Some(&Resume { epoch: epoch.clone(), offset: 1 })).await?;
    ensure!(matches!(again.joined, Frame::Joined { recovered: true, .. }), "{:?}", again.joined);

    // Restarted empty: connected members are told to reconnect (1012), and resuming from the
    // old epoch is not a recovery.
    redis.restart_empty().await?;
    loop {
        match tokio::time::timeout(LIMIT, member.socket.next()).await? {
            Some(Ok(Message::Close(Some(close)))) => {
                ensure!(u16::from(close.code) == wire::room::CLOSE_RESET, "{close:?}");
                break;
            }
            Some(Ok(_)) => {}
            other => bail!("expected Close 1012, got {other:?}"),
        }
    }
    let resumed = join(a.addr, Some(&Resume { epoch: epoch.clone(), offset: 4 })).await?;
    match &resumed.joined {
        Frame::Joined { epoch: new, recovered, offset, .. } => {
            ensure!(new != &epoch, "a new epoch after Redis lost its data");
            ensure!(!recovered && *offset == 0, "{:?}", resumed.joined);
        }
        other => bail!("{other:?}"),
    }
    Ok(())
}

impl Server {
    /// Polls `/metrics` until `name` is below `value`.
    async fn wait_for_metric_below(&self, name: &str, value: f64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.metric(name).await?;
            if now < value {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} is still {now} after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
