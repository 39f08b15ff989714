//! The Autobahn TestSuite's fuzzing-client cases 1–10 against a WebSocket echo server, run by
//! kosoku (PyPI), which drives Autobahn's own case files from Rust; the official
//! `autobahntestsuite` needs Python 2.
//!
//! kosoku 0.1.0 facts this module relies on:
//! - The address is a URL (`ws://HOST:PORT/PATH?QUERY`, or `http://`, or bare `HOST:PORT/PATH`);
//!   each case opens one connection and sends `GET /PATH?QUERY`: the URL's path and query as
//!   given, `/` when there is none. `wss://` is rejected (it speaks plain TCP only).
//! - `index.json` is `{ AGENT: { CASE_ID: { "behavior", "behaviorClose", "duration",
//!   "remoteCloseCode", "reportfile" } } }`, where AGENT is the server's `Server` header, or
//!   `HOST:PORT` when it sends none.
//! - Exit status 1 when any case's `behavior` is not OK, NON-STRICT or INFORMATIONAL or its
//!   `behaviorClose` is not OK or INFORMATIONAL (a case that cannot connect is `ERROR`); also 1,
//!   with a Python traceback and no report, for a bad URL or an `--include` pattern matching no
//!   case. Status 0 when every selected case passed, even when none was selected (`-i 1.1.1
//!   -x '1.*'` prints `0 cases passed` and writes no report), and a killed run writes no report
//!   either; so the verdict here comes from `index.json` (deleted first, so a stale one cannot
//!   count) and from how many cases it holds, and the exit status must agree with it.
//! - No timeout on the opening handshake: a server that accepts TCP and never answers hangs
//!   kosoku forever, hence [`RUN_LIMIT`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::target_dir;
use crate::venv;

/// The kosoku release installed into the virtualenv.
pub const KOSOKU_VERSION: &str = "0.1.0";

/// Cases 1–10. Autobahn has no category 8, and kosoku fails on an `--include` pattern that
/// matches no case, so `8.*` is left out. Compression (12, 13) is not included.
const CASE_GROUPS: &[&str] = &["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"];

/// How many cases [`CASE_GROUPS`] select in kosoku 0.1.0 (16 + 11 + 7 + 10 + 20 + 145 + 37 +
/// 54 + 1). A report with another count comes from a broken run.
const EXPECTED_CASES: usize = 301;

/// The largest message the cases send, in one frame (9.1.6 text, 9.2.6 binary: 16 MiB); the
/// server needs a message and frame limit of at least this much.
pub const LARGEST_MESSAGE: usize = 16 << 20;

/// The longest a run may take: about 15 s against a conforming server on 2 cores, about 2
/// minutes against one that fails every case (cases wait out their own timeouts), forever
/// against one that never answers the handshake.
const RUN_LIMIT: Duration = Duration::from_secs(5 * 60);

/// The verdicts that pass, in either `behavior` or `behaviorClose`. Anything else (FAILED, WRONG
/// CODE, UNCLEAN, NO CLOSE, FAILED BY CLIENT, UNIMPLEMENTED, ERROR, or an unknown label) fails.
const OK: &str = "OK";
const NON_STRICT: &str = "NON-STRICT";
const INFORMATIONAL: &str = "INFORMATIONAL";

/// How many cases a run covered, by verdict. A case counts under the less strict of its
/// `behavior` and `behaviorClose` (OK, then NON-STRICT, then INFORMATIONAL), so the three add up
/// to `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub ok: usize,
    pub non_strict: usize,
    pub informational: usize,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "autobahn cases 1-10: {} total, {} OK, {} NON-STRICT, {} INFORMATIONAL",
            self.total, self.ok, self.non_strict, self.informational
        )
    }
}

/// Ensures kosoku [`KOSOKU_VERSION`] in a virtualenv at `<target>/autobahn/venv` (see
/// [`venv::ensure`]) and returns the path of its `kosoku` executable.
pub fn ensure_kosoku(root: &Path) -> Result<PathBuf> {
    let venv = venv::ensure_with_programs(root, "autobahn", "kosoku", KOSOKU_VERSION, &["kosoku"])?;
    Ok(venv.join("bin/kosoku"))
}

