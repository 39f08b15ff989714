//! Long-polling echo: sessions that each keep one message in flight over HTTP, a POST carrying
//! it and the long-poll GET that is always waiting bringing the reply; a warm-up, then a fixed
//! window in which the server's CPU time is read; every reply checked.
//!
//! Two protocols: ours (`wire::poll`: `POST /poll/SID/echo` opens, `Welcome!` comes by the
//! first GET, messages go as `m<len>:<text>` batches to `POST /poll/SID`, replies come by
//! `GET /poll/SID`) and Socket.IO v5 over Engine.IO v4's polling transport, as a client made
//! with `transports: ["polling"]` speaks it (`GET /socket.io/?EIO=4&transport=polling` answers
//! the open packet `0{"sid":…}`; `POST …&sid=SID` with `40` joins the main namespace, whose
//! `40{…}` comes by GET; events `42["message",text]`; the packets of one payload separated by
//! `\x1e`; ping `2` → pong `3`), against `bench/socketio/echo.js`.
//!
//! Each session has two HTTP/1.1 connections, as a browser's polling client has: one for its
//! GETs, which wait, one for its POSTs.

use std::fmt::Write as _;
use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::ValueEnum;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{cpu, STEP};

/// What the POSTs say they carry, as a browser's `fetch` or XHR of a string does.
const TEXT_PLAIN: &str = "text/plain;charset=UTF-8";
/// Engine.IO v4's separator between the packets of one polling payload.
const RECORD_SEPARATOR: char = '\u{1e}';

/// The wire protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Ours: `--url` is the echo's WebSocket URL (`ws://HOST:PORT/ws/`), whose polling base
    /// (`wire::poll::base_for`) is used, the way the page and the CLI find it.
    Ours,
    /// Socket.IO v5 / Engine.IO v4: `--url` is `http://HOST:PORT/socket.io/?EIO=4&transport=polling`.
    Socketio,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub protocol: Protocol,
    pub url: String,
    pub server_pid: u32,
    pub connections: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Bytes of each message.
    pub size: usize,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct PollingResult {
    protocol: Protocol,
    connections: usize,
    warmup_seconds: f64,
    /// From the start of the window until the last reply to a message sent in it.
    seconds: f64,
    /// Replies to messages sent in the window.
    messages: u64,
    messages_per_second: f64,
    rtt_mean_us: f64,
    rtt_p50_us: u64,
    rtt_p99_us: u64,
    rtt_max_us: u64,
    server_cpu_seconds: f64,
    messages_per_server_cpu_second: f64,
    /// CPU seconds of this process (the load generator) in the window, and as a share of its
    /// core: near 1 means the generator, not the server, set the pace.
    generator_cpu_seconds: f64,
    generator_share: f64,
    /// CPU seconds used by every process but the server and this one during the window.
    others_cpu_seconds: f64,
    /// HTTP requests made for the messages of the window, per message.
    requests_per_message: f64,
    /// Connections the server closed between requests, opened again (not errors).
    reopened: u64,
    /// Wrong or missing replies, failed requests: each stops its session.
    errors: u64,
    first_error: Option<String>,
    /// How long opening every session took, and closing them after the window.
    open_seconds: f64,
    close_seconds: f64,
}

