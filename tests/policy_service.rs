//! The policy service with sidecars that follow it, over loopback: snapshot push, lifecycle,
//! fleet-wide modes and the kill switch, authentication and the audit ledger — the same suite on
//! SQLite and on a real PostgreSQL; two replicas on one PostgreSQL; a restart of the service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pg::Pg;
use common::service::*;
use common::{client, wait_until, wait_until_async, Reader};
use http_body_util::Full;
use warden::proto as pb;

/// How long a change may take to reach every sidecar in these tests (the benchmark measures it).
const PROPAGATION: Duration = Duration::from_secs(3);

async fn stream(side: &Side, run: &str, content: &str) -> hyper::Response<hyper::body::Incoming> {
    let req = http::Request::post(side.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", run)
        .body(Full::new(Bytes::from(common::chat_body(
            "gpt-4o-mini",
            content,
            true,
            None,
        ))))
        .unwrap();
    client().request(req).await.unwrap()
}

fn last_code(events: &[String]) -> String {
    let last: serde_json::Value =
        serde_json::from_str(events.last().map_or("", String::as_str)).unwrap_or_default();
    last["error"]["code"].as_str().unwrap_or("").to_string()
}

async fn both_hold(a: &Side, b: &Side, hash: &str) {
    wait_until(&format!("both sidecars on {hash}"), PROPAGATION, || {
        a.snapshot() == hash && b.snapshot() == hash
    })
    .await;
}

async fn refused_everywhere(sides: &[&Side], status: u16, code: &str) {
    for (i, s) in sides.iter().enumerate() {
        wait_until_async(
            &format!("sidecar {i} refusing with {code}"),
            PROPAGATION,
            || async {
                let r = s.weather(&format!("probe-{}", uuid::Uuid::new_v4())).await;
                r.status == status && r.code() == code
            },
        )
        .await;
    }
}

/// The fleet suite, on whichever store `store_url` names.
async fn fleet(name: &str, store_url: &str) {
    let up = upstreams().await;
    let d = dir(name);
    let svc = start_service(&d.join("svc"), store_url, "127.0.0.1:0").await;
    let first = apply(&svc.url, "bundle.yaml", &up.bundle).await;
    assert!(first.snapshot.starts_with("sha256:"), "{first:?}");
    assert!(first.changes.iter().all(|c| c.change == "created"));
    assert_eq!(first.changes.len(), 10);
    // The snapshot the service made is the one the file compiles to.
    let file = warden::policy::compile_str("b", &up.bundle).unwrap();
    assert_eq!(first.snapshot, file.hash().to_string());

    let a = start_side(&d.join("a"), &svc.url, "").await;
    let b = start_side(&d.join("b"), &svc.url, "").await;
    both_hold(&a, &b, &first.snapshot).await;
    let r = a.weather("run-1").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A change applied reaches both.
    let second = apply(
        &svc.url,
        "bundle.yaml",
        &up.bundle.replace("max: 60", "max: 61"),
    )
    .await;
    assert_ne!(second.snapshot, first.snapshot);
    let updated: Vec<_> = second
        .changes
        .iter()
        .filter(|c| c.change != "unchanged")
        .collect();
    assert_eq!(updated.len(), 1, "{:?}", second.changes);
    assert_eq!(updated[0].id, "p200-crm-read");
    both_hold(&a, &b, &second.snapshot).await;
    // bind_at run_start (the contract's default): run-1 keeps the snapshot it started with; a
    // new run is judged by the new one.
    let old_run = a.weather("run-1").await;
    let new_run = a.weather("run-fresh").await;
    assert_eq!((old_run.status, new_run.status), (200, 200));
    let (old_id, new_id) = (
        old_run.header("x-warden-decision-id").unwrap(),
        new_run.header("x-warden-decision-id").unwrap(),
    );
    let snapshot_of = |recs: &[warden::evidence::Record], id: &str| {
        recs.iter()
            .find(|x| x.decision_id.as_deref() == Some(id))
            .and_then(|x| x.snapshot.clone())
    };
    wait_until("both records sealed", PROPAGATION, || {
        let recs = a.records();
        snapshot_of(&recs, &old_id).is_some() && snapshot_of(&recs, &new_id).is_some()
    })
    .await;
    let recs = a.records();
    assert_eq!(snapshot_of(&recs, &old_id).unwrap(), first.snapshot);
    assert_eq!(snapshot_of(&recs, &new_id).unwrap(), second.snapshot);

    // Suspending the weather policy refuses weather calls on both within the bound.
    let t = Instant::now();
    let p = lifecycle(&svc.url, "p300-weather", "suspended").await;
    assert_eq!(p.status, "suspended");
    refused_everywhere(&[&a, &b], 403, "no_allow_policy").await;
    eprintln!("suspend → refused on both in {:?}", t.elapsed());
    lifecycle(&svc.url, "p300-weather", "active").await;
    wait_until_async("weather allowed again", PROPAGATION, || async {
        a.weather(&format!("run-{}", uuid::Uuid::new_v4()))
            .await
            .status
            == 200
    })
    .await;

    // The kill switch: a stream in flight on `a` is cut, both refuse.
    let reader = Reader::spawn(stream(&a, "run-stream", "x [[reply:60]] [[slow:40]]").await);
    reader.received(2).await;
    let t = Instant::now();
    let m = set_mode(&svc.url, "halted", "").await;
    assert_eq!(m.global, "halted");
    let ev = tokio::time::timeout(Duration::from_secs(10), reader.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last_code(&ev), "governance_halted", "{ev:?}");
    eprintln!("kill switch → stream cut in {:?}", t.elapsed());
    refused_everywhere(&[&a, &b], 503, "governance_halted").await;
    set_mode(&svc.url, "enforcing", "").await;
    wait_until_async("traffic again after release", PROPAGATION, || async {
        a.weather("run-1").await.status == 200 && b.weather("run-b").await.status == 200
    })
    .await;

    // Degraded: new runs refused, running runs continue.
    set_mode(&svc.url, "degraded", "").await;
    wait_until("degraded on both", PROPAGATION, || {
        a.mode() == "degraded" && b.mode() == "degraded"
    })
    .await;
    let r = a.weather("run-new").await;
    assert_eq!((r.status, r.code().as_str()), (503, "governance_degraded"));
    let r = a.weather("run-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    set_mode(&svc.url, "enforcing", "").await;

    // Per tenant: another tenant's mode leaves acme alone; acme's own mode applies; inherit.
    set_mode(&svc.url, "halted", "globex").await;
    wait_until("globex halted on a", PROPAGATION, || {
        a.running.shared.rt.mode_for("globex").as_str() == "halted"
    })
    .await;
    assert_eq!(a.weather("run-1").await.status, 200);
    set_mode(&svc.url, "halted", "acme").await;
    refused_everywhere(&[&a, &b], 503, "governance_halted").await;
    set_mode(&svc.url, "inherit", "acme").await;
    wait_until("acme follows the global mode again", PROPAGATION, || {
        a.mode() == "enforcing" && b.mode() == "enforcing"
    })
    .await;

    // Bypass, fleet-wide: a critical audit entry, and both sidecars pass calls unenforced.
    set_mode(&svc.url, "bypass", "").await;
    wait_until("bypass on both", PROPAGATION, || {
        a.mode() == "bypass" && b.mode() == "bypass"
    })
    .await;
    lifecycle(&svc.url, "p300-weather", "suspended").await;
    wait_until("the suspension on a", PROPAGATION, || {
        a.snapshot() != second.snapshot
    })
    .await;
    let r = a.weather("run-bypassed").await;
    assert_eq!(
        r.status,
        200,
        "bypass passes what no policy allows: {}",
        r.text()
    );
    lifecycle(&svc.url, "p300-weather", "active").await;
    set_mode(&svc.url, "enforcing", "").await;
    wait_until("enforcing after bypass", PROPAGATION, || {
        a.mode() == "enforcing" && b.mode() == "enforcing"
    })
    .await;

    // Unauthenticated and wrong-token admin calls are refused and audited.
    let mut ops_c = ops(&svc.url).await;
    let e = ops_c
        .set_mode(tonic::Request::new(pb::SetModeRequest {
            mode: "bypass".into(),
            tenant: String::new(),
            reason: "no token".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(e.metadata().get("warden-code").unwrap(), "unauthorized");
    let mut bad = tonic::Request::new(pb::ApplyRequest {
        name: "x".into(),
        text: up.bundle.clone(),
        reason: String::new(),
        dry_run: false,
    });
    bad.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let e = admin(&svc.url).await.apply(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // Still enforcing: the refused call changed nothing.
    assert_eq!(a.mode(), "enforcing");
    let mut audit = pb::audit_client::AuditClient::new(channel(&svc.url).await);
    let entries = audit
        .query(request(pb::AuditQuery {
            after_seq: 0,
            limit: 1000,
            action: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let denied: Vec<_> = entries.iter().filter(|e| e.action == "denied").collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied
        .iter()
        .any(|e| e.actor == "anonymous" && e.target == "Ops/SetMode"));
    assert!(denied
        .iter()
        .any(|e| e.actor == "invalid-token" && e.target == "PolicyAdmin/Apply"));
    // Every change is in the ledger with who, why, before and after.
    let modes: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "mode_change")
        .collect();
    assert_eq!(modes.len(), 9, "{modes:?}");
    let critical: Vec<_> = modes.iter().filter(|e| e.critical).collect();
    assert_eq!(
        critical.len(),
        1,
        "entering bypass, and only that, is critical: {modes:?}"
    );
    assert!(critical[0].after.contains("\"global\":\"bypass\""));
    let halt = modes
        .iter()
        .find(|e| e.after.contains("\"global\":\"halted\""))
        .unwrap();
    assert_eq!(halt.actor, "admin-token");
    assert_eq!(halt.reason, "test");
    assert!(halt.before.contains("\"global\":\"enforcing\""), "{halt:?}");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "policy_apply")
            .count(),
        2
    );
    assert_eq!(
        entries.iter().filter(|e| e.action == "lifecycle").count(),
        4
    );
    // Both sidecars are connected, on the current snapshot.
    let current = svc.running.core.current().snapshot.unwrap().hash.clone();
    both_hold(&a, &b, &current).await;
    wait_until_async(
        "both connected on the current snapshot",
        PROPAGATION,
        || async {
            let st = ops(&svc.url)
                .await
                .status(request(pb::StatusRequest {}))
                .await
                .unwrap()
                .into_inner();
            st.snapshot == current
                && st
                    .sidecars
                    .iter()
                    .filter(|s| s.connected && s.snapshot == current)
                    .count()
                    == 2
        },
    )
    .await;

    // A snapshot that does not hash to its name is refused; the sidecar keeps its own.
    let good = (*svc.running.core.current().snapshot.unwrap()).clone();
    let mut renamed = good.clone();
    renamed.hash = format!("sha256:{}", "0".repeat(64));
    let mut altered = good.clone();
    let src = altered
        .sources
        .iter_mut()
        .find(|s| s.text.contains("max: 2000"))
        .unwrap();
    src.text = src.text.replace("max: 2000", "max: 9999999");
    // (Named after a snapshot the sidecar does not hold: one it holds is kept as verified.)
    altered.hash = first.snapshot.clone();
    for (what, bad) in [("renamed", renamed), ("altered", altered)] {
        let e = warden::sidecar::watch::install_snapshot(&a.running.shared, &bad)
            .await
            .unwrap_err();
        assert!(e.contains("not the hash it was sent with"), "{what}: {e}");
        assert_eq!(a.snapshot(), current, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_on_sqlite() {
    let d = dir("fleet-sqlite-db");
    fleet(
        "fleet-sqlite",
        &format!("sqlite://{}", d.join("warden.db").display()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_on_postgres() {
    let Some(pg) = Pg::start() else { return };
    fleet("fleet-pg", &pg.url("postgres")).await;
}

/// Two replicas on one PostgreSQL: a change made through either reaches the sidecars watching
/// the other (LISTEN/NOTIFY), and status through either shows the whole fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.url("postgres");
    let up = upstreams().await;
    let d = dir("replicas");
    let r1 = start_service(&d.join("r1"), &url, "127.0.0.1:0").await;
    let r2 = start_service(&d.join("r2"), &url, "127.0.0.1:0").await;
    let a = start_side(&d.join("a"), &r1.url, "").await;
    let b = start_side(&d.join("b"), &r2.url, "").await;
    // Applied through r1: b, watching r2, gets it.
    let first = apply(&r1.url, "bundle.yaml", &up.bundle).await.snapshot;
    both_hold(&a, &b, &first).await;
    // The kill switch through r2 reaches a, on r1.
    let t = Instant::now();
    set_mode(&r2.url, "halted", "").await;
    refused_everywhere(&[&a, &b], 503, "governance_halted").await;
    eprintln!("halted through r2 → refused on both in {:?}", t.elapsed());
    set_mode(&r1.url, "enforcing", "").await;
    wait_until("enforcing on both", PROPAGATION, || {
        a.mode() == "enforcing" && b.mode() == "enforcing"
    })
    .await;
    // Concurrent applies through both replicas build on each other (the advisory lock): both
    // documents end up stored and in the one snapshot both sidecars hold.
    let extra = |id: &str| {
        format!(
            "apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: {id}, tenant: acme }}\n\
             spec: {{ status: active, scope: {{ all_runs: true }}, match: {{ channel: http, connectors: [weather] }}, effect: allow }}\n"
        )
    };
    let (px, py) = (extra("p301-x"), extra("p302-y"));
    let (x, y) = tokio::join!(apply(&r1.url, "x.yaml", &px), apply(&r2.url, "y.yaml", &py));
    assert_ne!(x.snapshot, y.snapshot);
    let listed = admin(&r1.url)
        .await
        .list(request(pb::ListRequest {
            tenant: "acme".into(),
            kind: "Policy".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.items.iter().map(|i| i.id.as_str()).collect();
    assert!(
        ids.contains(&"p301-x") && ids.contains(&"p302-y"),
        "{ids:?}"
    );
    let last = listed.snapshot;
    both_hold(&a, &b, &last).await;
    // Status through r1 shows b, which r2 serves.
    wait_until_async("both sidecars in r1's status", PROPAGATION, || async {
        let st = ops(&r1.url)
            .await
            .status(request(pb::StatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        let reps: std::collections::BTreeSet<_> = st
            .sidecars
            .iter()
            .filter(|s| s.connected && s.snapshot == last)
            .map(|s| s.replica.clone())
            .collect();
        reps.len() == 2
    })
    .await;
}
