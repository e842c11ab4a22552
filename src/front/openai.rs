//! The OpenAI-compatible routes of the agent port: `POST /v1/chat/completions` (its JSON body
//! parsed and checked into a chat target) and `GET /v1/models`.

use crate::codes::Code;
use crate::connectors::llm;
use crate::decide::Request;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Target};

/// A chat completion: the body must be labelled JSON; the connector serving the model is
/// resolved (`x-warden-connector` picks one), and the prompt's tokens and cost are the call's
/// amounts before the answer.
pub fn chat(
    call: &Call,
    snap: &Snapshot,
    request: &mut Request,
) -> Result<Box<dyn Target>, Refusal> {
    json_body(&call.parts.headers, &call.body)?;
    let wanted = call
        .parts
        .headers
        .get("x-warden-connector")
        .and_then(|v| v.to_str().ok());
    let chat = llm::parse_chat(&call.body, snap, &call.ctx.tenant, wanted)?;
    request.connector = chat.connector.clone();
    request.model = Some(chat.model.clone());
    let input = chat.prompt_tokens.unwrap_or(0);
    request.delta.input_tokens = input as f64;
    request.delta.cost_usd = input as f64 * chat.prices.input_usd_per_mtok / 1e6;
    Ok(Box::new(chat))
}

/// A JSON endpoint reads only a body labelled JSON (`application/json`, `application/*+json`,
/// parameters allowed): a browser's cross-site "simple request" (`text/plain`, a form) must not
/// reach the decision, let alone spend a budget. An empty body needs no label.
pub fn json_body(headers: &http::HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    if body.is_empty() {
        return Ok(());
    }
    let label = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let json = label.as_deref().is_some_and(is_json_media_type);
    if json {
        return Ok(());
    }
    Err(Refusal::new(
        Code::UnsupportedMediaType,
        match label {
            Some(l) => format!(
                "this endpoint reads JSON; the body is labelled `{l}` (send \
                 `Content-Type: application/json`)"
            ),
            None => "this endpoint reads JSON; the body has no Content-Type (send \
                     `Content-Type: application/json`)"
                .into(),
        },
    ))
}

/// `application/json` or `application/<anything>+json`, any case, parameters ignored.
pub fn is_json_media_type(label: &str) -> bool {
    let essence = label
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(sub) = essence.strip_prefix("application/") else {
        return false;
    };
    sub == "json" || (sub.ends_with("+json") && sub.len() > "+json".len() && !sub.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/jsonx",
            "application/+json",
            "application/json-seq",
            "",
            "json",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }

    #[test]
    fn a_body_needs_a_json_label() {
        let mut h = http::HeaderMap::new();
        assert!(json_body(&h, b"").is_ok());
        assert_eq!(
            json_body(&h, b"{}").unwrap_err().code,
            Code::UnsupportedMediaType
        );
        h.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(
            json_body(&h, b"{}").unwrap_err().code,
            Code::UnsupportedMediaType
        );
        h.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert!(json_body(&h, b"{}").is_ok());
    }
}
