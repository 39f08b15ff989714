//! Test harness: child processes behind guards, readiness polled with deadlines, and a
//! WebDriver session in headless Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use web::page::LOG_ID;

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// Where the pieces under test are.
#[derive(Debug)]
pub struct Paths {
    pub root: PathBuf,
    pub server_bin: PathBuf,
    pub dist: PathBuf,
    pub chromedriver: PathBuf,
    /// Scratch space for screenshots, logs and the trunk test's config.
    pub out: PathBuf,
}

impl Paths {
    pub fn get() -> Result<Self> {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let var = |name: &str, default: PathBuf| {
            std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
        };
        let paths = Self {
            server_bin: var("E2E_SERVER_BIN", target.join("debug/server")),
            dist: var("E2E_DIST", root.join("dist")),
            chromedriver: var("CHROMEDRIVER", PathBuf::from("chromedriver")),
            out: target.join("e2e"),
            root,
        };
        if !paths.server_bin.is_file() {
            bail!(
                "no server binary at {}: run `cargo xtask test` (or `cargo build -p server`)",
                paths.server_bin.display()
            );
        }
        if !paths.dist.join("index.html").is_file() {
            bail!(
                "no bundle in {}: run `cargo xtask build` (or `trunk build --release`)",
                paths.dist.display()
            );
        }
        std::fs::create_dir_all(&paths.out).context("create target/e2e")?;
        Ok(paths)
    }
}

/// A child process with its output captured, killed when the guard is dropped (also when a
/// test panics).
pub struct Proc {
    name: &'static str,
    child: tokio::process::Child,
    output: Arc<Mutex<String>>,
    group: bool,
}

impl Proc {
    /// Spawns a single process. It stays in the test's process group, so Ctrl-C on the test
    /// run reaches it too.
    pub fn spawn(name: &'static str, command: &mut Command) -> Result<Self> {
        Self::spawn_inner(name, command, false)
    }

    /// Spawns a process that starts children of its own (chromedriver starts Chromium, trunk
    /// starts cargo) in a new process group, so dropping the guard stops all of them.
    pub fn spawn_group(name: &'static str, command: &mut Command) -> Result<Self> {
        Self::spawn_inner(name, command, true)
    }

    fn spawn_inner(name: &'static str, command: &mut Command, group: bool) -> Result<Self> {
        if group {
            command.process_group(0);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child =
            command.spawn().with_context(|| format!("cannot start {name} ({command:?})"))?;
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            collect(stdout, Arc::clone(&output));
        }
        if let Some(stderr) = child.stderr.take() {
            collect(stderr, Arc::clone(&output));
        }
        Ok(Self { name, child, output, group })
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Polls the captured output until `find` extracts something, the process exits, or the
    /// deadline passes (then the error carries the output).
    pub async fn wait_for_output<T>(
        &mut self,
        limit: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = find(&self.output()) {
                return Ok(found);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                bail!("{} not ready after {limit:?}; output:\n{}", self.name, self.output());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM to the process (not its group): a graceful stop.
    pub fn terminate(&self) -> Result<()> {
        let pid = self.child.id().context("process already reaped")?;
        anyhow::ensure!(signal("TERM", &pid.to_string()), "kill -TERM {pid} failed");
        Ok(())
    }

    /// Waits for the process to exit on its own.
    pub async fn wait(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| {
                format!("{} still running after {limit:?}; output:\n{}", self.name, self.output())
            })?
            .context("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let (true, Some(pid)) = (self.group, self.child.id()) {
            signal("KILL", &format!("-{pid}"));
        }
        let _ = self.child.start_kill();
    }
}

/// `kill -s SIG -- TARGET` with `sh`'s built-in `kill` (no procps needed); a negative target
/// is a process group. Returns whether it worked.
fn signal(sig: &str, target: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", "kill -s \"$0\" -- \"$1\"", sig, target])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, output: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut output) = output.lock() {
                output.push_str(&line);
                output.push('\n');
            }
        }
    });
}

/// A port that was free a moment ago (for children that cannot be handed a listener).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listening on {addr} after {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// The real `server` binary on a free port.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Server {
    pub async fn start(paths: &Paths) -> Result<Self> {
        let mut command = Command::new(&paths.server_bin);
        command
            .args(["--host", "127.0.0.1", "--port", "0", "--assets"])
            .arg(&paths.dist)
            .env("RUST_LOG", "server=debug");
        let mut proc = Proc::spawn("server", &mut command)?;
        let addr = proc
            .wait_for_output(Duration::from_secs(30), |out| out.lines().find_map(wire::served_addr))
            .await?;
        Ok(Self { proc, addr })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// chromedriver plus one headless Chromium session.
pub struct Browser {
    pub client: Client,
    _driver: Proc,
}

impl Browser {
    pub async fn start(paths: &Paths) -> Result<Self> {
        // Port 0: chromedriver picks a free port and prints it.
        let mut command = Command::new(&paths.chromedriver);
        command.arg("--port=0");
        let mut driver = Proc::spawn_group("chromedriver", &mut command)?;
        let port: u16 = driver
            .wait_for_output(Duration::from_secs(30), |out| {
                let rest = out.split("started successfully on port ").nth(1)?;
                rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
            })
            .await?;

        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=900,520", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-quic",
                ]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else { bail!("capabilities") };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .with_context(|| {
                format!(
                    "cannot start a Chromium session; chromedriver output:\n{}",
                    driver.output()
                )
            })?;
        Ok(Self { client, _driver: driver })
    }

    /// The text of each line in the page's log, exactly as inserted.
    pub async fn log_lines(&self) -> Result<Vec<String>> {
        let script = format!(
            "return Array.from(document.querySelectorAll('#{LOG_ID} p'), p => p.textContent);"
        );
        let value = self.client.execute(&script, vec![]).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// The log element's `data-status` attribute.
    pub async fn status(&self) -> Result<Option<String>> {
        let value = self
            .client
            .execute(&format!("return document.getElementById('{LOG_ID}').dataset.status;"), vec![])
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Polls the log until it has at least `count` lines.
    pub async fn wait_for_lines(&self, count: usize, limit: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.log_lines().await?;
            if lines.len() >= count {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!("the page logged {lines:?} after {limit:?}, expected {count} lines");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}
