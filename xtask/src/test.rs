//! `cargo xtask test`: every check, in the order that fails fastest.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::process::{cargo, cargo_exe, find_on_path, run, start_server, step};
use crate::setup::{self, WASM_TARGET};
use crate::{autobahn, bench, bundle, target_dir};

const CLIPPY_NATIVE: &[&str] =
    &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"];
const CLIPPY_WASM: &[&str] = &[
    "clippy",
    "--package",
    "web",
    "--package",
    "wire",
    "--all-targets",
    "--target",
    WASM_TARGET,
    "--locked",
    "--",
    "-D",
    "warnings",
];
const FIX_WARNINGS: &str = "fix the warnings printed above";
const SEE_FAILURES: &str = "see the failing tests above (`cargo test -p PACKAGE NAME` reruns one)";

pub fn all(root: &Path) -> Result<()> {
    let started = Instant::now();
    setup::tools(root, true)?;
    let chromedriver =
        find_on_path("chromedriver").context("chromedriver not found after setup")?;
    let nginx = setup::find_nginx().context("nginx not found after setup")?;
    let geckodriver = find_on_path("geckodriver").context("geckodriver not found after setup")?;
    let redis_server = setup::find_redis_server().context("redis-server not found after setup")?;
    let server_bin = target_dir(root).join("debug/server");
    let client_bin = target_dir(root).join("debug/client");
    let dist = root.join("dist");

    step("formatting (cargo fmt --check)", || {
        cargo(root, &["fmt", "--all", "--check"]).context("run `cargo fmt --all` to fix it")
    })?;
    step("clippy, native", || cargo(root, CLIPPY_NATIVE).context(FIX_WARNINGS))?;
    step("clippy, wasm32", || cargo(root, CLIPPY_WASM).context(FIX_WARNINGS))?;
    bundle::build_release(root)?;
    let gzip = bundle::print_size(root)?;
    if gzip > bundle::GZIP_BUDGET {
        bail!(
            "the bundle is {gzip} bytes gzipped, over the budget of {} (xtask/src/bundle.rs); \
             shrink it, or raise the budget and record the new size in the README",
            bundle::GZIP_BUDGET
        );
    }
    step("unit, integration and end-to-end tests (cargo test, no doc tests)", || {
        let mut command = Command::new(cargo_exe());
        command
            // Every target but the doc tests: the workspace has none, and rustdoc would spend
            // 16 s compiling four crates to find that out.
            .args(["test", "--workspace", "--lib", "--bins", "--tests", "--locked"])
            // Four at a time within each test binary, on any number of cores: the end-to-end
            // tests mostly wait (on browsers, reconnect timers, the page's 3 s fallback
            // deadline), not compute. On 2 cores the end-to-end binary took 100 s with two at a
            // time, 50 s with four.
            .args(["--", "--test-threads", "4"])
            .env("E2E_SERVER_BIN", &server_bin)
            .env("E2E_CLIENT_BIN", &client_bin)
            .env("E2E_DIST", &dist)
            .env("CHROMEDRIVER", &chromedriver)
            .env("NGINX", &nginx)
            .env("GECKODRIVER", &geckodriver)
            .env("REDIS_SERVER", &redis_server)
            .current_dir(root);
        run(&mut command).context(SEE_FAILURES)
    })?;
    step("browser tests (wasm-bindgen-test in headless Chromium)", || {
        let (_server, addr) = start_server(&server_bin, &dist, &[], "server=info")?;
        let mut command = Command::new(cargo_exe());
        command
            .args(["test", "--package", "web", "--target", WASM_TARGET, "--locked"])
            // Read at compile time by web/tests/browser.rs: the runner passes no environment.
            .env("WS_TEST_URL", format!("ws://{addr}{}", wire::WS_PATH))
            .env("WS_TEST_REFUSED_URL", format!("ws://127.0.0.1:{}{}", free_port()?, wire::WS_PATH))
            .env("CHROMEDRIVER", &chromedriver)
            .env("WASM_BINDGEN_TEST_DRIVER_TIMEOUT", "30")
            .env("WASM_BINDGEN_TEST_TIMEOUT", "60")
            .current_dir(root);
        run(&mut command).context(SEE_FAILURES)
    })?;
    let kosoku = autobahn::ensure_kosoku(root)?;
    step("Autobahn TestSuite cases 1-10 (kosoku) against server --plain-echo", || {
        let size = autobahn::LARGEST_MESSAGE.to_string();
        // Warnings only: the cases send hundreds of deliberately bad frames, each logged at info.
        let (_server, addr) = start_server(
            &server_bin,
            &dist,
            &["--plain-echo", "--max-message-size", &size],
            "server=warn",
        )?;
        let counts = autobahn::run_cases(root, &kosoku, &format!("ws://{addr}{}", wire::WS_PATH))?;
        println!("    {counts}");
        Ok(())
    })?;
    step("benchmark smoke run (every server answers every message)", || {
        bench::run(root, bench::Plan::SMOKE, false)
    })?;
    println!("==> all checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A port nothing listens on: bound, read and released.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
