//! HTTP polling under `/poll/` ([`wire::poll`]): the second pump, for clients whose network
//! blocks the WebSocket upgrade. The same [`App`] as over `/ws/` and `/ws/room` (the echo's
//! reply function, the room's hub and mailboxes); only the way bytes reach the peer differs.
//!
//! Each session is one [`pump`] task, the polling twin of [`crate::connection::serve`]: it owns
//! the session's `App` and moves messages between it and the session's queues. The requests
//! only feed it: a POST hands its messages to the pump through a small bounded channel, a GET
//! takes whatever the pump has queued, or waits (at most `--poll-timeout`) until something is.
//! What a peer can make the server hold is bounded at every step:
//! - a POST body is at most `--max-message-size` plus [`BODY_SLACK`], read within
//!   `--handshake-timeout`; a message over the limit gets 413 with the 1009 reason;
//! - the pump takes no more from the channel or the room's mailbox while [`OUT_CAPACITY`]
//!   frames wait for a GET, so a POST then waits (at most `--send-timeout`, then 503), and a
//!   room member is ended by the hub as slow (1013), as over a WebSocket;
//! - a session no request touched for `--idle-timeout` expires; each session holds one of the
//!   `--max-connections` slots, shared with WebSockets.
//!
//! A close (shutdown 1001, slow 1013, reset 1012) is queued as the batch's last item; the pump
//! keeps the session until a GET has taken it, at most [`CLOSE_HANDSHAKE_TIMEOUT`], then
//! forgets it, and every later request gets 404.
//!
//! Frames a GET took are gone from the server: a response lost on the way (the client's network
//! dropped it) loses them, as with any long polling without acknowledgements. The clients cover
//! it the way they cover a dropped WebSocket: the echo resends what was not answered, the room
//! resumes from its last offset in a new session.
//!
//! With several instances behind a proxy, every request of a session must reach the instance
//! that holds it: the session id is in every path, and `deploy/nginx.conf` hashes on it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};
use wire::poll::{Item, Open, Target};
use wire::{close, poll as contract};

use crate::app::{self, Action, App};
use crate::connection::CLOSE_HANDSHAKE_TIMEOUT;
use crate::limits::Slot;
use crate::mailbox::End;
use crate::metrics::{Metrics, PollEnd, PollKind, PollRefusal, Transport};
use crate::origin::OriginRefused;
use crate::ws::RETRY_AFTER_SECONDS;
use crate::AppState;

/// Frames a session may have waiting for a GET before its pump stops taking more: the same
/// as a WebSocket member's mailbox ([`crate::mailbox::CAPACITY`]).
pub const OUT_CAPACITY: usize = crate::mailbox::CAPACITY;
/// POSTed batches waiting for the pump. Small: a POST beyond it waits, which is the
/// back-pressure a WebSocket gets from TCP.
const INBOX_CAPACITY: usize = 4;
/// What a POST body may carry beyond `--max-message-size`: the items' own `m<len>:` and a few
/// more small messages. A client with several large messages sends one POST each.
pub const BODY_SLACK: usize = 4096;

/// Messages a POST carried; who takes them (the pump to handle them, or the POST, giving up,
/// to cancel them: whichever sets it first); and how the pump tells the POST they were handled
/// (their replies queued).
type Batch = (Vec<String>, Arc<AtomicBool>, oneshot::Sender<()>);

