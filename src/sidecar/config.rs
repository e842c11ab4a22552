//! `sidecar.yaml` (`docs/sidecar.md`), with every field documented in `docs/sidecar.md`.
//!
//! Identity comes from here — or from the environment, which is how Kubernetes' downward API
//! hands a pod its labels — and never from anything the agent sends.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::evidence::Durability;
use crate::policy::{self, BundleError};

/// Environment variables that override the identity (set them from pod labels).
pub const ENV_TENANT: &str = "WARDEN_TENANT";
pub const ENV_PROJECT: &str = "WARDEN_PROJECT";
pub const ENV_AGENT: &str = "WARDEN_AGENT";
/// The admin bearer token, when `admin.token` is not set.
pub const ENV_ADMIN_TOKEN: &str = "WARDEN_ADMIN_TOKEN";
/// The token a sidecar presents to the policy service, when `policy.token` is absent.
pub const ENV_SIDECAR_TOKEN: &str = "WARDEN_SIDECAR_TOKEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    pub identity: Identity,
    #[serde(default)]
    pub listen: Listen,
    pub policy: PolicyConfig,
    pub evidence: EvidenceConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub runs: RunsConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    /// The directory relative paths are resolved against (the config file's own).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub tenant: String,
    pub project: String,
    pub agent: String,
    /// Api keys the agent may present as `Authorization: Bearer <secret>`; a matching bearer
    /// sets the call's api key id (what `scope.api_keys` matches). Empty: the agent's
    /// `Authorization` is ignored and no call has an api key.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// One declared api key: its id (named by `scope.api_keys`) and where its secret is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    /// `env:NAME`, `file:PATH` (the secret), or `sha256:<64 hex>` (its hash, so the secret
    /// need not be present on the sidecar's host at all).
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default = "default_agent_addr")]
    pub agent: String,
    #[serde(default = "default_admin_addr")]
    pub admin: String,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            agent: default_agent_addr(),
            admin: default_admin_addr(),
        }
    }
}

fn default_agent_addr() -> String {
    "127.0.0.1:15001".into()
}

fn default_admin_addr() -> String {
    "127.0.0.1:15000".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySourceKind {
    File,
    Service,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub source: PolicySourceKind,
    #[serde(default)]
    pub files: Vec<PathBuf>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// What the sidecar presents to the policy service (a credential reference); when absent,
    /// `WARDEN_SIDECAR_TOKEN`, else `WARDEN_ADMIN_TOKEN`.
    #[serde(default)]
    pub token: Option<String>,
    /// How long start waits for the service's first snapshot before it serves the
    /// last-known-good copy (the service keeps being watched either way).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    3000
}

fn default_cache_dir() -> PathBuf {
    ".warden/cache".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    pub spool_dir: PathBuf,
    #[serde(default)]
    pub durability: Durability,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Ship the spool to the policy service (default: when `policy.source` is `service`).
    #[serde(default)]
    pub ship: Option<bool>,
    /// Evidence written but not yet acknowledged by the service, at most: beyond it new calls
    /// are refused with `not_ready` rather than evidence lost (default 1 GiB).
    #[serde(default = "default_max_unshipped_bytes")]
    pub max_unshipped_bytes: u64,
}

fn default_max_unshipped_bytes() -> u64 {
    1 << 30
}

fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Caps on what passes through (`body_too_large`, `upstream_timeout`, `request_timeout`) and
/// on the connections the listeners hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_request_bytes")]
    pub max_request_bytes: u64,
    #[serde(default = "default_response_bytes")]
    pub max_response_bytes: u64,
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_ms: u64,
    /// Agent connections held at once; more are closed as they arrive. Clamped below the
    /// process's open-file limit, so the admin port keeps descriptors of its own.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Admin connections held at once (their own budget, on their own thread); when full, the
    /// oldest is closed to make room.
    #[serde(default = "default_admin_connections")]
    pub admin_max_connections: usize,
    /// Time a connection waiting for a request has to send the request's headers (HTTP/1).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (HTTP/1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Time the agent has to send a request's whole body (`request_timeout`).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval; a ping unanswered for as long closes the connection.
    #[serde(default = "default_http2_keepalive")]
    pub http2_keepalive_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: default_request_bytes(),
            max_response_bytes: default_response_bytes(),
            upstream_timeout_ms: default_upstream_timeout(),
            max_connections: default_max_connections(),
            admin_max_connections: default_admin_connections(),
            header_read_timeout_ms: default_header_read_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            body_read_timeout_ms: default_body_read_timeout(),
            http2_keepalive_ms: default_http2_keepalive(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}

fn default_admin_connections() -> usize {
    32
}

fn default_header_read_timeout() -> u64 {
    10_000
}

fn default_idle_timeout() -> u64 {
    60_000
}

fn default_body_read_timeout() -> u64 {
    30_000
}

fn default_http2_keepalive() -> u64 {
    30_000
}

fn default_request_bytes() -> u64 {
    1 << 20
}

fn default_response_bytes() -> u64 {
    8 << 20
}

fn default_upstream_timeout() -> u64 {
    60_000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A credential reference (`env:NAME`, `file:PATH`) for the admin bearer token; default
    /// `env:WARDEN_ADMIN_TOKEN`. Without a token, mutating admin endpoints refuse everyone.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Webhook URLs (loopback or cluster-internal) that receive NEAR and BREACH alerts.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Alerts waiting to be sent; when full, new alerts are dropped (never the evidence).
    #[serde(default = "default_alert_queue")]
    pub queue: usize,
    #[serde(default = "default_alert_timeout")]
    pub timeout_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            queue: default_alert_queue(),
            timeout_ms: default_alert_timeout(),
        }
    }
}

