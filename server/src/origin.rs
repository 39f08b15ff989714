//! The origin check against cross-site WebSocket hijacking: which browser pages may open `/ws/`;
//! and the `Host` check ([`HostPolicy`]) against malformed requests and DNS rebinding.
//!
//! Browsers let any page open a WebSocket to any server, sending the victim's cookies along;
//! the `Origin` header, which a page cannot forge, is the server's only defence. The policy:
//!
//! 1. No `Origin` header: accepted. Browsers always send one on a WebSocket handshake, so this
//!    is a non-browser client (the `client` binary, a load tester), which could forge any header
//!    anyway.
//! 2. An origin whose host name equals the host the request was made to: accepted, whatever
//!    the scheme or port. Cookies are not isolated by port or scheme either, so a check by port
//!    would add no protection, and it would break every proxy that rewrites the port away
//!    (nginx with the tutorial's `proxy_set_header Host $host`, `trunk serve`).
//! 3. An origin matching an `--allowed-origin` pattern: accepted.
//! 4. Everything else, including `Origin: null` (sandboxed frames, `file:` pages), is refused
//!    with 403 and a body that names the flag that would allow it.
//!
//! "The host the request was made to" is read from `Host` and from `X-Forwarded-Host` (each of
//! its comma-separated values). Trusting the forwarded header is safe here even without a
//! trusted proxy: the attack runs in a victim's browser, and a page can neither set
//! `X-Forwarded-Host` on a WebSocket handshake nor change `Origin`; a client that can set
//! headers freely is not a browser and could forge `Origin` too. `Forwarded:` (RFC 7239) is not
//! read: none of the proxies we document sets it.
//!
//! **DNS rebinding** defeats the origin check: a page on `attacker.example` whose name the
//! attacker re-points at 127.0.0.1 is same-origin with the server as far as the browser knows,
//! and sends `Host: attacker.example` with a matching `Origin`. Only the host name tells the
//! request apart, so [`HostPolicy`] checks it on every request (pages, `/metrics`, upgrades):
//!
//! 1. An HTTP/1.1 request without `Host`, any request with more than one, or with one that is
//!    not `host[:port]`, gets 400 (RFC 9112 §3.2).
//! 2. Without `--allowed-host`, any name is served: every documented setup (a proxy passing
//!    the public name, `trunk serve`, the page served directly) keeps working unconfigured.
//! 3. With it, each name in `Host` and in `X-Forwarded-Host` must be listed, be an IP address
//!    or be `localhost` (or under `.localhost`); anything else gets 421. An IP address or
//!    `localhost` cannot be a rebinding: a browser sends it only for a page loaded from that
//!    very address, so health checks by IP and `trunk serve` (which sends `Host: 127.0.0.1`)
//!    need no entry. `--allowed-host localhost` therefore means "addresses and localhost only".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::header::{HOST, ORIGIN};
use axum::http::uri::{Authority, Uri};
use axum::http::{HeaderMap, Version};

/// `X-Forwarded-Host`, set by `trunk serve` and by most reverse proxies.
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// One `--allowed-origin` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: any origin, even `null` or a malformed one (turns the check off).
    Any,
    /// `null`: the opaque origin of sandboxed frames and `file:` pages.
    Null,
    /// `scheme://host[:port]`, or with port `*` for any port (`http://127.0.0.1:*`).
    Origin { scheme: String, host: String, port: PortPattern },
}

/// The port part of an [`OriginPattern::Origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    /// Exactly this port (the scheme's default when the pattern names none).
    Exact(u16),
    /// `:*`
    Any,
}

/// Why an `--allowed-origin` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an origin pattern: expected `scheme://host[:port]` with scheme http or \
     https and port a number or `*` (e.g. `https://app.example`, `http://127.0.0.1:*`), \
     `null`, or `*`"
)]
pub struct BadPattern(String);

impl FromStr for OriginPattern {
    type Err = BadPattern;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text {
            "*" => return Ok(Self::Any),
            "null" => return Ok(Self::Null),
            _ => {}
        }
        let bad = || BadPattern(text.to_owned());
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (authority, port) = match rest.strip_suffix(":*") {
            Some(host) => (host, Some(PortPattern::Any)),
            None => (rest, None),
        };
        let parsed = Origin::parse(&format!("{scheme}://{authority}")).ok_or_else(bad)?;
        let port = port.unwrap_or(PortPattern::Exact(parsed.port));
        Ok(Self::Origin { scheme: parsed.scheme, host: parsed.host, port })
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Null => f.write_str("null"),
            Self::Origin { scheme, host, port: PortPattern::Any } => {
                write!(f, "{scheme}://{host}:*")
            }
            Self::Origin { scheme, host, port: PortPattern::Exact(port) } => {
                write!(f, "{scheme}://{host}:{port}")
            }
        }
    }
}

