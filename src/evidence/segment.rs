//! Append-only segment files and their framing.
//!
//! A segment is `MAGIC3`, two head slots ([`Anchor`], `SLOT` bytes each, at fixed offsets), then
//! frames `[len: u32 LE][crc32: u32 LE][body: len bytes]`, where `body` is one record in the
//! compact encoding ([`super::compact`]). `MAGIC2` segments are the same with JSON bodies.
//! Segments written before chain heads existed start with `MAGIC` and frames right after it. A frame that is short or whose checksum does not match
//! is a torn write: after a crash it can only be at the tail of the last segment, and recovery
//! cuts it there. Segments are named by the sequence number of their first record
//! (`00000000000000000042.wev`), so sorting names sorts the chain.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{genesis, record_hash, Record};
use super::EvidenceError;

/// Segments written before chain heads (no head slots); still read, never written.
pub const MAGIC: &[u8; 8] = b"WEVSEG1\n";
/// Segments with two head slots after the magic and JSON record bodies; still read, never
/// written.
pub const MAGIC2: &[u8; 8] = b"WEVSEG2\n";
/// Segments with two head slots and compact record bodies ([`super::compact`]): what the
/// spool writes.
pub const MAGIC3: &[u8; 8] = b"WEVSEG3\n";
/// Bytes of one head slot: `[len: u32 LE][crc32: u32 LE][Anchor as JSON]`, zero-padded.
pub const SLOT: usize = 256;
/// Where the frames of a `MAGIC2` segment start.
pub const HEADER: usize = MAGIC2.len() + 2 * SLOT;
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
    /// A `MAGIC2` or `MAGIC3` segment (with head slots).
    pub v2: bool,
    /// A `MAGIC3` segment (compact record bodies).
    pub compact: bool,
    /// Its two head slots, `None` where a slot does not decode (torn or damaged).
    pub slots: [Option<Anchor>; 2],
}

impl Scan {
    /// The newest valid head slot.
    pub fn anchor(&self) -> Option<&Anchor> {
        match &self.slots {
            [Some(a), Some(b)] => Some(if b.next_seq > a.next_seq { b } else { a }),
            [Some(a), None] | [None, Some(a)] => Some(a),
            [None, None] => None,
        }
    }

    /// The slot to overwrite next: the one not holding the newest head.
    pub fn older_slot(&self) -> usize {
        match &self.slots {
            [Some(a), Some(b)] if b.next_seq > a.next_seq => 0,
            [Some(_), _] => 1,
            _ => 0,
        }
    }
}

/// The chain head as the writer last recorded it in a segment's head slot, with each group of
/// records (in the same `fdatasync`): the chain ends before record `next_seq` with `hash`; the
/// group that wrote it began at `group_seq`, on the chain state `group_prev`. A crash can lose at
/// most that group's frames (under `sync` none of them was acknowledged), so a chain that ends
/// anywhere in `group_seq..next_seq` on `group_prev` is explained; a chain that ends earlier
/// lost acknowledged records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub next_seq: u64,
    pub hash: String,
    pub group_seq: u64,
    pub group_prev: String,
}

impl Anchor {
    /// A head with no group in flight: the chain ends exactly at `head`.
    pub fn at(head: &Head) -> Anchor {
        Anchor {
            next_seq: head.next_seq,
            hash: head.hash.clone(),
            group_seq: head.next_seq,
            group_prev: head.hash.clone(),
        }
    }
}

/// One head slot's bytes.
pub fn encode_slot(a: &Anchor) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    // An anchor is two sha256 strings and two numbers: always far below a slot.
    let body = serde_json::to_vec(a).unwrap_or_default();
    if body.is_empty() || body.len() > SLOT - 8 {
        return out;
    }
    out[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out[8..8 + body.len()].copy_from_slice(&body);
    out
}

