//! The `server` binary itself: its help, and how it refuses bad start-up input.

use std::process::{Command, Output};

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .env_remove("SERVER_HOST")
        .env_remove("SERVER_PORT")
        .env_remove("SERVER_ASSETS")
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
