//! The `server` binary itself: its help, and how it refuses bad start-up input.

use std::process::{Command, Output};

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .env_remove("SERVER_HOST")
        .env_remove("SERVER_PORT")
        .env_remove("SERVER_ASSETS")
        .env_remove("SERVER_PING_INTERVAL")
        .env_remove("SERVER_IDLE_TIMEOUT")
        .output()
        .expect("run server")
}

#[test]
fn help_shows_each_flag_with_its_default_and_environment_variable() {
    let out = server(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "--host",
        "SERVER_HOST",
        "127.0.0.1",
        "--port",
        "SERVER_PORT",
        &wire::DEFAULT_PORT.to_string(),
        "--assets",
        "SERVER_ASSETS",
        "dist",
        "--shutdown-grace",
        "SERVER_SHUTDOWN_GRACE",
        "--ping-interval",
        "SERVER_PING_INTERVAL",
        "[default: 25s]",
        "--idle-timeout",
        "SERVER_IDLE_TIMEOUT",
        "[default: 50s]",
        "--handshake-timeout",
        "SERVER_HANDSHAKE_TIMEOUT",
        "--send-timeout",
        "SERVER_SEND_TIMEOUT",
        "--max-message-size",
        "SERVER_MAX_MESSAGE_SIZE",
        "[default: 64KiB]",
        "--max-connections",
        "SERVER_MAX_CONNECTIONS",
        "--allowed-origin",
        "SERVER_ALLOWED_ORIGINS",
        "--plain-echo",
        "SERVER_PLAIN_ECHO",
    ] {
        assert!(help.contains(expected), "help lacks {expected:?}:\n{help}");
    }
}

#[test]
fn an_invalid_port_is_refused_before_anything_starts() {
    let out = server(&["--port", "http"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--port"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = server(&["--port", &port]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn an_idle_timeout_below_the_ping_interval_is_refused_at_start() {
    let out = server(&["--port", "0", "--ping-interval", "30s", "--idle-timeout", "20s"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--idle-timeout (20s) must be longer than --ping-interval (30s)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing was served");
}
