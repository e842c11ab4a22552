//! The `warden` binary: parse the command line and hand over to the library.
//!
//! An error is one line on stderr (`error: …`) and exit code 1, whatever `RUST_BACKTRACE` says.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = warden::cli::Cli::parse();
    match warden::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
