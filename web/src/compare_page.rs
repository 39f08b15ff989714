//! The Compare view in the page: its controls, table and bar chart, and the runs themselves
//! (the same messages over a WebSocket, long polling and short polling, one transport after
//! the other, each on a connection or session of its own). What the numbers mean and how they
//! are counted is [`crate::compare`]'s; this file only carries the messages and shows the
//! result. It shares nothing with the echo's and the room's state machines.

use std::future::Future;
use std::pin::Pin;

use futures_util::future::poll_fn;
use futures_util::{SinkExt, StreamExt};
use gloo_net::websocket::Message;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, Element, EventTarget, HtmlInputElement};
use wire::poll::{Item, Open};

use crate::compare::{self, Row, Run, Settings, Transport};
use crate::dom::{find, set_flag, set_text};
use crate::poll::{self, Endpoint, FetchError, Reply};
use crate::{conn, url};

/// The view, its controls and its status line (`data-status` on the view says `idle`,
/// `running`, `done` or `failed`).
pub const VIEW_ID: &str = "compare";
pub const COUNT_ID: &str = "compare-count";
pub const INTERVAL_ID: &str = "compare-interval";
pub const RUN_ID: &str = "compare-run";
pub const STATUS_ID: &str = "compare-status";
/// The table and chart, hidden until the first run.
pub const RESULTS_ID: &str = "compare-results";
pub const TABLE_ID: &str = "compare-table";
/// Resource Timing entries kept (the browser's default, 250, is less than one run's requests).
const TIMING_BUFFER: u32 = 10 * compare::MAX_COUNT;

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`: milliseconds with a fraction (the browser's own resolution).
    #[wasm_bindgen(js_namespace = performance)]
    fn now() -> f64;
    #[wasm_bindgen(js_namespace = performance, js_name = getEntriesByType)]
    fn entries_by_type(kind: &str) -> js_sys::Array;
    #[wasm_bindgen(js_namespace = performance, js_name = clearResourceTimings)]
    fn clear_resource_timings();
    #[wasm_bindgen(js_namespace = performance, js_name = setResourceTimingBufferSize)]
    fn set_resource_timing_buffer_size(size: u32);
}

/// The mounted view.
#[derive(Debug, Clone)]
pub struct ComparePage {
    view: Element,
    count: HtmlInputElement,
    interval: HtmlInputElement,
    run: Element,
    status: Element,
    results: Element,
    /// Each transport's row (`compare-row-N`), whose header cell names it.
    rows: Vec<Element>,
    /// Each transport's bar and its value (`compare-bar-N`, `compare-value-N`).
    bars: Vec<(Element, Element)>,
}

/// Mounts the view and runs the comparison each time Compare is pressed. `socket_base` is
/// the page's [`url::socket_base`]: the WebSocket runs at `ws/` in it, polling beside it
/// ([`poll::base_beside`]).
pub fn start(document: &Document, socket_base: &str) -> Result<(), JsValue> {
    let page = ComparePage::find(document)?;
    let ws_url = url::socket_url(socket_base, wire::WS_PATH);
    let poll_base = poll::base_beside(socket_base).unwrap_or_default();
    wasm_bindgen_futures::spawn_local(async move {
        let button: EventTarget = page.run.clone().into();
        loop {
            clicked(&button).await;
            page.compare(&ws_url, &poll_base).await;
        }
    });
    Ok(())
}

impl ComparePage {
    /// Finds the view's elements, which `index.html` declares.
    pub fn find(document: &Document) -> Result<Self, JsValue> {
        let find = |id: &str| find(document, id);
        let indexed = |name: &str, i: usize| find(&format!("compare-{name}-{i}"));
        let mut rows = Vec::new();
        let mut bars = Vec::new();
        for i in 0..Transport::ALL.len() {
            rows.push(indexed("row", i)?);
            bars.push((indexed("bar", i)?, indexed("value", i)?));
        }
        Ok(Self {
            view: find(VIEW_ID)?,
            count: find(COUNT_ID)?.dyn_into()?,
            interval: find(INTERVAL_ID)?.dyn_into()?,
            run: find(RUN_ID)?,
            status: find(STATUS_ID)?,
            results: find(RESULTS_ID)?,
            rows,
            bars,
        })
    }

    /// Runs every transport in turn and shows each row as it finishes; stops at the first
    /// that fails, saying why.
    async fn compare(&self, ws_url: &str, poll_base: &str) {
        let settings =
            Settings::from_fields(self.count.value_as_number(), self.interval.value_as_number());
        self.controls(false);
        let _ = set_flag(&self.results, "hidden", false);
        let mut rows = Vec::new();
        for transport in Transport::ALL {
            self.show(&rows);
            let mut run = Run::new(transport, settings.count);
            self.progress(&run, settings.count);
            let result: Pin<Box<dyn Future<Output = Result<(), Failure>>>> = match transport {
                Transport::WebSocket => Box::pin(self.websocket(ws_url, &mut run, settings)),
                _ => Box::pin(self.polling(poll_base, &mut run, settings)),
            };
            if let Err(reason) = result.await {
                let text = format!("{}: {reason}", transport.label());
                self.finish("failed", &text);
                return;
            }
            rows.push(run.row());
        }
        self.show(&rows);
        self.finish("done", &compare::done(settings));
    }

    /// One run over a new WebSocket.
    async fn websocket(&self, url: &str, run: &mut Run, settings: Settings) -> Result<(), Failure> {
        let mut socket = conn::open(url).map_err(|_| "cannot open a WebSocket")?;
        let ready = poll_fn(|cx| socket.poll_ready_unpin(cx)).await;
        if ready.is_err() || !conn::is_open(&socket) {
            return Err("the WebSocket did not open");
        }
        while !run.finished() {
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                return Err("the WebSocket closed");
            };
            run.received(&text, now()).map_err(|_| UNEXPECTED)?;
            self.progress(run, settings.count);
            if let Some(text) = run.next(now()) {
                conn::send(&mut socket, text);
            }
        }
        run.closed();
        let _ = conn::close(socket);
        Ok(())
    }

    /// One run over a new polling session. Each message is POSTed while a GET asks for the
    /// reply: long polling's waits for it; short polling's (`?wait=0`) go out on a fixed
    /// schedule, every interval, until one brings it.
    async fn polling(&self, base: &str, run: &mut Run, settings: Settings) -> Result<(), Failure> {
        let endpoint = Endpoint::new(base).map_err(|_| "no polling endpoint")?;
        let long = run.transport == Transport::LongPolling;
        clear_resource_timings();
        set_resource_timing_buffer_size(TIMING_BUFFER);
        let result: Result<(), Failure> = async {
            counted(run, endpoint.open(Open::Echo, "").await, 0)?;
            let mut tick = now();
            while !run.finished() {
                let post = run.next(now()).map(|text| {
                    let mut batch = String::new();
                    wire::poll::push_message(&mut batch, &text);
                    (endpoint.post(&batch), batch.len())
                });
                if !long {
                    sleep(tick - now()).await;
                    tick = compare::next_tick(tick, settings.interval_ms, now());
                }
                // The POST and the GET are both under way; the reply's time is the GET's.
                let reply = endpoint.get(long).await;
                let at = now();
                if let Some((post, len)) = post {
                    counted(run, post.await, len)?;
                }
                let batch = counted(run, reply, 0)?;
                for item in wire::poll::decode(&batch).map_err(|_| "a malformed batch")? {
                    match item {
                        Item::Message(text) => run.received(text, at).map_err(|_| UNEXPECTED)?,
                        Item::Close(..) => return Err("the server closed the session"),
                    }
                }
                self.progress(run, settings.count);
            }
            counted(run, endpoint.delete().await, 0)?;
            run.add_bytes(transfer_sizes(endpoint.url(), run.requests()).await?);
            Ok(())
        }
        .await;
        if result.is_err() {
            // Not left for the server to expire.
            poll::close_in_background(&endpoint);
        }
        result
    }

    fn progress(&self, run: &Run, count: u32) {
        set_text(&self.status, &compare::progress(run.transport, run.answered(), count));
        let _ = self.view.set_attribute("data-status", "running");
    }

    fn finish(&self, status: &str, text: &str) {
        set_text(&self.status, text);
        let _ = self.view.set_attribute("data-status", status);
        self.controls(true);
    }

    fn controls(&self, enabled: bool) {
        for control in [self.count.unchecked_ref::<Element>(), &self.interval, &self.run] {
            let _ = set_flag(control, "disabled", !enabled);
        }
    }

    /// The rows measured so far (the others empty), and their median round trips as bars
    /// labelled with their values.
    fn show(&self, rows: &[Row]) {
        let medians: Vec<u32> = rows.iter().map(|row| row.median_us).collect();
        let lengths = compare::bars(&medians);
        for (i, (tr, (bar, value))) in self.rows.iter().zip(&self.bars).enumerate() {
            let cells = rows.get(i).map(Row::cells).unwrap_or_default();
            let mut cell = tr.first_element_child();
            for text in &cells {
                cell = cell.and_then(|c| c.next_element_sibling());
                if let Some(cell) = &cell {
                    set_text(cell, text);
                }
            }
            let length = lengths.get(i).copied().unwrap_or(0);
            let _ = bar.set_attribute("width", &length.to_string());
            let label = if i < rows.len() { format!("{} ms", cells[1]) } else { String::new() };
            set_text(value, &label);
        }
    }
}

/// Why a run stopped (the status line says it after the transport's name).
type Failure = &'static str;

const UNEXPECTED: Failure = "a reply that is not the one expected";

/// The response's body, once the request is counted with its bytes: `sent` (the request body)
/// and the request head the server reports. A request that failed or was refused, or an answer
/// without that report, ends the run.
fn counted(
    run: &mut Run,
    reply: Result<Reply, FetchError>,
    sent: usize,
) -> Result<String, Failure> {
    let reply = reply.map_err(|_| "a request failed")?;
    if !reply.ok() {
        return Err("the server refused a request");
    }
    let head = reply.request_head_bytes.ok_or("an answer without x-request-head-bytes")?;
    run.request(sent as u64 + head);
    Ok(reply.body)
}

/// The sum of Resource Timing's `transferSize` over the `requests` entries whose URL starts
/// with `url` (the session's), waiting a little for the last entries, which browsers add once
/// a response has ended.
async fn transfer_sizes(url: &str, requests: u32) -> Result<u64, Failure> {
    let get = |entry: &JsValue, key: &str| js_sys::Reflect::get(entry, &key.into()).ok();
    for _ in 0..100 {
        let mut found = 0;
        let mut bytes = 0.0;
        for entry in entries_by_type("resource") {
            let name = get(&entry, "name").and_then(|name| name.as_string()).unwrap_or_default();
            if name.starts_with(url) {
                found += 1;
                bytes += get(&entry, "transferSize").and_then(|size| size.as_f64()).unwrap_or(0.0);
            }
        }
        if found >= requests {
            return Ok(bytes as u64);
        }
        sleep(20.0).await;
    }
    Err("Resource Timing lacks some of the run's requests")
}

/// Resolves after `ms` milliseconds (at once for less than one), by a `setTimeout` on the
/// promise's own `resolve`: no closure of ours to keep alive.
async fn sleep(ms: f64) {
    if ms < 1.0 {
        return;
    }
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let ms = ms as i32;
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Resolves at the next click on `target`, whose listener is the promise's own `resolve`.
async fn clicked(target: &EventTarget) {
    let mut listener = None;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = target.add_event_listener_with_callback("click", &resolve);
        listener = Some(resolve);
    });
    let _ = JsFuture::from(promise).await;
    if let Some(listener) = listener {
        let _ = target.remove_event_listener_with_callback("click", &listener);
    }
}
