//! How many connections may be open at once: WebSockets (`--max-connections`), and TCP
//! connections that have not upgraded (`--max-http-connections`), each with the slot it holds.
//!
//! Each connection is one file descriptor, so the default limit comes from the process's
//! `RLIMIT_NOFILE`: the binary first raises its soft limit to the hard limit (as Go's runtime
//! does; the soft default of 1024 is a relic of `select()`), then leaves 1 % of it, at least
//! [`FD_HEADROOM_MIN`], for listeners, page requests and files. Past the limit the
//! upgrade gets 503 with `Retry-After`, which a client can act on, instead of an `accept()`
//! failing with `EMFILE`, which nobody sees.
//!
//! A TCP connection counts under the second, separate limit from `accept()` until it upgrades
//! (a page request, a kept-alive browser connection, an upgrade request not answered yet, a
//! client that connects and says nothing): each costs at most [`HEAD_LIMIT`] of request
//! buffer, so that limit bounds their memory. Over it, the accept loop answers at once with a
//! canned 503 and `Retry-After` and closes, without reading the request or allocating a
//! buffer for it. A separate count, so that page requests can never starve the WebSockets of
//! their slots or the other way round; once a connection upgrades it moves to the WebSocket
//! count.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::{Metrics, Transport};

/// The fewest file descriptors kept free for everything that is not a WebSocket.
pub const FD_HEADROOM_MIN: u64 = 64;
/// Used when the file-descriptor limit cannot be read.
const FALLBACK_MAX_CONNECTIONS: usize = 1024 - FD_HEADROOM_MIN as usize;

/// Largest request head (request line and headers) the server reads, and the cap on each
/// connection's HTTP read buffer (hyper's `max_buf_size`; its default is about 400 KB). A head
/// that does not fit gets 431. 16 KiB, as Node's default: a browser's head with a few cookies
/// is under 2 KiB; a connection holding a half-sent head costs this much, not 400 KB.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// The most `--max-http-connections` defaults to: page requests take milliseconds, so this is
/// plenty, and at [`HEAD_LIMIT`] each it bounds their request buffers to 16 MiB.
pub const MAX_HTTP_CONNECTIONS_CAP: usize = 1024;

/// Raises the soft file-descriptor limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The default `--max-connections`: the current soft file-descriptor limit less headroom.
pub fn default_max_connections() -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _hard)) => max_connections_for(soft),
        Err(_) => FALLBACK_MAX_CONNECTIONS,
    }
}

/// `fd_limit` less 1 % (at least [`FD_HEADROOM_MIN`]); never below one. The headroom covers
/// the listener, the runtime's own descriptors and page requests in flight; a page request
/// that finds none free waits in the accept loop's retry, while an upgrade past the limit is
/// told 503.
pub fn max_connections_for(fd_limit: u64) -> usize {
    let headroom = (fd_limit / 100).max(FD_HEADROOM_MIN);
    usize::try_from(fd_limit.saturating_sub(headroom)).unwrap_or(usize::MAX).max(1)
}

/// The default `--max-http-connections`: a quarter of the soft file-descriptor limit, at most
/// [`MAX_HTTP_CONNECTIONS_CAP`].
pub fn default_max_http_connections() -> usize {
    let fds = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    max_http_connections_for(fds)
}

/// A quarter of `fd_limit`, at least 1, at most [`MAX_HTTP_CONNECTIONS_CAP`].
pub fn max_http_connections_for(fd_limit: u64) -> usize {
    usize::try_from(fd_limit / 4).unwrap_or(usize::MAX).clamp(1, MAX_HTTP_CONNECTIONS_CAP)
}

/// The count of TCP connections that have not upgraded (see the module docs).
#[derive(Debug)]
pub struct HttpSlots {
    open: AtomicUsize,
    max: usize,
}

/// One not-yet-upgraded TCP connection's place under `--max-http-connections`; released on
/// drop (when its HTTP connection ends, or hands over to a WebSocket).
#[derive(Debug)]
pub struct HttpSlot {
    slots: Arc<HttpSlots>,
}

impl HttpSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), max })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot, or `None` when `max` connections hold one.
    pub fn try_open(self: &Arc<Self>) -> Option<HttpSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(HttpSlot { slots: Arc::clone(self) })
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open-connection count, shared by every upgrade.
#[derive(Debug)]
pub struct Slots {
    open: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
    metrics: Arc<Metrics>,
}

/// One open connection's place under the limit, with its id for the logs; released on drop.
/// A polling session holds one too: the limit counts clients, whatever their transport.
#[derive(Debug)]
pub struct Slot {
    pub id: u64,
    transport: Transport,
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.connections_max.set(i64::try_from(max).unwrap_or(i64::MAX));
        Arc::new(Self { open: AtomicUsize::new(0), next_id: AtomicU64::new(1), max, metrics })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot for a client over `transport`, or `None` when `max` are open.
    pub fn try_open(self: &Arc<Self>, transport: Transport) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        if transport == Transport::WebSocket {
            self.metrics.connections_open.inc();
        }
        self.metrics.session_opened(transport, 1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(Slot { id, transport, slots: Arc::clone(self) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        if self.transport == Transport::WebSocket {
            self.slots.metrics.connections_open.dec();
        }
        self.slots.metrics.session_opened(self.transport, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_headroom_below_the_fd_limit() {
        assert_eq!(max_connections_for(1024), 1024 - 64);
        assert_eq!(max_connections_for(20_000), 19_800);
        assert_eq!(max_connections_for(100), 100 - FD_HEADROOM_MIN as usize);
        assert_eq!(max_connections_for(1_048_576), 1_048_576 - 10_485);
        assert_eq!(max_connections_for(10), 1);
        assert!(default_max_connections() >= 1);
    }

    #[test]
    fn the_http_default_is_a_quarter_of_the_fd_limit_capped() {
        assert_eq!(max_http_connections_for(1024), 256);
        assert_eq!(max_http_connections_for(20_000), MAX_HTTP_CONNECTIONS_CAP);
        assert_eq!(max_http_connections_for(2), 1);
        assert!(default_max_http_connections() >= 1);
    }

    #[test]
    fn http_slots_are_refused_at_the_limit_and_released_on_drop() {
        let slots = HttpSlots::new(1);
        let first = slots.try_open().expect("first");
        assert!(slots.try_open().is_none());
        drop(first);
        assert!(slots.try_open().is_some());
    }

    #[test]
    fn slots_are_refused_at_the_limit_and_released_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let slots = Slots::new(2, Arc::clone(&metrics));
        let first = slots.try_open(Transport::WebSocket).expect("first");
        let second = slots.try_open(Transport::Polling).expect("second");
        assert_ne!(first.id, second.id);
        assert!(slots.try_open(Transport::WebSocket).is_none());
        assert!(slots.try_open(Transport::Polling).is_none(), "one limit for both");
        assert_eq!(metrics.connections_open.get(), 1, "WebSockets only");
        drop(first);
        assert_eq!(metrics.connections_open.get(), 0);
        assert!(slots.try_open(Transport::Polling).is_some());
    }
}
