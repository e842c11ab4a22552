//! Behaviour of the mock upstreams over real loopback sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::llm::{LEAK_ADDRESS, LEAK_PIECES, WORDS};
use super::*;

// === helpers ===

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    builder.body(Full::new(body)).unwrap()
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// POSTs a chat completion request; returns the status and the JSON body.
async fn chat(mock: &MockHandle, body: Value) -> (StatusCode, Value) {
    chat_with(mock, &[], body).await
}

async fn chat_with(
    mock: &MockHandle,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let (status, _, body) =
        send(&client(), request(Method::POST, &url, headers, Some(&body))).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// A request with one user message and the given extra fields.
fn user(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": text }],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

fn content(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"].as_str().unwrap()
}

fn words(reply: &Value) -> Vec<&str> {
    content(reply).split(' ').collect()
}

/// One SSE event's data, and when its frame arrived.
struct Event {
    data: String,
    at: Instant,
}

/// Streams a chat completion; returns the events in order, with arrival times.
async fn stream(mock: &MockHandle, body: Value) -> Vec<Event> {
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let resp = client()
        .request(request(Method::POST, &url, &[], Some(&body)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.push_str(std::str::from_utf8(data).unwrap());
        let at = Instant::now();
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data = event.trim_end().strip_prefix("data: ").unwrap().to_string();
            events.push(Event { data, at });
        }
    }
    assert!(
        buf.is_empty(),
        "trailing bytes after the last event: {buf:?}"
    );
    events
}

fn json_events(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

/// The `delta.content` of every chunk that has one, the role chunk's empty string excluded.
fn streamed_pieces(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"].is_null())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .map(str::to_string)
        .collect()
}

fn o200k(text: &str) -> usize {
    tiktoken_rs::o200k_base()
        .unwrap()
        .encode_ordinary(text)
        .len()
}

// === the LLM mock: vocabulary ===

#[test]
fn every_word_is_one_o200k_token_with_and_without_a_leading_space() {
    let bpe = tiktoken_rs::o200k_base().unwrap();
    for word in WORDS {
        assert_eq!(bpe.encode_ordinary(word).len(), 1, "{word:?}");
        assert_eq!(
            bpe.encode_ordinary(&format!(" {word}")).len(),
            1,
            "{word:?} with a space"
        );
    }
}

#[tokio::test]
async fn a_reply_of_n_words_is_n_tokens() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (status, reply) = chat(&mock, user("[[reply:200]]", json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(words(&reply).len(), 200);
    assert_eq!(o200k(content(&reply)), 200);
    assert_eq!(reply["usage"]["completion_tokens"], 200);
}

// === the LLM mock: non-streamed ===

#[tokio::test]
async fn default_reply_is_16_words_and_stops() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let prompt = "Hello there, how is the weather today?";
    let (status, reply) = chat(&mock, user(prompt, json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["created"], 0);
    assert_eq!(reply["model"], "gpt-4o-mini");
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    let expected: Vec<&str> = WORDS[..16].to_vec();
    assert_eq!(words(&reply), expected);
    let prompt_tokens = o200k(prompt) as u64;
    assert_eq!(reply["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(reply["usage"]["completion_tokens"], 16);
    assert_eq!(reply["usage"]["total_tokens"], prompt_tokens + 16);
}

#[tokio::test]
async fn max_tokens_sets_the_length_and_finish_reason() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, reply) = chat(&mock, user("hi", json!({ "max_tokens": 5 }))).await;
    assert_eq!(words(&reply).len(), 5);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");

    let (_, reply) = chat(&mock, user("hi", json!({ "max_completion_tokens": 7 }))).await;
    assert_eq!(words(&reply).len(), 7);
    assert_eq!(reply["usage"]["completion_tokens"], 7);

    // Longer than the vocabulary: the words wrap around.
    let (_, reply) = chat(&mock, user("hi", json!({ "max_tokens": 70 }))).await;
    assert_eq!(words(&reply)[WORDS.len()], WORDS[0]);
}

#[tokio::test]
async fn reply_marker_sets_the_length_capped_by_max_tokens() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, reply) = chat(&mock, user("say little [[reply:3]]", json!({}))).await;
    assert_eq!(content(&reply), "the of and");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    let (_, reply) = chat(&mock, user("[[reply:3]]", json!({ "max_tokens": 10 }))).await;
    assert_eq!(words(&reply).len(), 3);
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    let (_, reply) = chat(&mock, user("[[reply:50]]", json!({ "max_tokens": 10 }))).await;
    assert_eq!(words(&reply).len(), 10);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn only_the_last_user_message_steers() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            { "role": "system", "content": "[[reply:2]]" },
            { "role": "user", "content": "[[reply:3]]" },
            { "role": "assistant", "content": "the of and" },
            { "role": "user", "content": [{ "type": "text", "text": "again [[reply:4]]" }] },
            { "role": "assistant", "content": null, "tool_calls": [] },
        ],
    });
    let (status, reply) = chat(&mock, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["model"], "gpt-4o");
    assert_eq!(words(&reply).len(), 4);
    let prompt = "[[reply:2]][[reply:3]]the of andagain [[reply:4]]";
    assert_eq!(reply["usage"]["prompt_tokens"], o200k(prompt) as u64);
}

