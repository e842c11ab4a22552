//! The sidecar: wiring of listeners, the admin port, run state and the snapshot source.
//!
//! Boot guard (INV-004, seed GAP-067): until a verified snapshot is loaded — from the policy
//! files, or the last-known-good copy in `cache_dir` when the files are unreadable or invalid —
//! the agent listener answers every call with 503 `not_ready` and `/readyz` fails.

pub mod admin;
pub mod config;
pub mod server;
pub mod ship;
pub mod state;
pub mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::connectors::creds;
use crate::evidence::{Spool, SpoolConfig};
use crate::policy::load::read_source;
use crate::policy::store::SnapshotStore;
use crate::policy::{compile_sources, Snapshot};
use crate::spine::state::alerts::Alerts;
use crate::spine::state::metrics::Metrics;
use crate::spine::state::runs::Runs;
use crate::spine::state::{Connector, Credentials, Modes, Runtime, UpstreamClient};
use config::{PolicySourceKind, SidecarConfig, ENV_ADMIN_TOKEN};
use state::Shared;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("{0}")]
    Config(String),
    #[error("evidence spool: {0}")]
    Evidence(#[from] crate::evidence::EvidenceError),
    #[error("cannot listen on {addr} ({which} port): {source}")]
    Listen {
        which: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A started sidecar.
pub struct Running {
    pub agent_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The policy-service watch and evidence shipping, on their own thread.
    control: Option<Stoppable>,
    /// The admin listener's own thread, and the signal that stops it.
    admin: Option<Stoppable>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((stop, thread)) = self.control.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.admin.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// A thread of ours, and the signal that stops it.
type Stoppable = (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
);

/// A thread with a runtime of its own running the future `make` builds (inside that runtime),
/// until it ends or the returned sender is used (or dropped).
fn spawn_thread<F>(
    name: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> Result<Stoppable, SidecarError>
where
    F: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = make() => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        })?;
    Ok((stop, thread))
}

/// Serve the admin port on a thread and runtime of its own, so that agent traffic — however
/// much of it, however slow — cannot keep the kill switch from being answered. Its handlers
/// share `Shared` with the agent side (mode changes reach in-flight calls through a watch
/// channel, which works across runtimes).
fn spawn_admin(
    listener: std::net::TcpListener,
    service: admin::Admin,
    bounds: server::Bounds,
) -> Result<Stoppable, SidecarError> {
    spawn_thread("warden-admin", move || async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => server::serve(l, service, bounds).await,
            Err(e) => tracing::error!(error = %e, "admin listener unusable"),
        }
    })
}

/// Run the control tasks (the policy-service watch, evidence shipping) on a thread and runtime
/// of their own until stopped.
fn spawn_control(
    tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
) -> Result<Stoppable, SidecarError> {
    spawn_thread("warden-control", move || async move {
        futures_util::future::join_all(tasks).await;
    })
}

/// Compile the policy files; on failure fall back to the last-known-good snapshot.
fn load_files(cfg: &SidecarConfig, store: &SnapshotStore) -> Result<Snapshot, String> {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for f in &cfg.policy.files {
        match read_source(f) {
            Ok(s) => sources.push(s),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        match compile_sources(&sources) {
            Ok(snap) => {
                if let Err(e) = store
                    .save(&snap, &sources)
                    .and_then(|_| store.set_last_known_good(snap.hash()))
                {
                    tracing::warn!(error = %e, "could not cache the snapshot as last-known-good");
                }
                return Ok(snap);
            }
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
    }
    for p in &problems {
        tracing::error!(problem = %p, "policy files unusable");
    }
    match store.last_known_good() {
        Ok(Some(snap)) => {
            tracing::warn!(snapshot = %snap.hash(), "serving the last-known-good snapshot");
            Ok(snap)
        }
        Ok(None) => Err(format!(
            "no usable policy files and no last-known-good snapshot: {}",
            problems.join("; ")
        )),
        Err(e) => Err(format!(
            "policy files unusable ({}) and last-known-good unusable ({e})",
            problems.join("; ")
        )),
    }
}

/// The trust roots for HTTPS upstreams: the system's trust store (for private CAs mounted into
/// the pod), or the bundled Mozilla roots when it has none; and the certificates of
/// `upstream_tls.ca_files`. A CA file that cannot be read or holds no certificate is an error.
pub fn upstream_roots(ca_files: &[std::path::PathBuf]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(errors = ?native.errors, "no system trust store; using the bundled Mozilla roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for path in ca_files {
        let what = format!("upstream_tls.ca_files: {}", path.display());
        let pem = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what}: no certificate in it"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
        }
        tracing::info!(file = %path.display(), "extra upstream trust roots loaded");
    }
    Ok(roots)
}

