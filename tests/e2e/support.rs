//! Test harness: child processes behind guards, readiness polled with deadlines, and a
//! WebDriver session in headless Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use web::page::LOG_ID;
use web::room_page::{LOG_ID as ROOM_LOG_ID, STATUS_ID as ROOM_STATUS_ID};

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// Where the pieces under test are.
#[derive(Debug)]
pub struct Paths {
    pub root: PathBuf,
    pub server_bin: PathBuf,
    /// The command-line `client` binary.
    pub client_bin: PathBuf,
    pub dist: PathBuf,
    pub chromedriver: PathBuf,
    /// geckodriver (from crates.io) and Debian's Firefox ESR.
    pub geckodriver: PathBuf,
    pub firefox: PathBuf,
    /// Debian's nginx (`/usr/sbin/nginx`), for the proxy tests.
    pub nginx: PathBuf,
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
            client_bin: var("E2E_CLIENT_BIN", target.join("debug/client")),
            dist: var("E2E_DIST", root.join("dist")),
            chromedriver: var("CHROMEDRIVER", PathBuf::from("chromedriver")),
            geckodriver: var("GECKODRIVER", PathBuf::from("geckodriver")),
            firefox: var("FIREFOX", PathBuf::from("/usr/bin/firefox-esr")),
            nginx: var("NGINX", PathBuf::from("/usr/sbin/nginx")),
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
        Self::start_with(paths, &[]).await
    }

    /// The server with extra flags (e.g. short keepalive intervals).
    pub async fn start_with(paths: &Paths, args: &[&str]) -> Result<Self> {
        Self::start_on(paths, 0, args).await
    }

    /// The server on `port` (0: a free one), e.g. to restart it where the page expects it.
    pub async fn start_on(paths: &Paths, port: u16, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(&paths.server_bin);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--assets"])
            .arg(&paths.dist)
            .args(args)
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

    /// The value of one sample in the server's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let metrics = http_get(self.addr, wire::METRICS_PATH).await?;
        Ok(metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Polls `/metrics` until `name` reaches `value`.
    pub async fn wait_for_metric(&self, name: &str, value: f64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.metric(name).await?;
            if now >= value {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} is {now} after {limit:?}, expected {value}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Sends `request` as it is and reads the whole response (the request should ask the server
/// to close: HTTP/1.0 or `Connection: close`); returns the head and the body's bytes.
pub async fn http_raw(addr: SocketAddr, request: &str) -> Result<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .context("response in time")??;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("no response head")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    Ok((head, response[split + 4..].to_vec()))
}

/// A header's value in a response head (case-insensitive name), if present.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// `GET path` over HTTP/1.0 (the server closes after the response); returns the body of a
/// 200 response.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
        .await
        .context("response in time")??;
    let (head, body) = response.split_once("\r\n\r\n").context("no response head")?;
    ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET {path}: {head}"
    );
    Ok(body.to_owned())
}

/// Debian's nginx, unprivileged, with a config of its own under a scratch prefix, on free
/// ports; stopped (with its workers) when dropped.
pub struct Nginx {
    pub proc: Proc,
    /// The first address it listens on.
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
}

impl Nginx {
    /// Starts nginx with `server_body` (directives inside `server { listen ...; }`).
    pub async fn start(paths: &Paths, name: &str, server_body: &str) -> Result<Self> {
        Self::start_http(paths, name, 1, |addrs| {
            Ok(format!("server {{\n    listen {};\n{server_body}\n}}", addrs[0]))
        })
        .await
    }

    /// Starts nginx with the `http` block's contents that `config` writes for `ports` free
    /// addresses to listen on (with mime types, temp paths and logs set up around it).
    pub async fn start_http(
        paths: &Paths,
        name: &str,
        ports: usize,
        config: impl FnOnce(&[SocketAddr]) -> Result<String>,
    ) -> Result<Self> {
        let prefix = paths.out.join(format!("nginx-{name}"));
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("logs"))?;
        let addrs = (0..ports)
            .map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))))
            .collect::<Result<Vec<_>>>()?;
        let body = config(&addrs)?;
        let p = prefix.display();
        // Every path nginx writes is inside the prefix, so it runs as any user.
        let config = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  \
             access_log off;\n  client_body_temp_path {p}/client_body;\n  \
             proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  \
             uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n{body}\n}}\n"
        );
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let mut command = Command::new(&paths.nginx);
        command.arg("-p").arg(&prefix).arg("-c").arg(&conf).args(["-g", "daemon off;"]);
        let proc = Proc::spawn_group("nginx", &mut command).with_context(|| {
            format!("cannot start {} (`cargo xtask test` installs it)", paths.nginx.display())
        })?;
        for addr in &addrs {
            wait_for_port(*addr, Duration::from_secs(30)).await.with_context(|| {
                let log =
                    std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
                format!("nginx output:\n{}\nerror.log:\n{log}", proc.output())
            })?;
        }
        Ok(Self { proc, addr: addrs[0], addrs })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Which browser a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }
}

