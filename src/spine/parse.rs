//! Parse: route the call and read its body into a typed target and the facts `decide` needs.

use super::{next, BoxFut, Call, Next, Refusal, Step, Target};
use crate::codes::Code;
use crate::connectors::llm;
use crate::decide::Request;
use crate::policy::model::Channel;

#[derive(Clone)]
pub struct Parse;

impl Step for Parse {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            let snap = call
                .snapshot
                .clone()
                .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
            let path = call.parts.uri.path().to_string();
            let method = call.parts.method.clone();
            let mut request = Request {
                tenant: call.ctx.tenant.clone(),
                project: call.ctx.project.clone(),
                agent: call.ctx.agent.clone(),
                api_key: call.ctx.api_key.clone(),
                actor: call.ctx.actor.clone(),
                channel: Channel::Llm,
                connector: None,
                model: None,
                tool: None,
                template: None,
                new_run: call.new_run,
                facts: Default::default(),
                delta: Default::default(),
            };
            // Absolute-form is how an HTTP/1 client talks to a proxy; HTTP/2 always sends the
            // scheme and authority, so there it is an ordinary request to us.
            let absolute = call.parts.version < http::Version::HTTP_2
                && call.parts.uri.scheme().is_some()
                && call.parts.uri.authority().is_some();
            let target = match (method.as_str(), path.as_str()) {
                ("CONNECT", _) => {
                    let t = crate::connectors::egress::connect(&call, &snap)?;
                    request.channel = Channel::Http;
                    request.connector = Some(t.connector.clone());
                    Target::Tunnel(t)
                }
                _ if absolute => {
                    let hc = crate::connectors::egress::absolute(&call, &snap)?;
                    request.channel = Channel::Http;
                    request.connector = Some(hc.connector.clone());
                    Target::Http(hc)
                }
                ("POST", "/v1/chat/completions") => {
                    json_body(&call.parts.headers, &call.body)?;
                    let wanted = call
                        .parts
                        .headers
                        .get("x-warden-connector")
                        .and_then(|v| v.to_str().ok());
                    let chat = llm::parse_chat(&call.body, &snap, &call.ctx.tenant, wanted)?;
                    request.connector = chat.connector.clone();
                    request.model = Some(chat.model.clone());
                    let input = chat.prompt_tokens.unwrap_or(0);
                    request.delta.input_tokens = input as f64;
                    request.delta.cost_usd = input as f64 * chat.prices.input_usd_per_mtok / 1e6;
                    Target::Chat(chat)
                }
                ("GET", "/v1/models") => Target::Models,
                (_, p) if p.starts_with("/http/") => {
                    let hc = crate::connectors::http::parse(&call, &snap)?;
                    request.channel = Channel::Http;
                    request.connector = Some(hc.connector.clone());
                    Target::Http(hc)
                }
                (_, "/v1/chat/completions") => {
                    return Err(Refusal::wrong_method(&method, &path, "POST"))
                }
                (_, "/v1/models") => return Err(Refusal::wrong_method(&method, &path, "GET")),
                _ => {
                    return Err(Refusal::new(
                        Code::UnknownRoute,
                        format!("unknown endpoint {path}"),
                    ))
                }
            };
            request.delta.bytes = call.body.len() as f64;
            if let Some(c) = request
                .connector
                .as_deref()
                .and_then(|c| snap.connector(&call.ctx.tenant, c))
            {
                let plane = c.plane.to_string();
                call.trace(|t| t.rec.plane = Some(plane));
            }
            call.target = Some(target);
            call.request = Some(request);
            next(rest, call).await
        })
    }
}

/// A JSON endpoint reads only a body labelled JSON (`application/json`, `application/*+json`,
/// parameters allowed): a browser's cross-site "simple request" (`text/plain`, a form) must not
/// reach the decision, let alone spend a budget. An empty body needs no label.
fn json_body(headers: &http::HeaderMap, body: &[u8]) -> Result<(), Refusal> {
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
            Some(l) => format!("this endpoint reads JSON; the body is labelled `{l}`"),
            None => "this endpoint reads JSON; the body has no Content-Type".into(),
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