/// Upstream connections: plain HTTP, or HTTPS verified against [`upstream_roots`].
pub(crate) fn https_connector(roots: rustls::RootCertStore) -> Result<Connector, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("upstream TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

/// Re-read the policy files (admin `POST /ops/reload`); keeps the current snapshot on failure.
pub async fn reload(shared: &Shared) -> Result<String, String> {
    if shared.cfg.policy.source == PolicySourceKind::Service {
        return Err("this sidecar follows the policy service (policy.source: service); change policies there".into());
    }
    let cfg = shared.cfg.clone();
    let store = shared.store.clone();
    let snap = tokio::task::spawn_blocking(move || load_files(&cfg, &store))
        .await
        .map_err(|e| e.to_string())??;
    let hash = snap.hash().to_string();
    shared.rt.snapshot.store(Some(Arc::new(snap)));
    shared.rt.metrics.set_ready(true);
    Ok(hash)
}

/// The policy service did not answer in time at start: serve the last-known-good snapshot and
/// the modes last received, if there are any (the watch goes on; the service's snapshot
/// replaces them when it arrives). Without a cached snapshot the boot guard holds.
async fn fall_back(shared: &Arc<Shared>) {
    if let Some(m) = watch::cached_modes(&shared.cfg.policy.cache_dir) {
        if let Err(e) = watch::apply_modes(shared, &m, "cache").await {
            tracing::error!(error = %e, "cached modes unusable");
        }
    }
    if shared.rt.snapshot().is_some() {
        return;
    }
    let store = shared.store.clone();
    match tokio::task::spawn_blocking(move || store.last_known_good()).await {
        Ok(Ok(Some(snap))) => {
            let hash = snap.hash().to_string();
            let prev = shared
                .rt
                .snapshot
                .compare_and_swap(&None::<Arc<Snapshot>>, Some(Arc::new(snap)));
            if prev.is_none() {
                shared.rt.metrics.set_ready(true);
                tracing::warn!(snapshot = %hash, "the policy service is unreachable: serving the last-known-good snapshot");
            }
        }
        Ok(Ok(None)) => tracing::error!("the policy service is unreachable and there is no last-known-good snapshot: refusing traffic (not_ready) until it answers"),
        Ok(Err(e)) => tracing::error!(error = %e, "the policy service is unreachable and the last-known-good snapshot is unusable: refusing traffic (not_ready)"),
        Err(e) => tracing::error!(error = %e, "loading the last-known-good snapshot failed"),
    }
}

/// This sidecar's id, kept in its spool directory (its evidence chain is known by it).
pub fn sidecar_id(spool_dir: &std::path::Path) -> Result<String, SidecarError> {
    let path = spool_dir.join("SIDECAR_ID");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("sc-{}", uuid::Uuid::now_v7());
    std::fs::create_dir_all(spool_dir)?;
    let tmp = spool_dir.join("SIDECAR_ID.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// How this sidecar reaches the policy service, and who it says it is.
fn service_link(
    cfg: &SidecarConfig,
    admin_token: Option<&str>,
) -> Result<watch::Link, SidecarError> {
    let url = cfg
        .policy
        .service
        .clone()
        .ok_or_else(|| SidecarError::Config("policy.service (its URL) is missing".into()))?;
    let token = match &cfg.policy.token {
        Some(r) => Some(
            creds::resolve(r, &cfg.base_dir)
                .map_err(|e| SidecarError::Config(format!("policy.token: {e}")))?,
        ),
        None => std::env::var(config::ENV_SIDECAR_TOKEN)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| admin_token.map(str::to_string)),
    };
    if token.is_none() {
        tracing::warn!("no token for the policy service (policy.token, WARDEN_SIDECAR_TOKEN or WARDEN_ADMIN_TOKEN): it will refuse this sidecar");
    }
    Ok(watch::Link {
        url,
        token: token.map(|t| t.trim().to_string()),
        identity: crate::proto::SidecarIdentity {
            sidecar_id: sidecar_id(&cfg.evidence.spool_dir)?,
            tenant: cfg.identity.tenant.clone(),
            project: cfg.identity.project.clone(),
            agent: cfg.identity.agent.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
    })
}

/// Start the sidecar: recover the evidence spool, load the snapshot, open both listeners.
pub async fn start(cfg: SidecarConfig) -> Result<Running, SidecarError> {
    let mut spool_cfg = SpoolConfig::new(&cfg.evidence.spool_dir, cfg.evidence.durability);
    spool_cfg.segment_bytes = cfg.evidence.segment_bytes;
    let (spool, recovery) = Spool::open(spool_cfg)?;
    if let Some((seg, offset, len, why)) = &recovery.cut {
        tracing::warn!(segment = %seg.display(), offset, len, %why, "cut a torn evidence tail");
    }
    if recovery.lost > 0 {
        tracing::warn!(records = recovery.lost, "the evidence head names records a crash kept off the disk (a power loss explains it; never acknowledged under durability: sync)");
    }
    let store = SnapshotStore::new(&cfg.policy.cache_dir);
    let admin_token = match &cfg.admin.token {
        Some(r) => Some(
            creds::resolve(r, &cfg.base_dir)
                .map_err(|e| SidecarError::Config(format!("admin.token: {e}")))?,
        ),
        None => std::env::var(ENV_ADMIN_TOKEN)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    if admin_token.is_none() {
        tracing::warn!("no admin token: mutating admin calls are refused");
    }
    let api_keys = crate::front::agent::ApiKeys::resolve(&cfg.identity.api_keys, &cfg.base_dir)
        .map_err(SidecarError::Config)?;
    let connector = upstream_roots(&cfg.upstream_tls.ca_files)
        .and_then(https_connector)
        .map_err(SidecarError::Config)?;
    let client: UpstreamClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector);
    let metrics = Metrics::new();
    let alerts = Alerts::start(
        cfg.alerts.webhooks.clone(),
        cfg.alerts.queue,
        cfg.alerts.timeout_ms,
        client.clone(),
    );
    // The tokenizer table of current models takes a while to build: do it now, not on the
    // first call's worker thread. (Older models' cl100k table loads on first use.)
    tokio::task::spawn_blocking(|| {
        let _ = tiktoken_rs::o200k_base_singleton();
    })
    .await
    .map_err(|e| SidecarError::Config(e.to_string()))?;
    let from_service = cfg.policy.source == PolicySourceKind::Service;
    let link = if from_service || cfg.evidence.ship == Some(true) {
        Some(service_link(&cfg, admin_token.as_deref())?)
    } else {
        None
    };
    let snapshot = if from_service {
        Err("waiting for the policy service".to_string())
    } else {
        let (c, s) = (cfg.clone(), store.clone());
        tokio::task::spawn_blocking(move || load_files(&c, &s))
            .await
            .map_err(|e| SidecarError::Config(e.to_string()))?
    };
    let snapshot = match snapshot {
        Err(e) if from_service => {
            tracing::info!(reason = %e, "no snapshot yet");
            None
        }
        Ok(s) => {
            tracing::info!(snapshot = %s.hash(), "policy snapshot loaded");
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::error!(error = %e, "starting without a snapshot: refusing traffic (not_ready)");
            None
        }
    };
    metrics.set_ready(snapshot.is_some());
    metrics.set_modes(crate::decide::Mode::Enforcing, &[]);
    let rt = Arc::new(Runtime {
        runs: Runs::new(cfg.runs.max_runs, cfg.runs.idle_ttl_s),
        snapshot: ArcSwapOption::new(snapshot),
        modes: Mutex::new(Modes::default()),
        mode_epoch: tokio::sync::watch::channel(0).0,
        spool,
        metrics,
        alerts,
        client,
        credentials: Credentials::new(cfg.base_dir.clone()),
        backlog: Default::default(),
    });
    let shared = Arc::new(Shared {
        cfg,
        rt,
        store,
        admin_token,
    });
    let (agent_l, agent_addr) = server::bind("agent", &shared.cfg.listen.agent).await?;
    let (admin_l, admin_addr) = server::bind_std("admin", &shared.cfg.listen.admin)?;
    let agent_bounds = server::Bounds::agent(&shared.cfg.limits);
    let limits = &shared.cfg.limits;
    let settings = crate::spine::Settings {
        body: crate::spine::limit::BodyLimit {
            max_request_bytes: limits.max_request_bytes,
            body_read_timeout_ms: limits.body_read_timeout_ms,
        },
        connectors: crate::connectors::Settings {
            upstream_timeout_ms: limits.upstream_timeout_ms,
            max_response_bytes: limits.max_response_bytes,
        },
    };
    let agent = crate::front::agent::Agent {
        rt: shared.rt.clone(),
        who: Arc::new(shared.cfg.identity.clone()),
        spine: crate::spine::stack(settings),
        api_keys: Arc::new(api_keys),
        in_flight: Arc::new(tokio::sync::Semaphore::new(agent_bounds.max_connections)),
        routes: Arc::new(crate::front::agent::Routes::default()),
        max_message: usize::try_from(shared.cfg.limits.max_request_bytes).unwrap_or(usize::MAX),
    };
    let admin = admin::Admin {
        shared: shared.clone(),
    };
    let mut tasks = Vec::new();
    // The watch and the shipper run on a thread and runtime of their own, like the admin port:
    // agent traffic, however much, never delays a kill switch arriving from the service, and
    // shipping never takes the request path's worker.
    let mut control: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    let mut first_rx = None;
    if let (Some(link), true) = (&link, from_service) {
        let (first_tx, rx) = tokio::sync::watch::channel(false);
        first_rx = Some(rx);
        control.push(Box::pin(watch::follow(
            shared.clone(),
            link.clone(),
            first_tx,
        )));
    }
    if let Some(link) = link.filter(|_| shared.cfg.evidence.ship.unwrap_or(from_service)) {
        control.push(Box::pin(ship::ship(shared.clone(), link)));
    }
    let control_thread = if control.is_empty() {
        None
    } else {
        Some(spawn_control(control)?)
    };
    if let Some(mut first_rx) = first_rx {
        let wait = std::time::Duration::from_millis(shared.cfg.policy.connect_timeout_ms);
        if tokio::time::timeout(wait, first_rx.wait_for(|v| *v))
            .await
            .is_err()
        {
            fall_back(&shared).await;
        }
    }
    let admin_thread = spawn_admin(admin_l, admin, server::Bounds::admin(&shared.cfg.limits))?;
    tracing::info!(
        max_connections = agent_bounds.max_connections,
        "agent connection and call cap"
    );
    tasks.push(tokio::spawn(server::serve(agent_l, agent, agent_bounds)));
    tracing::info!(%agent_addr, %admin_addr, "sidecar listening");
    Ok(Running {
        agent_addr,
        admin_addr,
        shared,
        tasks,
        admin: Some(admin_thread),
        control: control_thread,
    })
}
