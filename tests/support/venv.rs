//! Python virtual environments for the real backends the tests start, each installed
//! once per machine: built beside its final place and then moved in, so a concurrent
//! test process never sees half of one, and counted only once its marker is written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The venv `<root>/venv` made with `python` holding `package==version`; how long the
/// install took, if it ran now.
pub fn install(root: &Path, python: &str, package: &str, version: &str) -> (PathBuf, Option<Duration>) {
    let dir = root.join("venv");
    let marker = dir.join(".inquest-installed");
    if marker.exists() {
        return (dir, None);
    }
    std::fs::create_dir_all(root).unwrap();
    let staging = root.join(format!(".venv.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let started = Instant::now();
    run(Command::new(python).args(["-m", "venv"]).arg(&staging), &format!("{python} -m venv"));
    run(
        Command::new(staging.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{package}=={version}")),
        &format!("pip install {package}"),
    );
    std::fs::write(staging.join(".inquest-installed"), version).unwrap();
    if marker.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    let took = started.elapsed();
    eprintln!("installed {package} {version} into {} in {took:?}", dir.display());
    assert!(marker.exists(), "{} was not installed", dir.display());
    (dir, Some(took))
}

/// Runs `cmd`, failing the test with its output if it fails.
pub fn run(cmd: &mut Command, what: &str) {
    let output = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
