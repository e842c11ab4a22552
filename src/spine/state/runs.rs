//! Run state: status (active, stopped, killed), whether it started (a call of it was allowed),
//! the snapshot binding, usage per step, run and session, pending approvals, and the signal that
//! cuts a run's in-flight calls.
//!
//! Bounded in memory: runs and sessions live in moka caches with a size cap and an idle TTL
//! (`runs.max_runs`, `runs.idle_ttl_s`). A forgotten run that comes back starts afresh — its
//! stopped/killed status excepted — so the TTL should exceed any run's lifetime.
//!
//! A run the sidecar assigned (the agent sent no run id) is forgotten as soon as its call is
//! recorded, unless the agent adopted its id by sending it back while the call was in flight, or
//! the call left an approval to decide ([`Runs::retire`]): one-shot calls cost nothing after
//! they end. A stopped or killed one stays refused (the ended table keeps its status); any other
//! later call with that id starts a new run — what a call without a run id does anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use serde::Serialize;

use super::usage::{Counters, SlidingCounters};
use crate::codes::Code;
use crate::decide::bind::Binding;
use crate::policy::model::Action;
use crate::policy::Snapshot;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    Active,
    Stopped { decision_id: String, code: Code },
    Killed { decision_id: String, code: Code },
}

/// One recent decision, for `/runs/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct Brief {
    pub decision_id: String,
    pub at_ms: u64,
    pub action: Action,
    pub code: Option<Code>,
    pub policy: Option<String>,
}

impl Brief {
    pub fn of(d: &crate::decide::Decision) -> Self {
        Brief {
            decision_id: d.decision_id.clone(),
            at_ms: d.at_ms,
            action: d.action,
            code: d.code,
            policy: d.policy.as_deref().map(str::to_string),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    Pending,
    Approved,
    Rejected,
}

pub struct RunState {
    pub id: String,
    pub session_id: String,
    pub status: Mutex<RunStatus>,
    pub binding: Mutex<Option<Binding<Arc<Snapshot>>>>,
    /// The current step's id and counters (older steps are over).
    pub step: Mutex<(String, Arc<Counters>)>,
    pub usage: Counters,
    /// Flips to true when the run is killed: every in-flight call of the run watches it.
    pub kill: tokio::sync::watch::Sender<bool>,
    pub recent: Mutex<VecDeque<Brief>>,
    /// Approvals by id, with the fingerprint of the call they were asked for.
    pub approvals: Mutex<HashMap<String, (String, Approval)>>,
    /// Where ended runs are remembered beyond the run table (see [`Runs`]).
    ended: Cache<String, RunStatus>,
    /// Whether a call of the run was ever allowed. Until then every call is the run's first
    /// (`new_run`): a call refused at the start of a run — by a mode, a policy or bad input —
    /// leaves no started run behind for its retry to pass as a running one.
    started: AtomicBool,
    /// [`FRESH`], [`ADOPTED`] or [`RETIRED`]: whether the run may be forgotten when its call
    /// ends.
    keep: AtomicU8,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("id", &self.id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

const RECENT: usize = 16;

/// An assigned run no later call has named yet: forgotten when its call ends.
const FRESH: u8 = 0;
/// A run the agent names: kept until the table's TTL or cap forgets it.
const ADOPTED: u8 = 1;
/// An assigned run being forgotten: a call that finds it starts a new run instead.
const RETIRED: u8 = 2;

impl RunState {
    fn new(id: &str, session_id: &str, ended: Cache<String, RunStatus>, keep: u8) -> Self {
        RunState {
            keep: AtomicU8::new(keep),
            ended,
            id: id.to_string(),
            session_id: session_id.to_string(),
            status: Mutex::new(RunStatus::Active),
            binding: Mutex::new(None),
            step: Mutex::new((String::new(), Arc::new(Counters::default()))),
            usage: Counters::default(),
            kill: tokio::sync::watch::channel(false).0,
            recent: Mutex::new(VecDeque::new()),
            approvals: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
        }
    }

    /// Whether a call of the run was ever allowed (see the field).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// A call of the run was allowed: the run is running from now on.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn status(&self) -> RunStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or(RunStatus::Killed {
                decision_id: String::new(),
                code: Code::InternalError,
            })
    }

    /// End the run; STOP keeps in-flight calls, KILL cuts them.
    pub fn end(&self, action: Action, decision_id: &str, code: Code) {
        if let Ok(mut s) = self.status.lock() {
            if matches!(*s, RunStatus::Killed { .. }) {
                return;
            }
            *s = if action >= Action::Kill {
                RunStatus::Killed {
                    decision_id: decision_id.to_string(),
                    code,
                }
            } else {
                RunStatus::Stopped {
                    decision_id: decision_id.to_string(),
                    code,
                }
            };
        }
        let status = self.status();
        self.ended.insert(self.id.clone(), status);
        if action >= Action::Kill {
            self.kill.send_replace(true);
        }
    }

    /// The counters of `step`, starting a new step (and returning true) if it changed.
    pub fn step(&self, step: &str) -> (Arc<Counters>, bool) {
        match self.step.lock() {
            Ok(mut cur) => {
                if cur.0 != step {
                    *cur = (step.to_string(), Arc::new(Counters::default()));
                    (cur.1.clone(), true)
                } else {
                    (cur.1.clone(), false)
                }
            }
            Err(_) => (Arc::new(Counters::default()), true),
        }
    }

    pub fn remember(&self, b: Brief) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(b);
        }
    }
}

