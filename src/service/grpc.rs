//! The service's gRPC API (`proto/warden/v1/control.proto`) on port 15010.
//!
//! Credentials ride in `authorization: Bearer <token>`. Policy admin, ops and audit need the
//! admin token; snapshot watch, reports and evidence ingest take the sidecar token (or the
//! admin token). A call without a valid token is UNAUTHENTICATED and leaves an audit entry.
//! Every refusal carries its code (docs/codes.md) in the `warden-code` trailer.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::plan::{self, LifecycleOp, PlanError, Who};
use super::store::{now_ms, AuditRow, EvidenceIn, SidecarRow, StoreError};
use super::{Core, Head};
use crate::codes::Code;
use crate::proto as pb;

/// A refusal with its code in the `warden-code` metadata.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    let mut s = Status::new(tonic::Code::from(code.grpc_status()), message.into());
    if let Ok(v) = code.as_str().parse() {
        s.metadata_mut().insert("warden-code", v);
    }
    s
}

fn store_status(e: StoreError) -> Status {
    tracing::error!(error = %e, "store failure");
    status(
        Code::StoreUnavailable,
        format!("the store failed, nothing changed: {e}"),
    )
}

fn plan_status(e: PlanError) -> Status {
    match &e {
        PlanError::Invalid(_) => status(Code::InvalidBundle, e.to_string()),
        PlanError::Precondition(_) => status(Code::LifecycleNotAllowed, e.to_string()),
        PlanError::NotFound(_) => status(Code::UnknownPolicy, e.to_string()),
    }
}

fn bad(message: impl Into<String>) -> Status {
    status(Code::BadRequest, message)
}

/// Who may call what.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Admin,
    Sidecar,
}

fn bearer(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    meta.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Constant-time comparison of a presented token with the configured one.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Core {
    /// Check the caller's token for `rpc`; refuse and audit otherwise. Returns the actor.
    async fn authorize(
        &self,
        meta: &tonic::metadata::MetadataMap,
        role: Role,
        rpc: &str,
    ) -> Result<String, Status> {
        let given = bearer(meta);
        let admin = given.is_some_and(|g| same(g, &self.admin_token));
        let sidecar = role == Role::Sidecar
            && given.is_some_and(|g| self.sidecar_token.as_deref().is_some_and(|t| same(g, t)));
        if admin || sidecar {
            let claimed = meta
                .get("x-warden-actor")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(128).collect::<String>())
                .filter(|s| !s.trim().is_empty());
            let base = if admin {
                "admin-token"
            } else {
                "sidecar-token"
            };
            return Ok(match claimed {
                Some(c) => format!("{base} ({c})"),
                None => base.to_string(),
            });
        }
        self.metrics.unauthenticated.inc();
        let who = if given.is_some() {
            "invalid-token"
        } else {
            "anonymous"
        };
        let row = AuditRow {
            seq: 0,
            at_ms: now_ms(),
            actor: who.into(),
            action: "denied".into(),
            target: rpc.into(),
            reason: if given.is_some() {
                "the token presented is not valid for this call".into()
            } else {
                "no bearer token".into()
            },
            before: String::new(),
            after: String::new(),
            critical: false,
            replica: self.replica.clone(),
        };
        if let Err(e) = self.store.append_audit(&row).await {
            tracing::error!(error = %e, rpc, "could not audit a refused call");
        }
        Err(status(
            Code::Unauthorized,
            match role {
                Role::Admin => format!("{rpc} needs `authorization: Bearer <admin token>`"),
                Role::Sidecar => format!("{rpc} needs `authorization: Bearer <sidecar token>`"),
            },
        ))
    }

    fn who(&self, actor: String, reason: &str) -> Who {
        Who {
            actor,
            reason: reason.trim().to_string(),
            replica: self.replica.clone(),
            now_ms: now_ms(),
        }
    }

    async fn published(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "committed, but re-reading the store failed; the next refresh publishes it");
        }
    }
}

/// The one struct behind every service trait.
#[derive(Clone)]
pub struct Api {
    pub core: Arc<Core>,
}

