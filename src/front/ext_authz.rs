//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`) on the agent
//! port (docs/ext_authz.md): a mesh that already routes the agent's HTTP through Envoy or Istio
//! asks Warden for the decision.
//!
//! The checked request is read into the absolute-form request the egress front end takes
//! (`{scheme}://{host}{path}`), so it is matched to an HTTP connector by host and base path,
//! normalised and judged exactly as an egress call, and dispatched through the same spine with
//! `decide_only`: decided, metered and recorded, but not forwarded — Envoy forwards what is
//! allowed. A refusal becomes a denied response in the HTTP shape of every other refusal (the
//! code's status, the OpenAI-style error body, `x-warden-decision-id`), with the gRPC status of
//! the code in the check's `status`.

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::{Request, Response, Status};

use super::agent::Agent;
use crate::codes::Code;
use crate::spine::{Ctx, Refusal};

/// The method's path on the agent port.
pub const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

pub struct ExtAuthz {
    agent: super::grpc::SyncAgent,
}

impl ExtAuthz {
    pub fn new(agent: Agent) -> Self {
        ExtAuthz {
            agent: super::grpc::SyncAgent::new(agent),
        }
    }
}

fn denied(r: &Refusal, ctx: &Ctx) -> CheckResponse {
    let body = super::render::error_json(r, &ctx.decision_id).to_string();
    let status = HttpStatusCode::try_from(i32::from(r.code.http_status()))
        .unwrap_or(HttpStatusCode::Forbidden);
    let mut d = DeniedHttpResponseBuilder::new();
    d.set_http_status(status)
        .add_header("content-type", "application/json", None, false)
        .add_header(
            "x-warden-decision-id",
            ctx.decision_id.as_str(),
            None,
            false,
        )
        .add_header("x-warden-run-id", ctx.run_id.as_str(), None, false)
        .set_body(body);
    let d: DeniedHttpResponse = d.build();
    let mut resp = CheckResponse::with_status(Status::new(
        tonic::Code::from(r.code.grpc_status()),
        r.message.clone(),
    ));
    resp.set_http_response(d);
    resp
}

/// The head of the egress request a check stands for.
fn head(req: &CheckRequest) -> Result<(http::request::Parts, Bytes), Refusal> {
    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or_else(|| {
            Refusal::new(
                Code::BadRequest,
                "the check carries no HTTP request (attributes.request.http)",
            )
        })?;
    if http.host.is_empty() || !http.path.starts_with('/') {
        return Err(Refusal::new(
            Code::BadRequest,
            "the checked request needs a host and a path",
        ));
    }
    let scheme = match http.scheme.as_str() {
        "" | "http" => "http",
        "https" => "https",
        other => {
            return Err(Refusal::new(
                Code::BadRequest,
                format!("unsupported scheme `{other}`"),
            ))
        }
    };
    let method = if http.method.is_empty() {
        "GET"
    } else {
        http.method.as_str()
    };
    let method = http::Method::from_bytes(method.as_bytes())
        .map_err(|_| Refusal::new(Code::BadRequest, "the checked method is not an HTTP method"))?;
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{}{}", http.host, http.path))
        .version(http::Version::HTTP_11);
    for (k, v) in &http.headers {
        // Pseudo-headers (`:authority`, `:path`, …) are the head's own fields above.
        if !k.starts_with(':') {
            b = b.header(k.as_str(), v.as_str());
        }
    }
    let body = if !http.raw_body.is_empty() {
        Bytes::from(http.raw_body.clone())
    } else {
        Bytes::from(http.body.clone().into_bytes())
    };
    b.body(()).map(|r| (r.into_parts().0, body)).map_err(|e| {
        Refusal::new(
            Code::BadRequest,
            format!("the checked request is malformed: {e}"),
        )
    })
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let agent = self.agent.get();
        let (parts, body, problem) = match head(req.get_ref()) {
            Ok((p, b)) => (p, b, None),
            Err(r) => {
                let p = http::Request::builder()
                    .method(http::Method::POST)
                    .uri("/ext_authz")
                    .body(())
                    .map(|r| r.into_parts().0)
                    .map_err(|e| Status::internal(e.to_string()))?;
                (p, Bytes::new(), Some(r))
            }
        };
        let full = super::grpc::body(body);
        let deadline = super::grpc::deadline(&req.metadata().clone().into_headers());
        let d = agent
            .dispatch_with(parts, full, problem, deadline, true)
            .await;
        let resp = match d.result {
            Ok(_) => {
                let mut ok = OkHttpResponseBuilder::new();
                ok.add_header(
                    "x-warden-decision-id",
                    d.ctx.decision_id.as_str(),
                    None,
                    false,
                )
                .add_header("x-warden-run-id", d.ctx.run_id.as_str(), None, false);
                let mut resp = CheckResponse::with_status(Status::ok(""));
                resp.set_http_response(ok.build());
                resp
            }
            Err(r) => denied(&r, &d.ctx),
        };
        Ok(Response::new(resp))
    }
}
