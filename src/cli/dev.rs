//! `warden dev`: a first try in one command.
//!
//! For now this shows the policy core on the contract example: it compiles the bundle, prints
//! the snapshot, and runs one allowed and one refused request through the decision function.
//! The sidecar, policy service and mock upstreams of DESIGN §11 join it with the data plane.

use std::process::ExitCode;

use crate::decide::{self, Mode, Request, Usage};
use crate::policy;

/// The contract bundle, embedded so `warden dev` works from any directory.
pub const CONTRACT_BUNDLE: &str = include_str!("../../examples/contract/bundle.yaml");

const ALLOWED: &str = r#"{"tenant":"acme","project":"support","agent":"support-bot","channel":"llm","connector":"openai","model":"gpt-4o-mini","facts":{"pii":{"found":[]}}}"#;
const REFUSED: &str = r#"{"tenant":"acme","project":"support","agent":"support-bot","channel":"llm","connector":"openai","model":"gpt-4o-mini","facts":{"pii":{"found":["email"]}}}"#;

pub fn run() -> ExitCode {
    let snap = match policy::compile_str("examples/contract/bundle.yaml", CONTRACT_BUNDLE) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    println!("Warden dev (preview: policy core; the sidecar and mock upstreams come with the data plane)\n");
    super::policy::out(&super::policy::summary(&snap));
    for (label, json) in [("allowed", ALLOWED), ("refused", REFUSED)] {
        let req: Request = match serde_json::from_str(json) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("internal example is not a valid request: {e}");
                return ExitCode::from(1);
            }
        };
        let d = decide::decide(&snap, &req, &Usage::default(), Mode::Enforcing, 0, label);
        println!("\n# {label}: the same decision by hand:");
        println!("#   cargo run --release -- policy eval --bundle examples/contract/bundle.yaml --request '{json}'");
        super::policy::out(&super::policy::render(&d));
    }
    ExitCode::SUCCESS
}
