//! The `client` binary against a real server started in-process on port 0
//! (`server::testing`): the echo's two modes, `client room`, every error path as one line with
//! its exit status, and `wss://` through a TLS front made here with a throwaway CA; the same
//! over long polling and `--transport auto` in [`polling`].

mod polling;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use server::testing::{self, TestServer, STEP};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use wire::room::Frame;

/// The real server on `127.0.0.1:0` with the test configuration.
async fn spawn_app() -> TestServer {
    testing::spawn().await
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
        .env_remove("CLIENT_ROOM_URL")
        .env_remove("CLIENT_TRANSPORT")
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
    run(client_command(args), stdin).await
}

/// Runs `command` to completion with `stdin` as its input.
async fn run(mut command: Command, stdin: Option<&str>) -> Run {
    let mut child = command.spawn().expect("spawn client");
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
async fn a_message_room_is_sent_to_the_echo_after_dashes_or_another_message() {
    let app = spawn_app().await;
    let run = client(&["--url", &app.ws_url(), "--", "room"], None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nROOM\n", wire::WELCOME));
    let run = client(&["--url", &app.ws_url(), "hi", "room"], None).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nHI\nROOM\n", wire::WELCOME));
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
    Pki { ca_pem: ca.pem(), server: tls_config(certificate.der().clone(), &key) }
}

/// A TLS server presenting `certificate` alone, with `key`.
fn tls_config(certificate: CertificateDer<'static>, key: &KeyPair) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("server config");
    Arc::new(server)
}

/// A self-signed certificate for `names` as `openssl req -x509 -addext subjectAltName=...`
/// makes it by default: `basicConstraints` critical `CA:TRUE`, no key usage, valid from
/// `not_before` to `not_after`. Its PEM and a TLS server presenting it.
fn self_signed_ca_true(
    names: &[&str],
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> (String, Arc<rustls::ServerConfig>) {
    let names = names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = KeyPair::generate().expect("key");
    let certificate = params.self_signed(&key).expect("self-signed certificate");
    (certificate.pem(), tls_config(certificate.der().clone(), &key))
}

/// Terminates TLS on a port of its own and relays the bytes to `backend`, the way nginx in
/// front of the server does. Returns its address.
async fn spawn_tls_front(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
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
    addr
}

#[tokio::test]
async fn wss_with_the_right_ca_file_gets_replies_and_without_it_is_not_trusted() {
    let app = spawn_app().await;
    let pki = new_pki();
    let url = format!(
        "wss://{}{}",
        spawn_tls_front(Arc::clone(&pki.server), app.addr).await,
        wire::WS_PATH
    );

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

#[tokio::test]
async fn a_self_signed_ca_true_certificate_in_the_ca_file_is_pinned() {
    let app = spawn_app().await;
    let (pem, config) = self_signed_ca_true(&["127.0.0.1"], (2020, 1, 1), (2999, 1, 1));
    let url = format!("wss://{}{}", spawn_tls_front(config, app.addr).await, wire::WS_PATH);

    // The certificate itself, alone or after an unrelated CA in the same file.
    let alone = temp_file("self-signed.pem", &pem);
    let among = temp_file("bundle.pem", &format!("{}{pem}", new_ca("another CA").pem()));
    for file in [&alone, &among] {
        let args = ["--url", &url, "--ca-file", file.to_str().expect("utf-8"), "pinned"];
        let run = client(&args, None).await;
        assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
        assert_eq!(run.stdout, format!("{}\nPINNED\n", wire::WELCOME));
    }
    // Without it, or with another certificate, it is not trusted, and the line says how to pin.
    let pin = ["not trusted", "CA:TRUE", "pass this very certificate with --ca-file"];
    client(&["--url", &url, "hi"], None).await.assert_one_line_error(&pin);
    let (other, _) = self_signed_ca_true(&["127.0.0.1"], (2020, 1, 1), (2999, 1, 1));
    let other = temp_file("other-self-signed.pem", &other);
    let args = ["--url", &url, "--ca-file", other.to_str().expect("utf-8"), "hi"];
    client(&args, None).await.assert_one_line_error(&pin);
}

#[tokio::test]
async fn a_pinned_certificate_must_still_name_the_host_and_be_valid_now() {
    let app = spawn_app().await;
    for (names, not_before, not_after, needle) in [
        (&["localhost"][..], (2020, 1, 1), (2999, 1, 1), "not valid for name"),
        (&["127.0.0.1"][..], (2020, 1, 1), (2021, 1, 1), "expired"),
        (&["127.0.0.1"][..], (2998, 1, 1), (2999, 1, 1), "not valid yet"),
    ] {
        let (pem, config) = self_signed_ca_true(names, not_before, not_after);
        let url = format!("wss://{}{}", spawn_tls_front(config, app.addr).await, wire::WS_PATH);
        let file = temp_file("pinned.pem", &pem);
        let args = ["--url", &url, "--ca-file", file.to_str().expect("utf-8"), "hi"];
        client(&args, None).await.assert_one_line_error(&["cannot connect to", needle]);
    }
}

#[tokio::test]
async fn a_ca_true_server_certificate_from_a_trusted_ca_is_still_refused() {
    // Not pinned (only its issuer is in --ca-file): verified as a chain, where a CA
    // certificate cannot be the server's.
    let app = spawn_app().await;
    let ca = new_ca("client test CA");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let certificate = params.signed_by(&key, &ca).expect("certificate");
    let front = spawn_tls_front(tls_config(certificate.der().clone(), &key), app.addr).await;
    let url = format!("wss://{front}{}", wire::WS_PATH);
    let file = temp_file("ca.pem", &ca.pem());
    let args = ["--url", &url, "--ca-file", file.to_str().expect("utf-8"), "hi"];
    client(&args, None).await.assert_one_line_error(&["not trusted", "CA:TRUE", "--ca-file"]);
}

// --- client room ---

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next room frame on `socket`, skipping control frames; fails after STEP or on a close.
async fn next_frame(socket: &mut Socket) -> Frame {
    loop {
        let message = tokio::time::timeout(STEP, socket.next())
            .await
            .expect("a frame in time")
            .expect("stream still open")
            .expect("no protocol error");
        match message {
            Message::Text(text) => return Frame::parse(&text).expect("a room frame"),
            Message::Close(frame) => panic!("the room closed: {frame:?}"),
            _ => {}
        }
    }
}

/// A member of the room speaking WebSocket directly, to publish and check what the client
/// binary does.
struct Peer {
    socket: Socket,
    you: String,
    epoch: String,
}

impl Peer {
    async fn join(app: &TestServer) -> Self {
        let connecting = tokio_tungstenite::connect_async(app.room_url());
        let (mut socket, _) =
            tokio::time::timeout(STEP, connecting).await.expect("in time").expect("connect");
        match next_frame(&mut socket).await {
            Frame::Joined { you, epoch, .. } => Self { socket, you, epoch },
            other => panic!("expected joined first, got {other:?}"),
        }
    }

    /// Publishes `text` and returns its offset, once it has come back.
    async fn say(&mut self, text: &str) -> u64 {
        self.socket.send(Message::text(text)).await.expect("send");
        let (offset, from) = self.hear(text).await;
        assert_eq!(from, self.you);
        offset
    }

    /// Waits for a message `text` from anyone: its offset and sender.
    async fn hear(&mut self, text: &str) -> (u64, String) {
        loop {
            if let Frame::Message { offset, from, text: heard, .. } =
                next_frame(&mut self.socket).await
            {
                if heard == text {
                    return (offset, from);
                }
            }
        }
    }

    /// The stdout line the client prints for message `offset` of ours.
    fn line(&self, offset: u64, text: &str) -> String {
        format!("{offset} {}: {text}", self.you)
    }
}

/// The name and epoch in a `client: joined as NAME (epoch E, …` line.
fn parse_joined(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("client: joined as ")?;
    let (name, rest) = rest.split_once(" (epoch ")?;
    let (epoch, _) = rest.split_once(',')?;
    Some((name.to_owned(), epoch.to_owned()))
}

/// `client room` running with its standard streams in the test's hands.
struct RoomClient {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
    /// Its name in the room and the room's epoch, from its `joined` line.
    name: String,
    epoch: String,
}

impl RoomClient {
    /// Starts `client room ARGS` and waits for its `joined` line on stderr.
    async fn start(args: &[&str]) -> Self {
        let mut child = spawn_client(&[&["room"], args].concat());
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let line = next_line(&mut stderr).await.expect("a joined line");
        let (name, epoch) = parse_joined(&line).unwrap_or_else(|| panic!("not joined: {line}"));
        Self { child, stdout, stderr, name, epoch }
    }

    /// The next line on stdout.
    async fn line(&mut self) -> String {
        next_line(&mut self.stdout).await.expect("another stdout line")
    }

    /// Writes `text` and a newline to its standard input.
    async fn type_line(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{text}\n").as_bytes()).await.expect("write stdin");
    }

    /// The line the client prints for message `offset` of its own.
    fn own(&self, offset: u64, text: &str) -> String {
        format!("{offset} {}: {text}", self.name)
    }

    /// Ends its input and waits for it to exit: its status and the rest of its output.
    async fn finish(mut self) -> Run {
        drop(self.child.stdin.take());
        let rest = async {
            let mut stdout = String::new();
            while let Some(line) = self.stdout.next_line().await.expect("read stdout") {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            let mut stderr = String::new();
            while let Some(line) = self.stderr.next_line().await.expect("read stderr") {
                stderr.push_str(&line);
                stderr.push('\n');
            }
            let status = self.child.wait().await.expect("wait");
            Run { code: status.code(), stdout, stderr }
        };
        tokio::time::timeout(STEP, rest).await.expect("the client exits in time")
    }
}

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> Option<String> {
    tokio::time::timeout(STEP, lines.next_line()).await.expect("a line in time").expect("read")
}

/// Asserts the run ended well: status 0 and no error line.
fn assert_success(run: &Run) {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(!run.stderr.lines().any(|line| line.starts_with("client: error")), "{}", run.stderr);
}

#[tokio::test]
async fn room_prints_history_then_live_messages_as_offset_from_text() {
    let app = spawn_app().await;
    let mut peer = Peer::join(&app).await;
    let first = peer.say("first").await;
    let second = peer.say("second, with: a colon").await;

    let mut client = RoomClient::start(&["--url", &app.room_url()]).await;
    assert_eq!(client.epoch, peer.epoch);
    assert_eq!(client.line().await, peer.line(first, "first"));
    assert_eq!(client.line().await, peer.line(second, "second, with: a colon"));
    let live = peer.say("live\nand on one line").await;
    assert_eq!(client.line().await, peer.line(live, "live\\nand on one line"));

    let run = client.finish().await;
    assert_success(&run);
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn stdin_lines_are_published_and_the_client_exits_once_they_are_back() {
    let app = spawn_app().await;
    let mut peer = Peer::join(&app).await;
    // The echo's variables do not steer the room; the shared ones apply to both.
    let mut command = client_command(&["room", "--url", &app.room_url()]);
    command.env("CLIENT_URL", app.ws_url()).env("CLIENT_TIMEOUT", "5s");
    let run = run(command, Some("one\n\ntwo\nthree\n")).await;
    assert_published_one_two_three(&run, &mut peer).await;
}

/// `run` (a `client room` fed `one`, an empty line, `two`, `three`) published the three
/// non-empty lines, `peer` heard them from its name, and every one came back to its own stdout
/// before it left.
async fn assert_published_one_two_three(run: &Run, peer: &mut Peer) {
    assert_success(run);
    let first = run.stderr.lines().next().unwrap_or_default();
    let (name, _) = parse_joined(first).unwrap_or_else(|| panic!("not joined: {}", run.stderr));
    let mut expected = String::new();
    for text in ["one", "two", "three"] {
        let (offset, from) = peer.hear(text).await;
        assert_eq!(from, name);
        expected.push_str(&format!("{offset} {name}: {text}\n"));
    }
    assert_eq!(run.stdout, expected);
}

#[tokio::test]
async fn two_clients_see_each_others_messages() {
    let app = spawn_app().await;
    let mut a = RoomClient::start(&["--url", &app.room_url()]).await;
    let mut b = RoomClient::start(&["--url", &app.room_url()]).await;
    assert_ne!(a.name, b.name);

    a.type_line("hello from a").await;
    let line = a.line().await;
    assert_eq!(b.line().await, line);
    let (offset, _) = line.split_once(' ').expect("an offset");
    assert_eq!(line, a.own(offset.parse().expect("a number"), "hello from a"));

    b.type_line("and from b").await;
    let line = b.line().await;
    assert_eq!(a.line().await, line);
    assert!(line.ends_with(&format!(" {}: and from b", b.name)), "{line}");

    for run in [a.finish().await, b.finish().await] {
        assert_success(&run);
        assert_eq!(run.stdout, "");
    }
}

#[tokio::test]
async fn a_resume_prints_only_the_missed_messages() {
    let app = spawn_app().await;
    let mut peer = Peer::join(&app).await;
    peer.say("seen 1").await;
    let last_seen = peer.say("seen 2").await.to_string();
    let missed = [peer.say("missed 1").await, peer.say("missed 2").await];

    let args = ["room", "--url", &app.room_url(), "--epoch", &peer.epoch, "--offset", &last_seen];
    let run = client(&args, Some("")).await;
    assert_success(&run);
    let joined = run.stderr.lines().next().unwrap_or_default();
    assert!(joined.ends_with(", recovered"), "{}", run.stderr);
    let expected =
        format!("{}\n{}\n", peer.line(missed[0], "missed 1"), peer.line(missed[1], "missed 2"));
    assert_eq!(run.stdout, expected);

    // Another epoch cannot be recovered: the recent history instead, and the line says so.
    let args = ["room", "--url", &app.room_url(), "--epoch", "another-epoch", "--offset", "1"];
    let run = client(&args, Some("")).await;
    assert_success(&run);
    assert!(run.stderr.contains("not recovered"), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);
    assert!(run.stdout.ends_with(&expected), "{}", run.stdout);
}

#[tokio::test]
async fn a_bad_epoch_is_a_one_line_error_with_the_servers_reason() {
    let app = spawn_app().await;
    let args = ["room", "--url", &app.room_url(), "--epoch", "not.an.epoch", "--offset", "1"];
    let run = client(&args, None).await;
    let reason = wire::room::QueryError::Epoch.to_string();
    run.assert_one_line_error(&["cannot connect to", "400", &reason]);
}

#[tokio::test]
async fn room_argument_errors_are_one_line_and_exit_2() {
    let bad: [&[&str]; 6] = [
        &["room", "--epoch", "e"],
        &["room", "--offset", "1"],
        &["room", "--epoch", "e", "--offset", "minus-one"],
        &["room", "--url", "http://127.0.0.1:1/ws/room"],
        &["room", "--timeout", "soon"],
        &["room", "a-message"],
    ];
    for args in bad {
        let run = client(args, None).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("client: error:"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("client room --help"), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "");
    }
    let run = client(&["room", "--epoch", "e"], None).await;
    assert!(run.stderr.contains("--offset"), "{}", run.stderr);
}

#[tokio::test]
async fn the_room_going_away_is_a_one_line_error() {
    let app = spawn_app().await;
    let client = RoomClient::start(&["--url", &app.room_url()]).await;
    app.stop().await;
    // Its input is still open when the server leaves; `finish` only collects the outcome.
    let run = client.finish().await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let errors: Vec<_> = run.stderr.lines().filter(|l| l.starts_with("client: error:")).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    let code = wire::close::GOING_AWAY.to_string();
    assert!(errors[0].contains(&code), "{}", run.stderr);
    assert!(errors[0].contains(wire::close::REASON_SHUTDOWN), "{}", run.stderr);
}

#[tokio::test]
async fn refused_messages_are_reported_and_not_waited_for() {
    // Three seconds' worth at the default rate, typed at once: the burst is published, and
    // most of the rest refused (all of it would need three seconds to be sent).
    let app = spawn_app().await;
    let count = 3 * wire::room::DEFAULT_RATE as usize;
    let input: String = (1..=count).map(|n| format!("{n}\n")).collect();
    let run = client(&["room", "--url", &app.room_url()], Some(&input)).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let refused = run.stderr.lines().filter(|l| l.starts_with("client: refused: ")).count();
    assert!(refused >= 1, "{}", run.stderr);
    assert!(run.stderr.contains(wire::room::REFUSED_RATE), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count() + refused, count, "{}\n{}", run.stdout, run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    let summary =
        format!("client: error: {refused} of {count} messages were refused and not published");
    assert_eq!(last, summary);
}

#[tokio::test]
async fn room_over_wss_with_the_ca_file() {
    let app = spawn_app().await;
    let pki = new_pki();
    let front = spawn_tls_front(Arc::clone(&pki.server), app.addr).await;
    let url = format!("wss://{front}{}", wire::room::PATH);
    let ca = temp_file("ca.pem", &pki.ca_pem);
    let args = ["room", "--url", &url, "--ca-file", ca.to_str().expect("utf-8")];
    let run = client(&args, Some("over tls\n")).await;
    assert_success(&run);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stdout.ends_with(": over tls\n"), "{}", run.stdout);
    client(&["room", "--url", &url, "--timeout", "5s"], Some("")).await.assert_one_line_error(&[
        "cannot connect to",
        "not trusted",
        "--ca-file",
    ]);
}
