//! The browser bundle: `trunk build --release` into `dist/`, and its size.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::process::{run, step};

/// The terser release pinned in `tools/package.json`.
pub const TERSER_VERSION: &str = "5.51.4";

/// npm's terser, installed by `cargo xtask setup`.
pub fn terser(root: &Path) -> PathBuf {
    root.join("tools/node_modules/.bin/terser")
}

/// Builds the size-optimised bundle into `<root>/dist`, then minifies the wasm-bindgen JS glue
/// with terser (trunk 0.21's own minifier cannot parse it and leaves it as it is: a quarter
/// of the bundle's gzipped bytes). Trunk's integrity hashes are off (`no_sri` in Trunk.toml),
/// as they would pin the unminified file; the assets are same-origin, where SRI adds nothing.
pub fn build_release(root: &Path) -> Result<()> {
    step("building the release bundle (trunk build --release)", || {
        run(Command::new("trunk").args(["build", "--release"]).current_dir(root))
    })?;
    for script in bundle_files(root)?.iter().filter(|f| f.extension().is_some_and(|e| e == "js")) {
        run(Command::new(terser(root))
            .arg(script)
            .args(["--module", "--compress", "--mangle", "--output"])
            .arg(script))
        .context("cannot minify the JS glue; `cargo xtask setup` installs terser")?;
    }
    precompress(root)
}

/// Writes `FILE.br` (brotli, quality 11) and `FILE.gz` (gzip, level 9) beside each file of
/// `dist/`, which the server (and nginx's `gzip_static`/`brotli_static`) send to browsers that
/// accept them; prints how long each compression took, which is what compressing per request
/// would cost.
pub fn precompress(root: &Path) -> Result<()> {
    use std::io::Write;
    use std::time::Instant;

    step("precompressing dist/ (brotli 11, gzip 9)", || {
        let dist = root.join("dist");
        for entry in std::fs::read_dir(&dist).context("read dist/")? {
            let path = entry?.path();
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if !matches!(extension, "html" | "js" | "wasm") {
                continue;
            }
            let raw = std::fs::read(&path)?;
            let started = Instant::now();
            let mut brotli_out = Vec::new();
            let params =
                brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
            brotli::BrotliCompress(&mut &raw[..], &mut brotli_out, &params)?;
            let brotli_time = started.elapsed();
            let started = Instant::now();
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gzip.write_all(&raw)?;
            let gzip_out = gzip.finish()?;
            let gzip_time = started.elapsed();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            println!(
                "    {name}: {} bytes, br {} ({:.1} ms), gz {} ({:.1} ms)",
                raw.len(),
                brotli_out.len(),
                brotli_time.as_secs_f64() * 1000.0,
                gzip_out.len(),
                gzip_time.as_secs_f64() * 1000.0
            );
            std::fs::write(append_extension(&path, "br"), brotli_out)?;
            std::fs::write(append_extension(&path, "gz"), gzip_out)?;
        }
        Ok(())
    })
}

fn append_extension(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

/// The bundle's `.wasm` and `.js` files in `dist/`, sorted.
fn bundle_files(root: &Path) -> Result<Vec<PathBuf>> {
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
    Ok(files)
}

/// The most the bundle (.wasm + .js, gzip -9) may weigh before `cargo xtask test` fails:
/// the whole page with the Room view, the long-polling fallback and the Compare view (54,650
/// bytes when they landed: the echo page 31,257, the room +9,168, the fallback about +7,700,
/// Compare about +6,700, measured with twiggy by leaving each out). A ceiling, not slack: the
/// echo page alone was held to 31,446 (the tutorial page's 25,157 plus 25 %). Raise it
/// deliberately, with the new size in the README, when a feature is worth it. What costs bytes
/// here: a `{:?}` of a string (about 4 KB: Debug escaping pulls in Unicode tables), `format!`
/// inside closures and iterator chains, `sort`, string slicing (its panic path formats
/// `char`s), a second channel or timer crate, serde in the wasm (the room decodes with the
/// browser's `JSON.parse`), and every `async` state machine (they compress poorly).
pub const GZIP_BUDGET: u64 = 56_000;

/// Prints each `.wasm` and `.js` file of `dist/` with its raw and `gzip -9` size, and returns
/// the gzip total.
pub fn print_size(root: &Path) -> Result<u64> {
    let files = bundle_files(root)?;
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
