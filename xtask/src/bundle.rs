//! The browser bundle: `trunk build --release` into `dist/`, and its size.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::process::{run, step};

/// Builds the size-optimised bundle into `<root>/dist`.
pub fn build_release(root: &Path) -> Result<()> {
    step("building the release bundle (trunk build --release)", || {
        run(Command::new("trunk").args(["build", "--release"]).current_dir(root))
    })
}

/// The most the bundle (.wasm + .js, gzip -9) may weigh before `cargo xtask test` fails.
/// Raise it deliberately, with the new size in the README, when a feature is worth it. (One
/// `{:?}` of a string in the page adds about 4 KB gzip: Debug escaping pulls in Unicode tables.)
pub const GZIP_BUDGET: u64 = 27_000;

/// Prints each `.wasm` and `.js` file of `dist/` with its raw and `gzip -9` size, and returns
/// the gzip total.
pub fn print_size(root: &Path) -> Result<u64> {
    let dist = root.join("dist");
    let mut files: Vec<_> = std::fs::read_dir(&dist)
        .with_context(|| {
            format!("cannot read {}; build the bundle first (`cargo xtask build`)", dist.display())
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm" || ext == "js"))
        .collect();
    if files.is_empty() {
        bail!("no .wasm or .js in {}; build the bundle first", dist.display());
    }
    files.sort();
    println!("    bundle size (bytes):          raw     gzip -9");
    let (mut raw_total, mut gzip_total) = (0, 0);
    for file in &files {
        let raw = std::fs::metadata(file)?.len();
        let gzip = gzip_size(file)?;
        raw_total += raw;
        gzip_total += gzip;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let kind = if name.ends_with(".wasm") { ".wasm" } else { ".js" };
        println!("    {kind:<24} {raw:>9} {gzip:>11}");
    }
    println!("    {:<24} {raw_total:>9} {gzip_total:>11}", "total");
    Ok(gzip_total)
}

fn gzip_size(file: &Path) -> Result<u64> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(file)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run gzip")?;
    if !out.status.success() {
        bail!("gzip failed on {}", file.display());
    }
    Ok(out.stdout.len() as u64)
}
