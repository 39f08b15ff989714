//! End-to-end tests: the real `server` binary serving the real trunk-built `dist/`, driven by
//! real headless Chromium through chromedriver; and the same page through `trunk serve`.
//!
//! `cargo xtask test` builds everything first and passes `E2E_SERVER_BIN`, `E2E_DIST` and
//! `CHROMEDRIVER`; without them the defaults are the workspace's `target/debug/server`,
//! `dist/` and `chromedriver` on `PATH`.

mod page;
mod support;
