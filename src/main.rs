//! The `warden` binary: parse the command line and hand over to the library.

use clap::Parser;

/// mimalloc instead of the system allocator: the request path allocates per call, and glibc's
/// malloc was ~17 % of the sidecar's CPU under load (BENCHMARKS.md, "Data plane").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = warden::cli::Cli::parse();
    Ok(warden::cli::run(cli)?)
}
