//! Instructions, the fifth part of `cargo xtask bench`: the user-space instructions each server
//! executes per message and per handshake, counted by valgrind's callgrind. CPU seconds on this
//! VM move 10–20 % between runs (docs/BENCHMARKS.md); an instruction count repeats within
//! 0.1 %, so it decides what a change to the server's own code is worth where the CPU rows
//! cannot. It says nothing of the kernel's share (most of a message's cost at one message in
//! flight), which only the CPU rows measure.
//!
//! Each server runs on core 0 under `valgrind --tool=callgrind --instr-atstart=no`: the
//! scenario runs once uninstrumented (warm-up: allocator, caches, lazy statics), then
//! `callgrind_control -i on`, the scenario again (load generator on core 1), `-i off`, and
//! `-d`; the dump's `totals:` divided by the messages or handshakes of that run is the figure.
//! Under valgrind the server runs tens of times slower, so the windows hold fewer operations
//! than the CPU rows' and the generator never saturates it; what is counted per operation does
//! not depend on that.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use super::{generate, machine, number, replace_generated, Pinning, Plan};
use crate::process::{run, start_announcing, step};
use crate::{setup, target_dir};

/// A server as measured here.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    binary: &'static str,
    args: &'static [&'static str],
    /// `RUST_LOG` for it (`None`: its default logging).
    log_filter: Option<&'static str>,
}

const OURS: Variant = Variant { name: "ours", binary: "server", args: &[], log_filter: None };
const OURS_QUIET: Variant = Variant {
    name: "ours, `RUST_LOG=warn`",
    binary: "server",
    args: &[],
    log_filter: Some("warn"),
};
const FASTWEBSOCKETS: Variant =
    Variant { name: "fastwebsockets", binary: "ref-fastwebsockets", args: &[], log_filter: None };
const FASTWEBSOCKETS_LOGGED: Variant = Variant {
    name: "fastwebsockets `--log`",
    binary: "ref-fastwebsockets",
    args: &["--log"],
    log_filter: None,
};

/// One row: a scenario, the servers it is counted on, and what one operation is.
struct Row {
    label: &'static str,
    args: Vec<String>,
    variants: &'static [Variant],
    /// The result's count of operations (`messages` or `handshakes`).
    per: &'static str,
}

fn rows(plan: Plan) -> Vec<Row> {
    let seconds = plan.seconds.to_string();
    let echo = |connections: &str, pipeline: &str| {
        ["echo", "--connections", connections, "--pipeline", pipeline, "--seconds", &seconds]
            .map(str::to_owned)
            .to_vec()
    };
    let handshakes =
        ["handshakes", "--concurrency", "16", "--seconds", &seconds].map(str::to_owned).to_vec();
    let all = &[OURS, FASTWEBSOCKETS];
    let mut rows = vec![Row {
        label: "per message, echo, 64 connections",
        args: echo("64", "1"),
        variants: all,
        per: "messages",
    }];
    if plan.instructions_full {
        rows.push(Row {
            label: "per message, pipelined, 64 connections × 16",
            args: echo("64", "16"),
            variants: all,
            per: "messages",
        });
        rows.push(Row {
            label: "per handshake, 16 at a time",
            args: handshakes,
            variants: &[OURS, OURS_QUIET, FASTWEBSOCKETS, FASTWEBSOCKETS_LOGGED],
            per: "handshakes",
        });
    }
    rows
}

/// Counts every row, prints the table and, with `write_docs`, writes it to
/// `docs/BENCHMARKS.md`. Fails when a run had wrong or missing replies, or counted nothing.
pub(super) fn run_all(
    root: &Path,
    release: &Path,
    pin: Pinning,
    plan: Plan,
    write_docs: bool,
) -> Result<()> {
    setup::valgrind()?;
    let dir = target_dir(root).join("callgrind");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let rows = rows(plan);
    // counted[row][column] = instructions per operation.
    let mut counted = vec![[None; COLUMNS.len()]; rows.len()];
    for (r, row) in rows.iter().enumerate() {
        for variant in row.variants {
            let label = format!("instructions {} on {}", row.label, variant.name);
            let (instructions, operations) =
                step(&label, || count(root, release, &dir, pin, *variant, row))?;
            ensure!(operations > 0.0 && instructions > 0, "{label}: nothing was counted");
            let per = instructions as f64 / operations;
            println!("    {per:.0} per operation ({operations:.0} operations)");
            let column = COLUMNS.iter().position(|c| c.name == variant.name).unwrap_or(0);
            counted[r][column] = Some(per);
        }
    }
    let table = table(&rows, &counted);
    println!("{table}");
    if write_docs {
        let generated = format!(
            "{}; {}. Command: `cargo xtask bench` (or `--instructions`): each server \
             (release) under callgrind on core 0, the load generator on core 1, {} s per \
             window.\n\n{table}",
            machine(),
            crate::process::output("valgrind", &["--version"]).unwrap_or_default(),
            plan.seconds,
        );
        replace_generated(root, "instructions ", &generated)?;
    }
    Ok(())
}

