//! Typed server configuration: command-line flags with environment-variable fallbacks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// How long shutdown waits for open WebSocket connections to finish their close handshake.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// [`DEFAULT_SHUTDOWN_GRACE`] as `--help` shows it (a test keeps the two equal).
const DEFAULT_SHUTDOWN_GRACE_TEXT: &str = "5s";

/// Everything the server can be told at start-up. `server --help` shows each default.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about = "Serve the realtime page and its WebSocket at /ws/.")]
pub struct Config {
    /// Address to listen on (`0.0.0.0` or `::` to accept remote connections).
    #[arg(long, env = "SERVER_HOST", default_value_t = IpAddr::V4(wire::DEFAULT_HOST))]
    pub host: IpAddr,

    /// TCP port to listen on (0 picks a free one; the chosen URL is printed).
    #[arg(long, env = "SERVER_PORT", default_value_t = wire::DEFAULT_PORT)]
    pub port: u16,

    /// Directory of the trunk-built bundle (`index.html`, `.js`, `.wasm`).
    ///
    /// Defaults to the workspace's `dist/`, found from where this binary was built, not from
    /// the current directory. Deployments pass their own directory.
    #[arg(long, env = "SERVER_ASSETS", default_value_os_t = default_assets_dir())]
    pub assets: PathBuf,

    /// How long shutdown waits for WebSocket connections to close (e.g. `5s`, `250ms`).
    #[arg(long, env = "SERVER_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE_TEXT, value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(wire::DEFAULT_HOST),
            port: wire::DEFAULT_PORT,
            assets: default_assets_dir(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// `<workspace>/dist`, where `trunk build` writes the bundle.
pub fn default_assets_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("dist")
}

/// Why a duration given on the command line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("expected a number followed by `ms` or `s` (e.g. `250ms`, `5s`), got `{0}`")]
    Format(String),
}

/// Parses `250ms` or `5s` (whole numbers) into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let bad = || DurationError::Format(text.to_owned());
    let (digits, unit): (&str, fn(u64) -> Duration) = if let Some(n) = text.strip_suffix("ms") {
        (n, Duration::from_millis)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, Duration::from_secs)
    } else {
        return Err(bad());
    };
    digits.trim().parse::<u64>().map(unit).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_and_milliseconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_unit_or_number_are_refused() {
        for bad in ["5", "ms", "-1s", "1.5s", "5m", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::try_parse_from([
            "server",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--assets",
            "/srv/app",
            "--shutdown-grace",
            "100ms",
        ])
        .expect("valid flags");
        assert_eq!(config.addr(), "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(config.assets, PathBuf::from("/srv/app"));
        assert_eq!(config.shutdown_grace, Duration::from_millis(100));
    }

    #[test]
    fn flag_defaults_equal_config_default() {
        // Holds unless SERVER_* variables are set in the test's environment.
        let parsed = Config::try_parse_from(["server"]).expect("no flags");
        let default = Config::default();
        assert_eq!(parsed.addr(), default.addr());
        assert_eq!(parsed.assets, default.assets);
        assert_eq!(parsed.shutdown_grace, default.shutdown_grace);
    }

    #[test]
    fn bad_port_is_a_clear_error() {
        let err = Config::try_parse_from(["server", "--port", "99999"]).expect_err("out of range");
        assert!(err.to_string().contains("--port"), "{err}");
    }

    #[test]
    fn default_assets_dir_does_not_depend_on_the_current_directory() {
        assert!(default_assets_dir().is_absolute());
        assert!(default_assets_dir().ends_with("dist"));
    }
}
