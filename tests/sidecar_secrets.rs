//! The secrets detector over real sockets: with `detectors: { secrets: { on_match: stop } }` an
//! OpenAI key pasted into a prompt is refused before the upstream, a streamed reply echoing one
//! is cut before any of it reaches the agent, an HTTP body carrying an AWS key is refused
//! before the upstream; each with `secret_detected` and its evidence record. Without the
//! detector the same calls pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod upstream;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use serde_json::{json, Value};
use upstream::{connector, Upstream};
use warden::codes::Code;
use warden::decide::ReasonCode;
use warden::dev::mocks::llm::{SECRET_KEY, SECRET_PIECES};
use warden::evidence::{Kind, Outcome};

const OPENAI_KEY: &str = "sk-3kT9vQmZ8xLp2RwYbN4cHs7dFgJ1aE6uV0oIqWzXtKr5Mn";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";

/// The contract bundle with a secrets detector on the LLM policy (`on`), plus an HTTP
/// connector `rec` on `url` whose policy has one too (`on`).
fn edit(on: bool, url: &str) -> impl Fn(String) -> String + '_ {
    move |b: String| {
        let b = if on {
            b.replacen(
                "detectors: { pii: { on_match: stop } }",
                "detectors: { pii: { on_match: stop }, secrets: { on_match: stop } }",
                1,
            )
        } else {
            b
        };
        let mut rec = connector("rec", url, "p310-rec", None);
        if on {
            rec.push_str("  detectors: { secrets: { on_match: stop } }\n");
        }
        format!("{b}{rec}")
    }
}

async fn world(name: &str, on: bool) -> (Env, Upstream) {
    let up = Upstream::start().await;
    let url = up.url();
    let env = start_with(name, edit(on, &url), |c| c).await;
    (env, up)
}

fn chat(content: &str, stream: bool) -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": content }],
        "stream": stream,
    })
    .to_string()
}

