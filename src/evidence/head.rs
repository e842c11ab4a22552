//! The anchored chain head: what lets a spool that lost records be told from an honest,
//! shorter one.
//!
//! The hash chain proves that every record follows the one before it; it cannot prove that
//! records are missing at the *end*. Two things anchor the end:
//!
//! - each `MAGIC2` segment carries two head slots ([`Anchor`]) at fixed offsets; the writer
//!   overwrites the older slot with each group of records and makes both the frames and the
//!   slot durable with the group's one `fdatasync` (same file, so no second flush). Cutting
//!   records off the end of the segment leaves the slot saying where the chain ended;
//! - the pointer file [`POINTER`] names the newest segment. It changes only when a segment is
//!   started (written to a temporary file, made durable under `sync`, renamed), so deleting the
//!   newest segment — or the newest few — leaves it naming a segment that is gone.
//!
//! What a crash can explain, and so recovery accepts:
//! - the chain running *past* the head: the frames of a group reached the disk and its slot did
//!   not (a crash between the two writes, or a torn slot: the other slot still holds the head of
//!   the group before). The records past the head are reported and anchored at the next start;
//! - the chain ending *inside* the last group the head names (between its `group_seq` and its
//!   `next_seq`, on its `group_prev`): the slot reached the disk and some frames did not, which
//!   only a power loss (or an OS crash) can do; under `sync` none of that group was acknowledged;
//! - one segment after the one the pointer names, holding no record: a crash while starting it.
//!
//! Anything else — the chain ending before the last group, a pointer naming a missing segment,
//! a missing or malformed pointer or head slot — is reported by `verify` and refused by
//! `Spool::open`.
//!
//! What it cannot prove: a writer with access to the spool directory can rewrite the segments,
//! the slots and the pointer consistently. The policy service's acknowledged head (once evidence
//! is shipped) is what anchors the chain outside the machine.

use std::path::{Path, PathBuf};

use super::segment::{self, Anchor, Head, Read, Scan};
use super::EvidenceError;

/// The pointer file: `WEVHEAD1 <newest segment name>\n`.
pub const POINTER: &str = "HEAD";
const POINTER_MAGIC: &str = "WEVHEAD1 ";

/// Read the pointer: `Ok(None)` when there is none.
pub fn read_pointer(dir: &Path) -> Result<Option<String>, EvidenceError> {
    let path = dir.join(POINTER);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EvidenceError::io(&path, e)),
    };
    let malformed = || EvidenceError::Head {
        path: path.display().to_string(),
        why: "the head pointer is malformed (expected `WEVHEAD1 <segment>`)".into(),
    };
    let text = std::str::from_utf8(&text).map_err(|_| malformed())?;
    let name = text
        .strip_prefix(POINTER_MAGIC)
        .and_then(|r| r.strip_suffix('\n'))
        .ok_or_else(malformed)?;
    if segment::name_seq(Path::new(name)).is_none() {
        return Err(malformed());
    }
    Ok(Some(name.to_string()))
}

/// Point at `name` atomically: temporary file, (`sync`: fsync), rename. The caller makes the
/// directory durable.
pub fn write_pointer(dir: &Path, name: &str, sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{POINTER}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{POINTER_MAGIC}{name}\n").as_bytes())?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(POINTER))
}

/// One segment as read.
pub struct Seg {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub scan: Scan,
    /// The chain state before its first record.
    pub start: Head,
}

/// What examining a spool directory found.
pub struct Examined {
    pub segs: Vec<Seg>,
    pub head: Head,
    pub records: u64,
    /// The head the newest segment's slot holds (`None` for a spool written before chain heads
    /// and for an empty spool).
    pub anchor: Option<Anchor>,
    /// Records past the head (a crash between the frames and the slot).
    pub ahead: u64,
    /// Records of the last group the head names that a crash kept from the disk.
    pub lost: u64,
    /// Every segment was written before chain heads existed, and there is no pointer.
    pub legacy: bool,
    /// The pointer does not name the newest segment (a crash while starting it).
    pub repoint: bool,
}

fn head_err(path: &Path, why: String) -> EvidenceError {
    EvidenceError::Head {
        path: path.display().to_string(),
        why,
    }
}

/// Check a spool directory: framing, the chain across segments, segment names, the pointer and
/// the head. Never modifies anything. A torn tail of the newest segment is not an error here
/// (the caller reports or cuts it).
pub fn examine(dir: &Path) -> Result<Examined, EvidenceError> {
    // A live spool (verify while the sidecar runs): the pointer moves before any record goes
    // into the segment it names, so a pointer that reads the same before and after the segments
    // were read describes them; when a rotation came in between, read again.
    let mut tries = 0;
    loop {
        let pointer = read_pointer(dir)?;
        let ex = examine_with(dir, pointer.clone());
        tries += 1;
        if tries >= 20 || read_pointer(dir)? == pointer {
            return ex;
        }
    }
}

