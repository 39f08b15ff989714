//! `cargo xtask dev`: the server and `trunk serve` side by side until Ctrl-C.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{cargo, step};

/// `cargo xtask dev`: the server on its default port and `trunk serve` beside it.
pub fn run(root: &Path) -> Result<()> {
    step("building the server", || {
        cargo(root, &["build", "--package", "server", "--bin", "server"])
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut server = tokio::process::Command::new(crate::target_dir(root).join("debug/server"))
            .current_dir(root)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the server")?;
        let mut trunk = tokio::process::Command::new("trunk")
            .arg("serve")
            .current_dir(root)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `trunk serve`")?;
        println!("==> page: http://127.0.0.1:8080/ (trunk serve), server: http://127.0.0.1:{}/", wire::DEFAULT_PORT);
        let outcome = tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C").map(|()| "Ctrl-C"),
            status = server.wait() => status.map(|_| "the server exited").context("server"),
            status = trunk.wait() => status.map(|_| "trunk exited").context("trunk"),
        }?;
        println!("==> {outcome}: stopping");
        // Both children also got Ctrl-C from the terminal; give them a moment, then kill.
        for child in [&mut server, &mut trunk] {
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        Ok(())
    })
}
