//! Usage windows: what each (policy, limit) has used, per step, run, session or sliding
//! duration — settled usage plus what in-flight calls hold ([`Held`]). Pure data structures;
//! the clock is an argument.

use std::cell::OnceCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::runs::Runs;

use crate::decide::{Delta, Meter, Usage, UsageView};
use crate::policy::model::{Channel, Metric, Window};
use crate::policy::Snapshot;

/// Amounts one finished call used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Amounts {
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub cost_usd: f64,
    pub bytes: f64,
    pub queries: f64,
    pub rows: f64,
}

impl Amounts {
    pub fn get(&self, m: Metric) -> f64 {
        match m {
            Metric::InputTokens => self.input_tokens,
            Metric::OutputTokens => self.output_tokens,
            Metric::TotalTokens => self.input_tokens + self.output_tokens,
            Metric::CostUsd => self.cost_usd,
            Metric::Requests => 1.0,
            Metric::Queries => self.queries,
            Metric::Bytes => self.bytes,
            Metric::Rows => self.rows,
        }
    }
}

/// Which part of a counter: what finished calls used, or what calls in flight hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Settled,
    Held,
}

/// One counter: settled usage and what in-flight calls hold. A decision reads their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slot {
    settled: f64,
    held: f64,
}

impl Slot {
    fn read(&self, settled_only: bool) -> f64 {
        if settled_only {
            self.settled
        } else {
            self.settled + self.held
        }
    }

    fn add(&mut self, part: Part, v: f64) {
        match part {
            Part::Settled => self.settled += v,
            // Rounding must never leave a negative hold behind.
            Part::Held => self.held = (self.held + v).max(0.0),
        }
    }
}

/// Counters for one scope (a step, a run or a session): by policy id, then by limit index.
/// Looked up by `&str`, so reading or counting allocates only for a policy's first count.
#[derive(Debug, Default)]
pub struct Counters(Mutex<HashMap<String, Vec<Slot>>>);

impl Counters {
    /// Settled plus held usage (or settled only).
    pub fn read(&self, policy: &str, limit: usize, settled_only: bool) -> f64 {
        self.0
            .lock()
            .map(|m| {
                m.get(policy)
                    .and_then(|v| v.get(limit))
                    .map_or(0.0, |s| s.read(settled_only))
            })
            .unwrap_or(0.0)
    }

    /// Settled plus held usage.
    pub fn get(&self, policy: &str, limit: usize) -> f64 {
        self.read(policy, limit, false)
    }

    pub fn add(&self, policy: &str, limit: usize, part: Part, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            let slots = match m.get_mut(policy) {
                Some(s) => s,
                None => m.entry(policy.to_string()).or_default(),
            };
            if slots.len() <= limit {
                slots.resize(limit + 1, Slot::default());
            }
            slots[limit].add(part, v);
        }
    }
}

type Key = (String, usize);

/// A sliding window of `window_ms`, in 60 buckets: memory stays bounded whatever the rate.
/// Settled usage is bucketed when it is settled; holds count, unaged, until they are.
#[derive(Debug)]
struct Sliding {
    window_ms: u64,
    bucket_ms: u64,
    buckets: VecDeque<(u64, f64)>,
    held: f64,
}