/// Starts the engine's WebDriver on port 0 and reads the port it took.
///
/// chromedriver with `--port=0` takes a free port on one address family and then binds the
/// same number on the other, which fails when that one is taken there (seen on a machine with
/// tens of thousands of loopback sockets, right after `cargo xtask bench`): it then prints
/// "port not available" and exits, and is started again, three times at most.
///
/// Each browser gets a new profile in the driver's `TMPDIR`, put in memory (`/dev/shm`) where
/// there is one: a new profile is tens of megabytes of SQLite files, each fsynced, and with
/// four tests at a time beside builds and Redis on a busy disk, Firefox once took 56 s to
/// start and geckodriver gave up ("Failed to read marionette port").
async fn start_driver(paths: &Paths, engine: Engine) -> Result<(Proc, u16)> {
    const ATTEMPTS: usize = 3;
    let in_memory = Path::new("/dev/shm");
    let mut attempt = 1;
    loop {
        let (mut command, name, marker) = match engine {
            Engine::Chromium => {
                let mut command = Command::new(&paths.chromedriver);
                command.arg("--port=0");
                (command, "chromedriver", "started successfully on port ")
            }
            Engine::Firefox => {
                let mut command = Command::new(&paths.geckodriver);
                command.args(["--port", "0"]);
                (command, "geckodriver", "Listening on 127.0.0.1:")
            }
        };
        if in_memory.is_dir() {
            command.env("TMPDIR", in_memory);
        }
        let mut driver = Proc::spawn_group(name, &mut command)?;
        let port = driver
            .wait_for_output(Duration::from_secs(30), |out| {
                let rest = out.split(marker).nth(1)?;
                rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u16>().ok()
            })
            .await;
        match port {
            Ok(port) => return Ok((driver, port)),
            Err(_) if attempt < ATTEMPTS && driver.output().contains("port not available") => {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A WebDriver (chromedriver or geckodriver) plus one headless browser session.
pub struct Browser {
    pub client: Client,
    pub engine: Engine,
    _driver: Proc,
}

impl Browser {
    /// Headless Chromium.
    pub async fn start(paths: &Paths) -> Result<Self> {
        Self::start_engine(paths, Engine::Chromium).await
    }

    pub async fn start_engine(paths: &Paths, engine: Engine) -> Result<Self> {
        Self::start_custom(paths, engine, &[]).await
    }

    /// A browser with `extra` command-line arguments (Chromium only).
    pub async fn start_custom(paths: &Paths, engine: Engine, extra: &[String]) -> Result<Self> {
        let (driver, port) = start_driver(paths, engine).await?;

        let capabilities = match engine {
            Engine::Chromium => {
                let mut args: Vec<String> = [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=900,620",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                ]
                .map(str::to_owned)
                .to_vec();
                args.extend_from_slice(extra);
                serde_json::json!({ "goog:chromeOptions": { "args": args } })
            }
            Engine::Firefox => serde_json::json!({
                "moz:firefoxOptions": {
                    "binary": paths.firefox,
                    "args": ["-headless", "-width=900", "-height=620"],
                    "prefs": {
                        "app.update.enabled": false,
                        "browser.shell.checkDefaultBrowser": false,
                        "network.captive-portal-service.enabled": false,
                        "datareporting.policy.dataSubmissionEnabled": false,
                    }
                }
            }),
        };
        let serde_json::Value::Object(capabilities) = capabilities else { bail!("capabilities") };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .with_context(|| {
                format!(
                    "cannot start a {} session; driver output:\n{}",
                    engine.name(),
                    driver.output()
                )
            })?;
        Ok(Self { client, engine, _driver: driver })
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

    /// Runs `script` in the page and returns its value as `T`.
    pub async fn eval<T: serde::de::DeserializeOwned>(&self, script: &str) -> Result<T> {
        let value = self.client.execute(script, vec![]).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Polls `script` (a boolean expression) until it is true.
    pub async fn wait_until(&self, what: &str, script: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval::<bool>(&format!("return !!({script});")).await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                let lines = self.log_lines().await.unwrap_or_default();
                let status: String =
                    self.eval("return document.getElementById('status').textContent;").await?;
                // The Room view's too, where the page has one.
                let room: Vec<String> = self
                    .eval(&format!(
                        "const s = document.getElementById('{ROOM_STATUS_ID}'); \
                         return s ? [s.textContent].concat(Array.from(\
                         document.querySelectorAll('#{ROOM_LOG_ID} p'), p => p.textContent)) : [];"
                    ))
                    .await
                    .unwrap_or_default();
                bail!(
                    "{}: not {what} after {limit:?}; status {status:?}, log {lines:?}; \
                     room status and log {room:?}",
                    self.engine.name()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a screenshot as `target/e2e/NAME-ENGINE.png`.
    pub async fn screenshot(&self, paths: &Paths, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = paths.out.join(format!("{name}-{}.png", self.engine.name()));
        std::fs::write(&path, png).with_context(|| format!("save {}", path.display()))?;
        Ok(path)
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}
