//! `warden evidence replay`: check every call record against the snapshot that judged it.
//!
//! What is checked depends on the record's [`Basis`]:
//! - a `decide` outcome is decided again on the recorded request, usage and mode, and must come
//!   out with the same action, code, winning policy and reasons;
//! - a call a decision allowed and something else ended (upstream error, kill switch, killed
//!   run) has its allowing decision decided again the same way, and its code must be the
//!   ending's (the cut's, when it was cut);
//! - a refusal before any decision must carry no decision, only its code;
//! - a local answer (`GET /v1/models`) is computed again and must hash the same.
//!
//! Every basis also checks that the outcome (allowed, refused, cut, errored, bypassed) is the one
//! its decision and ending imply. A record that fails any check is a [`Mismatch`].

use std::collections::{BTreeSet, HashMap};

use crate::codes::Code;
use crate::decide::{decide, Usage};
use crate::policy::model::Action;
use crate::policy::store::{SnapshotStore, StoreError};
use crate::policy::Snapshot;

use super::record::{content_hash, Basis, Outcome, Record};
use super::segment::Read;
use super::Kind;

/// A recorded call that does not replay to what its record says.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub seq: u64,
    pub evidence_id: String,
    /// (action, code, policy) as recorded.
    pub recorded: (Option<Action>, Option<Code>, Option<String>),
    /// (action, code, policy) as replay derives them.
    pub replayed: (Option<Action>, Option<Code>, Option<String>),
    pub reasons_differ: bool,
    /// What does not hold, in words.
    pub why: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Call records checked, whatever their basis.
    pub checked: u64,
    /// Of those, decisions derived again with `decide`.
    pub decisions: u64,
    /// Of those, refusals before any decision.
    pub before_decision: u64,
    /// Of those, local answers derived again.
    pub local: u64,
    /// Records that are not about a call (audit records), and call records written before
    /// records said what they rest on that carry no decision inputs.
    pub skipped: u64,
    pub missing_snapshots: BTreeSet<String>,
    pub mismatches: Vec<Mismatch>,
}

type Triple = (Option<Action>, Option<Code>, Option<String>);

