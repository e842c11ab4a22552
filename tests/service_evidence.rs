//! Evidence shipping and the sidecar's life without the service: an outage while calls run
//! (spooled, then shipped — counted, nothing lost or duplicated), records sent twice (stored
//! once), the spool bound (`not_ready`, nothing lost), a restarted service (sidecars keep
//! last-known-good and the modes they were told, and reconnect), a sidecar started with no
//! service and no cache (boot guard), approvals decided on the service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::service::*;
use common::{wait_until, wait_until_async};
use warden::proto as pb;
use warden::service::store::Store;

const SHIPPED: Duration = Duration::from_secs(15);

fn sqlite(d: &std::path::Path) -> String {
    format!("sqlite://{}", d.join("warden.db").display())
}

async fn stored_ids(store_url: &str, sidecar: &str) -> Vec<(i64, String, bool)> {
    let store = Store::open(store_url).await.unwrap();
    store.evidence_of(sidecar).await.unwrap()
}

/// Every record of the spool is on the service exactly once, in one unbroken chain.
async fn all_shipped(svc: &Svc, side: &Side) -> usize {
    let id = side.sidecar_id();
    wait_until_async("the whole spool on the service", SHIPPED, || {
        let want = side.records().len();
        let svc = &svc.running;
        let id = id.clone();
        async move {
            let have = svc.core.store.evidence_count(Some(&id)).await.unwrap() as usize;
            have == want && want > 0
        }
    })
    .await;
    let spool: Vec<String> = side.records().into_iter().map(|r| r.evidence_id).collect();
    let stored = svc.running.core.store.evidence_of(&id).await.unwrap();
    let seqs: Vec<i64> = stored.iter().map(|s| s.0).collect();
    assert_eq!(
        seqs,
        (0..spool.len() as i64).collect::<Vec<_>>(),
        "one record per seq, none missing"
    );
    assert!(
        stored.iter().all(|s| s.2),
        "every record continues the chain"
    );
    let ids: Vec<String> = stored.iter().map(|s| s.1.clone()).collect();
    assert_eq!(
        ids, spool,
        "the service holds the spool's records, in order"
    );
    spool.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_spools_then_ships_nothing_lost_nothing_twice() {
    let up = upstreams().await;
    let d = dir("ship-outage");
    let url = sqlite(&d);
    let svc = start_service(&d.join("svc"), &url, "127.0.0.1:0").await;
    apply(&svc.url, "bundle.yaml", &up.bundle).await;
    let side = start_side(&d.join("a"), &svc.url, "").await;
    for i in 0..20 {
        assert_eq!(side.weather(&format!("before-{i}")).await.status, 200);
    }
    let before = all_shipped(&svc, &side).await;
    assert!(before >= 20, "{before}");

    // The service goes away; calls go on (the snapshot is held), evidence is spooled.
    let grpc = svc.running.grpc_addr.to_string();
    let (sdir, surl) = (svc.dir.clone(), svc.store_url.clone());
    drop(svc);
    for i in 0..30 {
        let r = side.weather(&format!("during-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_until("the backlog counted", Duration::from_secs(5), || {
        warden::sidecar::ship::unshipped(&side.running.shared).0 >= 30
    })
    .await;
    let svc = start_service(&sdir, &surl, &grpc).await;
    let n = all_shipped(&svc, &side).await;
    assert_eq!(n, before + 30, "{n}");
    wait_until("the backlog drained", Duration::from_secs(5), || {
        warden::sidecar::ship::unshipped(&side.running.shared).0 == 0
    })
    .await;

    // A sidecar that lost its cursor (a crash before saving it) sends everything again: the
    // service stores nothing twice and reports no chain issue.
    let sdir_a = side.dir.clone();
    drop(side);
    std::fs::remove_file(sdir_a.join("evidence/SHIPPED")).unwrap();
    let side = start_side(&sdir_a, &svc.url, "").await;
    wait_until("the resent records acknowledged", SHIPPED, || {
        warden::sidecar::ship::read_cursor(&sdir_a.join("evidence")) as usize >= n
    })
    .await;
    let stored = stored_ids(&url, &side.sidecar_id()).await;
    assert_eq!(stored.len(), side.records().len());
    let distinct: BTreeSet<_> = stored.iter().map(|s| s.1.clone()).collect();
    assert_eq!(distinct.len(), stored.len());
    let m = svc.running.core.metrics.render();
    assert!(
        m.contains("warden_service_evidence_records_total{result=\"duplicate\"}"),
        "{m}"
    );
    assert!(
        m.contains("warden_service_evidence_chain_issues_total 0"),
        "{m}"
    );
    // The sidecar's side of the lag metric.
    let body = warden::spine::state::metrics::Metrics::new().render(0, 0);
    assert!(body.contains("warden_evidence_shipping_lag_ms"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_spool_bound_calls_are_refused_not_ready_and_nothing_is_lost() {
    let up = upstreams().await;
    let d = dir("ship-bound");
    let url = sqlite(&d);
    let svc = start_service(&d.join("svc"), &url, "127.0.0.1:0").await;
    apply(&svc.url, "bundle.yaml", &up.bundle).await;
    let side = start_side(
        &d.join("a"),
        &svc.url,
        "evidence: { spool_dir: evidence, durability: os, max_unshipped_bytes: 4000 }\n",
    )
    .await;
    assert_eq!(side.weather("r0").await.status, 200);
    let grpc = svc.running.grpc_addr.to_string();
    let (sdir, surl) = (svc.dir.clone(), svc.store_url.clone());
    drop(svc);
    // Calls pass until what is unacknowledged reaches the bound; then not_ready.
    let mut refused = None;
    for i in 0..400 {
        let r = side.weather(&format!("r{i}")).await;
        if r.status == 503 {
            assert_eq!(r.code(), "not_ready", "{}", r.text());
            refused = Some(r.header("x-warden-decision-id").unwrap());
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = refused.expect("the bound was never reached");
    // The refusal itself is recorded.
    wait_until("the refusal recorded", Duration::from_secs(5), || {
        side.records()
            .iter()
            .any(|r| r.decision_id.as_deref() == Some(refused.as_str()))
    })
    .await;
    let r = side.weather("while-full").await;
    assert_eq!((r.status, r.code().as_str()), (503, "not_ready"));
    // The service comes back: everything is shipped, calls pass again.
    let svc = start_service(&sdir, &surl, &grpc).await;
    all_shipped(&svc, &side).await;
    wait_until_async("calls pass again", Duration::from_secs(10), || async {
        side.weather(&format!("after-{}", uuid::Uuid::new_v4()))
            .await
            .status
            == 200
    })
    .await;
    all_shipped(&svc, &side).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_service_leaves_sidecars_on_last_known_good_and_they_reconnect() {
    let up = upstreams().await;
    let d = dir("svc-restart");
    let url = sqlite(&d);
    let svc = start_service(&d.join("svc"), &url, "127.0.0.1:0").await;
    let first = apply(&svc.url, "bundle.yaml", &up.bundle).await.snapshot;
    let a = start_side(&d.join("a"), &svc.url, "").await;
    let b = start_side(&d.join("b"), &svc.url, "").await;
    wait_until("both on the first snapshot", Duration::from_secs(5), || {
        a.snapshot() == first && b.snapshot() == first
    })
    .await;
    set_mode(&svc.url, "halted", "globex").await;
    wait_until("globex halted on b", Duration::from_secs(5), || {
        b.running.shared.rt.mode_for("globex").as_str() == "halted"
    })
    .await;
    let grpc = svc.running.grpc_addr.to_string();
    let (sdir, surl, surl_http) = (svc.dir.clone(), svc.store_url.clone(), svc.url.clone());
    drop(svc);

    // `a` goes on serving; `b`, restarted while the service is away, serves its cache.
    assert_eq!(a.weather("a-1").await.status, 200);
    let bdir = b.dir.clone();
    drop(b);
    let b = start_side(&bdir, &surl_http, "").await;
    assert_eq!(
        b.snapshot(),
        first,
        "b started on its last-known-good snapshot"
    );
    assert_eq!(
        b.running.shared.rt.mode_for("globex").as_str(),
        "halted",
        "and the modes it was told"
    );
    let r = b.weather("b-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A sidecar with neither the service nor a cache refuses traffic (boot guard).
    let c = start_side(&d.join("c"), &surl_http, "").await;
    let r = c.weather("c-1").await;
    assert_eq!((r.status, r.code().as_str()), (503, "not_ready"));

    // The service is back: all three reconnect; a change reaches all of them.
    let svc = start_service(&sdir, &surl, &grpc).await;
    wait_until(
        "c ready once the service answers",
        Duration::from_secs(10),
        || c.snapshot() == first,
    )
    .await;
    let second = apply(
        &svc.url,
        "bundle.yaml",
        &up.bundle.replace("max: 60", "max: 62"),
    )
    .await
    .snapshot;
    wait_until(
        "all three on the new snapshot",
        Duration::from_secs(10),
        || a.snapshot() == second && b.snapshot() == second && c.snapshot() == second,
    )
    .await;
    wait_until_async(
        "three connected in status",
        Duration::from_secs(10),
        || async {
            let st = ops(&svc.url)
                .await
                .status(request(pb::StatusRequest {}))
                .await
                .unwrap()
                .into_inner();
            st.sidecars
                .iter()
                .filter(|s| s.connected && s.snapshot == second)
                .count()
                == 3
        },
    )
    .await;
}

const PAUSE_WEATHER: &str = "---\napiVersion: warden/v1\nkind: Policy\nmetadata: { id: p050-hold-weather, tenant: acme }\nspec:\n  status: active\n  scope: { all_runs: true }\n  match: { channel: http, connectors: [weather] }\n  effect: deny\n  action: pause\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_decided_on_the_service_releases_the_paused_call() {
    let up = upstreams().await;
    let d = dir("svc-approval");
    let svc = start_service(&d.join("svc"), &sqlite(&d), "127.0.0.1:0").await;
    apply(
        &svc.url,
        "bundle.yaml",
        &format!("{}{PAUSE_WEATHER}", up.bundle),
    )
    .await;
    let side = start_side(&d.join("a"), &svc.url, "").await;
    let r = side.weather("run-p").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "approval_required"),
        "{}",
        r.text()
    );
    let id = r.header("x-warden-approval-id").unwrap();
    let mut ops_c = ops(&svc.url).await;
    // An id no sidecar reported is not found; the real one is, once shipped.
    let e = ops_c
        .decide_approval(request(pb::DecideApprovalRequest {
            approval_id: "apr-made-up".into(),
            decision: "approve".into(),
            reason: "test".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    wait_until_async("the approval known to the service", SHIPPED, || {
        let core = svc.running.core.clone();
        let id = id.clone();
        async move { core.store.pending_approval(&id).await.unwrap().is_some() }
    })
    .await;
    let a = ops_c
        .decide_approval(request(pb::DecideApprovalRequest {
            approval_id: id.clone(),
            decision: "approve".into(),
            reason: "looked at it".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.decision, "approve");
    wait_until_async("the retry passes", Duration::from_secs(5), || async {
        side.weather("run-p").await.status == 200
    })
    .await;
    // Deciding twice is refused.
    let e = ops_c
        .decide_approval(request(pb::DecideApprovalRequest {
            approval_id: id.clone(),
            decision: "reject".into(),
            reason: "again".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(e.metadata().get("warden-code").unwrap(), "not_pending");
}
