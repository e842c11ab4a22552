//! `policy.source: service`: follow the policy service's snapshot watch.
//!
//! One task holds a watch stream open (reconnecting with jittered exponential backoff, 100 ms
//! to 5 s). A snapshot that arrives is compiled again and must hash to its name, or it is
//! refused (reported to the service; the current one stays); a good one is cached on disk as
//! last-known-good and swapped in atomically (runs bound at `run_start` keep theirs). Modes
//! apply the moment they arrive — before anything is written, so a kill switch never waits on
//! a disk — and are cached too, so a sidecar restarted while the service is away comes back in
//! the mode it was told last. Approval decisions settle the pending approvals this sidecar
//! holds and are ignored otherwise.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::state::Shared;
use crate::decide::Mode;
use crate::policy::overlay::{Bundle, BundleSource, PolicyState};
use crate::proto as pb;
use crate::spine::state::runs::Approval;
use crate::spine::state::Modes;

const MODES_FILE: &str = "modes.json";

/// Largest message the sidecar reads from the service (a 10,000-policy snapshot is a few MiB).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How to reach the service.
#[derive(Clone)]
pub struct Link {
    pub url: String,
    pub token: Option<String>,
    pub identity: pb::SidecarIdentity,
}

impl Link {
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        Endpoint::from_shared(self.url.clone())
            .map(|e| {
                e.connect_timeout(Duration::from_secs(2))
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true)
            })
            .map_err(|e| format!("policy.service `{}`: {e}", self.url))
    }

    /// A request with the credentials in its metadata.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }
}

fn mode_of(s: &str) -> Option<Mode> {
    crate::service::plan::parse_mode(s)
}

/// The sidecar's modes from the service's.
pub fn modes_from(m: &pb::Modes) -> Result<Modes, String> {
    let global = mode_of(&m.global).ok_or_else(|| format!("unknown global mode `{}`", m.global))?;
    let mut tenants = HashMap::new();
    for (t, v) in &m.tenants {
        tenants.insert(
            t.clone(),
            mode_of(v).ok_or_else(|| format!("unknown mode `{v}` for tenant `{t}`"))?,
        );
    }
    Ok(Modes { global, tenants })
}

/// The last modes the service sent, cached beside the last-known-good snapshot.
pub fn cached_modes(cache_dir: &Path) -> Option<pb::Modes> {
    let text = std::fs::read_to_string(cache_dir.join(MODES_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(pb::Modes {
        global: v.get("global")?.as_str()?.to_string(),
        tenants: v
            .get("tenants")?
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        epoch: v.get("epoch")?.as_u64()?,
        reason: v
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("")
            .into(),
        actor: v.get("actor").and_then(|r| r.as_str()).unwrap_or("").into(),
        changed_at_ms: 0,
    })
}

fn cache_modes(cache_dir: &Path, m: &pb::Modes) {
    let v = serde_json::json!({
        "global": m.global, "tenants": m.tenants, "epoch": m.epoch, "reason": m.reason, "actor": m.actor,
    });
    let _ = std::fs::create_dir_all(cache_dir);
    let tmp = cache_dir.join("modes.json.tmp");
    let ok = std::fs::write(&tmp, v.to_string()).and_then(|_| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, cache_dir.join(MODES_FILE))
    });
    if let Err(e) = ok {
        tracing::warn!(error = %e, "could not cache the modes");
    }
}

fn bundle_of(s: &pb::Snapshot) -> Result<Bundle, String> {
    let mut lifecycle = Vec::with_capacity(s.lifecycle.len());
    for l in &s.lifecycle {
        lifecycle.push(PolicyState {
            tenant: l.tenant.clone(),
            id: l.id.clone(),
            status: crate::service::plan::parse_status(&l.status)
                .ok_or_else(|| format!("policy {} has status `{}`", l.id, l.status))?,
            shadow: l.shadow,
        });
    }
    Ok(Bundle {
        sources: s
            .sources
            .iter()
            .map(|x| BundleSource {
                name: x.name.clone(),
                text: x.text.clone(),
            })
            .collect(),
        lifecycle,
    })
}

/// What the follower knows, for reports.
#[derive(Default)]
struct Seen {
    modes_epoch: u64,
    refused: Option<(String, String)>,
}

/// Apply modes from the service (or the cache). The change is in force before it is recorded
/// here as an audit record.
pub async fn apply_modes(shared: &Shared, m: &pb::Modes, from: &str) -> Result<(), String> {
    let modes = modes_from(m)?;
    let current = shared
        .rt
        .modes
        .lock()
        .map(|x| x.clone())
        .unwrap_or_default();
    if current == modes {
        return Ok(());
    }
    let before = super::admin::install_modes(shared, modes.clone());
    if modes.global == Mode::Bypass || modes.tenants.values().any(|v| *v == Mode::Bypass) {
        tracing::error!(reason = %m.reason, actor = %m.actor, "CRITICAL: governance bypass set by the policy service; calls pass unenforced");
    }
    tracing::info!(global = %m.global, epoch = m.epoch, from, "modes applied");
    let _ = super::admin::audit(
        shared,
        serde_json::json!({
            "event": "mode_change",
            "source": from,
            "actor": m.actor,
            "reason": m.reason,
            "epoch": m.epoch,
            "before": before,
            "after": modes,
            "critical": modes.global == Mode::Bypass,
        }),
    )
    .await;
    cache_modes(&shared.cfg.policy.cache_dir, m);
    Ok(())
}

