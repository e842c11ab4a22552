//! The pinned Python test clients (`tests/clients/requirements.txt`), made on first use.
//!
//! `cargo test` on a fresh clone needs nothing made by hand: the first test that needs a client
//! creates `.venv` in the repository (`python3 -m venv`) and installs the pinned packages into
//! it; later runs reuse it, and re-install when the requirements file changes (a copy of it is
//! kept in the venv as the stamp). A lock file makes parallel test processes wait for one
//! another. `WARDEN_PYTHON` names another interpreter instead (used as it is). A client that
//! cannot be made fails the test that needs it: nothing skips as if it had passed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn make_venv() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("WARDEN_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = root().join(".venv");
    let python = venv.join("bin/python");
    let requirements_path = root().join("tests/clients/requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let stamp = venv.join("warden-requirements.txt");
    std::fs::create_dir_all(root().join("target")).map_err(|e| e.to_string())?;
    let lock =
        std::fs::File::create(root().join("target/.venv.lock")).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("cannot lock target/.venv.lock: {e}"))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return Ok(python);
    }
    eprintln!(
        "making the pinned Python test clients in {} (once)",
        venv.display()
    );
    if !python.exists() {
        run(
            "python3 -m venv .venv",
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
        )?;
    }
    run(
        "pip install -r tests/clients/requirements.txt",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements_path),
    )?;
    std::fs::write(&stamp, &requirements).map_err(|e| e.to_string())?;
    Ok(python)
}

/// The interpreter with the pinned clients; panics (fails the test) when it cannot be made.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_venv) {
        Ok(p) => p.clone(),
        Err(e) => panic!("the pinned Python test clients are missing and cannot be made: {e}"),
    }
}

/// [`python`], checked to import `module` (a wrong `WARDEN_PYTHON` fails here, clearly).
pub fn python_with(module: &str) -> PathBuf {
    let py = python();
    if let Err(e) = run(
        &format!("{} -c 'import {module}'", py.display()),
        Command::new(&py).args(["-c", &format!("import {module}")]),
    ) {
        panic!("no `{module}` in the test clients' Python: {e}");
    }
    py
}