/// The last call record, which must carry `code`, `outcome` and a `secret_detected` reason
/// naming `kind`.
fn record_says(env: &Env, code: Code, outcome: Outcome, kind: &str) {
    let ev = env.evidence();
    let rec = ev
        .iter()
        .rev()
        .find(|r| r.kind == Kind::Call)
        .expect("a call record");
    assert_eq!(rec.outcome, Some(outcome), "{rec:?}");
    let recorded = rec.code.or(rec.cut.as_ref().map(|c| c.code));
    assert_eq!(recorded, Some(code), "{rec:?}");
    assert!(
        rec.reasons
            .iter()
            .any(|r| r.code == ReasonCode::SecretDetected && r.detail.contains(kind)),
        "no secret_detected reason naming {kind}: {:?}",
        rec.reasons
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_a_prompt_is_refused_before_the_upstream() {
    let (env, _up) = world("secrets-prompt", true).await;
    let r = env
        .chat(
            None,
            chat(&format!("Use my key {OPENAI_KEY} to call the API"), false),
        )
        .await;
    env.assert_refused(&r, 403, "secret_detected").await;
    assert_eq!(env.llm.request_count(), 0, "the upstream was reached");
    record_says(&env, Code::SecretDetected, Outcome::Refused, "openai_key");
    // A key in any string of the request: a tool description.
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "hi" }],
        "tools": [{ "type": "function", "function": { "name": "f", "description": format!("auth with {OPENAI_KEY}") } }],
    });
    let r = env.chat(None, body.to_string()).await;
    env.assert_refused(&r, 403, "secret_detected").await;
    assert_eq!(env.llm.request_count(), 0);
    // A clean prompt in a fresh run passes.
    let r = env.chat(None, chat("What is an API key?", false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.llm.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_echoing_a_key_is_cut_before_any_of_it() {
    let (env, _up) = world("secrets-stream", true).await;
    let resp = client()
        .request(
            http::Request::post(env.agent_url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(chat(
                    "echo [[secret]] [[reply:30]]",
                    true,
                ))))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = stream_events(resp).await;
    let all = events.join("\n");
    for piece in SECRET_PIECES {
        assert!(
            !all.contains(piece.trim()),
            "`{piece}` reached the agent: {all}"
        );
    }
    assert!(!all.contains(SECRET_KEY));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "secret_detected", "{all}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    // The 20 words before the key passed.
    assert_eq!(stream_text(&events).split_whitespace().count(), 20, "{all}");
    record_says(&env, Code::SecretDetected, Outcome::Cut, "openai_key");
    // A plain reply with the key is withheld whole.
    let r = env
        .chat(None, chat("echo [[secret]] [[reply:30]]", false))
        .await;
    env.assert_refused(&r, 403, "secret_detected").await;
    assert!(!r.text().contains("Xk29fLq0Vb7TmW3p"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_with_an_aws_key_is_refused_before_the_upstream() {
    let (env, up) = world("secrets-http", true).await;
    let body = format!("{{\"config\":\"aws_access_key_id = {AWS_ID}\"}}");
    let req = http::Request::post(env.agent_url("/http/rec/v1/upload"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let r = send(req).await;
    env.assert_refused(&r, 403, "secret_detected").await;
    assert_eq!(up.count(), 0, "the upstream was reached");
    record_says(
        &env,
        Code::SecretDetected,
        Outcome::Refused,
        "aws_access_key_id",
    );
    // JSON-escaped, in a query: still read.
    let req = http::Request::post(env.agent_url("/http/rec/v1/upload"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"k":"AKIA\u0049OSFODNN7EXAMPLE"}"#,
        )))
        .unwrap();
    assert_eq!(send(req).await.code(), "secret_detected");
    let req = http::Request::get(env.agent_url(&format!("/http/rec/v1/x?key={AWS_ID}")))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(req).await.code(), "secret_detected");
    assert_eq!(up.count(), 0);
    // An upstream answering with a key: withheld.
    up.answer(
        200,
        &[("content-type", b"application/json")],
        format!("{{\"token\":\"{OPENAI_KEY}\"}}"),
    );
    let req = http::Request::get(env.agent_url("/http/rec/v1/x"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(req).await;
    env.assert_refused(&r, 403, "secret_detected").await;
    assert!(!r.text().contains(OPENAI_KEY));
    // A body the detector cannot read is not clean (fail_closed by default).
    let req = http::Request::post(env.agent_url("/http/rec/v1/upload"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from_static(b"\x1f\x8b\x08\x00")))
        .unwrap();
    let r = send(req).await;
    env.assert_refused(&r, 403, "fact_unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secrets_detector_the_same_calls_pass() {
    let (env, up) = world("secrets-off", false).await;
    let r = env
        .chat(
            None,
            chat(&format!("Use my key {OPENAI_KEY} to call the API"), false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.llm.request_count(), 1);
    let r = env
        .chat(None, chat("echo [[secret]] [[reply:30]]", false))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(SECRET_KEY));
    let req = http::Request::post(env.agent_url("/http/rec/v1/upload"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{{\"k\":\"{AWS_ID}\"}}"))))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_let_through_with_a_warning_does_not_let_a_later_secret_through() {
    let up = Upstream::start().await;
    let url = up.url();
    let env = start_with(
        "secrets-after-pii-warn",
        move |b| {
            edit(false, &url)(b).replacen(
                "detectors: { pii: { on_match: stop } }",
                "detectors: { pii: { on_match: warn }, secrets: { on_match: stop } }",
                1,
            )
        },
        |c| c,
    )
    .await;
    let resp = client()
        .request(
            http::Request::post(env.agent_url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(chat(
                    "echo [[leak]] [[secret]] [[reply:30]]",
                    true,
                ))))
                .unwrap(),
        )
        .await
        .unwrap();
    let events = stream_events(resp).await;
    let all = events.join("\n");
    assert!(
        all.contains("jane.doe@example.com"),
        "the warned PII passes: {all}"
    );
    for piece in SECRET_PIECES {
        assert!(
            !all.contains(piece.trim()),
            "`{piece}` reached the agent: {all}"
        );
    }
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "secret_detected", "{all}");
    record_says(&env, Code::SecretDetected, Outcome::Cut, "openai_key");
}
