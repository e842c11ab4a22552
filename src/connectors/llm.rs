//! The LLM channel: OpenAI-compatible chat completions, plain and streamed (`docs/sidecar.md`).
//!
//! The agent names a model; the sidecar picks the tenant's connector that serves it, drops the
//! agent's `Authorization`, injects the connector's key, clamps `max_tokens`, counts tokens
//! with the model's real tokenizer (prompt before the call, every streamed chunk as it passes),
//! reconciles with the upstream's reported usage, and prices the call from the connector's
//! table. Detectors read every string of the request and of the answer, in any field. A
//! streamed answer is checked event by event: the agent receives no token past a blocking limit
//! and no PII or secret a policy blocks (the upstream's events are held back whole until the detectors
//! have passed them, then sent unmodified); the stream then ends with one SSE event carrying
//! the refusal (`docs/codes.md`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value};

use super::body_of;
use crate::codes::Code;
use crate::decide::reserve::Want;
use crate::decide::{Decision, PiiFact, SecretFact};
use crate::detect::pii::StreamScanner;
use crate::detect::secrets::StreamScanner as SecretScanner;
use crate::evidence::record::{content_hash, Content, Cut, Outcome};
use crate::policy::compile::ConnectorInfo;
use crate::policy::model::{Metric, ModelPrice};
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Reply};

/// A parsed chat completion request.
#[derive(Debug, Clone)]
pub struct ChatCall {
    /// The request object as sent (unknown fields pass through to the upstream).
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// Whether the agent asked for the usage chunk at the end of a stream.
    pub include_usage: bool,
    pub connector: Option<String>,
    /// The text the tokenizer counts: every message's content, one message a line. It is
    /// hashed and recorded as the prompt; detectors read more ([`ChatCall::pii_kinds`]).
    pub prompt_text: String,
    /// Counted before the call only when a limit needs it (input, total tokens or cost);
    /// otherwise the upstream's reported usage is used, and counted after as a fallback.
    pub prompt_tokens: Option<u64>,
    /// Per-message framing tokens, added to a count of `prompt_text`.
    pub overhead: u64,
    /// Choices asked for (`n`).
    pub n: u64,
    /// The agent's own `max_tokens` / `max_completion_tokens` (the smaller).
    pub max_tokens: Option<u64>,
    /// The model's prices at the serving connector.
    pub prices: ModelPrice,
    /// `max_tokens` per choice to send upstream: the least of the agent's, the policies' and
    /// what the headroom left (set when the call is decided and its usage reserved).
    pub clamp: Option<u64>,
    /// Output tokens reserved for the call (all choices); a stream past it draws more.
    pub reserved_output: u64,
}

impl ChatCall {
    /// What the call asks for, for its reservation.
    pub fn want(&self) -> Want {
        Want {
            n: self.n,
            max_tokens: self.max_tokens,
            output_usd_per_token: self.prices.output_usd_per_mtok / 1e6,
        }
    }

    /// The PII kinds in everything sent upstream: every string and key of the request body
    /// (names, tool calls and tools, `user`, `metadata`, image URLs, fields not known today),
    /// each on its own, and each message's text parts concatenated without a separator, the
    /// way the upstream reads them (`jane.doe@exa` + `mple.com` is an address).
    pub fn pii_kinds(&self) -> u8 {
        let mut mask = 0u8;
        for v in self.body.values() {
            mask |= crate::detect::json::kinds(v);
        }
        for k in self.body.keys() {
            mask |= crate::detect::pii::kinds(k);
        }
        let messages = self.body.get("messages").and_then(Value::as_array);
        for m in messages.into_iter().flatten() {
            if let Some(Value::Array(parts)) = m.get("content") {
                let joined: String = parts.iter().filter_map(part_text).collect();
                mask |= crate::detect::pii::kinds(&joined);
            }
        }
        mask
    }

    /// The secret kinds in the same strings as [`ChatCall::pii_kinds`].
    pub fn secret_kinds(&self) -> u16 {
        let mut mask = 0u16;
        for v in self.body.values() {
            mask |= crate::detect::json::secret_kinds(v);
        }
        for k in self.body.keys() {
            mask |= crate::detect::secrets::kinds(k);
        }
        let messages = self.body.get("messages").and_then(Value::as_array);
        for m in messages.into_iter().flatten() {
            if let Some(Value::Array(parts)) = m.get("content") {
                let joined: String = parts.iter().filter_map(part_text).collect();
                mask |= crate::detect::secrets::kinds(&joined);
            }
        }
        mask
    }

    /// The prompt's tokens, counting them now if they were not counted before the call.
    pub fn prompt_count(&self) -> u64 {
        self.prompt_tokens
            .unwrap_or_else(|| count_tokens(&self.model, &self.prompt_text) + self.overhead)
    }
}

/// Whether any evaluated LLM policy of `tenant` limits input tokens, total tokens or cost —
/// the only reasons to tokenize a prompt before the call.
pub fn prompt_metered(snap: &Snapshot, tenant: &str) -> bool {
    let (own, platform) = snap.candidates(tenant, crate::policy::model::Channel::Llm);
    own.iter().chain(platform).any(|&i| {
        snap.policy(i).limits.iter().any(|l| {
            matches!(
                l.metric,
                Metric::InputTokens | Metric::TotalTokens | Metric::CostUsd
            )
        })
    })
}

fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal::new(Code::InvalidParams, msg)
}

