//! The LLM channel's detectors read every string, not a list of fields: PII anywhere in a
//! request is refused before the upstream, PII anywhere in a reply (plain or streamed) never
//! reaches the agent, streamed tool calls pass intact, and every choice is counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use serde_json::{json, Value};
use warden::codes::Code;
use warden::evidence::Outcome;

const ADDRESS: &str = "jane.doe@example.com";

/// The reply fields `[[leak:FIELD]]` of the mock can put the address into.
const FIELDS: [&str; 7] = [
    "content", "tool", "refusal", "audio", "extra", "logprobs", "choice",
];

fn body(content: &str, stream: bool, extra: Value) -> String {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": content }],
        "stream": stream,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

async fn stream(env: &Env, run: Option<&str>, body: String) -> Vec<String> {
    let mut b = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json");
    if let Some(r) = run {
        b = b.header("x-warden-run-id", r);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    stream_events(resp).await
}

fn no_leak(what: &str, received: &str) {
    for part in ["jane.doe", "@exa", "mple.com", "example.com"] {
        assert!(
            !received.contains(part),
            "{what}: `{part}` reached the agent: {received}"
        );
    }
}

/// The last call record: cut for PII.
fn cut_for_pii(env: &Env, what: &str) {
    let ev = env.evidence();
    let rec = ev
        .iter()
        .rev()
        .find(|r| r.kind == warden::evidence::Kind::Call)
        .expect("a record");
    assert_eq!(rec.outcome, Some(Outcome::Cut), "{what}: {rec:?}");
    assert_eq!(
        rec.cut.as_ref().map(|c| c.code),
        Some(Code::PiiDetected),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_in_any_field_of_a_plain_reply_is_withheld() {
    let env = start("fields-plain").await;
    for (i, field) in FIELDS.iter().enumerate() {
        let r = env
            .chat(
                None,
                body(&format!("x [[leak:{field}]] [[reply:3]]"), false, json!({})),
            )
            .await;
        env.assert_refused_for(field, &r, 403, "pii_detected").await;
        no_leak(field, &r.text());
        cut_for_pii(&env, field);
        assert_eq!(env.llm.request_count(), i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_in_any_field_of_a_stream_never_reaches_the_agent() {
    let env = start("fields-stream").await;
    for field in FIELDS {
        let events = stream(
            &env,
            None,
            body(&format!("x [[leak:{field}]] [[reply:3]]"), true, json!({})),
        )
        .await;
        let all = events.join("\n");
        no_leak(field, &all);
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "pii_detected", "{field}: {all}");
        assert!(!events.iter().any(|e| e == "[DONE]"), "{field}");
        cut_for_pii(&env, field);
        if matches!(field, "refusal" | "audio" | "extra" | "logprobs") {
            // The words came before the leaking field: they passed.
            assert_eq!(stream_text(&events), "the of and", "{field}: {all}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_split_over_events_of_one_field_is_cut_before_its_first_piece() {
    // `write to `, `jane.doe`, `@exa`, `mple.com` arrive as four events of `x_mock_note`.
    let env = start("fields-split").await;
    let events = stream(
        &env,
        None,
        body("x [[leak:extra]] [[reply:30]]", true, json!({})),
    )
    .await;
    let all = events.join("\n");
    no_leak("extra", &all);
    let note: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["x_mock_note"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        note, "write to ",
        "what is safe passes, no piece of the address: {all}"
    );
    assert_eq!(stream_text(&events).split_whitespace().count(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_tool_call_arrives_intact() {
    let env = start("tool-stream").await;
    let events = stream(
        &env,
        None,
        body("weather? [[tool:get_weather]] [[reply:5]]", true, json!({})),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    let (mut name, mut args) = (String::new(), String::new());
    let mut chunks = 0;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let call = &v["choices"][0]["delta"]["tool_calls"][0];
        if let Some(n) = call["function"]["name"].as_str() {
            name.push_str(n);
        }
        if let Some(a) = call["function"]["arguments"].as_str() {
            args.push_str(a);
            chunks += 1;
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(args, r#"{"text":"the of and to in"}"#);
    assert_eq!(
        chunks, 8,
        "the name event and seven argument fragments, none dropped"
    );
    let finish: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    // Plain, too.
    let r = env
        .chat(
            None,
            body(
                "weather? [[tool:get_weather]] [[reply:5]]",
                false,
                json!({}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"text":"the of and to in"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_choice_is_counted_when_the_upstream_reports_no_usage() {
    let env = start("count-choices").await;
    let r = env
        .chat(
            None,
            body("x [[reply:5]] [[nousage]]", false, json!({ "n": 3 })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("usage").is_none());
    assert_eq!(
        env.evidence().last().unwrap().output_tokens,
        15,
        "5 words × 3 choices"
    );

    // Streamed: every choice arrives whole, with its own index, and all are counted.
    let events = stream(
        &env,
        None,
        body("x [[reply:4]] [[nousage]]", true, json!({ "n": 2 })),
    )
    .await;
    let mut texts = [String::new(), String::new()];
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str() {
                texts[c["index"].as_u64().unwrap() as usize].push_str(t);
            }
        }
    }
    assert_eq!(texts, ["the of and to", "the of and to"]);
    assert_eq!(env.evidence().last().unwrap().output_tokens, 8);

    // A streamed tool call: its name and arguments are output.
    let events = stream(
        &env,
        None,
        body(
            "x [[tool:get_weather]] [[reply:3]] [[nousage]]",
            true,
            json!({}),
        ),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let count = |s: &str| warden::connectors::llm::count_tokens("gpt-4o-mini", s);
    let expected = count("get_weather")
        + [r#"{"text":""#, "the", " of", " and", r#""}"#]
            .iter()
            .map(|p| count(p))
            .sum::<u64>();
    assert_eq!(env.evidence().last().unwrap().output_tokens, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tool_call_arguments_count_against_the_budget() {
    let env = start_with(
        "tool-budget",
        |b| b.replace("max: 2000, near: [0.8]", "max: 10, near: [0.5]"),
        |c| c,
    )
    .await;
    let events = stream(
        &env,
        Some("run-tool"),
        body("x [[tool:get_weather]] [[reply:30]]", true, json!({})),
    )
    .await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "budget_exceeded", "{events:?}");
    let ev = env.evidence();
    let cut = ev
        .iter()
        .find(|r| r.cut.is_some())
        .expect("the cut is recorded");
    assert!(cut.cut.as_ref().unwrap().after_tokens <= 10);
    let r = env
        .chat(Some("run-tool"), body("again", false, json!({})))
        .await;
    env.assert_refused(&r, 403, "run_stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_anywhere_in_the_request_is_refused_before_the_upstream() {
    let env = start("request-fields").await;
    let user = |extra: Value| {
        let mut m = json!({ "role": "user", "content": "hello" });
        for (k, x) in extra.as_object().unwrap() {
            m[k] = x.clone();
        }
        m
    };
    let tool = |description: &str, schema: Value| {
        json!([{ "type": "function", "function": {
            "name": "lookup", "description": description, "parameters": schema,
        } }])
    };
    let clean_schema = json!({ "type": "object", "properties": { "q": { "type": "string" } } });
    let cases: Vec<(&str, Value)> = vec![
        (
            "message name",
            json!({ "messages": [user(json!({ "name": ADDRESS }))] }),
        ),
        (
            "earlier tool-call arguments",
            json!({ "messages": [
                user(json!({})),
                { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function",
                  "function": { "name": "lookup", "arguments": format!("{{\"to\":\"{ADDRESS}\"}}") } }] },
                { "role": "tool", "tool_call_id": "c1", "content": "ok" },
            ] }),
        ),
        (
            "tool description",
            json!({ "tools": tool(&format!("mails {ADDRESS}"), clean_schema.clone()) }),
        ),
        (
            "tool schema",
            json!({ "tools": tool("lookup", json!({ "type": "object", "properties": {
                "to": { "type": "string", "default": ADDRESS } } })) }),
        ),
        ("user", json!({ "user": ADDRESS })),
        ("metadata", json!({ "metadata": { "owner": ADDRESS } })),
        (
            "image url",
            json!({ "messages": [user(json!({ "content": [
                { "type": "text", "text": "look" },
                { "type": "image_url", "image_url": { "url": format!("https://img.test/{ADDRESS}.png") } },
            ] }))] }),
        ),
        (
            "unknown part type",
            json!({ "messages": [user(json!({ "content": [{ "type": "input_note", "note": ADDRESS }] }))] }),
        ),
        ("unknown field", json!({ "x_extra": { "deep": [ADDRESS] } })),
        ("object key", json!({ "metadata": { ADDRESS: "owner" } })),
        (
            "text split over parts",
            json!({ "messages": [user(json!({ "content": [
                { "type": "text", "text": "mail jane.doe@exa" },
                { "type": "text", "text": "mple.com please" },
            ] }))] }),
        ),
    ];
    for (what, extra) in &cases {
        let r = env.chat(None, body("hello", false, extra.clone())).await;
        env.assert_refused_for(what, &r, 403, "pii_detected").await;
        assert_eq!(env.llm.request_count(), 0, "{what} reached the upstream");
    }
    let ev = env.evidence();
    assert_eq!(ev.len(), cases.len(), "every refusal has its record");
    assert!(ev.iter().all(|r| r.outcome == Some(Outcome::Refused)));

    // The neighbours: the same shapes without PII pass, and parts split elsewhere stay apart.
    let r = env
        .chat(
            None,
            body(
                "hello",
                false,
                json!({
                    "tools": tool("looks a word up", clean_schema),
                    "user": "user-42",
                    "metadata": { "owner": "support" },
                    "messages": [user(json!({ "name": "jane", "content": [
                        { "type": "text", "text": "mail jane.doe at" },
                        { "type": "text", "text": " example dot com" },
                        { "type": "image_url", "image_url": { "url": "https://img.test/cat.png" } },
                    ] }))],
                }),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.llm.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stream_holds_back_is_bounded() {
    // Events wait for the detectors; past `limits.max_response_bytes` of them the stream is cut
    // rather than buffered without limit.
    let env = start_with(
        "held-bound",
        |b| b,
        |c| c + "limits: { max_response_bytes: 300 }\n",
    )
    .await;
    let events = stream(&env, None, body("x [[reply:20]]", true, json!({}))).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "body_too_large", "{events:?}");
    let ev = env.evidence();
    assert_eq!(ev[0].outcome, Some(Outcome::Cut));
    assert_eq!(ev[0].cut.as_ref().map(|c| c.code), Some(Code::BodyTooLarge));
}