fn default_alert_queue() -> usize {
    1024
}

fn default_alert_timeout() -> u64 {
    2_000
}

/// Bounds on run state kept in memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    #[serde(default = "default_max_runs")]
    pub max_runs: u64,
    /// A run idle this long is forgotten (its usage windows with it).
    #[serde(default = "default_idle")]
    pub idle_ttl_s: u64,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            max_runs: default_max_runs(),
            idle_ttl_s: default_idle(),
        }
    }
}

/// How HTTPS upstreams (LLM and HTTP connectors, alert webhooks) are verified: always against
/// the system's trust store (the bundled Mozilla roots when it has none), and also against the
/// CA certificates named here, for upstreams behind a private CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM files of extra trust roots (each may hold several certificates), read at start;
    /// relative to the config file's directory. A file that cannot be read, or holds no
    /// usable certificate, fails the start.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

/// The async runtime of `warden sidecar`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; 0 = one per core. One by default: a sidecar shares its pod's CPU with
    /// the agent, and one worker answers sooner (no hand-offs between threads) and costs less
    /// CPU per call; raise it for agents that make thousands of calls a second.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: default_workers(),
        }
    }
}

fn default_workers() -> usize {
    1
}

fn default_max_runs() -> u64 {
    100_000
}

fn default_idle() -> u64 {
    3_600
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(BundleError),
    #[error("{0}")]
    Semantic(String),
}