/// Count tokens with the model's tokenizer (o200k for unknown models).
pub fn count_tokens(model: &str, text: &str) -> u64 {
    let bpe =
        tiktoken_rs::bpe_for_model(model).unwrap_or_else(|_| tiktoken_rs::o200k_base_singleton());
    let count = || bpe.encode_with_special_tokens(text).len() as u64;
    // A long text takes milliseconds: hand this worker's other calls to another thread
    // meanwhile (the sidecar may run a single worker).
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if text.len() > LONG_TEXT && multi {
        tokio::task::block_in_place(count)
    } else {
        count()
    }
}

/// The most choices (`n`) one call may ask for (OpenAI's own bound).
pub const MAX_CHOICES: u64 = 128;

/// Texts longer than this are tokenized off the async worker.
const LONG_TEXT: usize = 64 * 1024;

/// Parse and check an OpenAI chat completion request; resolve the connector serving its model
/// (`wanted` picks one explicitly, from `x-warden-connector`).
pub fn parse_chat(
    body: &[u8],
    snap: &Snapshot,
    tenant: &str,
    wanted: Option<&str>,
) -> Result<ChatCall, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            Code::BadRequest,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(invalid("request body must be a JSON object"));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("`model` must be a non-empty string")),
        None => return Err(invalid("`model` is required")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be a boolean")),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut max_tokens: Option<u64> = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some_and(|n| n > 0) => {
                let m = v.as_u64().unwrap_or(u64::MAX);
                max_tokens = Some(max_tokens.map_or(m, |c| c.min(m)));
            }
            Some(_) => return Err(invalid(format!("`{key}` must be a positive integer"))),
        }
    }
    // Every choice is output: `n` is bounded, reserved for, and counted.
    let n = match obj.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) if v.as_u64().is_some_and(|n| (1..=MAX_CHOICES).contains(&n)) => {
            v.as_u64().unwrap_or(1)
        }
        Some(_) => {
            return Err(invalid(format!(
                "`n` must be an integer from 1 to {MAX_CHOICES}"
            )))
        }
    };
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(invalid("`messages` must be an array"));
    };
    if messages.is_empty() {
        return Err(invalid("`messages` must not be empty"));
    }
    let mut prompt_text = String::new();
    let mut overhead = 3u64;
    for (i, m) in messages.iter().enumerate() {
        let Some(m) = m.as_object() else {
            return Err(invalid(format!("messages[{i}] must be an object")));
        };
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(invalid(format!("messages[{i}].role must be a string")));
        }
        overhead += 3;
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => push_text(&mut prompt_text, s),
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    match p.get("text") {
                        Some(Value::String(s)) => push_text(&mut prompt_text, s),
                        Some(_) => {
                            return Err(invalid(format!(
                                "messages[{i}].content[{j}].text must be a string"
                            )))
                        }
                        None => {}
                    }
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "messages[{i}].content must be a string or an array"
                )))
            }
        }
    }
    let connector = match wanted {
        Some(id) => {
            let c = snap.connector(tenant, id).ok_or_else(|| {
                let code = if snap.connector_owner_elsewhere(tenant, id).is_some() {
                    Code::CrossTenant
                } else {
                    Code::UnknownConnector
                };
                Refusal::new(code, format!("no LLM connector `{id}` for this agent"))
            })?;
            if c.spec.llm.is_none() {
                return Err(Refusal::new(
                    Code::UnknownConnector,
                    format!("connector `{id}` is not an LLM connector"),
                ));
            }
            Some(id.to_string())
        }
        None => serving(snap, tenant, &model).map(|c| c.id.to_string()),
    };
    let prompt_tokens =
        prompt_metered(snap, tenant).then(|| count_tokens(&model, &prompt_text) + overhead);
    let prices = connector
        .as_deref()
        .and_then(|c| snap.connector(tenant, c))
        .map(|info| price(info, &model))
        .unwrap_or(ModelPrice {
            input_usd_per_mtok: 0.0,
            output_usd_per_mtok: 0.0,
        });
    Ok(ChatCall {
        body: obj,
        model,
        stream,
        include_usage,
        connector,
        prompt_text,
        prompt_tokens,
        overhead,
        n,
        max_tokens,
        prices,
        clamp: None,
        reserved_output: 0,
    })
}

/// The text a content part contributes to what the model reads (`text`, or an assistant
/// turn's `refusal`).
fn part_text(p: &Value) -> Option<&str> {
    p.get("text")
        .or_else(|| p.get("refusal"))
        .and_then(Value::as_str)
}

fn push_text(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

/// The tenant's LLM connector serving `model`, lowest id first.
fn serving<'a>(snap: &'a Snapshot, tenant: &str, model: &str) -> Option<&'a ConnectorInfo> {
    let t = snap.tenant(tenant)?;
    let mut ids: Vec<&ConnectorInfo> = t
        .connectors
        .values()
        .filter(|c| {
            c.spec
                .llm
                .as_ref()
                .is_some_and(|l| l.models.contains_key(model))
        })
        .collect();
    ids.sort_by(|a, b| a.id.cmp(&b.id));
    ids.first().copied()
}

fn price(info: &ConnectorInfo, model: &str) -> ModelPrice {
    info.spec
        .llm
        .as_ref()
        .and_then(|l| l.models.get(model).cloned())
        .unwrap_or(ModelPrice {
            input_usd_per_mtok: 0.0,
            output_usd_per_mtok: 0.0,
        })
}

fn cost(p: &ModelPrice, input: u64, output: u64) -> f64 {
    (input as f64 * p.input_usd_per_mtok + output as f64 * p.output_usd_per_mtok) / 1e6
}

