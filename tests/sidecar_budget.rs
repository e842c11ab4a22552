//! Budgets under concurrency: usage is reserved when a call is decided and settled when its
//! record is sealed, so concurrent calls of one run never pass a limit together — plain calls,
//! streams, upstreams that ignore `max_tokens`, `n`, request and cost limits, session and
//! sliding windows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

const MODEL: &str = "gpt-4o-mini";

fn tokens(text: &str) -> u64 {
    warden::connectors::llm::count_tokens(MODEL, text)
}

/// A plain chat call in run `run`; returns (status, code, output tokens the agent received).
async fn plain(
    env: &Env,
    run: &str,
    content: &str,
    extra: serde_json::Value,
) -> (u16, String, u64) {
    let mut body: serde_json::Value =
        serde_json::from_str(&chat_body(MODEL, content, false, None)).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = env.chat(Some(run), body.to_string()).await;
    if r.status != 200 {
        return (r.status, r.code(), 0);
    }
    let v = r.json();
    let text: String = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["message"]["content"].as_str())
        .collect();
    (200, String::new(), tokens(&text))
}

/// A streamed chat call; returns (status, last error code if cut, output tokens received).
async fn streamed(env: &Env, run: &str, content: &str) -> (u16, String, u64) {
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", run)
        .body(Full::new(Bytes::from(chat_body(
            MODEL, content, true, None,
        ))))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        return (status, v["error"]["code"].as_str().unwrap_or("").into(), 0);
    }
    let events = stream_events(resp).await;
    let code = events
        .last()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (200, code, tokens(&stream_text(&events)))
}

fn budget(max: u64) -> impl Fn(String) -> String {
    move |b| {
        b.replace(
            "max: 2000, near: [0.8]",
            &format!("max: {max}, near: [0.8]"),
        )
    }
}

/// 50 parallel calls of one run with a 2,000-output-token cap (and the contract's 1,024
/// clamp): before reservation they delivered ~35,000 tokens and the run stayed active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_plain_calls_never_pass_the_run_budget() {
    let env = start_with("par-plain", budget(2000), |c| c).await;
    let env = std::sync::Arc::new(env);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            plain(
                &env,
                "run-par",
                "write [[reply:1024]] [[slow:20]]",
                serde_json::json!({}),
            )
            .await
        }));
    }
    let mut delivered = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, code, n) = t.await.unwrap();
        delivered += n;
        if status != 200 {
            refused += 1;
            assert!(
                matches!(code.as_str(), "budget_exceeded" | "run_stopped"),
                "{status} {code}"
            );
        }
    }
    assert!(
        delivered <= 2000,
        "delivered {delivered} tokens past the 2,000 budget"
    );
    assert!(delivered >= 1900, "the budget is usable: {delivered}");
    assert!(refused >= 47, "{refused} refused");
    // Calls refused while others held the headroom did not end the run; once the holds are
    // settled the budget is really spent: the next call breaches it and stops the run.
    let (status, code, _) = plain(&env, "run-par", "again", serde_json::json!({})).await;
    assert_eq!((status, code.as_str()), (429, "budget_exceeded"));
    let (status, code, _) = plain(&env, "run-par", "again", serde_json::json!({})).await;
    assert_eq!((status, code.as_str()), (403, "run_stopped"));
    assert_eq!(env.evidence().len(), 52);
    let used: u64 = env.evidence().iter().map(|r| r.output_tokens).sum();
    assert!(used <= 2000, "the records agree: {used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_streams_never_pass_the_run_budget() {
    let env = std::sync::Arc::new(start_with("par-stream", budget(2000), |c| c).await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let env = env.clone();
        // Half of the upstream answers ignore max_tokens: those streams draw from the shared
        // headroom as they pass what they reserved, and are cut where it ends.
        let content = if i % 2 == 0 {
            "go [[reply:1024]] [[slow:2]]"
        } else {
            "go [[reply:1024]] [[slow:2]] [[overrun]]"
        };
        tasks.push(tokio::spawn(async move {
            streamed(&env, "run-ps", content).await
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        let (_, _, n) = t.await.unwrap();
        delivered += n;
    }
    assert!(
        delivered <= 2000,
        "delivered {delivered} tokens past the 2,000 budget"
    );
    assert!(delivered >= 1500, "the budget is usable: {delivered}");
    // Settled, the budget is spent: the run ends (at the latest on the next call).
    let (status, code, _) = streamed(&env, "run-ps", "again").await;
    assert!(
        matches!(
            (status, code.as_str()),
            (429, "budget_exceeded") | (403, "run_stopped")
        ),
        "{status} {code}"
    );
    let (status, code, _) = streamed(&env, "run-ps", "again").await;
    assert_eq!((status, code.as_str()), (403, "run_stopped"));
}

/// Where the headroom left is smaller than the clamp, max_tokens is clamped to it (not
/// refused); the unused part of a reservation is released when the call is sealed; a call
/// with no room left is refused before the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_is_clamped_to_the_headroom_and_unused_reservations_come_back() {
    let env = start_with("clamp", budget(2000), |c| c).await;
    let sent_max =
        |env: &Env| env.llm.last_request().unwrap().json().unwrap()["max_tokens"].as_u64();
    // Reserves 1,024 (the policy clamp), uses 5: 1,995 left.
    assert_eq!(
        plain(&env, "r", "a [[reply:5]]", serde_json::json!({}))
            .await
            .2,
        5
    );
    assert_eq!(sent_max(&env), Some(1024));
    // Uses the whole clamp: 971 left.
    assert_eq!(plain(&env, "r", "b", serde_json::json!({})).await.2, 1024);
    // Clamped to the headroom.
    assert_eq!(
        plain(&env, "r", "c", serde_json::json!({})).await,
        (200, String::new(), 971)
    );
    assert_eq!(sent_max(&env), Some(971));
    // Nothing left: refused, never sent.
    let before = env.llm.request_count();
    let (status, code, _) = plain(&env, "r", "d", serde_json::json!({})).await;
    assert_eq!((status, code.as_str()), (429, "budget_exceeded"));
    assert_eq!(env.llm.request_count(), before);
}

/// `n` choices share the headroom: max_tokens is clamped per choice; an `n` that cannot get
/// one token a choice is refused; out-of-range `n` is invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_is_reserved_for_and_bounded() {
    let env = start_with("n", budget(100), |c| c).await;
    let (status, _, _) = plain(&env, "rn", "a", serde_json::json!({ "n": 4 })).await;
    assert_eq!(status, 200);
    let got = env.llm.last_request().unwrap().json().unwrap();
    assert_eq!(
        got["max_tokens"], 25,
        "100 tokens of headroom over 4 choices"
    );
    assert_eq!(got["n"], 4);
    for bad in [
        serde_json::json!(0),
        serde_json::json!(129),
        serde_json::json!("2"),
        serde_json::json!(1.5),
    ] {
        let (status, code, _) = plain(&env, "rn-bad", "x", serde_json::json!({ "n": bad })).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_params"),
            "n = {bad}"
        );
    }
    // 100 - 25 (the mock answered one choice of 25) = 75 left: 100 choices cannot fit.
    let before = env.llm.request_count();
    let (status, code, _) = plain(&env, "rn", "b", serde_json::json!({ "n": 100 })).await;
    assert_eq!((status, code.as_str()), (429, "budget_exceeded"));
    assert_eq!(env.llm.request_count(), before);
}

