//! Evidence: one tamper-evident record per mediated call (`docs/evidence.md`).
//!
//! - [`record`] — the record and its hash;
//! - [`segment`] — framing in append-only segment files, torn-write detection;
//! - [`head`] — the anchored chain head (head slots and the pointer to the newest segment);
//! - [`spool`] — the durable local spool with group commit and crash recovery;
//! - [`verify`] and [`replay`] — what `warden evidence verify` and `replay` run.

pub mod compact;
pub mod head;
pub mod record;
pub mod redact;
pub mod replay;
pub mod segment;
pub mod spool;

use std::path::Path;

pub use record::{Basis, Kind, Outcome, Record};
pub use spool::{Durability, Spool, SpoolConfig};

use segment::{Anchor, Head, Read};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} at byte {offset}: {why}")]
    Corrupt {
        path: String,
        offset: u64,
        why: String,
    },
    #[error("{path} at byte {offset}: chain broken at record {seq}: {why}")]
    Chain {
        path: String,
        offset: u64,
        seq: u64,
        why: String,
    },
    #[error("{path}: chain head: {why}")]
    Head { path: String, why: String },
    #[error("evidence record too large")]
    TooLarge,
    #[error("cannot encode evidence record: {0}")]
    Encode(String),
    #[error("evidence write failed: {0}")]
    Write(String),
    #[error("evidence spool is poisoned by an earlier write failure")]
    Poisoned,
    #[error("evidence spool is closed")]
    Closed,
}

impl EvidenceError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        EvidenceError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub segments: usize,
    pub records: u64,
    pub head: Head,
    /// Torn tails: (segment, offset, bytes, why). Expected after a crash at the tail of the
    /// last segment (recovery cuts it); anywhere else it is corruption.
    pub torn: Vec<(String, u64, u64, String)>,
    /// The durable head the chain was checked against (`None`: a lone segment, an empty spool,
    /// or a spool written before chain heads — see `legacy`).
    pub anchor: Option<Anchor>,
    /// Records past the durable head: a crash between a group's frames and its head slot.
    /// Recovery anchors them at the next start.
    pub ahead: u64,
    /// Records of the last group the head names that are not on disk: a power loss (or OS
    /// crash) after the head slot reached the disk and before all of the group's frames did.
    /// Under `durability: sync` none of them was acknowledged to a caller.
    pub lost: u64,
    /// Every segment predates chain heads: the end of the chain is not anchored.
    pub legacy: bool,
}

/// Verify a spool directory (the whole chain across segments) or one segment file (its chain
/// from its first record on). Never modifies anything.
pub fn verify(path: &Path) -> Result<Report, EvidenceError> {
    if path.is_dir() {
        let ex = head::examine(path)?;
        let mut report = Report {
            segments: ex.segs.len(),
            records: ex.records,
            head: ex.head,
            anchor: ex.anchor,
            ahead: ex.ahead,
            lost: ex.lost,
            legacy: ex.legacy,
            ..Report::default()
        };
        if let Some(last) = ex.segs.last() {
            if let Some((len, why)) = &last.scan.torn {
                report.torn.push((
                    last.path.display().to_string(),
                    last.scan.good_len,
                    *len,
                    why.clone(),
                ));
            }
        }
        return Ok(report);
    }
    // A lone segment: its chain from its first record on, and its own head slot.
    let bytes = std::fs::read(path).map_err(|e| EvidenceError::io(path, e))?;
    let scan = segment::scan(path, &bytes)?;
    let mut report = Report {
        segments: 1,
        ..Report::default()
    };
    if let Some(r) = scan.records.first() {
        report.head = Head {
            next_seq: r.record.seq,
            hash: r.record.prev.clone(),
        };
    }
    segment::check_chain(path, &mut report.head, &scan.records)?;
    report.records = scan.records.len() as u64;
    if let Some((len, why)) = scan.torn.clone() {
        report
            .torn
            .push((path.display().to_string(), scan.good_len, len, why));
    }
    Ok(report)
}

/// Every whole record of a spool directory or segment file, in chain order, with its hash.
pub fn read_all(path: &Path) -> Result<Vec<Read>, EvidenceError> {
    let segs = if path.is_dir() {
        segment::list(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for seg in segs {
        let bytes = std::fs::read(&seg).map_err(|e| EvidenceError::io(&seg, e))?;
        out.extend(segment::scan(&seg, &bytes)?.records);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
