//! The origin check over real upgrades: every way the page legitimately reaches the server
//! is accepted; foreign pages and `null` get 403 with a body that says how to allow them.

use axum::http::{HeaderValue, StatusCode};
use futures_util::SinkExt;
use server::Config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::{
    connect, metric, next, spawn_app, spawn_with, test_config, Socket, TestServer, STEP,
};

/// Upgrades with these headers added (or replacing the client's own, for `host`).
async fn upgrade(
    app: &TestServer,
    headers: &[(&'static str, String)],
) -> Result<Socket, (StatusCode, String)> {
    let mut request = app.ws_url().into_client_request().expect("request");
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).expect("header value");
        request.headers_mut().insert(*name, value);
    }
    let connected = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("answered in time");
    match connected {
        Ok((mut socket, _)) => {
            assert_eq!(next(&mut socket).await, Message::text(wire::WELCOME));
            Ok(socket)
        }
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err((response.status(), String::from_utf8_lossy(body).into_owned()))
        }
        Err(error) => panic!("unexpected handshake error: {error}"),
    }
}

fn origin(value: &str) -> (&'static str, String) {
    ("origin", value.to_owned())
}

#[tokio::test]
async fn the_page_from_the_server_itself_is_accepted() {
    let app = spawn_app().await;
    upgrade(&app, &[origin(&format!("http://{}", app.addr))]).await.expect("same origin");
}

#[tokio::test]
async fn a_page_on_another_port_of_the_same_host_is_accepted() {
    // The wasm-bindgen-test runner serves its page from another 127.0.0.1 port.
    let app = spawn_app().await;
    upgrade(&app, &[origin("http://127.0.0.1:41234")]).await.expect("same host");
}

#[tokio::test]
async fn a_proxy_that_drops_the_port_from_host_is_accepted() {
    // nginx with the tutorial's `proxy_set_header Host $host;`, listening on 8443.
    let app = spawn_app().await;
    let headers = [("host", "127.0.0.1".to_owned()), origin("http://127.0.0.1:8443")];
    upgrade(&app, &headers).await.expect("host without port");
}

#[tokio::test]
async fn trunk_serve_is_accepted_through_x_forwarded_host() {
    // The browser is on localhost:8080; trunk sends the backend's Host and X-Forwarded-Host.
    let app = spawn_app().await;
    let headers = [
        ("host", "127.0.0.1".to_owned()),
        ("x-forwarded-host", "localhost:8080".to_owned()),
        origin("http://localhost:8080"),
    ];
    upgrade(&app, &headers).await.expect("forwarded host");
    let without_forwarded = [("host", "127.0.0.1".to_owned()), origin("http://localhost:8080")];
    assert_eq!(
        upgrade(&app, &without_forwarded).await.err().map(|e| e.0),
        Some(StatusCode::FORBIDDEN)
    );
}

#[tokio::test]
async fn foreign_and_null_origins_get_403_and_others_are_unaffected() {
    let app = spawn_app().await;
    let mut open = connect(&app.ws_url()).await;

    let (status, body) =
        upgrade(&app, &[origin("http://evil.example")]).await.expect_err("refused");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("--allowed-origin http://evil.example"), "{body}");
    let (status, body) = upgrade(&app, &[origin("null")]).await.expect_err("refused");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("--allowed-origin null"), "{body}");

    let metrics = app.scrape().await;
    assert_eq!(metric(&metrics, "ws_upgrades_refused_total{reason=\"origin\"}"), 2.0);
    assert_eq!(metric(&metrics, "ws_connections_total"), 1.0, "{metrics}");
    open.send(Message::text("unaffected")).await.expect("send");
    assert_eq!(next(&mut open).await, Message::text("UNAFFECTED"));
}

#[tokio::test]
async fn allowed_origin_flags_open_the_door_to_those_origins_only() {
    let config = Config {
        allowed_origins: vec![
            "https://evil.example".parse().expect("pattern"),
            "http://dev.example:*".parse().expect("pattern"),
            "null".parse().expect("pattern"),
        ],
        ..test_config()
    };
    let app = spawn_with(config).await;
    for allowed in ["https://evil.example", "http://dev.example:3000", "null"] {
        upgrade(&app, &[origin(allowed)]).await.unwrap_or_else(|e| panic!("{allowed}: {e:?}"));
    }
    for refused in ["http://evil.example", "https://dev.example:3000", "https://other.example"] {
        let status = upgrade(&app, &[origin(refused)]).await.err().map(|e| e.0);
        assert_eq!(status, Some(StatusCode::FORBIDDEN), "{refused}");
    }
}
