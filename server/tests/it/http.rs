//! The page and its assets over plain HTTP.

use axum::http::{header, StatusCode};

use crate::helpers::{get, get_with, spawn_app, spawn_without_bundle, HASHED_WASM, PAGE_MARKER};

#[tokio::test]
async fn root_serves_the_bundle_page() {
    let app = spawn_app().await;
    let reply = get(&app.url("/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.header(header::CONTENT_TYPE).starts_with("text/html"),
        "{}",
        reply.header(header::CONTENT_TYPE)
    );
    assert!(reply.body.contains(PAGE_MARKER), "{}", reply.body);
}

#[tokio::test]
async fn wasm_is_served_as_application_wasm() {
    let app = spawn_app().await;
    let reply = get(&app.url("/app_bg.wasm")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/wasm");
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

#[tokio::test]
async fn health_and_readiness_answer_200_while_serving() {
    let app = spawn_app().await;
    let health = get(&app.url(wire::HEALTHZ_PATH)).await;
    assert_eq!((health.status, health.body.as_str()), (StatusCode::OK, "ok\n"));
    let ready = get(&app.url(wire::READYZ_PATH)).await;
    assert_eq!((ready.status, ready.body.as_str()), (StatusCode::OK, "ready\n"));
}

#[tokio::test]
async fn readiness_turns_503_the_moment_shutdown_begins() {
    use axum::body::Body;
    use tower::Service;

    let state = server::AppState::new(crate::helpers::test_config());
    let mut app = server::router(state.clone());
    let mut readyz = || {
        let request = axum::http::Request::get(wire::READYZ_PATH).body(Body::empty());
        app.call(request.expect("request"))
    };
    assert_eq!(readyz().await.expect("infallible").status(), StatusCode::OK);
    state.shutdown.cancel();
    assert_eq!(readyz().await.expect("infallible").status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let app = spawn_app().await;
    let reply = get(&app.url(wire::METRICS_PATH)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header(header::CONTENT_TYPE).starts_with("application/openmetrics-text"));
    for name in [
        "# TYPE ws_connections_open gauge",
        "# TYPE ws_connections counter",
        "# TYPE ws_handshake_duration_seconds histogram",
        "ws_connections_max ",
    ] {
        assert!(reply.body.contains(name), "metrics lack {name:?}:\n{}", reply.body);
    }
}

#[tokio::test]
async fn hashed_assets_are_cached_for_a_year_and_sent_precompressed() {
    let app = spawn_app().await;
    let url = app.url(&format!("/{HASHED_WASM}"));
    for (accept, encoding, body) in [
        ("br, gzip", Some("br"), "brotli bytes"),
        ("gzip", Some("gzip"), "gzip bytes"),
        ("identity", None, "\0asm identity"),
    ] {
        let reply = get_with(&url, &[("accept-encoding", accept)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        assert_eq!(reply.header(header::CONTENT_TYPE), "application/wasm", "{accept}");
        assert_eq!(
            reply.header(header::CACHE_CONTROL),
            server::assets::CACHE_IMMUTABLE,
            "{accept}"
        );
        let sent = reply.headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().expect("ascii"));
        assert_eq!(sent, encoding, "{accept}");
        assert_eq!(reply.body, body, "{accept}");
    }
    // A file without a content hash in its name is not marked immutable.
    let plain = get(&app.url("/app_bg.wasm")).await;
    assert_eq!(plain.header(header::CACHE_CONTROL), "");
}

#[tokio::test]
async fn the_page_is_revalidated_and_a_conditional_request_gets_304() {
    let app = spawn_app().await;
    let first = get(&app.url("/")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header(header::CACHE_CONTROL), server::assets::CACHE_REVALIDATE);
    let modified = first.header(header::LAST_MODIFIED);
    assert!(!modified.is_empty(), "no Last-Modified to revalidate with");

    let again = get_with(&app.url("/"), &[("if-modified-since", &modified)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header(header::CACHE_CONTROL), server::assets::CACHE_REVALIDATE);
    assert!(again.body.is_empty());
}
