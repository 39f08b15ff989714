//! The `client` binary against a real server started in-process on port 0: both modes, every
//! error path as one line with its exit status, and `wss://` through a TLS front made here with
//! a throwaway CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any single step of a test may take before it fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

/// The real server on `127.0.0.1:0`; dropping it requests shutdown.
struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, wire::WS_PATH)
    }

    /// Requests shutdown and waits for `run` to return.
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(STEP, task).await.expect("server stops in time");
            result.expect("server task").expect("server returns Ok");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds first, then spawns: the port accepts connections before this returns.
async fn spawn_app() -> TestServer {
    let config = server::Config {
        port: 0,
        shutdown_grace: Duration::from_secs(5),
        ..server::Config::default()
    };
    let listener = TcpListener::bind(config.addr()).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server::run(listener, config, async {
        let _ = rx.await;
    }));
    TestServer { addr, shutdown: Some(tx), task: Some(task) }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts a run-time failure: status 1, nothing on stdout, one `client: error:` line
    /// containing each of `needles`.
    fn assert_one_line_error(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(1), "stderr: {}", self.stderr);
        assert_eq!(self.stdout, "");
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        assert!(self.stderr.starts_with("client: error: "), "{}", self.stderr);
        for needle in needles {
            assert!(self.stderr.contains(needle), "no {needle:?} in: {}", self.stderr);
        }
    }
}

/// The `client` binary with all three standard streams piped, killed if the test fails; none
/// of the `CLIENT_*` variables leak in from the environment running the tests.
fn client_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_client"));
    command
        .args(args)
        .env_remove("CLIENT_URL")
        .env_remove("CLIENT_TIMEOUT")
        .env_remove("CLIENT_CA_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn spawn_client(args: &[&str]) -> Child {
    client_command(args).spawn().expect("spawn client")
}

/// Runs the client to completion with `stdin` as its input.
async fn client(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = spawn_client(args);
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
    }
    drop(pipe);
    let output = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("client finishes")
        .expect("output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A port nothing listens on: bound, noted, released.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A fresh file under the test target's temporary directory, holding `contents`.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "client-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write temporary file");
    path
}

#[tokio::test]
async fn argument_mode_prints_greeting_then_each_reply() {
    let app = spawn_app().await;
    let run = client(&["--url", &app.ws_url(), "Hello, World", "straße"], None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nHELLO, WORLD\nSTRASSE\n", wire::WELCOME));
}

#[tokio::test]
async fn stdin_mode_sends_each_line() {
    let app = spawn_app().await;
    let run = client(&["--url", &app.ws_url()], Some("one\ntwo\nthree\n")).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nONE\nTWO\nTHREE\n", wire::WELCOME));
}

#[tokio::test]
async fn nothing_listening_is_a_one_line_error_and_failure() {
    let url = format!("ws://127.0.0.1:{}{}", free_port(), wire::WS_PATH);
    let run = client(&["--url", &url, "hi"], None).await;
    run.assert_one_line_error(&["cannot connect to", &url]);
}

#[tokio::test]
async fn a_non_websocket_url_is_a_one_line_usage_error() {
    let run = client(&["--url", &format!("http://127.0.0.1:1{}", wire::WS_PATH), "hi"], None).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("client: error:"), "{}", run.stderr);
    assert!(run.stderr.contains("must start with ws:// or wss://"), "{}", run.stderr);
}

#[tokio::test]
async fn a_server_going_away_mid_conversation_is_a_one_line_error() {
    let app = spawn_app().await;
    let mut child = spawn_client(&["--url", &app.ws_url()]);
    // Standard input stays open: the client waits in stdin mode until the server leaves.
    let _stdin = child.stdin.take();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let greeting = tokio::time::timeout(STEP, stdout.next_line()).await.expect("greeting in time");
    assert_eq!(greeting.expect("read").as_deref(), Some(wire::WELCOME));

    app.stop().await;
    let output =
        tokio::time::timeout(STEP, child.wait_with_output()).await.expect("exits").expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let code = wire::close::GOING_AWAY.to_string();
    assert!(stderr.contains(&code) && stderr.contains(wire::close::REASON_SHUTDOWN), "{stderr}");
}

// --- --ca-file and wss:// ---

#[tokio::test]
async fn a_missing_ca_file_is_a_one_line_error_naming_it() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-ca.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let url = format!("wss://127.0.0.1:{}{}", free_port(), wire::WS_PATH);
    let run = client(&["--url", &url, "--ca-file", missing, "hi"], None).await;
    run.assert_one_line_error(&["cannot read --ca-file", missing, "No such file"]);
}

