//! CPU time and memory of processes, from `/proc` (Linux).

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far: by the server, by this process, and by the whole machine (busy
/// time only).
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub server_seconds: f64,
    /// The user-space part of `server_seconds`: the rest is the kernel's (the sockets).
    pub server_user_seconds: f64,
    pub own_seconds: f64,
    pub total_seconds: f64,
}

impl Snapshot {
    pub fn take(server_pid: u32) -> Result<Self> {
        let (user, system) = user_and_system(&format!("/proc/{server_pid}/stat"))?;
        Ok(Self {
            server_seconds: user + system,
            server_user_seconds: user,
            own_seconds: process_seconds("/proc/self/stat")?,
            total_seconds: machine_busy_seconds()?,
        })
    }
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn process_seconds_of(pid: u32) -> Result<f64> {
    process_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds process `pid` has used so far in the kernel (system time) alone.
pub fn system_seconds_of(pid: u32) -> Result<f64> {
    Ok(user_and_system(&format!("/proc/{pid}/stat"))?.1)
}

fn process_seconds(path: &str) -> Result<f64> {
    let (user, system) = user_and_system(path)?;
    Ok(user + system)
}

/// utime and stime of a process in seconds (fields 14 and 15 of its `stat`, counted after the
/// command name, which may contain spaces but ends at the last `)`).
fn user_and_system(path: &str) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("stat format")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> Result<f64> {
        let field = fields.get(i).context("stat fields")?;
        Ok(field.parse::<f64>().unwrap_or(0.0) / TICKS_PER_SECOND)
    };
    Ok((ticks(11)?, ticks(12)?))
}

/// The machine's busy CPU time: every `cpu` column of `/proc/stat` but idle and iowait.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let columns: Vec<f64> =
        line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
    let busy: f64 = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Ok(busy / TICKS_PER_SECOND)
}

/// The resident memory of a process, in bytes (`VmRSS` of its `status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read status")?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let snapshot = Snapshot::take(pid).expect("snapshot");
        assert!(snapshot.server_seconds >= 0.0 && snapshot.total_seconds > 0.0);
        assert!(rss_bytes(pid).expect("rss") > 0);
    }
}