fn examine_with(dir: &Path, pointer: Option<String>) -> Result<Examined, EvidenceError> {
    let paths = segment::list(dir)?;
    let mut segs = Vec::with_capacity(paths.len());
    let mut head = Head::default();
    let mut records = 0;
    for (i, path) in paths.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| EvidenceError::io(path, e))?;
        let scan = segment::scan(path, &bytes)?;
        let named = segment::name_seq(path)
            .ok_or_else(|| head_err(path, "not a segment name (20 digits and `.wev`)".into()))?;
        if let Some(first) = scan.records.first() {
            if first.record.seq != named {
                return Err(head_err(
                    path,
                    format!(
                        "the segment is named for record {named} but starts with record {}: segments were renamed or reordered",
                        first.record.seq
                    ),
                ));
            }
            if first.record.seq > head.next_seq {
                return Err(head_err(
                    path,
                    format!(
                        "records {}..{} are missing before this segment: a segment was deleted",
                        head.next_seq,
                        first.record.seq - 1
                    ),
                ));
            }
            if first.record.seq < head.next_seq {
                return Err(head_err(
                    path,
                    format!(
                        "the segment starts with record {}, which an earlier segment already holds: segments were reordered or duplicated",
                        first.record.seq
                    ),
                ));
            }
        }
        let start = head.clone();
        segment::check_chain(path, &mut head, &scan.records)?;
        records += scan.records.len() as u64;
        if let Some((_, why)) = &scan.torn {
            if i + 1 != paths.len() {
                return Err(EvidenceError::Corrupt {
                    path: path.display().to_string(),
                    offset: scan.good_len,
                    why: format!("{why} in a segment that is not the last"),
                });
            }
        }
        segs.push(Seg {
            path: path.clone(),
            bytes,
            scan,
            start,
        });
    }
    let mut ex = Examined {
        segs,
        head,
        records,
        anchor: None,
        ahead: 0,
        lost: 0,
        legacy: false,
        repoint: false,
    };
    let Some(name) = pointer else {
        if ex.segs.is_empty() {
            return Ok(ex);
        }
        // The first anchored segment is created, then the pointer written: seen in between
        // (a live spool, or a crash there), the one anchored segment is the newest and holds
        // no record yet — nothing anchored was ever written, so nothing can be missing.
        // Its head slots must say so too (records cut off it would leave them ahead).
        let starting = ex.segs.last().is_some_and(|s| {
            s.scan.v2
                && s.scan.records.is_empty()
                && s.scan.torn.is_none()
                && s.scan.anchor().map(|a| a.next_seq) == segment::name_seq(&s.path)
        }) && ex.segs[..ex.segs.len() - 1].iter().all(|s| !s.scan.v2);
        if starting {
            ex.legacy = ex.segs.len() > 1;
            return Ok(ex);
        }
        if ex.segs.iter().all(|s| !s.scan.v2) {
            ex.legacy = true;
            return Ok(ex);
        }
        return Err(head_err(
            &dir.join(POINTER),
            "the head pointer is missing: the newest segment cannot be told from a deleted one"
                .into(),
        ));
    };
    let Some(p) = ex
        .segs
        .iter()
        .position(|s| s.path.file_name().and_then(|n| n.to_str()) == Some(name.as_str()))
    else {
        return Err(head_err(
            &dir.join(&name),
            format!(
                "the newest segment (named by the head pointer) is missing: deleted; the spool now ends before record {}",
                ex.head.next_seq
            ),
        ));
    };
    // After the pointed-at segment: at most one, holding no record (a crash while starting it).
    match ex.segs.len() - p - 1 {
        0 => {}
        1 if ex.segs[p + 1].scan.records.is_empty() => {
            let s = &ex.segs[p + 1].scan;
            ex.repoint = s.v2 && s.torn.is_none();
        }
        _ => {
            return Err(head_err(
                &ex.segs[p + 1].path,
                format!("the segment comes after the newest one the head pointer names ({name})"),
            ))
        }
    }
    let seg = &ex.segs[p];
    if seg.scan.torn.is_some() && seg.scan.good_len == 0 {
        return Err(head_err(
            &seg.path,
            format!(
                "the newest segment was cut to {} bytes, below its head slots: records were cut off its end",
                seg.bytes.len()
            ),
        ));
    }
    if !seg.scan.v2 {
        return Err(head_err(
            &seg.path,
            "the head pointer names a segment without head slots".into(),
        ));
    }
    let Some(anchor) = seg.scan.anchor().cloned() else {
        return Err(head_err(
            &seg.path,
            "both head slots of the newest segment are damaged or empty: the head is malformed"
                .into(),
        ));
    };
    // The chain state after `n` records, within this segment.
    let end = seg.start.next_seq + seg.scan.records.len() as u64;
    let hash_at = |n: u64| -> Option<&str> {
        if n == seg.start.next_seq {
            Some(seg.start.hash.as_str())
        } else if n > seg.start.next_seq && n <= end {
            seg.scan
                .records
                .get((n - seg.start.next_seq - 1) as usize)
                .map(|r: &Read| r.hash.as_str())
        } else {
            None
        }
    };
    if anchor.next_seq <= end {
        if hash_at(anchor.next_seq) != Some(anchor.hash.as_str()) {
            let which = if anchor.next_seq == end {
                "the last record".to_string()
            } else {
                format!("record {}", anchor.next_seq.saturating_sub(1))
            };
            return Err(head_err(
                &seg.path,
                format!(
                    "{which} does not match the head ({}): it was changed or replaced",
                    anchor.hash
                ),
            ));
        }
        ex.ahead = end - anchor.next_seq;
    } else if anchor.group_seq <= end
        && anchor.group_seq >= seg.start.next_seq
        && hash_at(anchor.group_seq) == Some(anchor.group_prev.as_str())
    {
        ex.lost = anchor.next_seq - end;
    } else {
        return Err(head_err(
            &seg.path,
            format!(
                "records {}..{} are missing: the head says the chain ends at record {} ({}), the newest segment ends {}: records were cut off its end",
                end,
                anchor.next_seq - 1,
                anchor.next_seq - 1,
                anchor.hash,
                if end == 0 { "before any record".to_string() } else { format!("at record {}", end - 1) }
            ),
        ));
    }
    ex.anchor = Some(anchor);
    Ok(ex)
}
