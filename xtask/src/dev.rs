//! `cargo xtask dev`: the server and `trunk serve` side by side until Ctrl-C.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::process::{Child, Command};

use crate::process::{cargo, signal, step};

/// `trunk serve`'s port, from `[serve]` in Trunk.toml (a tidy test keeps them equal).
pub const TRUNK_PORT: u16 = 8080;

/// How long each child gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The server on its default port and `trunk serve` (port 8080, proxying `/ws/` to it).
pub fn run(root: &Path) -> Result<()> {
    step("building the server", || {
        cargo(root, &["build", "--package", "server", "--bin", "server"])
    })?;
    let server_bin = crate::target_dir(root).join("debug/server");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut server = Command::new(server_bin)
            .current_dir(root)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the server")?;
        let mut trunk = Command::new("trunk")
            .arg("serve")
            .current_dir(root)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `trunk serve`")?;
        println!(
            "==> page: http://127.0.0.1:{TRUNK_PORT}/ (trunk serve, rebuilds on change); server: \
             http://127.0.0.1:{}/; Ctrl-C stops both",
            wire::DEFAULT_PORT
        );
        let outcome = tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result.context("waiting for Ctrl-C")?;
                Ok(())
            }
            status = server.wait() => Err(anyhow!("the server exited ({})", status?)),
            status = trunk.wait() => Err(anyhow!("trunk serve exited ({})", status?)),
        };
        println!("==> stopping the server and trunk");
        stop(&mut server).await;
        stop(&mut trunk).await;
        outcome.with_context(|| {
            format!("see the output above (is port {} or {TRUNK_PORT} in use?)", wire::DEFAULT_PORT)
        })
    })
}

/// SIGTERM, a bounded wait, then SIGKILL. (From a terminal, Ctrl-C reached the child too.)
async fn stop(child: &mut Child) {
    if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
        signal("TERM", &pid.to_string());
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
