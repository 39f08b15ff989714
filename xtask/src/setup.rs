//! Installs the tools the project needs, each only when missing or at the wrong version.
//!
//! Versions: trunk is pinned here (0.22 needs a newer rustc than this toolchain); the
//! wasm-bindgen CLI must equal the `wasm-bindgen` crate in `Cargo.lock`; wasm-opt comes from
//! npm's binaryen pinned in `tools/package.json` (Debian's breaks the bundle).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::process::{apt_install, find_on_path, installing, output, run};

pub const TRUNK_VERSION: &str = "0.21.14";
/// geckodriver (not packaged by Debian) for the end-to-end tests in Firefox.
pub const GECKODRIVER_VERSION: &str = "0.37.1";
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// What `wasm-opt --version` must contain (also `[tools] wasm_opt` in Trunk.toml).
pub const WASM_OPT_VERSION: &str = "version_123";

/// Ensures every build tool; with `browser`, also what the tests run: Chromium and
/// chromedriver, Firefox ESR and geckodriver, nginx, redis-server.
pub fn tools(root: &Path, browser: bool) -> Result<()> {
    println!("==> checking tools");
    let started = Instant::now();
    wasm_target()?;
    let bindgen = wasm_bindgen_version(root)?;
    cargo_tool("wasm-bindgen", "wasm-bindgen-cli", &bindgen, &[])?;
    cargo_tool("trunk", "trunk", TRUNK_VERSION, &["--no-default-features"])?;
    wasm_opt(root)?;
    if browser {
        lint_components()?;
        chromium()?;
        firefox()?;
        cargo_tool("geckodriver", "geckodriver", GECKODRIVER_VERSION, &[])?;
        nginx()?;
        redis_server()?;
    }
    println!("    tools ready in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn wasm_target() -> Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        println!("    {WASM_TARGET} target: present");
        return Ok(());
    }
    installing(&format!("the {WASM_TARGET} target"), "a few seconds");
    run(Command::new("rustup").args(["target", "add", WASM_TARGET])).context(
        "cannot add the wasm target; install rustup (https://rustup.rs) or add the target by hand",
    )
}

/// The `wasm-bindgen` version locked in `Cargo.lock`.
pub fn wasm_bindgen_version(root: &Path) -> Result<String> {
    let lock =
        std::fs::read_to_string(root.join("Cargo.lock")).context("cannot read Cargo.lock")?;
    locked_version(&lock, "wasm-bindgen").context("no wasm-bindgen package in Cargo.lock")
}

/// Finds `version = "…"` right after `name = "<package>"` in a Cargo.lock.
pub fn locked_version(lock: &str, package: &str) -> Option<String> {
    let name_line = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name_line {
            let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_owned());
        }
    }
    None
}

/// Installs `krate` with `cargo install` unless `binary --version` already reports `version`.
///
/// `--locked` first, for the dependency versions the tool was released with; if that cannot
/// resolve (wasm-bindgen-cli 0.2.130's lock names a webpki-roots release the registry lacks),
/// once more without it.
fn cargo_tool(binary: &str, krate: &str, version: &str, extra: &[&str]) -> Result<()> {
    let found = output(binary, &["--version"]);
    let wanted = format!("{binary} {version}");
    if found.as_deref().is_some_and(|v| v.split_whitespace().take(2).eq(wanted.split(' '))) {
        println!("    {binary} {version}: present");
        return Ok(());
    }
    match found {
        Some(other) => println!("    {binary}: found `{other}`, need {version}"),
        None => println!("    {binary}: missing"),
    }
    let minutes = if krate == "trunk" { "about 13 minutes" } else { "about 2 minutes" };
    installing(&format!("{krate} {version} (cargo install)"), minutes);
    let install = |locked: bool| {
        let mut command = Command::new(crate::process::cargo_exe());
        command.args(["install", krate, "--version", version]).args(extra);
        if locked {
            command.arg("--locked");
        }
        run(&mut command)
    };
    install(true)
        .or_else(|_| {
            println!("    retrying without --locked");
            install(false)
        })
        .with_context(|| format!("cannot install {krate} {version}"))
}

/// rustfmt and clippy, which `cargo xtask test` runs (absent from rustup's minimal profile).
fn lint_components() -> Result<()> {
    let present =
        |tool: &str| output(&crate::process::cargo_exe().to_string_lossy(), &[tool, "--version"]);
    if present("fmt").is_some() && present("clippy").is_some() {
        println!("    rustfmt + clippy: present");
        return Ok(());
    }
    installing("rustfmt and clippy (rustup component add)", "a few seconds");
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
        .context("cannot add rustfmt and clippy; install them with rustup")
}

