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
    let mut out = bytes[..segment::MAGIC.len()].to_vec();
    for (i, r) in scan.records.iter().enumerate() {
        let mut record = r.record.clone();
        if i == n {
            edit(&mut record);
        }
        out.extend_from_slice(&segment::frame(&serde_json::to_vec(&record).unwrap()));
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
    let at = bytes.windows(6).position(|w| w == b"\"ev-2\"").unwrap();
    bytes[at + 4] = b'7';
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
