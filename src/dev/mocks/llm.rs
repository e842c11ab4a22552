//! The LLM mock: an OpenAI-compatible chat completions upstream with deterministic replies.
//!
//! Routes: `GET /v1/models` and `POST /v1/chat/completions` (plain and `stream: true`);
//! anything else is 404 in the OpenAI error shape, a malformed request is 400.
//!
//! The reply is `max_tokens` words (or `max_completion_tokens`; the smaller when both are
//! sent; 16 when neither is), word `i` being `WORDS[i % WORDS.len()]`, joined by single
//! spaces. Every word is exactly one o200k_base token with and without its leading space,
//! so "N words" is "N tokens" for anyone metering the stream. The last user message may steer
//! the reply with markers (several may combine; a repeated marker: the last one wins):
//!
//! | marker | effect |
//! |---|---|
//! | `[[reply:N]]` | the reply is N words, still capped by `max_tokens` when one was sent |
//! | `[[leak]]` | ` jane.doe@example.com` is inserted after word 20 (after the last word of a shorter reply) as one extra piece / SSE event |
//! | `[[slow:MS]]` | waits MS ms between streamed chunks, or once before a non-streamed answer (or a `[[fail]]`) |
//! | `[[fail:CODE]]` | answers with HTTP status CODE (400–599) and an OpenAI error JSON |
//! | `[[overrun]]` | ignores `max_tokens` (an upstream that does not honour the cap): the reply is `[[reply:N]]` words even past `max_tokens` |
//! | `[[tool:NAME]]` | the reply is a call of tool NAME (`content: null`, `finish_reason: "tool_calls"`) whose arguments are `{"text":"<the words>"}`; streamed, the first event carries the id, type and name with empty arguments, then the arguments follow in several events without `role`: `{"text":"`, one per word, `"}` |
//! | `[[leak:FIELD]]` | puts `jane.doe@example.com` into FIELD instead of the content: `content` (same as `[[leak]]`), `tool` (the tool-call arguments, after word 20; a call of `lookup` unless `[[tool:NAME]]` names one), `refusal`, `audio` (`audio.transcript`), `extra` (an unknown field `x_mock_note`), `logprobs` (a `logprobs.content[].token`; the content stays clean), `choice` (a second choice: `n` is at least 2 and only the last choice leaks, in its content); except for `content`, `tool` and `choice` the text is `write to jane.doe@example.com`, streamed as the four pieces `write to `, `jane.doe`, `@exa`, `mple.com` after the words |
//! | `[[nousage]]` | no `usage` in the answer, nor a usage chunk in a stream |
//! | `[[secret]]` | a fake OpenAI key ([`SECRET_KEY`]) is inserted into the content after word 20 (after the address when the content leaks too), as the three pieces of [`SECRET_PIECES`] (three SSE events), for the secrets detector's tests |
//!
//! The request's `n` (1–16) is honoured: n choices, each with the same reply (a stream
//! interleaves them: one event per choice at each step, each with its `index`).
//!
//! Usage is reported like OpenAI's, with two documented approximations:
//! `prompt_tokens` is the o200k_base count of all message contents concatenated (no
//! per-message framing tokens), and `completion_tokens` is, over every choice, the sum of the
//! o200k_base counts of each streamed piece of its output (content, tool name and arguments,
//! refusal, transcript, extra field; not logprobs): the number of words plus 5 tokens for the
//! leaked ` jane.doe@example.com` of `[[leak]]`. `finish_reason` is `"tool_calls"` for a tool
//! call, else `"length"` when the reply reached the requested `max_tokens`, else `"stop"`. `created` is always 0 and ids count requests, so answers are reproducible.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{
    accept_loop, openai_error, read_body, response, BodyError, MockBody, ReceivedRequest, Recorder,
};

/// Models listed by `GET /v1/models` (any non-empty model name is accepted for chat).
pub const MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4o"];

/// The reply vocabulary: common English words, each one o200k_base token with and without
/// a leading space (a test keeps that true).
pub const WORDS: [&str; 64] = [
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like",
    "time",
];

/// The address `[[leak]]` puts into the reply.
pub const LEAK_ADDRESS: &str = "jane.doe@example.com";

/// `[[leak]]` inserts the address after this many words.
pub const LEAK_AFTER: usize = 20;

