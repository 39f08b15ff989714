//! HTTP polling over `window.fetch`, the fallback for networks that block the WebSocket: the
//! requests of [`wire::poll`] as a small API ([`Endpoint`]: open a session, long- or short-poll
//! GET, POST a batch, DELETE), and [`Polling`], one session driven as a connection that reports
//! what a WebSocket would (messages, then the close).
//!
//! Every request starts when it is made (not when its future is first polled), and its future
//! owns everything it needs (`'static`), so a caller can keep it in a struct or `.await` it.
//! Replies are read whole as text: a batch for a GET, a reason for a refusal.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wire::close;
use wire::poll::{Item, Open};

use crate::session::Input;

/// A request under way, as [`Endpoint`]'s methods return it (boxed, to keep in a struct).
pub type Request = Pin<Box<dyn Future<Output = Result<Reply, FetchError>>>>;

/// A request that got no HTTP answer: the network failed, or the page has no `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "polling request failed: {}", self.0)
    }
}

impl FetchError {
    fn from_js(error: JsValue) -> Self {
        // Usually a `TypeError` ("Failed to fetch"): no detail worth its bytes in the bundle
        // (the browser's console shows the failed request).
        Self(error.as_string().unwrap_or_else(|| "no answer (network error)".into()))
    }
}

/// An HTTP answer to a polling request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// A batch (GET), empty (201, 204), or a refusal's plain-text reason.
    pub body: String,
    /// The server's [`wire::poll::HEADER_REQUEST_HEAD_BYTES`]: the size of this request's head
    /// as it arrived (which the page cannot measure itself).
    pub request_head_bytes: Option<u64>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a refused polling request means, as the close code (and reason) a WebSocket would
/// have reported, so the state machines apply their one set of rules to both transports:
/// 403 (origin) is 1008 and 400 (a bad request) 1002, where retrying cannot help; 413 is 1009
/// with the server's reason, which names its limit; 503 (too many connections) is 1013; 404
/// (the session expired or is unknown) and anything else are 1006, a dropped connection.
pub fn close_for(status: u16, body: &str) -> (u16, String) {
    let code = match status {
        400 => close::PROTOCOL_ERROR,
        403 => close::POLICY_VIOLATION,
        413 => close::MESSAGE_TOO_BIG,
        503 => close::TRY_AGAIN_LATER,
        _ => close::ABNORMAL,
    };
    let reason = match status {
        404 => String::new(),
        _ if code == close::ABNORMAL => format!("HTTP {status}"),
        _ => body.trim().to_owned(),
    };
    (code, reason)
}

/// A fresh session id: 128 bits from `crypto.getRandomValues`, as 32 hex digits.
pub fn new_sid() -> Result<String, FetchError> {
    let crypto = web_sys::window()
        .ok_or_else(|| FetchError("no window".into()))?
        .crypto()
        .map_err(FetchError::from_js)?;
    let mut bytes = [0u8; 16];
    crypto.get_random_values_with_u8_array(&mut bytes).map_err(FetchError::from_js)?;
    Ok(hex(&bytes))
}

/// Lower-case hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)].into());
        out.push(DIGITS[usize::from(byte & 15)].into());
    }
    out
}

/// The polling base beside a page's socket base ([`crate::url::socket_base`]): `ws://host/dir/`
/// → `http://host/dir/poll/` (`wss:` → `https:`), where the echo's and the room's sessions
/// live. (Cheaper in the bundle than [`wire::poll::base_for`], which takes any endpoint URL.)
pub fn base_beside(socket_base: &str) -> Option<String> {
    let rest = socket_base.strip_prefix("ws")?;
    Some(format!("http{rest}{}", wire::poll::PREFIX.trim_start_matches('/')))
}

/// One polling session's address (`…/poll/SID`) and its requests. The id is new and random
/// for each `Endpoint`; the session exists on the server once [`Endpoint::open`] got its 201.
///
/// Nothing is aborted: a session given up is deleted, and the server answers a GET still
/// waiting on it at once (with the close), so no request outlives its session for long.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http(s)://host/dir/poll/SID`.
    url: String,
}

impl Endpoint {
    /// A new session under `base`, a polling base such as [`wire::poll::base_for`] gives
    /// (`http://host/poll/`).
    pub fn new(base: &str) -> Result<Self, FetchError> {
        Ok(Self { url: format!("{base}{}", new_sid()?) })
    }

    /// A new session beside a WebSocket endpoint: `ws://host/ws/` or `ws://host/ws/room?…` →
    /// `http://host/poll/SID`.
    pub fn beside(ws_url: &str) -> Result<Self, FetchError> {
        let base = wire::poll::base_for(ws_url)
            .ok_or_else(|| FetchError(format!("no polling endpoint beside {ws_url}")))?;
        Self::new(&base)
    }

    /// The session's URL, where its GETs, POSTs and DELETE go (and the name Resource Timing
    /// gives their entries; a short poll's ends in `?wait=0`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }

