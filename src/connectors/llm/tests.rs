use super::tokens::LONG_TEXT;
use super::*;

const CONTRACT: &str = include_str!("../../../examples/contract/bundle.yaml");
const BODY: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;

#[test]
fn long_texts_count_the_same_on_and_off_the_worker() {
    let text = "the quick brown fox jumps over the lazy dog ".repeat(2_000);
    assert!(text.len() > LONG_TEXT);
    let plain = count_tokens("gpt-4o-mini", &text);
    assert_eq!(
        plain, 18_001,
        "nine o200k tokens a sentence, and the trailing space"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let on_worker = rt.block_on(async { count_tokens("gpt-4o-mini", &text) });
    assert_eq!(on_worker, plain);
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(
        current.block_on(async { count_tokens("gpt-4o-mini", &text) }),
        plain
    );
}

#[test]
fn prompts_are_tokenized_before_the_call_only_when_a_limit_needs_it() {
    let snap = crate::policy::compile_str("b.yaml", CONTRACT).unwrap();
    let chat = parse_chat(BODY, &snap, "acme", None).unwrap();
    assert_eq!(
        chat.prompt_tokens, None,
        "p100-llm limits output tokens only"
    );
    assert!(chat.prompt_count() > 2);
    let metered = CONTRACT.replace("metric: output_tokens", "metric: total_tokens");
    let snap = crate::policy::compile_str("b.yaml", &metered).unwrap();
    let chat = parse_chat(BODY, &snap, "acme", None).unwrap();
    assert_eq!(chat.prompt_tokens, Some(chat.prompt_count()));
    assert_eq!(chat.connector.as_deref(), Some("openai"));
}

#[test]
fn output_is_every_string_of_a_delta_but_its_structure() {
    let delta = serde_json::json!({
        "role": "assistant", "content": "a", "refusal": "b", "x_new": ["c"],
        "tool_calls": [{ "index": 0, "id": "call_1", "type": "function",
                         "function": { "name": "d", "arguments": "e" } }],
    });
    let mut seen = Vec::new();
    output_strings(&delta, &mut |s| seen.push(s));
    assert_eq!(seen, ["a", "b", "e", "d", "c"], "in key order");
}

#[test]
fn fields_belong_to_their_choice() {
    assert_eq!(
        stream::choice_of("/choices/#2/delta/content"),
        Some("/choices/#2")
    );
    assert_eq!(stream::choice_of("/choices/*"), Some("/choices/*"));
    assert_eq!(stream::choice_of("/id"), None);
    assert_eq!(stream::choice_of("/x/choices/#0/a"), None);
}

#[test]
fn request_pii_is_read_everywhere_and_across_parts() {
    let snap = crate::policy::compile_str("b.yaml", CONTRACT).unwrap();
    let kinds = |body: &str| {
        parse_chat(body.as_bytes(), &snap, "acme", None)
            .unwrap()
            .pii_kinds()
    };
    assert_eq!(kinds(std::str::from_utf8(BODY).unwrap()), 0);
    let split = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":[
        {"type":"text","text":"jane.doe@exa"},{"type":"text","text":"mple.com"}]}]}"#;
    assert_ne!(kinds(split), 0);
    let named = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","name":"jane.doe@example.com","content":"x"}]}"#;
    assert_ne!(kinds(named), 0);
}

#[test]
fn bad_chat_requests_are_invalid_params() {
    let snap = crate::policy::compile_str("b.yaml", CONTRACT).unwrap();
    for body in [
        &br#"[]"#[..],
        br#"{"messages":[{"role":"user","content":"x"}]}"#,
        br#"{"model":"gpt-4o-mini","messages":"x"}"#,
        br#"{"model":"gpt-4o-mini","messages":[]}"#,
        br#"{"model":"gpt-4o-mini","messages":[{"content":"x"}]}"#,
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":5}]}"#,
        br#"{"model":"gpt-4o-mini","stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
        br#"{"model":"gpt-4o-mini","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}"#,
    ] {
        let e = parse_chat(body, &snap, "acme", None).unwrap_err();
        assert_eq!(
            e.code,
            Code::InvalidParams,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let e = parse_chat(b"{oops", &snap, "acme", None).unwrap_err();
    assert_eq!(e.code, Code::BadRequest);
    let e = parse_chat(BODY, &snap, "acme", Some("weather")).unwrap_err();
    assert_eq!(e.code, Code::UnknownConnector);
    let e = parse_chat(BODY, &snap, "acme", Some("nope")).unwrap_err();
    assert_eq!(e.code, Code::UnknownConnector);
}
