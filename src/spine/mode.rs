//! The gate before any work: the boot guard (no verified snapshot → `not_ready`), bad identity
//! headers, and the run's state (stopped → `run_stopped`, killed → `run_killed`). Also tells
//! whether the call starts its run (no call of the run was allowed yet: `new_run`, which degraded
//! mode refuses) and binds the call to the snapshot that judges its run (`bind_at`, `docs/decisions.md`).

use super::{next, BoxFut, Call, Next, Refusal, Step};
use crate::codes::Code;
use crate::decide::bind::{self, BindEvent};
use crate::spine::state::runs::RunStatus;

#[derive(Clone)]
pub struct ModeGate;

impl Step for ModeGate {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            let Some(current) = call.rt.snapshot() else {
                return Err(Refusal::new(
                    Code::NotReady,
                    "no verified policy snapshot yet; refusing all traffic",
                ));
            };
            if call
                .rt
                .backlog
                .full
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(Refusal::new(
                    Code::NotReady,
                    "the evidence backlog is at its bound (the policy service has not acknowledged it); refusing new calls until it is shipped",
                ));
            }
            let early = call.trace.lock().ok().and_then(|mut t| t.refusal.take());
            if let Some(r) = early {
                return Err(r);
            }
            let runs = &call.rt.runs;
            let run = if call.ctx.run_assigned {
                let run = runs.create_assigned(&call.ctx.run_id, &call.ctx.session_id);
                let retire = run.clone();
                call.trace(|t| t.retire = Some(retire));
                run
            } else {
                runs.get_or_create(&call.ctx.run_id, &call.ctx.session_id).0
            };
            // A run is new until a call of it is allowed: a call refused at the run's start
            // leaves nothing its retry could pass on as a running run (degraded mode refuses
            // new runs), and the retry binds its snapshot afresh.
            let new_run = !run.started();
            match run.status() {
                RunStatus::Active => {}
                RunStatus::Stopped { decision_id, code } => {
                    return Err(Refusal::new(
                        Code::RunStopped,
                        format!(
                            "run {} was stopped ({code}) by decision {decision_id}",
                            run.id
                        ),
                    ))
                }
                RunStatus::Killed { decision_id, code } => {
                    return Err(Refusal::new(
                        Code::RunKilled,
                        format!(
                            "run {} was killed ({code}) by decision {decision_id}",
                            run.id
                        ),
                    ))
                }
            }
            // Which snapshot judges this run now.
            let (_, new_step) = run.step(&call.ctx.step_id);
            let snapshot = {
                let mut b = match run.binding.lock() {
                    Ok(b) => b,
                    Err(p) => p.into_inner(),
                };
                let binding = match b.take() {
                    Some(existing) if !new_run && new_step => {
                        bind::on_event(&existing, &current, BindEvent::StepStart)
                    }
                    Some(existing) if !new_run => existing,
                    _ => {
                        let probe = crate::decide::Request {
                            tenant: call.ctx.tenant.clone(),
                            project: call.ctx.project.clone(),
                            agent: call.ctx.agent.clone(),
                            api_key: call.ctx.api_key.clone(),
                            actor: call.ctx.actor.clone(),
                            channel: crate::policy::model::Channel::Llm,
                            connector: None,
                            model: None,
                            tool: None,
                            template: None,
                            new_run: true,
                            facts: Default::default(),
                            delta: Default::default(),
                        };
                        bind::start(bind::run_bind_at(&current, &probe), &current)
                    }
                };
                let judged = bind::judged_by(&binding, &current).clone();
                *b = Some(binding);
                judged
            };
            call.new_run = new_run;
            call.run = Some(run);
            call.snapshot = Some(snapshot);
            next(rest, call).await
        })
    }
}