/// Reply length when the request sends no `max_tokens`.
pub const DEFAULT_REPLY_TOKENS: u64 = 16;

/// Upper bound on a reply's length, so a typo cannot make the mock allocate gigabytes.
const MAX_REPLY_TOKENS: u64 = 100_000;

/// The pieces of `write to jane.doe@example.com`, as `[[leak:FIELD]]` streams them.
pub const LEAK_PIECES: [&str; 4] = ["write to ", "jane.doe", "@exa", "mple.com"];

/// The fake OpenAI key `[[secret]]` puts into the reply, and the pieces it streams it in.
pub const SECRET_KEY: &str = "sk-proj-Xk29fLq0Vb7TmW3pRz8NaY5cH1dGj6sUeKo4Qi";
pub const SECRET_PIECES: [&str; 3] = [" sk-proj-", "Xk29fLq0Vb7TmW3p", "Rz8NaY5cH1dGj6sUeKo4Qi"];

/// Upper bound on the request's `n`.
const MAX_N: u64 = 16;

/// Upper bound on `[[slow:MS]]`.
const MAX_SLOW_MS: u64 = 600_000;

/// Runs the LLM mock on `listener` forever (HTTP/1.1 and h2c).
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    serve_recorded(listener, Recorder::new()).await
}

/// Like [`serve`], recording every chat completion request into `recorder`.
pub async fn serve_recorded(listener: TcpListener, recorder: Arc<Recorder>) -> io::Result<()> {
    accept_loop(listener, move |req| handle(Arc::clone(&recorder), req)).await
}

async fn handle(recorder: Arc<Recorder>, req: Request<Incoming>) -> Response<MockBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/models") => models(),
        (&Method::POST, "/v1/chat/completions") => chat(&recorder, req).await,
        (method, path) => openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            &format!("Invalid URL ({method} {path})"),
        ),
    }
}

fn models() -> Response<MockBody> {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "warden-mock" }))
        .collect();
    super::json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

// === the request and its plan ===

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The text of a message: a string, or the `text` of each part of an array of parts.
fn message_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Steering markers found in the last user message.
#[derive(Debug, Default, PartialEq, Eq)]
struct Markers {
    reply: Option<u64>,
    leak: bool,
    secret: bool,
    slow_ms: Option<u64>,
    fail: Option<StatusCode>,
    overrun: bool,
    tool: Option<String>,
    leak_field: Option<LeakField>,
    nousage: bool,
}

/// Where `[[leak:FIELD]]` puts the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeakField {
    Tool,
    Refusal,
    Audio,
    Extra,
    Logprobs,
    Choice,
}

impl Markers {
    /// Parses every `[[name]]` / `[[name:value]]` in `text`; unknown names are plain text,
    /// a known name with a bad value is an error (the message says which).
    fn parse(text: &str) -> Result<Self, String> {
        let mut markers = Self::default();
        let mut rest = text;
        while let Some(start) = rest.find("[[") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("]]") else { break };
            let inner = &after[..end];
            rest = &after[end + 2..];
            let (name, value) = match inner.split_once(':') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (inner.trim(), None),
            };
            let number = |max: u64| -> Result<u64, String> {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("marker [[{inner}]] needs a number up to {max}"))
            };
            match name {
                "reply" => markers.reply = Some(number(MAX_REPLY_TOKENS)?),
                "slow" => markers.slow_ms = Some(number(MAX_SLOW_MS)?),
                "leak" if value.is_none() => markers.leak = true,
                "secret" if value.is_none() => markers.secret = true,
                "overrun" if value.is_none() => markers.overrun = true,
                "leak" => {
                    let field = match value.unwrap_or("") {
                        "content" => None,
                        "tool" => Some(LeakField::Tool),
                        "refusal" => Some(LeakField::Refusal),
                        "audio" => Some(LeakField::Audio),
                        "extra" => Some(LeakField::Extra),
                        "logprobs" => Some(LeakField::Logprobs),
                        "choice" => Some(LeakField::Choice),
                        _ => return Err(format!("marker [[{inner}]] names no known field")),
                    };
                    markers.leak = field.is_none();
                    markers.leak_field = field;
                }
                "tool" => match value {
                    Some(v) if !v.is_empty() => markers.tool = Some(v.to_string()),
                    _ => return Err(format!("marker [[{inner}]] needs a tool name")),
                },
                "nousage" if value.is_none() => markers.nousage = true,
                "fail" => {
                    let code = u16::try_from(number(599)?).unwrap_or(0);
                    let status = StatusCode::from_u16(code)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .ok_or_else(|| format!("marker [[{inner}]] needs a status 400-599"))?;
                    markers.fail = Some(status);
                }
                _ => {}
            }
        }
        Ok(markers)
    }
}