/// One HTTP/1.1 connection, kept alive and opened again if the server closed it between
/// requests.
struct Lane {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
    reopened: u64,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl Lane {
    async fn open(authority: &str) -> Result<Self> {
        let sender = Self::connect(authority).await?;
        Ok(Self { authority: authority.to_owned(), sender, reopened: 0 })
    }

    async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(authority))
            .await
            .context("connect in time")?
            .with_context(|| format!("connect to {authority}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads its whole response.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: String,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.is_closed() {
            self.sender = Self::connect(&self.authority).await?;
            self.reopened += 1;
        }
        self.sender.ready().await.context("connection ready")?;
        let mut request = Request::builder().method(method.clone()).uri(path);
        request = request.header(HOST, &self.authority);
        if method == Method::POST {
            request = request.header(CONTENT_TYPE, TEXT_PLAIN);
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let response = self.sender.send_request(request).await.context("request")?;
        let status = response.status();
        let body = response.into_body().collect().await.context("response body")?.to_bytes();
        Ok((status, body))
    }

    /// [`Lane::request`] within [`STEP`], expecting `want`; the body as text.
    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: String,
        want: StatusCode,
    ) -> Result<String> {
        let what = format!("{method} {path}");
        let (status, body) = tokio::time::timeout(STEP, self.request(method, path, body))
            .await
            .with_context(|| format!("{what}: no answer within {STEP:?}"))?
            .with_context(|| what.clone())?;
        let body =
            String::from_utf8(body.to_vec()).with_context(|| format!("{what}: not UTF-8"))?;
        ensure!(status == want, "{what}: {status}, not {want}: {body:?}");
        Ok(body)
    }
}

/// What one GET brought.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Message(String),
    /// Engine.IO's ping, to answer with a pong.
    Ping,
}

/// Where the server is: what to connect to, and the path before `/poll/` (ours) or the path
/// and query that open a session (Socket.IO).
#[derive(Debug, Clone)]
struct Endpoint {
    authority: String,
    path: String,
}

impl Endpoint {
    fn new(protocol: Protocol, url: &str) -> Result<Self> {
        let http = match protocol {
            Protocol::Ours => wire::poll::base_for(url)
                .with_context(|| format!("{url} is not the echo's WebSocket URL"))?,
            Protocol::Socketio => url.to_owned(),
        };
        let uri: Uri = http.parse().with_context(|| format!("parse {http}"))?;
        ensure!(uri.scheme_str() == Some("http"), "{http}: only http:// is measured");
        let authority = uri.authority().context("no host")?.to_string();
        let path = match protocol {
            Protocol::Ours => uri.path().strip_suffix(wire::poll::PREFIX).unwrap_or("").to_owned(),
            Protocol::Socketio => uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        };
        Ok(Self { authority, path })
    }
}

/// One polling session: its two connections and where its requests go.
#[derive(Debug)]
struct Session {
    protocol: Protocol,
    get: Lane,
    post: Lane,
    /// Where GETs and POSTs go once open.
    path: String,
}

impl Session {
    /// Opens a session and reads what a new one is greeted with.
    async fn open(protocol: Protocol, endpoint: &Endpoint) -> Result<Self> {
        let authority = endpoint.authority.as_str();
        let (mut get, mut post) = (Lane::open(authority).await?, Lane::open(authority).await?);
        let path = match protocol {
            Protocol::Ours => {
                let sid = session_id()?;
                let dir = &endpoint.path;
                let open = format!("{dir}{}", wire::poll::open_path(&sid, wire::poll::Open::Echo));
                post.expect(Method::POST, &open, String::new(), StatusCode::CREATED).await?;
                let path = format!("{dir}{}", wire::poll::session_path(&sid));
                let greeting =
                    get.expect(Method::GET, &path, String::new(), StatusCode::OK).await?;
                let items = wire::poll::decode(&greeting).map_err(|e| anyhow!("{e}"))?;
                ensure!(
                    items == [wire::poll::Item::Message(wire::WELCOME)],
                    "expected {:?} first, got {greeting:?}",
                    wire::WELCOME
                );
                path
            }
            Protocol::Socketio => {
                let opening = endpoint.path.as_str();
                let handshake =
                    get.expect(Method::GET, opening, String::new(), StatusCode::OK).await?;
                let open = handshake
                    .strip_prefix('0')
                    .and_then(|json| serde_json::from_str::<Value>(json).ok())
                    .with_context(|| format!("expected an open packet, got {handshake:?}"))?;
                let sid = open.get("sid").and_then(Value::as_str).context("no sid")?;
                let path = format!("{opening}&sid={sid}");
                // Join the main namespace; its CONNECT answer comes by GET.
                let ok = post.expect(Method::POST, &path, "40".into(), StatusCode::OK).await?;
                ensure!(ok == "ok", "POST answered {ok:?}, not \"ok\"");
                let connect = get.expect(Method::GET, &path, String::new(), StatusCode::OK).await?;
                ensure!(
                    connect.split(RECORD_SEPARATOR).any(|p| p.starts_with("40{")),
                    "expected a CONNECT packet, got {connect:?}"
                );
                path
            }
        };
        Ok(Self { protocol, get, post, path })
    }

