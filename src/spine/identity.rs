//! Identity: who is calling, and which run, step and session — the first layer of the spine.
//!
//! Tenant, project and agent come from the sidecar's configuration, never from the request.
//! Per call the agent may send `x-warden-run-id`, `x-warden-step-id`, `x-warden-session-id`
//! (defaults to the run id), `x-warden-actor` (the human it acts for) and `x-warden-api-key`
//! (the id of the key it uses, for `scope.api_keys`). A call without a run id gets one,
//! returned in `x-warden-run-id`; a call without a step id is a step of its own.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::Incoming;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::{Call, CallState, Ctx, Next, Refusal, Reply, Trace};
use crate::codes::Code;
use crate::sidecar::state::Shared;

pub const RUN: &str = "x-warden-run-id";
pub const STEP: &str = "x-warden-step-id";
pub const SESSION: &str = "x-warden-session-id";
pub const ACTOR: &str = "x-warden-actor";
pub const API_KEY: &str = "x-warden-api-key";

/// The agent listener's service: establishes identity, then runs the spine.
#[derive(Clone)]
pub struct Identity {
    pub shared: Arc<Shared>,
    pub spine: Next,
}

fn header(parts: &http::request::Parts, name: &str) -> Result<Option<String>, Refusal> {
    let Some(v) = parts.headers.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
                })
        })
        .ok_or_else(|| {
            Refusal::new(
                Code::BadRequest,
                format!("header {name} must be 1-128 characters of A-Z a-z 0-9 - _ . : @"),
            )
        })?;
    Ok(Some(s.to_string()))
}

/// Build the context of a call from the configuration and the request headers.
pub fn establish(shared: &Shared, parts: &http::request::Parts) -> (Ctx, Option<Refusal>) {
    let id = &shared.cfg.identity;
    let mut problem = None;
    let mut get = |name: &str| match header(parts, name) {
        Ok(v) => v,
        Err(r) => {
            problem.get_or_insert(r);
            None
        }
    };
    let run = get(RUN);
    let step = get(STEP);
    let session = get(SESSION);
    let actor = get(ACTOR);
    let api_key = get(API_KEY);
    let decision_id = crate::ids::v7().to_string();
    let run_assigned = run.is_none();
    let run_id = run.unwrap_or_else(|| format!("run-{}", crate::ids::v4()));
    let ctx = Ctx {
        tenant: id.tenant.clone(),
        project: id.project.clone(),
        agent: id.agent.clone(),
        actor,
        api_key,
        session_id: session.unwrap_or_else(|| run_id.clone()),
        step_id: step.unwrap_or_else(|| format!("step-{decision_id}")),
        run_id,
        run_assigned,
        evidence_id: crate::ids::v7().to_string(),
        decision_id,
        started: std::time::Instant::now(),
        at_ms: Shared::now_ms(),
    };
    (ctx, problem)
}

impl Service<http::Request<Incoming>> for Identity {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let spine = self.spine.clone();
        Box::pin(async move {
            let (parts, incoming) = req.into_parts();
            let (ctx, problem) = establish(&shared, &parts);
            let ctx = Arc::new(ctx);
            let span = tracing::info_span!(
                "call",
                run = %ctx.run_id,
                step = %ctx.step_id,
                decision = %ctx.decision_id,
                path = %parts.uri.path(),
            );
            let trace = Trace {
                refusal: problem,
                ..Trace::default()
            };
            let call = Call::new(CallState {
                ctx: ctx.clone(),
                parts,
                incoming: Some(incoming),
                body: bytes::Bytes::new(),
                target: None,
                run: None,
                new_run: false,
                snapshot: None,
                request: None,
                decision: None,
                trace: Arc::new(Mutex::new(trace)),
                sealer: None,
                shared: shared.clone(),
            });
            match spine.oneshot(call).instrument(span).await {
                Ok(r) => Ok(r),
                // Rescue turns every refusal into a response; this is the last resort.
                Err(r) => Ok(super::rescue::to_response(&r, &ctx.decision_id)),
            }
        })
    }
}