/// Verify a snapshot from the service and swap it in. Returns its hash.
pub async fn install_snapshot(shared: &Shared, s: &pb::Snapshot) -> Result<String, String> {
    if shared
        .rt
        .snapshot()
        .is_some_and(|cur| **cur.hash() == *s.hash)
    {
        return Ok(s.hash.clone());
    }
    let bundle = bundle_of(s)?;
    let store = shared.store.clone();
    let expected = s.hash.clone();
    let snap = tokio::task::spawn_blocking(move || {
        let snap = bundle.compile().map_err(|e| {
            format!(
                "does not compile: {}",
                e.first().map(|e| e.render()).unwrap_or_default()
            )
        })?;
        if **snap.hash() != *expected {
            return Err(format!(
                "compiles to {}, not the hash it was sent with",
                snap.hash()
            ));
        }
        if let Err(e) = store
            .save_bundle(&snap, &bundle)
            .and_then(|_| store.set_last_known_good(snap.hash()))
        {
            tracing::warn!(error = %e, "could not cache the snapshot as last-known-good");
        }
        Ok(snap)
    })
    .await
    .map_err(|e| e.to_string())??;
    shared.rt.snapshot.store(Some(Arc::new(snap)));
    shared.rt.metrics.set_ready(true);
    tracing::info!(snapshot = %s.hash, seq = s.seq, "snapshot from the policy service in force");
    Ok(s.hash.clone())
}

fn apply_approval(shared: &Shared, a: &pb::ApprovalDecision) {
    let verdict = match a.decision.as_str() {
        "approve" => Approval::Approved,
        "reject" => Approval::Rejected,
        _ => return,
    };
    if let Ok(run) = super::admin::settle_approval(shared, &a.approval_id, verdict) {
        tracing::info!(approval = %a.approval_id, run = %run, decision = %a.decision, "approval from the policy service");
        let shared_rt = shared.rt.clone();
        let record = serde_json::json!({ "event": "approval", "source": "policy-service", "approval_id": a.approval_id, "run_id": run, "decision": a.decision, "reason": a.reason, "actor": a.actor });
        // Recorded after it took effect, like a mode change from the service.
        let mut r = crate::evidence::Record::new(
            crate::evidence::Kind::Audit,
            uuid::Uuid::now_v7().to_string(),
            crate::spine::state::Runtime::now_ms(),
        );
        r.tenant = Some(shared.cfg.identity.tenant.clone());
        r.agent = Some(shared.cfg.identity.agent.clone());
        r.run_id = Some(run);
        r.audit = Some(record);
        tokio::spawn(async move {
            let _ = shared_rt.spool.append(r).await;
        });
    }
}

async fn report(link: &Link, channel: &Channel, shared: &Shared, seen: &Seen) {
    let mut client = pb::snapshot_watch_client::SnapshotWatchClient::new(channel.clone());
    let stats = super::ship::unshipped(shared);
    let msg = pb::SidecarReport {
        sidecar: Some(link.identity.clone()),
        snapshot: shared
            .rt
            .snapshot()
            .map(|s| s.hash().to_string())
            .unwrap_or_default(),
        modes_epoch: seen.modes_epoch,
        unshipped_records: stats.0,
        unshipped_bytes: stats.1,
        refused_snapshot: seen
            .refused
            .as_ref()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        refused_why: seen
            .refused
            .as_ref()
            .map(|r| r.1.clone())
            .unwrap_or_default(),
    };
    if let Err(e) = client.report(link.request(msg)).await {
        tracing::debug!(error = %e, "report to the policy service failed");
    }
}

/// Follow the service until the task is dropped. `first` is told when the first snapshot from
/// the service is in force.
pub async fn follow(shared: Arc<Shared>, link: Link, first: tokio::sync::watch::Sender<bool>) {
    let endpoint = match link.endpoint() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the policy service");
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut seen = Seen::default();
    loop {
        let channel = endpoint.connect_lazy();
        let mut client = pb::snapshot_watch_client::SnapshotWatchClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE);
        let held = shared
            .rt
            .snapshot()
            .map(|s| s.hash().to_string())
            .unwrap_or_default();
        let req = link.request(pb::WatchRequest {
            sidecar: Some(link.identity.clone()),
            held_snapshot: held,
        });
        match client.watch(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                tracing::info!(service = %link.url, "watching the policy service");
                shared.rt.metrics.set_service_connected(true);
                loop {
                    let msg = match stream.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            tracing::warn!("the policy service ended the watch stream");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the watch stream failed");
                            break;
                        }
                    };
                    backoff = Duration::from_millis(100);
                    match msg.event {
                        Some(pb::watch_event::Event::Modes(m)) => {
                            match apply_modes(&shared, &m, "policy-service").await {
                                Ok(()) => seen.modes_epoch = m.epoch,
                                Err(e) => {
                                    tracing::error!(error = %e, "modes from the service refused")
                                }
                            }
                        }
                        Some(pb::watch_event::Event::Snapshot(s)) => {
                            match install_snapshot(&shared, &s).await {
                                Ok(_) => {
                                    seen.refused = None;
                                    first.send_replace(true);
                                }
                                Err(why) => {
                                    tracing::error!(snapshot = %s.hash, %why, "snapshot from the service refused; keeping the current one");
                                    shared.rt.metrics.snapshot_refused();
                                    seen.refused = Some((s.hash.clone(), why));
                                }
                            }
                        }
                        Some(pb::watch_event::Event::Approval(a)) => apply_approval(&shared, &a),
                        None => {}
                    }
                    if shared.rt.snapshot().is_some() {
                        // A snapshot already held (the service saw its hash and sent none).
                        first.send_replace(true);
                    }
                    report(&link, &channel, &shared, &seen).await;
                }
                shared.rt.metrics.set_service_connected(false);
            }
            Err(e) => {
                if e.code() == tonic::Code::Unauthenticated {
                    tracing::error!(error = %e, "the policy service refused this sidecar's token");
                } else {
                    tracing::warn!(error = %e, "cannot reach the policy service");
                }
            }
        }
        let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