    /// `POST …/SID/echo` or `…/SID/room`, with `query` (the room's `epoch=E&offset=N`, or
    /// empty) : opens the session (201; the greeting or `joined` waits for the first GET).
    pub fn open(&self, open: Open, query: &str) -> Request {
        let last = match open {
            Open::Echo => wire::poll::OPEN_ECHO,
            Open::Room => wire::poll::OPEN_ROOM,
        };
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        self.fetch(&format!("{}/{last}{query}", self.url), "POST", None)
    }

    /// `GET …/SID`: a long poll (`long`: answered once something is queued, or empty after
    /// the server's poll timeout) or a short one (`?wait=0`: answered at once). The body is a
    /// batch for [`wire::poll::decode`].
    pub fn get(&self, long: bool) -> Request {
        let url = if long {
            self.url.clone()
        } else {
            format!("{}?{}=0", self.url, wire::poll::QUERY_WAIT)
        };
        self.fetch(&url, "GET", None)
    }

    /// `POST …/SID` with `batch` ([`wire::poll::push_message`] items): 204 once the server has
    /// them; the replies come by GET, in order. Send one batch at a time to keep the order.
    pub fn post(&self, batch: &str) -> Request {
        self.fetch(&self.url, "POST", Some(batch))
    }

    /// `DELETE …/SID` (204): closes the session, like a Close 1000 (a GET still waiting on it
    /// is answered with that close).
    pub fn delete(&self) -> Request {
        fetch(&self.url, "DELETE", None)
    }

    fn fetch(&self, url: &str, method: &str, body: Option<&str>) -> Request {
        fetch(url, method, body)
    }
}

fn fetch(url: &str, method: &str, body: Option<&str>) -> Request {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(body));
    }
    let promise = web_sys::window().map(|window| window.fetch_with_str_and_init(url, &init));
    async move {
        let promise = promise.ok_or_else(|| FetchError("no window".into()))?;
        let response: web_sys::Response =
            JsFuture::from(promise).await.map_err(FetchError::from_js)?.unchecked_into();
        let head = response.headers().get(wire::poll::HEADER_REQUEST_HEAD_BYTES);
        let request_head_bytes = head.ok().flatten().and_then(|bytes| bytes.parse().ok());
        let text = response.text().map_err(FetchError::from_js)?;
        let body = JsFuture::from(text).await.map_err(FetchError::from_js)?;
        let body = body.as_string().unwrap_or_default();
        Ok(Reply { status: response.status(), body, request_head_bytes })
    }
    .boxed_local()
}

/// Sends `DELETE` for `endpoint` and forgets it: nobody waits for the answer.
pub fn close_in_background(endpoint: &Endpoint) {
    let delete = endpoint.delete();
    wasm_bindgen_futures::spawn_local(async move {
        let _ = delete.await;
    });
}

/// One long-polling session as a connection: opens it, keeps one GET waiting at a time, sends
/// in batches (one POST under way at a time, so the server gets them in order), and reports
/// [`Input::Received`] for each message and one [`Input::Closed`] at the end, as
/// [`crate::conn::to_input`] does for a WebSocket. Dropping it sends nothing: call
/// [`Polling::close`].
#[derive(Debug)]
pub struct Polling {
    endpoint: Endpoint,
    /// The requests under way: the open until its 201, then a GET and at most one POST.
    requests: Vec<(Stage, Fut)>,
    /// Messages waiting for the POST under way (or the open) to finish.
    batch: String,
    /// Inputs decoded from a batch, not yet taken.
    ready: VecDeque<Input>,
    done: bool,
}

/// What a request of a [`Polling`] session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Open,
    Get,
    Post,
}

/// A [`Request`] that `#[derive(Debug)]` can skip.
struct Fut(Request);

impl std::fmt::Debug for Fut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request")
    }
}

impl Polling {
    /// Opens a session of `open` under the polling `base`, with `query` (the room's resume
    /// point, or empty).
    pub fn open(base: &str, open: Open, query: &str) -> Result<Self, FetchError> {
        let endpoint = Endpoint::new(base)?;
        let requests = vec![(Stage::Open, Fut(endpoint.open(open, query)))];
        Ok(Self { endpoint, requests, batch: String::new(), ready: VecDeque::new(), done: false })
    }

    /// The session's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `text` as one message: now, or with the next batch if a POST (or the open) is
    /// under way.
    pub fn send(&mut self, text: &str) {
        if !self.done {
            wire::poll::push_message(&mut self.batch, text);
            self.flush();
        }
    }

    /// Closes the session (DELETE, in the background); the requests under way are forgotten.
    pub fn close(self) {
        if !self.done {
            close_in_background(&self.endpoint);
        }
    }

    /// POSTs what waits, unless the open or a POST is still under way.
    fn flush(&mut self) {
        let busy = self.requests.iter().any(|(stage, _)| *stage != Stage::Get);
        if !busy && !self.batch.is_empty() {
            let post = self.endpoint.post(&std::mem::take(&mut self.batch));
            self.requests.push((Stage::Post, Fut(post)));
        }
    }

    fn get(&mut self) {
        self.requests.push((Stage::Get, Fut(self.endpoint.get(true))));
    }