/// Every polling session this instance holds, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// Told when the last session is forgotten (see [`Sessions::drained`]).
    emptied: Notify,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.lock().get(sid).cloned()
    }

    /// Forgets `session` (if the id still names it).
    fn remove(&self, session: &Arc<Session>) {
        let mut map = self.lock();
        if map.get(&session.sid).is_some_and(|held| Arc::ptr_eq(held, session)) {
            map.remove(&session.sid);
        }
        if map.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Completes once no session is left. At shutdown the HTTP connections keep serving until
    /// then, so that a client's next GET, already on its way on a kept-alive connection, gets
    /// its session's close (1001) instead of a connection closed under it; each session goes
    /// once its close was taken, or [`CLOSE_HANDSHAKE_TIMEOUT`] after it was queued.
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            let mut emptied = std::pin::pin!(emptied);
            emptied.as_mut().enable();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One session, shared by its pump and its requests.
#[derive(Debug)]
struct Session {
    sid: String,
    inbox: mpsc::Sender<Batch>,
    out: Mutex<Out>,
    /// The pump queued something (or the close): a waiting GET looks again.
    ready: Notify,
    /// A GET took what was queued: a pump that had stopped taking more may go on.
    drained: Notify,
    /// A GET took the close: the pump may forget the session.
    close_taken: Notify,
    /// The client sent DELETE.
    deleted: CancellationToken,
    /// A GET is waiting or being answered (at most one at a time).
    polling: AtomicBool,
}

/// What waits for the next GET.
#[derive(Debug)]
struct Out {
    frames: VecDeque<Utf8Bytes>,
    close: Option<(u16, &'static str)>,
    close_taken: bool,
    /// When a request last began or ended, and how many are under way (the session does not
    /// expire while one is).
    last_request: Instant,
    requests: usize,
}

impl Session {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame; a waiting GET hears of it at [`Session::wake`], once a whole batch or
    /// burst is queued, so that it takes them together.
    fn push(&self, frame: Utf8Bytes) {
        self.out().frames.push_back(frame);
    }

    fn wake(&self) {
        self.ready.notify_one();
    }

    fn queued(&self) -> usize {
        self.out().frames.len()
    }

    fn close(&self, code: u16, reason: &'static str) {
        self.out().close.get_or_insert((code, reason));
        self.ready.notify_one();
    }

    /// Everything queued as one batch (with the close, if it is there); `None` if nothing is;
    /// `Err` if the close was taken already (the session is over).
    fn take_batch(&self) -> Result<Option<(String, usize)>, PollError> {
        let mut out = self.out();
        if out.close_taken {
            return Err(PollError::Unknown);
        }
        if out.frames.is_empty() && out.close.is_none() {
            return Ok(None);
        }
        let size = out.frames.iter().map(|f| contract::message_item_len(f.len())).sum::<usize>();
        let mut batch = String::with_capacity(size + 64);
        let count = out.frames.len();
        for frame in out.frames.drain(..) {
            contract::push_message(&mut batch, &frame);
        }
        if out.frames.capacity() > 8 {
            out.frames.shrink_to(8);
        }
        self.drained.notify_one();
        if let Some((code, reason)) = out.close {
            contract::push_close(&mut batch, code, reason);
            out.close_taken = true;
            self.close_taken.notify_one();
        }
        Ok(Some((batch, count)))
    }

    /// Marks a request under way until the guard drops.
    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        let mut out = self.out();
        out.requests += 1;
        out.last_request = Instant::now();
        RequestGuard(Arc::clone(self))
    }

    /// When the session expires if nothing happens: `idle` after the last request ended, or
    /// `None` while one is under way.
    fn expires_at(&self, idle: Duration) -> Option<Instant> {
        let out = self.out();
        (out.requests == 0).then(|| out.last_request + idle)
    }
}

/// A request under way on a session (see [`Session::begin_request`]).
struct RequestGuard(Arc<Session>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut out = self.0.out();
        out.requests -= 1;
        out.last_request = Instant::now();
    }
}

/// The one GET a session may have waiting; cleared on drop, also when the client goes away
/// mid-wait (hyper drops the handler).
struct PollGuard(Arc<Session>);

impl PollGuard {
    fn take(session: &Arc<Session>) -> Option<Self> {
        (!session.polling.swap(true, Ordering::AcqRel)).then(|| Self(Arc::clone(session)))
    }
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.0.polling.store(false, Ordering::Release);
    }
}

/// Why a polling request was refused; each is one status and a body that says why.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("not a polling path: expected /poll/SID, /poll/SID/echo or /poll/SID/room, where SID is 16 to 64 characters of A-Z a-z 0-9 - _")]
    Path,
    #[error("{0}")]
    Query(wire::room::QueryError),
    #[error("{0}")]
    Batch(contract::BatchError),
    #[error("the body is not valid UTF-8")]
    Utf8,
    #[error("a batch a client sends holds messages only (close with DELETE)")]
    CloseItem,
    #[error("{0}")]
    Origin(#[from] OriginRefused),
    #[error("{}", contract::UNKNOWN_SESSION)]
    Unknown,
    #[error("this path takes {0}")]
    Method(&'static str),
    #[error("{}", contract::POLL_PENDING)]
    Pending,
    #[error("{}", contract::SID_TAKEN)]
    Taken,
    #[error("{0}")]
    TooBig(String),
    #[error("the request body did not arrive within --handshake-timeout")]
    SlowBody,
    #[error(
        "the server has {max} clients connected, its limit (--max-connections); retry in \
         {RETRY_AFTER_SECONDS} s"
    )]
    Full { max: usize },
    #[error("this session has a full queue of replies waiting: GET them, then send more")]
    Backlog,
    #[error("{}; retry in {RETRY_AFTER_SECONDS} s", crate::room::NOT_READY)]
    RoomNotReady,
}