#[tokio::test]
async fn leak_puts_the_address_after_word_20() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, reply) = chat(&mock, user("[[reply:30]] [[leak]]", json!({}))).await;
    let got = words(&reply);
    assert_eq!(got.len(), 31);
    assert_eq!(got[20], LEAK_ADDRESS);
    assert_eq!(got[..20], WORDS[..20]);
    assert_eq!(got[21], WORDS[20]);
    // The address is counted with tiktoken: " jane.doe@example.com" is 5 o200k tokens.
    let leaked = o200k(&format!(" {LEAK_ADDRESS}")) as u64;
    assert_eq!(reply["usage"]["completion_tokens"], 30 + leaked);
}

#[tokio::test]
async fn leak_in_a_short_reply_goes_at_the_end() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, reply) = chat(&mock, user("[[leak]]", json!({}))).await;
    let got = words(&reply);
    assert_eq!(got.len(), 17);
    assert_eq!(got[16], LEAK_ADDRESS);
}

#[tokio::test]
async fn fail_answers_with_the_status_and_an_openai_error() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (status, reply) = chat(&mock, user("[[fail:503]] [[reply:3]]", json!({}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply["error"]["type"], "server_error");
    assert!(reply["error"]["message"].as_str().unwrap().contains("503"));

    let (status, reply) = chat(&mock, user("[[fail:429]]", json!({ "stream": true }))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply["error"]["code"], "rate_limit_exceeded");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn slow_delays_a_non_streamed_answer() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let start = Instant::now();
    let (status, _) = chat(&mock, user("[[slow:60]]", json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn bad_input_is_400_in_the_openai_shape() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let raw = Request::post(&url)
        .body(Full::new(Bytes::from_static(b"{not json")))
        .unwrap();
    let (status, _, body) = send(&client(), raw).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let bad = [
        json!({ "model": "gpt-4o-mini" }),
        json!({ "model": "gpt-4o-mini", "messages": [] }),
        json!({ "model": "", "messages": [{ "role": "user", "content": "hi" }] }),
        json!({ "model": "gpt-4o-mini", "messages": "hi" }),
        user("hi", json!({ "max_tokens": 0 })),
        user("hi", json!({ "max_tokens": -1 })),
        user("[[reply:many]]", json!({})),
        user("[[slow:]]", json!({})),
        user("[[fail:200]]", json!({})),
        user("[[fail:999]]", json!({})),
    ];
    for body in bad {
        let (status, error) = chat(&mock, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error["error"]["message"].is_string(), "{body}");
    }
    // Unknown markers are plain text.
    let (status, _) = chat(&mock, user("see [[Main Page]]", json!({}))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_404() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let c = client();
    for (method, path) in [
        (Method::GET, "/v1/completions"),
        (Method::POST, "/v1/embeddings"),
        (Method::GET, "/v1/chat/completions"),
        (Method::POST, "/v1/models"),
        (Method::GET, "/"),
    ] {
        let url = format!("{}{path}", mock.base_url());
        let (status, _, body) = send(&c, request(method.clone(), &url, &[], None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"]["code"], "unknown_url");
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn models_lists_the_two_models() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let url = format!("{}/v1/models", mock.base_url());
    let (status, headers, body) = send(&client(), request(Method::GET, &url, &[], None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o"]);
    // Model listings are not chat requests.
    assert_eq!(mock.request_count(), 0);
    assert!(mock.last_request().is_none());
}

#[tokio::test]
async fn records_the_last_chat_request_and_counts_them() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    assert_eq!(mock.request_count(), 0);
    let auth = [("authorization", "Bearer sk-injected")];
    chat_with(&mock, &auth, user("one", json!({ "max_tokens": 1024 }))).await;
    chat_with(&mock, &[], user("two", json!({ "max_tokens": 12 }))).await;
    assert_eq!(mock.request_count(), 2);
    let last = mock.last_request().unwrap();
    assert_eq!(last.method, Method::POST);
    assert_eq!(last.uri.path(), "/v1/chat/completions");
    assert_eq!(last.header("authorization"), None);
    assert_eq!(last.json().unwrap()["max_tokens"], 12);

    chat_with(&mock, &auth, user("three", json!({}))).await;
    let last = mock.recorder().last_request().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer sk-injected"));
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn ids_are_deterministic_per_request() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, first) = chat(&mock, user("hi", json!({}))).await;
    let (_, second) = chat(&mock, user("hi", json!({}))).await;
    assert_eq!(first["id"], "chatcmpl-mock-000001");
    assert_eq!(second["id"], "chatcmpl-mock-000002");
    assert_eq!(first["choices"], second["choices"]);
}

// === the LLM mock: streamed ===

#[tokio::test]
async fn stream_sends_role_then_one_event_per_token_then_finish_then_done() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let events = stream(&mock, user("[[reply:3]]", json!({ "stream": true }))).await;
    assert_eq!(events.len(), 6, "role, 3 tokens, finish, [DONE]");
    assert_eq!(events[5].data, "[DONE]");
    let chunks = json_events(&events);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o-mini");
        assert!(c.get("usage").is_none(), "no usage without include_usage");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    assert!(chunks[0]["choices"][0]["finish_reason"].is_null());
    assert_eq!(streamed_pieces(&chunks), ["the", " of", " and"]);
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");

    // The same reply as the non-streamed answer.
    let (_, reply) = chat(&mock, user("[[reply:3]]", json!({}))).await;
    assert_eq!(streamed_pieces(&chunks).concat(), content(&reply));
}

#[tokio::test]
async fn stream_usage_chunk_only_with_include_usage() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let body = user(
        "hello",
        json!({ "stream": true, "max_tokens": 4, "stream_options": { "include_usage": true } }),
    );
    let events = stream(&mock, body).await;
    assert_eq!(events.len(), 8, "role, 4 tokens, finish, usage, [DONE]");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks = json_events(&events);
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    for c in &chunks[..6] {
        assert!(c["usage"].is_null());
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    let usage_chunk = &chunks[6];
    assert_eq!(usage_chunk["choices"], json!([]));
    let prompt = o200k("hello") as u64;
    assert_eq!(
        usage_chunk["usage"],
        json!({ "prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4 })
    );

    let body = user(
        "hello",
        json!({ "stream": true, "max_tokens": 4, "stream_options": { "include_usage": false } }),
    );
    let events = stream(&mock, body).await;
    assert_eq!(events.len(), 7);
    assert!(json_events(&events)
        .iter()
        .all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn streamed_leak_is_one_event_after_token_20() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let body = user(
        "[[leak]] please",
        json!({ "stream": true, "max_tokens": 25, "stream_options": { "include_usage": true } }),
    );
    let chunks = json_events(&stream(&mock, body).await);
    let pieces = streamed_pieces(&chunks);
    assert_eq!(pieces.len(), 26);
    assert_eq!(pieces[20], format!(" {LEAK_ADDRESS}"));
    assert_eq!(pieces[19], format!(" {}", WORDS[19]));
    assert_eq!(pieces[21], format!(" {}", WORDS[20]));
    let leaked = o200k(&pieces[20]) as u64;
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 25 + leaked);
}

#[tokio::test]
async fn slow_spaces_the_streamed_chunks() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let start = Instant::now();
    let events = stream(
        &mock,
        user("[[slow:50]] [[reply:3]]", json!({ "stream": true })),
    )
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    // Tokens arrive one by one, not in one burst at the end.
    let tokens = &events[1..4];
    assert!(tokens[2].at.duration_since(tokens[0].at) >= Duration::from_millis(90));
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn serves_h2c() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let h2: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let url = format!("{}/v1/models", mock.base_url());
    let resp = h2
        .request(request(Method::GET, &url, &[], None))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);

    let url = format!("{}/v1/chat/completions", mock.base_url());
    let body = user("[[reply:2]]", json!({ "stream": true }));
    let resp = h2
        .request(request(Method::POST, &url, &[], Some(&body)))
        .await
        .unwrap();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(text.ends_with(b"data: [DONE]\n\n"));
}

#[tokio::test]
async fn serve_runs_on_a_given_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(llm::serve(listener));
    let url = format!("http://{addr}/v1/models");
    let (status, _, _) = send(&client(), request(Method::GET, &url, &[], None)).await;
    assert_eq!(status, StatusCode::OK);
    task.abort();
}

#[tokio::test]
async fn dropping_the_handle_stops_the_mock() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let addr = mock.addr;
    drop(mock);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === the weather mock ===

async fn forecast(mock: &MockHandle, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let url = format!("{}{path}", mock.base_url());
    let (status, _, body) = send(&client(), request(Method::GET, &url, headers, None)).await;
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn weather_forecast_without_authorization() {
    let mock = spawn_weather("127.0.0.1:0").await.unwrap();
    let (status, body) = forecast(&mock, "/v1/forecast/paris", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["city"], "paris");
    assert_eq!(body["authorization_header"], false);
    let days = body["forecast"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    for day in days {
        assert!(day["high_c"].as_i64().unwrap() > day["low_c"].as_i64().unwrap());
        assert!(day["summary"].is_string());
    }
    // Deterministic: the same city, the same forecast.
    let (_, again) = forecast(&mock, "/v1/forecast/paris?days=3", &[]).await;
    assert_eq!(again, body);
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn weather_echoes_that_authorization_arrived_but_not_its_value() {
    let mock = spawn_weather("127.0.0.1:0").await.unwrap();
    let secret = "Bearer weather-secret-123";
    let url = format!("{}/v1/forecast/new%20york", mock.base_url());
    let req = request(Method::GET, &url, &[("authorization", secret)], None);
    let (status, _, raw) = send(&client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!String::from_utf8_lossy(&raw).contains("weather-secret"));
    let body: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(body["city"], "new york");
    assert_eq!(body["authorization_header"], true);
    assert_eq!(
        mock.last_request().unwrap().header("authorization"),
        Some(secret)
    );
}

#[tokio::test]
async fn weather_other_paths_and_methods_are_404_and_recorded() {
    let mock = spawn_weather("127.0.0.1:0").await.unwrap();
    let c = client();
    for (method, path) in [
        (Method::POST, "/v1/forecast/paris"),
        (Method::DELETE, "/v1/forecast/paris"),
        (Method::GET, "/v1/forecast/"),
        (Method::GET, "/v1/forecast/paris/extra"),
        (Method::GET, "/v1/alerts"),
        (Method::GET, "/"),
    ] {
        let url = format!("{}{path}", mock.base_url());
        let (status, headers, body) = send(&c, request(method.clone(), &url, &[], None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(headers["content-type"], "application/json");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"]["code"], "not_found");
    }
    assert_eq!(mock.request_count(), 6);
    assert_eq!(mock.last_request().unwrap().uri.path(), "/");
}

// === tool calls, leaks into other fields, n, no usage ===

#[tokio::test]
async fn tool_marker_makes_a_tool_call_streamed_without_role() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, reply) = chat(&mock, user("[[tool:get_weather]] [[reply:3]]", json!({}))).await;
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"text":"the of and"}"#);
    assert!(reply["choices"][0]["message"]["content"].is_null());
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
    let events = json_events(
        &stream(
            &mock,
            user("[[tool:get_weather]] [[reply:3]]", json!({"stream": true})),
        )
        .await,
    );
    let first = &events[0]["choices"][0]["delta"];
    assert_eq!(first["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(first["tool_calls"][0]["function"]["arguments"], "");
    let args: Vec<&str> = events[1..]
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, [r#"{"text":""#, "the", " of", " and", r#""}"#]);
    assert!(events[1..]
        .iter()
        .all(|e| e["choices"][0]["delta"]["role"].is_null()));
}

#[tokio::test]
async fn leak_field_puts_the_address_where_asked() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let ask = |f: &str| user(&format!("[[leak:{f}]] [[reply:3]]"), json!({}));
    let (_, r) = chat(&mock, ask("refusal")).await;
    assert_eq!(
        r["choices"][0]["message"]["refusal"],
        "write to jane.doe@example.com"
    );
    assert_eq!(content(&r), "the of and");
    let (_, r) = chat(&mock, ask("audio")).await;
    assert_eq!(
        r["choices"][0]["message"]["audio"]["transcript"],
        "write to jane.doe@example.com"
    );
    let (_, r) = chat(&mock, ask("extra")).await;
    assert_eq!(
        r["choices"][0]["message"]["x_mock_note"],
        "write to jane.doe@example.com"
    );
    let (_, r) = chat(&mock, ask("logprobs")).await;
    assert_eq!(content(&r), "the of and");
    assert_eq!(
        r["choices"][0]["logprobs"]["content"][4]["token"],
        "jane.doe"
    );
    let (_, r) = chat(&mock, ask("tool")).await;
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    assert!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap()
            .contains(LEAK_ADDRESS)
    );
    let (_, r) = chat(&mock, ask("choice")).await;
    assert_eq!(content(&r), "the of and");
    assert_eq!(
        r["choices"][1]["message"]["content"],
        format!("the of and {LEAK_ADDRESS}")
    );
    let (status, _) = chat(&mock, ask("nowhere")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Streamed, the side field comes in four pieces after the words.
    let events = json_events(
        &stream(
            &mock,
            user("[[leak:extra]] [[reply:2]]", json!({"stream": true})),
        )
        .await,
    );
    let notes: Vec<&str> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["x_mock_note"].as_str())
        .collect();
    assert_eq!(notes, LEAK_PIECES);
}

#[tokio::test]
async fn n_choices_and_nousage() {
    let mock = spawn_llm("127.0.0.1:0").await.unwrap();
    let (_, r) = chat(&mock, user("[[reply:4]]", json!({"n": 3}))).await;
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert!(choices
        .iter()
        .enumerate()
        .all(|(i, c)| c["index"] == i && c["message"]["content"] == "the of and to"));
    assert_eq!(r["usage"]["completion_tokens"], 12);
    let (_, r) = chat(&mock, user("[[reply:4]] [[nousage]]", json!({}))).await;
    assert!(r.get("usage").is_none());
    let (status, _) = chat(&mock, user("hi", json!({"n": 0}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = user(
        "[[reply:2]]",
        json!({"stream": true, "n": 2, "stream_options": {"include_usage": true}}),
    );
    let events = json_events(&stream(&mock, body).await);
    let indexes: Vec<u64> = events
        .iter()
        .filter_map(|e| e["choices"][0]["index"].as_u64())
        .collect();
    assert_eq!(
        indexes,
        [0, 1, 0, 1, 0, 1, 0, 1],
        "interleaved: role, 2 words, finish"
    );
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 4);
    let body = user(
        "[[nousage]]",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let events = json_events(&stream(&mock, body).await);
    assert!(events.iter().all(|e| e.get("usage").is_none()));
}
