//! The central policy service (control plane): the store, snapshot push, ops, audit and
//! evidence ingest over gRPC (port 15010), health and metrics over HTTP (15011).
//!
//! Every change is committed to the store first, then published: this replica re-reads the
//! store into its [`Head`] (a `watch` channel every snapshot-watch stream follows), and on
//! PostgreSQL the same transaction sends `NOTIFY warden_changes`, on which every other replica
//! re-reads too. A replica also re-reads every few seconds, so a notification lost while its
//! listening connection was down delays a change, never loses it.

pub mod config;
pub mod grpc;
pub mod metrics;
pub mod plan;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::proto as pb;
use config::ServiceConfig;
use store::{ModesRow, SnapshotRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({which}): {source}")]
    Listen {
        which: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// What every watch stream follows: the current snapshot, modes and the newest approval
/// decision's sequence number.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub snapshot: Option<Arc<pb::Snapshot>>,
    pub modes: Arc<pb::Modes>,
    pub approval_seq: i64,
}

/// The service's shared state.
pub struct Core {
    pub store: Store,
    pub replica: String,
    admin_token: String,
    sidecar_token: Option<String>,
    head: tokio::sync::watch::Sender<Head>,
    pub metrics: metrics::ServiceMetrics,
    /// Set when the service stops: open connections close with it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

pub fn modes_pb(row: &ModesRow) -> pb::Modes {
    pb::Modes {
        global: row.global.clone(),
        tenants: plan::tenants_of(row).into_iter().collect(),
        epoch: row.epoch as u64,
        reason: row.reason.clone(),
        actor: row.actor.clone(),
        changed_at_ms: row.at_ms,
    }
}

fn snapshot_pb(row: &SnapshotRow) -> Result<pb::Snapshot, StoreError> {
    let b: crate::policy::overlay::Bundle = serde_json::from_str(&row.bundle)
        .map_err(|e| StoreError::Corrupt(format!("snapshot {}: {e}", row.seq)))?;
    Ok(pb::Snapshot {
        hash: row.hash.clone(),
        seq: row.seq as u64,
        sources: b
            .sources
            .into_iter()
            .map(|s| pb::Source {
                name: s.name,
                text: s.text,
            })
            .collect(),
        lifecycle: b
            .lifecycle
            .into_iter()
            .map(|l| pb::Lifecycle {
                tenant: l.tenant,
                id: l.id,
                status: plan_status(l.status).into(),
                shadow: l.shadow,
            })
            .collect(),
        created_at_ms: row.created_at_ms,
    })
}

fn plan_status(s: crate::policy::model::Status) -> &'static str {
    use crate::policy::model::Status::*;
    match s {
        Draft => "draft",
        Active => "active",
        Suspended => "suspended",
        Retired => "retired",
    }
}

impl Core {
    pub fn head(&self) -> tokio::sync::watch::Receiver<Head> {
        self.head.subscribe()
    }

    pub fn current(&self) -> Head {
        self.head.borrow().clone()
    }

    /// Re-read the store and publish what changed.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let snap = self.store.current_snapshot().await?;
        let modes = self.store.modes().await?;
        let approval_seq = self.store.last_approval_seq().await?;
        let held = self.current();
        let snapshot = match (&snap, &held.snapshot) {
            (Some(row), Some(h)) if h.seq == row.seq as u64 => Some(h.clone()),
            (Some(row), _) => Some(Arc::new(snapshot_pb(row)?)),
            (None, _) => None,
        };
        let modes = if held.modes.epoch == modes.epoch as u64 && !held.modes.global.is_empty() {
            held.modes.clone()
        } else {
            Arc::new(modes_pb(&modes))
        };
        if let Some(s) = &snapshot {
            self.metrics.snapshot_seq.set(s.seq as i64);
        }
        self.metrics.modes_epoch.set(modes.epoch as i64);
        self.head.send_if_modified(|h| {
            let changed = h.snapshot.as_ref().map(|s| s.seq) != snapshot.as_ref().map(|s| s.seq)
                || h.modes.epoch != modes.epoch
                || h.modes.global != modes.global
                || h.approval_seq != approval_seq;
            if changed {
                *h = Head {
                    snapshot,
                    modes,
                    approval_seq,
                };
            }
            changed
        });
        Ok(())
    }
}

