//! Typed server configuration: command-line flags with environment-variable fallbacks.
//!
//! Every default is chosen so that nobody needs to change it: the keepalive sits below every
//! common proxy idle cut (nginx and AWS ALB 60 s, Cloudflare 100 s), the limits follow the
//! process's own file-descriptor limit, and the origin check accepts the page wherever it is
//! served from (see [`crate::origin`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::origin::{AllowedHost, OriginPattern};

/// How long shutdown waits for open WebSocket connections to finish their close handshake.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the server pings each connection.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
/// How long a connection may send nothing at all (no message, no pong) before it is closed:
/// two ping intervals, so one lost pong is not fatal.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// How long a TCP client has to send a complete HTTP request head (the upgrade, or any request
/// on a kept-alive connection).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one outgoing frame may wait on a peer that does not read.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a long-polling GET waits for something to send ([`wire::poll`]).
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(wire::poll::DEFAULT_TIMEOUT_SECS);

// The same defaults as `--help` shows them (a test keeps each pair equal).
const DEFAULT_SHUTDOWN_GRACE_TEXT: &str = "5s";
const DEFAULT_PING_INTERVAL_TEXT: &str = "25s";
const DEFAULT_IDLE_TIMEOUT_TEXT: &str = "50s";
const DEFAULT_HANDSHAKE_TIMEOUT_TEXT: &str = "10s";
const DEFAULT_SEND_TIMEOUT_TEXT: &str = "10s";
const DEFAULT_MAX_MESSAGE_SIZE_TEXT: &str = "64KiB";
const DEFAULT_POLL_TIMEOUT_TEXT: &str = "25s";

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

    /// How long shutdown waits for connections to close (e.g. `5s`, `250ms`).
    #[arg(long, env = "SERVER_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE_TEXT, value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How often each WebSocket connection is pinged, so proxies never see it idle.
    #[arg(long, env = "SERVER_PING_INTERVAL", default_value = DEFAULT_PING_INTERVAL_TEXT, value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Close a connection from which nothing (no message, no pong) arrived for this long.
    #[arg(long, env = "SERVER_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Drop a TCP connection that has not sent a complete request head within this time
    /// (a half-sent upgrade, or a kept-alive HTTP connection gone quiet).
    #[arg(long, env = "SERVER_HANDSHAKE_TIMEOUT", default_value = DEFAULT_HANDSHAKE_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Drop a connection whose peer has not read a reply (or ping) for this long.
    #[arg(long, env = "SERVER_SEND_TIMEOUT", default_value = DEFAULT_SEND_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// Largest message, and frame, accepted (e.g. `64KiB`, `1MiB`, `65536`); bigger gets
    /// Close 1009.
    #[arg(long, env = "SERVER_MAX_MESSAGE_SIZE", default_value = DEFAULT_MAX_MESSAGE_SIZE_TEXT, value_parser = parse_size)]
    pub max_message_size: usize,

    /// Most WebSocket connections open at once; more get 503 with `Retry-After`. Default:
    /// derived from the file-descriptor limit, minus headroom for files and listeners.
    #[arg(long, env = "SERVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most TCP connections open at once that have not upgraded to a WebSocket (page
    /// requests, idle kept-alive connections, upgrades not yet answered); more get an
    /// immediate 503 with `Retry-After` and are closed. Default: a quarter of the
    /// file-descriptor limit, at most 1024.
    #[arg(long, env = "SERVER_MAX_HTTP_CONNECTIONS", value_parser = parse_at_least_one)]
    pub max_http_connections: Option<usize>,

    /// Single-threaded runtimes the connections are spread over (see `server::workers`).
    /// Default: one per core this process may run on.
    #[arg(long, env = "SERVER_WORKERS", value_parser = parse_at_least_one)]
    pub workers: Option<usize>,

    /// A host name the server answers to (`Host`, and `X-Forwarded-Host` from a proxy), against
    /// DNS rebinding. Unset: any name. Set: only these names, IP addresses and `localhost`;
    /// others get 421. Repeat the flag, or separate with commas in the variable.
    #[arg(long = "allowed-host", env = "SERVER_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<AllowedHost>,

    /// Another origin whose pages may open the WebSocket, besides pages of the host the request
    /// was made to: `https://app.example`, a port wildcard `http://127.0.0.1:*`, `null`, or `*`
    /// for any. Repeat the flag, or separate with commas in the variable.
    #[arg(long = "allowed-origin", env = "SERVER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<OriginPattern>,

    /// Conformance mode: no greeting, and every message is echoed unchanged (text as text,
    /// binary as binary), with the same limits. For the Autobahn TestSuite.
    #[arg(long, env = "SERVER_PLAIN_ECHO")]
    pub plain_echo: bool,

    /// Messages the room at `/ws/room` keeps for recovery: a client that reconnects within
    /// this many messages gets every one it missed.
    #[arg(long, env = "SERVER_ROOM_HISTORY", default_value_t = wire::room::DEFAULT_HISTORY, value_parser = parse_at_least_one)]
    pub room_history: usize,

    /// Messages per second one connection may publish to the room (with a burst of as many);
    /// more get a `refused` frame.
    #[arg(long, env = "SERVER_ROOM_RATE", default_value_t = wire::room::DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub room_rate: u32,

    /// Share the room with every instance using the same Redis (`redis://HOST:PORT`, optionally
    /// `redis://HOST:PORT/DB`). Without it the room lives in this process alone.
    #[arg(long, env = "SERVER_REDIS_URL")]
    pub redis_url: Option<RedisUrl>,

    /// How long a long-polling GET (`/poll/SID`, the fallback for networks that block the
    /// WebSocket upgrade) waits for something to send before it answers with an empty batch.
    /// Below the 60 s after which nginx and most proxies cut a silent request. A polling
    /// session with no request for `--idle-timeout` expires.
    #[arg(long, env = "SERVER_POLL_TIMEOUT", default_value = DEFAULT_POLL_TIMEOUT_TEXT, value_parser = parse_duration)]
    pub poll_timeout: Duration,
}