/// The models `base` (a call's facts, without model or connector) may use, in the OpenAI list
/// shape: each of the tenant's models, decided on its own under `mode`. Pure, so that
/// `evidence replay` derives the same answer from a record.
pub fn allowed_models(
    snap: &Snapshot,
    base: &crate::decide::Request,
    mode: crate::decide::Mode,
    at_ms: u64,
    decision_id: &str,
) -> Value {
    let mut names: Vec<(String, String)> = Vec::new();
    if let Some(t) = snap.tenant(&base.tenant) {
        for c in t.connectors.values() {
            if let Some(l) = &c.spec.llm {
                for m in l.models.keys() {
                    names.push((m.clone(), c.id.to_string()));
                }
            }
        }
    }
    names.sort();
    names.dedup_by(|a, b| a.0 == b.0);
    let mut data = Vec::new();
    for (model, connector) in names {
        let mut req = base.clone();
        req.model = Some(model.clone());
        req.connector = Some(connector);
        req.facts.pii = Some(PiiFact::Found(Vec::new()));
        let d = crate::decide::decide(snap, &req, &(), mode, at_ms, decision_id);
        if !d.refused() {
            data.push(serde_json::json!({ "id": model, "object": "model", "created": 0, "owned_by": "warden" }));
        }
    }
    serde_json::json!({ "object": "list", "data": data })
}

/// `GET /v1/models`: the models this agent's policies allow. A local answer, recorded with the
/// facts and mode it was computed on and the hash of its bytes.
pub fn models(call: &Call) -> Result<Reply, Refusal> {
    let snap = call
        .snapshot
        .as_ref()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    let Some(base) = call.request.clone() else {
        return Err(Refusal::internal("no request facts"));
    };
    let mode = call.rt.mode_for(&call.ctx.tenant);
    let list = allowed_models(snap, &base, mode, call.ctx.at_ms, &call.ctx.decision_id);
    let bytes = serde_json::to_vec(&list).map_err(|e| Refusal::internal(format!("encode: {e}")))?;
    call.trace(|t| {
        t.request = Some(base);
        t.snapshot = Some(snap.hash().to_string());
        t.mode = Some(mode);
        t.response_hash = Some(content_hash(&bytes));
        t.bytes_out = bytes.len() as u64;
        t.outcome = Some(Outcome::Allowed);
    });
    let mut reply = http::Response::new(body_of(Full::new(Bytes::from(bytes))));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(reply)
}

/// Forward a chat completion.
pub async fn chat(
    mut call: Call,
    mut chat: ChatCall,
    settings: super::Settings,
) -> Result<Reply, Refusal> {
    let snap = call
        .snapshot
        .clone()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    // The connector reads the decision from here on; the record has its own copy.
    let decision = call
        .decision
        .take()
        .ok_or_else(|| Refusal::internal("no decision"))?;
    let Some(conn_id) = chat.connector.clone() else {
        return Err(Refusal::new(
            Code::UnknownConnector,
            format!(
                "no LLM connector of this tenant serves model `{}`",
                chat.model
            ),
        ));
    };
    let info = snap
        .connector(&call.ctx.tenant, &conn_id)
        .ok_or_else(|| Refusal::new(Code::UnknownConnector, format!("no connector `{conn_id}`")))?;
    let llm = info.spec.llm.as_ref().ok_or_else(|| {
        Refusal::new(
            Code::UnknownConnector,
            format!("`{conn_id}` is not an LLM connector"),
        )
    })?;
    let key = call.rt.credentials.get(&llm.api_key).map_err(|e| {
        tracing::error!(connector = %conn_id, error = %e, "credential unavailable");
        Refusal::new(
            Code::UpstreamError,
            format!("connector `{conn_id}` has no usable credential"),
        )
    })?;

    // The upstream request: the agent's body, clamped (to the least of the agent's, the
    // policies' and the headroom's `max_tokens`), streamed with usage.
    let mut body = std::mem::take(&mut chat.body);
    let clamp = chat.clamp.or(decision.max_tokens.map(u64::from));
    if let Some(clamp) = clamp {
        let mut clamped = false;
        for k in ["max_tokens", "max_completion_tokens"] {
            if let Some(v) = body.get(k).and_then(Value::as_u64) {
                clamped = true;
                if v > clamp {
                    body.insert(k.into(), Value::from(clamp));
                }
            }
        }
        if !clamped {
            body.insert("max_tokens".into(), Value::from(clamp));
        }
    }
    if chat.stream {
        body.insert(
            "stream_options".into(),
            serde_json::json!({ "include_usage": true }),
        );
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| Refusal::internal(format!("encode: {e}")))?;
    let url = format!("{}/chat/completions", llm.base_url.trim_end_matches('/'));
    let req = http::Request::post(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(
            http::header::ACCEPT,
            if chat.stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        )
        .body(body_of(Full::new(Bytes::from(bytes))))
        .map_err(|e| Refusal::new(Code::UpstreamError, format!("bad upstream URL {url}: {e}")))?;

    let prices = chat.prices.clone();
    let inspection = decision.inspection;
    let input = chat.prompt_tokens.unwrap_or(0);
    call.trace(|t| {
        t.input_tokens = input;
        t.cost_usd = cost(&prices, input, 0);
        t.prompt_hash = Some(content_hash(chat.prompt_text.as_bytes()));
        if inspection.prompts {
            t.content = Some(Content {
                prompt: Some(chat.prompt_text.clone()),
                response: None,
            });
        }
    });

    let (resp, timeout) =
        super::send(&call, &settings, req, &conn_id, llm.timeout_ms, "llm").await?;
    let status = resp.status();
    call.trace(|t| t.upstream_status = Some(status.as_u16()));
    if !status.is_success() {
        let detail = read_limited(resp.into_body(), 4096)
            .await
            .unwrap_or_default();
        return Err(Refusal::new(
            Code::UpstreamError,
            format!(
                "{conn_id} answered {status}: {}",
                String::from_utf8_lossy(&detail)
            ),
        ));
    }
    if chat.stream {
        let max = settings.max_response();
        stream::start(call, chat, decision, prices, resp.into_body(), timeout, max).await
    } else {
        plain(
            call,
            chat,
            decision,
            prices,
            resp.into_body(),
            settings.max_response(),
        )
        .await
    }
}

async fn read_limited(body: hyper::body::Incoming, max: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Refusal::new(
                Code::BodyTooLarge,
                format!("upstream response is larger than {max} bytes"),
            ))
        }
        Err(e) => Err(Refusal::new(
            Code::UpstreamError,
            format!("reading upstream response: {e}"),
        )),
    }
}

