//! `--transport long-polling`: one session of HTTP long polling ([`wire::poll`]) that carries
//! the same conversation as a WebSocket, for networks that block the upgrade.
//!
//! The polling base comes from `--url` by [`wire::poll::base_for`], as the page finds it:
//! `ws://host/ws/` → `http://host/poll/`, `wss://` → `https://` through the same rustls
//! configuration ([`crate::tls`]), so `--ca-file` trusts and pins exactly as for `wss://`. The
//! session id is 128 bits from the operating system's generator ([`new_sid`]): it is the
//! session's only credential.
//!
//! HTTP is hyper's own HTTP/1.1 client connection (`hyper::client::conn::http1`) over a tokio
//! TCP or rustls stream, not a pooled client: a session needs exactly two connections, one
//! for the long poll that is always waiting (a task of its own, [`read`], which turns batches
//! into [`Event`]s) and one for the POSTs and the DELETE, each kept alive and opened again
//! when the server or a proxy closes it. Everything it needs was already in the build; a
//! pooled client (hyper-util's legacy `Client`) would add a connector for rustls and nothing
//! this needs.
//!
//! Refusals are one line each, with the server's reason: 403 (origin), 409 (a GET already
//! waiting, or the id taken), 413 (a message over the server's limit), 503 (the server is
//! full, with its `Retry-After`). A 404 means the session is gone (expired, or the server lost
//! it): the conversation ends as when a WebSocket drops, after what had already arrived.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::Uri;
use wire::poll::{Item, Open};

use crate::{describe_close, one_line, tls, Connection};

/// Largest batch (response body) read: a room's history on resume can be many messages of up
/// to 64 KiB each. The same cap as tungstenite's default for one WebSocket message.
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Items the reader may hold before it waits for the conversation to take them (and so stops
/// polling: the server then queues, and ends a room member that falls too far behind, as it
/// would over a WebSocket).
const EVENTS: usize = 256;
/// How long a DELETE after a failure may take before the client leaves anyway.
const ABANDON_WAIT: Duration = Duration::from_secs(1);

/// What the long poll brought.
#[derive(Debug)]
enum Event {
    Text(String),
    /// A close item: the server ended the session (the last event).
    Closed(u16, String),
    /// The session is gone or the connection failed (the last event).
    Failed(anyhow::Error),
}

/// An open polling session.
#[derive(Debug)]
pub struct Session {
    target: Arc<Target>,
    /// POSTs and the DELETE.
    http: Http,
    /// `/poll/SID`, under the endpoint's directory.
    path: String,
    events: mpsc::Receiver<Event>,
    reader: JoinHandle<()>,
    timeout: Duration,
    /// A POST found the session gone: why, once the texts already read are taken.
    gone: Option<anyhow::Error>,
}

impl Session {
    /// Opens a session for `open` (echo or room) beside the WebSocket endpoint `url`; the
    /// URL's query (the room's resume point) goes with the opening request. `--timeout`
    /// bounds TCP, TLS and the answer; the first long poll starts at once.
    pub async fn open(url: &Uri, open: Open, connection: &Connection) -> anyhow::Result<Self> {
        let target = Arc::new(Target::new(url, connection)?);
        let timeout = connection.timeout;
        let query = url.query().map(|query| format!("?{query}")).unwrap_or_default();
        let opening = async {
            let sid = new_sid()?;
            let mut http = Http { target: Arc::clone(&target), sender: None };
            let path = format!("{}{}{query}", target.dir, wire::poll::open_path(&sid, open));
            let answer = http.request(Method::POST, &path, String::new()).await?;
            if answer.status != StatusCode::CREATED {
                bail!("{}", answer.refusal());
            }
            anyhow::Ok((sid, http))
        };
        let (sid, http) = tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out after {timeout:?}")))
            .with_context(|| format!("cannot connect to {} (long polling)", target.base))?;
        let path = format!("{}{}", target.dir, wire::poll::session_path(&sid));
        let (tx, events) = mpsc::channel(EVENTS);
        let reader = Http { target: Arc::clone(&target), sender: None };
        // The server answers a long poll within its --poll-timeout (25 s unless changed); more
        // than that plus --timeout is a connection that died without a word.
        let deadline = Duration::from_secs(wire::poll::DEFAULT_TIMEOUT_SECS) + timeout;
        let reader = tokio::spawn(read(reader, path.clone(), tx, deadline));
        Ok(Self { target, http, path, events, reader, timeout, gone: None })
    }

    /// Sends one message (a batch of one) and waits for the server to take it; its reply
    /// comes through the long poll.
    pub async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        if let Some(gone) = self.gone.take() {
            return Err(gone);
        }
        let mut batch = String::with_capacity(wire::poll::message_item_len(text.len()));
        wire::poll::push_message(&mut batch, text);
        let answer = self.request(Method::POST, batch).await.context("cannot send")?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            // What the long poll already brought comes first, then this ([`Session::next`]).
            StatusCode::NOT_FOUND => {
                self.gone = Some(gone(&answer));
                Ok(())
            }
            _ => bail!("the server refused the message: {}", answer.refusal()),
        }
    }

    /// The next text; an error once the session has ended. Cancel-safe.
    pub async fn next(&mut self) -> anyhow::Result<String> {
        let event = if self.gone.is_some() {
            match self.events.try_recv() {
                Ok(event) => event,
                Err(_) => return Err(self.gone.take().unwrap_or_else(ended)),
            }
        } else {
            self.events.recv().await.ok_or_else(ended)?
        };
        match event {
            Event::Text(text) => Ok(text),
            Event::Closed(code, reason) => {
                bail!("the server closed the connection: {}", describe_close(code, &reason))
            }
            Event::Failed(error) => Err(error),
        }
    }

    /// DELETE, then hands over the texts the long poll had already brought. The long poll
    /// still waiting is dropped (which closes its connection; the server forgets it).
    pub async fn close(
        &mut self,
        timeout: Duration,
        mut on_text: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deleting = tokio::time::timeout(timeout, self.delete());
        let answer = deleting
            .await
            .map_err(|_| anyhow!("the server did not answer DELETE within {timeout:?}"))?
            .context("cannot close the session")?;
        self.reader.abort();
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Text(text) => on_text(&text)?,
                Event::Closed(code, reason) if code != wire::close::NORMAL => {
                    bail!("the server closed the connection: {}", describe_close(code, &reason))
                }
                Event::Closed(..) | Event::Failed(_) => {}
            }
        }
        match answer.status {
            // 404: it was gone already (a close would have been among the events).
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => bail!("the server refused to close the session: {}", answer.refusal()),
        }
    }

    /// DELETE without waiting long or looking at the answer: after a failure, so the server
    /// frees the session now rather than after its idle timeout.
    pub async fn abandon(mut self) {
        self.reader.abort();
        let _ = tokio::time::timeout(ABANDON_WAIT, self.delete()).await;
    }

    async fn delete(&mut self) -> anyhow::Result<Answer> {
        self.request(Method::DELETE, String::new()).await
    }

    async fn request(&mut self, method: Method, body: String) -> anyhow::Result<Answer> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.http.request(method, &self.path, body))
            .await
            .map_err(|_| anyhow!("no answer from {} within {timeout:?}", self.target.base))?
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn ended() -> anyhow::Error {
    anyhow!("the server closed the connection")
}

