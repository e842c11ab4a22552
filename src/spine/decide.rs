//! Decide: run the pure decision function on the call's facts, the run's usage and the mode,
//! reserve what an allowed call may consume (in the same critical section: see `meter`), and
//! enforce the outcome — refuse, stop or kill the run, or ask for approval (PAUSE). NEAR and
//! BREACH alerts go to the event path and never wait.

use super::meter::{Ledger, Pending};
use super::state::Runtime;
use super::{next, BoxFut, Call, Next, Refusal, Step};
use std::sync::Arc;

use crate::codes::Code;
use crate::decide::{Decision, Request};
use crate::policy::model::Action;
use crate::spine::state::alerts::Alert;
use crate::spine::state::runs::{take_approved, Brief, RunState};
use crate::spine::state::usage::{Scopes, Session};

#[derive(Clone)]
pub struct Decide;

/// What identifies "the same call" for an approval: retried in the same run, it passes.
pub fn fingerprint(r: &Request) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        r.channel.as_str(),
        r.connector.as_deref().unwrap_or(""),
        r.model.as_deref().unwrap_or(""),
        r.tool.as_deref().unwrap_or(""),
        r.template.as_deref().unwrap_or("")
    )
}

/// Run `f` with the ledger of this call: its snapshot, its run's step, run and session usage,
/// the sliding windows and the budget lock.
fn with_ledger<R>(call: &Call, f: impl FnOnce(&Ledger<'_>) -> R) -> Result<R, Refusal> {
    let snap = call
        .snapshot
        .as_ref()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    let run = call
        .run
        .as_ref()
        .ok_or_else(|| Refusal::internal("no run"))?;
    let rt = &call.rt;
    let (step, _) = run.step(&call.ctx.step_id);
    let ledger = Ledger {
        lock: &rt.runs.budget,
        scopes: Scopes {
            step: &step,
            run: &run.usage,
            session: Session::new(&rt.runs, &call.ctx.session_id),
            sliding: &rt.runs.sliding,
            now_ms: Runtime::now_ms(),
        },
        snapshot: snap,
        mode: rt.mode_for(&call.ctx.tenant),
        at_ms: call.ctx.at_ms,
        decision_id: &call.ctx.decision_id,
    };
    let t0 = std::time::Instant::now();
    let r = f(&ledger);
    rt.metrics.decision(t0.elapsed().as_secs_f64());
    Ok(r)
}

/// Decide again mid-call, with facts the call revealed (a longer answer, PII in a reply);
/// `req` states the call's whole amount so far. A refusing decision replaces the call's
/// recorded decision — with the request and usage it was taken on, so `evidence replay`
/// reproduces it (so does one the mode downgraded to WARN). Otherwise the call's reservation
/// grows to cover `req` (a stream past what it reserved draws from the shared headroom).
/// Same-step enforcement rests on this.
pub fn recheck(call: &Call, req: Request) -> Result<Option<Decision>, Refusal> {
    let mut pending = call
        .trace
        .lock()
        .ok()
        .and_then(|mut t| t.pending_meter.take());
    let refused = with_ledger(call, |l| {
        l.recheck(&req, pending.as_mut().map(|p| &mut p.held))
    });
    if let Some(p) = pending {
        call.trace(|t| t.pending_meter = Some(p));
    }
    let Some((d, usage)) = refused? else {
        return Ok(None);
    };
    if let Some(run) = &call.run {
        run.remember(Brief::of(&d));
    }
    call.trace(|t| {
        t.rec.request = Some(req);
        t.rec.usage = Some(usage);
        t.decision = Some(d.clone());
    });
    // A blocking outcome the mode downgraded (degraded: WARN) is recorded; the call goes on.
    Ok(d.refused().then_some(d))
}

/// The refusal a refusing decision becomes, with its run-state effects applied.
pub fn enforce(run: &RunState, d: &Decision) -> Refusal {
    let code = d.code.unwrap_or(Code::PolicyDenied);
    if d.ends_run() {
        run.end(d.action, &d.decision_id, code);
    }
    let why = d
        .reasons
        .first()
        .map(|r| {
            if r.detail.is_empty() {
                r.code.as_str().to_string()
            } else {
                format!("{} ({})", r.code.as_str(), r.detail)
            }
        })
        .unwrap_or_default();
    let message = match &d.policy {
        Some(p) => format!("{} by policy {p}: {why}", d.action.as_str()),
        None if code == Code::NoAllowPolicy => {
            "no active policy allows this call (deny by default)".to_string()
        }
        None => format!("{}: {why}", d.action.as_str()),
    };
    let message = if d.held_back {
        format!(
            "{message}; the headroom is held by calls of this run in flight, retry when they end"
        )
    } else {
        message
    };
    Refusal::new(code, message).by_policy(d.policy.as_deref())
}

/// The decide layer behind a connector's mid-call checks.
struct DecideGuard;

impl crate::connectors::Guard for DecideGuard {
    fn recheck(&self, call: &Call, req: Request) -> Result<Option<Decision>, Refusal> {
        recheck(call, req)
    }

    fn enforce(&self, call: &Call, d: &Decision) -> Refusal {
        match &call.run {
            Some(run) => enforce(run, d),
            None => Refusal::internal("a refusing decision for a call without a run"),
        }
    }
}

/// Send NEAR and BREACH alerts to the event path.
pub fn alert(call: &Call, d: &Decision) {
    let rt = &call.rt;
    let base = |kind: &'static str,
                policy: &str,
                limit: usize,
                metric: &str,
                tier: f64,
                used: f64,
                max: f64| Alert {
        kind,
        run_id: call.ctx.run_id.clone(),
        decision_id: d.decision_id.clone(),
        tenant: call.ctx.tenant.clone(),
        agent: call.ctx.agent.clone(),
        policy: policy.to_string(),
        limit,
        metric: metric.to_string(),
        tier,
        used,
        max,
        at_ms: d.at_ms,
    };
    for n in d.near.iter().filter(|n| !n.shadow) {
        if !rt.alerts.send(base(
            "near",
            &n.policy,
            n.limit,
            n.metric.as_str(),
            n.tier,
            n.used,
            n.max,
        )) {
            rt.metrics.alert_dropped();
        }
    }
    for r in &d.reasons {
        if matches!(r.code.as_str(), "budget_exceeded" | "rate_limited") {
            let policy = r.policy.as_deref().unwrap_or("");
            if !rt
                .alerts
                .send(base("breach", policy, 0, r.code.as_str(), 1.0, 0.0, 0.0))
            {
                rt.metrics.alert_dropped();
            }
        }
    }
}

impl Step for Decide {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            if call.target.as_ref().is_some_and(|t| t.local()) {
                // A local answer computed from the policies themselves; nothing upstream.
                return next(rest, call).await;
            }
            let req = call
                .request
                .clone()
                .ok_or_else(|| Refusal::internal("no request facts"))?;
            let run = call
                .run
                .clone()
                .ok_or_else(|| Refusal::internal("no run"))?;
            let want = call.target.as_ref().and_then(|t| t.want());
            let fp = fingerprint(&req);
            let mut approval = None;
            let a = with_ledger(&call, |l| {
                l.admit(&req, want.as_ref(), &mut || {
                    approval = take_approved(&run, &fp);
                    approval.is_some()
                })
            })?;
            let d = a.decision;
            let hash = d.snapshot.to_string();
            let pending = a.held.map(|held| {
                Pending::new(
                    held,
                    run.step(&call.ctx.step_id).0,
                    call.ctx.session_id.clone(),
                    run.clone(),
                    call.rt.clone(),
                )
            });
            call.trace(|t| {
                t.rec.request = Some(a.request);
                t.rec.usage = Some(a.usage);
                t.decision = Some(d.clone());
                t.rec.snapshot = Some(hash);
                t.pending_meter = pending;
                if let Some(id) = &approval {
                    t.approval_id = Some(id.clone());
                }
            });
            run.remember(Brief::of(&d));
            alert(&call, &d);
            if !a.passed {
                let mut r = enforce(&run, &d);
                if d.action == Action::Pause {
                    let id = format!("apr-{}", uuid::Uuid::new_v4());
                    call.rt.runs.add_approval(&run, &id, &fp);
                    call.trace(|t| t.approval_id = Some(id.clone()));
                    r.approval_id = Some(id);
                }
                return Err(r);
            }
            // The run is running from its first allowed call on (`RunState::started`).
            run.mark_started();
            if let (Some(target), Some(plan)) = (call.target.as_mut(), a.plan) {
                target.plan(&plan);
            }
            call.decision = Some(d);
            call.guard = Some(Arc::new(DecideGuard));
            next(rest, call).await
        })
    }
}
