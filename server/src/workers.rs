//! Thread per core: the connections are spread over `--workers` single-threaded tokio runtimes,
//! one per core by default, instead of one work-stealing runtime.
//!
//! Why: tokio's multi-threaded scheduler keeps at most 256 ready tasks in a worker's own queue
//! and runs the one woken last first (its LIFO slot); when more connections are ready than
//! that, the rest overflow into a shared queue it looks at only every few dozen tasks. At 1000
//! busy connections on one core some were served again and again while others waited:
//! `cargo xtask bench` measured fairness 0.57 (the fewest replies any connection got, over the
//! mean) and a p99 round trip of 151 ms against a median of 2 ms. A single-threaded runtime
//! serves ready tasks first come, first served: fairness 1.00 and p99 17 ms in the same run
//! (docs/BENCHMARKS.md). One such runtime per core keeps every core busy; a connection stays on
//! the worker it was given, and connections are dealt to the workers in turn.
//!
//! Worker 0 is the runtime the accept loop runs on (the binary's own, single-threaded too), so
//! one core costs no hand-over at all. A connection for another worker is handed over as a
//! standard socket and registered with that worker's reactor, so its readiness wakes that
//! worker, not the acceptor.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The extra worker runtimes, each on a thread of its own.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count - 1` worker threads beside the current runtime (worker 0).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for n in 1..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(move || runtime.block_on(stop.cancelled()))?,
            );
        }
        Ok(Self { handles, threads, stop, next: AtomicUsize::new(0) })
    }

    /// Where the next connection goes: `None` for this runtime (worker 0), or another's handle.
    pub fn next(&self) -> Option<&Handle> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % (self.handles.len() + 1);
        n.checked_sub(1).map(|n| &self.handles[n])
    }

    /// How many runtimes serve connections, this one included.
    pub fn count(&self) -> usize {
        self.handles.len() + 1
    }

    /// Stops the worker threads (after their connections have finished: what is still running
    /// on them is dropped) and waits for them.
    pub fn stop(mut self) {
        self.stop.cancel();
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    /// Also when `run` is dropped instead of returning (a test's runtime going away): the
    /// workers stop with it rather than living on.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The default `--workers`: one per core this process may run on.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
