//! Tidy tests: conventions and version pins that must stay in agreement across files.

use std::path::{Path, PathBuf};

use crate::setup::{locked_version, WASM_OPT_VERSION};
use crate::workspace_root;

fn read(path: &str) -> String {
    let full = workspace_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

/// The value of `key = "value"` on a line of a TOML or similar file.
fn quoted_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if !matches!(name.to_str(), Some("target" | "node_modules" | "dist" | ".git")) {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|file| !std::fs::read_to_string(file).unwrap_or_default().starts_with("//! "))
        .collect();
    assert!(missing.is_empty(), "files without a leading `//! ` line: {missing:?}");
}

#[test]
fn wasm_bindgen_pins_agree() {
    let locked =
        locked_version(&read("Cargo.lock"), "wasm-bindgen").expect("wasm-bindgen in Cargo.lock");
    assert_eq!(
        quoted_value(&read("Trunk.toml"), "wasm_bindgen"),
        Some(locked.clone()),
        "Trunk.toml [tools]"
    );
    assert_eq!(
        quoted_value(&read("Cargo.toml"), "wasm-bindgen"),
        Some(format!("={locked}")),
        "the workspace must pin the crate exactly"
    );
}

#[test]
fn wasm_opt_pins_agree() {
    assert_eq!(quoted_value(&read("Trunk.toml"), "wasm_opt").as_deref(), Some(WASM_OPT_VERSION));
    let major = WASM_OPT_VERSION.trim_start_matches("version_");
    let package = read("tools/package.json");
    assert!(
        package.contains(&format!("\"binaryen\": \"{major}.0.0\"")),
        "tools/package.json: {package}"
    );
}

#[test]
fn trunk_proxies_the_websocket_path_to_the_default_port() {
    let backend = quoted_value(&read("Trunk.toml"), "backend").expect("a [[proxy]] backend");
    assert_eq!(backend, format!("ws://127.0.0.1:{}{}", wire::DEFAULT_PORT, wire::WS_PATH));
}

#[test]
fn dev_announces_the_port_trunk_serves_on() {
    let port = quoted_value(&read("Trunk.toml"), "port").expect("[serve] port");
    assert_eq!(port, crate::dev::TRUNK_PORT.to_string());
}

#[test]
fn release_bundle_uses_the_size_profile() {
    assert!(read("index.html").contains("data-cargo-profile-release=\"wasm-release\""));
    assert!(read("Cargo.toml").contains("[profile.wasm-release]"));
}
