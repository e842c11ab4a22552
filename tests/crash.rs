//! Crash safety: `kill -9` the sidecar under load, restart it, and check that the evidence
//! chain verifies and every call the client saw answered has its record (`docs/evidence.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

/// Start `warden sidecar` and wait for its listening line; returns the child and agent address.
fn spawn_sidecar(config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sidecar", "--config", config.to_str().unwrap()])
        .env("WARDEN_IT_OPENAI_KEY", UPSTREAM_KEY)
        .env("WARDEN_IT_WEATHER_AUTH", "Bearer w")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("warden sidecar: agent http://") {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("sidecar did not start");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answered_call() {
    let dir = tmpdir("crash");
    let llm = warden::dev::mocks::spawn_llm("127.0.0.1:0").await.unwrap();
    let weather = warden::dev::mocks::spawn_weather("127.0.0.1:0")
        .await
        .unwrap();
    std::fs::write(dir.join("bundle.yaml"), bundle(&llm, &weather, |b| b)).unwrap();
    let cfg = dir.join("sidecar.yaml");
    std::fs::write(
        &cfg,
        "identity: { tenant: acme, project: support, agent: support-bot }\n\
         listen: { agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\n\
         policy: { source: file, files: [bundle.yaml], cache_dir: cache }\n\
         evidence: { spool_dir: evidence, durability: sync }\n",
    )
    .unwrap();
    // Build the mock's tokenizer tables before the clock starts (seconds in a debug build).
    tokio::task::spawn_blocking(|| warden::connectors::llm::count_tokens("gpt-4o-mini", "warm up"))
        .await
        .unwrap();
    let (mut child, addr) = spawn_sidecar(&cfg);

    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    // The load goes on until the sidecar is killed under it; each worker then stops.
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (addr, answered, killed) = (addr.clone(), answered.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0;
            loop {
                i += 1;
                // Allowed and refused calls alike must be recorded.
                let content = if i % 3 == 0 {
                    "mail jane.doe@example.com"
                } else {
                    "hi"
                };
                let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .header("x-warden-run-id", format!("w{worker}-{i}"))
                    .body(Full::new(Bytes::from(chat_body(
                        "gpt-4o-mini",
                        content,
                        false,
                        Some(2),
                    ))))
                    .unwrap();
                let r = tokio::time::timeout(Duration::from_secs(5), c.request(req)).await;
                let Ok(Ok(resp)) = r else {
                    if killed.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                };
                let id = resp
                    .headers()
                    .get("x-warden-decision-id")
                    .map(|v| v.to_str().unwrap().to_string());
                // Answered means the whole response arrived.
                if resp.into_body().collect().await.is_ok() {
                    if let Some(id) = id {
                        answered.lock().unwrap().push(id);
                    }
                }
                if killed.load(Ordering::SeqCst) {
                    return;
                }
            }
        }));
    }
    // Kill once the load is well under way (calls answered, more in flight).
    wait_until("the load to get going", Duration::from_secs(30), || {
        answered.lock().unwrap().len() >= 50
    })
    .await;
    killed.store(true, Ordering::SeqCst);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("the load stops once the sidecar is gone")
            .unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    // Restart: recovery cuts any torn tail; then stop it again.
    let (mut child, _) = spawn_sidecar(&cfg);
    child.kill().unwrap();
    child.wait().unwrap();

    let spool = dir.join("evidence");
    let report = warden::evidence::verify(&spool).unwrap();
    assert!(
        report.torn.is_empty(),
        "recovery left a torn tail: {:?}",
        report.torn
    );
    // The chain ends at its durable head: recovery anchored whatever the crash left past it.
    assert!(report.anchor.is_some(), "the spool has a durable head");
    assert_eq!(
        (report.ahead, report.lost),
        (0, 0),
        "a process crash never leaves the head past the records, and recovery anchors the rest"
    );
    let recorded: std::collections::HashSet<String> = warden::evidence::read_all(&spool)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.record.decision_id)
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls have no record: {missing:?}",
        missing.len(),
        answered.len()
    );
    eprintln!(
        "crash test: {} answered calls, {} records, all answered calls recorded",
        answered.len(),
        recorded.len()
    );
}