pub fn replay(records: &[Read], store: &SnapshotStore) -> Result<ReplayReport, StoreError> {
    let mut report = ReplayReport::default();
    let mut cache: HashMap<String, Snapshot> = HashMap::new();
    for r in records {
        let rec = &r.record;
        if rec.kind != Kind::Call {
            report.skipped += 1;
            continue;
        }
        let (basis, legacy) = match rec.basis {
            Some(b) => (b, false),
            // Written before records said what they rest on: replay the decision if it is there.
            None if rec.request.is_some() && rec.snapshot.is_some() => (Basis::Decision, true),
            None => {
                report.skipped += 1;
                continue;
            }
        };
        let snap = match (&rec.snapshot, basis) {
            (Some(hash), Basis::Decision | Basis::AfterDecision | Basis::Local) => {
                if !cache.contains_key(hash) {
                    match store.load(hash) {
                        Ok(s) => {
                            cache.insert(hash.clone(), s);
                        }
                        Err(StoreError::Missing(h)) => {
                            report.missing_snapshots.insert(h);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                cache.get(hash)
            }
            _ => None,
        };
        report.checked += 1;
        let recorded: Triple = (rec.action, rec.code, rec.policy.clone());
        let mut why = Vec::new();
        let mut replayed = recorded.clone();
        let mut reasons_differ = false;
        if !legacy {
            why.extend(cut_consistency(rec));
        }
        match basis {
            Basis::BeforeDecision => {
                report.before_decision += 1;
                replayed = (None, rec.code, None);
                if rec.action.is_some() || rec.policy.is_some() || !rec.reasons.is_empty() {
                    why.push("a refusal before any decision carries a decision".into());
                }
                if rec.request.is_some() || rec.usage.is_some() {
                    why.push("a refusal before any decision carries decision inputs".into());
                }
                match rec.code {
                    None => why.push("a refusal without a code".into()),
                    Some(c) => {
                        expect_outcome(rec, Outcome::of_refusal(c, rec.cut.is_some()), &mut why)
                    }
                }
            }
            Basis::Local => {
                report.local += 1;
                replayed = (None, None, None);
                if rec.action.is_some() || rec.code.is_some() || !rec.reasons.is_empty() {
                    why.push("a local answer carries a decision".into());
                }
                match (snap, &rec.request) {
                    (Some(snap), Some(req)) => {
                        let list = crate::connectors::llm::allowed_models(
                            snap,
                            req,
                            rec.mode,
                            rec.at_ms,
                            rec.decision_id.as_deref().unwrap_or(""),
                        );
                        let hash = serde_json::to_vec(&list).map(|b| content_hash(&b)).ok();
                        if hash.is_none() || hash != rec.response_hash {
                            why.push("the local answer derived again hashes differently".into());
                        }
                    }
                    _ => why.push("a local answer without its snapshot or request".into()),
                }
                expect_outcome(rec, Outcome::Allowed, &mut why);
            }
            Basis::Decision | Basis::AfterDecision => {
                let (Some(snap), Some(req)) = (snap, &rec.request) else {
                    why.push("a decision without its snapshot or request".into());
                    report
                        .mismatches
                        .push(mismatch(rec, recorded, replayed, false, why));
                    continue;
                };
                report.decisions += 1;
                let usage = rec.usage.clone().unwrap_or_else(Usage::default);
                let d = decide(
                    snap,
                    req,
                    &usage,
                    rec.mode,
                    rec.at_ms,
                    rec.decision_id.as_deref().unwrap_or(""),
                );
                reasons_differ = d.reasons != rec.reasons;
                if reasons_differ {
                    why.push("the reasons differ".into());
                }
                let policy = d.policy.as_deref().map(str::to_string);
                if basis == Basis::Decision {
                    replayed = (Some(d.action), d.code, policy);
                    if replayed != recorded {
                        why.push("the decision differs".into());
                    }
                    if !legacy {
                        let approved = d.action == Action::Pause && approval_used(rec);
                        let expected = match d.code {
                            _ if approved => Outcome::Allowed,
                            Some(c) if d.refused() => Outcome::of_refusal(c, rec.cut.is_some()),
                            _ if d.downgraded_from.is_some()
                                && d.mode == crate::decide::Mode::Bypass =>
                            {
                                Outcome::Bypassed
                            }
                            _ => Outcome::Allowed,
                        };
                        expect_outcome(rec, expected, &mut why);
                    }
                } else {
                    // The code is the ending's; the decision behind it must have allowed the call.
                    replayed = (Some(d.action), rec.code, policy);
                    if replayed != recorded {
                        why.push("the allowing decision differs".into());
                    }
                    if d.refused() && !(d.action == Action::Pause && approval_used(rec)) {
                        why.push("recorded as ended after an allowing decision, but the decision refuses".into());
                    }
                    match rec.code {
                        None => why.push("an ending without a code".into()),
                        Some(c) => {
                            expect_outcome(rec, Outcome::of_refusal(c, rec.cut.is_some()), &mut why)
                        }
                    }
                }
            }
        }
        if !why.is_empty() {
            report
                .mismatches
                .push(mismatch(rec, recorded, replayed, reasons_differ, why));
        }
    }
    Ok(report)
}

/// A cut names where and why, and the record's code is the cut's.
fn cut_consistency(rec: &Record) -> Vec<String> {
    let mut why = Vec::new();
    match (&rec.cut, rec.outcome) {
        (Some(c), Some(Outcome::Cut)) => {
            if rec.code != Some(c.code) {
                why.push(format!(
                    "the record's code is not the cut's ({})",
                    c.code.as_str()
                ));
            }
        }
        (None, Some(Outcome::Cut)) => why.push("a cut without where and why".into()),
        (Some(_), _) => why.push("a cut recorded on a call that was not cut".into()),
        (None, _) => {}
    }
    why
}

/// An approval let this call pass (its PAUSE was approved before the retry).
fn approval_used(rec: &Record) -> bool {
    rec.audit.as_ref().is_some_and(|a| {
        a.get("approval_id")
            .is_some_and(serde_json::Value::is_string)
            && a.get("approval").and_then(serde_json::Value::as_str) == Some("used")
    })
}

fn expect_outcome(rec: &Record, expected: Outcome, why: &mut Vec<String>) {
    if rec.outcome != Some(expected) {
        why.push(format!(
            "outcome {:?}, but the decision and ending imply {expected:?}",
            rec.outcome
        ));
    }
}

fn mismatch(
    rec: &Record,
    recorded: Triple,
    replayed: Triple,
    reasons_differ: bool,
    why: Vec<String>,
) -> Mismatch {
    Mismatch {
        seq: rec.seq,
        evidence_id: rec.evidence_id.clone(),
        recorded,
        replayed,
        reasons_differ,
        why,
    }
}
