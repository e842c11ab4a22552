//! `warden sidecar --config FILE`: the data plane.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::CliError;
use crate::sidecar::{self, config::SidecarConfig};

#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Path to sidecar.yaml.
    #[arg(long)]
    pub config: PathBuf,
}

/// Log to stderr; `RUST_LOG` (e.g. `warden=debug`) picks what.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(args: SidecarArgs) -> Result<ExitCode, CliError> {
    init_tracing();
    let cfg = SidecarConfig::load(&args.config).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.runtime.workers > 0 {
        rt.worker_threads(cfg.runtime.workers);
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let running = sidecar::start(cfg)
            .await
            .map_err(|e| CliError::Usage(format!("sidecar failed to start: {e}")))?;
        eprintln!(
            "warden sidecar: agent http://{} admin http://{}",
            running.agent_addr, running.admin_addr
        );
        let _ = tokio::signal::ctrl_c().await;
        drop(running);
        Ok(ExitCode::SUCCESS)
    })
}
