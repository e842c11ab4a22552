//! The spine's runtime state: what calls share while they run — the current snapshot, the
//! governance modes, runs with their usage windows and approvals, the evidence spool, the alert
//! queue, metrics, the upstream client and resolved credentials.
//!
//! Built once by the sidecar and handed to the stack when it is built; read by the layers and
//! the connectors they call, and by the admin port (modes, runs, approvals, metrics). Nothing
//! here reads configuration on a call: settings are fixed when the stack is built.

pub mod alerts;
pub mod metrics;
pub mod runs;
pub mod usage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::connectors::creds::{self, CredError};
use crate::decide::Mode;
use crate::evidence::Spool;
use crate::policy::Snapshot;
use crate::spine::Body;
use alerts::Alerts;
use metrics::Metrics;
use runs::Runs;

/// Governance modes: global, and per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Modes {
    pub global: Mode,
    pub tenants: HashMap<String, Mode>,
}

impl Modes {
    pub fn effective(&self, tenant: &str) -> Mode {
        Mode::effective(self.global, self.tenants.get(tenant).copied())
    }
}

pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
pub type UpstreamClient = Client<Connector, Body>;

/// How long a resolved credential is reused.
pub const CREDENTIAL_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolved credentials, kept briefly so a call does not read a secret file each time; rotated
/// secrets are picked up within [`CREDENTIAL_TTL`].
pub struct Credentials {
    base_dir: PathBuf,
    cache: moka::sync::Cache<String, String>,
}

impl Credentials {
    /// References relative to `base_dir` (`file:` paths) resolve against it.
    pub fn new(base_dir: PathBuf) -> Self {
        Credentials {
            base_dir,
            cache: moka::sync::Cache::builder()
                .max_capacity(1024)
                .time_to_live(CREDENTIAL_TTL)
                .build(),
        }
    }

    /// Resolve a credential reference (`env:`, `file:`).
    pub fn get(&self, reference: &str) -> Result<String, CredError> {
        if let Some(v) = self.cache.get(reference) {
            return Ok(v);
        }
        let v = creds::resolve(reference, &self.base_dir)?;
        self.cache.insert(reference.to_string(), v.clone());
        Ok(v)
    }
}

/// Evidence written but not yet acknowledged by the policy service (shipping on).
#[derive(Debug, Default)]
pub struct Backlog {
    pub records: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    /// At `evidence.max_unshipped_bytes`: new calls are refused with `not_ready`.
    pub full: std::sync::atomic::AtomicBool,
}

pub struct Runtime {
    /// `None` until a verified snapshot is loaded: the boot guard refuses traffic meanwhile.
    pub snapshot: ArcSwapOption<Snapshot>,
    pub modes: Mutex<Modes>,
    /// Bumps on every mode change, so in-flight streams notice a kill switch at once.
    pub mode_epoch: tokio::sync::watch::Sender<u64>,
    pub runs: Runs,
    pub spool: Spool,
    pub metrics: Metrics,
    pub alerts: Alerts,
    pub client: UpstreamClient,
    pub credentials: Credentials,
    pub backlog: Backlog,
}

impl Runtime {
    pub fn mode_for(&self, tenant: &str) -> Mode {
        self.modes
            .lock()
            .map(|m| m.effective(tenant))
            .unwrap_or(Mode::Halted)
    }

    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
