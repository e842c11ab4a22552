//! Append-only segment files and their framing.
//!
//! A segment is `MAGIC` followed by frames `[len: u32 LE][crc32: u32 LE][body: len bytes]`,
//! where `body` is one record as JSON. A frame that is short or whose checksum does not match
//! is a torn write: after a crash it can only be at the tail of the last segment, and recovery
//! cuts it there. Segments are named by the sequence number of their first record
//! (`00000000000000000042.wev`), so sorting names sorts the chain.

use std::path::{Path, PathBuf};

use super::record::{genesis, record_hash, Record};
use super::EvidenceError;

pub const MAGIC: &[u8; 8] = b"WEVSEG1\n";
pub const EXT: &str = "wev";
/// Bodies larger than this are refused on write and treated as corruption on read.
pub const MAX_BODY: u32 = 16 * 1024 * 1024;

/// Encode one frame.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{EXT}")
}

/// Segment files of a spool directory, in chain order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, EvidenceError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| EvidenceError::io(dir, e))?;
    for e in entries {
        let e = e.map_err(|e| EvidenceError::io(dir, e))?;
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) == Some(EXT) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// One record read back, with where it is.
#[derive(Debug, Clone)]
pub struct Read {
    pub record: Record,
    pub hash: String,
    pub offset: u64,
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Read>,
    /// Byte offset just past the last whole frame.
    pub good_len: u64,
    /// A torn or corrupt tail starting at `good_len`: (bytes, why).
    pub torn: Option<(u64, String)>,
}

/// Read all whole frames of a segment. Stops at the first bad frame and reports it as torn;
/// whether that is acceptable (tail of the last segment) is the caller's call.
pub fn scan(path: &Path, bytes: &[u8]) -> Result<Scan, EvidenceError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.is_empty() {
            return Ok(Scan {
                torn: Some((0, "empty segment".into())),
                ..Scan::default()
            });
        }
        return Err(EvidenceError::Corrupt {
            path: path.display().to_string(),
            offset: 0,
            why: "not a Warden evidence segment (bad magic)".into(),
        });
    }
    let mut scan = Scan {
        good_len: MAGIC.len() as u64,
        ..Scan::default()
    };
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |why: &str| {
            // A crash tears only the tail: whole, valid frames after a bad one mean the damage
            // is in the middle (tampering or media corruption), and cutting there would
            // silently drop evidence.
            match valid_frame_after(bytes, at + 1) {
                Some(next) => Err(EvidenceError::Corrupt {
                    path: path.display().to_string(),
                    offset: at as u64,
                    why: format!("{why}, followed by a valid record at byte {next}"),
                }),
                None => Ok(Some(((bytes.len() - at) as u64, why.to_string()))),
            }
        };
        if rest.len() < 8 {
            scan.torn = torn("short frame header")?;
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_BODY {
            scan.torn = torn("frame length out of range")?;
            break;
        }
        let Some(body) = rest.get(8..8 + len as usize) else {
            scan.torn = torn("short frame body")?;
            break;
        };
        if crc32fast::hash(body) != crc {
            scan.torn = torn("frame checksum mismatch")?;
            break;
        }
        let record: Record = serde_json::from_slice(body).map_err(|e| EvidenceError::Corrupt {
            path: path.display().to_string(),
            offset: at as u64,
            why: format!("frame holds no valid record: {e}"),
        })?;
        scan.records.push(Read {
            record,
            hash: record_hash(body),
            offset: at as u64,
        });
        at += 8 + len as usize;
        scan.good_len = at as u64;
    }
    Ok(scan)
}

/// The offset of the first whole, valid frame starting at or after `from`, if any. Record bodies
/// are JSON objects that start with `{"seq":`, so only those places are tried.
fn valid_frame_after(bytes: &[u8], from: usize) -> Option<usize> {
    const START: &[u8] = b"{\"seq\":";
    let mut i = from.max(MAGIC.len() + 8);
    while i + START.len() <= bytes.len() {
        let p = bytes[i..].windows(START.len()).position(|w| w == START)?;
        let body_at = i + p;
        let h = body_at - 8;
        let len = u32::from_le_bytes([bytes[h], bytes[h + 1], bytes[h + 2], bytes[h + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[h + 4], bytes[h + 5], bytes[h + 6], bytes[h + 7]]);
        if let Some(body) = bytes.get(body_at..body_at + len) {
            if len <= MAX_BODY as usize
                && crc32fast::hash(body) == crc
                && serde_json::from_slice::<Record>(body).is_ok()
            {
                return Some(h);
            }
        }
        i = body_at + 1;
    }
    None
}

/// The chain state after some records: next sequence number and the last hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub next_seq: u64,
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            next_seq: 0,
            hash: genesis(),
        }
    }
}

/// Check that `reads` continue the chain from `head`; advance it.
pub fn check_chain(path: &Path, head: &mut Head, reads: &[Read]) -> Result<(), EvidenceError> {
    for r in reads {
        let broken = |why: String| EvidenceError::Chain {
            path: path.display().to_string(),
            offset: r.offset,
            seq: r.record.seq,
            why,
        };
        if r.record.seq != head.next_seq {
            return Err(broken(format!(
                "sequence {} where {} was expected",
                r.record.seq, head.next_seq
            )));
        }
        if r.record.prev != head.hash {
            return Err(broken(format!(
                "prev {} does not match the previous record's hash {}",
                r.record.prev, head.hash
            )));
        }
        head.next_seq += 1;
        head.hash = r.hash.clone();
    }
    Ok(())
}
