//! `warden dev`: the command line of the first try; the wiring lives in [`crate::dev`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where dev keeps its files.
    #[arg(long, default_value = ".warden/dev")]
    pub dir: PathBuf,
    /// The sidecar's agent address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub agent: String,
    /// The sidecar's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: String,
    /// The policy service's gRPC address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub service: String,
    /// The policy service's HTTP address (health, metrics).
    #[arg(long, default_value = "127.0.0.1:15011")]
    pub service_http: String,
    /// The mock LLM's address.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub mock_llm: String,
    /// The mock weather API's address.
    #[arg(long, default_value = "127.0.0.1:18081")]
    pub mock_weather: String,
    /// The mock MCP server's address (tickets, at `/mcp`).
    #[arg(long, default_value = "127.0.0.1:18082")]
    pub mock_mcp: String,
    /// Make the allowed and the refused call, print the answers, and exit.
    #[arg(long)]
    pub smoke: bool,
}

pub fn run(args: DevArgs) -> Result<ExitCode, CliError> {
    super::sidecar::init_tracing();
    crate::dev::run(crate::dev::DevOptions {
        dir: args.dir,
        agent: args.agent,
        admin: args.admin,
        mock_llm: args.mock_llm,
        mock_weather: args.mock_weather,
        mock_mcp: args.mock_mcp,
        service: args.service,
        service_http: args.service_http,
        smoke: args.smoke,
    })
    .map_err(|e| CliError::Usage(e.to_string()))
}
