//! The policy service's store, the same suite on SQLite and on a real PostgreSQL: append-only
//! tables refuse UPDATE and DELETE in the database itself, evidence is stored once per id and
//! its chain checked (gaps, forks and damaged records reported, never silently stored),
//! approvals are decided once, concurrent mutations build on each other. And the ingest RPC
//! end to end: a damaged record over gRPC is flagged, a batch too large refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::pg::Pg;
use common::service::*;
use warden::evidence::record::{genesis, record_hash};
use warden::evidence::{compact, Kind, Record};
use warden::proto as pb;
use warden::service::store::{AuditRow, EvidenceIn, Store};

/// A chain of `n` call records, as a sidecar's spool would hold them, from `start`.
fn chain(n: u64, start: u64, prev: &str, tag: &str) -> Vec<EvidenceIn> {
    let mut prev = prev.to_string();
    let mut out = Vec::new();
    for seq in start..start + n {
        let mut r = Record::new(Kind::Call, format!("ev-{tag}-{seq}"), 1_000 + seq);
        r.seq = seq;
        r.prev = prev.clone();
        r.run_id = Some(format!("run-{tag}"));
        let body = compact::encode(&r).unwrap();
        let hash = record_hash(&body);
        prev = hash.clone();
        out.push(EvidenceIn {
            evidence_id: r.evidence_id.clone(),
            seq: seq as i64,
            hash,
            prev: r.prev.clone(),
            body,
            intact: true,
            run_id: format!("run-{tag}"),
            approval: None,
        });
    }
    out
}

fn audit_row(action: &str) -> AuditRow {
    AuditRow {
        seq: 0,
        at_ms: 1,
        actor: "test".into(),
        action: action.into(),
        target: "t".into(),
        reason: "r".into(),
        before: String::new(),
        after: String::new(),
        critical: false,
        replica: "r1".into(),
    }
}

