//! `warden policy-service --config FILE`: the control plane.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::CliError;
use crate::service::{self, config::ServiceConfig};

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Path to the service's YAML configuration (listen, store, auth).
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(args: ServiceArgs) -> Result<ExitCode, CliError> {
    super::sidecar::init_tracing();
    let cfg = ServiceConfig::load(&args.config).map_err(CliError::Usage)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let running = service::start(cfg)
            .await
            .map_err(|e| CliError::Usage(format!("policy service failed to start: {e}")))?;
        eprintln!(
            "warden policy-service: gRPC http://{} HTTP http://{} (replica {})",
            running.grpc_addr, running.http_addr, running.core.replica
        );
        let _ = tokio::signal::ctrl_c().await;
        drop(running);
        Ok(ExitCode::SUCCESS)
    })
}
