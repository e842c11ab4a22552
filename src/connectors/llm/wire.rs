//! The wire: an OpenAI chat completion request as the agent sends it, parsed and checked into
//! a [`ChatCall`].

use super::*;
use crate::decide::reserve::Plan;
use crate::policy::model::Channel;
use crate::spine::CallState;

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
    /// The connector serving the call, resolved from the call's snapshot when it was parsed.
    pub info: Option<Arc<ConnectorInfo>>,
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

/// The list of models this agent may use (`GET /v1/models`): answered from the policies.
#[derive(Debug, Clone, Copy)]
pub struct Models;

impl crate::spine::Target for Models {
    fn channel(&self) -> Channel {
        Channel::Llm
    }
    fn local(&self) -> bool {
        true
    }
    fn facts(&self, _call: &CallState) -> Option<(PiiFact, SecretFact)> {
        None
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl crate::spine::Target for ChatCall {
    fn channel(&self) -> Channel {
        Channel::Llm
    }
    fn facts(&self, _call: &CallState) -> Option<(PiiFact, SecretFact)> {
        Some((
            PiiFact::of_mask(self.pii_kinds()),
            SecretFact::of_mask(self.secret_kinds()),
        ))
    }
    fn want(&self) -> Option<Want> {
        Some(ChatCall::want(self))
    }
    fn plan(&mut self, plan: &Plan) {
        self.clamp = plan.max_tokens;
        self.reserved_output = plan.reserve.output_tokens as u64;
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl ChatCall {
    /// What the call asks for, for its reservation.
    pub fn want(&self) -> Want {
        Want {
            n: self.n,
            max_tokens: self.max_tokens,
            output_usd_per_token: self.prices.output_usd_per_mtok / 1e6,
            rows: None,
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

pub(super) fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal::new(Code::InvalidParams, msg)
}
/// The most choices (`n`) one call may ask for (OpenAI's own bound).
pub const MAX_CHOICES: u64 = 128;
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
    let info = match wanted {
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
            Some(c.clone())
        }
        None => serving(snap, tenant, &model).cloned(),
    };
    let connector = info.as_ref().map(|c| c.id.to_string());
    let prompt_tokens =
        prompt_metered(snap, tenant).then(|| count_tokens(&model, &prompt_text) + overhead);
    let prices = info
        .as_deref()
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
        info,
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
pub(super) fn part_text(p: &Value) -> Option<&str> {
    p.get("text")
        .or_else(|| p.get("refusal"))
        .and_then(Value::as_str)
}

pub(super) fn push_text(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}
