//! The sidecar over real sockets: the LLM channel against the mock upstream, modes, the admin
//! port and evidence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod tls;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use warden::decide::Mode;
use warden::evidence::Outcome;
use warden::policy::model::Action;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_call_injects_the_key_clamps_and_records() {
    let env = start("allowed").await;
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "hello there", false, Some(5000)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let run = r.header("x-warden-run-id").expect("a run id is assigned");
    assert!(run.starts_with("run-"));
    assert!(r.header("x-warden-decision-id").is_some());
    let seen = env.llm.last_request().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert!(
        !format!("{:?}", seen.headers).contains(AGENT_KEY),
        "agent credential must not reach the upstream"
    );
    assert_eq!(
        seen.json().unwrap()["max_tokens"],
        1024,
        "clamped by p100-llm"
    );
    // Mock replies with max_tokens tokens: usage is reconciled from the upstream.
    let ev = env.evidence();
    assert_eq!(ev.len(), 1);
    let rec = &ev[0];
    assert_eq!(rec.run_id.as_deref(), Some(run.as_str()));
    assert_eq!(rec.output_tokens, 1024);
    assert!(rec.input_tokens > 0);
    assert!(rec.cost_usd > 0.0);
    assert_eq!(rec.policy.as_deref(), Some("p100-llm"));
    assert!(
        rec.content.is_none(),
        "inspection defaults to hashes and counts"
    );
    assert!(rec.prompt_hash.is_some() && rec.response_hash.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_never_reach_the_upstream() {
    let env = start("refusals").await;
    let r = env.chat(None, chat_body("gpt-4o", "hi", false, None)).await;
    env.assert_refused(&r, 403, "no_allow_policy").await;
    let r = env
        .chat(
            None,
            chat_body(
                "gpt-4o-mini",
                "mail jane.doe@example.com please",
                false,
                None,
            ),
        )
        .await;
    let rec = env.assert_refused(&r, 403, "pii_detected").await;
    assert_eq!(r.json()["error"]["policy_id"], "p100-llm");
    assert_eq!(rec.policy.as_deref(), Some("p100-llm"));
    let r = env.chat(None, "{not json".into()).await;
    env.assert_refused(&r, 400, "bad_request").await;
    let r = env
        .chat(None, r#"{"model": 5, "messages": []}"#.into())
        .await;
    env.assert_refused(&r, 400, "invalid_params").await;
    let big = "x".repeat(2 << 20);
    let r = env
        .chat(None, chat_body("gpt-4o-mini", &big, false, None))
        .await;
    env.assert_refused(&r, 413, "body_too_large").await;
    assert_eq!(env.llm.request_count(), 0);
    let ev = env.evidence();
    assert_eq!(ev.len(), 5, "every refusal has its record, and no other");
    assert!(ev
        .iter()
        .all(|r| r.outcome == Some(warden::evidence::Outcome::Refused)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_cut_at_the_run_budget_and_the_run_stops() {
    let env = start_with(
        "budget",
        |b| b.replace("max: 2000, near: [0.8]", "max: 10, near: [0.5]"),
        |c| c,
    )
    .await;
    // An upstream that does not honour the clamped `max_tokens` is cut at the budget.
    let body = chat_body(
        "gpt-4o-mini",
        "tell me [[reply:30]] [[overrun]]",
        true,
        None,
    );
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", "run-budget")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = stream_events(resp).await;
    let text = stream_text(&events);
    let tokens = warden::connectors::llm::count_tokens("gpt-4o-mini", &text);
    assert!(tokens <= 10, "received {tokens} tokens: {text:?}");
    assert!(tokens >= 9, "the budget is used up to the limit: {text:?}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "budget_exceeded", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    // The run is over.
    let r = env
        .chat(
            Some("run-budget"),
            chat_body("gpt-4o-mini", "again", false, None),
        )
        .await;
    env.assert_refused(&r, 403, "run_stopped").await;
    let ev = env.evidence();
    let cut = ev
        .iter()
        .find(|r| r.cut.is_some())
        .expect("the cut is recorded");
    assert_eq!(cut.cut.as_ref().unwrap().after_tokens, tokens);
    assert_eq!(cut.outcome, Some(warden::evidence::Outcome::Cut));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_in_a_streamed_reply_never_reaches_the_agent() {
    let env = start("leak").await;
    let body = chat_body("gpt-4o-mini", "summarise [[leak]] [[reply:40]]", true, None);
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let events = stream_events(resp).await;
    let all = events.join("\n");
    assert!(!all.contains("jane.doe@example.com"), "{all}");
    assert!(!all.contains("jane.doe"), "not even a prefix: {all}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "pii_detected");
    assert!(
        stream_text(&events).split_whitespace().count() >= 19,
        "text before the address passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_streams_end_with_done_and_usage_when_asked() {
    let env = start("stream-ok").await;
    let mut v: serde_json::Value =
        serde_json::from_str(&chat_body("gpt-4o-mini", "hi [[reply:5]]", true, None)).unwrap();
    v["stream_options"] = serde_json::json!({ "include_usage": true });
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap();
    let events = stream_events(client().request(req).await.unwrap()).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(stream_text(&events).split_whitespace().count(), 5);
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    let ev = env.evidence();
    assert_eq!(ev[0].output_tokens, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_cuts_a_stream_mid_way() {
    let env = start("kill").await;
    let body = chat_body("gpt-4o-mini", "go [[reply:200]] [[slow:20]]", true, None);
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let reader = Reader::spawn(resp);
    reader.received(3).await;
    let r = env.set_mode("halted").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = tokio::time::timeout(std::time::Duration::from_secs(5), reader.task)
        .await
        .unwrap()
        .unwrap();
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "governance_halted");
    let n = stream_text(&events).split_whitespace().count();
    assert!(n > 0 && n < 200, "cut mid-way after {n} tokens");
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, None))
        .await;
    env.assert_refused(&r, 503, "governance_halted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_refuses_new_runs_and_warns_running_ones() {
    let env = start("degraded").await;
    let r = env
        .chat(
            Some("run-old"),
            chat_body("gpt-4o-mini", "hi", false, Some(3)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.set_mode("degraded").await.status, 200);
    let r = env
        .chat(
            Some("run-new"),
            chat_body("gpt-4o-mini", "hi", false, Some(3)),
        )
        .await;
    env.assert_refused(&r, 503, "governance_degraded").await;
    // A running run continues, even where a policy would refuse (downgraded to WARN).
    let before = env.llm.request_count();
    let r = env
        .chat(
            Some("run-old"),
            chat_body("gpt-4o-mini", "mail jane.doe@example.com", false, Some(3)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.llm.request_count(), before + 1, "the call passed");
    // The sidecar signals a WARN in the answer only by the ids that lead to its record (no
    // warning header or body field): the decision id names the downgraded record.
    let decision = r.header("x-warden-decision-id").expect("a decision id");
    let rec = env.record_of(&decision).await;
    assert_eq!(
        r.header("x-warden-evidence-id"),
        Some(rec.evidence_id.clone())
    );
    assert_eq!(rec.mode, Mode::Degraded);
    assert_eq!(rec.action, Some(Action::Warn), "{rec:#?}");
    assert_eq!(rec.outcome, Some(Outcome::Allowed));
    // The original outcome stays on the record: the PII STOP's code and winning reason.
    assert_eq!(rec.code, Some(warden::codes::Code::PiiDetected));
    assert_eq!(rec.reasons.first().map(|r| r.action), Some(Action::Stop));
    // Deciding again on what the record holds gives the downgrade: WARN, from STOP.
    let d = env.decide_again(&rec);
    assert_eq!(
        (d.action, d.downgraded_from),
        (Action::Warn, Some(Action::Stop))
    );
    assert_eq!(run_state(&env, "run-old").await, "active");
}

async fn run_state(env: &Env, run: &str) -> String {
    let r = env.admin_get(&format!("/runs/{run}")).await;
    r.json()["status"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_passes_and_marks_the_evidence() {
    let env = start("bypass").await;
    assert_eq!(env.set_mode("bypass").await.status, 200);
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "mail jane.doe@example.com", false, Some(3)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = env.evidence();
    let audit = ev
        .iter()
        .find(|r| r.kind == warden::evidence::Kind::Audit)
        .unwrap();
    assert_eq!(audit.audit.as_ref().unwrap()["critical"], true);
    let call = ev
        .iter()
        .find(|r| r.kind == warden::evidence::Kind::Call)
        .unwrap();
    assert_eq!(call.outcome, Some(warden::evidence::Outcome::Bypassed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_the_token_and_reports_health() {
    let env = start("admin").await;
    for auth in [None, Some("Bearer wrong"), Some("test-admin-token")] {
        let r = env
            .admin_call(
                http::Method::POST,
                "/ops/mode",
                serde_json::json!({"mode": "halted", "reason": "x"}),
                auth,
            )
            .await;
        // An admin answer: no call, so no decision id or record.
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "unauthorized"),
            "{auth:?}: {}",
            r.text()
        );
    }
    // Nothing changed: the mode, the evidence (no audit record), the traffic.
    assert_eq!(
        env.admin_get("/ops/mode").await.json()["global"],
        "enforcing"
    );
    assert!(env.evidence().is_empty(), "{:#?}", env.evidence());
    assert_eq!(env.admin_get("/healthz").await.status, 200);
    let r = env.admin_get("/readyz").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["snapshot"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let _ = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    let m = env.admin_get("/metrics").await.text();
    assert!(m.contains("warden_calls_total"), "{m}");
    assert!(m.contains("warden_evidence_spool_bytes"), "{m}");
    assert!(m.contains("warden_decision_seconds"), "{m}");
    let r = env
        .chat(
            Some("run-x"),
            chat_body("gpt-4o-mini", "hi", false, Some(2)),
        )
        .await;
    assert_eq!(r.status, 200);
    let run = env.admin_get("/runs/run-x").await.json();
    assert_eq!(run["status"]["state"], "active");
    assert_eq!(run["recent"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_refusals() {
    let env = start_with(
        "upstream",
        |b| {
            b.replace(
                "api_key: env:WARDEN_IT_OPENAI_KEY",
                "api_key: env:WARDEN_IT_OPENAI_KEY\n    timeout_ms: 300",
            )
        },
        |c| c,
    )
    .await;
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "x [[fail:500]]", false, None),
        )
        .await;
    env.assert_refused(&r, 502, "upstream_error").await;
    let r = env
        .chat(
            None,
            chat_body("gpt-4o-mini", "x [[slow:1000]]", false, Some(2)),
        )
        .await;
    env.assert_refused(&r, 504, "upstream_timeout").await;
    let ev = env.evidence();
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert!(ev
        .iter()
        .all(|r| r.outcome == Some(warden::evidence::Outcome::Errored)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_guard_refuses_without_a_verified_snapshot() {
    let env = start_with("notready", |_| "apiVersion: nope\n".into(), |c| c).await;
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, None))
        .await;
    env.assert_refused(&r, 503, "not_ready").await;
    assert_eq!(env.admin_get("/readyz").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_only_what_policies_allow() {
    let env = start("models").await;
    let r = send(
        http::Request::get(env.agent_url("/v1/models"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_and_fail_closed() {
    // A plain-HTTP upstream behind an https:// base URL fails the handshake, never falls back
    // to plaintext.
    let env = start_with(
        "tls-plain",
        |b| {
            b.replacen(
                "base_url: \"http://127.0.0.1",
                "base_url: \"https://127.0.0.1",
                1,
            )
        },
        |c| c,
    )
    .await;
    let r = env
        .chat(None, chat_body("gpt-4o-mini", "hi", false, Some(2)))
        .await;
    env.assert_refused(&r, 502, "upstream_error").await;
    assert_eq!(env.llm.request_count(), 0);
    // A real TLS upstream: valid, untrusted, expired, another CA, another name.
    tls::every_case(tls::Channel::Llm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upstream_ca_file_fails_the_start() {
    let dir = tmpdir("bad-ca");
    std::fs::write(dir.join("bundle.yaml"), "apiVersion: nope\n").unwrap();
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        dir.join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (file, why) in [
        ("missing.pem", "No such file"),
        ("empty.pem", "no certificate"),
        ("broken.pem", "not PEM certificates"),
    ] {
        let cfg = warden::sidecar::config::SidecarConfig::parse(
            "s.yaml",
            &format!(
                "identity: {{ tenant: acme, project: support, agent: support-bot }}\n\
                 listen: {{ agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\n\
                 policy: {{ source: file, files: [bundle.yaml], cache_dir: cache }}\n\
                 evidence: {{ spool_dir: evidence-{file} }}\n\
                 upstream_tls: {{ ca_files: [{file}] }}\n"
            ),
            &dir,
            |_| None,
        )
        .unwrap();
        let e = match warden::sidecar::start(cfg).await {
            Ok(_) => panic!("{file}: the sidecar started"),
            Err(e) => e.to_string(),
        };
        let path = dir.join(file).display().to_string();
        assert!(
            e.contains("upstream_tls.ca_files") && e.contains(&path) && e.contains(why),
            "{file}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_over_the_budget_is_withheld() {
    let env = start_with(
        "plain-budget",
        |b| b.replace("max: 2000, near: [0.8]", "max: 10, near: [0.5]"),
        |c| c,
    )
    .await;
    let r = env
        .chat(
            Some("run-pb"),
            chat_body("gpt-4o-mini", "x [[reply:30]] [[overrun]]", false, None),
        )
        .await;
    let rec = env.assert_refused(&r, 429, "budget_exceeded").await;
    assert!(
        !r.text().contains("choices"),
        "no part of the answer reaches the agent"
    );
    assert_eq!(rec.outcome, Some(warden::evidence::Outcome::Cut));
    assert_eq!(
        rec.output_tokens, 30,
        "the upstream's tokens are still metered"
    );
    let r = env
        .chat(Some("run-pb"), chat_body("gpt-4o-mini", "y", false, None))
        .await;
    env.assert_refused(&r, 403, "run_stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_agent_hangs_up_on_still_gets_its_record() {
    use tokio::io::AsyncWriteExt;
    let env = start("hangup").await;
    let body = chat_body("gpt-4o-mini", "take your time [[slow:400]]", false, None);
    let mut sock = tokio::net::TcpStream::connect(env.sidecar.agent_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: warden\r\ncontent-type: application/json\r\n\
         x-warden-run-id: run-hangup\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body.as_bytes()).await.unwrap();
    // Wait until the upstream has the call, then hang up before it answers.
    wait_until("the call at the upstream", SEALED, || {
        env.llm.request_count() > 0
    })
    .await;
    assert_eq!(env.llm.request_count(), 1, "the call reached the upstream");
    assert!(env.records().is_empty(), "no record before the answer");
    drop(sock);
    // The upstream answers after 400 ms; the record follows.
    wait_until("the record of the abandoned call", SEALED, || {
        !env.records().is_empty()
    })
    .await;
    let ev = env.evidence();
    assert_eq!(ev.len(), 1, "one record for the call");
    assert_eq!(ev[0].run_id.as_deref(), Some("run-hangup"));
    assert_eq!(
        ev[0].outcome,
        Some(warden::evidence::record::Outcome::Allowed)
    );
    assert!(ev[0].output_tokens > 0, "usage of the answer is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_cuts_a_plain_call_waiting_on_its_upstream() {
    let env = std::sync::Arc::new(start("halt-plain").await);
    let started = std::time::Instant::now();
    let call = {
        let env = env.clone();
        tokio::spawn(async move {
            env.chat(
                Some("run-slow"),
                chat_body("gpt-4o-mini", "take your time [[slow:3000]]", false, None),
            )
            .await
        })
    };
    wait_until("the call at the upstream", SEALED, || {
        env.llm.request_count() > 0
    })
    .await;
    assert_eq!(
        env.llm.request_count(),
        1,
        "the call is waiting on the upstream"
    );
    assert_eq!(env.set_mode("halted").await.status, 200);
    let r = call.await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "cut at once, not after the upstream's 3 s"
    );
    let rec = env.assert_refused(&r, 503, "governance_halted").await;
    assert_eq!(rec.run_id.as_deref(), Some("run-slow"));
    assert_eq!(rec.outcome, Some(warden::evidence::record::Outcome::Cut));
    assert_eq!(
        rec.cut.as_ref().map(|c| c.code),
        Some(warden::codes::Code::GovernanceHalted)
    );
}
