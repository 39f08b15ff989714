//! `cargo xtask dev`: the server and `trunk serve` side by side until Ctrl-C.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::process::{cargo, step};

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
            "==> page: http://127.0.0.1:8080/ (trunk serve, rebuilds on change); server: \
             http://127.0.0.1:{}/; Ctrl-C stops both",
            wire::DEFAULT_PORT
        );
        let outcome = tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C").map(|()| "Ctrl-C"),
            status = server.wait() => status.map(|_| "the server exited").context("server"),
            status = trunk.wait() => status.map(|_| "trunk exited").context("trunk"),
        }?;
        println!("==> {outcome}: stopping the server and trunk");
        stop(&mut server).await;
        stop(&mut trunk).await;
        Ok(())
    })
}

/// SIGTERM, a bounded wait, then SIGKILL. (From a terminal, Ctrl-C reached the child too.)
async fn stop(child: &mut Child) {
    if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