/// Whether a blocking limit bounds the answer's output (tokens, total tokens or cost).
fn bounded(d: &Decision) -> bool {
    [Metric::OutputTokens, Metric::TotalTokens, Metric::CostUsd]
        .into_iter()
        .any(|m| d.headroom_for(m).is_some())
}

/// Calls `f` on every string of a choice's `message` or `delta` that the model wrote: all of
/// them (fields not known today included) but the structural `role`, `id` and `type`.
fn output_strings<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::String(s) if !s.is_empty() => f(s),
        Value::Array(items) => items.iter().for_each(|i| output_strings(i, f)),
        Value::Object(map) => {
            for (k, v) in map {
                if !matches!(k.as_str(), "role" | "id" | "type") {
                    output_strings(v, f);
                }
            }
        }
        _ => {}
    }
}

/// Re-decide after the answer grew or revealed facts; a refusal here is same-step enforcement.
fn recheck(
    call: &Call,
    prices: &ModelPrice,
    output_tokens: u64,
    pii: Option<u8>,
    secrets: Option<u16>,
) -> Result<Option<Decision>, Refusal> {
    let Some(mut req) = call.request.clone() else {
        return Ok(None);
    };
    req.delta.output_tokens = output_tokens as f64;
    req.delta.cost_usd += cost(prices, 0, output_tokens);
    if let Some(mask) = pii {
        req.facts.pii = Some(PiiFact::of_mask(mask));
    }
    if let Some(mask) = secrets {
        req.facts.secrets = Some(SecretFact::of_mask(mask));
    }
    call.guard()?.recheck(call, req)
}

async fn plain(
    call: Call,
    chat: ChatCall,
    decision: Decision,
    prices: ModelPrice,
    body: hyper::body::Incoming,
    max: usize,
) -> Result<Reply, Refusal> {
    let bytes = read_limited(body, max).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Refusal::new(
            Code::UpstreamError,
            format!("upstream answered invalid JSON: {e}"),
        )
    })?;
    let text = value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let reported_in = value
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64);
    let reported_out = value
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64);
    let input = reported_in.unwrap_or_else(|| chat.prompt_count());
    // The upstream's own count is authoritative; count ourselves only when it gives none:
    // every choice, all of its output (content, tool-call arguments, refusal, ...).
    let output = reported_out.unwrap_or_else(|| {
        let mut n = 0;
        let choices = value.get("choices").and_then(Value::as_array);
        for c in choices.into_iter().flatten() {
            output_strings(c.get("message").unwrap_or(&Value::Null), &mut |s| {
                n += count_tokens(&chat.model, s)
            });
        }
        n
    });
    let n = bytes.len() as u64;
    call.trace(|t| {
        t.input_tokens = input;
        t.output_tokens = output;
        t.cost_usd = cost(&prices, input, output);
        t.bytes_out = n;
        t.response_hash = Some(content_hash(text.as_bytes()));
        if decision.inspection.responses {
            t.content.get_or_insert_with(Content::default).response = Some(text.clone());
        }
    });
    // Every string of the reply, whatever field it is in (and the strings of one field, such
    // as the tokens of `logprobs`, together): what the agent may read is read.
    let mask = crate::detect::json::kinds_by_field(&value);
    let secrets = crate::detect::json::secret_kinds_by_field(&value);
    // Decide again only when the answer revealed something the first decision did not cover:
    // PII or a secret, or more output than the call reserved against a blocking limit (an
    // upstream that ignored `max_tokens`).
    let over = bounded(&decision) && output > chat.reserved_output;
    let revised = if mask != 0 || secrets != 0 || over {
        let found = mask != 0 || secrets != 0;
        recheck(
            &call,
            &prices,
            output,
            found.then_some(mask),
            found.then_some(secrets),
        )?
    } else {
        None
    };
    if let Some(d) = revised {
        let refusal = call.guard()?.enforce(&call, &d);
        call.trace(|t| {
            t.outcome = Some(Outcome::Cut);
            t.cut = Some(Cut {
                after_tokens: 0,
                code: refusal.code,
                detail: "answer withheld: it breached a policy once complete".into(),
            });
        });
        return Err(refusal);
    }
    let mut reply = http::Response::new(body_of(Full::new(bytes)));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(reply)
}