impl Sliding {
    fn new(window_ms: u64) -> Self {
        Sliding {
            window_ms,
            bucket_ms: (window_ms / 60).max(1),
            buckets: VecDeque::new(),
            held: 0.0,
        }
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some((start, _)) = self.buckets.front() {
            if start + self.bucket_ms + self.window_ms <= now_ms {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn read(&mut self, now_ms: u64, settled_only: bool) -> f64 {
        self.prune(now_ms);
        let settled: f64 = self.buckets.iter().map(|(_, v)| v).sum();
        if settled_only {
            settled
        } else {
            settled + self.held
        }
    }

    fn add(&mut self, now_ms: u64, part: Part, v: f64) {
        if part == Part::Held {
            self.held = (self.held + v).max(0.0);
            return;
        }
        self.prune(now_ms);
        let start = now_ms - now_ms % self.bucket_ms;
        match self.buckets.back_mut() {
            Some((s, sum)) if *s == start => *sum += v,
            _ => self.buckets.push_back((start, v)),
        }
    }
}

/// Sliding windows of the whole sidecar (one agent), by (policy, limit).
#[derive(Debug, Default)]
pub struct SlidingCounters(Mutex<HashMap<Key, Sliding>>);

impl SlidingCounters {
    pub fn read(
        &self,
        policy: &str,
        limit: usize,
        window_ms: u64,
        now_ms: u64,
        settled_only: bool,
    ) -> f64 {
        self.0
            .lock()
            .map(|mut m| {
                m.get_mut(&(policy.to_string(), limit))
                    .filter(|s| s.window_ms == window_ms)
                    .map_or(0.0, |s| s.read(now_ms, settled_only))
            })
            .unwrap_or(0.0)
    }

    /// Settled plus held usage in the window ending at `now_ms`.
    pub fn get(&self, policy: &str, limit: usize, window_ms: u64, now_ms: u64) -> f64 {
        self.read(policy, limit, window_ms, now_ms, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add(&self, policy: &str, limit: usize, window_ms: u64, now_ms: u64, part: Part, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            let s = m
                .entry((policy.to_string(), limit))
                .or_insert_with(|| Sliding::new(window_ms));
            if s.window_ms != window_ms {
                // The limit's window changed with a new snapshot: start over (holds of calls
                // still in flight stay held).
                let held = s.held;
                *s = Sliding::new(window_ms);
                s.held = held;
            }
            s.add(now_ms, part, v);
        }
    }
}

/// The session's counters, looked up only when a limit with a session window needs them (the
/// session table is a cache of its own; most snapshots have no session windows).
pub struct Session<'a> {
    runs: &'a Runs,
    id: &'a str,
    got: OnceCell<Arc<Counters>>,
}

impl<'a> Session<'a> {
    pub fn new(runs: &'a Runs, id: &'a str) -> Self {
        Session {
            runs,
            id,
            got: OnceCell::new(),
        }
    }

    fn counters(&self) -> &Counters {
        self.got.get_or_init(|| self.runs.session(self.id))
    }
}

/// Where a call's usage lives.
pub struct Scopes<'a> {
    pub step: &'a Counters,
    pub run: &'a Counters,
    pub session: Session<'a>,
    pub sliding: &'a SlidingCounters,
    pub now_ms: u64,
}

impl Scopes<'_> {
    fn read(&self, window: Window, policy: &str, limit: usize, settled_only: bool) -> f64 {
        match window {
            Window::Step => self.step.read(policy, limit, settled_only),
            Window::Run => self.run.read(policy, limit, settled_only),
            Window::Session => self.session.counters().read(policy, limit, settled_only),
            Window::Duration(s) => {
                self.sliding
                    .read(policy, limit, s * 1000, self.now_ms, settled_only)
            }
        }
    }

    fn apply(&self, m: &Meter, part: Part, v: f64) {
        if v == 0.0 {
            return;
        }
        match m.window {
            Window::Step => self.step.add(&m.policy, m.limit, part, v),
            Window::Run => self.run.add(&m.policy, m.limit, part, v),
            Window::Session => self.session.counters().add(&m.policy, m.limit, part, v),
            Window::Duration(s) => {
                self.sliding
                    .add(&m.policy, m.limit, s * 1000, self.now_ms, part, v)
            }
        }
    }

    /// Count a finished call against every limit the decision metered.
    pub fn record(&self, meters: &[Meter], amounts: &Amounts) {
        for m in meters {
            self.apply(m, Part::Settled, amounts.get(m.metric));
        }
    }

    /// Reserve what `held` holds (the call was just allowed).
    pub fn hold(&self, held: &Held) {
        for m in &held.meters {
            self.apply(m, Part::Held, held.reserved.get(m.metric, held.channel));
        }
    }

    /// Grow a reservation to at least `to` (a stream passing what it reserved draws from the
    /// shared headroom).
    pub fn grow(&self, held: &mut Held, to: &Delta) {
        let next = Delta {
            input_tokens: held.reserved.input_tokens.max(to.input_tokens),
            output_tokens: held.reserved.output_tokens.max(to.output_tokens),
            cost_usd: held.reserved.cost_usd.max(to.cost_usd),
            bytes: held.reserved.bytes.max(to.bytes),
            rows: held.reserved.rows.max(to.rows),
        };
        for m in &held.meters {
            let more = next.get(m.metric, held.channel) - held.reserved.get(m.metric, held.channel);
            if more > 0.0 {
                self.apply(m, Part::Held, more);
            }
        }
        held.reserved = next;
    }

    /// Settle a reservation with what the call actually used: the hold is released and the
    /// actual amounts are counted (in a sliding window, at the time of settling).
    pub fn settle(&self, held: &Held, actual: &Amounts) {
        for m in &held.meters {
            self.apply(m, Part::Held, -held.reserved.get(m.metric, held.channel));
            self.apply(m, Part::Settled, actual.get(m.metric));
        }
    }
}

/// What an allowed, in-flight call holds against its limits until its record is sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The limits the decision metered.
    pub meters: Vec<Meter>,
    pub reserved: Delta,
    pub channel: Channel,
    /// When the reservation was made.
    pub at_ms: u64,
}

