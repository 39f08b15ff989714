//! The `client` binary against a server started by the test.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::helpers::{spawn_app, STEP};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn client(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("CLIENT_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn client");
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
    let url = format!("ws://127.0.0.1:{port}/ws/");
    let run = client(&["--url", &url, "hi"], None).await;
    assert!(!run.ok);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect to"), "{}", run.stderr);
    assert!(run.stderr.contains(&url), "{}", run.stderr);
}

#[tokio::test]
async fn a_non_websocket_url_is_refused() {
    let run = client(&["--url", "http://127.0.0.1:1/ws/", "hi"], None).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("ws://"), "{}", run.stderr);
}