/// Runs cases 1–10 against the echo server at `ws_url` (kosoku connects to its path, e.g.
/// `ws://127.0.0.1:PORT/ws/`), writes the report to `<target>/autobahn/report`, and returns the
/// counts; fails if any case failed, if the report is missing or has fewer cases than the
/// selection, or if the run takes longer than [`RUN_LIMIT`].
pub fn run_cases(root: &Path, kosoku: &Path, ws_url: &str) -> Result<Counts> {
    let report = target_dir(root).join("autobahn/report");
    if report.exists() {
        std::fs::remove_dir_all(&report)
            .with_context(|| format!("cannot remove the previous report {}", report.display()))?;
    }
    let mut command = Command::new(kosoku);
    command.args(["--mode", "fuzzingclient", ws_url]);
    for group in CASE_GROUPS {
        command.args(["--include", group]);
    }
    command.arg("--outdir").arg(&report);
    println!(
        "    {} --mode fuzzingclient {ws_url} --include {} --outdir {}",
        kosoku.display(),
        CASE_GROUPS.join(" --include "),
        report.display()
    );
    let child = command.spawn().with_context(|| format!("cannot start {}", kosoku.display()))?;
    let status = KillOnDrop(child).wait_for(RUN_LIMIT)?;
    let counts = read_report(&report.join("index.json"), EXPECTED_CASES).with_context(|| {
        let html = report.join("index.html");
        if html.is_file() {
            format!("kosoku exited with {status}; each case is detailed in {}", html.display())
        } else {
            format!("kosoku exited with {status}; see its output above")
        }
    })?;
    if !status.success() {
        bail!("kosoku exited with {status} although its report shows every case passing");
    }
    Ok(counts)
}

/// A child process killed (SIGKILL) if it is still running when dropped: kosoku holds nothing
/// that needs a graceful stop, and starts no processes of its own.
#[derive(Debug)]
struct KillOnDrop(Child);