/// A `redis://` URL, checked when the flag is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The client for this URL (connecting is up to the caller).
    pub fn client(&self) -> redis::Client {
        // `from_str` made one from the same text already.
        redis::Client::open(self.0.as_str()).unwrap_or_else(|error| unreachable!("{error}"))
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if !text.starts_with("redis://") {
            return Err(format!("`{text}` is not a redis:// URL (e.g. redis://127.0.0.1:6379)"));
        }
        redis::Client::open(text).map_err(|error| format!("bad Redis URL `{text}`: {error}"))?;
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(error) => Err(format!("{error} (expected a whole number)")),
    }
}

impl Config {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Refuses combinations that cannot work (each value alone was checked by its parser).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_interval.is_zero() {
            return Err(ConfigError::ZeroPingInterval);
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleNotAbovePing {
                idle: self.idle_timeout,
                ping: self.ping_interval,
            });
        }
        if self.max_message_size == 0 {
            return Err(ConfigError::ZeroMessageSize);
        }
        if self.poll_timeout.is_zero() {
            return Err(ConfigError::ZeroPollTimeout);
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(wire::DEFAULT_HOST),
            port: wire::DEFAULT_PORT,
            assets: default_assets_dir(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_message_size: wire::limits::MAX_MESSAGE_BYTES,
            max_connections: None,
            max_http_connections: None,
            workers: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            plain_echo: false,
            room_history: wire::room::DEFAULT_HISTORY,
            room_rate: wire::room::DEFAULT_RATE,
            redis_url: None,
            poll_timeout: DEFAULT_POLL_TIMEOUT,
        }
    }
}

/// A flag combination the server refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--ping-interval must be above zero")]
    ZeroPingInterval,
    #[error(
        "--idle-timeout ({}) must be longer than --ping-interval ({}), or every healthy \
         connection would be closed; about twice the interval is right",
        humantime::format_duration(*idle),
        humantime::format_duration(*ping)
    )]
    IdleNotAbovePing { idle: Duration, ping: Duration },
    #[error("--max-message-size must be at least 1 byte")]
    ZeroMessageSize,
    #[error("--poll-timeout must be above zero")]
    ZeroPollTimeout,
}

/// `<workspace>/dist`, where `trunk build` writes the bundle.
pub fn default_assets_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("dist")
}

/// Parses a duration such as `250ms`, `5s` or `1m 30s` (the `humantime` format).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{error} (expected e.g. `250ms`, `5s`, `1m`)"))
}