    /// Closes the session: `DELETE` (ours), a close packet `1` (Engine.IO).
    async fn close(mut self) -> Result<()> {
        let path = self.path.as_str();
        match self.protocol {
            Protocol::Ours => {
                self.post
                    .expect(Method::DELETE, path, String::new(), StatusCode::NO_CONTENT)
                    .await?;
            }
            Protocol::Socketio => {
                let ok = self.post.expect(Method::POST, path, "1".into(), StatusCode::OK).await?;
                ensure!(ok == "ok", "POST answered {ok:?}, not \"ok\"");
            }
        }
        Ok(())
    }

    /// What the POST of a message is answered with, when all is well.
    fn posted(&self) -> StatusCode {
        match self.protocol {
            Protocol::Ours => StatusCode::NO_CONTENT,
            Protocol::Socketio => StatusCode::OK,
        }
    }

    /// Sends `text` by POST while a GET waits, and reads GETs until its reply `expected` has
    /// come; anything else is an error. Returns the HTTP requests it took.
    async fn round_trip(&mut self, text: &str, expected: &str) -> Result<u64> {
        let body = encode(self.protocol, text);
        let posted = self.posted();
        let (get, post, path) = (&mut self.get, &mut self.post, self.path.as_str());
        let (got, sent) = tokio::join!(
            get.expect(Method::GET, path, String::new(), StatusCode::OK),
            post.expect(Method::POST, path, body, posted),
        );
        let sent = sent?;
        ensure!(
            self.protocol != Protocol::Socketio || sent == "ok",
            "POST answered {sent:?}, not \"ok\""
        );
        let mut requests = 2;
        let mut batch = got?;
        loop {
            let mut replied = false;
            for incoming in decode(self.protocol, &batch)? {
                match incoming {
                    Incoming::Message(reply) if reply == expected && !replied => replied = true,
                    Incoming::Message(reply) => bail!("got {reply:?}, expected {expected:?}"),
                    Incoming::Ping => {
                        let path = self.path.as_str();
                        self.post.expect(Method::POST, path, "3".into(), StatusCode::OK).await?;
                        requests += 1;
                    }
                }
            }
            if replied {
                return Ok(requests);
            }
            batch = self.get.expect(Method::GET, &self.path, String::new(), StatusCode::OK).await?;
            requests += 1;
        }
    }
}

/// The POST body carrying one message.
fn encode(protocol: Protocol, text: &str) -> String {
    match protocol {
        Protocol::Ours => {
            let mut batch = String::with_capacity(wire::poll::message_item_len(text.len()));
            wire::poll::push_message(&mut batch, text);
            batch
        }
        Protocol::Socketio => format!("42{}", json!(["message", text])),
    }
}

