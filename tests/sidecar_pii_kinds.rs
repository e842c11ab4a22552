//! A PII policy limited to some kinds: a kind it lets through must not switch the detector off
//! for the rest of the answer — a blocked kind later in the same stream is still cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod upstream;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use upstream::Upstream;

fn chunk(text: &str) -> String {
    let v = serde_json::json!({
        "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": null }],
    });
    format!("data: {v}\n\n")
}

/// The contract bundle with its LLM connector pointed at `url` (a recording upstream instead of
/// the mock) and the LLM policy's detectors replaced by `detectors`.
fn llm_at(bundle: &str, url: &str, detectors: &str) -> String {
    bundle
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("base_url:") && l.ends_with("/v1\"") {
                format!("    base_url: \"{url}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replacen("detectors: { pii: { on_match: stop } }", detectors, 1)
}

async fn stream_through(up: &Upstream, env: &Env, pieces: &[&str]) -> Vec<String> {
    let mut sse: String = pieces.iter().map(|p| chunk(p)).collect();
    sse.push_str("data: [DONE]\n\n");
    up.answer(200, &[("content-type", b"text/event-stream")], sse);
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "hi",
            true,
            None,
        ))))
        .unwrap();
    stream_events(client().request(req).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_kind_does_not_let_a_blocked_kind_through_later() {
    let up = Upstream::start().await;
    let url = format!("{}/v1", up.url());
    let env = start_with(
        "pii-kinds",
        move |b| {
            llm_at(
                &b,
                &url,
                "detectors: { pii: { on_match: stop, kinds: [iban] } }",
            )
        },
        |c| c,
    )
    .await;
    let events = stream_through(
        &up,
        &env,
        &[
            "write to jane.doe@example.com ",
            "and pay GB82 WEST 1234 ",
            "5698 7654 32 today",
        ],
    )
    .await;
    let all = events.join("\n");
    assert!(up.count() >= 1, "the upstream answered");
    assert!(
        all.contains("jane.doe@example.com"),
        "email is allowed: {all}"
    );
    assert!(
        !all.contains("GB82"),
        "the IBAN never reaches the agent: {all}"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "pii_detected", "{all}");
    let ev = env.evidence();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].outcome, Some(warden::evidence::Outcome::Cut));

    // The other order too: the blocked kind first is cut at once.
    let events = stream_through(
        &up,
        &env,
        &["pay GB82 WEST 1234 5698 7654 32 ", "jane.doe@example.com"],
    )
    .await;
    assert!(!events.join("\n").contains("GB82"));
    // And an answer with the allowed kind only passes whole.
    let events = stream_through(&up, &env, &["write to jane.doe", "@example.com, thanks"]).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert_eq!(
        stream_text(&events),
        "write to jane.doe@example.com, thanks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_secret_kind_does_not_let_a_blocked_one_through_later() {
    let up = Upstream::start().await;
    let url = format!("{}/v1", up.url());
    let env = start_with(
        "secret-kinds",
        move |b| {
            llm_at(
                &b,
                &url,
                "detectors: { secrets: { on_match: stop, kinds: [aws_access_key_id] } }",
            )
        },
        |c| c,
    )
    .await;
    let openai = "sk-proj-Xk29fLq0Vb7TmW3pRz8N-aY5cH1dGj_6sUeKo4QiBvD2nAxPlMtS9rF0wE7yZhJ3gC";
    let first = format!("use {openai} here, ");
    let events = stream_through(&up, &env, &[&first, "and AKIAIOSF", "ODNN7EXAMPLE too"]).await;
    let all = events.join("\n");
    assert!(
        all.contains(openai),
        "the openai key is not a kind this policy blocks: {all}"
    );
    assert!(
        !all.contains("AKIA"),
        "the AWS key never reaches the agent: {all}"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "secret_detected", "{all}");
}