/// A started policy service.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub core: Arc<Core>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.core.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Running {
    /// Stop serving (tests restart a service on the same store).
    pub fn stop(self) {}
}

/// Follow the other replicas: LISTEN on PostgreSQL, and re-read every few seconds anyway.
async fn follow(core: Arc<Core>) {
    let mut listener = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        if listener.is_none() {
            if let store::Db::Pg(pool) = &core.store.db {
                match sqlx::postgres::PgListener::connect_with(pool).await {
                    Ok(mut l) => match l.listen(store::CHANNEL).await {
                        Ok(()) => {
                            listener = Some(l);
                            // Whatever changed while not listening.
                            let _ = core.refresh().await;
                        }
                        Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling"),
                    },
                    Err(e) => tracing::warn!(error = %e, "no listening connection; polling"),
                }
            }
        }
        tokio::select! {
            n = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = n {
                    tracing::warn!(error = %e, "listening connection lost");
                    listener = None;
                }
                if let Err(e) = core.refresh().await {
                    tracing::warn!(error = %e, "refresh after a notification failed");
                }
            }
            _ = tick.tick() => {
                if let Err(e) = core.refresh().await {
                    tracing::warn!(error = %e, "periodic refresh failed");
                }
            }
        }
    }
}

/// Start the service: open the store (running migrations), listen on both ports.
pub async fn start(cfg: ServiceConfig) -> Result<Running, ServiceError> {
    let admin_token = match &cfg.auth.admin_token {
        Some(r) => crate::connectors::creds::resolve(r, &cfg.base_dir)
            .map_err(|e| ServiceError::Config(format!("auth.admin_token: {e}")))?,
        None => std::env::var(crate::sidecar::config::ENV_ADMIN_TOKEN).unwrap_or_default(),
    };
    if admin_token.trim().is_empty() {
        return Err(ServiceError::Config(format!(
            "the policy service needs an admin token: set {} or auth.admin_token",
            crate::sidecar::config::ENV_ADMIN_TOKEN
        )));
    }
    let sidecar_token = match &cfg.auth.sidecar_token {
        Some(r) => Some(
            crate::connectors::creds::resolve(r, &cfg.base_dir)
                .map_err(|e| ServiceError::Config(format!("auth.sidecar_token: {e}")))?,
        ),
        None => None,
    };
    let url = cfg.store_url().map_err(ServiceError::Config)?;
    let store = Store::open(&url).await?;
    let replica = cfg.replica.clone().unwrap_or_else(|| {
        let u = uuid::Uuid::new_v4().simple().to_string();
        format!("replica-{}", &u[..8])
    });
    let core = Arc::new(Core {
        store,
        replica,
        admin_token: admin_token.trim().to_string(),
        sidecar_token: sidecar_token.map(|t| t.trim().to_string()),
        head: tokio::sync::watch::channel(Head::default()).0,
        metrics: metrics::ServiceMetrics::new(),
        shutdown: tokio::sync::watch::channel(false).0,
    });
    core.refresh().await?;
    let bind = |which: &'static str, addr: &str| {
        let addr = addr.to_string();
        async move {
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| ServiceError::Listen {
                    which,
                    addr: addr.clone(),
                    source,
                })?;
            let a = l.local_addr().map_err(|source| ServiceError::Listen {
                which,
                addr,
                source,
            })?;
            Ok::<_, ServiceError>((l, a))
        }
    };
    let (grpc_l, grpc_addr) = bind("gRPC", &cfg.listen.grpc).await?;
    let (http_l, http_addr) = bind("HTTP", &cfg.listen.http).await?;
    let tasks = vec![
        tokio::spawn(grpc::serve(grpc_l, core.clone())),
        tokio::spawn(metrics::serve_http(http_l, core.clone())),
        tokio::spawn(follow(core.clone())),
    ];
    tracing::info!(%grpc_addr, %http_addr, replica = %core.replica, postgres = core.store.is_postgres(), "policy service listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        core,
        tasks,
    })
}