/// A head slot's anchor, or `None` when the slot is torn, damaged or empty.
pub fn decode_slot(slot: &[u8]) -> Option<Anchor> {
    let len = u32::from_le_bytes(slot.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(slot.get(4..8)?.try_into().ok()?);
    let body = slot.get(8..8usize.checked_add(len)?)?;
    if len == 0 || crc32fast::hash(body) != crc {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The first sequence number a segment's file name claims, if it is a segment name.
pub fn name_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(&format!(".{EXT}"))?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Read all whole frames of a segment. Stops at the first bad frame and reports it as torn;
/// whether that is acceptable (tail of the last segment) is the caller's call.
pub fn scan(path: &Path, bytes: &[u8]) -> Result<Scan, EvidenceError> {
    let compact = bytes.len() >= MAGIC3.len() && &bytes[..MAGIC3.len()] == MAGIC3;
    let v2 = compact || (bytes.len() >= MAGIC2.len() && &bytes[..MAGIC2.len()] == MAGIC2);
    if !v2 && (bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC) {
        if bytes.is_empty() || MAGIC3.starts_with(bytes) || MAGIC2.starts_with(bytes) {
            return Ok(Scan {
                torn: Some((bytes.len() as u64, "empty segment".into())),
                ..Scan::default()
            });
        }
        return Err(EvidenceError::Corrupt {
            path: path.display().to_string(),
            offset: 0,
            why: "not a Warden evidence segment (bad magic)".into(),
        });
    }
    let start = if v2 { HEADER } else { MAGIC.len() };
    if v2 && bytes.len() < HEADER {
        // Created, and cut before its header was whole: nothing was ever appended to it.
        return Ok(Scan {
            torn: Some((bytes.len() as u64, "short segment header".into())),
            ..Scan::default()
        });
    }
    let mut scan = Scan {
        good_len: start as u64,
        v2,
        compact,
        ..Scan::default()
    };
    if v2 {
        scan.slots = [
            decode_slot(&bytes[MAGIC2.len()..MAGIC2.len() + SLOT]),
            decode_slot(&bytes[MAGIC2.len() + SLOT..HEADER]),
        ];
    }
    let mut at = start;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |why: &str| {
            // A crash tears only the tail: whole, valid frames after a bad one mean the damage
            // is in the middle (tampering or media corruption), and cutting there would
            // silently drop evidence.
            match valid_frame_after(bytes, start, at + 1, compact) {
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
        let record = read_body(body, compact).map_err(|why| EvidenceError::Corrupt {
            path: path.display().to_string(),
            offset: at as u64,
            why: format!("frame holds no valid record: {why}"),
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

/// A record body: compact (`MAGIC3`; a JSON body there starts with `{`) or JSON.
fn read_body(body: &[u8], compact: bool) -> Result<Record, String> {
    if compact {
        super::compact::decode(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

/// The offset of the first whole, valid frame starting at or after `from`, if any.
fn valid_frame_after(bytes: &[u8], start: usize, from: usize, compact: bool) -> Option<usize> {
    if compact {
        return valid_compact_frame_after(bytes, start, from);
    }
    // JSON bodies start with `{"seq":`, so only those places are tried.
    const START: &[u8] = b"{\"seq\":";
    let mut i = from.max(start + 8);
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

/// In a compact segment, a body starts with the tag of its first field present: `seq` (0x08),
/// or `prev` (0x12) for the first record; or `{` (a JSON body). Every such place is tried.
fn valid_compact_frame_after(bytes: &[u8], start: usize, from: usize) -> Option<usize> {
    let mut h = from.max(start);
    while h + 9 <= bytes.len() {
        if matches!(bytes[h + 8], 0x08 | 0x12 | b'{') {
            let len =
                u32::from_le_bytes([bytes[h], bytes[h + 1], bytes[h + 2], bytes[h + 3]]) as usize;
            let crc = u32::from_le_bytes([bytes[h + 4], bytes[h + 5], bytes[h + 6], bytes[h + 7]]);
            if len <= MAX_BODY as usize {
                if let Some(body) = bytes.get(h + 8..h + 8 + len) {
                    if crc32fast::hash(body) == crc && read_body(body, true).is_ok() {
                        return Some(h);
                    }
                }
            }
        }
        h += 1;
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
