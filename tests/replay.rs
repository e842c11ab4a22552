//! `warden evidence replay` is exact: a spool holding every outcome kind — allowed, refused
//! before the upstream, cut mid-stream at a budget, cut by the kill switch, upstream error,
//! bypassed, approval required, degraded, `GET /v1/models`, bad input — replays with no
//! mismatch, through the library and through the binary; and a tampered decision in it is
//! still reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use warden::evidence::replay::replay;
use warden::evidence::{Kind, Outcome};
use warden::policy::model::Action;
use warden::policy::store::SnapshotStore;

const PAUSE_WEATHER: &str = "---\napiVersion: warden/v1\nkind: Policy\nmetadata: { id: p050-hold-weather, tenant: acme }\nspec:\n  status: active\n  scope: { all_runs: true }\n  match: { channel: http, connectors: [weather] }\n  effect: deny\n  action: pause\n";

async fn stream(env: &Env, run: &str, content: &str) -> Vec<String> {
    stream_events(stream_response(env, run, content).await).await
}

async fn stream_response(
    env: &Env,
    run: &str,
    content: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", run)
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            content,
            true,
            None,
        ))))
        .unwrap();
    client().request(req).await.unwrap()
}

fn last_code(events: &[String]) -> String {
    let last: serde_json::Value =
        serde_json::from_str(events.last().map_or("", String::as_str)).unwrap_or_default();
    last["error"]["code"].as_str().unwrap_or("").to_string()
}

