//! `warden policy-service --config FILE`: the service's configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub auth: Auth,
    /// This replica's name in status and audit; a random one when absent.
    #[serde(default)]
    pub replica: Option<String>,
    /// Where relative paths resolve (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default = "default_grpc")]
    pub grpc: String,
    #[serde(default = "default_http")]
    pub http: String,
}

fn default_grpc() -> String {
    "127.0.0.1:15010".into()
}
fn default_http() -> String {
    "127.0.0.1:15011".into()
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            grpc: default_grpc(),
            http: default_http(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the config file) or `postgres://…`; a credential reference
    /// (`env:NAME`, `file:PATH`) is resolved first, so a password need not sit in the file.
    #[serde(default = "default_url")]
    pub url: String,
}

fn default_url() -> String {
    "sqlite://.warden/policy-service.db".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: default_url() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// A credential reference (`env:NAME`, `file:PATH`); `WARDEN_ADMIN_TOKEN` when absent.
    /// The service does not start without one.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// What sidecars present to watch and ship evidence; without it they present the admin
    /// token.
    #[serde(default)]
    pub sidecar_token: Option<String>,
}

impl ServiceConfig {
    pub fn load(path: &Path) -> Result<ServiceConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg: ServiceConfig =
            crate::policy::from_yaml_str(&path.display().to_string(), &text)
                .map_err(|e| e.render())?;
        cfg.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(cfg)
    }

    /// The store URL with its reference resolved and a relative SQLite path made absolute.
    pub fn store_url(&self) -> Result<String, String> {
        let url = if self.store.url.starts_with("env:") || self.store.url.starts_with("file:") {
            crate::connectors::creds::resolve(&self.store.url, &self.base_dir)
                .map_err(|e| format!("store.url: {e}"))?
        } else {
            self.store.url.clone()
        };
        match url.strip_prefix("sqlite://") {
            Some(p) if !p.starts_with('/') => {
                Ok(format!("sqlite://{}", self.base_dir.join(p).display()))
            }
            _ => Ok(url),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: Listen::default(),
            store: StoreConfig::default(),
            auth: Auth::default(),
            replica: None,
            base_dir: PathBuf::from("."),
        }
    }
}
