//! The official `openai` Python SDK (pinned in tests/clients/requirements.txt) as the agent.
//!
//! The venv with that package is made on first use (`tests/common/python.rs`); a missing client
//! fails the test, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_against_the_sidecar() {
    let py = common::python::python_with("openai");
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
