//! Running tools: the environment they need, progress lines, finding programs and installing
//! system packages (apt), and child processes that are stopped when their guard is dropped.
//! The small utilities every command uses live here, so no command module imports another.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Puts the project's tools first on `PATH` (npm's wasm-opt, cargo-installed binaries) and
/// silences trunk's update check, which cannot reach its server here.
pub fn prepare_env(root: &Path) {
    let mut paths = vec![root.join("tools/node_modules/.bin"), cargo_bin_dir()];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    if let Ok(path) = std::env::join_paths(paths) {
        std::env::set_var("PATH", path);
    }
    std::env::set_var("TRUNK_SKIP_VERSION_CHECK", "true");
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home).join("bin"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo/bin"),
    }
}

/// Runs one named step with a progress line before and its duration after.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f().with_context(|| format!("step failed: {name}"))?;
    println!("    {name}: done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(result)
}

/// Runs `cargo ARGS` in the workspace root.
pub fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    run(Command::new(cargo_exe()).args(args).current_dir(root))
}

/// The cargo running this xtask (so `+toolchain` overrides carry over).
pub fn cargo_exe() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs a command with inherited output and fails with its command line if it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    let status =
        command.status().with_context(|| format!("cannot start `{line}`; is it installed?"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout, or `None` if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The first `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// `apt-get update` then `apt-get install -y PACKAGES` (through sudo when not root).
pub fn apt_install(packages: &[&str], what: &str) -> Result<()> {
    installing(&format!("{what} with apt-get"), "under a minute");
    let root_user = output("id", &["-u"]).as_deref() == Some("0");
    let sudo: &[&str] = if root_user { &[] } else { &["sudo", "-n"] };
    if output("apt-get", &["--version"]).is_none() {
        bail!("apt-get not found: install {} with your package manager", packages.join(" "));
    }
    let apt = |args: &[&str]| {
        // Through `env`, so the setting survives sudo's environment reset.
        let mut words: Vec<&str> = sudo.to_vec();
        words.extend_from_slice(&["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        words.extend_from_slice(args);
        run(Command::new(words[0]).args(&words[1..]))
    };
    apt(&["update"])
        .context("apt-get update failed (run as root, or allow sudo without a password)")?;
    let mut install = vec!["install", "-y"];
    install.extend_from_slice(packages);
    apt(&install).with_context(|| format!("cannot install {}", packages.join(" ")))
}

/// The progress line before an install.
pub fn installing(what: &str, how_long: &str) {
    println!("    installing {what}; this takes {how_long}");
}

fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Replaces this process with the server, so Ctrl-C and signals reach it directly.
pub fn exec_server(root: &Path, binary: &Path, args: &[String]) -> Result<()> {
    let mut command = Command::new(binary);
    command.args(args).current_dir(root);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        Err(error).with_context(|| format!("cannot start {}", binary.display()))
    }
    #[cfg(not(unix))]
    run(&mut command)
}

/// The server as a child process; stopped (SIGTERM, then SIGKILL) when dropped. It shares
/// xtask's process group, so Ctrl-C in the terminal reaches it as well.
pub struct Guard {
    child: Child,
}

impl Guard {
    /// Starts `command` behind a guard (for children that announce nothing: poll for them).
    pub fn spawn(command: &mut Command) -> Result<Self> {
        let line = describe(command);
        let child = command.spawn().with_context(|| format!("cannot start `{line}`"))?;
        Ok(Self { child })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal("TERM", &self.child.id().to_string());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on: bound, read and released.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `127.0.0.1:port` accepts a TCP connection, at most `limit`.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            bail!("nothing accepted connections on {addr} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `kill -s SIG -- TARGET` with `sh`'s built-in `kill` (no procps needed). Returns whether it
/// worked.
pub fn signal(sig: &str, target: &str) -> bool {
    Command::new("sh")
        .args(["-c", "kill -s \"$0\" -- \"$1\"", sig, target])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts the server binary on a free port (with `extra` flags and `RUST_LOG=log_filter`) and
/// returns once it printed its URL.
pub fn start_server(
    binary: &Path,
    assets: &Path,
    extra: &[&str],
    log_filter: &str,
) -> Result<(Guard, SocketAddr)> {
    if !binary.is_file() {
        bail!("{} does not exist; build it with `cargo build -p server`", binary.display());
    }
    let mut command = Command::new(binary);
    command
        .args(["--host", "127.0.0.1", "--port", "0", "--assets"])
        .arg(assets)
        .args(extra)
        .env("RUST_LOG", log_filter);
    start_announcing(command)
}

/// Starts any server that prints a [`wire::SERVING_ON`] line (ours, or a benchmark's
/// reference) and returns once it did.
pub fn start_announcing(mut command: Command) -> Result<(Guard, SocketAddr)> {
    let line = describe(&command);
    command.stdout(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("cannot start `{line}`"))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let guard = Guard { child };
    let addr = read_served_addr(stdout, Duration::from_secs(60))
        .with_context(|| format!("`{line}` did not announce its address"))?;
    Ok((guard, addr))
}

/// Reads the server's [`wire::SERVING_ON`] line (then keeps echoing its stdout).
fn read_served_addr(stdout: std::process::ChildStdout, limit: Duration) -> Result<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match wire::served_addr(&line) {
                Some(addr) if !sent => sent = tx.send(addr).is_ok(),
                _ => println!("server: {line}"),
            }
        }
    });
    rx.recv_timeout(limit).context("the server did not print its address in time")
}