mod stream {
    //! The streamed answer: a task reads the upstream SSE, checks every event (the budget on
    //! every choice's output, the PII scanners on every string, one scanner per field), holds
    //! each event back until it is safe, and feeds the agent through a channel, unmodified and
    //! in order; it seals the evidence before the last event.

    use super::*;
    use crate::connectors::ChannelBody;
    use futures_util::FutureExt;
    use std::collections::{HashMap, VecDeque};
    use std::panic::AssertUnwindSafe;
    use tokio::sync::mpsc;

    pub async fn start(
        call: Call,
        chat: ChatCall,
        decision: Decision,
        prices: ModelPrice,
        body: hyper::body::Incoming,
        idle: Duration,
        max_held_bytes: usize,
    ) -> Result<Reply, Refusal> {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        call.trace(|t| t.streaming = true);
        let sealer = call
            .sealer
            .clone()
            .ok_or_else(|| Refusal::internal("no evidence sealer"))?;
        // One task pumps the answer, then — whatever happened to the pump, even a panic —
        // seals the evidence and ends the stream.
        tokio::spawn(async move {
            let pumped = AssertUnwindSafe(pump(
                &call,
                &chat,
                &decision,
                &prices,
                body,
                idle,
                &tx,
                max_held_bytes,
            ))
            .catch_unwind()
            .await;
            let end = match pumped {
                Ok(Ok(())) => End::Done,
                Ok(Err(end)) => end,
                Err(_) => End::Cut(Refusal::internal("internal error while streaming"), 0),
            };
            let last = match end {
                End::Done => Bytes::from_static(b"data: [DONE]\n\n"),
                End::Gone => Bytes::new(),
                End::Cut(refusal, after) => {
                    call.trace(|t| {
                        t.outcome = Some(Outcome::Cut);
                        t.cut = Some(Cut {
                            after_tokens: after,
                            code: refusal.code,
                            detail: refusal.message.clone(),
                        });
                        t.refused = Some(refusal.clone());
                    });
                    sse_error(&refusal, &call.ctx.decision_id)
                }
            };
            let last = match sealer.seal().await {
                Ok(()) => last,
                Err(r) => sse_error(&r, &call.ctx.decision_id),
            };
            if !last.is_empty() {
                let _ = tx.send(last).await;
            }
        });
        let mut reply = http::Response::new(ChannelBody::new(rx).boxed());
        reply.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        reply.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        Ok(reply)
    }

    pub enum End {
        Done,
        /// The agent went away.
        Gone,
        /// Cut with this refusal after this many output tokens reached the agent.
        Cut(Refusal, u64),
    }

    fn sse_error(r: &Refusal, decision_id: &str) -> Bytes {
        Bytes::from(format!("data: {}\n\n", r.error_json(decision_id)))
    }

