//! The official `openai` Python SDK (pinned in tests/clients/requirements.txt) as the agent.
//!
//! Needs a Python with that package: `WARDEN_PYTHON`, else `.venv/bin/python`. Without one the
//! test skips loudly on a laptop; with `WARDEN_REQUIRE_CLIENTS=1` (CI) it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("WARDEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_against_the_sidecar() {
    let Some(py) = python() else {
        if std::env::var("WARDEN_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("WARDEN_REQUIRE_CLIENTS=1 but no Python with the `openai` package (set WARDEN_PYTHON)");
        }
        eprintln!("\n*** SKIPPED openai_sdk_against_the_sidecar: no Python with `openai` (python -m venv .venv && .venv/bin/pip install -r tests/clients/requirements.txt) ***\n");
        return;
    };
    let env = common::start_with(
        "openai",
        |b| b.replace("max: 2000, near: [0.8]", "max: 10, near: [0.5]"),
        |c| c,
    )
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_agent.py");
    let agent = env.agent_url("");
    let admin = env.admin_url("");
    let token = env.admin_token.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .args([agent, admin, token])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("12 passed, 0 failed"), "{stdout}\n{stderr}");
    // Refused calls never reached the upstream: 2 allowed + budget stream + leak + kill + 2 running
    // + bypass + 3 tool-call streams; the no-allow, PII-prompt, stopped-run and degraded-new-run
    // calls did not.
    assert_eq!(env.llm.request_count(), 11, "{stdout}");
    // Every call left evidence and the chain verifies.
    let ev = env.evidence();
    let calls = ev
        .iter()
        .filter(|r| r.kind == warden::evidence::Kind::Call)
        .count();
    assert_eq!(calls, 15, "{stdout}");
}
