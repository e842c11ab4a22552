//! Warden: a sidecar enforcement proxy for AI agents.
//!
//! The module tree is the architecture (see `docs/architecture.md`):
//! - [`policy`] — the bundle language, validation, compilation into an immutable [`policy::Snapshot`];
//! - [`decide`] — the pure decision function: no I/O, no clock, no randomness;
//! - [`codes`] — the one table of refusal codes and their wire mappings;
//! - [`cli`] — the `warden` command line.

pub mod cli;
pub mod codes;
pub mod connectors;
pub mod decide;
pub mod detect;
pub mod dev;
pub mod evidence;
pub mod ids;
pub mod policy;
pub mod sidecar;
pub mod spine;
