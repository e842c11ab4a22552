//! Evidence: one record per call, whatever happened (`docs/evidence.md`), durable before the response
//! completes. Also the spine's panic boundary: a panic below ends as an `internal_error`
//! refusal with its record, never as a pass.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use super::state::Runtime;
use super::{next, BoxFut, Call, Ctx, Next, Refusal, Step, Trace};
use crate::evidence::record::{Basis, Content, Kind, Outcome, Record};

#[derive(Clone)]
pub struct Evidence;

/// Writes the call's record once, from its trace. The stream of a streamed answer holds one
/// and seals before sending its last event.
#[derive(Clone)]
pub struct Sealer {
    inner: Arc<SealerInner>,
}

struct SealerInner {
    rt: Arc<Runtime>,
    ctx: Arc<Ctx>,
    trace: Arc<Mutex<Trace>>,
    done: tokio::sync::Mutex<Option<Result<(), Refusal>>>,
}

impl Sealer {
    pub fn new(rt: Arc<Runtime>, ctx: Arc<Ctx>, trace: Arc<Mutex<Trace>>) -> Self {
        Sealer {
            inner: Arc::new(SealerInner {
                rt,
                ctx,
                trace,
                done: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Meter the call and append its record; later calls return the first result.
    pub async fn seal(&self) -> Result<(), Refusal> {
        let mut done = self.inner.done.lock().await;
        if let Some(r) = done.as_ref() {
            return r.clone();
        }
        let (record, retire) = {
            let mut t = match self.inner.trace.lock() {
                Ok(t) => t,
                Err(p) => p.into_inner(),
            };
            if let Some(m) = t.pending_meter.take() {
                m.apply(&t);
            }
            let retire = t.retire.take();
            (build(&self.inner.rt, &self.inner.ctx, &mut t), retire)
        };
        let channel = record.channel.map_or("none", |c| c.as_str());
        let action = record.action.map_or("none", |a| a.as_str());
        self.inner.rt.metrics.call(channel, action, record.code);
        let r = self
            .inner
            .rt
            .spool
            .append(record)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "evidence append failed; refusing");
                Refusal::internal("evidence could not be recorded")
            });
        if let Some(run) = retire {
            self.inner.rt.runs.retire(&run);
        }
        *done = Some(r.clone());
        r
    }
}

/// The record of a call: what the layers wrote into the trace's record, with the call's ids,
/// its decision and what the outcome rests on. Sealing happens once, so the record moves out.
fn build(rt: &Runtime, ctx: &Ctx, t: &mut Trace) -> Record {
    let mut r = std::mem::take(&mut t.rec);
    r.kind = Kind::Call;
    r.evidence_id = ctx.evidence_id.clone();
    r.at_ms = ctx.at_ms;
    r.latency_us = ctx.started.elapsed().as_micros() as u64;
    r.decision_id = Some(ctx.decision_id.clone());
    r.run_id = Some(ctx.run_id.clone());
    r.step_id = Some(ctx.step_id.clone());
    r.session_id = Some(ctx.session_id.clone());
    r.tenant = Some(ctx.tenant.clone());
    r.project = Some(ctx.project.clone());
    r.agent = Some(ctx.agent.clone());
    r.actor = ctx.actor.clone();
    if let Some(req) = &r.request {
        r.channel = Some(req.channel);
        r.connector = req.connector.clone();
        r.model = req.model.clone();
        r.tool = req.tool.clone();
        r.template = req.template.clone();
    }
    r.mode = t.mode.unwrap_or_else(|| rt.mode_for(&ctx.tenant));
    // What the outcome rests on (replay derives the decision again and checks the rest).
    let basis = match (&t.decision, &t.refused) {
        (Some(d), Some(f)) if d.refused() && d.code == Some(f.code) => Basis::Decision,
        // Allowed (or approved), then ended by something else.
        (Some(_), Some(_)) => Basis::AfterDecision,
        (Some(_), None) => Basis::Decision,
        (None, Some(_)) => Basis::BeforeDecision,
        (None, None) => Basis::Local,
    };
    r.basis = Some(basis);
    if let Some(d) = &mut t.decision {
        r.mode = d.mode;
        r.action = Some(d.action);
        r.code = d.code;
        r.policy = d.policy.as_deref().map(str::to_string);
        r.reasons = std::mem::take(&mut d.reasons);
    }
    if let Some(refused) = &t.refused {
        r.code = Some(refused.recorded_as.unwrap_or(refused.code));
        if r.policy.is_none() {
            r.policy = refused.policy_id.clone();
        }
    }
    r.outcome = Some(r.outcome.unwrap_or(match (&t.refused, &t.decision) {
        (Some(f), _) => Outcome::of_refusal(f.recorded_as.unwrap_or(f.code), false),
        (None, Some(d)) if d.downgraded_from.is_some() && d.mode == crate::decide::Mode::Bypass => {
            Outcome::Bypassed
        }
        _ => Outcome::Allowed,
    }));
    r.content = stored_content(t.content.take(), t.decision.as_ref(), rt);
    if let Some(a) = &t.approval_id {
        // "asked": this call was refused pending the approval; "used": an approval let it pass.
        let refused_for_it = basis == Basis::Decision && t.refused.is_some();
        let how = if refused_for_it { "asked" } else { "used" };
        r.audit = Some(serde_json::json!({ "approval_id": a, "approval": how }));
    }
    r
}

/// The content a record may hold: nothing without a decision that let the call through (a
/// call refused before any allow decision stores none); of what was gathered, only the parts
/// every firing allow policy permits (`inspection.prompts`, `.responses`), and those with every
/// PII or secret span the policies do not permit replaced by a placeholder. Every prompt and
/// response in evidence passes here, whatever path gathered it.
fn stored_content(
    content: Option<Content>,
    decision: Option<&crate::decide::Decision>,
    rt: &Runtime,
) -> Option<Content> {
    let (content, d) = (content?, decision?);
    let i = d.inspection;
    let key = rt.spool.redaction_key();
    let keep = |on: bool, text: Option<String>| {
        text.filter(|_| on)
            .map(|s| crate::evidence::redact::redact(&s, &i, key))
    };
    let c = Content {
        prompt: keep(i.prompts, content.prompt),
        response: keep(i.responses, content.response),
    };
    (c.prompt.is_some() || c.response.is_some()).then_some(c)
}

impl Step for Evidence {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        let sealer = Sealer::new(call.rt.clone(), call.ctx.clone(), call.trace.clone());
        call.sealer = Some(sealer.clone());
        let trace = call.trace.clone();
        // The call runs to its record in a task of its own: when the agent hangs up, hyper drops
        // this future, but the task goes on, so the call (already sent upstream, perhaps) still
        // gets its record. A panic below is caught inside the task and ends as a refusal.
        let task = tokio::spawn(async move {
            let result = match AssertUnwindSafe(next(rest, call)).catch_unwind().await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("panic on the request path; refusing");
                    Err(Refusal::internal("internal error"))
                }
            };
            match result {
                Err(refusal) => {
                    if let Ok(mut t) = trace.lock() {
                        t.refused = Some(refusal.clone());
                    }
                    sealer.seal().await?;
                    Err(refusal)
                }
                Ok(reply) => {
                    let streaming = trace.lock().map(|t| t.streaming).unwrap_or(false);
                    if !streaming {
                        sealer.seal().await?;
                    }
                    Ok(reply)
                }
            }
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r,
                Err(e) => {
                    // Only a panic while sealing gets here; the record may be missing, so the
                    // call is refused.
                    tracing::error!(error = %e, "panic while recording evidence; refusing");
                    Err(Refusal::internal("internal error"))
                }
            }
        })
    }
}