impl PollError {
    fn metric(&self) -> PollRefusal {
        match self {
            Self::Path | Self::Query(_) | Self::Batch(_) | Self::Utf8 | Self::CloseItem => {
                PollRefusal::Malformed
            }
            Self::SlowBody => PollRefusal::Malformed,
            Self::Origin(_) => PollRefusal::Origin,
            Self::Unknown => PollRefusal::Unknown,
            Self::Method(_) => PollRefusal::Method,
            Self::Pending => PollRefusal::Pending,
            Self::Taken => PollRefusal::Taken,
            Self::TooBig(_) => PollRefusal::TooBig,
            Self::Full { .. } | Self::Backlog => PollRefusal::Limit,
            Self::RoomNotReady => PollRefusal::Unready,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Path | Self::Query(_) | Self::Batch(_) | Self::Utf8 | Self::CloseItem => {
                StatusCode::BAD_REQUEST
            }
            Self::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Self::Origin(_) => StatusCode::FORBIDDEN,
            Self::Unknown => StatusCode::NOT_FOUND,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Pending | Self::Taken => StatusCode::CONFLICT,
            Self::TooBig(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Full { .. } | Self::Backlog | Self::RoomNotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

impl IntoResponse for PollError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Method(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Full { .. } | Self::Backlog | Self::RoomNotReady => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

/// Every request under `/poll/`: answered, or refused with a status and a reason. Every answer
/// says how big the request's head was ([`contract::HEADER_REQUEST_HEAD_BYTES`]) and may not be
/// cached.
pub async fn handler(State(state): State<AppState>, request: Request) -> Response {
    let head_bytes = request_head_len(&request);
    let mut response = match serve(&state, request).await {
        Ok(response) => response,
        Err(refusal) => {
            state.metrics.poll_refused(refusal.metric());
            let status = refusal.status().as_u16();
            info!(reason = refusal.metric().as_str(), status, %refusal, "polling request refused");
            refusal.into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert(contract::HEADER_REQUEST_HEAD_BYTES, HeaderValue::from(head_bytes));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The request head's size as HTTP/1.1 carries it: the request line, each header line and
/// the blank line (hyper has parsed it; this adds the lengths back up).
fn request_head_len(request: &Request) -> usize {
    let target = request.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = request.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let headers: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    line + headers + 2
}

async fn serve(state: &AppState, request: Request) -> Result<Response, PollError> {
    let target = contract::parse_path(request.uri().path()).ok_or(PollError::Path)?;
    state.origins.check(request.headers())?;
    let method = request.method().clone();
    match target {
        Target::Open(sid, open) => {
            if method != Method::POST {
                return Err(PollError::Method("POST"));
            }
            let sid = sid.to_owned();
            open_session(state, sid, open, request.uri().query().unwrap_or_default())
        }
        Target::Session(sid) => {
            let session = state.polls.get(sid).ok_or(PollError::Unknown)?;
            match method {
                Method::GET => {
                    let wait = !request
                        .uri()
                        .query()
                        .unwrap_or_default()
                        .split('&')
                        .any(|pair| pair == format!("{}=0", contract::QUERY_WAIT));
                    poll(state, &session, wait).await
                }
                Method::POST => send(state, &session, request.into_body()).await,
                Method::DELETE => {
                    state.metrics.poll_request(PollKind::Close);
                    state.polls.remove(&session);
                    // A GET still waiting (the client's other connection) is answered at once.
                    session.close(close::NORMAL, "");
                    session.deleted.cancel();
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                _ => Err(PollError::Method("GET, POST, DELETE")),
            }
        }
    }
}

/// `POST /poll/SID/echo|room`: a new session with its pump; its greeting waits for a GET.
fn open_session(
    state: &AppState,
    sid: String,
    open: Open,
    query: &str,
) -> Result<Response, PollError> {
    let resume = match open {
        Open::Echo => None,
        Open::Room => {
            let resume = wire::room::parse_query(query).map_err(PollError::Query)?;
            if !state.room.ready() {
                return Err(PollError::RoomNotReady);
            }
            resume
        }
    };
    let slot = state
        .slots
        .try_open(Transport::Polling)
        .ok_or(PollError::Full { max: state.slots.max() })?;
    let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let session = Arc::new(Session {
        sid: sid.clone(),
        inbox,
        out: Mutex::new(Out {
            frames: VecDeque::new(),
            close: None,
            close_taken: false,
            last_request: Instant::now(),
            requests: 0,
        }),
        ready: Notify::new(),
        drained: Notify::new(),
        close_taken: Notify::new(),
        deleted: CancellationToken::new(),
        polling: AtomicBool::new(false),
    });
    match state.polls.lock().entry(sid) {
        Entry::Occupied(_) => return Err(PollError::Taken),
        Entry::Vacant(entry) => {
            entry.insert(Arc::clone(&session));
        }
    }
    state.metrics.poll_request(PollKind::Open);
    let mut app = match open {
        Open::Echo => App::Echo(state.settings.mode),
        Open::Room => {
            let (member, greeting) = state.room.join(resume.as_ref());
            App::Room { member, greeting }
        }
    };
    for frame in app.take_greeting() {
        state.metrics.transport_sent(Transport::Polling, 1);
        session.push(frame);
    }
    session.wake();
    let span = info_span!("poll", id = slot.id, endpoint = ?open);
    let pump = Pump {
        session,
        app,
        inbox: inbox_rx,
        polls: Arc::clone(&state.polls),
        metrics: Arc::clone(&state.metrics),
        idle_timeout: state.config.idle_timeout,
        shutdown: state.shutdown.child_token(),
        _slot: slot,
    };
    state.tracker.spawn(pump.run().instrument(span));
    Ok(StatusCode::CREATED.into_response())
}

/// `GET /poll/SID[?wait=0]`: what is queued, or (long polling) the first thing queued within
/// `--poll-timeout`, or an empty batch.
async fn poll(state: &AppState, session: &Arc<Session>, wait: bool) -> Result<Response, PollError> {
    let _request = session.begin_request();
    let _polling = PollGuard::take(session).ok_or(PollError::Pending)?;
    state.metrics.poll_request(if wait { PollKind::Long } else { PollKind::Short });
    let deadline = Instant::now() + state.config.poll_timeout;
    loop {
        let ready = session.ready.notified();
        let mut ready = std::pin::pin!(ready);
        // Registered before looking, so a push between the look and the wait is not missed.
        ready.as_mut().enable();
        if let Some((batch, count)) = session.take_batch()? {
            debug!(count, bytes = batch.len(), "batch taken");
            return Ok(batch_response(batch));
        }
        if !wait {
            return Ok(batch_response(String::new()));
        }
        tokio::select! {
            () = ready => {}
            () = tokio::time::sleep_until(deadline) => return Ok(batch_response(String::new())),
        }
    }
}

fn batch_response(batch: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], batch).into_response()
}

/// `POST /poll/SID`: the batch's messages, handed to the pump in order.
async fn send(state: &AppState, session: &Arc<Session>, body: Body) -> Result<Response, PollError> {
    let _request = session.begin_request();
    state.metrics.poll_request(PollKind::Send);
    let limit = state.settings.max_message_size;
    let too_big = || PollError::TooBig(close::reason_too_big(limit));
    let body = tokio::time::timeout(
        state.config.handshake_timeout,
        read_body(body, limit + BODY_SLACK, too_big),
    )
    .await
    .map_err(|_| PollError::SlowBody)??;
    let text = std::str::from_utf8(&body).map_err(|_| PollError::Utf8)?;
    let items = contract::decode(text).map_err(PollError::Batch)?;
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Message(text) if text.len() > limit => return Err(too_big()),
            Item::Message(text) => texts.push(text.to_owned()),
            Item::Close(..) => return Err(PollError::CloseItem),
        }
    }
    if texts.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Answered once the pump has handled them: after a 204 their replies are queued, and a 503
    // means they never will be (the batch is taken back if the pump has not started on it).
    let deadline = Instant::now() + state.config.send_timeout;
    let taken = Arc::new(AtomicBool::new(false));
    let (handled, mut done) = oneshot::channel();
    let queued = session.inbox.send((texts, Arc::clone(&taken), handled));
    match tokio::time::timeout_at(deadline, queued).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(PollError::Unknown),
        Err(_) => return Err(PollError::Backlog),
    }
    match tokio::time::timeout_at(deadline, &mut done).await {
        Ok(handled) => handled.map_err(|_| PollError::Unknown)?,
        Err(_) if take(&taken) => return Err(PollError::Backlog),
        // The pump started on it just now: it finishes, and so does this answer.
        Err(_) => done.await.map_err(|_| PollError::Unknown)?,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Takes a batch for whoever asks first (see [`Batch`]).
fn take(taken: &AtomicBool) -> bool {
    taken.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// The body, refused with `too_big` as soon as it passes `limit` bytes.
async fn read_body(
    body: Body,
    limit: usize,
    too_big: impl Fn() -> PollError,
) -> Result<Vec<u8>, PollError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| PollError::SlowBody)?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// One session's task: the pump between its requests and its [`App`].
struct Pump {
    session: Arc<Session>,
    app: App,
    inbox: mpsc::Receiver<Batch>,
    polls: Arc<Sessions>,
    metrics: Arc<Metrics>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    _slot: Slot,
}

/// How a session ends: with a close item for the client, or silently (it went away).
enum Ending {
    Close(PollEnd, u16, &'static str),
    Gone(PollEnd),
}

impl Pump {
    async fn run(mut self) {
        info!("New connection (long polling)");
        let ending = self.pump().await;
        match ending {
            Ending::Close(why, code, reason) => {
                info!(code, reason, "closing the polling session");
                self.session.close(code, reason);
                // Until a GET takes the close (or the client does not come back for it).
                let taken = self.session.close_taken.notified();
                let already = self.session.out().close_taken;
                if !already {
                    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, taken).await;
                }
                self.metrics.poll_ended(why);
            }
            Ending::Gone(why) => {
                info!(why = why.as_str(), "polling session ended");
                self.metrics.poll_ended(why);
            }
        }
        self.polls.remove(&self.session);
    }

    async fn pump(&mut self) -> Ending {
        loop {
            let room = self.session.queued() < OUT_CAPACITY;
            let expiry = self
                .session
                .expires_at(self.idle_timeout)
                .unwrap_or_else(|| Instant::now() + self.idle_timeout);
            let has_mailbox = self.app.has_mailbox();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return Ending::Close(PollEnd::Shutdown, close::GOING_AWAY, close::REASON_SHUTDOWN);
                }
                () = self.session.deleted.cancelled() => return Ending::Gone(PollEnd::Closed),
                pushed = self.app.pushed(), if has_mailbox && room => match pushed {
                    Ok(frame) => {
                        self.forward(frame);
                        while self.session.queued() < OUT_CAPACITY {
                            let Some(frame) = self.app.try_pushed() else { break };
                            self.forward(frame);
                        }
                        self.session.wake();
                    }
                    Err(end) => {
                        let (code, reason) = app::close_for_end(end);
                        let why = match end {
                            End::Slow => PollEnd::Slow,
                            End::Reset => PollEnd::Reset,
                            End::Closed => PollEnd::Shutdown,
                        };
                        return Ending::Close(why, code, reason);
                    }
                },
                batch = self.inbox.recv(), if room => {
                    let Some((texts, taken, handled)) = batch else { return Ending::Gone(PollEnd::Closed) };
                    if !take(&taken) {
                        continue; // its POST gave up and answered 503
                    }
                    let ending = self.received(texts).await;
                    self.session.wake();
                    let _ = handled.send(());
                    if let Some(ending) = ending {
                        return ending;
                    }
                }
                // Full: nothing more is taken until a GET has emptied the queue.
                () = self.session.drained.notified(), if !room => {}
                () = tokio::time::sleep_until(expiry) => {
                    if self.session.expires_at(self.idle_timeout).is_some_and(|at| at <= Instant::now()) {
                        self.metrics.idle_closes.inc();
                        return Ending::Gone(PollEnd::Expired);
                    }
                }
            }
        }
    }

    fn forward(&self, frame: Utf8Bytes) {
        self.metrics.transport_sent(Transport::Polling, 1);
        self.session.push(frame);
    }

    /// The app's answer to each POSTed message, in order.
    async fn received(&mut self, texts: Vec<String>) -> Option<Ending> {
        for text in texts {
            info!(bytes = text.len(), "Message received (long polling)");
            self.metrics.transport_received(Transport::Polling, 1);
            match self.app.respond(Message::text(text)) {
                Action::Send(Message::Text(reply)) => self.forward(reply),
                Action::Publish(text) => {
                    if let Some(refused) = self.app.publish(&text).await {
                        self.forward(refused);
                    }
                }
                Action::Close(code, reason) => {
                    return Some(Ending::Close(PollEnd::Refused, code, reason));
                }
                Action::Send(_) | Action::PeerClosed(_) | Action::Nothing => {}
            }
        }
        None
    }
}
