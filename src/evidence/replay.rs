//! `warden evidence replay`: decide every recorded call again, by the snapshot that judged it,
//! and report any decision that comes out differently.

use std::collections::{BTreeSet, HashMap};

use crate::codes::Code;
use crate::decide::{decide, Usage};
use crate::policy::model::Action;
use crate::policy::store::{SnapshotStore, StoreError};
use crate::policy::Snapshot;

use super::segment::Read;
use super::Kind;

/// A recorded decision that replays differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub seq: u64,
    pub evidence_id: String,
    pub recorded: (Option<Action>, Option<Code>, Option<String>),
    pub replayed: (Option<Action>, Option<Code>, Option<String>),
    pub reasons_differ: bool,
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub checked: u64,
    /// Records without decision inputs (audit records, errors before a decision).
    pub skipped: u64,
    pub missing_snapshots: BTreeSet<String>,
    pub mismatches: Vec<Mismatch>,
}

pub fn replay(records: &[Read], store: &SnapshotStore) -> Result<ReplayReport, StoreError> {
    let mut report = ReplayReport::default();
    let mut cache: HashMap<String, Snapshot> = HashMap::new();
    for r in records {
        let rec = &r.record;
        let (Kind::Call, Some(req), Some(hash)) = (rec.kind, &rec.request, &rec.snapshot) else {
            report.skipped += 1;
            continue;
        };
        if !cache.contains_key(hash) {
            match store.load(hash) {
                Ok(s) => {
                    cache.insert(hash.clone(), s);
                }
                Err(StoreError::Missing(h)) => {
                    report.missing_snapshots.insert(h);
                    report.skipped += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(snap) = cache.get(hash) else {
            continue;
        };
        let usage = rec.usage.clone().unwrap_or_else(Usage::default);
        let d = decide(
            snap,
            req,
            &usage,
            rec.mode,
            rec.at_ms,
            rec.decision_id.as_deref().unwrap_or(""),
        );
        report.checked += 1;
        let replayed = (
            Some(d.action),
            d.code,
            d.policy.as_deref().map(str::to_string),
        );
        let recorded = (rec.action, rec.code, rec.policy.clone());
        let reasons_differ = d.reasons != rec.reasons;
        if replayed != recorded || reasons_differ {
            report.mismatches.push(Mismatch {
                seq: rec.seq,
                evidence_id: rec.evidence_id.clone(),
                recorded,
                replayed,
                reasons_differ,
            });
        }
    }
    Ok(report)
}
