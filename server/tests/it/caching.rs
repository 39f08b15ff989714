//! What a shared cache sees: every answer from a file carries `Vary: Accept-Encoding` (200,
//! 206, 304, 416), since the same URL yields brotli, gzip or identity bytes.

use axum::http::{header, StatusCode};

use crate::helpers::{get_with, spawn_app, HASHED_WASM};
use server::testing::Reply;

/// The `Vary` values of a reply, joined, for assertions and messages.
fn vary(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all(header::VARY)
        .iter()
        .map(|value| value.to_str().expect("ascii").to_owned())
        .collect()
}

/// Asserts `Vary` names `Accept-Encoding` exactly once.
fn assert_varies(reply: &Reply, what: &str) {
    let values = vary(reply);
    let named = values
        .iter()
        .flat_map(|value| value.split(','))
        .filter(|name| name.trim().eq_ignore_ascii_case("accept-encoding"))
        .count();
    assert_eq!(named, 1, "{what}: {} with Vary {values:?}", reply.status);
}

#[tokio::test]
async fn every_encoding_of_the_page_and_the_assets_says_vary_accept_encoding() {
    let app = spawn_app().await;
    for path in ["/", "/index.html", &format!("/{HASHED_WASM}"), "/app_bg.wasm"] {
        for accept in ["br, gzip", "gzip", "identity", ""] {
            let headers: &[(&str, &str)] =
                if accept.is_empty() { &[] } else { &[("accept-encoding", accept)] };
            let reply = get_with(&app.url(path), headers).await;
            assert_eq!(reply.status, StatusCode::OK, "{path} {accept:?}");
            assert_varies(&reply, &format!("{path} with {accept:?}"));
        }
    }
}

#[tokio::test]
async fn a_range_of_a_compressed_file_is_206_with_vary_and_counts_the_compressed_bytes() {
    let app = spawn_app().await;
    let url = app.url(&format!("/{HASHED_WASM}"));
    // The fake bundle's `.br` holds `brotli bytes` (12 bytes), the plain file 13.
    for (accept, range, body) in
        [("br", "bytes 0-5/12", "brotli"), ("identity", "bytes 0-5/13", "\0asm i")]
    {
        let reply = get_with(&url, &[("accept-encoding", accept), ("range", "bytes=0-5")]).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{accept}");
        assert_eq!(reply.header(header::CONTENT_RANGE), range, "{accept}");
        assert_eq!(reply.body, body, "{accept}");
        assert_eq!(reply.header(header::CACHE_CONTROL), server::assets::CACHE_IMMUTABLE);
        assert_varies(&reply, &format!("range with {accept}"));
    }
    let reply = get_with(&url, &[("accept-encoding", "br"), ("range", "bytes=100-200")]).await;
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_varies(&reply, "an unsatisfiable range");
}

#[tokio::test]
async fn a_304_says_vary_accept_encoding_too() {
    let app = spawn_app().await;
    for path in ["/", &format!("/{HASHED_WASM}")] {
        for accept in ["br", "gzip", "identity"] {
            let first = get_with(&app.url(path), &[("accept-encoding", accept)]).await;
            let modified = first.header(header::LAST_MODIFIED);
            assert!(!modified.is_empty(), "{path}: no Last-Modified");
            let again = get_with(
                &app.url(path),
                &[("accept-encoding", accept), ("if-modified-since", &modified)],
            )
            .await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path} {accept}");
            assert_varies(&again, &format!("304 for {path} with {accept}"));
        }
    }
}

#[tokio::test]
async fn answers_that_are_not_files_do_not_vary() {
    let app = spawn_app().await;
    let missing = get_with(&app.url("/nope.js"), &[("accept-encoding", "br")]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(vary(&missing), Vec::<String>::new());
    let health = get_with(&app.url(wire::HEALTHZ_PATH), &[("accept-encoding", "br")]).await;
    assert_eq!(vary(&health), Vec::<String>::new());
}