/// Parses a size such as `65536`, `64KiB` or `1MiB` (the `bytesize` format).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize =
        text.trim().parse().map_err(|error| format!("{error} (expected e.g. `64KiB`, `1MiB`)"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("{text} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 1m 30s "), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn durations_without_unit_or_number_are_refused() {
        for bad in ["5", "ms", "-1s", "five seconds", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("16 MiB"), Ok(16 * 1024 * 1024));
        assert!(parse_size("lots").is_err());
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
            "--ping-interval",
            "1s",
            "--idle-timeout",
            "3s",
            "--handshake-timeout",
            "2s",
            "--send-timeout",
            "4s",
            "--max-message-size",
            "1MiB",
            "--max-connections",
            "7",
            "--allowed-origin",
            "https://app.example",
            "--allowed-origin",
            "http://127.0.0.1:*",
            "--plain-echo",
        ])
        .expect("valid flags");
        assert_eq!(config.addr(), "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(config.assets, PathBuf::from("/srv/app"));
        assert_eq!(config.shutdown_grace, Duration::from_millis(100));
        assert_eq!(config.ping_interval, Duration::from_secs(1));
        assert_eq!(config.idle_timeout, Duration::from_secs(3));
        assert_eq!(config.handshake_timeout, Duration::from_secs(2));
        assert_eq!(config.send_timeout, Duration::from_secs(4));
        assert_eq!(config.max_message_size, 1024 * 1024);
        assert_eq!(config.max_connections, Some(7));
        assert_eq!(config.allowed_origins.len(), 2);
        assert!(config.plain_echo);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn flag_defaults_equal_config_default() {
        // Holds unless SERVER_* variables are set in the test's environment.
        let parsed = Config::try_parse_from(["server"]).expect("no flags");
        let default = Config::default();
        assert_eq!(parsed.addr(), default.addr());
        assert_eq!(parsed.assets, default.assets);
        assert_eq!(parsed.shutdown_grace, default.shutdown_grace);
        assert_eq!(parsed.ping_interval, default.ping_interval);
        assert_eq!(parsed.idle_timeout, default.idle_timeout);
        assert_eq!(parsed.handshake_timeout, default.handshake_timeout);
        assert_eq!(parsed.send_timeout, default.send_timeout);
        assert_eq!(parsed.max_message_size, default.max_message_size);
        assert_eq!(parsed.max_connections, default.max_connections);
        assert_eq!(parsed.allowed_origins, default.allowed_origins);
        assert_eq!(parsed.max_http_connections, default.max_http_connections);
        assert_eq!(parsed.allowed_hosts, default.allowed_hosts);
        assert_eq!(parsed.plain_echo, default.plain_echo);
        assert_eq!(parsed.room_history, default.room_history);
        assert_eq!(parsed.room_rate, default.room_rate);
        assert_eq!(parsed.redis_url, default.redis_url);
        assert_eq!(default.validate(), Ok(()));
    }

    #[test]
    fn an_idle_timeout_not_above_the_ping_interval_is_refused() {
        let config = Config {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            ..Config::default()
        };
        let error = config.validate().expect_err("idle == ping");
        assert!(error.to_string().contains("--idle-timeout (30s)"), "{error}");
    }

    #[test]
    fn origins_come_comma_separated_from_the_environment_too() {
        let config =
            Config::try_parse_from(["server", "--allowed-origin", "https://a.example,null"])
                .expect("valid");
        assert_eq!(
            config.allowed_origins,
            vec!["https://a.example".parse().expect("origin"), OriginPattern::Null]
        );
    }

    #[test]
    fn hosts_and_the_http_limit_parse() {
        let config = Config::try_parse_from([
            "server",
            "--allowed-host",
            "App.Example,api.example",
            "--allowed-host",
            "other.example",
            "--max-http-connections",
            "3",
        ])
        .expect("valid");
        let hosts: Vec<String> = config.allowed_hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["app.example", "api.example", "other.example"]);
        assert_eq!(config.max_http_connections, Some(3));
        for bad in [&["--allowed-host", "a.example:80"][..], &["--max-http-connections", "0"]] {
            let err = Config::try_parse_from(std::iter::once("server").chain(bad.iter().copied()))
                .expect_err("refused");
            assert!(err.to_string().contains(bad[0]), "{err}");
        }
    }

    #[test]
    fn a_bad_origin_pattern_is_a_clear_error() {
        let err = Config::try_parse_from(["server", "--allowed-origin", "evil.example"])
            .expect_err("no scheme");
        assert!(err.to_string().contains("--allowed-origin"), "{err}");
    }

    #[test]
    fn room_flags_parse_and_refuse_nonsense() {
        let config = Config::try_parse_from([
            "server",
            "--room-history",
            "5",
            "--room-rate",
            "2",
            "--redis-url",
            "redis://127.0.0.1:6390",
        ])
        .expect("valid");
        assert_eq!((config.room_history, config.room_rate), (5, 2));
        assert_eq!(
            config.redis_url.map(|u| u.to_string()).as_deref(),
            Some("redis://127.0.0.1:6390")
        );
        for bad in [
            &["--room-history", "0"][..],
            &["--room-rate", "0"],
            &["--redis-url", "http://127.0.0.1:6379"],
        ] {
            let err = Config::try_parse_from(std::iter::once("server").chain(bad.iter().copied()))
                .expect_err("refused");
            assert!(err.to_string().contains(bad[0]), "{err}");
        }
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
