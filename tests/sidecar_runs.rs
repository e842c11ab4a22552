//! Run state and the spine's guarantees over real sockets: PAUSE and approvals, KILL cutting
//! in-flight calls, inspection, alerts that never slow a call, panics that end as refusals,
//! and replay of what the sidecar recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use warden::codes::Code;
use warden::decide::Mode;
use warden::evidence::Outcome;
use warden::policy::model::Action;
use warden::policy::store::SnapshotStore;

const PAUSE_WEATHER: &str = "---\napiVersion: warden/v1\nkind: Policy\nmetadata: { id: p050-hold-weather, tenant: acme }\nspec:\n  status: active\n  scope: { all_runs: true }\n  match: { channel: http, connectors: [weather] }\n  effect: deny\n  action: pause\n";

async fn weather(env: &Env, run: &str) -> Resp {
    send(
        http::Request::get(env.agent_url("/http/weather/v1/forecast/oslo"))
            .header("x-warden-run-id", run)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_asks_for_approval_and_an_approved_retry_passes() {
    let env = start_with("pause", |b| format!("{b}{PAUSE_WEATHER}"), |c| c).await;
    let r = weather(&env, "run-p").await;
    env.assert_refused(&r, 403, "approval_required").await;
    let id = r.header("x-warden-approval-id").unwrap();
    assert_eq!(r.json()["error"]["approval_id"], id.as_str());
    assert_eq!(env.weather.request_count(), 0);
    let a = env
        .admin_post(
            &format!("/ops/approvals/{id}"),
            serde_json::json!({"decision": "approve", "reason": "ok'd by on-call"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = weather(&env, "run-p").await;
    assert_eq!(
        r.status,
        200,
        "the same call, retried in the same run, passes: {}",
        r.text()
    );
    assert_eq!(env.weather.request_count(), 1);
    // Approvals are single-use.
    let r = weather(&env, "run-p").await;
    env.assert_refused(&r, 403, "approval_required").await;
    // A rejection stops the run.
    let id = r.header("x-warden-approval-id").unwrap();
    let a = env
        .admin_post(
            &format!("/ops/approvals/{id}"),
            serde_json::json!({"decision": "reject", "reason": "no"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!(a.status, 200);
    let r = weather(&env, "run-p").await;
    env.assert_refused(&r, 403, "run_stopped").await;
    let audits = env
        .evidence()
        .into_iter()
        .filter(|r| r.kind == warden::evidence::Kind::Audit)
        .count();
    assert_eq!(audits, 2, "both approval decisions are audited");
    let a = env
        .admin_post(
            "/ops/approvals/apr-unknown",
            serde_json::json!({"decision": "approve", "reason": "x"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!((a.status, a.code().as_str()), (404, "unknown_approval"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cuts_every_in_flight_call_of_the_run() {
    let kill = PAUSE_WEATHER
        .replace("action: pause", "action: kill")
        .replace("p050-hold-weather", "p050-kill-weather");
    let env = start_with("killrun", |b| format!("{b}{kill}"), |c| c).await;
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", "run-k")
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "go [[reply:100]] [[slow:20]]",
            true,
            None,
        ))))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let reader = Reader::spawn(resp);
    // And a plain call of the same run, waiting on a slow upstream.
    let plain = tokio::spawn(send(
        http::Request::post(env.agent_url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-warden-run-id", "run-k")
            .body(Full::new(Bytes::from(chat_body(
                "gpt-4o-mini",
                "wait [[slow:3000]]",
                false,
                None,
            ))))
            .unwrap(),
    ));
    // Both in flight: the stream has begun, the plain call is at the upstream.
    reader.received(1).await;
    wait_until("both calls at the upstream", SEALED, || {
        env.llm.request_count() == 2
    })
    .await;
    let r = weather(&env, "run-k").await;
    env.assert_refused(&r, 403, "policy_denied").await;
    let plain = tokio::time::timeout(Duration::from_secs(2), plain)
        .await
        .expect("the plain call is cut at once, not after its upstream's 3 s")
        .unwrap();
    let rec = env.assert_refused(&plain, 403, "run_killed").await;
    assert!(rec.cut.is_some(), "{rec:#?}");
    let events = tokio::time::timeout(Duration::from_secs(5), reader.task)
        .await
        .unwrap()
        .unwrap();
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "run_killed", "{events:?}");
    let r = env
        .chat(Some("run-k"), chat_body("gpt-4o-mini", "hi", false, None))
        .await;
    env.assert_refused(&r, 403, "run_killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_lets_a_policy_keep_content() {
    let env = start_with(
        "inspect",
        |b| {
            b.replace(
                "  max_tokens: 1024                # clamp\n",
                "  max_tokens: 1024\n  inspection: { prompts: true, responses: true }\n",
            )
        },
        |c| c,
    )
    .await;
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "remember this [[reply:3]]", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = env.evidence();
    let content = ev[0].content.clone().expect("content kept");
    assert_eq!(content.prompt.as_deref(), Some("remember this [[reply:3]]"));
    assert_eq!(content.response.unwrap().split_whitespace().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_never_slows_a_call() {
    // A webhook that accepts connections and never answers.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0usize));
    let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
    {
        let (accepted, held) = (accepted.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = hook.accept().await {
                *accepted.lock().unwrap() += 1;
                held.lock().unwrap().push(s);
            }
        });
    }
    let env = start_with(
        "alerts",
        |b| b.replace("max: 2000, near: [0.8]", "max: 100, near: [0.1, 0.2, 0.3, 0.4, 0.5]"),
        move |c| format!("{c}alerts: {{ webhooks: [\"http://{hook_addr}/hook\"], timeout_ms: 30000, queue: 4 }}\n"),
    )
    .await;
    let started = Instant::now();
    for i in 0..8 {
        // Each call uses 12 more output tokens of the run: a new NEAR tier almost every time.
        let r = env
            .chat(
                Some("run-alert"),
                chat_body("gpt-4o-mini", &format!("n{i} [[reply:12]]"), false, None),
            )
            .await;
        assert!(r.status == 200 || r.status == 429, "{}", r.text());
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "calls were held up by the webhook: {took:?}"
    );
    wait_until("alerts sent to the webhook", Duration::from_secs(5), || {
        *accepted.lock().unwrap() >= 1
    })
    .await;
    let m = env.admin_get("/metrics").await.text();
    assert!(m.contains("warden_alerts_dropped_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_path_ends_as_a_refusal_with_evidence() {
    use tower::{Layer, ServiceExt};
    use warden::spine::{evidence::Evidence, Call, CallState, Ctx, StepLayer};
    let env = start("panic").await;
    let boom = tower::service_fn(|_c: Call| async move {
        if std::hint::black_box(true) {
            panic!("forced panic below the evidence layer");
        }
        Err::<warden::spine::Reply, _>(warden::spine::Refusal::internal("unreachable"))
    });
    let stack = StepLayer(Evidence).layer(boom);
    let (parts, ()) = http::Request::new(()).into_parts();
    let ctx = Ctx {
        tenant: "acme".into(),
        project: "support".into(),
        agent: "support-bot".into(),
        actor: None,
        api_key: None,
        run_id: "run-panic".into(),
        run_assigned: false,
        step_id: "s".into(),
        session_id: "run-panic".into(),
        decision_id: "d-panic".into(),
        evidence_id: "e-panic".into(),
        started: Instant::now(),
        at_ms: 1,
    };
    let call = Call::new(CallState::new(
        Arc::new(ctx),
        parts,
        env.sidecar.shared.rt.clone(),
    ));
    // The spine refuses; the agent port's front end renders the refusal with the call's ids.
    let ctx = call.ctx.clone();
    let mut reply = match stack.oneshot(call).await {
        Ok(r) => r,
        Err(r) => warden::front::render::to_response(&r, &ctx.decision_id),
    };
    warden::front::render::stamp(&mut reply, &ctx);
    assert_eq!(reply.status(), 500);
    assert_eq!(reply.headers()["x-warden-decision-id"], "d-panic");
    let ev = env.evidence();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].code, Some(warden::codes::Code::InternalError));
    assert_eq!(ev[0].outcome, Some(warden::evidence::Outcome::Errored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_decisions_replay_identically() {
    let env = start_with(
        "replay",
        |b| b.replace("max: 2000, near: [0.8]", "max: 10, near: [0.5]"),
        |c| c,
    )
    .await;
    let _ = env
        .chat(
            Some("r1"),
            chat_body("gpt-4o-mini", "a [[reply:4]]", false, None),
        )
        .await;
    let _ = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "mail jane.doe@example.com", false, None),
        )
        .await;
    let _ = env.chat(None, chat_body("gpt-4o", "x", false, None)).await;
    // A streamed answer cut at the budget: the recorded decision is the mid-stream one.
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", "r1")
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "b [[reply:30]]",
            true,
            None,
        ))))
        .unwrap();
    let _ = stream_events(client().request(req).await.unwrap()).await;
    let _ = env
        .chat(Some("r1"), chat_body("gpt-4o-mini", "c", false, None))
        .await;
    let _ = send(
        http::Request::get(env.agent_url("/http/weather/v1/forecast/rome"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let records = warden::evidence::read_all(&env.dir.join("evidence")).unwrap();
    let report =
        warden::evidence::replay::replay(&records, &SnapshotStore::new(env.dir.join("cache")))
            .unwrap();
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert!(report.missing_snapshots.is_empty());
    assert!(report.checked >= 5, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_known_good_serves_when_the_files_are_unusable() {
    let env = start("lkg").await;
    let hash = env.admin_get("/readyz").await.json()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // Break the bundle, then start a second sidecar on the same cache.
    std::fs::write(env.dir.join("bundle.yaml"), "apiVersion: [broken\n").unwrap();
    let cfg = warden::sidecar::config::SidecarConfig::parse(
        "second.yaml",
        "identity: { tenant: acme, project: support, agent: support-bot }\n\
         listen: { agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\n\
         policy: { source: file, files: [bundle.yaml], cache_dir: cache }\n\
         evidence: { spool_dir: evidence2, durability: os }\n",
        &env.dir,
        |_| None,
    )
    .unwrap();
    let second = warden::sidecar::start(cfg).await.unwrap();
    let snap = second.shared.rt.snapshot().expect("last-known-good loaded");
    assert_eq!(snap.hash().as_ref(), hash.as_str());
    // A reload with broken files keeps the current snapshot.
    let r = env
        .admin_post("/ops/reload", serde_json::json!({}), Some(&env.admin_token))
        .await;
    assert_eq!(r.status, 200, "falls back to last-known-good: {}", r.text());
    assert_eq!(r.json()["snapshot"], hash.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_mode_applies_to_that_tenant_only() {
    let env = start("tenantmode").await;
    let r = env
        .admin_post(
            "/ops/mode",
            serde_json::json!({"mode": "halted", "reason": "globex incident", "tenant": "globex"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ok = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    assert_eq!(ok.status, 200, "acme is not halted: {}", ok.text());
    let r = env
        .admin_post(
            "/ops/mode",
            serde_json::json!({"mode": "halted", "reason": "acme incident", "tenant": "acme"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    env.assert_refused(&r, 503, "governance_halted").await;
    let modes = env.admin_get("/ops/mode").await.json();
    assert_eq!(modes["global"], "enforcing");
    assert_eq!(modes["tenants"]["acme"], "halted");
}

async fn mode_change(env: &Env, body: serde_json::Value) -> Resp {
    env.admin_post("/ops/mode", body, Some(&env.admin_token))
        .await
}

async fn run_state(env: &Env, run: &str) -> String {
    let r = env.admin_get(&format!("/runs/{run}")).await;
    r.json()["status"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_at_its_start_stays_new_so_degraded_keeps_refusing_its_retries() {
    let env = start_with("degraded-new", |b| format!("{b}{PAUSE_WEATHER}"), |c| c).await;
    // Refused at the start under enforcing: bad input, a PAUSE; and a models list. None of them
    // starts the run.
    let r = env.chat(Some("r-bad"), "{not json".into()).await;
    env.assert_refused(&r, 400, "bad_request").await;
    let r = weather(&env, "r-paused").await;
    env.assert_refused(&r, 403, "approval_required").await;
    let r = send(
        http::Request::get(env.agent_url("/v1/models"))
            .header("x-warden-run-id", "r-listed")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // A run that did start.
    let r = env
        .chat(
            Some("r-running"),
            chat_body("gpt-4o-mini", "hi", false, Some(2)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let upstream = env.llm.request_count();

    assert_eq!(env.set_mode("degraded").await.status, 200);
    let good = || chat_body("gpt-4o-mini", "hello", false, Some(2));
    for run in ["r-new", "r-new", "r-new", "r-bad", "r-listed"] {
        let r = env.chat(Some(run), good()).await;
        // A retry of a refused first call is still a new run.
        let rec = env
            .assert_refused_for(run, &r, 503, "governance_degraded")
            .await;
        assert_eq!(rec.run_id.as_deref(), Some(run));
    }
    let r = weather(&env, "r-paused").await;
    env.assert_refused(&r, 503, "governance_degraded").await;
    let state = env.admin_get("/runs/r-new").await.json();
    assert_eq!(
        (
            state["status"]["state"].as_str(),
            state["started"].as_bool()
        ),
        (Some("active"), Some(false)),
        "{state}"
    );
    // The agent sent no run id: the assigned one, retried, is refused too.
    let r = env.chat(None, good()).await;
    env.assert_refused(&r, 503, "governance_degraded").await;
    let assigned = r.header("x-warden-run-id").expect("an assigned run id");
    let r = env.chat(Some(&assigned), good()).await;
    env.assert_refused(&r, 503, "governance_degraded").await;
    assert_eq!(
        env.llm.request_count(),
        upstream,
        "no refused call reached the upstream"
    );
    assert_eq!(env.weather.request_count(), 0);
    // The running run goes on.
    let r = env.chat(Some("r-running"), good()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Back to enforcing, the refused runs start normally.
    assert_eq!(env.set_mode("enforcing").await.status, 200);
    let r = env.chat(Some("r-new"), good()).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_lets_a_running_run_pass_its_budget_with_a_warn_until_enforcing_returns() {
    let env = start_with(
        "degraded-budget",
        |b| b.replace("max: 2000, near: [0.8]", "max: 40, near: [0.5]"),
        |c| c,
    )
    .await;
    let r = env
        .chat(
            Some("r-d"),
            chat_body("gpt-4o-mini", "a [[reply:10]]", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.set_mode("degraded").await.status, 200);
    // A stream passes the budget (10 + 60 > 40): not cut, a WARN in its record.
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", "r-d")
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "b [[reply:60]]",
            true,
            None,
        ))))
        .unwrap();
    let events = stream_events(client().request(req).await.unwrap()).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert_eq!(stream_text(&events).split_whitespace().count(), 60);
    assert_eq!(run_state(&env, "r-d").await, "active");
    // A plain call likewise.
    let r = env
        .chat(
            Some("r-d"),
            chat_body("gpt-4o-mini", "c [[reply:30]]", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(run_state(&env, "r-d").await, "active");
    let warned: Vec<_> = env
        .evidence()
        .into_iter()
        .filter(|r| r.run_id.as_deref() == Some("r-d") && r.mode == warden::decide::Mode::Degraded)
        .collect();
    assert_eq!(warned.len(), 2, "{warned:#?}");
    for r in &warned {
        assert_eq!(
            r.action,
            Some(warden::policy::model::Action::Warn),
            "{r:#?}"
        );
        assert_eq!(r.code, Some(warden::codes::Code::BudgetExceeded));
        assert_eq!(r.outcome, Some(warden::evidence::Outcome::Allowed));
        let d = env.decide_again(r);
        assert_eq!(
            (d.action, d.downgraded_from),
            (Action::Warn, Some(Action::Stop))
        );
    }
    assert_eq!(warned[0].output_tokens, 60);
    // Back to enforcing: the run's next call is judged on its real usage (100 > 40) and refused.
    assert_eq!(env.set_mode("enforcing").await.status, 200);
    let before = env.llm.request_count();
    let r = env
        .chat(
            Some("r-d"),
            chat_body("gpt-4o-mini", "d [[reply:5]]", false, None),
        )
        .await;
    env.assert_refused(&r, 429, "budget_exceeded").await;
    assert_eq!(
        env.llm.request_count(),
        before,
        "refused before the upstream"
    );
    assert_eq!(run_state(&env, "r-d").await, "stopped");
    let r = env
        .chat(Some("r-d"), chat_body("gpt-4o-mini", "e", false, None))
        .await;
    env.assert_refused(&r, 403, "run_stopped").await;
    let records = warden::evidence::read_all(&env.dir.join("evidence")).unwrap();
    let report =
        warden::evidence::replay::replay(&records, &SnapshotStore::new(env.dir.join("cache")))
            .unwrap();
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_override_can_be_cleared_and_the_global_mode_reaches_it_again() {
    let env = start("inherit").await;
    let r = mode_change(
        &env,
        serde_json::json!({"mode": "inherit", "reason": "no tenant"}),
    )
    .await;
    // An admin answer: no call, so no decision id or record.
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "bad_request"),
        "{}",
        r.text()
    );
    let r = mode_change(
        &env,
        serde_json::json!({"mode": "halted", "tenant": "acme", "reason": "incident 7"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = env.admin_get("/ops/mode").await.json();
    assert_eq!(m["tenants"]["acme"], "halted", "{m}");
    assert_eq!(m["effective"]["acme"], "halted", "{m}");
    assert!(env
        .admin_get("/metrics")
        .await
        .text()
        .contains("scope=\"tenant:acme\""));
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    env.assert_refused(&r, 503, "governance_halted").await;

    let r = mode_change(
        &env,
        serde_json::json!({"mode": "inherit", "tenant": "acme", "reason": "incident 7 over", "actor": "oncall@acme"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = env.admin_get("/ops/mode").await.json();
    assert!(
        m["tenants"].get("acme").is_none(),
        "the override is gone: {m}"
    );
    assert_eq!(m["effective"]["acme"], "enforcing", "{m}");
    let metrics = env.admin_get("/metrics").await.text();
    assert!(!metrics.contains("scope=\"tenant:acme\""), "{metrics}");
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A global mode reaches the tenant again.
    assert_eq!(env.set_mode("degraded").await.status, 200);
    let m = env.admin_get("/ops/mode").await.json();
    assert_eq!(m["effective"]["acme"], "degraded", "{m}");
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    env.assert_refused(&r, 503, "governance_degraded").await;

    let audits: Vec<serde_json::Value> = env
        .evidence()
        .into_iter()
        .filter(|r| r.kind == warden::evidence::Kind::Audit)
        .filter_map(|r| r.audit)
        .collect();
    let inherit = audits
        .iter()
        .find(|a| a["mode"] == "inherit")
        .unwrap_or_else(|| panic!("no audit record of the inherit: {audits:#?}"));
    assert_eq!(inherit["event"], "mode_change");
    assert_eq!(inherit["tenant"], "acme");
    assert_eq!(inherit["actor"], "oncall@acme");
    assert_eq!(inherit["reason"], "incident 7 over");
    assert_eq!(inherit["before"]["tenants"]["acme"], "halted");
    assert!(
        inherit["after"]["tenants"].get("acme").is_none(),
        "{inherit}"
    );
    assert!(audits
        .iter()
        .any(|a| a["mode"] == "halted" && a["tenant"] == "acme"));
    assert!(audits
        .iter()
        .any(|a| a["mode"] == "degraded" && a["tenant"].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_downgrades_every_blocking_outcome_of_a_running_run_and_enforcing_cuts_again() {
    let env = start_with(
        "degraded-all",
        |b| {
            format!(
                "{}{PAUSE_WEATHER}",
                b.replace("max: 2000, near: [0.8]", "max: 40, near: [0.5]")
            )
        },
        |c| c,
    )
    .await;
    let r = env
        .chat(
            Some("r-d2"),
            chat_body("gpt-4o-mini", "a [[reply:10]]", false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.set_mode("degraded").await.status, 200);
    // PAUSE becomes WARN: no approval asked, the call passes.
    let r = weather(&env, "r-d2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-warden-approval-id").is_none());
    assert_eq!(env.weather.request_count(), 1);
    let paused = r.header("x-warden-decision-id").unwrap();
    // A STOP for PII becomes WARN: the call passes, the run stays active.
    let r = env
        .chat(
            Some("r-d2"),
            chat_body("gpt-4o-mini", "mail jane.doe@example.com", false, Some(2)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(run_state(&env, "r-d2").await, "active");
    let stopped = r.header("x-warden-decision-id").unwrap();
    for (id, from, code) in [
        (&paused, Action::Pause, Code::ApprovalRequired),
        (&stopped, Action::Stop, Code::PiiDetected),
    ] {
        let rec = env.record_of(id).await;
        assert_eq!(
            (rec.mode, rec.action, rec.code, rec.outcome),
            (
                Mode::Degraded,
                Some(Action::Warn),
                Some(code),
                Some(Outcome::Allowed)
            ),
            "{rec:#?}"
        );
        assert_eq!(rec.reasons.first().map(|r| r.action), Some(from));
        let d = env.decide_again(&rec);
        assert_eq!((d.action, d.downgraded_from), (Action::Warn, Some(from)));
    }
    // A stream in flight when enforcing returns is cut where it passes the budget.
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", "r-d2")
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "b [[reply:60]] [[slow:30]]",
            true,
            None,
        ))))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let reader = Reader::spawn(resp);
    reader.received(3).await;
    assert_eq!(env.set_mode("enforcing").await.status, 200);
    let events = tokio::time::timeout(Duration::from_secs(10), reader.task)
        .await
        .unwrap()
        .unwrap();
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap_or_default();
    assert_eq!(last["error"]["code"], "budget_exceeded", "{events:?}");
    let got = stream_text(&events).split_whitespace().count();
    assert!(got <= 30, "no token past the budget once enforcing: {got}");
    assert_eq!(run_state(&env, "r-d2").await, "stopped");
    let warned = env
        .evidence()
        .into_iter()
        .filter(|r| r.mode == warden::decide::Mode::Degraded)
        .filter(|r| r.action == Some(warden::policy::model::Action::Warn))
        .count();
    assert_eq!(warned, 2, "the PAUSE and the PII STOP, downgraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorised_admin_calls_change_nothing() {
    let env = start_with("admin-auth", |b| format!("{b}{PAUSE_WEATHER}"), |c| c).await;
    // No token, a wrong token, the right token without the scheme, another scheme.
    let bad: [Option<&str>; 4] = [
        None,
        Some("Bearer wrong-token"),
        Some("test-admin-token"),
        Some("Basic dGVzdC1hZG1pbi10b2tlbg=="),
    ];
    let refused = |r: &Resp, what: &str| {
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "unauthorized"),
            "{what}: {}",
            r.text()
        );
    };

    // A call paused for approval stays refused after unauthorised approvals.
    let r = weather(&env, "run-auth").await;
    env.assert_refused(&r, 403, "approval_required").await;
    let id = r.header("x-warden-approval-id").unwrap();
    let path = format!("/ops/approvals/{id}");
    for auth in bad {
        for decision in ["approve", "reject"] {
            let body = serde_json::json!({"decision": decision, "reason": "not allowed"});
            let r = env.admin_call(http::Method::POST, &path, body, auth).await;
            refused(&r, &format!("{decision} with {auth:?}"));
        }
    }
    let run = env.admin_get("/runs/run-auth").await.json();
    assert_eq!(run["status"]["state"], "active", "{run}");
    assert_eq!(run["approvals"][0]["state"], "pending", "{run}");
    let r = weather(&env, "run-auth").await;
    env.assert_refused(&r, 403, "approval_required").await;
    assert_eq!(env.weather.request_count(), 0);
    // The retry asks afresh; the first approval is still pending, not approved.
    let run = env.admin_get("/runs/run-auth").await.json();
    let approvals = run["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 2, "{run}");
    assert!(
        approvals
            .iter()
            .any(|a| a["id"] == id.as_str() && a["state"] == "pending"),
        "{run}"
    );

    // An unauthorised reload does not load a changed bundle.
    let before = snapshot(&env).await;
    let bundle = std::fs::read_to_string(env.dir.join("bundle.yaml")).unwrap();
    let changed = bundle.replace(
        PAUSE_WEATHER,
        &PAUSE_WEATHER.replace("action: pause", "action: stop"),
    );
    assert_ne!(changed, bundle);
    std::fs::write(env.dir.join("bundle.yaml"), &changed).unwrap();
    for auth in bad {
        let r = env
            .admin_call(
                http::Method::POST,
                "/ops/reload",
                serde_json::json!({}),
                auth,
            )
            .await;
        refused(&r, &format!("reload with {auth:?}"));
    }
    assert_eq!(
        snapshot(&env).await,
        before,
        "the changed bundle was not loaded"
    );
    let r = weather(&env, "run-auth-2").await;
    env.assert_refused(&r, 403, "approval_required").await;

    // Any other method is a route error before the token is even read (405 on a known path,
    // 404 on an unknown one), and changes nothing.
    for (method, path, status, code) in [
        (http::Method::PUT, "/ops/mode", 405, "method_not_supported"),
        (
            http::Method::DELETE,
            "/runs/run-auth",
            405,
            "method_not_supported",
        ),
        (
            http::Method::PATCH,
            path.as_str(),
            405,
            "method_not_supported",
        ),
        (http::Method::POST, "/ops/anything", 404, "unknown_route"),
    ] {
        let r = env
            .admin_call(method.clone(), path, serde_json::json!({}), None)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{method} {path}: {}",
            r.text()
        );
    }
    let ev = env.evidence();
    assert_eq!(
        ev.len(),
        3,
        "the three calls' records, no audit record: {ev:#?}"
    );
    assert!(ev.iter().all(|r| r.kind == warden::evidence::Kind::Call));

    // With the token, the same requests work: the approval lets the retry pass, the reload
    // loads the changed bundle.
    let r = env
        .admin_post(
            &path,
            serde_json::json!({"decision": "approve", "reason": "ok"}),
            Some(&env.admin_token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = weather(&env, "run-auth").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.weather.request_count(), 1);
    let r = env
        .admin_post("/ops/reload", serde_json::json!({}), Some(&env.admin_token))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(
        snapshot(&env).await,
        before,
        "an authorised reload loads it"
    );
    let r = weather(&env, "run-auth-3").await;
    env.assert_refused(&r, 403, "policy_denied").await;
}

async fn snapshot(env: &Env) -> serde_json::Value {
    env.admin_get("/readyz").await.json()["snapshot"].clone()
}