/// Everything the answer depends on, worked out before answering.
#[derive(Debug)]
struct Plan {
    id: String,
    model: String,
    words: usize,
    finish_reason: &'static str,
    leak: bool,
    secret: bool,
    leak_field: Option<LeakField>,
    tool: Option<String>,
    n: usize,
    usage: bool,
    slow: Option<Duration>,
    fail: Option<StatusCode>,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
}

impl Plan {
    fn new(req: &ChatRequest, seq: u64) -> Result<Self, String> {
        if req.model.is_empty() {
            return Err("model must not be empty".into());
        }
        if req.messages.is_empty() {
            return Err("messages must not be empty".into());
        }
        let max = match (req.max_tokens, req.max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if max == Some(0) {
            return Err("max_tokens must be at least 1".into());
        }
        let last_user = req.messages.iter().rev().find(|m| m.role == "user");
        let markers = match last_user {
            Some(m) => Markers::parse(&message_text(&m.content))?,
            None => Markers::default(),
        };
        let wanted = markers
            .reply
            .or(max)
            .unwrap_or(DEFAULT_REPLY_TOKENS)
            .min(MAX_REPLY_TOKENS);
        let words = match max {
            Some(m) if !markers.overrun => wanted.min(m),
            _ => wanted,
        };
        let tool = markers.tool.or_else(|| {
            (markers.leak_field == Some(LeakField::Tool)).then(|| "lookup".to_string())
        });
        let finish_reason = if tool.is_some() {
            "tool_calls"
        } else if max == Some(words) {
            "length"
        } else {
            "stop"
        };
        let n = match req.n {
            None => 1,
            Some(n) if (1..=MAX_N).contains(&n) => n,
            Some(_) => return Err(format!("n must be between 1 and {MAX_N}")),
        };
        let n = if markers.leak_field == Some(LeakField::Choice) {
            n.max(2)
        } else {
            n
        };
        let prompt: String = req
            .messages
            .iter()
            .map(|m| message_text(&m.content))
            .collect();
        Ok(Self {
            id: format!("chatcmpl-mock-{seq:06}"),
            model: req.model.clone(),
            words: usize::try_from(words).map_err(|_| "reply too long".to_string())?,
            finish_reason,
            leak: markers.leak,
            secret: markers.secret,
            leak_field: markers.leak_field,
            tool,
            n: usize::try_from(n).map_err(|_| "n too large".to_string())?,
            usage: !markers.nousage,
            slow: markers.slow_ms.map(Duration::from_millis),
            fail: markers.fail,
            stream: req.stream.unwrap_or(false),
            include_usage: req
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            prompt_tokens: count_tokens(&prompt),
        })
    }

    /// The content pieces of choice `i` (the words, and the address where it leaks there).
    fn pieces(&self, i: usize) -> Vec<String> {
        let leak = self.leak || (self.leak_field == Some(LeakField::Choice) && i + 1 == self.n);
        self.words_with(leak)
    }

    /// The reply as the pieces a stream sends, one SSE event each: words with their leading
    /// space, and (`leak`) the leaked address as one extra piece after word 20.
    fn words_with(&self, leak: bool) -> Vec<String> {
        let mut pieces: Vec<String> = (0..self.words)
            .map(|i| {
                let word = WORDS[i % WORDS.len()];
                if i == 0 {
                    word.to_string()
                } else {
                    format!(" {word}")
                }
            })
            .collect();
        if leak {
            let at = LEAK_AFTER.min(pieces.len());
            let piece = if at == 0 {
                LEAK_ADDRESS.to_string()
            } else {
                format!(" {LEAK_ADDRESS}")
            };
            pieces.insert(at, piece);
        }
        if self.secret {
            let at = (LEAK_AFTER + usize::from(leak)).min(pieces.len());
            for (k, p) in SECRET_PIECES.iter().enumerate() {
                pieces.insert(at + k, (*p).to_string());
            }
        }
        pieces
    }

    /// The tool-call argument pieces: `{"text":"`, the words (and the address with
    /// `[[leak:tool]]`), `"}`.
    fn tool_pieces(&self) -> Vec<String> {
        let mut pieces = vec![r#"{"text":""#.to_string()];
        pieces.extend(self.words_with(self.leak_field == Some(LeakField::Tool)));
        pieces.push(r#""}"#.to_string());
        pieces
    }

    /// The side field of `[[leak:FIELD]]` and its pieces, if the reply has one.
    fn side(&self) -> Option<(LeakField, Vec<String>)> {
        match self.leak_field {
            Some(
                f
                @ (LeakField::Refusal | LeakField::Audio | LeakField::Extra | LeakField::Logprobs),
            ) => Some((f, LEAK_PIECES.iter().map(|p| p.to_string()).collect())),
            _ => None,
        }
    }

    /// The output pieces of choice `i` that usage counts.
    fn counted(&self, i: usize) -> u64 {
        let main: u64 = match &self.tool {
            Some(name) => {
                count_tokens(name)
                    + self
                        .tool_pieces()
                        .iter()
                        .map(|p| count_tokens(p))
                        .sum::<u64>()
            }
            None => self.pieces(i).iter().map(|p| count_tokens(p)).sum(),
        };
        let side: u64 = match self.side() {
            Some((LeakField::Logprobs, _)) | None => 0,
            Some((_, pieces)) => pieces.iter().map(|p| count_tokens(p)).sum(),
        };
        main + side
    }

    fn usage(&self) -> Value {
        let completion: u64 = (0..self.n).map(|i| self.counted(i)).sum();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }
}

/// o200k_base token count (the tokenizer of the gpt-4o family).
fn count_tokens(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

// === chat completions ===

async fn chat(recorder: &Recorder, req: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    let seq = recorder.record(ReceivedRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: body.as_ref().map(Bytes::clone).unwrap_or_default(),
    });
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return openai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                None,
                "request body too large",
            )
        }
        Err(BodyError::Read) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "could not read the request body",
            )
        }
    };
    let plan = match serde_json::from_slice::<ChatRequest>(&body)
        .map_err(|e| format!("invalid request: {e}"))
        .and_then(|req| Plan::new(&req, seq))
    {
        Ok(plan) => plan,
        Err(message) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &message,
            )
        }
    };

    if let Some(status) = plan.fail {
        if let Some(delay) = plan.slow {
            tokio::time::sleep(delay).await;
        }
        return failure(status);
    }
    if plan.stream {
        return streamed(plan);
    }
    if let Some(delay) = plan.slow {
        tokio::time::sleep(delay).await;
    }
    whole(&plan)
}