/// What a GET's body holds: messages (anything else of ours, a close, is an error) or, from
/// Engine.IO, pings too (its no-op packets are skipped; anything else is an error).
fn decode(protocol: Protocol, body: &str) -> Result<Vec<Incoming>> {
    match protocol {
        Protocol::Ours => wire::poll::decode(body)
            .map_err(|e| anyhow!("{e}: {body:?}"))?
            .into_iter()
            .map(|item| match item {
                wire::poll::Item::Message(text) => Ok(Incoming::Message(text.to_owned())),
                wire::poll::Item::Close(code, reason) => {
                    bail!("the session was closed: {code} {reason}")
                }
            })
            .collect(),
        Protocol::Socketio => body
            .split(RECORD_SEPARATOR)
            .filter(|packet| *packet != "6")
            .map(|packet| {
                if packet == "2" {
                    return Ok(Incoming::Ping);
                }
                let event = packet
                    .strip_prefix("42")
                    .and_then(|json| serde_json::from_str::<Value>(json).ok())
                    .with_context(|| format!("unexpected packet {packet:?}"))?;
                match event.as_array().map(Vec::as_slice) {
                    Some([name, Value::String(text)]) if name == "message" => {
                        Ok(Incoming::Message(text.clone()))
                    }
                    _ => bail!("unexpected event {event}"),
                }
            })
            .collect(),
    }
}