impl SidecarConfig {
    /// Load and check a config file; relative paths become relative to its directory, and the
    /// identity environment overrides apply.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&path.display().to_string(), &text, &base, |k| {
            std::env::var(k).ok()
        })
    }

    /// Parse config text; `env` looks up environment overrides (a parameter for tests).
    pub fn parse(
        name: &str,
        text: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg: SidecarConfig =
            policy::from_yaml_str(name, text).map_err(ConfigError::Invalid)?;
        cfg.base_dir = base.to_path_buf();
        for (var, field) in [
            (ENV_TENANT, &mut cfg.identity.tenant),
            (ENV_PROJECT, &mut cfg.identity.project),
            (ENV_AGENT, &mut cfg.identity.agent),
        ] {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                *field = v;
            }
        }
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        cfg.policy.files = cfg.policy.files.iter().map(resolve).collect();
        cfg.policy.cache_dir = resolve(&cfg.policy.cache_dir);
        cfg.evidence.spool_dir = resolve(&cfg.evidence.spool_dir);
        cfg.upstream_tls.ca_files = cfg.upstream_tls.ca_files.iter().map(resolve).collect();
        if cfg.policy.source == PolicySourceKind::Service {
            match cfg.policy.service.as_deref() {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
                Some(u) => {
                    return Err(ConfigError::Semantic(format!(
                        "{name}: policy.service must be an http:// or https:// URL, not `{u}`"
                    )))
                }
                None => {
                    return Err(ConfigError::Semantic(format!(
                        "{name}: policy.source is service but policy.service (its URL) is missing"
                    )))
                }
            }
        }
        if cfg.policy.source == PolicySourceKind::File && cfg.policy.files.is_empty() {
            return Err(ConfigError::Semantic(format!(
                "{name}: policy.source is file but policy.files is empty"
            )));
        }
        for (what, v) in [
            ("identity.tenant", &cfg.identity.tenant),
            ("identity.project", &cfg.identity.project),
            ("identity.agent", &cfg.identity.agent),
        ] {
            if v.is_empty() || v == "*" {
                return Err(ConfigError::Semantic(format!(
                    "{name}: {what} must name one tenant, project or agent"
                )));
            }
        }
        let l = &cfg.limits;
        for (what, v) in [
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.admin_max_connections",
                l.admin_max_connections as u64,
            ),
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.body_read_timeout_ms", l.body_read_timeout_ms),
            ("limits.http2_keepalive_ms", l.http2_keepalive_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Semantic(format!(
                    "{name}: {what} must be at least 1"
                )));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for k in &cfg.identity.api_keys {
            if k.id.is_empty() || k.id == "*" || !ids.insert(k.id.as_str()) {
                return Err(ConfigError::Semantic(format!(
                    "{name}: identity.api_keys: id `{}` must be non-empty, not `*`, and unique",
                    k.id
                )));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = include_str!("../../examples/contract/sidecar.yaml");

    #[test]
    fn the_contract_config_parses_with_defaults_and_relative_paths() {
        let cfg =
            SidecarConfig::parse("sidecar.yaml", CONTRACT, Path::new("/etc/warden"), |_| None)
                .unwrap();
        assert_eq!(cfg.identity.agent, "support-bot");
        assert_eq!(cfg.listen.agent, "127.0.0.1:15001");
        assert_eq!(
            cfg.policy.files,
            vec![PathBuf::from("/etc/warden/bundle.yaml")]
        );
        assert_eq!(
            cfg.policy.cache_dir,
            PathBuf::from("/etc/warden/.warden/cache")
        );
        assert_eq!(cfg.evidence.durability, Durability::Sync);
        assert_eq!(cfg.limits.max_request_bytes, 1 << 20);
        assert_eq!(cfg.runtime.workers, 1);
        assert!(cfg.upstream_tls.ca_files.is_empty());
        let tls = format!("{CONTRACT}upstream_tls: {{ ca_files: [ca.pem, /abs/ca.pem] }}\n");
        let cfg = SidecarConfig::parse("s.yaml", &tls, Path::new("/etc/warden"), |_| None).unwrap();
        assert_eq!(
            cfg.upstream_tls.ca_files,
            vec![
                PathBuf::from("/etc/warden/ca.pem"),
                PathBuf::from("/abs/ca.pem")
            ]
        );
        let more = format!("{CONTRACT}runtime: {{ workers: 4 }}\n");
        let cfg = SidecarConfig::parse("s.yaml", &more, Path::new("."), |_| None).unwrap();
        assert_eq!(cfg.runtime.workers, 4);
        let typo = format!("{CONTRACT}runtime: {{ threads: 4 }}\n");
        assert!(SidecarConfig::parse("s.yaml", &typo, Path::new("."), |_| None).is_err());
    }

    #[test]
    fn environment_overrides_identity() {
        let cfg = SidecarConfig::parse("s.yaml", CONTRACT, Path::new("."), |k| {
            (k == ENV_AGENT).then(|| "billing-bot".to_string())
        })
        .unwrap();
        assert_eq!(cfg.identity.agent, "billing-bot");
        assert_eq!(cfg.identity.tenant, "acme");
    }

    #[test]
    fn bad_configs_say_where() {
        let bad = CONTRACT.replace("durability: sync", "durability: maybe");
        let e = SidecarConfig::parse("s.yaml", &bad, Path::new("."), |_| None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("s.yaml:") && msg.contains("evidence.durability"),
            "{msg}"
        );
        let bad = format!("{CONTRACT}surprise: 1\n");
        let e = SidecarConfig::parse("s.yaml", &bad, Path::new("."), |_| None).unwrap_err();
        assert!(e.to_string().contains("unknown field `surprise`"), "{e}");
        let bad = CONTRACT.replace("agent: support-bot", "agent: \"*\"");
        assert!(SidecarConfig::parse("s.yaml", &bad, Path::new("."), |_| None).is_err());
    }
}