/// The error for a 404: the session is gone, as if its connection had dropped.
fn gone(answer: &Answer) -> anyhow::Error {
    anyhow!("the server closed the connection: the polling session is gone ({})", answer.refusal())
}

/// The session's long poll, until the session ends: one GET after the other, each batch's
/// items handed over in order.
async fn read(mut http: Http, path: String, events: mpsc::Sender<Event>, deadline: Duration) {
    loop {
        let polling =
            tokio::time::timeout(deadline, http.request(Method::GET, &path, String::new()));
        let answer = match polling.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                let _ = events.send(Event::Failed(error.context("connection failed"))).await;
                return;
            }
            Err(_) => {
                let error = anyhow!(
                    "connection failed: no answer to a long poll within {deadline:?} (the \
                     server answers within its --poll-timeout, {} s by default)",
                    wire::poll::DEFAULT_TIMEOUT_SECS
                );
                let _ = events.send(Event::Failed(error)).await;
                return;
            }
        };
        let failure = match answer.status {
            StatusCode::OK => None,
            StatusCode::NOT_FOUND => Some(gone(&answer)),
            _ => Some(anyhow!("the server refused a long poll: {}", answer.refusal())),
        };
        if let Some(error) = failure {
            let _ = events.send(Event::Failed(error)).await;
            return;
        }
        let items = match wire::poll::decode(&answer.body) {
            Ok(items) => items,
            Err(error) => {
                let error =
                    anyhow!("unreadable batch from the server ({error}): {:.200}", answer.body);
                let _ = events.send(Event::Failed(error)).await;
                return;
            }
        };
        for item in items {
            let (event, last) = match item {
                Item::Message(text) => (Event::Text(text.to_owned()), false),
                Item::Close(code, reason) => (Event::Closed(code, reason.to_owned()), true),
            };
            if events.send(event).await.is_err() || last {
                return;
            }
        }
    }
}

