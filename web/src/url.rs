//! The WebSocket URL, derived from the page's own location (never hard-coded).

use wasm_bindgen::JsValue;

/// `ws://<host>/ws/` for an `http:` page, `wss://<host>/ws/` for an `https:` one.
///
/// `protocol` and `host` are `window.location.protocol` (with its colon) and
/// `window.location.host` (with the port, if any).
pub fn ws_url(protocol: &str, host: &str) -> String {
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{host}{}", wire::WS_PATH)
}

/// [`ws_url`] for the current page.
pub fn for_page(window: &web_sys::Window) -> Result<String, JsValue> {
    let location = window.location();
    Ok(ws_url(&location.protocol()?, &location.host()?))
}

#[cfg(test)]
mod tests {
    use super::ws_url;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn http_pages_use_ws_on_the_same_host_and_port() {
        assert_eq!(ws_url("http:", "127.0.0.1:8888"), "ws://127.0.0.1:8888/ws/");
    }

    #[test]
    fn https_pages_use_wss() {
        assert_eq!(ws_url("https:", "example.com"), "wss://example.com/ws/");
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        assert_eq!(ws_url("http:", "[::1]:8080"), "ws://[::1]:8080/ws/");
    }
}