/// The answer to `[[fail:CODE]]`, typed the way OpenAI types that status.
fn failure(status: StatusCode) -> Response<MockBody> {
    let (kind, code) = match status.as_u16() {
        401 => ("authentication_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    openai_error(
        status,
        kind,
        code,
        &format!(
            "mock upstream failure requested by [[fail:{}]]",
            status.as_u16()
        ),
    )
}

fn whole(plan: &Plan) -> Response<MockBody> {
    let choices: Vec<Value> = (0..plan.n).map(|i| whole_choice(plan, i)).collect();
    let mut answer = json!({
        "id": plan.id,
        "object": "chat.completion",
        "created": 0,
        "model": plan.model,
        "choices": choices,
        "system_fingerprint": null,
    });
    if plan.usage {
        answer["usage"] = plan.usage();
    }
    super::json_response(StatusCode::OK, &answer)
}

fn logprob(token: &str) -> Value {
    json!({ "token": token, "logprob": 0.0, "bytes": token.as_bytes(), "top_logprobs": [] })
}

fn whole_choice(plan: &Plan, i: usize) -> Value {
    let pieces = plan.pieces(i);
    let mut message = json!({ "role": "assistant", "content": pieces.concat(), "refusal": null });
    if let Some(name) = &plan.tool {
        message["content"] = Value::Null;
        message["tool_calls"] = json!([{
            "id": "call_mock_0",
            "type": "function",
            "function": { "name": name, "arguments": plan.tool_pieces().concat() },
        }]);
    }
    let mut logprobs = Value::Null;
    if let Some((field, side)) = plan.side() {
        let text = side.concat();
        match field {
            LeakField::Refusal => message["refusal"] = Value::String(text),
            LeakField::Audio => {
                message["audio"] =
                    json!({ "id": "audio_mock_0", "transcript": text, "expires_at": 0 })
            }
            LeakField::Extra => message["x_mock_note"] = Value::String(text),
            LeakField::Logprobs => {
                let tokens: Vec<Value> = pieces.iter().chain(&side).map(|p| logprob(p)).collect();
                logprobs = json!({ "content": tokens, "refusal": null });
            }
            LeakField::Tool | LeakField::Choice => {}
        }
    }
    json!({
        "index": i,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": plan.finish_reason,
    })
}

// === streaming ===

/// A response body fed by a channel: each message is one frame, sent as soon as produced.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn streamed(plan: Plan) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(produce(plan, tx));
    let mut resp = response(
        StatusCode::OK,
        "text/event-stream",
        ChannelBody { rx }.boxed(),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// One `chat.completion.chunk` with one choice, `i`.
fn chunk(plan: &Plan, i: usize, delta: Value, finish_reason: Option<&str>) -> Value {
    chunk_with(plan, i, delta, Value::Null, finish_reason)
}

fn chunk_with(
    plan: &Plan,
    i: usize,
    delta: Value,
    logprobs: Value,
    finish_reason: Option<&str>,
) -> Value {
    let mut chunk = json!({
        "id": plan.id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": plan.model,
        "choices": [{ "index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason }],
    });
    // Like OpenAI: with include_usage every chunk carries `usage: null` but the last.
    if plan.include_usage && plan.usage {
        chunk["usage"] = Value::Null;
    }
    chunk
}

/// The events of choice `i`, role first, finish last.
fn choice_events(plan: &Plan, i: usize) -> Vec<Value> {
    let mut events = Vec::new();
    match &plan.tool {
        Some(name) => {
            events.push(chunk(
                plan,
                i,
                json!({ "role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": "call_mock_0", "type": "function",
                    "function": { "name": name, "arguments": "" },
                }] }),
                None,
            ));
            events.extend(plan.tool_pieces().iter().map(|p| {
                chunk(
                    plan,
                    i,
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": p } }] }),
                    None,
                )
            }));
        }
        None => {
            events.push(chunk(
                plan,
                i,
                json!({ "role": "assistant", "content": "" }),
                None,
            ));
            let with_logprobs = matches!(plan.side(), Some((LeakField::Logprobs, _)));
            events.extend(plan.pieces(i).iter().map(|p| {
                let lp = if with_logprobs {
                    json!({ "content": [logprob(p)], "refusal": null })
                } else {
                    Value::Null
                };
                chunk_with(plan, i, json!({ "content": p }), lp, None)
            }));
        }
    }
    if let Some((field, side)) = plan.side() {
        events.extend(side.iter().map(|p| match field {
            LeakField::Refusal => chunk(plan, i, json!({ "refusal": p }), None),
            LeakField::Audio => chunk(plan, i, json!({ "audio": { "transcript": p } }), None),
            LeakField::Extra => chunk(plan, i, json!({ "x_mock_note": p }), None),
            _ => chunk_with(
                plan,
                i,
                json!({}),
                json!({ "content": [logprob(p)], "refusal": null }),
                None,
            ),
        }));
    }
    events.push(chunk(plan, i, json!({}), Some(plan.finish_reason)));
    events
}

/// Sends the SSE events of `plan` one by one; stops quietly when the client goes away.
async fn produce(plan: Plan, tx: mpsc::Sender<Bytes>) {
    let per_choice: Vec<Vec<Value>> = (0..plan.n).map(|i| choice_events(&plan, i)).collect();
    let steps = per_choice.iter().map(Vec::len).max().unwrap_or(0);
    let mut events = Vec::with_capacity(steps * plan.n + 1);
    for step in 0..steps {
        events.extend(per_choice.iter().filter_map(|c| c.get(step).cloned()));
    }
    if plan.include_usage && plan.usage {
        events.push(json!({
            "id": plan.id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": plan.model,
            "choices": [],
            "usage": plan.usage(),
        }));
    }
    let frames = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .chain(std::iter::once(Bytes::from_static(b"data: [DONE]\n\n")));
    for (i, frame) in frames.enumerate() {
        if let (Some(delay), true) = (plan.slow, i > 0) {
            tokio::time::sleep(delay).await;
        }
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}
