//! The page: `GET /` and the trunk-built bundle's files, with a clear answer when the bundle
//! has not been built yet.

use std::io::ErrorKind;
use std::path::Path;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeDir;
use tracing::error;

use crate::AppState;

/// The command that builds the bundle, named in the "not built" page.
pub const BUILD_COMMAND: &str = "cargo xtask build";

/// Routes for `/` and every file of the bundle; unknown paths get 404.
pub fn routes(dir: &Path) -> Router<AppState> {
    let files = ServeDir::new(dir)
        .append_index_html_on_directories(false)
        .not_found_service(get(not_found));
    Router::new().route("/", get(index)).fallback_service(files)
}

/// `GET /`: the bundle's `index.html`, read per request so a rebuild needs no restart.
async fn index(State(state): State<AppState>) -> Response {
    let path = state.config.assets.join("index.html");
    match tokio::fs::read(&path).await {
        Ok(page) => ([(header::CACHE_CONTROL, "no-cache")], Html(page)).into_response(),
        Err(err) if err.kind() == ErrorKind::NotFound => not_built(&state.config.assets),
        Err(err) => {
            error!(path = %path.display(), %err, "cannot read the page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read index.html; see the server log")
                .into_response()
        }
    }
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
    use super::escape;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