    /// Ends the connection with this close; gives the session up on the server too unless it
    /// is already gone there.
    fn end(&mut self, code: u16, reason: String, clean: bool, gone: bool) {
        if !gone {
            close_in_background(&self.endpoint);
        }
        self.done = true;
        self.requests.clear();
        self.ready.push_back(Input::Closed { code, reason, clean });
    }

    /// A reply that is not what it should be (a refusal, or no answer).
    fn failed(&mut self, reply: Result<Reply, FetchError>) {
        let (code, reason, gone) = match reply {
            Ok(reply) => {
                let (code, reason) = close_for(reply.status, &reply.body);
                let status = reply.status;
                let line = format!("polling: HTTP {status} {}", reply.body);
                web_sys::console::warn_1(&line.into());
                (code, reason, status == 404)
            }
            Err(error) => {
                web_sys::console::warn_1(&error.to_string().into());
                (close::ABNORMAL, String::new(), false)
            }
        };
        self.end(code, reason, false, gone);
    }

    /// A GET's batch: its messages, then the next GET (or the close, which ends it).
    fn batch_arrived(&mut self, body: &str) {
        let Ok(items) = wire::poll::decode(body) else {
            web_sys::console::warn_1(&"polling: a malformed batch".into());
            return self.end(close::ABNORMAL, String::new(), false, false);
        };
        for item in items {
            match item {
                Item::Message(text) => self.ready.push_back(Input::Received(text.to_owned())),
                Item::Close(code, reason) => {
                    return self.end(code, reason.to_owned(), true, true);
                }
            }
        }
        self.get();
    }

    /// The next input: a message or the close; `None` once it has closed.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Input>> {
        loop {
            if let Some(input) = self.ready.pop_front() {
                return Poll::Ready(Some(input));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let answered = self.requests.iter_mut().enumerate().find_map(|(at, (_, request))| {
                match request.0.poll_unpin(cx) {
                    Poll::Ready(reply) => Some((at, reply)),
                    Poll::Pending => None,
                }
            });
            let Some((at, reply)) = answered else { return Poll::Pending };
            let (stage, _) = self.requests.swap_remove(at);
            match (stage, reply) {
                (Stage::Open, Ok(reply)) if reply.ok() => {
                    self.get();
                    self.flush();
                }
                (Stage::Get, Ok(reply)) if reply.status == 200 => self.batch_arrived(&reply.body),
                (Stage::Post, Ok(reply)) if reply.ok() => self.flush(),
                (_, reply) => self.failed(reply),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn refusals_map_to_the_close_codes_a_websocket_would_report() {
        let too_big = close::reason_too_big(1000);
        assert_eq!(close_for(413, &too_big), (close::MESSAGE_TOO_BIG, too_big.clone()));
        assert_eq!(
            crate::session::learned_limit(&close_for(413, &format!("{too_big}\n")).1),
            Some(1000),
            "the limit is learned as from a 1009"
        );
        assert_eq!(close_for(403, "origin not allowed").0, close::POLICY_VIOLATION);
        assert_eq!(close_for(400, "bad batch").0, close::PROTOCOL_ERROR);
        assert_eq!(close_for(503, "too many").0, close::TRY_AGAIN_LATER);
        assert_eq!(close_for(404, wire::poll::UNKNOWN_SESSION), (close::ABNORMAL, String::new()));
        assert_eq!(close_for(502, "<html>"), (close::ABNORMAL, "HTTP 502".to_owned()));
        for (status, _) in [(403, ()), (400, ()), (404, ()), (502, ())] {
            let class = crate::session::classify(close_for(status, "").0);
            let expected = match status {
                403 | 400 => crate::session::CloseClass::Stop,
                _ => crate::session::CloseClass::Retry,
            };
            assert_eq!(class, expected, "{status}");
        }
    }

    #[test]
    fn the_polling_base_sits_beside_the_sockets() {
        assert_eq!(base_beside("ws://h:1/").as_deref(), Some("http://h:1/poll/"));
        assert_eq!(base_beside("wss://h/app/").as_deref(), Some("https://h/app/poll/"));
        assert_eq!(base_beside("http://h/"), None);
        // The same place wire's rule finds from the sockets' own URLs.
        for base in ["ws://h:1/", "wss://h/app/"] {
            for path in [wire::WS_PATH, wire::room::PATH] {
                let socket = crate::url::socket_url(base, path);
                assert_eq!(base_beside(base), wire::poll::base_for(&socket), "{socket}");
            }
        }
    }

    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let sid = hex(&[0xab; 16]);
        assert_eq!(sid.len(), 32);
        assert!(wire::poll::is_sid(&sid));
    }
}

#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn session_ids_are_random_and_valid() {
        let (a, b) = (new_sid().expect("an id"), new_sid().expect("an id"));
        assert!(wire::poll::is_sid(&a) && a.len() == 32, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn endpoints_sit_beside_the_socket() {
        let endpoint = Endpoint::beside("ws://h:1/app/ws/room?epoch=e&offset=3").expect("one");
        assert!(endpoint.url().starts_with("http://h:1/app/poll/"), "{}", endpoint.url());
        assert!(wire::poll::is_sid(endpoint.sid()));
        assert!(Endpoint::beside("ws://h/other").is_err());
    }
}
