//! Python packages from PyPI at pinned versions, each in a virtualenv of its own under the target
//! directory (`<target>/NAME/venv`): kosoku for the Autobahn cases, Tornado for the benchmark.
//!
//! Every step checks before it acts: a virtualenv whose pip works is kept, a package already at
//! its version is not reinstalled, and Debian's `python3-venv` comes from apt only when
//! `python3 -m venv` fails for the lack of it (Debian's python3 ships without `ensurepip`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process::{apt_install, output, run};
use crate::target_dir;

/// The Tornado release the benchmark runs the tutorial's server on (`bench/tornado/server.py`):
/// the current one when the benchmark was written.
pub const TORNADO_VERSION: &str = "6.6.1";

/// Ensures `package==version` in the virtualenv `<target>/NAME/venv` and returns that
/// directory. Creates the virtualenv with `python3 -m venv` when it has no working pip, then
/// `pip install`s the package when it is missing or at another version.
pub fn ensure(root: &Path, name: &str, package: &str, version: &str) -> Result<PathBuf> {
    ensure_with_programs(root, name, package, version, &[])
}

/// [`ensure`], also requiring `programs` (names in the virtualenv's `bin/`, e.g. a package's
/// command-line entry point) to exist: a virtualenv where one is missing gets the package
/// installed again.
pub fn ensure_with_programs(
    root: &Path,
    name: &str,
    package: &str,
    version: &str,
    programs: &[&str],
) -> Result<PathBuf> {
    let venv = target_dir(root).join(name).join("venv");
    let python = python(&venv);
    let missing_program =
        || programs.iter().map(|p| venv.join("bin").join(p)).find(|p| !p.is_file());
    let installed = installed_version(&python, package);
    match (&installed, missing_program()) {
        (Some(found), None) if found == version => {
            println!("    {package} {version} (in {}): present", venv.display());
            return Ok(venv);
        }
        (Some(found), Some(program)) if found == version => {
            println!("    {package} {version}: installed, but {} is missing", program.display())
        }
        (Some(found), _) => println!("    {package}: found {found}, need {version}"),
        (None, _) => println!("    {package}: missing"),
    }
    if output(&python.to_string_lossy(), &["-m", "pip", "--version"]).is_some() {
        println!("    virtualenv {}: present", venv.display());
    } else {
        create_venv(&venv, package)?;
    }
    println!("    installing {package} {version} (pip, from PyPI); this takes a few seconds");
    let mut install = Command::new(&python);
    install.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"]);
    if installed.as_deref() == Some(version) {
        // The version is right but a program is gone: a plain install would change nothing.
        install.arg("--force-reinstall");
    }
    run(install.arg(format!("{package}=={version}")))
        .with_context(|| format!("cannot install {package} {version} into {}", venv.display()))?;
    match (installed_version(&python, package), missing_program()) {
        (Some(found), None) if found == version => Ok(venv),
        (found, missing) => bail!(
            "after pip install, the virtualenv {} has {package} {}{}",
            venv.display(),
            found.as_deref().unwrap_or("(none)"),
            missing.map(|p| format!(" and no {}", p.display())).unwrap_or_default()
        ),
    }
}

/// Ensures Tornado [`TORNADO_VERSION`] in `<target>/tornado/venv` and returns the path of that
/// virtualenv's `python`, which runs `bench/tornado/server.py`.
pub fn ensure_tornado(root: &Path) -> Result<PathBuf> {
    ensure(root, "tornado", "tornado", TORNADO_VERSION).map(|venv| python(&venv))
}

/// A virtualenv's interpreter.
pub fn python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// The version of `package` installed for `python`, if any.
fn installed_version(python: &Path, package: &str) -> Option<String> {
    let program = "import sys, importlib.metadata as m; print(m.version(sys.argv[1]))";
    output(&python.to_string_lossy(), &["-c", program, package])
}

/// `python3 -m venv VENV`, after installing `python3-venv` with apt when venv reports it
/// missing. Replaces a half-made virtualenv. `package` only names what it is for.
fn create_venv(venv: &Path, package: &str) -> Result<()> {
    if output("python3", &["--version"]).is_none() {
        apt_install(&["python3", "python3-venv"], &format!("Python 3 (to run {package})"))?;
    }
    let attempt = || -> Result<std::process::Output> {
        if venv.exists() {
            std::fs::remove_dir_all(venv)
                .with_context(|| format!("cannot remove the broken {}", venv.display()))?;
        }
        println!("    creating a virtualenv at {} (python3 -m venv)", venv.display());
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .output()
            .context("cannot start `python3 -m venv`")
    };
    let first = attempt()?;
    if first.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&first.stderr);
    let lacks_venv = ["ensurepip", "python3-venv", "No module named venv"]
        .iter()
        .any(|sign| stderr.contains(sign));
    if !lacks_venv {
        bail!("`python3 -m venv {}` failed ({}):\n{}", venv.display(), first.status, stderr.trim());
    }
    println!("    python3 cannot create virtualenvs yet (needs python3-venv)");
    apt_install(&["python3-venv"], &format!("python3-venv (virtualenvs for {package})"))?;
    let second = attempt()?;
    if !second.status.success() {
        bail!(
            "`python3 -m venv {}` still fails after installing python3-venv ({}):\n{}",
            venv.display(),
            second.status,
            String::from_utf8_lossy(&second.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{installed_version, python};

    #[test]
    fn no_version_for_a_missing_package_or_interpreter() {
        assert_eq!(installed_version(Path::new("python3"), "no-such-package-xtask-test"), None);
        assert_eq!(installed_version(Path::new("/nonexistent/bin/python"), "pip"), None);
    }

    #[test]
    fn the_interpreter_is_the_virtualenvs_own() {
        assert_eq!(python(Path::new("/t/tornado/venv")), Path::new("/t/tornado/venv/bin/python"));
    }
}