/// Request limits hold under concurrency: exactly `max` of many parallel calls pass, per run
/// and per sliding window (across runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_hold_under_concurrency() {
    let env = std::sync::Arc::new(
        start_with(
            "requests",
            |b| {
                b.replace(
                    "    - { metric: output_tokens, window: run, max: 2000, near: [0.8], on_breach: stop }",
                    "    - { metric: requests, window: run, max: 5, on_breach: stop }\n    - { metric: requests, window: 1m, max: 8, on_breach: pause }",
                )
            },
            |c| c,
        )
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..30 {
        let env = env.clone();
        let run = if i < 15 { "run-a" } else { "run-b" };
        tasks.push(tokio::spawn(async move {
            plain(
                &env,
                run,
                "hi [[reply:3]] [[slow:30]]",
                serde_json::json!({}),
            )
            .await
            .0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(env.llm.request_count(), ok);
    assert!(ok <= 8, "{ok} calls passed a limit of 8 a minute");
    assert!(ok >= 8 - 1, "5 per run, 8 a minute in all: {ok}");
}

/// A cost budget holds under concurrency too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_limits_hold_under_concurrency() {
    // gpt-4o-mini output is $0.60 per million tokens: $0.0006 is 1,000 output tokens.
    let env = std::sync::Arc::new(
        start_with(
            "cost",
            |b| {
                b.replace(
                    "metric: output_tokens, window: run, max: 2000, near: [0.8]",
                    "metric: cost_usd, window: session, max: 0.0006, near: [0.8]",
                )
            },
            |c| c,
        )
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let env = env.clone();
        // Two runs of one session share the session window.
        tasks.push(tokio::spawn(async move {
            let run = format!("run-c{}", i % 2);
            let req = http::Request::post(env.agent_url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("x-warden-run-id", run)
                .header("x-warden-session-id", "sess-1")
                .body(Full::new(Bytes::from(chat_body(
                    MODEL,
                    "x [[reply:400]] [[slow:10]]",
                    false,
                    None,
                ))))
                .unwrap();
            send(req).await
        }));
    }
    let spent = |r: &Resp| {
        let usage = &r.json()["usage"];
        usage["completion_tokens"].as_f64().unwrap() * 0.60 / 1e6
            + usage["prompt_tokens"].as_f64().unwrap() * 0.15 / 1e6
    };
    let mut cost = 0.0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 200 {
            cost += spent(&r);
        } else {
            env.assert_refused(&r, 429, "budget_exceeded").await;
        }
    }
    // Holds come back when calls end: one call after another spends the rest of the budget.
    for i in 0..20 {
        let r = send(
            http::Request::post(env.agent_url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("x-warden-run-id", format!("run-c{}", i % 2))
                .header("x-warden-session-id", "sess-1")
                .body(Full::new(Bytes::from(chat_body(
                    MODEL,
                    "x [[reply:400]]",
                    false,
                    None,
                ))))
                .unwrap(),
        )
        .await;
        if r.status != 200 {
            break;
        }
        cost += spent(&r);
    }
    assert!(
        cost <= 0.0006 + 1e-12,
        "spent ${cost} of a $0.0006 session budget"
    );
    assert!(cost >= 0.00055, "the budget is usable: ${cost}");
}