async fn weather(env: &Env, run: &str) -> Resp {
    send(
        http::Request::get(env.agent_url("/http/weather/v1/forecast/oslo"))
            .header("x-warden-run-id", run)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

async fn mode(env: &Env, mode: &str) {
    let r = env.set_mode(mode).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Drive one call of every outcome kind through a sidecar.
async fn every_outcome(env: &Env) {
    // Allowed.
    let r = env
        .chat(
            Some("r-ok"),
            chat_body("gpt-4o-mini", "hi [[reply:3]]", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Refused before the upstream: a model no policy allows, PII in the prompt, bad input.
    let r = env.chat(None, chat_body("gpt-4o", "x", false, None)).await;
    env.assert_refused(&r, 403, "no_allow_policy").await;
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "mail jane.doe@example.com", false, None),
        )
        .await;
    env.assert_refused(&r, 403, "pii_detected").await;
    let r = env.chat(Some("r-bad"), "{not json".into()).await;
    env.assert_refused(&r, 400, "bad_request").await;
    // A plain answer withheld once complete (PII in the reply).
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "tell [[leak]] [[reply:25]]", false, None),
        )
        .await;
    env.assert_refused(&r, 403, "pii_detected").await;
    // Cut mid-stream at the run's budget (40 output tokens), then the run is stopped.
    let ev = stream(env, "r-budget", "long [[reply:60]] [[overrun]]").await;
    assert_eq!(last_code(&ev), "budget_exceeded", "{ev:?}");
    let r = env
        .chat(
            Some("r-budget"),
            chat_body("gpt-4o-mini", "more", false, None),
        )
        .await;
    env.assert_refused(&r, 403, "run_stopped").await;
    // Upstream error after an allowed decision.
    let r = env
        .chat(
            Some("r-fail"),
            chat_body("gpt-4o-mini", "x [[fail:500]]", false, None),
        )
        .await;
    env.assert_refused(&r, 502, "upstream_error").await;
    // The models list.
    let r = send(
        http::Request::get(env.agent_url("/v1/models"))
            .header("x-warden-run-id", "r-ok")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Approval required (PAUSE), approved, the retry passes.
    let r = weather(env, "r-pause").await;
    env.assert_refused(&r, 403, "approval_required").await;
    let id = r.header("x-warden-approval-id").unwrap();
    let a = env
        .admin_post(
            &format!("/ops/approvals/{id}"),
            serde_json::json!({"decision": "approve", "reason": "ok"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = weather(env, "r-pause").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Cut by the kill switch mid-stream; a call while halted.
    let reader =
        Reader::spawn(stream_response(env, "r-kill", "slow [[reply:30]] [[slow:40]]").await);
    reader.received(2).await;
    mode(env, "halted").await;
    let ev = tokio::time::timeout(Duration::from_secs(10), reader.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last_code(&ev), "governance_halted", "{ev:?}");
    let r = env
        .chat(Some("r-ok"), chat_body("gpt-4o-mini", "hi", false, None))
        .await;
    env.assert_refused(&r, 503, "governance_halted").await;
    // Bypassed: a call policy would refuse passes unenforced.
    mode(env, "bypass").await;
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "mail jane.doe@example.com", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Degraded: a new run is refused; a running run passes its budget with a WARN.
    mode(env, "degraded").await;
    let r = env
        .chat(Some("r-new"), chat_body("gpt-4o-mini", "x", false, None))
        .await;
    env.assert_refused(&r, 503, "governance_degraded").await;
    let r = env
        .chat(
            Some("r-ok"),
            chat_body("gpt-4o-mini", "y [[reply:50]]", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    mode(env, "enforcing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_spool_of_every_outcome_replays_exactly_and_tampering_is_reported() {
    let env = start_with(
        "replay-all",
        |b| {
            format!(
                "{}{PAUSE_WEATHER}",
                b.replace("max: 2000, near: [0.8]", "max: 40, near: [0.5]")
            )
        },
        |c| c,
    )
    .await;
    every_outcome(&env).await;
    let spool = env.dir.join("evidence");
    let cache = env.dir.join("cache");
    let records = warden::evidence::read_all(&spool).unwrap();
    let outcomes: Vec<_> = records.iter().filter_map(|r| r.record.outcome).collect();
    for o in [
        Outcome::Allowed,
        Outcome::Refused,
        Outcome::Cut,
        Outcome::Bypassed,
        Outcome::Errored,
    ] {
        assert!(outcomes.contains(&o), "no {o:?} record: {outcomes:?}");
    }

    let report = replay(&records, &SnapshotStore::new(&cache)).unwrap();
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert!(report.missing_snapshots.is_empty(), "{report:?}");
    let calls = records
        .iter()
        .filter(|r| r.record.kind == Kind::Call)
        .count() as u64;
    assert_eq!(
        report.checked, calls,
        "every call record is checked, none skipped: {report:?}"
    );

    // The binary says the same on the same spool.
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["evidence", "replay"])
        .arg(&spool)
        .arg("--snapshots")
        .arg(&cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{calls} calls checked")),
        "{stdout}"
    );
    assert!(stdout.contains("0 mismatches"), "{stdout}");

    // Tampering with any recorded decision is reported: an allowed call recorded as refused, a
    // refusal recorded as allowed, a kill-switch cut whose code is changed, a cut turned into
    // an allowed call, a winning policy renamed.
    type Tamper = fn(&mut warden::evidence::Record) -> bool;
    let tampers: [(&str, Tamper); 6] = [
        ("allowed → stop", |r| {
            r.outcome == Some(Outcome::Allowed) && r.action == Some(Action::Continue) && {
                r.action = Some(Action::Stop);
                true
            }
        }),
        ("refused → continue", |r| {
            r.outcome == Some(Outcome::Refused) && r.action == Some(Action::Stop) && {
                r.action = Some(Action::Continue);
                true
            }
        }),
        ("kill-switch code", |r| {
            r.cut
                .as_ref()
                .is_some_and(|c| c.code == warden::codes::Code::GovernanceHalted)
                && {
                    r.code = Some(warden::codes::Code::UpstreamError);
                    true
                }
        }),
        ("cut → allowed", |r| {
            r.outcome == Some(Outcome::Cut) && {
                r.outcome = Some(Outcome::Allowed);
                true
            }
        }),
        ("policy renamed", |r| {
            r.policy.as_deref() == Some("p100-llm") && {
                r.policy = Some("p999-other".into());
                true
            }
        }),
        ("degraded warn → continue", |r| {
            r.mode == warden::decide::Mode::Degraded && r.action == Some(Action::Warn) && {
                r.action = Some(Action::Continue);
                true
            }
        }),
    ];
    for (what, tamper) in tampers {
        let mut bad = records.clone();
        let hit = bad
            .iter_mut()
            .find_map(|r| tamper(&mut r.record).then_some(r.record.seq))
            .unwrap_or_else(|| panic!("no record to tamper with for {what}"));
        let report = replay(&bad, &SnapshotStore::new(&cache)).unwrap();
        assert!(
            report.mismatches.iter().any(|m| m.seq == hit),
            "{what}: tampered record {hit} not reported: {report:?}"
        );
    }
}
