//! The `warden` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = warden::cli::Cli::parse();
    Ok(warden::cli::run(cli)?)
}