/// All runs and sessions of this sidecar.
///
/// Ended runs are also remembered in a separate, larger table that only ending a run writes to:
/// an agent that floods the run table with fresh run ids evicts active runs, but cannot bring a
/// stopped or killed run back to life that way (it would have to end ten times `max_runs` runs).
pub struct Runs {
    runs: Cache<String, Arc<RunState>>,
    ended: Cache<String, RunStatus>,
    sessions: Cache<String, Arc<Counters>>,
    /// Approval id → run id.
    approvals: Cache<String, String>,
    pub sliding: SlidingCounters,
    /// Held while a call is decided and its usage reserved (or a reservation grows), so two
    /// calls never both see the same headroom (`spine::meter`).
    pub budget: Mutex<()>,
}

impl Runs {
    pub fn new(max_runs: u64, idle_ttl_s: u64) -> Self {
        let ttl = Duration::from_secs(idle_ttl_s.max(1));
        Runs {
            runs: Cache::builder()
                .max_capacity(max_runs)
                .time_to_idle(ttl)
                .build(),
            ended: Cache::builder()
                .max_capacity(max_runs.saturating_mul(10))
                .time_to_idle(ttl)
                .build(),
            sessions: Cache::builder()
                .max_capacity(max_runs)
                .time_to_idle(ttl)
                .build(),
            approvals: Cache::builder()
                .max_capacity(max_runs)
                .time_to_idle(ttl)
                .build(),
            sliding: SlidingCounters::default(),
            budget: Mutex::new(()),
        }
    }

    /// The run, and whether this call created it (a new run).
    pub fn get_or_create(&self, run_id: &str, session_id: &str) -> (Arc<RunState>, bool) {
        let mut created = false;
        let run = self.runs.get_with(run_id.to_string(), || {
            created = true;
            Arc::new(self.named(run_id, session_id))
        });
        if created {
            return (run, true);
        }
        match run
            .keep
            .compare_exchange(FRESH, ADOPTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(ADOPTED) => (run, false),
            // Its call ended and it is being forgotten: this call starts the run afresh (the
            // retirement removes only the entry it retired, never this one).
            Err(_) => {
                let fresh = Arc::new(self.named(run_id, session_id));
                self.runs.insert(run_id.to_string(), fresh.clone());
                (fresh, true)
            }
        }
    }

