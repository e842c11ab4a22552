//! What the sidecar's listeners share: its configuration, the snapshot source, the admin token,
//! and the spine's runtime state (`spine::state::Runtime`), built once at start.

use std::sync::Arc;

use super::config::SidecarConfig;
use crate::policy::store::SnapshotStore;
use crate::spine::state::Runtime;

pub struct Shared {
    pub cfg: SidecarConfig,
    pub rt: Arc<Runtime>,
    pub store: SnapshotStore,
    /// The admin bearer token; `None` refuses every mutating admin call.
    pub admin_token: Option<String>,
}
