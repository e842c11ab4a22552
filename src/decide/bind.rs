//! Which snapshot judges a run: the `bind_at` rule (`docs/decisions.md`, seed GAP-031), as pure functions.
//!
//! A run's binding mode is the *soonest-updating* `bind_at` among the active policies of the
//! snapshot in force when the run starts whose scope covers the run (`each_step` before
//! `first_token` before `run_start`) — an author who asks for fresh policy on every step gets
//! it even if another policy would tolerate a stale one. Then:
//!
//! | bind_at       | judged by                                                         |
//! |---------------|-------------------------------------------------------------------|
//! | `run_start`   | the snapshot current at run start, for the whole run              |
//! | `first_token` | the current snapshot until the first model token, then that one   |
//! | `each_step`   | the snapshot current when each step starts, for that whole step    |
//!
//! Within a step the snapshot never changes, so a streamed answer is judged by one snapshot.
//! Modes (kill switch, degraded) are not snapshot content and apply at once regardless.

use crate::policy::compile::Snapshot;
use crate::policy::model::{BindAt, Channel};

use super::{in_scope, Request};

/// Something that happens to a run and may (re)bind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindEvent {
    /// The first token of a model answer passed.
    FirstToken,
    /// A new step id was seen.
    StepStart,
}

/// A run's binding: its mode and the snapshot it is bound to, if any yet. Generic over the
/// snapshot handle so the sidecar can use `Arc<Snapshot>` and tests plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<S> {
    pub bind_at: BindAt,
    pub bound: Option<S>,
}

/// The binding mode of a run with the identity of `req`, under its run-start snapshot.
pub fn run_bind_at(snap: &Snapshot, req: &Request) -> BindAt {
    let mut strictest = BindAt::RunStart;
    for ch in Channel::ALL {
        let (own, platform) = snap.candidates(&req.tenant, ch);
        for &idx in own.iter().chain(platform) {
            let p = snap.policy(idx);
            if !p.shadow && in_scope(p, req) {
                strictest = strictest.max(p.bind_at);
            }
        }
    }
    strictest
}

/// The binding at run start, with `current` the snapshot in force then.
pub fn start<S: Clone>(bind_at: BindAt, current: &S) -> Binding<S> {
    Binding {
        bind_at,
        bound: match bind_at {
            BindAt::RunStart | BindAt::EachStep => Some(current.clone()),
            BindAt::FirstToken => None,
        },
    }
}

/// The binding after `event`, with `current` the snapshot in force at that moment.
pub fn on_event<S: Clone>(b: &Binding<S>, current: &S, event: BindEvent) -> Binding<S> {
    let mut next = b.clone();
    match (b.bind_at, event) {
        (BindAt::FirstToken, BindEvent::FirstToken) if b.bound.is_none() => {
            next.bound = Some(current.clone());
        }
        (BindAt::EachStep, BindEvent::StepStart) => next.bound = Some(current.clone()),
        _ => {}
    }
    next
}

/// The snapshot that judges the run's next decision.
pub fn judged_by<'a, S>(b: &'a Binding<S>, current: &'a S) -> &'a S {
    b.bound.as_ref().unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_start_keeps_the_first_snapshot() {
        let b = start(BindAt::RunStart, &"s1");
        let b = on_event(&b, &"s2", BindEvent::StepStart);
        let b = on_event(&b, &"s3", BindEvent::FirstToken);
        assert_eq!(*judged_by(&b, &"s4"), "s1");
    }

    #[test]
    fn first_token_follows_current_until_the_first_token() {
        let b = start(BindAt::FirstToken, &"s1");
        assert_eq!(*judged_by(&b, &"s2"), "s2");
        let b = on_event(&b, &"s2", BindEvent::FirstToken);
        assert_eq!(*judged_by(&b, &"s3"), "s2");
        let b = on_event(&b, &"s3", BindEvent::FirstToken);
        let b = on_event(&b, &"s4", BindEvent::StepStart);
        assert_eq!(*judged_by(&b, &"s5"), "s2");
    }

    #[test]
    fn each_step_rebinds_at_step_start_only() {
        let b = start(BindAt::EachStep, &"s1");
        assert_eq!(
            *judged_by(&b, &"s2"),
            "s1",
            "mid-step, the step's snapshot stays"
        );
        let b = on_event(&b, &"s2", BindEvent::FirstToken);
        assert_eq!(*judged_by(&b, &"s3"), "s1");
        let b = on_event(&b, &"s3", BindEvent::StepStart);
        assert_eq!(*judged_by(&b, &"s4"), "s3");
    }
}
