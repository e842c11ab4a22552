//! Inspection is honoured: what the evidence spool holds of prompts and responses, read as raw
//! bytes (every file under the spool directory), after each outcome kind and under each
//! inspection combination that matters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use warden::dev::mocks::llm::SECRET_KEY;
use warden::evidence::Outcome;

const ADDR: &str = "jane.doe@example.com";
/// A word only the prompts carry, to tell whether a prompt was stored at all.
const MARK: &str = "zebraquartzprompt";

/// The contract bundle with the LLM policy's PII detector at `warn` (so an address passes)
/// and the given `inspection`.
async fn env(name: &str, inspection: &'static str) -> Env {
    start_with(
        name,
        move |b| {
            b.replacen(
                "  max_tokens: 1024                # clamp\n  detectors: { pii: { on_match: stop } }\n",
                &format!("  max_tokens: 1024\n  detectors: {{ pii: {{ on_match: warn }} }}\n  inspection: {inspection}\n"),
                1,
            )
        },
        |c| c,
    )
    .await
}

/// Every byte of every file under the spool directory.
fn raw(env: &Env) -> String {
    fn walk(p: &std::path::Path, out: &mut Vec<u8>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    walk(&env.dir.join("evidence"), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn calls(env: &Env) -> Vec<warden::evidence::Record> {
    env.evidence()
        .into_iter()
        .filter(|r| r.kind == warden::evidence::Kind::Call)
        .collect()
}

async fn stream(env: &Env, run: Option<&str>, content: &str) -> Vec<String> {
    let mut b = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json");
    if let Some(r) = run {
        b = b.header("x-warden-run-id", r);
    }
    let body = chat_body("gpt-4o-mini", content, true, None);
    let resp = client()
        .request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    stream_events(resp).await
}

/// The placeholders of one kind in `text`, e.g. `[pii:email:0123456789ab]`.
fn placeholders<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let end = text[i..].find(']').unwrap();
            &text[i..i + end + 1]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_off_keeps_prompts_and_responses_without_the_address() {
    let env = env(
        "insp-pii-off",
        "{ prompts: true, responses: true, pii: false }",
    )
    .await;
    let prompt = format!("{MARK} mail {ADDR} now, key {SECRET_KEY} [[leak]] [[reply:30]]");
    // Plain, then streamed: both pass (WARN), both replies carry the address.
    let r = env
        .chat(None, chat_body("gpt-4o-mini", &prompt, false, None))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains(ADDR),
        "the agent got the reply: {}",
        r.text()
    );
    let events = stream(&env, None, &prompt).await;
    assert!(stream_text(&events).contains(ADDR));

    let raw = raw(&env);
    assert!(!raw.contains(ADDR), "no address in the spool's bytes");
    assert!(!raw.contains("jane.doe"), "not even its local part");
    assert!(!raw.contains(SECRET_KEY), "no secret in the spool's bytes");
    assert!(raw.contains(MARK), "the prompts are kept");
    let tags = placeholders(&raw, "[pii:email:");
    assert_eq!(tags.len(), 4, "two prompts and two replies: {tags:?}");
    assert!(tags.iter().all(|t| t.len() == "[pii:email:]".len() + 12));
    assert!(
        tags.iter().all(|t| *t == tags[0]),
        "one value, one hash: {tags:?}"
    );
    let secrets = placeholders(&raw, "[secret:openai_key:");
    assert_eq!(secrets.len(), 2, "the key in both prompts: {secrets:?}");
    // The key: 32 bytes beside the segments, readable by the sidecar's user only.
    let key = env.dir.join("evidence").join("redaction.key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let c = calls(&env);
    assert_eq!(c.len(), 2);
    for rec in &c {
        let content = rec.content.as_ref().expect("content kept");
        assert!(content.prompt.as_ref().unwrap().contains(MARK));
        assert!(content.response.as_ref().unwrap().contains("[pii:email:"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_on_keeps_the_address_and_secrets_off_still_hides_the_key() {
    let env = env(
        "insp-pii-on",
        "{ prompts: true, responses: true, pii: true }",
    )
    .await;
    let prompt = format!("{MARK} mail {ADDR} key {SECRET_KEY} [[leak]] [[reply:30]]");
    let r = env
        .chat(None, chat_body("gpt-4o-mini", &prompt, false, None))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    stream(&env, None, &prompt).await;
    let raw = raw(&env);
    assert!(raw.matches(ADDR).count() >= 4, "kept in clear, as allowed");
    assert!(!raw.contains("[pii:"));
    assert!(!raw.contains(SECRET_KEY));
    assert_eq!(placeholders(&raw, "[secret:openai_key:").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_off_stores_no_prompt_at_all() {
    let env = env(
        "insp-prompts-off",
        "{ prompts: false, responses: true, pii: true }",
    )
    .await;
    let prompt = format!("{MARK} mail {ADDR} [[reply:30]]");
    let r = env
        .chat(None, chat_body("gpt-4o-mini", &prompt, false, None))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let raw = raw(&env);
    assert!(!raw.contains(MARK), "no prompt in the spool");
    assert!(!raw.contains(ADDR));
    let c = calls(&env);
    assert_eq!(c.len(), 1);
    let content = c[0].content.as_ref().expect("the response is kept");
    assert!(content.prompt.is_none());
    assert!(content.response.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_before_the_upstream_stores_nothing() {
    // Everything allowed in clear, and the PII detector at `stop`: a refusal still stores no
    // content.
    let env = start_with(
        "insp-refused",
        |b| {
            b.replacen(
                "  max_tokens: 1024                # clamp\n",
                "  max_tokens: 1024\n  inspection: { prompts: true, responses: true, pii: true, secrets: true }\n",
                1,
            )
        },
        |c| c,
    )
    .await;
    let prompt = format!("{MARK} mail {ADDR}");
    // The policy's own detector refuses it.
    let r = env
        .chat(None, chat_body("gpt-4o-mini", &prompt, false, None))
        .await;
    env.assert_refused(&r, 403, "pii_detected").await;
    // No policy allows this model.
    let r = env
        .chat(None, chat_body("gpt-4o", &prompt, false, None))
        .await;
    env.assert_refused(&r, 403, "no_allow_policy").await;
    // Degraded: a new run is refused.
    assert_eq!(env.set_mode("degraded").await.status, 200);
    let r = env
        .chat(
            Some("run-new"),
            chat_body("gpt-4o-mini", &prompt, false, None),
        )
        .await;
    env.assert_refused(&r, 503, "governance_degraded").await;
    assert_eq!(env.llm.request_count(), 0, "nothing reached the upstream");
    let c = calls(&env);
    assert_eq!(c.len(), 3);
    assert!(c
        .iter()
        .all(|r| r.outcome == Some(Outcome::Refused) && r.content.is_none()));
    let raw = raw(&env);
    assert!(
        !raw.contains(MARK) && !raw.contains(ADDR),
        "no content at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_degraded_and_bypass_calls_are_redacted_too() {
    let env = start_with(
        "insp-modes",
        |b| {
            b.replacen(
                "  max_tokens: 1024                # clamp\n  detectors: { pii: { on_match: stop } }\n",
                "  max_tokens: 1024\n  detectors: { pii: { on_match: warn } }\n  inspection: { prompts: true, responses: true, pii: false }\n",
                1,
            )
            .replace("max: 2000, near: [0.8]", "max: 40, near: [0.5]")
        },
        |c| c,
    )
    .await;
    // Cut mid-stream at the run's budget (40 output tokens), after the address went out.
    let events = stream(
        &env,
        Some("run-cut"),
        &format!("{MARK} mail {ADDR} [[leak]] [[reply:80]] [[overrun]]"),
    )
    .await;
    assert!(
        stream_text(&events).contains(ADDR),
        "the address went out first"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "budget_exceeded", "{events:?}");
    // Degraded: a running run goes on.
    let r = env
        .chat(
            Some("run-old"),
            chat_body("gpt-4o-mini", "hi", false, Some(3)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.set_mode("degraded").await.status, 200);
    let prompt = format!("{MARK} mail {ADDR} [[leak]] [[reply:25]]");
    let r = env
        .chat(
            Some("run-old"),
            chat_body("gpt-4o-mini", &prompt, false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Bypass.
    assert_eq!(env.set_mode("bypass").await.status, 200);
    let r = env
        .chat(
            Some("run-by"),
            chat_body("gpt-4o-mini", &prompt, false, None),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let c = calls(&env);
    let outcomes: Vec<_> = c.iter().map(|r| r.outcome).collect();
    assert!(outcomes.contains(&Some(Outcome::Cut)), "{outcomes:?}");
    assert!(outcomes.contains(&Some(Outcome::Bypassed)), "{outcomes:?}");
    assert!(c.iter().any(|r| r.mode == warden::decide::Mode::Degraded));
    let raw = raw(&env);
    assert!(
        !raw.contains(ADDR) && !raw.contains("jane.doe"),
        "no address"
    );
    let tags = placeholders(&raw, "[pii:email:");
    // Three prompts and three replies (the cut one too: what the agent received).
    assert_eq!(tags.len(), 6, "{tags:?}");
    assert!(tags.iter().all(|t| *t == tags[0]), "{tags:?}");
    let marked: Vec<_> = c
        .iter()
        .filter(|r| {
            r.content
                .as_ref()
                .and_then(|c| c.prompt.as_ref())
                .is_some_and(|p| p.contains(MARK))
        })
        .collect();
    assert_eq!(
        marked.len(),
        3,
        "the cut, degraded and bypassed calls keep their prompts"
    );
    for rec in marked {
        let content = rec.content.as_ref().unwrap();
        assert!(
            content.prompt.as_ref().unwrap().contains("[pii:email:"),
            "{rec:?}"
        );
        assert!(
            content.response.as_ref().unwrap().contains("[pii:email:"),
            "{rec:?}"
        );
    }
}