/// The usage view `decide` reads, which also records every value it handed out, so the
/// evidence holds exactly the usage the decision saw (for replay).
pub struct Recording<'a> {
    pub scopes: &'a Scopes<'a>,
    pub snapshot: &'a Snapshot,
    pub seen: std::cell::RefCell<Usage>,
    /// The deciding call's own reservation, left out of what it sees: a call deciding again
    /// mid-way states its whole amount in its request, and must not count it twice.
    pub own: Option<&'a Held>,
    /// Read settled usage only, leaving out what calls in flight hold.
    pub settled_only: bool,
}

impl UsageView for Recording<'_> {
    fn used(&self, policy: &str, limit: usize) -> f64 {
        let Some(window) = self
            .snapshot
            .policy_by_id(policy)
            .and_then(|p| p.limits.get(limit))
            .map(|l| l.window)
        else {
            return 0.0;
        };
        let mut v = self.scopes.read(window, policy, limit, self.settled_only);
        if let (Some(h), false) = (self.own, self.settled_only) {
            if let Some(m) = h
                .meters
                .iter()
                .find(|m| m.limit == limit && &*m.policy == policy)
            {
                v = (v - h.reserved.get(m.metric, h.channel)).max(0.0);
            }
        }
        let mut seen = self.seen.borrow_mut();
        let slot = seen.0.entry(policy.to_string()).or_default();
        if slot.len() <= limit {
            slot.resize(limit + 1, 0.0);
        }
        slot[limit] = v;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_windows_forget_old_usage() {
        let s = SlidingCounters::default();
        s.add("p", 0, 60_000, 1_000, Part::Settled, 5.0);
        s.add("p", 0, 60_000, 30_000, Part::Settled, 5.0);
        assert_eq!(s.get("p", 0, 60_000, 30_000), 10.0);
        assert_eq!(s.get("p", 0, 60_000, 62_000), 5.0);
        assert_eq!(s.get("p", 0, 60_000, 95_000), 0.0);
        assert_eq!(s.get("q", 0, 60_000, 95_000), 0.0);
    }

    #[test]
    fn counters_add_per_policy_and_limit() {
        let c = Counters::default();
        c.add("p", 0, Part::Settled, 2.0);
        c.add("p", 0, Part::Held, 3.0);
        c.add("p", 1, Part::Settled, 7.0);
        assert_eq!(
            (c.get("p", 0), c.get("p", 1), c.get("x", 0)),
            (5.0, 7.0, 0.0)
        );
        assert_eq!(c.read("p", 0, true), 2.0, "settled only");
        c.add("p", 0, Part::Held, -10.0);
        assert_eq!(c.get("p", 0), 2.0, "a hold never goes below zero");
    }
}