/// A session id from 128 random bits: 32 hex characters.
fn session_id() -> Result<String> {
    let mut bits = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bits))
        .context("read /dev/urandom")?;
    Ok(bits.iter().fold(String::with_capacity(32), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// What one session saw.
#[derive(Debug, Default)]
struct Tally {
    /// Replies to messages sent inside the window.
    replies: u64,
    rtts_us: Vec<u64>,
    /// HTTP requests made for messages sent inside the window.
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    reopened: u64,
}

/// One session's closed loop: a message, its reply, the next, until `deadline`; only what was
/// sent from `counted_from` on is counted. Returns the session, to be closed.
async fn talk(
    c: usize,
    mut session: Session,
    size: usize,
    counted_from: Instant,
    deadline: Instant,
) -> (Tally, Session) {
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let text = crate::message(c, n, size);
        n += 1;
        let expected = wire::reply(&text);
        let sent = Instant::now();
        match session.round_trip(&text, &expected).await {
            Ok(requests) if sent >= counted_from => {
                tally.replies += 1;
                tally.rtts_us.push(sent.elapsed().as_micros() as u64);
                tally.requests += requests;
            }
            Ok(_) => {}
            Err(error) => {
                tally.errors += 1;
                tally.first_error = Some(format!("session {c}: {error:#}"));
                break;
            }
        }
    }
    tally.reopened = session.get.reopened + session.post.reopened;
    (tally, session)
}

/// Opens the plan's sessions, runs them for its warm-up, then measures its window: the
/// server's CPU time from `/proc` at the window's edges, every reply checked.
pub async fn polling(plan: Plan) -> Result<PollingResult> {
    let endpoint = Endpoint::new(plan.protocol, &plan.url)?;
    let opening = Instant::now();
    let mut sessions = Vec::with_capacity(plan.connections);
    for c in 0..plan.connections {
        let session = Session::open(plan.protocol, &endpoint).await;
        sessions
            .push(session.with_context(|| format!("session {} of {}", c + 1, plan.connections))?);
    }
    let open_seconds = opening.elapsed().as_secs_f64();
    let counted_from = Instant::now() + plan.warmup;
    let deadline = counted_from + plan.window;
    // One task per session, as the WebSocket echo does, so that tokio serves them in turn.
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(c, session)| tokio::spawn(talk(c, session, plan.size, counted_from, deadline)))
        .collect();
    tokio::time::sleep_until(counted_from.into()).await;
    let before = cpu::Snapshot::take(plan.server_pid)?;
    let started = Instant::now();
    let mut tallies = Vec::with_capacity(tasks.len());
    let mut sessions = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (tally, session) = task.await.context("a session's task")?;
        tallies.push(tally);
        sessions.push(session);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = cpu::Snapshot::take(plan.server_pid)?;
    // Closed after the window, as a page that leaves does: a session left open would hold
    // the server's shutdown for its grace, waiting for a GET to hand the close to.
    let closing = Instant::now();
    let closed = futures_util::future::join_all(sessions.into_iter().map(Session::close)).await;
    let close_seconds = closing.elapsed().as_secs_f64();
    for (tally, closed) in tallies.iter_mut().zip(closed) {
        if let Err(error) = closed {
            tally.errors += 1;
            tally.first_error.get_or_insert_with(|| format!("closing: {error:#}"));
        }
    }

    let messages: u64 = tallies.iter().map(|t| t.replies).sum();
    let requests: u64 = tallies.iter().map(|t| t.requests).sum();
    let mut rtts: Vec<u64> = tallies.iter().flat_map(|t| t.rtts_us.iter().copied()).collect();
    rtts.sort_unstable();
    let percentile =
        |p: f64| rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let server = after.server_seconds - before.server_seconds;
    let generator = after.own_seconds - before.own_seconds;
    Ok(PollingResult {
        protocol: plan.protocol,
        connections: plan.connections,
        warmup_seconds: plan.warmup.as_secs_f64(),
        seconds,
        messages,
        messages_per_second: messages as f64 / seconds,
        rtt_mean_us: rtts.iter().sum::<u64>() as f64 / rtts.len().max(1) as f64,
        rtt_p50_us: percentile(0.50),
        rtt_p99_us: percentile(0.99),
        rtt_max_us: rtts.last().copied().unwrap_or(0),
        server_cpu_seconds: server,
        messages_per_server_cpu_second: messages as f64 / server.max(0.01),
        generator_cpu_seconds: generator,
        generator_share: generator / seconds,
        others_cpu_seconds: (after.total_seconds - before.total_seconds) - server - generator,
        requests_per_message: requests as f64 / messages.max(1) as f64,
        reopened: tallies.iter().map(|t| t.reopened).sum(),
        errors: tallies.iter().map(|t| t.errors).sum(),
        first_error: tallies.iter().find_map(|t| t.first_error.clone()),
        open_seconds,
        close_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_encoded_as_each_protocol_carries_them() {
        assert_eq!(encode(Protocol::Ours, "hi"), "m2:hi");
        assert_eq!(encode(Protocol::Socketio, "hi"), "42[\"message\",\"hi\"]");
    }

    #[test]
    fn payloads_decode_into_messages_and_pings() {
        let ours = decode(Protocol::Ours, "m2:HIm8:Welcome!").expect("decodes");
        assert_eq!(ours, [Incoming::Message("HI".into()), Incoming::Message("Welcome!".into())]);
        assert!(decode(Protocol::Ours, "c4:1001").is_err());
        let body = "42[\"message\",\"HI\"]\u{1e}2\u{1e}6";
        let theirs = decode(Protocol::Socketio, body).expect("decodes");
        assert_eq!(theirs, [Incoming::Message("HI".into()), Incoming::Ping]);
        assert!(decode(Protocol::Socketio, "42[\"other\",\"HI\"]").is_err());
        assert!(decode(Protocol::Socketio, "1").is_err());
    }

    #[test]
    fn endpoints_come_from_the_urls_the_bench_is_given() {
        let ours = Endpoint::new(Protocol::Ours, "ws://127.0.0.1:9/ws/").expect("ours");
        assert_eq!((ours.authority.as_str(), ours.path.as_str()), ("127.0.0.1:9", ""));
        let url = "http://127.0.0.1:9/socket.io/?EIO=4&transport=polling";
        let theirs = Endpoint::new(Protocol::Socketio, url).expect("Socket.IO");
        assert_eq!(theirs.path, "/socket.io/?EIO=4&transport=polling");
        assert!(Endpoint::new(Protocol::Ours, "ws://127.0.0.1:9/other").is_err());
    }

    #[test]
    fn session_ids_are_what_the_server_accepts() {
        let sid = session_id().expect("random bits");
        assert_eq!(sid.len(), 32);
        assert!(wire::poll::is_sid(&sid));
        assert_ne!(sid, session_id().expect("random bits"));
    }
}
