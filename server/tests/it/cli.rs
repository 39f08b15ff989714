//! The `client` binary against a server started by the test.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{spawn_app, STEP};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// The `client` binary with all three standard streams piped, killed if the test fails.
fn spawn_client(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("CLIENT_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn client")
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
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn argument_mode_prints_greeting_then_each_reply() {
    let app = spawn_app().await;
    let run = client(&["--url", &app.ws_url(), "Hello, World", "straße"], None).await;
    assert!(run.ok, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nHELLO, WORLD\nSTRASSE\n", wire::WELCOME));
}

#[tokio::test]
async fn stdin_mode_sends_each_line() {
    let app = spawn_app().await;
    let run = client(&["--url", &app.ws_url()], Some("one\ntwo\nthree\n")).await;
    assert!(run.ok, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("{}\nONE\nTWO\nTHREE\n", wire::WELCOME));
}

#[tokio::test]
async fn nothing_listening_is_a_one_line_error_and_failure() {
    // Bind, note the port, release it: nothing listens there afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("ws://127.0.0.1:{port}{}", wire::WS_PATH);
    let run = client(&["--url", &url, "hi"], None).await;
    assert!(!run.ok);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect to"), "{}", run.stderr);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
}

#[tokio::test]
async fn a_non_websocket_url_is_a_one_line_error() {
    let run = client(&["--url", &format!("http://127.0.0.1:1{}", wire::WS_PATH), "hi"], None).await;
    assert!(!run.ok);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("client: error:"), "{}", run.stderr);
    assert!(run.stderr.contains("must start with ws://"), "{}", run.stderr);
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
