//! The one place a refusal becomes a response (`docs/codes.md`), and where every response gets the
//! `x-warden-*` headers.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};

use super::{next, BoxFut, Call, Ctx, Next, Refusal, Reply, Step};

#[derive(Clone)]
pub struct Rescue;

impl Step for Rescue {
    fn call(&self, call: Call, rest: Next) -> BoxFut {
        let ctx = call.ctx.clone();
        let rt = call.rt.clone();
        Box::pin(async move {
            let mut reply = match next(rest, call).await {
                Ok(r) => r,
                Err(refusal) => {
                    rt.metrics.refusal(refusal.code);
                    to_response(&refusal, &ctx.decision_id)
                }
            };
            stamp(&mut reply, &ctx);
            Ok(reply)
        })
    }
}

/// The JSON error response for a refusal.
pub fn to_response(r: &Refusal, decision_id: &str) -> Reply {
    let body = serde_json::to_vec(&r.error_json(decision_id)).unwrap_or_default();
    let mut resp = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() =
        StatusCode::from_u16(r.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = r
        .approval_id
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert("x-warden-approval-id", id);
    }
    if let Some(allow) = r.allow {
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn stamp(reply: &mut Reply, ctx: &Ctx) {
    let h = reply.headers_mut();
    for (name, value) in [
        ("x-warden-decision-id", &ctx.decision_id),
        ("x-warden-run-id", &ctx.run_id),
        ("x-warden-evidence-id", &ctx.evidence_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
}
