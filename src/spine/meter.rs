//! Metering: usage is *reserved* when a call is decided and *settled* when its record is
//! sealed, so concurrent calls of one run never pass a limit together (`docs/decisions.md`,
//! "Reservation").
//!
//! A [`Ledger`] decides and reserves in one critical section (the budget lock): a call sees the
//! settled usage plus everything the calls in flight hold. An allowed call holds what it may
//! consume at most — one request, its bytes, its prompt, `max_tokens × n` output tokens and
//! their cost (with `max_tokens` clamped to the headroom left) — and a stream that passes
//! what it holds draws more from the shared headroom, deciding again, under the same lock. The
//! sealer settles the hold with what the call actually used.

use std::sync::{Arc, Mutex};

use super::state::Runtime;
use super::Trace;
use crate::decide::reserve::{self, Plan, Want};
use crate::decide::{decide, Decision, Mode, ReasonCode, Request, Usage};
use crate::policy::model::{Action, Channel};
use crate::policy::Snapshot;
use crate::spine::state::runs::RunState;
use crate::spine::state::usage::{Amounts, Counters, Held, Recording, Scopes, Session};

/// Deciding against the usage windows of one call, under the budget lock.
pub struct Ledger<'a> {
    pub lock: &'a Mutex<()>,
    pub scopes: Scopes<'a>,
    pub snapshot: &'a Snapshot,
    pub mode: Mode,
    /// The decision's time and id.
    pub at_ms: u64,
    pub decision_id: &'a str,
}

/// The outcome of [`Ledger::admit`].
#[derive(Debug)]
pub struct Admitted {
    pub decision: Decision,
    /// The usage the decision saw, and the request it was taken on (for the record and replay).
    pub usage: Usage,
    pub request: Request,
    /// Whether the call goes ahead (an approved PAUSE does).
    pub passed: bool,
    pub plan: Option<Plan>,
    pub held: Option<Held>,
}

impl Ledger<'_> {
    fn decide(&self, req: &Request, own: Option<&Held>) -> (Decision, Usage) {
        self.decide_on(req, own, false)
    }

    fn decide_on(
        &self,
        req: &Request,
        own: Option<&Held>,
        settled_only: bool,
    ) -> (Decision, Usage) {
        let view = Recording {
            scopes: &self.scopes,
            snapshot: self.snapshot,
            seen: Default::default(),
            own,
            settled_only,
        };
        let d = decide(
            self.snapshot,
            req,
            &view,
            self.mode,
            self.at_ms,
            self.decision_id,
        );
        (d, view.seen.into_inner())
    }

    /// Decide a new call and, if it goes ahead, reserve what it may consume. A PAUSE goes
    /// ahead when `approved` (called under the lock, so one approval admits one call) says so.
    /// A chat completion that cannot fit one output token per choice is decided again asking
    /// for that much, so the limit that has no room refuses it with its own reason.
    pub fn admit(
        &self,
        req: &Request,
        want: Option<&Want>,
        approved: &mut dyn FnMut() -> bool,
    ) -> Admitted {
        let _guard = match self.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (mut decision, mut usage) = self.decide(req, None);
        let mut request = req.clone();
        let mut passed = !decision.refused() || (decision.action == Action::Pause && approved());
        let mut plan = None;
        if passed {
            let mut p = reserve::plan(&decision, req, want);
            if let (false, Some(w)) = (p.fits, want) {
                let asked = reserve::at_least_one_token(req, w);
                let (d, u) = self.decide(&asked, None);
                if d.refused() {
                    passed = false;
                    (decision, usage, request) = (d, u, asked);
                } else {
                    // Only rounding can get here: send one token a choice (one row).
                    if w.rows.is_some() {
                        p.max_rows = Some(1);
                    } else {
                        p.max_tokens = Some(1);
                    }
                    p.reserve = asked.delta;
                }
            }
            plan = Some(p);
        }
        if !passed {
            self.mark_held_back(&mut decision, &request);
        }
        let held = match (&plan, passed) {
            (Some(p), true) => {
                let h = Held {
                    meters: decision.meters.clone(),
                    reserved: p.reserve,
                    channel: req.channel,
                    at_ms: self.scopes.now_ms,
                };
                self.scopes.hold(&h);
                Some(h)
            }
            _ => None,
        };
        Admitted {
            decision,
            usage,
            request,
            passed,
            plan: plan.filter(|_| passed),
            held,
        }
    }

    /// Decide again mid-call with what the call revealed (`req` states its whole amount so
    /// far). A refusing decision is returned with the usage it saw; otherwise the call's hold
    /// grows to cover `req`'s amounts, and a decision the mode downgraded (degraded: a breach
    /// become WARN) is returned too, for the record.
    pub fn recheck(&self, req: &Request, held: Option<&mut Held>) -> Option<(Decision, Usage)> {
        let _guard = match self.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (mut d, usage) = self.decide(req, held.as_deref());
        if d.refused() {
            self.mark_held_back(&mut d, req);
            return Some((d, usage));
        }
        if let Some(h) = held {
            self.scopes.grow(h, &req.delta);
        }
        d.downgraded_from.is_some().then_some((d, usage))
    }
}

impl Ledger<'_> {
    /// A refusal for a budget or rate limit that settled usage alone would not have made is
    /// held back, not a breach: the call is refused, the run goes on.
    fn mark_held_back(&self, d: &mut Decision, req: &Request) {
        let by_limit = d
            .reasons
            .iter()
            .any(|r| matches!(r.code, ReasonCode::BudgetExceeded | ReasonCode::RateLimited));
        if by_limit && d.action != Action::Pause {
            let (settled, _) = self.decide_on(req, None, true);
            d.held_back = !settled.refused();
        }
    }
}

/// A call's hold, settled when its record is sealed.
pub struct Pending {
    pub held: Held,
    step: Arc<Counters>,
    session_id: String,
    run: Arc<RunState>,
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("held", &self.held).finish()
    }
}

impl Pending {
    pub fn new(
        held: Held,
        step: Arc<Counters>,
        session_id: String,
        run: Arc<RunState>,
        rt: Arc<Runtime>,
    ) -> Self {
        Pending {
            held,
            step,
            session_id,
            run,
            rt,
        }
    }

    /// Settle the hold with the call's final amounts, from its trace.
    pub fn apply(self, t: &Trace) {
        let amounts = Amounts {
            input_tokens: t.rec.input_tokens as f64,
            output_tokens: t.rec.output_tokens as f64,
            cost_usd: t.rec.cost_usd,
            bytes: (t.rec.bytes_in + t.rec.bytes_out) as f64,
            queries: f64::from(u8::from(self.held.channel == Channel::Sql)),
            rows: t.rec.sql.map_or(0.0, |s| s.rows as f64),
        };
        let scopes = Scopes {
            step: &self.step,
            run: &self.run.usage,
            session: Session::new(&self.rt.runs, &self.session_id),
            sliding: &self.rt.runs.sliding,
            now_ms: Runtime::now_ms(),
        };
        scopes.settle(&self.held, &amounts);
        if self.held.channel == Channel::Llm {
            self.rt
                .metrics
                .tokens(t.rec.input_tokens, t.rec.output_tokens, t.rec.cost_usd);
        }
    }
}