/// The table's columns, in order: every variant any row counts.
const COLUMNS: [Variant; 4] = [OURS, OURS_QUIET, FASTWEBSOCKETS, FASTWEBSOCKETS_LOGGED];

fn table(rows: &[Row], counted: &[[Option<f64>; COLUMNS.len()]]) -> String {
    let mut table = String::from("| user-space instructions |");
    for column in COLUMNS {
        table.push_str(&format!(" {} |", column.name));
    }
    table.push_str(" ours ÷ fastwebsockets | ours ÷ fastwebsockets `--log` |\n|---|");
    table.push_str(&"---|".repeat(COLUMNS.len() + 2));
    table.push('\n');
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    };
    for (row, counts) in rows.iter().zip(counted) {
        table.push_str(&format!("| {} |", row.label));
        for count in counts {
            table.push_str(&format!(" {} |", count.map_or("–".to_owned(), thousands)));
        }
        let [ours, _, fastwebsockets, logged] = *counts;
        table.push_str(&format!(" {} | {} |\n", ratio(ours, fastwebsockets), ratio(ours, logged)));
    }
    table
}

/// Runs `row` on `variant` under callgrind: (instructions counted, operations in that window).
fn count(
    root: &Path,
    release: &Path,
    dir: &Path,
    pin: Pinning,
    variant: Variant,
    row: &Row,
) -> Result<(u64, f64)> {
    let out = dir.join(format!("{}.out", variant.binary));
    clear(dir, &out)?;
    let mut command = pin.command(0, Path::new("valgrind"));
    command.args(["--tool=callgrind", "--instr-atstart=no"]);
    command.arg(format!("--callgrind-out-file={}", out.display()));
    command.arg(release.join(variant.binary)).args(variant.args);
    if variant.binary == "server" {
        command.arg("--assets").arg(root.join("dist"));
    }
    if let Some(filter) = variant.log_filter {
        command.env("RUST_LOG", filter);
    }
    // valgrind's own messages go to stderr, with the server's log.
    command.args(["--port", "0"]).stderr(Stdio::null());
    let (guard, addr) = start_announcing(command)?;
    let pid = guard.pid().to_string();
    let warm = generate(release, pin, addr, guard.pid(), &row.args)?;
    ensure!(number(&warm, "errors") == 0.0, "wrong or missing replies while warming up: {warm}");
    let control = |args: &[&str]| {
        let mut command = Command::new("callgrind_control");
        // It reports each command it sends; a failure shows in its exit status.
        command.args(args).arg(&pid).stdout(Stdio::null()).stderr(Stdio::null());
        run(&mut command)
    };
    control(&["--instr=on"])?;
    let result = generate(release, pin, addr, guard.pid(), &row.args)?;
    control(&["--instr=off"])?;
    control(&["--dump"])?;
    drop(guard);
    ensure!(number(&result, "errors") == 0.0, "wrong or missing replies: {result}");
    Ok((dumped(dir, &out)?, number(&result, row.per)))
}

/// Removes the previous dumps of `out` (`OUT`, `OUT.1`, ...).
fn clear(dir: &Path, out: &Path) -> Result<()> {
    for path in dumps(dir, out)? {
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}

/// The instructions in every dump of `out`: the one `--dump` asked for, and the one valgrind
/// writes as the server exits (nothing, instrumentation being off by then).
fn dumped(dir: &Path, out: &Path) -> Result<u64> {
    let mut total = 0;
    for path in dumps(dir, out)? {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        total += totals(&text);
    }
    Ok(total)
}

fn dumps(dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if file == name || file.strip_prefix(&name).is_some_and(|rest| rest.starts_with('.')) {
            found.push(path);
        }
    }
    Ok(found)
}

/// A callgrind dump's `totals:` line (its first event, `Ir`, the only one collected here).
fn totals(dump: &str) -> u64 {
    dump.lines()
        .filter_map(|line| line.strip_prefix("totals:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn thousands(value: f64) -> String {
    format!("{:.1}k", value / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 2\n\
                    fn=main\n0 2\ntotals: 226288317\n";
        assert_eq!(totals(dump), 226_288_317);
        assert_eq!(totals("events: Ir\n"), 0);
    }
}
