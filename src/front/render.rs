//! Refusals in each front end's wire format, from the one code table (`docs/codes.md`): the
//! OpenAI-style JSON error of the agent port's HTTP routes, a JSON-RPC error object (the MCP
//! front end) and a gRPC status (the gRPC front ends). Also the `x-warden-*` headers every HTTP
//! answer carries. The spine returns a refusal; the front end that took the call renders it.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};

use serde_json::{json, Value};

use crate::spine::{Ctx, Refusal, Reply};

/// The OpenAI-shaped error object of a refusal: the body of an HTTP error, and the data of a
/// cut stream's last event.
pub fn error_json(r: &Refusal, decision_id: &str) -> Value {
    let mut err = json!({
        "type": "warden_error",
        "code": r.code.as_str(),
        "message": r.message,
        "decision_id": decision_id,
        "policy_id": r.policy_id,
    });
    if let (Some(id), Some(obj)) = (&r.approval_id, err.as_object_mut()) {
        obj.insert("approval_id".into(), Value::String(id.clone()));
    }
    json!({ "error": err })
}

/// The last event of a streamed OpenAI answer cut with a refusal: an SSE `data:` event
/// carrying [`error_json`].
pub fn sse_error(r: &Refusal, decision_id: &str) -> Bytes {
    Bytes::from(format!("data: {}\n\n", error_json(r, decision_id)))
}

/// The JSON error response for a refusal (`{"error": {…}}`, the code's HTTP status).
pub fn to_response(r: &Refusal, decision_id: &str) -> Reply {
    let body = serde_json::to_vec(&error_json(r, decision_id)).unwrap_or_default();
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

/// The call's ids on its answer, whatever it was.
pub fn stamp(reply: &mut Reply, ctx: &Ctx) {
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

/// A JSON-RPC 2.0 error response for a refusal: the code's JSON-RPC error code, its message,
/// and in `data` the stable code, the decision id and the policy that refused.
pub fn jsonrpc_error(r: &Refusal, id: Value, decision_id: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": r.code.jsonrpc_code(),
            "message": r.message,
            "data": {
                "code": r.code.as_str(),
                "decision_id": decision_id,
                "policy_id": r.policy_id,
            },
        },
    })
}

/// A refusal as a gRPC status: the numeric status of the code, its message, and the trailing
/// metadata that names the stable code, the decision and the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcStatus {
    pub status: i32,
    pub message: String,
    pub metadata: Vec<(&'static str, String)>,
}

pub fn grpc_status(r: &Refusal, decision_id: &str) -> GrpcStatus {
    let mut metadata = vec![
        ("x-warden-code", r.code.as_str().to_string()),
        ("x-warden-decision-id", decision_id.to_string()),
    ];
    if let Some(p) = &r.policy_id {
        metadata.push(("x-warden-policy-id", p.clone()));
    }
    GrpcStatus {
        status: r.code.grpc_status(),
        message: r.message.clone(),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;

    #[test]
    fn every_front_end_renders_a_refusal_from_the_one_table() {
        let r = Refusal::new(Code::PolicyDenied, "no").by_policy(Some("p1"));
        let http = to_response(&r, "d-1");
        assert_eq!(http.status(), 403);
        let rpc = jsonrpc_error(&r, json!(7), "d-1");
        assert_eq!(rpc["id"], 7);
        assert_eq!(rpc["error"]["code"], -32003);
        assert_eq!(rpc["error"]["data"]["code"], "policy_denied");
        assert_eq!(rpc["error"]["data"]["decision_id"], "d-1");
        assert_eq!(rpc["error"]["data"]["policy_id"], "p1");
        let g = grpc_status(&r, "d-1");
        assert_eq!(g.status, 7, "PERMISSION_DENIED");
        assert!(g
            .metadata
            .contains(&("x-warden-code", "policy_denied".into())));
        assert!(g.metadata.contains(&("x-warden-policy-id", "p1".into())));
        for code in Code::ALL {
            let r = Refusal::new(*code, "x");
            assert_eq!(to_response(&r, "d").status().as_u16(), code.http_status());
            assert_eq!(
                jsonrpc_error(&r, Value::Null, "d")["error"]["code"],
                code.jsonrpc_code()
            );
            assert_eq!(grpc_status(&r, "d").status, code.grpc_status());
        }
    }
}
