//! The `warden` command line: one file per command group.

pub mod control;
pub mod dev;
pub mod evidence;
pub mod ops;
pub mod policy;
pub mod policy_admin;
pub mod service;
pub mod sidecar;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Warden: a sidecar enforcement proxy for AI agents.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A first try: mock upstreams and a sidecar on the contract example (see the README).
    Dev(dev::DevArgs),
    /// Validate, inspect and dry-run policy bundles.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the sidecar (the data plane).
    Sidecar(sidecar::SidecarArgs),
    /// Run the central policy service (the control plane).
    PolicyService(service::ServiceArgs),
    /// Governance modes, the kill switch, approvals, fleet status and the audit ledger.
    #[command(subcommand)]
    Ops(ops::OpsCommand),
    /// Verify and replay evidence spools.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
}

/// Errors the CLI reports on its own (bundle errors are printed, not returned).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Evidence(cmd) => evidence::run(cmd),
        Command::Sidecar(args) => sidecar::run(args),
        Command::PolicyService(args) => service::run(args),
        Command::Ops(cmd) => ops::run(cmd),
    }
}