/// A fresh session id: 128 bits from the operating system's generator, as 32 hex digits.
pub fn new_sid() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow!("cannot make a session id: no random bytes ({error})"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Where the polling requests go.
#[derive(Debug)]
struct Target {
    /// `http://host:port/dir/poll/`, for messages.
    base: String,
    /// The host to connect to (an IPv6 address without its brackets) and its port.
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The path before `/poll/` (empty unless the endpoint is under a sub-path).
    dir: String,
    /// For `https://`: the rustls configuration and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Target {
    fn new(url: &Uri, connection: &Connection) -> anyhow::Result<Self> {
        let base = wire::poll::base_for(&url.to_string()).with_context(|| {
            format!(
                "cannot poll beside {url}: long polling needs a --url whose path ends in {}, {} \
                 or {} (the polling path sits beside it)",
                wire::WS_PATH,
                wire::WS_PATH_NO_SLASH,
                wire::room::PATH
            )
        })?;
        let uri: Uri = base.parse().with_context(|| format!("not a URL: {base}"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let dir = uri.path().strip_suffix(wire::poll::PREFIX).unwrap_or_default().to_owned();
        let tls = if https {
            let config = tls::client_config(connection.ca_file.as_deref())?;
            let name = ServerName::try_from(host.to_owned())
                .with_context(|| format!("not a host name for TLS: {host}"))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Self { base, host: host.to_owned(), port, authority, dir, tls })
    }
}

/// An answer, read whole.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    /// A refusal as one line: `HTTP error: 503 Service Unavailable (retry after 1 s): REASON`.
    fn refusal(&self) -> String {
        let mut line = format!("HTTP error: {}", self.status);
        if let Some(seconds) = &self.retry_after {
            line.push_str(&format!(" (retry after {seconds} s)"));
        }
        let body = one_line(self.body.as_bytes());
        if !body.is_empty() {
            line.push_str(": ");
            line.push_str(&body);
        }
        line
    }
}

/// One HTTP/1.1 connection to the target, opened when first needed and again whenever the
/// server (or a proxy) has closed it.
#[derive(Debug)]
struct Http {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.target.authority)
            .header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))
            .body(Full::new(Bytes::from(body)))
            .context("cannot build the request")?;
        // Twice at most: a kept-alive connection may turn out closed just as the request goes,
        // and hyper hands back a request it has not sent.
        let mut fresh = false;
        let response = loop {
            let mut sender = match self.sender.take() {
                Some(sender) => sender,
                None => {
                    fresh = true;
                    connect(&self.target).await?
                }
            };
            if sender.ready().await.is_err() {
                fresh = true;
                sender = connect(&self.target).await?;
                sender.ready().await.context("the connection closed at once")?;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.sender = Some(sender);
                    break response;
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !fresh => {
                        request = unsent;
                        fresh = true;
                    }
                    _ => return Err(error.into_error().into()),
                },
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_BATCH_BYTES)
            .collect()
            .await
            .map_err(|error| anyhow!("cannot read the answer: {error}"))?
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).context("the answer is not UTF-8")?;
        Ok(Answer { status, retry_after, body })
    }
}

/// A new connection to the target, over TLS for `https://`, with its driver spawned.
async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|error| anyhow!("IO error: {error}"))?;
    // No Nagle delay: the messages are small and the replies awaited one by one.
    tcp.set_nodelay(true)?;
    match &target.tls {
        None => handshake(tcp).await,
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let stream = connector.connect(name.clone(), tcp).await.map_err(|error| {
                anyhow!(tls::explain_connect(&error).unwrap_or_else(|| error.to_string()))
            })?;
            handshake(stream).await
        }
    }
}

async fn handshake<T>(io: T) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake failed")?;
    // Ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        Connection {
            timeout: Duration::from_secs(1),
            ca_file: None,
            transport: crate::Transport::LongPolling,
        }
    }

    #[test]
    fn session_ids_are_valid_and_fresh() {
        let (a, b) = (new_sid().expect("sid"), new_sid().expect("sid"));
        assert!(wire::poll::is_sid(&a), "{a}");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn the_target_sits_beside_the_websocket_endpoint() {
        let url: Uri = "ws://127.0.0.1:8888/ws/room?epoch=e&offset=1".parse().expect("uri");
        let target = Target::new(&url, &connection()).expect("target");
        assert_eq!(target.base, "http://127.0.0.1:8888/poll/");
        assert_eq!((target.host.as_str(), target.port), ("127.0.0.1", 8888));
        assert_eq!(target.authority, "127.0.0.1:8888");
        assert_eq!(target.dir, "");
        assert!(target.tls.is_none());

        let url: Uri = "wss://[::1]/app/ws/".parse().expect("uri");
        let target = Target::new(&url, &connection()).expect("target");
        assert_eq!(target.base, "https://[::1]/app/poll/");
        assert_eq!((target.host.as_str(), target.port), ("::1", 443));
        assert_eq!(target.authority, "[::1]");
        assert_eq!(target.dir, "/app");
        assert!(target.tls.is_some());
    }

    #[test]
    fn a_url_without_a_websocket_endpoint_cannot_be_polled() {
        let url: Uri = "ws://h/elsewhere".parse().expect("uri");
        let error = Target::new(&url, &connection()).expect_err("no endpoint");
        assert!(error.to_string().contains("/ws/room"), "{error}");
    }

    #[test]
    fn refusals_are_one_line_with_the_reason_and_retry_after() {
        let answer = Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some("1".into()),
            body: "the server has 1 clients connected\n".into(),
        };
        assert_eq!(
            answer.refusal(),
            "HTTP error: 503 Service Unavailable (retry after 1 s): the server has 1 clients \
             connected"
        );
        let answer = Answer { status: StatusCode::NOT_FOUND, retry_after: None, body: "".into() };
        assert_eq!(answer.refusal(), "HTTP error: 404 Not Found");
    }
}