fn info(d: &super::store::DocRow, with_text: bool) -> pb::PolicyInfo {
    pb::PolicyInfo {
        kind: d.kind.clone(),
        tenant: d.tenant.clone(),
        id: d.id.clone(),
        status: d.status.clone(),
        shadow: d.shadow,
        revision: d.revision as u64,
        updated_at_ms: d.updated_at_ms,
        updated_by: d.updated_by.clone(),
        text: if with_text {
            d.text.clone()
        } else {
            String::new()
        },
    }
}

const MAX_REASON: usize = 1024;

fn check_reason(reason: &str, needed: bool) -> Result<(), Status> {
    if reason.len() > MAX_REASON {
        return Err(bad(format!("the reason is longer than {MAX_REASON} bytes")));
    }
    if needed && reason.trim().is_empty() {
        return Err(bad("this change needs a reason (--reason)"));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::policy_admin_server::PolicyAdmin for Api {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyReply>, Status> {
        let (actor, r) = self.admit(req, Role::Admin, "PolicyAdmin/Apply").await?;
        check_reason(&r.reason, false)?;
        let name = if r.name.trim().is_empty() {
            "bundle".to_string()
        } else {
            r.name.clone()
        };
        let reason = if r.reason.trim().is_empty() {
            format!("apply {name}")
        } else {
            r.reason.clone()
        };
        let who = self.core.who(actor, &reason);
        let current = self.core.current().snapshot.map(|s| s.hash.clone());
        let (changes, hash, seq) = if r.dry_run {
            let docs = self.core.store.documents().await.map_err(store_status)?;
            let (_, (changes, hash)) =
                plan::apply(docs, &name, &r.text, current.as_deref(), &who).map_err(plan_status)?;
            (changes, hash, None)
        } else {
            let store = &self.core.store;
            let cur = store
                .current_snapshot()
                .await
                .map_err(store_status)?
                .map(|s| s.hash);
            let out = store
                .mutate(|docs| plan::apply(docs, &name, &r.text, cur.as_deref(), &who))
                .await
                .map_err(store_status)?
                .map_err(plan_status)?;
            let ((changes, hash), seq) = out;
            self.core.published().await;
            (changes, hash, seq)
        };
        let head = self.core.current();
        Ok(Response::new(pb::ApplyReply {
            snapshot: hash.unwrap_or_default(),
            snapshot_seq: seq
                .map(|s| s as u64)
                .or(head.snapshot.map(|s| s.seq))
                .unwrap_or(0),
            changes: changes
                .into_iter()
                .map(|c| pb::DocChange {
                    kind: c.kind,
                    tenant: c.tenant,
                    id: c.id,
                    change: c.change.into(),
                })
                .collect(),
        }))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let (_, r) = self.admit(req, Role::Admin, "PolicyAdmin/List").await?;
        let docs = self.core.store.documents().await.map_err(store_status)?;
        let items = docs
            .iter()
            .filter(|d| r.tenant.is_empty() || d.tenant == r.tenant)
            .filter(|d| r.kind.is_empty() || d.kind == r.kind)
            .map(|d| info(d, false))
            .collect();
        Ok(Response::new(pb::ListReply {
            items,
            snapshot: self
                .core
                .current()
                .snapshot
                .map(|s| s.hash.clone())
                .unwrap_or_default(),
        }))
    }

    async fn show(
        &self,
        req: Request<pb::ShowRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let (_, r) = self.admit(req, Role::Admin, "PolicyAdmin/Show").await?;
        let kind = if r.kind.is_empty() {
            "Policy"
        } else {
            r.kind.as_str()
        };
        let docs = self.core.store.documents().await.map_err(store_status)?;
        let found: Vec<_> = docs
            .iter()
            .filter(|d| {
                d.kind == kind && d.id == r.id && (r.tenant.is_empty() || d.tenant == r.tenant)
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(Response::new(info(one, true))),
            [] => Err(status(Code::UnknownPolicy, format!("no {kind} `{}`", r.id))),
            _ => Err(bad(format!(
                "{kind} id `{}` exists in several tenants; say which with --tenant",
                r.id
            ))),
        }
    }

    async fn set_lifecycle(
        &self,
        req: Request<pb::LifecycleRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let (actor, r) = self
            .admit(req, Role::Admin, "PolicyAdmin/SetLifecycle")
            .await?;
        check_reason(&r.reason, true)?;
        let to = plan::parse_status(&r.status)
            .filter(|s| *s != crate::policy::model::Status::Draft)
            .ok_or_else(|| {
                bad(format!(
                    "status must be active, suspended or retired, not `{}`",
                    r.status
                ))
            })?;
        self.lifecycle(actor, &r.id, &r.tenant, LifecycleOp::Status(to), &r.reason)
            .await
    }

    async fn set_shadow(
        &self,
        req: Request<pb::ShadowRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let (actor, r) = self
            .admit(req, Role::Admin, "PolicyAdmin/SetShadow")
            .await?;
        check_reason(&r.reason, true)?;
        self.lifecycle(
            actor,
            &r.id,
            &r.tenant,
            LifecycleOp::Shadow(r.shadow),
            &r.reason,
        )
        .await
    }
}

impl Api {
    /// Check the call's token for `rpc` (refused and audited otherwise): the actor and the
    /// message.
    async fn admit<T>(
        &self,
        req: Request<T>,
        role: Role,
        rpc: &str,
    ) -> Result<(String, T), Status> {
        let actor = self.core.authorize(req.metadata(), role, rpc).await?;
        Ok((actor, req.into_inner()))
    }

    async fn lifecycle(
        &self,
        actor: String,
        id: &str,
        tenant: &str,
        op: LifecycleOp,
        reason: &str,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let who = self.core.who(actor, reason);
        let store = &self.core.store;
        let cur = store
            .current_snapshot()
            .await
            .map_err(store_status)?
            .map(|s| s.hash);
        let (row, _) = store
            .mutate(|docs| plan::lifecycle(docs, id, tenant, op, cur.as_deref(), &who))
            .await
            .map_err(store_status)?
            .map_err(plan_status)?;
        self.core.published().await;
        Ok(Response::new(info(&row, false)))
    }
}

/// How long after its decision an approval is still sent to a sidecar that (re)connects.
const APPROVAL_REPLAY_MS: i64 = 3_600_000;
/// How often a watch stream marks its sidecar as seen.
const HEARTBEAT: Duration = Duration::from_secs(10);

fn event(e: pb::watch_event::Event) -> pb::WatchEvent {
    pb::WatchEvent {
        event: Some(e),
        sent_at_ms: now_ms(),
    }
}

fn check_identity(id: Option<pb::SidecarIdentity>) -> Result<pb::SidecarIdentity, Status> {
    let id = id.ok_or_else(|| bad("the sidecar identity is missing"))?;
    if id.sidecar_id.trim().is_empty() || id.sidecar_id.len() > 128 {
        return Err(bad("sidecar_id must be 1 to 128 bytes"));
    }
    for (f, v) in [
        ("tenant", &id.tenant),
        ("project", &id.project),
        ("agent", &id.agent),
        ("version", &id.version),
    ] {
        if v.len() > 256 {
            return Err(bad(format!("{f} is longer than 256 bytes")));
        }
    }
    Ok(id)
}

async fn mark(core: &Core, id: &pb::SidecarIdentity, f: impl FnOnce(&mut SidecarRow)) {
    let mut row = match core.store.sidecar(&id.sidecar_id).await {
        Ok(Some(r)) => r,
        _ => SidecarRow {
            sidecar_id: id.sidecar_id.clone(),
            ..SidecarRow::default()
        },
    };
    row.tenant = id.tenant.clone();
    row.project = id.project.clone();
    row.agent = id.agent.clone();
    row.version = id.version.clone();
    row.replica = core.replica.clone();
    row.last_seen_ms = now_ms();
    f(&mut row);
    if let Err(e) = core.store.upsert_sidecar(&row).await {
        tracing::warn!(error = %e, sidecar = %id.sidecar_id, "could not record the sidecar");
    }
}

/// One sidecar's watch stream: what it lacks at once, then every change as it is published.
async fn watch_task(
    core: Arc<Core>,
    id: pb::SidecarIdentity,
    held: String,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
) {
    core.metrics.watchers.inc();
    let mut head = core.head();
    let first: Head = head.borrow_and_update().clone();
    mark(&core, &id, |r| {
        r.connected = true;
        if r.snapshot.is_empty() {
            r.snapshot = held.clone();
        }
    })
    .await;
    let send = |e: pb::watch_event::Event, kind: &'static str| {
        let tx = tx.clone();
        let core = core.clone();
        async move {
            core.metrics.pushes.get_or_create(&[("kind", kind)]).inc();
            tx.send(Ok(event(e))).await.is_ok()
        }
    };
    let mut ok = send(
        pb::watch_event::Event::Modes((*first.modes).clone()),
        "modes",
    )
    .await;
    let mut sent_epoch = first.modes.epoch;
    let mut sent_seq = 0;
    if let Some(s) = &first.snapshot {
        sent_seq = s.seq;
        if ok && s.hash != held {
            ok = send(pb::watch_event::Event::Snapshot((**s).clone()), "snapshot").await;
        }
    }
    let mut approval_seq = 0;
    if ok {
        match core
            .store
            .approvals_after(0, now_ms() - APPROVAL_REPLAY_MS)
            .await
        {
            Ok(list) => {
                for a in list {
                    approval_seq = approval_seq.max(a.seq);
                    if !send(
                        pb::watch_event::Event::Approval(approval_pb(&a)),
                        "approval",
                    )
                    .await
                    {
                        ok = false;
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read recent approvals"),
        }
        approval_seq = approval_seq.max(first.approval_seq);
    }
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    while ok {
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    break;
                }
                let h: Head = head.borrow_and_update().clone();
                if h.modes.epoch != sent_epoch {
                    sent_epoch = h.modes.epoch;
                    ok = send(pb::watch_event::Event::Modes((*h.modes).clone()), "modes").await;
                }
                if let Some(s) = &h.snapshot {
                    if ok && s.seq != sent_seq {
                        sent_seq = s.seq;
                        ok = send(pb::watch_event::Event::Snapshot((**s).clone()), "snapshot").await;
                    }
                }
                if ok && h.approval_seq > approval_seq {
                    match core.store.approvals_after(approval_seq, 0).await {
                        Ok(list) => for a in list {
                            approval_seq = approval_seq.max(a.seq);
                            if !send(pb::watch_event::Event::Approval(approval_pb(&a)), "approval").await {
                                ok = false;
                                break;
                            }
                        },
                        Err(e) => tracing::warn!(error = %e, "could not read approvals"),
                    }
                }
            }
            _ = tx.closed() => break,
            _ = beat.tick() => mark(&core, &id, |r| r.connected = true).await,
        }
    }
    mark(&core, &id, |r| r.connected = false).await;
    core.metrics.watchers.dec();
}

fn approval_pb(a: &super::store::ApprovalRow) -> pb::ApprovalDecision {
    pb::ApprovalDecision {
        approval_id: a.approval_id.clone(),
        decision: a.decision.clone(),
        reason: a.reason.clone(),
        actor: a.actor.clone(),
        decided_at_ms: a.at_ms,
    }
}

type EventStream = Pin<Box<dyn futures_util::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;
type AckStream = Pin<Box<dyn futures_util::Stream<Item = Result<pb::IngestAck, Status>> + Send>>;

#[tonic::async_trait]
impl pb::snapshot_watch_server::SnapshotWatch for Api {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (_, r) = self
            .admit(req, Role::Sidecar, "SnapshotWatch/Watch")
            .await?;
        let id = check_identity(r.sidecar)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(watch_task(self.core.clone(), id, r.held_snapshot, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report(
        &self,
        req: Request<pb::SidecarReport>,
    ) -> Result<Response<pb::ReportReply>, Status> {
        let (_, r) = self
            .admit(req, Role::Sidecar, "SnapshotWatch/Report")
            .await?;
        let id = check_identity(r.sidecar)?;
        mark(&self.core, &id, |row| {
            row.connected = true;
            row.snapshot = r.snapshot.clone();
            row.modes_epoch = r.modes_epoch as i64;
            row.unshipped_records = r.unshipped_records as i64;
            row.refused_snapshot = r.refused_snapshot.clone();
        })
        .await;
        if !r.refused_snapshot.is_empty() {
            tracing::error!(sidecar = %id.sidecar_id, snapshot = %r.refused_snapshot, why = %r.refused_why, "a sidecar refused a snapshot");
        }
        Ok(Response::new(pb::ReportReply {}))
    }
}

/// Most records in one batch.
pub const MAX_BATCH: usize = 4096;

/// Check one shipped record; with it, when it was written (ms), for the lag metric.
fn check_record(r: pb::ShippedRecord) -> Result<(EvidenceIn, i64), Status> {
    if r.evidence_id.is_empty() || r.evidence_id.len() > 128 {
        return Err(bad("evidence_id must be 1 to 128 bytes"));
    }
    let seq = i64::try_from(r.seq).map_err(|_| bad("seq out of range"))?;
    let mut intact = crate::evidence::record::record_hash(&r.body) == r.hash;
    let mut run_id = String::new();
    let mut approval = None;
    let mut at_ms = 0;
    match crate::evidence::compact::decode(&r.body) {
        Ok(rec) => {
            at_ms = rec.at_ms as i64;
            intact &= rec.evidence_id == r.evidence_id && rec.seq == r.seq && rec.prev == r.prev;
            run_id = rec.run_id.clone().unwrap_or_default();
            if rec.code == Some(Code::ApprovalRequired) {
                if let Some(a) = rec
                    .audit
                    .as_ref()
                    .and_then(|a| a.get("approval_id"))
                    .and_then(|v| v.as_str())
                {
                    approval = Some((a.to_string(), rec.tenant.clone().unwrap_or_default()));
                }
            }
        }
        Err(_) => intact = false,
    }
    Ok((
        EvidenceIn {
            evidence_id: r.evidence_id,
            seq,
            hash: r.hash,
            prev: r.prev,
            body: r.body,
            intact,
            run_id,
            approval,
        },
        at_ms,
    ))
}

#[tonic::async_trait]
impl pb::evidence_ingest_server::EvidenceIngest for Api {
    type IngestStream = AckStream;

    async fn ingest(
        &self,
        req: Request<tonic::Streaming<pb::EvidenceBatch>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let (_, mut inbound) = self
            .admit(req, Role::Sidecar, "EvidenceIngest/Ingest")
            .await?;
        let (tx, rx) = mpsc::channel(4);
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Some(batch) = inbound.next().await {
                let reply = match batch {
                    Err(e) => Err(e),
                    Ok(b) => ingest_batch(&core, b).await,
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn ingest_batch(core: &Core, b: pb::EvidenceBatch) -> Result<pb::IngestAck, Status> {
    let id = check_identity(b.sidecar)?;
    if b.records.len() > MAX_BATCH {
        return Err(bad(format!("a batch holds at most {MAX_BATCH} records")));
    }
    let mut records = Vec::with_capacity(b.records.len());
    let mut newest = 0i64;
    for r in b.records {
        let (rec, at_ms) = check_record(r)?;
        newest = newest.max(at_ms);
        records.push(rec);
    }
    records.sort_by_key(|r| r.seq);
    let out = core
        .store
        .ingest(&id.sidecar_id, &records, &core.replica)
        .await
        .map_err(store_status)?;
    if newest > 0 {
        core.metrics.ingest_lag_ms.set(now_ms() - newest);
    }
    core.metrics
        .evidence
        .get_or_create(&[("result", "stored")])
        .inc_by(out.stored as u64);
    core.metrics
        .evidence
        .get_or_create(&[("result", "duplicate")])
        .inc_by(out.duplicates as u64);
    core.metrics.chain_issues.inc_by(out.issues.len() as u64);
    for i in &out.issues {
        tracing::error!(sidecar = %id.sidecar_id, issue = %i, "evidence chain issue");
    }
    Ok(pb::IngestAck {
        batch: b.batch,
        stored_through: out.stored_through.max(0) as u64,
        stored: out.stored,
        duplicates: out.duplicates,
        chain_issues: out.issues,
    })
}

#[tonic::async_trait]
impl pb::ops_server::Ops for Api {
    async fn set_mode(
        &self,
        req: Request<pb::SetModeRequest>,
    ) -> Result<Response<pb::Modes>, Status> {
        let (actor, r) = self.admit(req, Role::Admin, "Ops/SetMode").await?;
        check_reason(&r.reason, true)?;
        if r.tenant.len() > 256 {
            return Err(bad("tenant is longer than 256 bytes"));
        }
        let who = self.core.who(actor, &r.reason);
        let (_, after) = self
            .core
            .store
            .set_modes(|before| plan::modes(before, &r.mode, &r.tenant, &who))
            .await
            .map_err(store_status)?
            .map_err(|e| status(Code::BadRequest, e.to_string()))?;
        if r.mode == "bypass" {
            tracing::error!(reason = %r.reason, tenant = %r.tenant, "CRITICAL: governance bypass entered fleet-wide; calls pass unenforced");
        }
        self.core.published().await;
        Ok(Response::new(super::modes_pb(&after)))
    }

    async fn get_modes(
        &self,
        req: Request<pb::GetModesRequest>,
    ) -> Result<Response<pb::Modes>, Status> {
        self.admit(req, Role::Admin, "Ops/GetModes").await?;
        let m = self.core.store.modes().await.map_err(store_status)?;
        Ok(Response::new(super::modes_pb(&m)))
    }

    async fn decide_approval(
        &self,
        req: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::ApprovalDecision>, Status> {
        let (actor, r) = self.admit(req, Role::Admin, "Ops/DecideApproval").await?;
        check_reason(&r.reason, true)?;
        if r.decision != "approve" && r.decision != "reject" {
            return Err(bad(format!(
                "decision must be approve or reject, not `{}`",
                r.decision
            )));
        }
        let store = &self.core.store;
        let Some(tenant) = store
            .pending_approval(&r.approval_id)
            .await
            .map_err(store_status)?
        else {
            return Err(status(
                Code::UnknownApproval,
                format!("no pending approval `{}` in the shipped evidence (a sidecar ships within seconds; retry, or decide on the sidecar with --sidecar)", r.approval_id),
            ));
        };
        let who = self.core.who(actor, &r.reason);
        let audit = who.audit(
            "approval",
            &r.approval_id,
            serde_json::json!({ "state": "pending", "tenant": tenant }).to_string(),
            serde_json::json!({ "state": r.decision }).to_string(),
        );
        let Some(row) = store
            .decide_approval(&r.approval_id, &r.decision, &audit)
            .await
            .map_err(store_status)?
        else {
            return Err(status(
                Code::NotPending,
                format!("approval `{}` was already decided", r.approval_id),
            ));
        };
        self.core.published().await;
        Ok(Response::new(approval_pb(&row)))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.admit(req, Role::Admin, "Ops/Status").await?;
        let head = self.core.current();
        let now = now_ms();
        let rows = self.core.store.sidecars().await.map_err(store_status)?;
        let mut sidecars = Vec::new();
        for s in rows {
            let through = self
                .core
                .store
                .chain_head(&s.sidecar_id)
                .await
                .map_err(store_status)?
                .map(|(n, _)| n as u64)
                .unwrap_or(0);
            sidecars.push(pb::SidecarStatus {
                sidecar: Some(pb::SidecarIdentity {
                    sidecar_id: s.sidecar_id,
                    tenant: s.tenant,
                    project: s.project,
                    agent: s.agent,
                    version: s.version,
                }),
                snapshot: s.snapshot,
                modes_epoch: s.modes_epoch as u64,
                // A replica that died leaves its rows marked connected; the heartbeat says.
                connected: s.connected && now - s.last_seen_ms < 3 * HEARTBEAT.as_millis() as i64,
                replica: s.replica,
                last_seen_ms: s.last_seen_ms,
                unshipped_records: s.unshipped_records as u64,
                evidence_through: through,
                refused_snapshot: s.refused_snapshot,
            });
        }
        Ok(Response::new(pb::StatusReply {
            modes: Some((*head.modes).clone()),
            snapshot: head
                .snapshot
                .as_ref()
                .map(|s| s.hash.clone())
                .unwrap_or_default(),
            snapshot_seq: head.snapshot.as_ref().map(|s| s.seq).unwrap_or(0),
            sidecars,
            replica: self.core.replica.clone(),
        }))
    }
}

#[tonic::async_trait]
impl pb::audit_server::Audit for Api {
    async fn query(
        &self,
        req: Request<pb::AuditQuery>,
    ) -> Result<Response<pb::AuditReply>, Status> {
        let (_, r) = self.admit(req, Role::Admin, "Audit/Query").await?;
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000),
        } as i64;
        let after = i64::try_from(r.after_seq).map_err(|_| bad("after_seq out of range"))?;
        let rows = self
            .core
            .store
            .audit(after, limit, &r.action)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::AuditReply {
            entries: rows
                .into_iter()
                .map(|a| pb::AuditEntry {
                    seq: a.seq as u64,
                    at_ms: a.at_ms,
                    actor: a.actor,
                    action: a.action,
                    target: a.target,
                    reason: a.reason,
                    before: a.before,
                    after: a.after,
                    critical: a.critical,
                    replica: a.replica,
                })
                .collect(),
        }))
    }
}

/// Largest message the service reads (a 10,000-policy bundle is a few MiB).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The gRPC services behind one port, routed by the path's service name.
#[derive(Clone)]
struct Router {
    admin: pb::policy_admin_server::PolicyAdminServer<Api>,
    watch: pb::snapshot_watch_server::SnapshotWatchServer<Api>,
    ingest: pb::evidence_ingest_server::EvidenceIngestServer<Api>,
    ops: pb::ops_server::OpsServer<Api>,
    audit: pb::audit_server::AuditServer<Api>,
}

type BoxBody = tonic::body::Body;

impl Router {
    fn new(core: Arc<Core>) -> Router {
        let api = Api { core };
        Router {
            admin: pb::policy_admin_server::PolicyAdminServer::new(api.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            watch: pb::snapshot_watch_server::SnapshotWatchServer::new(api.clone())
                .max_encoding_message_size(MAX_MESSAGE),
            ingest: pb::evidence_ingest_server::EvidenceIngestServer::new(api.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            ops: pb::ops_server::OpsServer::new(api.clone()),
            audit: pb::audit_server::AuditServer::new(api),
        }
    }

    async fn call(self, req: http::Request<hyper::body::Incoming>) -> http::Response<BoxBody> {
        use tower::ServiceExt;
        let req = req.map(BoxBody::new);
        let path = req.uri().path().to_string();
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let r = match service {
            "warden.v1.PolicyAdmin" => self.admin.oneshot(req).await,
            "warden.v1.SnapshotWatch" => self.watch.oneshot(req).await,
            "warden.v1.EvidenceIngest" => self.ingest.oneshot(req).await,
            "warden.v1.Ops" => self.ops.oneshot(req).await,
            "warden.v1.Audit" => self.audit.oneshot(req).await,
            _ => Ok(status(Code::UnknownRoute, format!("no gRPC service for {path}")).into_http()),
        };
        match r {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

/// Serve the gRPC port (HTTP/2 with prior knowledge, as gRPC clients speak it).
pub async fn serve(listener: tokio::net::TcpListener, core: Arc<Core>) {
    let shutdown = core.shutdown.subscribe();
    let router = Router::new(core);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.call(req).await) }
            });
            let mut b =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            b.timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(Duration::from_secs(20));
            let conn = b.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}
