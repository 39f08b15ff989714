//! How many WebSocket connections may be open at once, and the slot each one holds.
//!
//! Each connection is one file descriptor, so the default limit comes from the process's
//! `RLIMIT_NOFILE`: the binary first raises its soft limit to the hard limit (as Go's runtime
//! does; the soft default of 1024 is a relic of `select()`), then leaves 1 % of it, at least
//! [`FD_HEADROOM_MIN`], for listeners, page requests and files. Past the limit the
//! upgrade gets 503 with `Retry-After`, which a client can act on, instead of an `accept()`
//! failing with `EMFILE`, which nobody sees.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

/// The fewest file descriptors kept free for everything that is not a WebSocket.
pub const FD_HEADROOM_MIN: u64 = 64;
/// Used when the file-descriptor limit cannot be read.
const FALLBACK_MAX_CONNECTIONS: usize = 1024 - FD_HEADROOM_MIN as usize;

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

/// The open-connection count, shared by every upgrade.
#[derive(Debug)]
pub struct Slots {
    open: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
    metrics: Arc<Metrics>,
}

/// One open connection's place under the limit, with its id for the logs; released on drop.
#[derive(Debug)]
pub struct Slot {
    pub id: u64,
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

    /// Takes a slot, or `None` when `max` connections are open.
    pub fn try_open(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        self.metrics.connections_open.inc();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(Slot { id, slots: Arc::clone(self) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        self.slots.metrics.connections_open.dec();
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
    fn slots_are_refused_at_the_limit_and_released_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let slots = Slots::new(2, Arc::clone(&metrics));
        let first = slots.try_open().expect("first");
        let second = slots.try_open().expect("second");
        assert_ne!(first.id, second.id);
        assert!(slots.try_open().is_none());
        assert_eq!(metrics.connections_open.get(), 2);
        drop(first);
        assert_eq!(metrics.connections_open.get(), 1);
        assert!(slots.try_open().is_some());
    }
}