/// The npm tools pinned in `tools/package.json`: binaryen's wasm-opt and terser.
fn wasm_opt(root: &Path) -> Result<()> {
    let tools = root.join("tools");
    let binary = tools.join("node_modules/.bin/wasm-opt");
    let found = output(&binary.to_string_lossy(), &["--version"]).unwrap_or_default();
    let terser = crate::bundle::terser(root);
    let terser_found = output(&terser.to_string_lossy(), &["--version"]).unwrap_or_default();
    if found.contains(WASM_OPT_VERSION) && terser_found.ends_with(crate::bundle::TERSER_VERSION) {
        println!("    wasm-opt {WASM_OPT_VERSION} (npm binaryen), {terser_found}: present");
        return Ok(());
    }
    if output("npm", &["--version"]).is_none() {
        apt_install(&["nodejs", "npm"], "npm (to install binaryen's wasm-opt)")?;
    }
    installing("binaryen's wasm-opt and terser (npm ci in tools/)", "a few seconds");
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(&tools))
        .context("cannot install binaryen and terser from npm")
}

fn chromium() -> Result<()> {
    let driver = output("chromedriver", &["--version"]);
    let browser =
        ["chromium", "chromium-browser"].iter().any(|b| output(b, &["--version"]).is_some());
    if let (Some(driver), true) = (&driver, browser) {
        println!("    chromium + {driver}: present");
        return Ok(());
    }
    apt_install(&["chromium", "chromium-driver"], "Chromium and chromedriver (browser tests)")
}

/// Debian's Firefox ESR, the second browser of the end-to-end tests.
fn firefox() -> Result<()> {
    if let Some(version) = output("firefox-esr", &["--version"]) {
        println!("    {version}: present");
        return Ok(());
    }
    apt_install(&["firefox-esr"], "Firefox ESR (end-to-end tests)")
}

/// Debian's nginx, which the end-to-end tests run unprivileged in front of the server.
fn nginx() -> Result<()> {
    if let Some(path) = find_nginx() {
        println!("    nginx: present ({})", path.display());
        return Ok(());
    }
    apt_install(&["nginx"], "nginx (proxy tests)")
}

/// Debian's `redis-server`, which the room's Redis tests and the fan-out benchmark start
/// themselves on a free port (`redis-server --port P --save '' --appendonly no`): the package's
/// own service is never used (and in a container its start is refused, harmlessly).
pub fn redis_server() -> Result<()> {
    if let Some(path) = find_redis_server() {
        println!("    redis-server: present ({})", path.display());
        return Ok(());
    }
    apt_install(&["redis-server"], "redis-server (the room's Redis tests and benchmark)")
}

/// Debian's `valgrind` (callgrind and `callgrind_control`), which the benchmark's instruction
/// counts run the servers under.
pub fn valgrind() -> Result<()> {
    if let (Some(path), Some(_)) = (find_on_path("valgrind"), find_on_path("callgrind_control")) {
        println!("    valgrind: present ({})", path.display());
        return Ok(());
    }
    apt_install(&["valgrind"], "valgrind (the benchmark's instruction counts)")
}

/// `redis-server` on `PATH`, or where Debian puts it.
pub fn find_redis_server() -> Option<std::path::PathBuf> {
    let debian = Path::new("/usr/bin/redis-server");
    find_on_path("redis-server").or_else(|| debian.is_file().then(|| debian.to_path_buf()))
}

/// nginx on `PATH`, or where Debian puts it (`/usr/sbin`, absent from many users' `PATH`).
pub fn find_nginx() -> Option<std::path::PathBuf> {
    let debian = Path::new("/usr/sbin/nginx");
    find_on_path("nginx").or_else(|| debian.is_file().then(|| debian.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::locked_version;

    #[test]
    fn locked_version_reads_the_line_after_the_name() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n[[package]]\nname = \"wasm-bindgen-futures\"\nversion = \"0.4.80\"\n";
        assert_eq!(locked_version(lock, "wasm-bindgen").as_deref(), Some("0.2.130"));
        assert_eq!(locked_version(lock, "wasm-bindgen-futures").as_deref(), Some("0.4.80"));
        assert_eq!(locked_version(lock, "web-sys"), None);
    }
}
