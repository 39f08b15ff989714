//! The page: `GET /` and the trunk-built bundle's files, served as a static host should
//! (cache headers, precompressed brotli and gzip, conditional requests), with a clear answer
//! when the bundle has not been built yet.
//!
//! Caching: trunk names the `.js` and `.wasm` after a hash of their content, so they never
//! change under a name and are cached for a year (`immutable`); `index.html` names them, so it
//! is `no-cache` (revalidated each time, answered 304 while unchanged).
//!
//! Compression: `cargo xtask build` writes `.br` and `.gz` beside each file (brotli quality 11,
//! gzip 9), and the server picks one by `Accept-Encoding`. Per request this costs a file open
//! instead of a compression: compressing the bundle's `.wasm` on the fly at the same ratio
//! takes about half a second of CPU (brotli 11) for every visitor (`cargo xtask build` prints
//! the times), while tower-http's `CompressionLayer` at a cheap level would send a bigger file.
//!
//! `Vary: Accept-Encoding`: the same URL yields brotli, gzip or identity bytes, so every answer
//! from a file says so (200, 206, 304, 412, 416), or a shared cache could keep the brotli copy
//! of an `immutable` file for a year and hand it to a client that cannot decode it. tower-http
//! 0.6's `ServeDir` and `ServeFile` set no `Vary` (nothing in `services/fs` does), so
//! [`vary_encoding`] adds it. A `Range` applies to the bytes sent, i.e. to the compressed file
//! when one is chosen (its `Content-Range` counts the `.br` file's bytes): that is what a range
//! of a content-coded representation means (RFC 9110 §14.1), and another reason a cache must
//! key it by `Accept-Encoding`. The 404 and the "not built" page do not vary.

use std::io::ErrorKind;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use tracing::error;

use crate::AppState;

/// The command that builds the bundle, named in the "not built" page.
pub const BUILD_COMMAND: &str = "cargo xtask build";
/// For files whose name carries a hash of their content.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// For `index.html`: always revalidate.
pub const CACHE_REVALIDATE: &str = "no-cache";

/// Routes for `/` and every file of the bundle; unknown paths get 404.
pub fn routes(dir: &Path) -> Router<AppState> {
    let files = ServeDir::new(dir)
        .precompressed_br()
        .precompressed_gzip()
        .append_index_html_on_directories(false)
        .not_found_service(get(not_found));
    Router::new()
        .route("/", get(index))
        .fallback_service(files)
        .layer(middleware::from_fn(cache_control))
        .layer(middleware::from_fn(vary_encoding))
}

/// `GET /`: the bundle's `index.html`, read per request so a rebuild needs no restart.
async fn index(State(state): State<AppState>, request: Request) -> Response {
    let path = state.config.assets.join("index.html");
    match tokio::fs::metadata(&path).await {
        Ok(_) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => return not_built(&state.config.assets),
        Err(err) => {
            error!(path = %path.display(), %err, "cannot read the page");
            let message = "cannot read index.html; see the server log";
            return (StatusCode::INTERNAL_SERVER_ERROR, message).into_response();
        }
    }
    let file = ServeFile::new(path).precompressed_br().precompressed_gzip();
    match file.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Sets `Cache-Control` on successful answers: a year for content-hashed files, revalidation
/// for the page.
async fn cache_control(request: Request, next: Next) -> Response {
    let policy = cache_policy(request.uri().path());
    let mut response = next.run(request).await;
    let cacheable = response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
    if let (Some(policy), true) = (policy, cacheable) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    response
}

/// Adds `Vary: Accept-Encoding` to each answer whose bytes, or whose validators and ranges,
/// depend on the negotiated encoding: every status a file can answer with except 404.
async fn vary_encoding(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if varies_by_encoding(response.status()) {
        response.headers_mut().append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    response
}

/// Whether an answer from the file services describes the negotiated file: success (200,
/// 206), 304 and 412 (decided on that file's `Last-Modified`), 416 (its length).
pub fn varies_by_encoding(status: StatusCode) -> bool {
    status.is_success()
        || matches!(
            status,
            StatusCode::NOT_MODIFIED
                | StatusCode::PRECONDITION_FAILED
                | StatusCode::RANGE_NOT_SATISFIABLE
        )
}

/// The caching policy for a request path: immutable for trunk's hashed assets
/// (`web-0123456789abcdef.js`, `web-0123456789abcdef_bg.wasm`), revalidate for the page.
pub fn cache_policy(path: &str) -> Option<&'static str> {
    if path == "/" || path == "/index.html" {
        return Some(CACHE_REVALIDATE);
    }
    let name = path.rsplit('/').next().unwrap_or_default();
    let stem = name.rsplit_once('.').map_or("", |(stem, _extension)| stem);
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    let hash = stem.rsplit_once('-').map_or("", |(_name, hash)| hash);
    let hashed = hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    hashed.then_some(CACHE_IMMUTABLE)
}

/// 503 page explaining that the bundle is missing and how to build it.
fn not_built(dir: &Path) -> Response {
    let dir = escape(&dir.display().to_string());
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Bundle not built</title>\
         <h1>The web bundle has not been built</h1>\
         <p>No <code>index.html</code> in <code>{dir}</code>.</p>\
         <p>Build it with <code>{BUILD_COMMAND}</code> (or <code>trunk build --release</code>) \
         and reload this page, or start the server with <code>--assets DIR</code>. \
         The WebSocket at <code>{}</code> works meanwhile.</p>",
        wire::WS_PATH
    );
    (StatusCode::SERVICE_UNAVAILABLE, Html(body)).into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 Not Found\n")
}

/// Minimal HTML escaping for text placed in the "not built" page.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn file_answers_vary_and_missing_ones_do_not() {
        for status in [200, 206, 304, 412, 416] {
            assert!(varies_by_encoding(StatusCode::from_u16(status).expect("status")), "{status}");
        }
        for status in [404, 405, 500, 503] {
            assert!(!varies_by_encoding(StatusCode::from_u16(status).expect("status")), "{status}");
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_the_page_revalidates() {
        assert_eq!(cache_policy("/web-c2b498b077d8998c.js"), Some(CACHE_IMMUTABLE));
        assert_eq!(cache_policy("/web-c2b498b077d8998c_bg.wasm"), Some(CACHE_IMMUTABLE));
        assert_eq!(cache_policy("/"), Some(CACHE_REVALIDATE));
        assert_eq!(cache_policy("/index.html"), Some(CACHE_REVALIDATE));
        for unhashed in [
            "/web.js",
            "/web-c2b498b077d8998.js",
            "/web-c2b498b077d8998g.js",
            "/favicon.ico",
            "/ws/",
        ] {
            assert_eq!(cache_policy(unhashed), None, "{unhashed}");
        }
    }
}
