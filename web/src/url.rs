//! The WebSocket URL, derived from the page's own address (never hard-coded).

use wasm_bindgen::JsValue;

/// The socket beside the page: `ws/` resolved against the page's base URL, with `http` → `ws`
/// and `https` → `wss`. A page at `http://host/` talks to `ws://host/ws/`; one served under a
/// sub-path, `https://host/app/`, to `wss://host/app/ws/`. `None` for a base that is not
/// http(s).
pub fn ws_url(base: &str) -> Option<String> {
    Some(socket_url(&socket_base(base)?, wire::WS_PATH))
}

/// The socket at `path` (`/ws/`, `/ws/room?epoch=…`) under a [`socket_base`]: the path is
/// taken relative to it, so a page under a sub-path reaches its own proxy's prefix.
pub fn socket_url(socket_base: &str, path: &str) -> String {
    format!("{socket_base}{}", path.trim_start_matches('/'))
}

/// `ws://host/dir/` for a page at `http://host/dir/page.html` (`wss:` for https): the folder
/// every socket path is resolved against. `None` for a base that is not http(s).
pub fn socket_base(base: &str) -> Option<String> {
    let (scheme, rest) = base.split_once("://")?;
    let scheme = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    // Drop the fragment and query, then the last path segment (a file name, or nothing).
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let dir = path.rsplit_once('/').map_or("", |(dir, _file)| dir);
    let dir = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    Some(format!("{scheme}://{authority}/{dir}"))
}

/// [`socket_base`] for the current page (its `document.baseURI`, which honours a `<base>`
/// tag).
pub fn for_page(document: &web_sys::Document) -> Result<String, JsValue> {
    let base = document.base_uri()?.ok_or("the page has no base URL")?;
    socket_base(&base).ok_or_else(|| format!("cannot derive a WebSocket URL from {base}").into())
}

#[cfg(test)]
mod tests {
    use super::{socket_base, socket_url, ws_url};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn http_pages_use_ws_on_the_same_host_and_port() {
        assert_eq!(ws_url("http://127.0.0.1:8888/").as_deref(), Some("ws://127.0.0.1:8888/ws/"));
        assert_eq!(ws_url("http://127.0.0.1:8888").as_deref(), Some("ws://127.0.0.1:8888/ws/"));
    }

    #[test]
    fn https_pages_use_wss() {
        assert_eq!(ws_url("https://example.com/").as_deref(), Some("wss://example.com/ws/"));
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        assert_eq!(ws_url("http://[::1]:8080/").as_deref(), Some("ws://[::1]:8080/ws/"));
    }

    #[test]
    fn a_page_under_a_sub_path_finds_its_socket_beside_it() {
        assert_eq!(
            ws_url("https://example.com/app/").as_deref(),
            Some("wss://example.com/app/ws/")
        );
        assert_eq!(
            ws_url("http://example.com/app/index.html?x=1#top").as_deref(),
            Some("ws://example.com/app/ws/")
        );
        assert_eq!(
            ws_url("http://example.com/index.html").as_deref(),
            Some("ws://example.com/ws/")
        );
    }

    #[test]
    fn the_room_is_beside_the_echo_also_under_a_sub_path() {
        let room = |page: &str| {
            let path = wire::room::path_with_resume(None);
            socket_base(page).map(|base| socket_url(&base, &path))
        };
        assert_eq!(room("http://127.0.0.1:8888/").as_deref(), Some("ws://127.0.0.1:8888/ws/room"));
        assert_eq!(room("https://h/app/index.html").as_deref(), Some("wss://h/app/ws/room"));
        let resume = wire::room::Resume { epoch: "e1".into(), offset: 7 };
        let path = wire::room::path_with_resume(Some(&resume));
        assert_eq!(socket_url("ws://h/app/", &path), "ws://h/app/ws/room?epoch=e1&offset=7");
    }

    #[test]
    fn other_schemes_have_no_socket() {
        assert_eq!(ws_url("file:///tmp/index.html"), None);
        assert_eq!(ws_url("about:blank"), None);
    }
}
