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

//!
//! The room is split by concern: `wire` (the request as the agent sends it, parsed and
//! checked), `tokens` (counting with the model's tokenizer), `plain` (a buffered answer) and
//! `stream` (a streamed answer, event by event); this file resolves the connector and sends the
//! call.

mod plain;
mod stream;
mod tokens;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;
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

use plain::*;
pub use tokens::{count_tokens, prompt_metered};
pub use wire::{parse_chat, ChatCall, Models, MAX_CHOICES};

/// The tenant's LLM connector serving `model`, lowest id first.
fn serving<'a>(snap: &'a Snapshot, tenant: &str, model: &str) -> Option<&'a Arc<ConnectorInfo>> {
    let t = snap.tenant(tenant)?;
    let mut ids: Vec<&Arc<ConnectorInfo>> = t
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
        if crate::decide::visible(snap, req, mode, at_ms, decision_id) {
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
        t.rec.request = Some(base);
        t.rec.snapshot = Some(snap.hash().to_string());
        t.mode = Some(mode);
        t.rec.response_hash = Some(content_hash(&bytes));
        t.rec.bytes_out = bytes.len() as u64;
        t.rec.outcome = Some(Outcome::Allowed);
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
    // Resolved once, when the call was parsed.
    let info = chat
        .info
        .clone()
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
        t.rec.input_tokens = input;
        t.rec.cost_usd = cost(&prices, input, 0);
        t.rec.prompt_hash = Some(content_hash(chat.prompt_text.as_bytes()));
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