/// A browser origin, `scheme://host:port`, lower-cased, with the default port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let uri: Uri = text.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        // An origin has no path, query or user info.
        let authority = uri.authority()?;
        if !matches!(uri.path(), "" | "/")
            || uri.query().is_some()
            || authority.as_str().contains('@')
        {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self { scheme, host, port: authority.port_u16().unwrap_or(default_port) })
    }
}

impl OriginPattern {
    fn matches(&self, origin: &Origin) -> bool {
        match self {
            Self::Any => true,
            Self::Null => false,
            Self::Origin { scheme, host, port } => {
                *scheme == origin.scheme
                    && *host == origin.host
                    && match port {
                        PortPattern::Any => true,
                        PortPattern::Exact(port) => *port == origin.port,
                    }
            }
        }
    }
}

/// Why an upgrade's origin was refused; the text is the 403 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginRefused {
    #[error(
        "Origin `null` may not open a WebSocket here (sandboxed frames and file: pages send it); \
         start the server with --allowed-origin null to allow it"
    )]
    Null,
    #[error(
        "Origin `{origin}` may not open a WebSocket here: it is not a page of {hosts}; start the \
         server with --allowed-origin {origin} to allow it"
    )]
    Foreign { origin: String, hosts: String },
    #[error("the Origin header `{0}` is not a valid origin (scheme://host[:port])")]
    Malformed(String),
}

/// The configured policy: the same-host rule plus `--allowed-origin` patterns.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<OriginPattern>,
}

impl OriginPolicy {
    pub fn new(allowed: Vec<OriginPattern>) -> Self {
        Self { allowed }
    }

    /// Accepts or refuses an upgrade request by its headers (see the module docs for the rules).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefused> {
        let Some(value) = headers.get(ORIGIN) else { return Ok(()) };
        if self.allowed.contains(&OriginPattern::Any) {
            return Ok(());
        }
        let text = value.to_str().map_err(|_| OriginRefused::Malformed(lossy(value.as_bytes())))?;
        let text = text.trim();
        if text == "null" {
            let allowed = self.allowed.contains(&OriginPattern::Null);
            return if allowed { Ok(()) } else { Err(OriginRefused::Null) };
        }
        let origin = Origin::parse(text).ok_or_else(|| OriginRefused::Malformed(text.into()))?;
        let hosts = request_hosts(headers);
        if hosts.contains(&origin.host)
            || self.allowed.iter().any(|pattern| pattern.matches(&origin))
        {
            return Ok(());
        }
        let hosts = match hosts.as_slice() {
            [] => "this server (the request named no host)".to_owned(),
            hosts => format!("the host {}", hosts.join(" or ")),
        };
        Err(OriginRefused::Foreign { origin: text.to_owned(), hosts })
    }
}

/// Host names (no port, lower case) from `Host` and every `X-Forwarded-Host` value.
fn request_hosts(headers: &HeaderMap) -> Vec<String> {
    let forwarded = headers
        .get_all(X_FORWARDED_HOST)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .into_iter()
        .chain(forwarded)
        .filter_map(|text| text.trim().parse::<Authority>().ok())
        .map(|authority| authority.host().to_ascii_lowercase())
        .fold(Vec::new(), |mut hosts, host| {
            // A proxy usually sends the same host twice (Host and X-Forwarded-Host).
            if !hosts.contains(&host) {
                hosts.push(host);
            }
            hosts
        })
}

/// One `--allowed-host` value: a host name, lower case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost(String);

/// Why an `--allowed-host` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host name: expected a name such as `app.example`, without scheme or port")]
pub struct BadHost(String);

impl FromStr for AllowedHost {
    type Err = BadHost;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || BadHost(text.to_owned());
        let authority: Authority = text.parse().map_err(|_| bad())?;
        if text.is_empty() || authority.port().is_some() || text.contains('@') {
            return Err(bad());
        }
        Ok(Self(authority.host().to_ascii_lowercase()))
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a request was refused for its `Host` (or `X-Forwarded-Host`); the text is the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefused {
    #[error("an HTTP/1.1 request must have a Host header (RFC 9112 section 3.2)")]
    Missing,
    #[error("a request must have one Host header, not several (RFC 9112 section 3.2)")]
    Repeated,
    #[error("the Host header `{0}` is not host[:port]")]
    Malformed(String),
    #[error(
        "this server does not answer to the host name `{0}`; start it with --allowed-host {0} \
         to allow it"
    )]
    NotAllowed(String),
}

