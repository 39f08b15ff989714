//! The browser client: the tutorial's page grown into a tool for talking to the socket: a
//! composer, a truthful status line, auto-reconnect with nothing lost, and round-trip times.
//!
//! Beside it, the Room view: a chat room on a second socket (`/ws/room`) that resumes where it
//! left off after a reconnect. Where the WebSocket is blocked, both go over long polling
//! (`/poll/`) by themselves, and back to WebSocket once it gets through ([`link`]).
//!
//! [`session`] and [`room`] decide everything (plain Rust, tested natively and in the browser),
//! [`page`] and [`room_page`] show it, [`conn`] is a connection over either transport ([`poll`]
//! the polling one), and [`run`] is the one loop that feeds events from all of them (and the
//! browser) through the two state machines and carries out their commands.

pub mod backoff;
pub mod chart;
pub mod compare;
pub mod compare_page;
pub mod conn;
mod dom;
pub mod link;
pub mod page;
pub mod poll;
pub mod room;
pub mod room_page;
pub mod session;
pub mod url;

#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

use crate::conn::{Conn, Probe};
use crate::link::Transport;
use crate::page::Page;
use crate::room::Room;
use crate::room_page::RoomPage;
use crate::session::{Command, Input, Session};

/// Entry point, called by the binary's `main` once the bundle is loaded.
pub fn start() {
    install_panic_hook();
    if let Err(error) = try_start() {
        web_sys::console::error_2(&"cannot start the page:".into(), &error);
    }
}

/// Sends panic messages to the browser console instead of an opaque `unreachable` trap.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
        web_sys::console::error_4(&"panic:".into(), &message.into(), &file.into(), &line.into());
    }));
}

fn try_start() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let document = window.document().ok_or("no document")?;
    let page = Page::find(&document)?;
    let room_page = RoomPage::find(&document)?;
    let supported = websocket_supported(&window);
    let base = url::for_page(&document)?;
    compare_page::start(&document, &base)?;
    let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
    wasm_bindgen_futures::spawn_local(run(page, room_page, base, supported, seed));
    Ok(())
}

/// Whether the browser has the WebSocket API (the tutorial's `"WebSocket" in window`).
pub fn websocket_supported(window: &web_sys::Window) -> bool {
    js_sys::Reflect::has(window, &"WebSocket".into()).unwrap_or(false)
}

/// The current time in milliseconds.
fn now() -> f64 {
    js_sys::Date::now()
}

/// An input for one of the page's two state machines.
#[derive(Debug, Clone)]
enum Event {
    Echo(Input),
    Room(room::Input),
}

/// The page's one loop: every input (the sockets, the user, the browser, the reconnect timer)
/// goes through the echo's session or the room, whose commands the [`Driver`] carries out;
/// then the page is redrawn and the loop waits for the next input. `base` is the sockets'
/// folder ([`url::socket_base`]): the echo is at `ws/` in it, the room at `ws/room`.
pub async fn run(page: Page, room_page: RoomPage, base: String, supported: bool, seed: u64) {
    let mut driver = Driver::new(page, room_page, base, seed);
    let online = web_sys::window().is_some_and(|w| w.navigator().on_line());
    if !online {
        driver.pending.push(Event::Echo(Input::Online(false)));
        driver.pending.push(Event::Room(room::Input::Online(false)));
    }
    driver.pending.push(Event::Echo(Input::Start { supported }));
    driver.pending.push(Event::Room(room::Input::Start { supported }));
    loop {
        driver.step();
        let next = futures_util::future::poll_fn(|cx| driver.poll_input(cx)).await;
        driver.pending.extend(next);
    }
}

/// One application's connection (the echo's or the room's), over either transport, and the
/// WebSocket probe beside it while it goes over long polling.
struct Channel {
    conn: Option<Conn>,
    probe: Option<Probe>,
}

/// What a [`Channel`] reports.
enum Report {
    Input(Input),
    /// The probe's first message.
    ProbeReady(String),
    ProbeFailed,
}

impl Channel {
    fn new() -> Self {
        Self { conn: None, probe: None }
    }

    /// Takes `conn` as the connection, closing any connection (and probe) there was.
    fn open(&mut self, conn: Result<Conn, conn::OpenError>) -> Result<(), conn::OpenError> {
        self.close(wire::close::NORMAL, "");
        self.conn = Some(conn?);
        Ok(())
    }