    /// A run the agent named, new to the table (an ended run that was evicted stays ended).
    fn named(&self, run_id: &str, session_id: &str) -> RunState {
        let run = RunState::new(run_id, session_id, self.ended.clone(), ADOPTED);
        if let Some(status) = self.ended.get(run_id) {
            if let Ok(mut s) = run.status.lock() {
                *s = status;
            }
        }
        run
    }

    /// A run the sidecar just named (the agent sent no run id): new by construction, so it is
    /// inserted without the look-up and the guarded initialisation of [`Runs::get_or_create`].
    pub fn create_assigned(&self, run_id: &str, session_id: &str) -> Arc<RunState> {
        let run = Arc::new(RunState::new(run_id, session_id, self.ended.clone(), FRESH));
        self.runs.insert(run_id.to_string(), run.clone());
        run
    }

    /// The call of an assigned run is recorded: forget the run (and its own session), unless
    /// a later call adopted its id or an approval of it waits for an operator. Its usage was
    /// settled into it and goes with it; an ended run's status stays in the ended table.
    pub fn retire(&self, run: &Arc<RunState>) {
        let waiting = run.approvals.lock().map_or(true, |a| !a.is_empty());
        if waiting
            || run
                .keep
                .compare_exchange(FRESH, RETIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        self.remove_exact(run);
        if run.session_id == run.id {
            self.sessions.invalidate(run.session_id.as_str());
        }
    }

    /// Remove `run`'s entry if it is still `run` (not a fresh run of the same id).
    fn remove_exact(&self, run: &Arc<RunState>) {
        self.runs
            .entry_by_ref(run.id.as_str())
            .and_compute_with(|entry| match entry {
                Some(e) if Arc::ptr_eq(e.value(), run) => moka::ops::compute::Op::Remove,
                _ => moka::ops::compute::Op::Nop,
            });
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<RunState>> {
        self.runs.get(run_id)
    }

    pub fn session(&self, session_id: &str) -> Arc<Counters> {
        self.sessions
            .get_with(session_id.to_string(), || Arc::new(Counters::default()))
    }

    /// Every live run (for the kill switch).
    pub fn all(&self) -> Vec<Arc<RunState>> {
        self.runs.iter().map(|(_, v)| v).collect()
    }

    pub fn add_approval(&self, run: &RunState, approval_id: &str, fingerprint: &str) {
        if let Ok(mut a) = run.approvals.lock() {
            a.insert(
                approval_id.to_string(),
                (fingerprint.to_string(), Approval::Pending),
            );
        }
        self.approvals
            .insert(approval_id.to_string(), run.id.clone());
    }

    /// The run an approval belongs to.
    pub fn approval_run(&self, approval_id: &str) -> Option<Arc<RunState>> {
        self.approvals
            .get(approval_id)
            .and_then(|run| self.runs.get(&run))
    }
}

/// Take an approved approval for `fingerprint` (single use).
pub fn take_approved(run: &RunState, fingerprint: &str) -> Option<String> {
    let mut a = run.approvals.lock().ok()?;
    let id = a
        .iter()
        .find(|(_, (f, s))| f == fingerprint && *s == Approval::Approved)
        .map(|(id, _)| id.clone())?;
    a.remove(&id);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_run_stays_ended_after_eviction() {
        let runs = Runs::new(2, 3600);
        let (a, created) = runs.get_or_create("a", "a");
        assert!(created);
        a.end(Action::Stop, "d1", Code::BudgetExceeded);
        drop(a);
        // Flood the table with fresh runs so that "a" is evicted.
        for i in 0..200 {
            let _ = runs.get_or_create(&format!("flood-{i}"), "s");
        }
        runs.runs.run_pending_tasks();
        let (a, recreated) = runs.get_or_create("a", "a");
        assert!(recreated, "the flood evicted the run from the table");
        assert!(
            matches!(a.status(), RunStatus::Stopped { .. }),
            "{:?}",
            a.status()
        );
        let (fresh, _) = runs.get_or_create("never-ended", "s");
        assert_eq!(fresh.status(), RunStatus::Active);
    }

    #[test]
    fn an_assigned_run_starts_fresh_and_is_found_by_its_id() {
        let runs = Runs::new(10, 3600);
        // An agent that guessed the next id and got that run stopped gains nothing.
        let (guessed, _) = runs.get_or_create("run-next", "s");
        guessed.end(Action::Stop, "d1", Code::BudgetExceeded);
        let run = runs.create_assigned("run-next", "run-next");
        assert_eq!(run.status(), RunStatus::Active);
        let (again, created) = runs.get_or_create("run-next", "run-next");
        assert!(!created, "later calls with the id find the run");
        assert!(Arc::ptr_eq(&run, &again));
    }

    #[test]
    fn a_one_shot_run_is_forgotten_when_its_call_ends() {
        let runs = Runs::new(10, 3600);
        let run = runs.create_assigned("r1", "r1");
        let _ = runs.session("r1");
        run.usage
            .add("p", 0, crate::spine::state::usage::Part::Settled, 5.0);
        runs.retire(&run);
        assert!(runs.get("r1").is_none(), "the run is gone");
        runs.sessions.run_pending_tasks();
        assert_eq!(runs.sessions.entry_count(), 0, "its own session too");
        // A later call with the id starts afresh.
        let (again, created) = runs.get_or_create("r1", "r1");
        assert!(created && !Arc::ptr_eq(&run, &again));
        assert_eq!(again.usage.get("p", 0), 0.0);
    }

    #[test]
    fn an_adopted_or_waiting_run_is_kept() {
        let runs = Runs::new(10, 3600);
        // The agent sent the id back while the first call was in flight.
        let run = runs.create_assigned("r1", "r1");
        let (same, created) = runs.get_or_create("r1", "r1");
        assert!(!created && Arc::ptr_eq(&run, &same));
        runs.retire(&run);
        assert!(runs.get("r1").is_some(), "adopted: kept");
        // An approval waits for an operator: kept (the retry needs the run).
        let run = runs.create_assigned("r2", "r2");
        runs.add_approval(&run, "apr-1", "fp");
        runs.retire(&run);
        assert!(runs.get("r2").is_some(), "an approval waits: kept");
        assert!(runs.approval_run("apr-1").is_some());
        // A run the agent named is never retired.
        let (named, _) = runs.get_or_create("r3", "r3");
        runs.retire(&named);
        assert!(runs.get("r3").is_some());
    }

    #[test]
    fn a_stopped_one_shot_run_stays_refused_after_it_is_forgotten() {
        let runs = Runs::new(10, 3600);
        let run = runs.create_assigned("r1", "r1");
        run.end(Action::Stop, "d1", Code::BudgetExceeded);
        runs.retire(&run);
        assert!(runs.get("r1").is_none());
        let (again, _) = runs.get_or_create("r1", "r1");
        assert!(matches!(again.status(), RunStatus::Stopped { .. }));
    }

    #[test]
    fn a_call_that_finds_a_retiring_run_starts_afresh_and_is_not_removed() {
        let runs = Runs::new(10, 3600);
        let run = runs.create_assigned("r1", "r1");
        // The retirement has flipped the state but not yet removed the entry.
        run.keep.store(RETIRED, Ordering::Release);
        let (fresh, created) = runs.get_or_create("r1", "r1");
        assert!(created && !Arc::ptr_eq(&run, &fresh));
        // Finishing the retirement leaves the fresh run in place.
        runs.remove_exact(&run);
        assert!(Arc::ptr_eq(&runs.get("r1").unwrap(), &fresh));
        // And it is the agent's now: kept.
        runs.retire(&fresh);
        assert!(runs.get("r1").is_some());
    }
}
