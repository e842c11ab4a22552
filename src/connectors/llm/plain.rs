//! A buffered (non-streamed) answer: read within the size cap, every string scanned, decided
//! again when it revealed something, then passed on unmodified or withheld.

use super::*;

/// Calls `f` on every string of a choice's `message` or `delta` that the model wrote: all of
/// them (fields not known today included) but the structural `role`, `id` and `type`.
pub(super) fn output_strings<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
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
pub(super) async fn plain(
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
        t.rec.input_tokens = input;
        t.rec.output_tokens = output;
        t.rec.cost_usd = cost(&prices, input, output);
        t.rec.bytes_out = n;
        t.rec.response_hash = Some(content_hash(text.as_bytes()));
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
            t.rec.outcome = Some(Outcome::Cut);
            t.rec.cut = Some(Cut {
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