async fn suite(store: &Store) {
    // Append-only, in the database itself.
    let plan = |docs: Vec<warden::service::store::DocRow>| {
        warden::service::plan::apply(
            docs,
            "b.yaml",
            include_str!("../examples/contract/bundle.yaml"),
            None,
            &warden::service::plan::Who {
                actor: "test".into(),
                reason: "test".into(),
                replica: "r1".into(),
                now_ms: 1,
            },
        )
    };
    let (_, seq) = store.mutate(plan).await.unwrap().unwrap();
    assert_eq!(seq, Some(1));
    store.append_audit(&audit_row("x")).await.unwrap();
    store
        .set_modes(|_| {
            Ok::<_, ()>((
                "halted".to_string(),
                "{}".to_string(),
                audit_row("mode_change"),
            ))
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .ingest("sc-1", &chain(1, 0, &genesis(), "a"), "r1")
            .await
            .unwrap()
            .stored
            == 1
    );
    store
        .decide_approval("apr-1", "approve", &audit_row("approval"))
        .await
        .unwrap()
        .unwrap();
    for sql in [
        "UPDATE snapshots SET hash = 'sha256:forged'",
        "DELETE FROM snapshots",
        "UPDATE audit SET reason = 'rewritten'",
        "DELETE FROM audit",
        "UPDATE mode_changes SET global = 'enforcing'",
        "DELETE FROM mode_changes",
        "UPDATE approval_decisions SET decision = 'reject'",
        "DELETE FROM approval_decisions",
        "UPDATE evidence SET chain_ok = TRUE",
        "DELETE FROM evidence",
    ] {
        let e = store.execute_raw(sql).await.unwrap_err();
        assert!(e.to_string().contains("warden:"), "{sql}: {e}");
    }
    if store.is_postgres() {
        let e = store.execute_raw("TRUNCATE snapshots").await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
    }
    assert_eq!(store.current_snapshot().await.unwrap().unwrap().seq, 1);
    // Documents are not append-only (their history is the snapshots and the ledger).
    store
        .execute_raw("UPDATE documents SET updated_by = 'x' WHERE 1 = 0")
        .await
        .unwrap();

    // Evidence: once per id; the chain checked.
    let a = chain(10, 0, &genesis(), "b");
    let out = store.ingest("sc-2", &a[..6], "r1").await.unwrap();
    assert_eq!((out.stored, out.duplicates, out.issues.len()), (6, 0, 0));
    // Sent again with the rest: the first six are duplicates.
    let out = store.ingest("sc-2", &a, "r1").await.unwrap();
    assert_eq!(
        (out.stored, out.duplicates, out.issues.len()),
        (4, 6, 0),
        "{out:?}"
    );
    assert_eq!(out.stored_through, 9);
    assert_eq!(store.evidence_count(Some("sc-2")).await.unwrap(), 10);
    // A gap: seq 12 after 9.
    let gap = chain(1, 12, &a[9].hash, "c");
    let out = store.ingest("sc-2", &gap, "r1").await.unwrap();
    assert_eq!(out.stored, 1);
    assert!(out.issues[0].starts_with("gap"), "{out:?}");
    // A fork: a different record claiming seq 5.
    let fork = chain(1, 5, &a[4].hash, "d");
    let out = store.ingest("sc-2", &fork, "r1").await.unwrap();
    assert!(out.issues[0].starts_with("fork"), "{out:?}");
    // The same id again with other bytes: a fork, not stored.
    let mut twin = a[3].clone();
    twin.hash = "sha256:other".into();
    let out = store.ingest("sc-2", &[twin], "r1").await.unwrap();
    assert_eq!((out.stored, out.issues.len()), (0, 1));
    // A damaged record is stored flagged.
    let mut bad = chain(1, 13, &gap[0].hash, "e");
    bad[0].intact = false;
    let out = store.ingest("sc-2", &bad, "r1").await.unwrap();
    assert!(out.issues[0].starts_with("damaged"), "{out:?}");
    let flags: Vec<bool> = store
        .evidence_of("sc-2")
        .await
        .unwrap()
        .iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(flags.iter().filter(|ok| !**ok).count(), 3, "{flags:?}");
    // Each issue is in the ledger, critical.
    let issues = store.audit(0, 100, "evidence_chain_issue").await.unwrap();
    assert_eq!(issues.len(), 4);
    assert!(issues.iter().all(|i| i.critical));
    // Another sidecar's chain is its own.
    let out = store
        .ingest("sc-3", &chain(3, 0, &genesis(), "f"), "r1")
        .await
        .unwrap();
    assert_eq!((out.stored, out.issues.len()), (3, 0));

    // Approvals are decided once.
    assert!(store
        .decide_approval("apr-1", "reject", &audit_row("approval"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.approvals_after(0, 0).await.unwrap().len(), 1);

    // Concurrent mutations build on each other: neither is lost.
    let who = warden::service::plan::Who {
        actor: "t".into(),
        reason: "t".into(),
        replica: "r1".into(),
        now_ms: 2,
    };
    let doc = |id: &str| {
        format!(
            "apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: {id}, tenant: acme }}\n\
             spec: {{ status: draft, scope: {{ all_runs: true }}, match: {{ channel: http }}, effect: allow }}\n"
        )
    };
    let (d1, d2) = (doc("p9-one"), doc("p9-two"));
    let run = |text: String| {
        let who = who.clone();
        async move {
            let cur = store.current_snapshot().await.unwrap().map(|s| s.hash);
            store
                .mutate(|docs| {
                    warden::service::plan::apply(docs, "x.yaml", &text, cur.as_deref(), &who)
                })
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (x, y) = tokio::join!(run(d1), run(d2));
    assert!(x.1.is_some() && y.1.is_some());
    let ids: Vec<String> = store
        .documents()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!(ids.contains(&"p9-one".to_string()) && ids.contains(&"p9-two".to_string()));
    let last = store.current_snapshot().await.unwrap().unwrap();
    let bundle: warden::policy::overlay::Bundle = serde_json::from_str(&last.bundle).unwrap();
    assert_eq!(bundle.compile().unwrap().hash().to_string(), last.hash);
    assert_eq!(bundle.sources.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_sqlite() {
    let d = dir("store-sqlite");
    let store = Store::open(&format!("sqlite://{}", d.join("w.db").display()))
        .await
        .unwrap();
    suite(&store).await;
    // Opening again runs no migration twice.
    drop(store);
    Store::open(&format!("sqlite://{}", d.join("w.db").display()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_postgres() {
    let Some(pg) = Pg::start() else { return };
    let store = Store::open(&pg.url("postgres")).await.unwrap();
    suite(&store).await;
    drop(store);
    Store::open(&pg.url("postgres")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_grpc_checks_each_record() {
    let d = dir("ingest-grpc");
    let svc = start_service(
        &d,
        &format!("sqlite://{}", d.join("w.db").display()),
        "127.0.0.1:0",
    )
    .await;
    let mut c = pb::evidence_ingest_client::EvidenceIngestClient::new(channel(&svc.url).await);
    let id = pb::SidecarIdentity {
        sidecar_id: "sc-grpc".into(),
        tenant: "acme".into(),
        ..Default::default()
    };
    let mut recs: Vec<pb::ShippedRecord> = chain(3, 0, &genesis(), "g")
        .into_iter()
        .map(|e| pb::ShippedRecord {
            evidence_id: e.evidence_id,
            seq: e.seq as u64,
            hash: e.hash,
            prev: e.prev,
            body: e.body,
        })
        .collect();
    // The third record's bytes no longer match its hash.
    recs[2].body[3] ^= 0xff;
    let batch = pb::EvidenceBatch {
        sidecar: Some(id.clone()),
        batch: 1,
        records: recs,
    };
    let mut acks = c
        .ingest(request(tokio_stream::iter(vec![batch])))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.batch, ack.stored, ack.stored_through), (1, 3, 2));
    assert_eq!(ack.chain_issues.len(), 1);
    assert!(ack.chain_issues[0].starts_with("damaged"), "{ack:?}");
    // Without a token: refused and audited.
    let e = c
        .ingest(tonic::Request::new(tokio_stream::iter(Vec::<
            pb::EvidenceBatch,
        >::new())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // A batch without the sidecar's identity is refused.
    let mut acks = c
        .ingest(request(tokio_stream::iter(vec![pb::EvidenceBatch {
            sidecar: None,
            batch: 2,
            records: vec![],
        }])))
        .await
        .unwrap()
        .into_inner();
    let e = acks.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.metadata().get("warden-code").unwrap(), "bad_request");
}
