//! What every layer shares: configuration, the current snapshot, modes, runs, the evidence
//! spool, metrics and the upstream client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::alerts::Alerts;
use super::config::SidecarConfig;
use super::metrics::Metrics;
use super::runs::Runs;
use crate::decide::Mode;
use crate::evidence::Spool;
use crate::policy::store::SnapshotStore;
use crate::policy::Snapshot;
use crate::spine::Body;

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

pub struct Shared {
    pub cfg: SidecarConfig,
    /// `None` until a verified snapshot is loaded: the boot guard refuses traffic meanwhile.
    pub snapshot: ArcSwapOption<Snapshot>,
    pub modes: Mutex<Modes>,
    /// Bumps on every mode change, so in-flight streams notice a kill switch at once.
    pub mode_epoch: tokio::sync::watch::Sender<u64>,
    pub runs: Runs,
    pub spool: Spool,
    pub store: SnapshotStore,
    pub metrics: Metrics,
    pub alerts: Alerts,
    pub client: UpstreamClient,
    /// The admin bearer token; `None` refuses every mutating admin call.
    pub admin_token: Option<String>,
    /// Resolved credentials, kept briefly so a call does not read a secret file each time;
    /// rotated secrets are picked up within the TTL.
    pub credentials: moka::sync::Cache<String, String>,
}

/// How long a resolved credential is reused.
pub const CREDENTIAL_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Shared {
    /// Resolve a credential reference (`env:`, `file:`), cached for [`CREDENTIAL_TTL`].
    pub fn credential(
        &self,
        reference: &str,
    ) -> Result<String, crate::connectors::creds::CredError> {
        if let Some(v) = self.credentials.get(reference) {
            return Ok(v);
        }
        let v = crate::connectors::creds::resolve(reference, &self.cfg.base_dir)?;
        self.credentials.insert(reference.to_string(), v.clone());
        Ok(v)
    }

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