impl HostRefused {
    /// 400 for a malformed request, 421 (Misdirected Request) for a name not served here.
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            Self::NotAllowed(_) => axum::http::StatusCode::MISDIRECTED_REQUEST,
            _ => axum::http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The `Host` rules (module docs): well-formed always, one of `--allowed-host` when set.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    allowed: Vec<AllowedHost>,
}

impl HostPolicy {
    pub fn new(allowed: Vec<AllowedHost>) -> Self {
        Self { allowed }
    }

    /// Accepts or refuses a request by its version and headers.
    pub fn check(&self, version: Version, headers: &HeaderMap) -> Result<(), HostRefused> {
        let mut hosts = headers.get_all(HOST).iter();
        match (hosts.next(), hosts.next()) {
            (_, Some(_)) => return Err(HostRefused::Repeated),
            (None, None) if version == Version::HTTP_11 => return Err(HostRefused::Missing),
            (Some(host), None) => {
                let text =
                    host.to_str().map_err(|_| HostRefused::Malformed(lossy(host.as_bytes())))?;
                if text.trim().parse::<Authority>().is_err() || text.contains('@') {
                    return Err(HostRefused::Malformed(text.to_owned()));
                }
            }
            (None, None) => {}
        }
        if self.allowed.is_empty() {
            return Ok(());
        }
        match request_hosts(headers).into_iter().find(|host| !self.allows(host)) {
            Some(host) => Err(HostRefused::NotAllowed(host)),
            None => Ok(()),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let unbracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        unbracketed.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.allowed.iter().any(|allowed| allowed.0 == host)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn policy(patterns: &[&str]) -> OriginPolicy {
        OriginPolicy::new(patterns.iter().map(|p| p.parse().expect("pattern")).collect())
    }

    #[test]
    fn no_origin_is_a_non_browser_client_and_accepted() {
        assert_eq!(policy(&[]).check(&headers(&[("host", "example.com")])), Ok(()));
    }

    #[test]
    fn the_page_served_by_the_server_itself_is_accepted() {
        let request = headers(&[("host", "127.0.0.1:8888"), ("origin", "http://127.0.0.1:8888")]);
        assert_eq!(policy(&[]).check(&request), Ok(()));
    }

    #[test]
    fn a_proxy_that_drops_the_port_from_host_is_accepted() {
        // nginx with `proxy_set_header Host $host;` listening on 8443: Tornado answers 403 here.
        let request = headers(&[("host", "example.com"), ("origin", "https://example.com:8443")]);
        assert_eq!(policy(&[]).check(&request), Ok(()));
    }

    #[test]
    fn trunk_serve_is_accepted_through_x_forwarded_host() {
        // trunk replaces Host with its backend's and keeps the browser's in X-Forwarded-Host.
        let request = headers(&[
            ("host", "127.0.0.1"),
            ("x-forwarded-host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert_eq!(policy(&[]).check(&request), Ok(()));
    }

    #[test]
    fn host_names_compare_case_insensitively_and_ipv6_works() {
        let request = headers(&[("host", "Example.COM"), ("origin", "https://example.com")]);
        assert_eq!(policy(&[]).check(&request), Ok(()));
        let request = headers(&[("host", "[::1]:8888"), ("origin", "http://[::1]:9000")]);
        assert_eq!(policy(&[]).check(&request), Ok(()));
    }

    #[test]
    fn a_foreign_origin_is_refused_with_the_flag_that_allows_it() {
        let request = headers(&[("host", "127.0.0.1:8888"), ("origin", "http://evil.example")]);
        let refused = policy(&[]).check(&request).expect_err("foreign");
        let body = refused.to_string();
        assert!(body.contains("--allowed-origin http://evil.example"), "{body}");
        assert!(body.contains("127.0.0.1"), "{body}");
    }

    #[test]
    fn the_refusal_names_each_host_once() {
        let request = headers(&[
            ("host", "example.com"),
            ("x-forwarded-host", "example.com:8443"),
            ("origin", "http://evil.example"),
        ]);
        let body = policy(&[]).check(&request).expect_err("foreign").to_string();
        assert!(body.contains("not a page of the host example.com;"), "{body}");
    }

    #[test]
    fn a_lookalike_host_is_refused() {
        let request =
            headers(&[("host", "example.com"), ("origin", "https://example.com.evil.example")]);
        assert!(policy(&[]).check(&request).is_err());
    }

    #[test]
    fn null_is_refused_unless_allowed_explicitly() {
        let request = headers(&[("host", "example.com"), ("origin", "null")]);
        assert_eq!(policy(&[]).check(&request), Err(OriginRefused::Null));
        assert_eq!(policy(&["https://example.com"]).check(&request), Err(OriginRefused::Null));
        assert_eq!(policy(&["null"]).check(&request), Ok(()));
        assert_eq!(policy(&["*"]).check(&request), Ok(()));
    }

    #[test]
    fn allowed_origins_match_scheme_host_and_port() {
        let allowed = policy(&["https://app.example", "http://127.0.0.1:*"]);
        let from = |origin: &'static str| headers(&[("host", "api.example"), ("origin", origin)]);
        assert_eq!(allowed.check(&from("https://app.example")), Ok(()));
        assert_eq!(allowed.check(&from("https://app.example:443")), Ok(()));
        assert!(allowed.check(&from("http://app.example")).is_err(), "scheme differs");
        assert!(allowed.check(&from("https://app.example:8443")).is_err(), "port differs");
        assert_eq!(allowed.check(&from("http://127.0.0.1:41234")), Ok(()));
        assert!(allowed.check(&from("https://127.0.0.1:41234")).is_err(), "scheme differs");
        assert_eq!(policy(&["*"]).check(&from("https://anything.example")), Ok(()));
    }

    #[test]
    fn a_malformed_origin_is_refused() {
        for origin in ["evil.example", "ftp://example.com", "http://", "http://a.example/path"] {
            let request = headers(&[("host", "a.example"), ("origin", origin)]);
            assert!(
                matches!(policy(&[]).check(&request), Err(OriginRefused::Malformed(_))),
                "{origin}"
            );
            assert_eq!(policy(&["*"]).check(&request), Ok(()), "`*` turns the check off");
        }
    }

    fn hosts(allowed: &[&str]) -> HostPolicy {
        HostPolicy::new(allowed.iter().map(|h| h.parse().expect("host")).collect())
    }

    #[test]
    fn host_must_be_there_once_in_http_1_1() {
        let any = hosts(&[]);
        assert_eq!(any.check(Version::HTTP_11, &headers(&[])), Err(HostRefused::Missing));
        assert_eq!(any.check(Version::HTTP_10, &headers(&[])), Ok(()));
        let twice = headers(&[("host", "a.example"), ("host", "a.example")]);
        assert_eq!(any.check(Version::HTTP_11, &twice), Err(HostRefused::Repeated));
        let bad = headers(&[("host", "a b")]);
        assert!(matches!(any.check(Version::HTTP_11, &bad), Err(HostRefused::Malformed(_))));
        let fine = headers(&[("host", "anything.example:8443")]);
        assert_eq!(any.check(Version::HTTP_11, &fine), Ok(()));
        assert_eq!(HostRefused::Missing.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn with_allowed_hosts_only_those_addresses_and_localhost_are_served() {
        let policy = hosts(&["app.example"]);
        let check = |pairs: &[(&'static str, &'static str)]| {
            policy.check(Version::HTTP_11, &headers(pairs))
        };
        for host in ["app.example:443", "APP.example", "127.0.0.1:8888", "[::1]:8888", "localhost"]
        {
            let request = headers(&[("host", Box::leak(host.to_owned().into_boxed_str()))]);
            assert_eq!(policy.check(Version::HTTP_11, &request), Ok(()), "{host}");
        }
        assert_eq!(check(&[("host", "dev.localhost:8080")]), Ok(()));
        // DNS rebinding: the attacker's name, pointed at 127.0.0.1.
        let refused = check(&[("host", "attacker.example:8888")]).expect_err("rebinding");
        assert_eq!(refused, HostRefused::NotAllowed("attacker.example".into()));
        assert_eq!(refused.status(), axum::http::StatusCode::MISDIRECTED_REQUEST);
        assert!(refused.to_string().contains("--allowed-host attacker.example"), "{refused}");
        // ... also through `trunk serve`, which sends Host: 127.0.0.1 and the browser's host
        // in X-Forwarded-Host.
        let through_trunk =
            check(&[("host", "127.0.0.1"), ("x-forwarded-host", "attacker.example:8080")]);
        assert!(through_trunk.is_err());
        assert_eq!(check(&[("host", "127.0.0.1"), ("x-forwarded-host", "localhost:8080")]), Ok(()));
    }

    #[test]
    fn allowed_hosts_parse() {
        assert_eq!(
            "App.Example".parse::<AllowedHost>().map(|h| h.to_string()),
            Ok("app.example".into())
        );
        for bad in ["", "a.example:80", "https://a.example", "a b", "user@a.example"] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for (text, shown) in [
            ("https://App.Example", "https://app.example:443"),
            ("http://127.0.0.1:*", "http://127.0.0.1:*"),
            ("http://localhost:8080/", "http://localhost:8080"),
            ("null", "null"),
            ("*", "*"),
        ] {
            let pattern: OriginPattern = text.parse().expect(text);
            assert_eq!(pattern.to_string(), shown);
        }
        for bad in ["example.com", "ws://example.com", "https://a.example/x", "https://:80", ""] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad:?} should be refused");
        }
    }
}
