//! Logging setup: `tracing` events to stderr, filtered by `RUST_LOG` or a default scoped to
//! this crate.

use std::fmt;
use std::io::IsTerminal;
use std::time::SystemTime;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

/// Used when `RUST_LOG` is unset: connection open/close at info, each message needs `debug`.
pub const DEFAULT_FILTER: &str = "server=info,tower_http=warn";

/// Installs the global subscriber. Stdout stays free for what the binaries print on purpose.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Rfc3339)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Each line's timestamp: tracing-subscriber's default text (RFC 3339 in UTC, to the
/// microsecond: `2026-12-02T08:25:37.760038Z`), written by humantime. tracing-subscriber's own
/// timer formats it field by field through `fmt` padding, 2.4k instructions a line, so that the
/// two lines of a WebSocket connection cost a sixteenth of its handshake; humantime's writes
/// the digits itself (callgrind, docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339;

impl FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "{}", humantime::format_rfc3339_micros(SystemTime::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_tracing_subscribers_own() {
        let mut ours = String::new();
        Rfc3339.format_time(&mut Writer::new(&mut ours)).expect("formatted");
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .expect("formatted");
        // The same shape, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, and the same moment (microseconds
        // apart: the two clocks were read one after the other).
        let shape = |s: &str| -> String {
            s.chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect()
        };
        assert_eq!(shape(&ours), "0000-00-00T00:00:00.000000Z", "{ours}");
        assert_eq!(shape(&theirs), shape(&ours), "{theirs}");
        let at = |s: &str| humantime::parse_rfc3339(s).expect("RFC 3339");
        let apart = at(&theirs).duration_since(at(&ours)).expect("ours was read first");
        assert!(apart < std::time::Duration::from_secs(1), "{ours} against {theirs}");
    }
}
