//! The page and its assets over plain HTTP.

use axum::body::Bytes;
use axum::http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::helpers::{spawn_app, spawn_without_bundle, PAGE_MARKER, STEP};

struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

async fn get(url: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(url).body(Empty::new()).expect("request");
    let response = tokio::time::timeout(STEP, client.request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, content_type, body: String::from_utf8_lossy(&body).into_owned() }
}

#[tokio::test]
async fn root_serves_the_bundle_page() {
    let app = spawn_app().await;
    let reply = get(&app.url("/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("text/html"), "{}", reply.content_type);
    assert!(reply.body.contains(PAGE_MARKER), "{}", reply.body);
}

#[tokio::test]
async fn wasm_is_served_as_application_wasm() {
    let app = spawn_app().await;
    let reply = get(&app.url("/app_bg.wasm")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/wasm");
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = spawn_app().await;
    for path in ["/nope", "/nope/deeper.js", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        let reply = get(&app.url(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn root_explains_how_to_build_a_missing_bundle() {
    let app = spawn_without_bundle().await;
    let reply = get(&app.url("/")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.contains(server::assets::BUILD_COMMAND), "{}", reply.body);
}

#[tokio::test]
async fn plain_get_on_the_websocket_path_is_a_client_error() {
    let app = spawn_app().await;
    let reply = get(&app.url(wire::WS_PATH)).await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
}

#[tokio::test]
async fn a_silent_http_client_cannot_hold_up_shutdown_past_the_grace_period() {
    use tokio::io::AsyncWriteExt;

    let config = server::Config {
        shutdown_grace: std::time::Duration::from_millis(300),
        ..crate::helpers::test_config()
    };
    let app = crate::helpers::spawn_with(config).await;
    // Half a request, then silence: hyper keeps waiting for the rest of the headers.
    let mut stalled = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    stalled.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    // Reaching the server is proven by a full request on another connection.
    assert_eq!(get(&app.url("/nope")).await.status, StatusCode::NOT_FOUND);

    // `stop` fails the test if `run` has not returned within STEP (10 s).
    app.stop().await;
    drop(stalled);
}
