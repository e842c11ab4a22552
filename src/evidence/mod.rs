//! Evidence: one tamper-evident record per mediated call (DESIGN §7).
//!
//! - [`record`] — the record and its hash;
//! - [`segment`] — framing in append-only segment files, torn-write detection;
//! - [`spool`] — the durable local spool with group commit and crash recovery;
//! - [`verify`] and [`replay`] — what `warden evidence verify` and `replay` run.

pub mod record;
pub mod replay;
pub mod segment;
pub mod spool;

use std::path::Path;

pub use record::{Basis, Kind, Outcome, Record};
pub use spool::{Durability, Spool, SpoolConfig};

use segment::{Head, Read};

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
}

/// Verify a spool directory (the whole chain across segments) or one segment file (its chain
/// from its first record on). Never modifies anything.
pub fn verify(path: &Path) -> Result<Report, EvidenceError> {
    let (segs, whole_dir) = if path.is_dir() {
        (segment::list(path)?, true)
    } else {
        (vec![path.to_path_buf()], false)
    };
    let mut report = Report {
        segments: segs.len(),
        ..Report::default()
    };
    let mut first = true;
    for (i, seg) in segs.iter().enumerate() {
        let bytes = std::fs::read(seg).map_err(|e| EvidenceError::io(seg, e))?;
        let scan = segment::scan(seg, &bytes)?;
        if first && !whole_dir {
            // A lone segment: start the chain where its first record says it starts.
            if let Some(r) = scan.records.first() {
                report.head = Head {
                    next_seq: r.record.seq,
                    hash: r.record.prev.clone(),
                };
            }
        }
        first = false;
        segment::check_chain(seg, &mut report.head, &scan.records)?;
        report.records += scan.records.len() as u64;
        if let Some((len, why)) = scan.torn {
            let last = i + 1 == segs.len();
            if !last {
                return Err(EvidenceError::Corrupt {
                    path: seg.display().to_string(),
                    offset: scan.good_len,
                    why: format!("{why} in a segment that is not the last"),
                });
            }
            report
                .torn
                .push((seg.display().to_string(), scan.good_len, len, why));
        }
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
