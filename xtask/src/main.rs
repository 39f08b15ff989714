//! `cargo xtask`: the one entry point for setting up, building, running and testing.

mod autobahn;
mod bench;
mod bundle;
mod chart;
mod dev;
mod flags;
mod process;
mod setup;
mod test;
mod venv;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Parser;

use crate::flags::{Command, Flags};

fn main() {
    let flags = Flags::parse();
    if let Err(error) = run(flags.command) {
        eprintln!("\nxtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    let root = workspace_root();
    process::prepare_env(&root);
    match command {
        Command::Run { server_args } => {
            build(&root)?;
            println!("==> starting the server; Ctrl-C stops it");
            process::exec_server(&root, &target_dir(&root).join("release/server"), &server_args)
        }
        Command::Dev => {
            setup::tools(&root, false)?;
            dev::run(&root)
        }
        Command::Test => test::all(&root),
        Command::Build => build(&root),
        Command::Setup { browser } => setup::tools(&root, browser),
        Command::Size => bundle::print_size(&root).map(drop),
        Command::Bench { smoke, soak, fanout, heads, polling, instructions } => {
            setup::tools(&root, false)?;
            if let Some(seconds) = soak {
                return bench::soak(&root, seconds);
            }
            let plan = if smoke { bench::Plan::SMOKE } else { bench::Plan::FULL };
            if fanout {
                return bench::fanout_only(&root, plan, !smoke);
            }
            if heads {
                return bench::heads_only(&root, plan, !smoke);
            }
            if polling {
                return bench::polling_only(&root, plan, !smoke);
            }
            if instructions {
                return bench::instructions_only(&root, plan, !smoke);
            }
            bench::run(&root, plan, !smoke)
        }
    }
}

/// Tools, the release bundle and the release server.
fn build(root: &Path) -> Result<()> {
    setup::tools(root, false)?;
    bundle::build_release(root)?;
    bundle::print_size(root)?;
    process::step("building the server (release)", || {
        process::cargo(root, &["build", "--release", "--package", "server"])
    })
}

/// The workspace root, from where xtask was built (not the current directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, or `<root>/target`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

#[cfg(test)]
mod tidy;