#[tokio::test]
async fn a_ca_file_without_a_pem_certificate_is_a_one_line_error() {
    let url = format!("wss://127.0.0.1:{}{}", free_port(), wire::WS_PATH);
    let not_pem = temp_file("not.pem", "just some text\n");
    let not_pem = not_pem.to_str().expect("utf-8 path");
    let run = client(&["--url", &url, "--ca-file", not_pem, "hi"], None).await;
    run.assert_one_line_error(&[not_pem, "holds no PEM certificate"]);

    let garbage = temp_file(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",
    );
    let garbage = garbage.to_str().expect("utf-8 path");
    let run = client(&["--url", &url, "--ca-file", garbage, "hi"], None).await;
    run.assert_one_line_error(&[garbage, "certificate 1", "not a valid X.509 certificate"]);
}

#[tokio::test]
async fn the_ca_file_is_ignored_for_ws() {
    let app = spawn_app().await;
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-ca.pem");
    let args = ["--url", &app.ws_url(), "--ca-file", missing.to_str().expect("utf-8"), "hi"];
    let run = client(&args, None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nHI\n", wire::WELCOME));
}

#[tokio::test]
async fn wss_to_nothing_listening_is_a_one_line_error() {
    let url = format!("wss://127.0.0.1:{}{}", free_port(), wire::WS_PATH);
    let run = client(&["--url", &url, "hi"], None).await;
    run.assert_one_line_error(&["cannot connect to", &url, "refused"]);
}

#[tokio::test]
async fn wss_to_a_listener_that_hangs_up_is_a_one_line_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            // FIN first, then read until the client gives up: closing with its ClientHello
            // unread would send a reset instead of the end of stream this test is about.
            let _ = tcp.shutdown().await;
            let _ = tcp.read_to_end(&mut Vec::new()).await;
        }
    });
    let url = format!("wss://{addr}{}", wire::WS_PATH);
    let run = client(&["--url", &url, "hi"], None).await;
    run.assert_one_line_error(&["cannot connect to", &url, "TLS handshake"]);
}

#[tokio::test]
async fn wss_to_a_plain_server_is_a_one_line_error() {
    let app = spawn_app().await;
    let url = format!("wss://{}{}", app.addr, wire::WS_PATH);
    let run = client(&["--url", &url, "hi"], None).await;
    run.assert_one_line_error(&["cannot connect to", &url, "not TLS"]);
}

/// A throwaway CA and a TLS front for `127.0.0.1` signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

fn new_pki() -> Pki {
    let ca = new_ca("client test CA");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
    let certificate = params.signed_by(&key, &ca).expect("server certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate.der().clone()], key)
        .expect("server config");
    Pki { ca_pem: ca.pem(), server: Arc::new(server) }
}

/// Terminates TLS on a port of its own and relays the bytes to `backend`, the way nginx in
/// front of the server does. Returns the `wss://` URL.
async fn spawn_tls_front(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("wss://{addr}{}", wire::WS_PATH)
}

#[tokio::test]
async fn wss_with_the_right_ca_file_gets_replies_and_without_it_is_not_trusted() {
    let app = spawn_app().await;
    let pki = new_pki();
    let url = spawn_tls_front(Arc::clone(&pki.server), app.addr).await;

    let right = temp_file("ca.pem", &pki.ca_pem);
    let args = ["--url", &url, "--ca-file", right.to_str().expect("utf-8"), "Hello, World"];
    let run = client(&args, None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nHELLO, WORLD\n", wire::WELCOME));

    // The same from the environment, in stdin mode.
    let mut child =
        client_command(&["--url", &url]).env("CLIENT_CA_FILE", &right).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"one\n").await.expect("write stdin");
    let output =
        tokio::time::timeout(STEP, child.wait_with_output()).await.expect("exits").expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{}\nONE\n", wire::WELCOME));

    let wrong = temp_file("other-ca.pem", &new_ca("someone else's CA").pem());
    let args = ["--url", &url, "--ca-file", wrong.to_str().expect("utf-8"), "hi"];
    client(&args, None).await.assert_one_line_error(&[
        "cannot connect to",
        "not trusted",
        "--ca-file",
    ]);
    // The system's roots alone do not know a throwaway CA either.
    client(&["--url", &url, "hi"], None).await.assert_one_line_error(&["not trusted", "--ca-file"]);
}