    fn event(v: &Value) -> Bytes {
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// Read SSE lines from the upstream body.
    struct Lines {
        body: hyper::body::Incoming,
        buf: Vec<u8>,
    }

    impl Lines {
        async fn next(&mut self, idle: Duration) -> Result<Option<String>, Refusal> {
            loop {
                if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    let s = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    return Ok(Some(s));
                }
                match tokio::time::timeout(idle, self.body.frame()).await {
                    Err(_) => {
                        return Err(Refusal::new(
                            Code::UpstreamTimeout,
                            "upstream stream stalled",
                        ))
                    }
                    Ok(None) => {
                        if self.buf.is_empty() {
                            return Ok(None);
                        }
                        let s = String::from_utf8_lossy(&self.buf).to_string();
                        self.buf.clear();
                        return Ok(Some(s));
                    }
                    Ok(Some(Err(e))) => {
                        return Err(Refusal::new(
                            Code::UpstreamError,
                            format!("upstream stream failed: {e}"),
                        ))
                    }
                    Ok(Some(Ok(f))) => {
                        if let Ok(d) = f.into_data() {
                            self.buf.extend_from_slice(&d);
                            if self.buf.len() > 1 << 20 {
                                return Err(Refusal::new(
                                    Code::UpstreamError,
                                    "upstream SSE line too long",
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Most distinct fields (JSON paths) one streamed answer may carry.
    const MAX_FIELDS: usize = 1024;

    /// Most events held back at once, waiting for the detectors.
    const MAX_HELD_EVENTS: usize = 4096;

    /// One streamed field of a choice (a JSON path under `choices[]`, array positions as the
    /// stream names them, e.g. `/choices/#0/delta/tool_calls/#1/function/arguments`). Like
    /// the SDKs, which append each string of a delta to the same field of the choice, its
    /// text goes through one scanner, so a match split across events is found.
    struct Field {
        scanner: StreamScanner,
        /// The secrets scanner over the same text, and how much of it it declared safe.
        secrets: SecretScanner,
        sec_emitted: usize,
        /// Bytes pushed into the scanner, and how many of them it declared safe.
        pushed: usize,
        emitted: usize,
        /// Its choice (index into `Pump::choices`), and the last event that continued it.
        choice: usize,
        last: u64,
        /// The last [`WINDOW`] bytes pushed, and how far they were judged as a whole text when
        /// the field stopped (a later event of its choice did not continue it).
        window: String,
        settled: usize,
    }

    /// What [`Pump::scan`] found in one event: the (field, end) pairs it still waits on, the
    /// PII kinds and the secret kinds.
    type Scanned = (Vec<(usize, usize)>, u8, u16);

    impl Field {
        /// How far its text is safe to send: past both scanners.
        fn safe(&self) -> usize {
            self.emitted.min(self.sec_emitted)
        }
    }

    /// Bytes of a field's recent text kept to judge it whole when it stops: more than the
    /// scanners hold back (the secrets scanner's 512 bytes) plus the longest address.
    const WINDOW: usize = 1024;

    /// An event waiting until every field it touched is past where a match may start.
    struct Held {
        bytes: Bytes,
        /// (field, end of this event's text in that field) not yet declared safe.
        needs: Vec<(usize, usize)>,
        /// Output tokens charged for this event.
        tokens: u64,
        /// Its `choices[0].delta.content`, for the record.
        content: String,
    }

    /// The state of one streamed answer as it passes.
    struct Pump<'a> {
        call: &'a Call,
        chat: &'a ChatCall,
        decision: &'a Decision,
        prices: &'a ModelPrice,
        tx: &'a mpsc::Sender<Bytes>,
        /// Field path -> index into `slots`.
        fields: HashMap<String, usize>,
        slots: Vec<Field>,
        /// Choice path (`/choices/#N`) -> index into `choices`: the last event touching it.
        choice_ids: HashMap<String, usize>,
        choices: Vec<u64>,
        /// Events seen so far.
        seq: u64,
        /// Events not sent yet, in order, and their bytes.
        held: VecDeque<Held>,
        held_bytes: usize,
        max_held_bytes: usize,
        /// Scratch buffer for field paths.
        path: String,
        /// PII kinds a policy let through (warn): they no longer stop or hold the stream;
        /// every other kind still does.
        allowed: u8,
        /// Secret kinds a policy let through (warn), likewise.
        sec_allowed: u16,
        /// The `choices[0].delta.content` the agent has received.
        text: String,
        /// Output tokens charged (everything the upstream sent), and those the agent received.
        out_tokens: u64,
        sent_tokens: u64,
        /// Output tokens the call holds; a blocking limit bounds the answer (`bounded`), so
        /// passing what is held means drawing more or being cut.
        reserved: u64,
        bounded: bool,
    }

    impl Pump<'_> {
        /// Record what the agent received: `out` output tokens, on a prompt of `input` tokens.
        fn record(&self, input: u64, out: u64) {
            let (text, prices, decision) = (&self.text, self.prices, self.decision);
            self.call.trace(|t| {
                t.input_tokens = input;
                t.output_tokens = out;
                t.cost_usd = cost(prices, input, out);
                t.response_hash = Some(content_hash(text.as_bytes()));
                if decision.inspection.responses {
                    t.content.get_or_insert_with(Content::default).response =
                        Some(text.to_string());
                }
            })
        }

        /// End the stream with a refusal, recording what the agent received; the events held
        /// back are never sent.
        fn cut(&self, r: Refusal) -> End {
            self.record(self.chat.prompt_count(), self.out_tokens);
            End::Cut(r, self.sent_tokens)
        }

        /// A refusing decision taken mid-stream: apply it to the run and cut.
        fn enforce(&self, d: Decision, fallback: Code) -> End {
            let r = match (&self.call.run, self.call.guard()) {
                (Some(_), Ok(guard)) => guard.enforce(self.call, &d),
                _ => Refusal::new(fallback, "refused mid-stream"),
            };
            self.cut(r)
        }

        /// PII was found in the answer: cut if a policy blocks it (judged with every kind
        /// found so far), else let those kinds through and scan on for the others.
        fn pii(&mut self, found: u8) -> Result<(), End> {
            let mut found = found & !self.allowed;
            while found != 0 {
                let all = self.allowed | found;
                let sec = Some(self.sec_allowed);
                match recheck(self.call, self.prices, self.out_tokens, Some(all), sec) {
                    Ok(Some(d)) => return Err(self.enforce(d, Code::PiiDetected)),
                    Ok(None) => self.allowed = all,
                    Err(r) => return Err(self.cut(r)),
                }
                // Resume every field past the allowed kinds; another kind may still be there.
                found = 0;
                for f in &mut self.slots {
                    f.scanner.allow(all);
                    let p = f.scanner.push("");
                    f.emitted += p.emit.len();
                    found |= p.found & !all;
                }
            }
            Ok(())
        }

        /// A secret was found in the answer: cut if a policy blocks it (judged with every
        /// kind found so far), else let those kinds through and scan on for the others.
        fn secrets(&mut self, found: u16) -> Result<(), End> {
            let mut found = found & !self.sec_allowed;
            while found != 0 {
                let all = self.sec_allowed | found;
                let pii = Some(self.allowed);
                match recheck(self.call, self.prices, self.out_tokens, pii, Some(all)) {
                    Ok(Some(d)) => return Err(self.enforce(d, Code::SecretDetected)),
                    Ok(None) => self.sec_allowed = all,
                    Err(r) => return Err(self.cut(r)),
                }
                found = 0;
                for f in &mut self.slots {
                    f.secrets.allow(all);
                    let p = f.secrets.push("");
                    f.sec_emitted += p.emit.len();
                    found |= p.found & !all;
                }
            }
            Ok(())
        }

        async fn send(&mut self, h: Held) -> Result<(), End> {
            if self.tx.send(h.bytes).await.is_err() {
                self.record(self.chat.prompt_count(), self.out_tokens);
                return Err(End::Gone);
            }
            self.sent_tokens += h.tokens;
            self.text.push_str(&h.content);
            Ok(())
        }

        /// Send the held events, in order, as far as every field they touched is safe (all of
        /// them once the detectors are done: `all`).
        async fn release(&mut self, all: bool) -> Result<(), End> {
            while let Some(front) = self.held.front() {
                // A field waits until its scanner has passed the event's text, or until it
                // stopped and its text was judged whole (`settle`).
                let slots = &self.slots;
                let safe = all
                    || front.needs.iter().all(|&(f, end)| {
                        let f = &slots[f];
                        f.safe().max(f.settled) >= end
                    });
                if !safe {
                    break;
                }
                let Some(h) = self.held.pop_front() else {
                    break;
                };
                self.held_bytes -= h.bytes.len();
                self.send(h).await?;
            }
            Ok(())
        }

        /// The answer is complete: the final scans, then every held event.
        async fn finish(&mut self) -> Result<(), End> {
            let mut found = 0;
            for f in &mut self.slots {
                let rest = f.scanner.finish();
                f.emitted += rest.emit.len();
                found |= rest.found;
            }
            while found & !self.allowed != 0 {
                self.pii(found)?;
                // A kind allowed at the very end leaves text its scanner has not judged
                // whole yet: finish it again.
                found = 0;
                for f in &mut self.slots {
                    found |= f.scanner.finish().found;
                }
            }
            let mut sec = 0;
            for f in &mut self.slots {
                let rest = f.secrets.finish();
                f.sec_emitted += rest.emit.len();
                sec |= rest.found;
            }
            while sec & !self.sec_allowed != 0 {
                self.secrets(sec)?;
                sec = 0;
                for f in &mut self.slots {
                    sec |= f.secrets.finish().found;
                }
            }
            self.release(true).await
        }

        /// Count `tokens` more output tokens against the call's budget; past a blocking limit
        /// the stream is cut (same step: the agent gets nothing past the limit).
        fn charge(&mut self, tokens: u64) -> Result<(), End> {
            let next_out = self.out_tokens + tokens;
            if self.bounded && next_out > self.reserved {
                // Past what the call reserved: draw more from the run's shared headroom, or cut.
                match recheck(self.call, self.prices, next_out, None, None) {
                    Ok(Some(d)) => return Err(self.enforce(d, Code::BudgetExceeded)),
                    Ok(None) => self.reserved = next_out,
                    Err(r) => return Err(self.cut(r)),
                }
            }
            self.out_tokens = next_out;
            Ok(())
        }

        /// Push every string of `v` into its field's scanner: the fields the event still
        /// waits on, and the PII and secret kinds found (in a field, or in an object key).
        fn scan(&mut self, v: &Value) -> Result<Scanned, Refusal> {
            let mut needs = Vec::new();
            let (mut found, mut in_keys) = (0u8, 0u8);
            let (mut sec, mut sec_keys) = (0u16, 0u16);
            let mut overflow = false;
            self.seq += 1;
            let seq = self.seq;
            let (fields, slots) = (&mut self.fields, &mut self.slots);
            let (choice_ids, choices) = (&mut self.choice_ids, &mut self.choices);
            let mut path = std::mem::take(&mut self.path);
            path.clear();
            crate::detect::json::fields(
                v,
                &mut path,
                &mut |p, s| {
                    if s.is_empty() {
                        return;
                    }
                    // Outside `choices[]` (id, model, object, ...) a string is a whole value,
                    // repeated or replaced by each event (the SDKs keep the latest).
                    let Some(choice) = choice_of(p) else {
                        found |= crate::detect::pii::kinds(s);
                        sec |= crate::detect::secrets::kinds(s);
                        return;
                    };
                    let c = match choice_ids.get(choice) {
                        Some(&c) => c,
                        None => {
                            choice_ids.insert(choice.to_string(), choices.len());
                            choices.push(0);
                            choices.len() - 1
                        }
                    };
                    choices[c] = seq;
                    let i = match fields.get(p) {
                        Some(&i) => i,
                        None if slots.len() >= MAX_FIELDS => {
                            overflow = true;
                            return;
                        }
                        None => {
                            fields.insert(p.to_string(), slots.len());
                            slots.push(Field {
                                scanner: StreamScanner::new(),
                                secrets: SecretScanner::new(),
                                sec_emitted: 0,
                                pushed: 0,
                                emitted: 0,
                                choice: c,
                                last: 0,
                                window: String::new(),
                                settled: 0,
                            });
                            slots.len() - 1
                        }
                    };
                    let f = &mut slots[i];
                    f.last = seq;
                    f.window.push_str(s);
                    if f.window.len() > WINDOW {
                        let mut cut = f.window.len() - WINDOW;
                        while !f.window.is_char_boundary(cut) {
                            cut += 1;
                        }
                        f.window.drain(..cut);
                    }
                    let pushed = f.scanner.push(s);
                    f.pushed += s.len();
                    f.emitted += pushed.emit.len();
                    found |= pushed.found;
                    let pushed = f.secrets.push(s);
                    f.sec_emitted += pushed.emit.len();
                    sec |= pushed.found;
                    if f.safe() < f.pushed {
                        needs.push((i, f.pushed));
                    }
                },
                &mut |k| {
                    in_keys |= crate::detect::pii::kinds(k);
                    sec_keys |= crate::detect::secrets::kinds(k);
                },
            );
            found |= in_keys;
            sec |= sec_keys;
            self.path = path;
            if overflow {
                return Err(Refusal::new(
                    Code::BodyTooLarge,
                    format!("streamed answer has more than {MAX_FIELDS} fields"),
                ));
            }
            Ok((needs, found, sec))
        }

        /// Judge whole the held text of every field that stopped: a later event of its choice
        /// did not continue it (a `role`, a tool call's `name`, a refusal before the finish
        /// chunk). Such a field must not hold the stream back until its end; its scanner keeps
        /// its context, so should it resume, a match across the pause is still found.
        fn settle(&mut self) -> (u8, u16) {
            let (mut found, mut sec) = (0, 0);
            for h in &self.held {
                for &(i, _) in &h.needs {
                    let f = &mut self.slots[i];
                    if f.last < self.choices[f.choice] && f.settled < f.pushed {
                        found |= crate::detect::pii::kinds(&f.window);
                        sec |= crate::detect::secrets::kinds(&f.window);
                        f.settled = f.pushed;
                    }
                }
            }
            (found, sec)
        }

        /// One upstream event: budget check of every choice's output, the detectors on every
        /// string, then it waits until it is safe to send.
        async fn event(&mut self, v: &Value) -> Result<(), End> {
            let mut tokens = 0;
            let choices = v.get("choices").and_then(Value::as_array);
            for c in choices.into_iter().flatten() {
                output_strings(c.get("delta").unwrap_or(&Value::Null), &mut |s| {
                    tokens += count_tokens(&self.chat.model, s)
                });
            }
            if tokens > 0 {
                self.charge(tokens)?;
            }
            let content = v
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .filter(|_| {
                    v.pointer("/choices/0/index")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        == 0
                })
                .unwrap_or("")
                .to_string();
            let bytes = event(v);
            let (needs, mut found, mut sec) = self.scan(v).map_err(|r| self.cut(r))?;
            self.held_bytes += bytes.len();
            self.held.push_back(Held {
                bytes,
                needs,
                tokens,
                content,
            });
            let (settled, settled_sec) = self.settle();
            found |= settled;
            sec |= settled_sec;
            found &= !self.allowed;
            sec &= !self.sec_allowed;
            if found != 0 || sec != 0 {
                // What the scanners passed before the match is clean: it goes out before a
                // cut (the push that finds a match also emits the text before it).
                self.release(false).await?;
            }
            if found != 0 {
                // Cut, or the kinds are let through and every field scans on.
                self.pii(found)?;
            }
            if sec != 0 {
                self.secrets(sec)?;
            }
            if self.held.len() > MAX_HELD_EVENTS || self.held_bytes > self.max_held_bytes {
                return Err(self.cut(Refusal::new(
                    Code::BodyTooLarge,
                    format!(
                        "streamed answer held back past {} events or {} bytes awaiting the detectors",
                        MAX_HELD_EVENTS, self.max_held_bytes
                    ),
                )));
            }
            self.release(false).await
        }
    }

    /// The choice a field path belongs to (`/choices/#0` of `/choices/#0/delta/content`).
    pub(super) fn choice_of(path: &str) -> Option<&str> {
        let rest = path.strip_prefix("/choices/")?;
        let end = rest.find('/').map_or(path.len(), |i| "/choices/".len() + i);
        path.get(..end)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump(
        call: &Call,
        chat: &ChatCall,
        decision: &Decision,
        prices: &ModelPrice,
        body: hyper::body::Incoming,
        idle: Duration,
        tx: &mpsc::Sender<Bytes>,
        max_held_bytes: usize,
    ) -> Result<(), End> {
        let mut lines = Lines {
            body,
            buf: Vec::new(),
        };
        let mut p = Pump {
            call,
            chat,
            decision,
            prices,
            tx,
            fields: HashMap::new(),
            slots: Vec::new(),
            choice_ids: HashMap::new(),
            choices: Vec::new(),
            seq: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            max_held_bytes,
            path: String::new(),
            allowed: 0,
            sec_allowed: 0,
            text: String::new(),
            out_tokens: 0,
            sent_tokens: 0,
            reserved: chat.reserved_output,
            bounded: bounded(decision),
        };
        let mut reported: Option<(u64, u64)> = None;
        let cut = crate::connectors::cut_signal(call);
        tokio::pin!(cut);
        loop {
            let line = tokio::select! {
                biased;
                r = &mut cut => return Err(p.cut(r)),
                l = lines.next(idle) => l,
            };
            let line = match line {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(r) => return Err(p.cut(r)),
            };
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                return Err(p.cut(Refusal::new(
                    Code::UpstreamError,
                    "upstream sent an invalid SSE event",
                )));
            };
            if let (Some(pt), Some(ct)) = (
                v.pointer("/usage/prompt_tokens").and_then(Value::as_u64),
                v.pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64),
            ) {
                reported = Some((pt, ct));
            }
            let usage_only = v
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|c| c.is_empty());
            if usage_only && !chat.include_usage {
                // The sidecar asked for it; the agent did not.
                continue;
            }
            p.event(&v).await?;
        }
        p.finish().await?;
        let out = reported.map(|(_, c)| c).unwrap_or(p.out_tokens);
        let input = reported
            .map(|(i, _)| i)
            .unwrap_or_else(|| chat.prompt_count());
        p.record(input, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");
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
            assert_eq!(e.code, Code::InvalidParams, "{}", String::from_utf8_lossy(body));
        }
        let e = parse_chat(b"{oops", &snap, "acme", None).unwrap_err();
        assert_eq!(e.code, Code::BadRequest);
        let e = parse_chat(BODY, &snap, "acme", Some("weather")).unwrap_err();
        assert_eq!(e.code, Code::UnknownConnector);
        let e = parse_chat(BODY, &snap, "acme", Some("nope")).unwrap_err();
        assert_eq!(e.code, Code::UnknownConnector);
    }
}
