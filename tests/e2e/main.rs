//! End-to-end tests: the real `server` binary serving the real trunk-built `dist/`, driven by
//! real headless Chromium (chromedriver) and Firefox (geckodriver); the same page through
//! `trunk serve` and through a real nginx.
//!
//! `cargo xtask test` builds everything first and passes `E2E_SERVER_BIN`, `E2E_DIST` and
//! `CHROMEDRIVER` (and the others of `support::Paths`); without them the defaults are the workspace's `target/debug/server`,
//! `dist/` and the drivers on `PATH`.

mod client;
mod client_polling;
mod compare;
mod deploy;
mod fallback;
mod page;
mod room_page;
mod room_redis;
mod support;
mod tls;