impl KillOnDrop {
    /// Polls the child until it exits, or until `limit` has passed (then the drop kills it).
    fn wait_for(mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().context("waiting for kosoku")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "kosoku did not finish within {:?} (cases 1-10 take about 15 s against a \
                     conforming server, 2 minutes against one that fails them all); stopped it",
                    limit
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Reads a kosoku `index.json` and checks it with [`check_index`].
fn read_report(index: &Path, expected: usize) -> Result<Counts> {
    let text = std::fs::read_to_string(index).with_context(|| {
        format!("no report at {}: kosoku did not finish its run", index.display())
    })?;
    check_index(&text, expected).with_context(|| format!("in {}", index.display()))
}

/// Counts the verdicts in the text of an `index.json`; fails if a case did not pass or if there
/// are not exactly `expected` cases.
fn check_index(text: &str, expected: usize) -> Result<Counts> {
    let index: Value = serde_json::from_str(text).context("index.json is not JSON")?;
    let agents = index.as_object().context("index.json is not an object of agents")?;
    let mut counts = Counts::default();
    // The failing cases' lines for the error, in numeric case order.
    let mut failures = BTreeMap::new();
    for (agent, cases) in agents {
        let cases = cases
            .as_object()
            .with_context(|| format!("agent {agent:?} does not map to an object of cases"))?;
        for (id, case) in cases {
            let label = |field: &str| {
                case.get(field)
                    .and_then(Value::as_str)
                    .with_context(|| format!("case {id} has no string `{field}`"))
            };
            let (behavior, close) = (label("behavior")?, label("behaviorClose")?);
            counts.total += 1;
            match (strictness(behavior), strictness(close)) {
                (Some(a), Some(b)) => match a.max(b) {
                    0 => counts.ok += 1,
                    1 => counts.non_strict += 1,
                    _ => counts.informational += 1,
                },
                _ => {
                    failures.insert(case_order(id), format!("{id}: {behavior} / {close}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        let mut lines: Vec<String> = failures.into_values().collect();
        let count = lines.len();
        const SHOWN: usize = 40;
        if count > SHOWN {
            lines.truncate(SHOWN);
            lines.push(format!("... and {} more", count - SHOWN));
        }
        bail!(
            "{count} of {} autobahn cases failed (case: behavior / behaviorClose):\n  {}",
            counts.total,
            lines.join("\n  ")
        );
    }
    if counts.total != expected {
        bail!(
            "the report has {} cases, expected {expected}: the run did not cover cases 1-10",
            counts.total
        );
    }
    Ok(counts)
}

/// 0 for OK, 1 for NON-STRICT, 2 for INFORMATIONAL; `None` for a failing verdict.
fn strictness(label: &str) -> Option<u8> {
    match label {
        OK => Some(0),
        NON_STRICT => Some(1),
        INFORMATIONAL => Some(2),
        _ => None,
    }
}

/// Sorts case ids numerically (`1.1.10` after `1.1.9`), then by text.
fn case_order(id: &str) -> (Vec<u64>, String) {
    (id.split('.').map(|part| part.parse().unwrap_or(u64::MAX)).collect(), id.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::{check_index, read_report, Counts, KillOnDrop};

    /// One case as kosoku 0.1.0 writes it into index.json.
    fn case(id: &str, behavior: &str, close: &str) -> String {
        let file = id.replace('.', "_");
        format!(
            r#""{id}": {{
         "behavior": "{behavior}",
         "behaviorClose": "{close}",
         "duration": 1,
         "remoteCloseCode": 1000,
         "reportfile": "127_0_0_1_40123_case_{file}.json"
      }}"#
        )
    }

    fn index(cases: &[(&str, &str, &str)]) -> String {
        let cases: Vec<String> = cases.iter().map(|(id, b, c)| case(id, b, c)).collect();
        format!("{{\n   \"127.0.0.1:40123\": {{\n      {}\n   }}\n}}", cases.join(",\n      "))
    }

    #[test]
    fn passing_cases_are_counted_by_their_less_strict_verdict() {
        let text = index(&[
            ("1.1.1", "OK", "OK"),
            ("6.4.3", "NON-STRICT", "OK"),
            ("7.1.6", "INFORMATIONAL", "INFORMATIONAL"),
            ("7.13.1", "OK", "INFORMATIONAL"),
            ("10.1.1", "OK", "OK"),
        ]);
        let counts = check_index(&text, 5).expect("every case passes");
        assert_eq!(counts, Counts { total: 5, ok: 2, non_strict: 1, informational: 2 });
        assert_eq!(
            counts.to_string(),
            "autobahn cases 1-10: 5 total, 2 OK, 1 NON-STRICT, 2 INFORMATIONAL"
        );
    }

    #[test]
    fn failing_cases_are_listed_in_case_order() {
        let text = index(&[
            ("1.1.2", "OK", "OK"),
            ("1.1.10", "FAILED", "OK"),
            ("1.1.9", "OK", "WRONG CODE"),
            ("2.1", "OK", "UNCLEAN"),
            ("3.1", "NO CLOSE", "OK"),
            ("4.1.1", "ERROR", "FAILED"),
            ("5.1", "UNIMPLEMENTED", "OK"),
            ("5.2", "OK", "FAILED BY CLIENT"),
        ]);
        let error = format!("{:#}", check_index(&text, 8).expect_err("cases fail"));
        assert!(error.contains("7 of 8 autobahn cases failed"), "{error}");
        let listed: Vec<&str> = error.lines().skip(1).map(str::trim).collect();
        assert_eq!(
            listed,
            [
                "1.1.9: OK / WRONG CODE",
                "1.1.10: FAILED / OK",
                "2.1: OK / UNCLEAN",
                "3.1: NO CLOSE / OK",
                "4.1.1: ERROR / FAILED",
                "5.1: UNIMPLEMENTED / OK",
                "5.2: OK / FAILED BY CLIENT",
            ]
        );
    }

    #[test]
    fn too_few_cases_fail_even_when_all_pass() {
        let text = index(&[("1.1.1", "OK", "OK")]);
        let error = format!("{:#}", check_index(&text, 301).expect_err("too few"));
        assert!(error.contains("has 1 cases, expected 301"), "{error}");
        assert!(check_index("{}", 301).is_err(), "zero cases");
        assert!(check_index(r#"{"127.0.0.1:1": {}}"#, 301).is_err(), "zero cases");
    }

    #[test]
    fn a_malformed_or_missing_report_fails() {
        assert!(check_index("", 1).is_err());
        assert!(check_index("[]", 1).is_err());
        assert!(check_index(r#"{"a": {"1.1.1": {"behaviorClose": "OK"}}}"#, 1).is_err());
        let missing = std::env::temp_dir().join("xtask-autobahn-no-such-dir/index.json");
        let error = format!("{:#}", read_report(&missing, 1).expect_err("no file"));
        assert!(error.contains("no report at"), "{error}");
    }

    #[test]
    fn a_run_past_its_limit_is_killed() {
        let child = Command::new("sleep").arg("60").spawn().expect("start sleep");
        let pid = child.id();
        let started = Instant::now();
        let error = KillOnDrop(child).wait_for(Duration::from_millis(200)).expect_err("too slow");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(error.to_string().contains("did not finish within 200ms"), "{error}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "sleep {pid} still exists");
    }
}
