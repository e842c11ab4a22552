//! Meter: once a call is allowed, arrange for its final amounts (tokens, cost, bytes, queries)
//! to be counted against every limit its decision metered. The count happens when the call's
//! evidence is sealed, so streamed answers count what actually passed.

use std::sync::Arc;

use super::{next, BoxFut, Call, Next, Step, Trace};
use crate::decide::Meter as MeterKey;
use crate::policy::model::Channel;
use crate::sidecar::runs::RunState;
use crate::sidecar::state::Shared;
use crate::sidecar::usage::{Amounts, Counters, Scopes, Session};

#[derive(Clone)]
pub struct Meter;

/// Usage to count when the call ends.
pub struct Pending {
    meters: Vec<MeterKey>,
    step: Arc<Counters>,
    session_id: String,
    run: Arc<RunState>,
    shared: Arc<Shared>,
    channel: Channel,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("meters", &self.meters)
            .finish()
    }
}

impl Pending {
    pub fn apply(self, t: &Trace) {
        let amounts = Amounts {
            input_tokens: t.input_tokens as f64,
            output_tokens: t.output_tokens as f64,
            cost_usd: t.cost_usd,
            bytes: (t.bytes_in + t.bytes_out) as f64,
            queries: f64::from(u8::from(self.channel == Channel::Sql)),
        };
        let scopes = Scopes {
            step: &self.step,
            run: &self.run.usage,
            session: Session::new(&self.shared.runs, &self.session_id),
            sliding: &self.shared.runs.sliding,
            now_ms: Shared::now_ms(),
        };
        scopes.record(&self.meters, &amounts);
        if self.channel == Channel::Llm {
            self.shared
                .metrics
                .tokens(t.input_tokens, t.output_tokens, t.cost_usd);
        }
    }
}

impl Step for Meter {
    fn call(&self, call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            if let (Some(d), Some(run), Some(req)) = (&call.decision, &call.run, &call.request) {
                let (step, _) = run.step(&call.ctx.step_id);
                let pending = Pending {
                    meters: d.meters.clone(),
                    step,
                    session_id: call.ctx.session_id.clone(),
                    run: run.clone(),
                    shared: call.shared.clone(),
                    channel: req.channel,
                };
                call.trace(|t| t.pending_meter = Some(pending));
            }
            next(rest, call).await
        })
    }
}
