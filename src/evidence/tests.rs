//! The spool over real files: chain, rotation, group commit, torn tails, tampering, replay.

use std::path::PathBuf;

use super::record::{genesis, Kind, Record};
use super::spool::{Durability, Spool, SpoolConfig};
use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("warden-ev-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rec(i: u64) -> Record {
    let mut r = Record::new(Kind::Call, format!("ev-{i}"), 1_000 + i);
    r.run_id = Some("run-1".into());
    r.output_tokens = i;
    r
}

fn open(
    dir: &std::path::Path,
    durability: Durability,
    segment_bytes: u64,
) -> (Spool, spool::Recovery) {
    let mut cfg = SpoolConfig::new(dir, durability);
    cfg.segment_bytes = segment_bytes;
    Spool::open(cfg).unwrap()
}

#[test]
fn appends_chain_across_segments_and_survive_reopen() {
    let dir = tmp("chain");
    {
        let (spool, rec0) = open(&dir, Durability::Sync, 600);
        assert_eq!(rec0.records, 0);
        let mut last = String::new();
        for i in 0..20 {
            let a = spool.append_blocking(rec(i)).unwrap();
            assert_eq!(a.seq, i);
            last = a.hash;
        }
        let report = verify(&dir).unwrap();
        assert_eq!(report.records, 20);
        assert!(
            report.segments > 2,
            "small segments rotate: {}",
            report.segments
        );
        assert_eq!(report.head.hash, last);
        assert!(report.torn.is_empty());
    }
    let (spool, recovery) = open(&dir, Durability::Os, 600);
    assert_eq!(recovery.records, 20);
    assert!(recovery.cut.is_none());
    let a = spool.append_blocking(rec(20)).unwrap();
    assert_eq!(a.seq, 20);
    let all = read_all(&dir).unwrap();
    assert_eq!(all.len(), 21);
    assert_eq!(all[0].record.prev, genesis());
    assert_eq!(all[20].record.prev, all[19].hash);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Append 400 records from as many tasks on a runtime of `workers` threads; every sequence
/// number is handed out once and the chain verifies.
fn append_from_tasks(dir: &std::path::Path, spool: &Spool, workers: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let s = spool.clone();
                tokio::spawn(async move { s.append(rec(i)).await.unwrap().seq })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    });
    assert_eq!(verify(dir).unwrap().records, 400);
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let dir = tmp("group");
    let (spool, _) = open(&dir, Durability::Sync, 64 << 20);
    append_from_tasks(&dir, &spool, 2);
    let syncs = spool
        .stats()
        .syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(syncs < 400, "group commit: {syncs} fsyncs for 400 records");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn os_appends_from_one_worker_are_written_in_groups() {
    let dir = tmp("os-group");
    let (spool, _) = open(&dir, Durability::Os, 64 << 20);
    append_from_tasks(&dir, &spool, 1);
    let writes = spool
        .stats()
        .writes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(writes < 100, "{writes} writes for 400 records");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_inline_appends_keep_one_chain() {
    // `durability: os` from plain threads: each flushes the queue it finds under a lock.
    let dir = tmp("inline");
    let (spool, _) = open(&dir, Durability::Os, 16 << 10);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = spool.clone();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| s.append_blocking(rec(t * 100 + i)).unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    let report = verify(&dir).unwrap();
    assert_eq!(report.records, 400);
    assert!(
        segment::list(&dir).unwrap().len() > 1,
        "rotation happened under concurrent appends"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_the_chain_still_verifies() {
    let dir = tmp("torn");
    {
        let (spool, _) = open(&dir, Durability::Sync, 64 << 20);
        for i in 0..5 {
            spool.append_blocking(rec(i)).unwrap();
        }
    }
    let seg = segment::list(&dir).unwrap().pop().unwrap();
    let whole = std::fs::metadata(&seg).unwrap().len();
    // A crash in the middle of writing the sixth frame: header and half a body.
    let body = serde_json::to_vec(&rec(5)).unwrap();
    let partial = &segment::frame(&body)[..20];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(partial);
    std::fs::write(&seg, &bytes).unwrap();

    let report = verify(&dir).unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(
        report.torn.len(),
        1,
        "verify reports the torn tail without touching it"
    );

    let (spool, recovery) = open(&dir, Durability::Sync, 64 << 20);
    let (_, offset, len, why) = recovery.cut.clone().unwrap();
    assert_eq!((offset, len), (whole, 20));
    assert_eq!(why, "short frame body");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole);
    assert!(PathBuf::from(format!("{}.torn-{whole}", seg.display())).exists());
    assert_eq!(spool.append_blocking(rec(5)).unwrap().seq, 5);
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.torn.len()), (6, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_segment_created_but_never_written_is_dropped() {
    let dir = tmp("empty");
    {
        let (spool, _) = open(&dir, Durability::Sync, 64 << 20);
        spool.append_blocking(rec(0)).unwrap();
    }
    std::fs::write(dir.join(segment::segment_name(1)), b"").unwrap();
    let (spool, recovery) = open(&dir, Durability::Sync, 64 << 20);
    assert!(recovery.cut.is_some());
    assert_eq!(spool.append_blocking(rec(1)).unwrap().seq, 1);
    assert_eq!(verify(&dir).unwrap().records, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rewrite record `n`'s body in place with a valid frame: framing passes, the chain does not.
fn tamper(dir: &std::path::Path, n: usize, edit: impl Fn(&mut Record)) {
    let seg = segment::list(dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let scan = segment::scan(&seg, &bytes).unwrap();
    let mut out = bytes[..segment::HEADER].to_vec();
    for (i, r) in scan.records.iter().enumerate() {
        let mut record = r.record.clone();
        if i == n {
            edit(&mut record);
        }
        // Re-encoded as the writer would: the tampered record is a well-formed one.
        let body = if scan.compact {
            super::compact::encode(&record).unwrap()
        } else {
            serde_json::to_vec(&record).unwrap()
        };
        out.extend_from_slice(&segment::frame(&body));
    }
    std::fs::write(&seg, out).unwrap();
}

#[test]
fn tampering_breaks_the_chain_at_the_next_record() {
    let dir = tmp("tamper");
    {
        let (spool, _) = open(&dir, Durability::Os, 64 << 20);
        for i in 0..6 {
            spool.append_blocking(rec(i)).unwrap();
        }
    }
    tamper(&dir, 2, |r| r.output_tokens = 999_999);
    match verify(&dir) {
        Err(EvidenceError::Chain { seq, .. }) => assert_eq!(seq, 3),
        other => panic!("expected a chain error, got {other:?}"),
    }
    // Recovery refuses a broken chain: the sidecar will not start on tampered evidence.
    let mut cfg = SpoolConfig::new(&dir, Durability::Os);
    cfg.segment_bytes = 64 << 20;
    assert!(matches!(Spool::open(cfg), Err(EvidenceError::Chain { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corruption_before_the_last_segment_is_an_error_not_a_tail() {
    let dir = tmp("midcorrupt");
    {
        let (spool, _) = open(&dir, Durability::Os, 400);
        for i in 0..10 {
            spool.append_blocking(rec(i)).unwrap();
        }
    }
    let first = segment::list(&dir).unwrap().remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    assert!(matches!(verify(&dir), Err(EvidenceError::Corrupt { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_lone_segment_verifies_from_its_first_record() {
    let dir = tmp("lone");
    {
        let (spool, _) = open(&dir, Durability::Os, 400);
        for i in 0..10 {
            spool.append_blocking(rec(i)).unwrap();
        }
    }
    let segs = segment::list(&dir).unwrap();
    let report = verify(segs.last().unwrap()).unwrap();
    assert!(report.records > 0 && report.records < 10);
    assert_eq!(report.head.next_seq, 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replay_finds_decisions_that_differ() {
    use crate::decide::{decide, Mode, Request, Usage};
    use crate::policy::store::SnapshotStore;
    use crate::policy::{compile_sources, Source};

    let dir = tmp("replay");
    let sources = vec![Source {
        name: "bundle.yaml".into(),
        text: include_str!("../../examples/contract/bundle.yaml").into(),
    }];
    let snap = compile_sources(&sources).unwrap();
    let store = SnapshotStore::new(dir.join("snapshots"));
    store.save(&snap, &sources).unwrap();
    let req: Request = serde_json::from_str(
        r#"{"tenant":"acme","project":"support","agent":"support-bot","channel":"llm","connector":"openai","model":"gpt-4o-mini","facts":{"pii":{"found":[]}},"delta":{"output_tokens":50}}"#,
    )
    .unwrap();
    let mut usage = Usage::default();
    usage.0.insert("p100-llm".into(), vec![1960.0]);
    let (spool, _) = open(&dir.join("spool"), Durability::Os, 64 << 20);
    for (i, honest) in [true, false, true].into_iter().enumerate() {
        let d = decide(&snap, &req, &usage, Mode::Enforcing, 5, &format!("d{i}"));
        let mut r = Record::new(Kind::Call, format!("ev{i}"), 5);
        r.decision_id = Some(d.decision_id.clone());
        r.snapshot = Some(snap.hash().to_string());
        r.action = Some(if honest {
            d.action
        } else {
            crate::policy::model::Action::Continue
        });
        r.code = d.code;
        r.policy = d.policy.as_deref().map(str::to_string);
        r.reasons = d.reasons.clone();
        r.request = Some(req.clone());
        r.usage = Some(usage.clone());
        spool.append_blocking(r).unwrap();
    }
    spool
        .append_blocking(Record::new(Kind::Audit, "audit-1", 6))
        .unwrap();
    let report = replay::replay(&read_all(&dir.join("spool")).unwrap(), &store).unwrap();
    assert_eq!((report.checked, report.skipped), (3, 1));
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!(report.mismatches[0].seq, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_followed_by_valid_records_is_never_cut_as_a_tail() {
    let dir = tmp("middamage");
    {
        let (spool, _) = open(&dir, Durability::Os, 64 << 20);
        for i in 0..6 {
            spool.append_blocking(rec(i)).unwrap();
        }
    }
    let seg = segment::list(&dir).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(4).position(|w| w == b"ev-2").unwrap();
    bytes[at + 3] = b'7';
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(verify(&dir), Err(EvidenceError::Corrupt { .. })));
    let cfg = SpoolConfig::new(&dir, Durability::Os);
    assert!(
        matches!(Spool::open(cfg), Err(EvidenceError::Corrupt { .. })),
        "recovery must not cut it"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was modified");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_os_flush_dropped_with_its_runtime_still_writes_and_never_stalls_the_queue() {
    let dir = tmp("os-shutdown");
    let (spool, _) = open(&dir, Durability::Os, 64 << 20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Queue a record and spawn its flush, then stop before the flush task ever runs.
    rt.block_on(async {
        let mut append = Box::pin(spool.append(rec(0)));
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(append.as_mut(), cx))
        })
        .await;
        assert!(first.is_pending(), "the append waits for its flush");
    });
    drop(rt);
    let (tx, rx) = std::sync::mpsc::channel();
    let s = spool.clone();
    std::thread::spawn(move || {
        let _ = tx.send(s.append_blocking(rec(1)));
    });
    let appended = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a later append must not wait on a flush that never comes")
        .unwrap();
    assert_eq!(
        appended.seq, 1,
        "the first record was written when its flush was dropped"
    );
    assert_eq!(verify(&dir).unwrap().records, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

// === The anchored head ===

/// A spool of `n` records in segments of `segment_bytes`.
fn spool_of(name: &str, n: u64, segment_bytes: u64) -> PathBuf {
    let dir = tmp(name);
    let (spool, _) = open(&dir, Durability::Sync, segment_bytes);
    for i in 0..n {
        spool.append_blocking(rec(i)).unwrap();
    }
    dir
}

/// Cut the newest segment's last `k` whole records off, as if they had never been written.
fn cut_last_records(dir: &std::path::Path, k: usize) {
    let seg = segment::list(dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let scan = segment::scan(&seg, &bytes).unwrap();
    let at = scan.records[scan.records.len() - k].offset;
    std::fs::write(&seg, &bytes[..at as usize]).unwrap();
}

fn opens(dir: &std::path::Path) -> Result<(Spool, spool::Recovery), EvidenceError> {
    Spool::open(SpoolConfig::new(dir, Durability::Sync))
}

#[test]
fn records_cut_off_the_end_of_the_newest_segment_are_found() {
    let dir = spool_of("head-trunc", 6, 64 << 20);
    cut_last_records(&dir, 2);
    let err = verify(&dir).unwrap_err().to_string();
    assert!(err.contains("records 4..5 are missing"), "{err}");
    let err = opens(&dir)
        .err()
        .expect("recovery refuses a truncated spool")
        .to_string();
    assert!(err.contains("records 4..5 are missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_deleted_newest_segment_is_found() {
    let dir = spool_of("head-delnewest", 12, 600);
    let segs = segment::list(&dir).unwrap();
    assert!(segs.len() > 2);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let err = verify(&dir).unwrap_err().to_string();
    assert!(
        err.contains("the newest segment") && err.contains("is missing"),
        "{err}"
    );
    assert!(
        opens(&dir).is_err(),
        "recovery refuses a spool whose newest segment is gone"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn err_of(dir: &std::path::Path) -> String {
    let v = verify(dir).unwrap_err().to_string();
    let o = opens(dir)
        .err()
        .expect("recovery refuses what verify refuses")
        .to_string();
    assert_eq!(v, o, "verify and recovery agree");
    v
}

#[test]
fn a_deleted_middle_segment_is_found() {
    let dir = spool_of("head-delmid", 12, 600);
    let segs = segment::list(&dir).unwrap();
    std::fs::remove_file(&segs[1]).unwrap();
    let err = err_of(&dir);
    assert!(
        err.contains("are missing before this segment: a segment was deleted"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_deleted_middle_segment_with_the_rest_renumbered_is_found() {
    let dir = spool_of("head-renum", 12, 600);
    let segs = segment::list(&dir).unwrap();
    std::fs::remove_file(&segs[1]).unwrap();
    std::fs::rename(&segs[2], &segs[1]).unwrap();
    let err = err_of(&dir);
    assert!(err.contains("segments were renamed or reordered"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reordered_middle_segments_are_found() {
    let dir = spool_of("head-reorder", 12, 600);
    let segs = segment::list(&dir).unwrap();
    assert!(segs.len() > 3);
    let tmp_name = dir.join("swap");
    std::fs::rename(&segs[1], &tmp_name).unwrap();
    std::fs::rename(&segs[2], &segs[1]).unwrap();
    std::fs::rename(&tmp_name, &segs[2]).unwrap();
    let err = err_of(&dir);
    assert!(err.contains("segments were renamed or reordered"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_first_middle_or_last_record_is_found() {
    for (n, broken_at) in [(0usize, Some(1u64)), (3, Some(4)), (5, None)] {
        let dir = spool_of(&format!("head-change-{n}"), 6, 64 << 20);
        tamper(&dir, n, |r| r.output_tokens = 999_999);
        match (verify(&dir), broken_at) {
            (Err(EvidenceError::Chain { seq, .. }), Some(at)) => assert_eq!(seq, at),
            (Err(e @ EvidenceError::Head { .. }), None) => {
                let e = e.to_string();
                assert!(e.contains("the last record does not match the head"), "{e}");
            }
            (other, _) => panic!("record {n} changed: {other:?}"),
        }
        assert!(opens(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_first_segment_seen_before_its_pointer_is_not_tampering_but_emptied_records_are() {
    let dir = spool_of("head-starting", 1, 64 << 20);
    let seg = segment::list(&dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::remove_file(dir.join(head::POINTER)).unwrap();
    // Its records cut off, the slots still say one record was written: refused.
    std::fs::write(&seg, &bytes[..segment::HEADER]).unwrap();
    assert!(
        err_of(&dir).contains("head pointer is missing"),
        "{}",
        err_of(&dir)
    );
    // A segment as it is created (slots at its start, no record) before its pointer: a live
    // spool seen in between, not tampering.
    let mut fresh = bytes[..segment::HEADER].to_vec();
    let start = segment::encode_slot(&segment::Anchor::at(&Default::default()));
    fresh[segment::MAGIC2.len()..segment::HEADER].copy_from_slice(&[start, start].concat());
    std::fs::write(&seg, &fresh).unwrap();
    verify(&dir).unwrap();
}

#[test]
fn a_missing_or_malformed_head_is_found() {
    let dir = spool_of("head-pointer", 4, 64 << 20);
    std::fs::remove_file(dir.join(head::POINTER)).unwrap();
    let err = err_of(&dir);
    assert!(err.contains("the head pointer is missing"), "{err}");
    std::fs::write(dir.join(head::POINTER), "WEVHEAD1 nonsense\n").unwrap();
    let err = err_of(&dir);
    assert!(err.contains("the head pointer is malformed"), "{err}");
    std::fs::write(
        dir.join(head::POINTER),
        format!("WEVHEAD1 {}\n", segment::segment_name(0)),
    )
    .unwrap();
    verify(&dir).unwrap();
    // Both head slots damaged.
    let seg = segment::list(&dir).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[segment::MAGIC2.len() + 20] ^= 1;
    bytes[segment::MAGIC2.len() + segment::SLOT + 20] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let err = err_of(&dir);
    assert!(err.contains("the head is malformed"), "{err}");
    // One damaged slot (a torn slot write): the other holds the group before, the chain is past it.
    bytes[segment::MAGIC2.len() + 20] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.ahead), (4, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Set both head slots of the newest segment to the older one: the newest slot write never
/// reached the disk.
fn lose_the_newest_slot(dir: &std::path::Path) {
    let seg = segment::list(dir).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let scan = segment::scan(&seg, &bytes).unwrap();
    let older = scan.older_slot();
    let at = segment::MAGIC2.len();
    let slot = bytes[at + older * segment::SLOT..at + (older + 1) * segment::SLOT].to_vec();
    bytes[at + (older ^ 1) * segment::SLOT..at + ((older ^ 1) + 1) * segment::SLOT]
        .copy_from_slice(&slot);
    std::fs::write(&seg, &bytes).unwrap();
}

#[test]
fn what_a_crash_explains_is_accepted_once_and_then_anchored() {
    // The chain past the head: a crash between a group's frames and its head slot.
    let dir = spool_of("head-ahead", 5, 64 << 20);
    lose_the_newest_slot(&dir);
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.ahead, report.lost), (5, 1, 0));
    let (spool, recovery) = opens(&dir).unwrap();
    assert_eq!(recovery.ahead, 1);
    drop(spool);
    assert_eq!(verify(&dir).unwrap().ahead, 0, "anchored at the start");
    std::fs::remove_dir_all(&dir).unwrap();

    // The head past the chain by its own last group: a power loss after the slot reached the
    // disk and before the frames did (never acknowledged under `sync`).
    let dir = spool_of("head-lost", 5, 64 << 20);
    cut_last_records(&dir, 1);
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.lost), (4, 1));
    let (spool, recovery) = opens(&dir).unwrap();
    assert_eq!(recovery.lost, 1);
    drop(spool);
    // Explained once: the head now sits at record 3, so losing it too is a truncation.
    assert_eq!(verify(&dir).unwrap().lost, 0);
    cut_last_records(&dir, 1);
    let err = err_of(&dir);
    assert!(err.contains("records 3..3 are missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_crash_while_starting_a_segment_is_accepted() {
    let dir = spool_of("head-rotate", 12, 600);
    let segs = segment::list(&dir).unwrap();
    let last = segs.last().unwrap();
    let report = verify(&dir).unwrap();
    // The next segment was created whole, then the crash came before the pointer moved — by
    // a build that wrote JSON segments (`MAGIC2`): the new build takes it over as compact.
    let next = dir.join(segment::segment_name(report.head.next_seq));
    let mut header = segment::MAGIC2.to_vec();
    let slot = segment::encode_slot(&segment::Anchor::at(&report.head));
    header.extend_from_slice(&slot);
    header.extend_from_slice(&slot);
    std::fs::write(&next, &header).unwrap();
    verify(&dir).unwrap();
    let (spool, _) = opens(&dir).unwrap();
    assert_eq!(spool.append_blocking(rec(12)).unwrap().seq, 12);
    drop(spool);
    assert_eq!(segment::list(&dir).unwrap().last().unwrap(), &next);
    assert!(std::fs::read(&next).unwrap().starts_with(segment::MAGIC3));
    assert_eq!(verify(&dir).unwrap().records, 13);
    assert!(last.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_spool_written_before_chain_heads_is_read_and_anchored_from_then_on() {
    let dir = tmp("head-legacy");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = segment::MAGIC.to_vec();
    let mut prev = genesis();
    for i in 0..3 {
        let mut r = rec(i);
        r.seq = i;
        r.prev = prev.clone();
        let body = serde_json::to_vec(&r).unwrap();
        prev = super::record::record_hash(&body);
        bytes.extend_from_slice(&segment::frame(&body));
    }
    std::fs::write(dir.join(segment::segment_name(0)), &bytes).unwrap();
    assert!(verify(&dir).unwrap().legacy);
    let (spool, recovery) = opens(&dir).unwrap();
    assert!(recovery.legacy);
    assert_eq!(spool.append_blocking(rec(3)).unwrap().seq, 3);
    drop(spool);
    let report = verify(&dir).unwrap();
    assert!(!report.legacy && report.anchor.is_some());
    assert_eq!((report.records, report.segments), (4, 2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_of_a_live_spool_never_reports_tampering() {
    // The sidecar's tests (and operators) verify while the writer appends and rotates.
    let dir = tmp("head-live");
    let (spool, _) = open(&dir, Durability::Os, 4000);
    spool.append_blocking(rec(0)).unwrap();
    let writer = {
        let s = spool.clone();
        std::thread::spawn(move || {
            for i in 1..400 {
                s.append_blocking(rec(i)).unwrap();
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() {
        if let Err(e) = verify(&dir) {
            panic!("a live spool verified as broken after {checks} checks: {e}");
        }
        checks += 1;
    }
    writer.join().unwrap();
    assert_eq!(verify(&dir).unwrap().records, 400);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_spool_of_json_segments_is_read_and_continued_in_compact_ones() {
    let dir = tmp("json-then-compact");
    std::fs::create_dir_all(&dir).unwrap();
    // What the previous build wrote: a `MAGIC2` segment of JSON records, anchored at its end.
    let mut frames = Vec::new();
    let mut head = Head {
        next_seq: 0,
        hash: genesis(),
    };
    let mut written = Vec::new();
    for i in 0..3 {
        let mut r = rec(i);
        r.seq = i;
        r.prev = head.hash.clone();
        let body = serde_json::to_vec(&r).unwrap();
        head = Head {
            next_seq: i + 1,
            hash: super::record::record_hash(&body),
        };
        frames.extend_from_slice(&segment::frame(&body));
        written.push(r);
    }
    let slot = segment::encode_slot(&segment::Anchor::at(&head));
    let mut bytes = segment::MAGIC2.to_vec();
    bytes.extend_from_slice(&slot);
    bytes.extend_from_slice(&slot);
    bytes.extend_from_slice(&frames);
    let name = segment::segment_name(0);
    std::fs::write(dir.join(&name), &bytes).unwrap();
    head::write_pointer(&dir, &name, false).unwrap();
    assert_eq!(verify(&dir).unwrap().records, 3);

    let (spool, _) = opens(&dir).unwrap();
    assert_eq!(spool.append_blocking(rec(3)).unwrap().seq, 3);
    drop(spool);
    let segs = segment::list(&dir).unwrap();
    assert_eq!(segs.len(), 2, "the JSON segment is left as it was");
    assert_eq!(std::fs::read(&segs[0]).unwrap(), bytes);
    assert!(std::fs::read(&segs[1])
        .unwrap()
        .starts_with(segment::MAGIC3));
    let report = verify(&dir).unwrap();
    assert_eq!((report.records, report.segments), (4, 2));
    let all = read_all(&dir).unwrap();
    assert_eq!(all.len(), 4);
    for (r, w) in all.iter().zip(&written) {
        assert_eq!(&r.record, w);
    }
    assert_eq!(all[3].record.evidence_id, rec(3).evidence_id);
    std::fs::remove_dir_all(&dir).unwrap();
}