    fn send(&mut self, text: String) {
        if let Some(conn) = self.conn.as_mut() {
            conn.send(text);
        }
    }

    /// Closes the connection and the probe; no close event comes back.
    fn close(&mut self, code: u16, reason: &str) {
        self.drop_probe();
        if let Some(conn) = self.conn.take() {
            conn.close(code, reason);
        }
    }

    fn probe(&mut self, url: &str) -> Result<(), conn::OpenError> {
        self.drop_probe();
        self.probe = Some(Probe::open(url)?);
        Ok(())
    }

    fn drop_probe(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.close();
        }
    }

    /// The ready probe becomes the connection, and the old one is closed. Returns false if
    /// there was no probe (then there is no connection either).
    fn switch(&mut self) -> bool {
        let Some(probe) = self.probe.take() else {
            self.close(wire::close::NORMAL, "");
            return false;
        };
        if let Some(old) = self.conn.replace(probe.into_conn()) {
            old.close(wire::close::NORMAL, "");
        }
        true
    }

    /// The next report from the probe or the connection.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Report>> {
        if let Some(probe) = self.probe.as_mut() {
            if let Poll::Ready(first) = probe.poll_first(cx) {
                return Poll::Ready(Some(match first {
                    Ok(text) => Report::ProbeReady(text),
                    Err(()) => {
                        self.probe = None;
                        Report::ProbeFailed
                    }
                }));
            }
        }
        let Some(conn) = self.conn.as_mut() else { return Poll::Pending };
        match conn.poll_next(cx) {
            Poll::Ready(Some(input)) => Poll::Ready(Some(Report::Input(input))),
            // Ended after its close: nothing more will come from it.
            Poll::Ready(None) => {
                self.conn = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What the loop owns: both state machines, the page, the connections, and the browser's
/// event sources.
struct Driver {
    session: Session,
    room: Room,
    page: Page,
    room_page: RoomPage,
    base: String,
    /// Where the polling sessions go ([`poll::base_beside`] the sockets).
    poll_base: String,
    echo: Channel,
    room_conn: Channel,
    /// Inputs to handle before waiting again (some commands produce inputs themselves).
    pending: Vec<Event>,
    inbox: Inbox,
    alarm: Alarm,
    _listeners: Listeners,
}

impl Driver {
    fn new(page: Page, room_page: RoomPage, base: String, seed: u64) -> Self {
        let inbox = Inbox::default();
        let poll_base = poll::base_beside(&base).unwrap_or_default();
        Self {
            poll_base,
            session: Session::new(seed),
            room: Room::new(seed.rotate_left(17) ^ 0x5DEE_CE66),
            _listeners: Listeners::attach(&page, &room_page, &inbox),
            alarm: Alarm::new(&inbox),
            inbox,
            page,
            room_page,
            base,
            echo: Channel::new(),
            room_conn: Channel::new(),
            pending: Vec::new(),
        }
    }

    /// Handles every pending input, carries out the commands, redraws the page and sets the
    /// alarm for the next wake-up of either state machine.
    fn step(&mut self) {
        while !self.pending.is_empty() {
            for event in std::mem::take(&mut self.pending) {
                match event {
                    Event::Echo(input) => {
                        for command in self.session.handle(input, now()) {
                            self.execute(command);
                        }
                    }
                    Event::Room(input) => {
                        for command in self.room.handle(input, now()) {
                            self.execute_room(command);
                        }
                    }
                }
            }
        }
        report(self.page.render(&self.session.view(now())));
        report(self.room_page.render(&self.room.view(now())));
        let wake = match (self.session.wake_at(now()), self.room.wake_at(now())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.alarm.set(wake.map(|at| (at - now()).clamp(0.0, 60_000.0) as i32));
    }

    /// A connection over `transport` to the WebSocket endpoint at `path` (under the sockets'
    /// base), or to a polling session of `app` with the path's query.
    fn connect(&self, transport: Transport, path: &str, app: wire::poll::Open) -> ConnResult {
        match transport {
            Transport::WebSocket => Conn::websocket(&url::socket_url(&self.base, path)),
            Transport::LongPolling => {
                let query = path.split_once('?').map_or("", |(_, query)| query);
                Conn::polling(&self.poll_base, app, query)
            }
        }
    }

    fn execute(&mut self, command: Command) {
        let url = url::socket_url(&self.base, wire::WS_PATH);
        match command {
            Command::Open(transport) => {
                let conn = self.connect(transport, wire::WS_PATH, wire::poll::Open::Echo);
                if let Err(error) = self.echo.open(conn) {
                    self.pending.push(Event::Echo(dropped(error)));
                }
            }
            Command::Send(text) => self.echo.send(text),
            Command::Close => {
                self.echo.close(wire::close::NORMAL, "");
                // The connection is gone, and its close event with it: report it here.
                let code = wire::close::NORMAL;
                let closed = Input::Closed { code, reason: String::new(), clean: true };
                self.pending.push(Event::Echo(closed));
            }
            Command::Log(line) => report(self.page.append(&line)),
            Command::Probe => {
                if self.echo.probe(&url).is_err() {
                    self.pending.push(Event::Echo(Input::ProbeFailed));
                }
            }
            Command::DropProbe => self.echo.drop_probe(),
            Command::Switch => {
                if !self.echo.switch() {
                    self.pending.push(Event::Echo(dropped(conn::OpenError("no probe".into()))));
                }
            }
        }
    }

    fn execute_room(&mut self, command: room::Command) {
        match command {
            room::Command::Open(transport, path) => {
                let conn = self.connect(transport, &path, wire::poll::Open::Room);
                if let Err(error) = self.room_conn.open(conn) {
                    self.pending.push(Event::Room(room_dropped(error)));
                }
            }
            room::Command::Send(text) => self.room_conn.send(text),
            room::Command::Close(code, reason) => self.room_conn.close(code, reason),
            room::Command::Log(entry) => report(self.room_page.append(&entry)),
            room::Command::Probe(path) => {
                if self.room_conn.probe(&url::socket_url(&self.base, &path)).is_err() {
                    self.pending.push(Event::Room(room::Input::ProbeFailed));
                }
            }
            room::Command::DropProbe => self.room_conn.drop_probe(),
            room::Command::Switch => {
                if !self.room_conn.switch() {
                    let error = conn::OpenError("no probe".into());
                    self.pending.push(Event::Room(room_dropped(error)));
                }
            }
        }
    }

    /// The next input: from the page and the alarm (the inbox), or from either connection
    /// or probe.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Poll::Ready(event) = self.inbox.poll_pop(cx) {
            return Poll::Ready(Some(event));
        }
        if let Poll::Ready(report) = self.echo.poll(cx) {
            return Poll::Ready(report.map(|report| {
                Event::Echo(match report {
                    Report::Input(input) => input,
                    // The probe's greeting is not shown: the conversation goes on.
                    Report::ProbeReady(_) => Input::ProbeReady,
                    Report::ProbeFailed => Input::ProbeFailed,
                })
            }));
        }
        let Poll::Ready(report) = self.room_conn.poll(cx) else { return Poll::Pending };
        Poll::Ready(report.and_then(|report| {
            let input = match report {
                Report::Input(input) => conn::room_input(input)?,
                Report::ProbeReady(first) => match conn::decode_frame(&first) {
                    Some(frame) => room::Input::ProbeReady(frame),
                    None => room::Input::ProbeFailed,
                },
                Report::ProbeFailed => room::Input::ProbeFailed,
            };
            Some(Event::Room(input))
        }))
    }
}

type ConnResult = Result<Conn, conn::OpenError>;

/// The close a connection that could not even start reports.
fn dropped(error: conn::OpenError) -> Input {
    Input::Closed { code: wire::close::ABNORMAL, reason: error.0, clean: false }
}

fn room_dropped(error: conn::OpenError) -> room::Input {
    room::Input::Closed { code: wire::close::ABNORMAL, reason: error.0, clean: false }
}

/// The page's and the browser's events, as inputs: the composer, the toggle button, going
/// online or offline, the tab becoming visible. One closure serves them all, so the bundle
/// carries one callback, not one per event; dropping this detaches it.
struct Listeners {
    callback: Closure<dyn FnMut(web_sys::Event)>,
    attached: Vec<(web_sys::EventTarget, &'static str)>,
}

impl Listeners {
    fn attach(page: &Page, room_page: &RoomPage, inbox: &Inbox) -> Self {
        let (form, toggle) = (page_target(&page.form), page_target(&page.toggle));
        let room_form = page_target(&room_page.form);
        let (page, room_page, inbox) = (page.clone(), room_page.clone(), inbox.clone());
        let callback = Closure::new(move |event: web_sys::Event| {
            let both = |echo, room| [Event::Echo(echo), Event::Room(room)];
            let events = match event.type_().as_str() {
                "submit" => {
                    event.prevent_default();
                    let target = event.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok());
                    if target.is_some_and(|t| t.id() == room_page::FORM_ID) {
                        inbox.push(Event::Room(room::Input::Compose(room_page.take_message())));
                    } else {
                        inbox.push(Event::Echo(Input::Compose(page.take_message())));
                    }
                    return;
                }
                "click" => {
                    inbox.push(Event::Echo(
                        match page.toggle.get_attribute("data-action").as_deref() {
                            Some(page::ACTION_DISCONNECT) => Input::Disconnect,
                            _ => Input::Connect,
                        },
                    ));
                    return;
                }
                "online" => both(Input::Online(true), room::Input::Online(true)),
                "offline" => both(Input::Online(false), room::Input::Online(false)),
                "visibilitychange" if !page.hidden() => both(Input::Visible, room::Input::Visible),
                _ => return,
            };
            for event in events {
                inbox.push(event);
            }
        });
        let mut listeners = Self { callback, attached: Vec::new() };
        listeners.add(&form, "submit");
        listeners.add(&room_form, "submit");
        listeners.add(&toggle, "click");
        if let Some(window) = web_sys::window() {
            listeners.add(&window, "online");
            listeners.add(&window, "offline");
            if let Some(document) = window.document() {
                listeners.add(&document, "visibilitychange");
            }
        }
        listeners
    }

    fn add(&mut self, target: &web_sys::EventTarget, name: &'static str) {
        let callback = self.callback.as_ref().unchecked_ref();
        if target.add_event_listener_with_callback(name, callback).is_ok() {
            self.attached.push((target.clone(), name));
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let callback = self.callback.as_ref().unchecked_ref();
        for (target, name) in &self.attached {
            let _ = target.remove_event_listener_with_callback(name, callback);
        }
    }
}

fn page_target(element: &web_sys::Element) -> web_sys::EventTarget {
    element.clone().into()
}

/// Inputs from the browser's callbacks, waiting for the loop: a queue and the loop's waker
/// (all on the one browser thread, so no channel is needed).
#[derive(Debug, Clone, Default)]
struct Inbox(Rc<RefCell<(VecDeque<Event>, Option<Waker>)>>);

impl Inbox {
    fn push(&self, input: Event) {
        let mut inner = self.0.borrow_mut();
        inner.0.push_back(input);
        if let Some(waker) = inner.1.take() {
            waker.wake();
        }
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Event> {
        let mut inner = self.0.borrow_mut();
        match inner.0.pop_front() {
            Some(input) => Poll::Ready(input),
            None => {
                inner.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One `setTimeout` at a time that delivers [`Input::Timer`] to both state machines; one
/// closure for the page's lifetime.
struct Alarm {
    callback: Closure<dyn FnMut()>,
    pending: Option<i32>,
}

impl Alarm {
    fn new(inbox: &Inbox) -> Self {
        let inbox = inbox.clone();
        let callback = Closure::new(move || {
            inbox.push(Event::Echo(Input::Timer));
            inbox.push(Event::Room(room::Input::Timer));
        });
        Self { callback, pending: None }
    }

    /// Replaces the pending alarm with one in `ms` milliseconds (or none).
    fn set(&mut self, ms: Option<i32>) {
        let Some(window) = web_sys::window() else { return };
        if let Some(handle) = self.pending.take() {
            window.clear_timeout_with_handle(handle);
        }
        if let Some(ms) = ms {
            let callback = self.callback.as_ref().unchecked_ref();
            self.pending =
                window.set_timeout_with_callback_and_timeout_and_arguments_0(callback, ms).ok();
        }
    }
}

/// Logs a DOM failure to the console; the page carries on.
fn report(result: Result<(), JsValue>) {
    if let Err(error) = result {
        web_sys::console::error_2(&"cannot update the page:".into(), &error);
    }
}
