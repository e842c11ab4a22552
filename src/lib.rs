//! Warden: a sidecar enforcement proxy for AI agents.
//!
//! The module tree is the architecture (see `docs/architecture.md`):
//! - [`policy`] — the bundle language, validation, compilation into an immutable [`policy::Snapshot`];
//! - [`decide`] — the pure decision function: no I/O, no clock, no randomness;
//! - [`front`] — front ends: the agent port's service, which hands calls to the spine;
//! - [`spine`] — the mediation path as tower layers, and its runtime state ([`spine::state`]);
//! - [`connectors`] — the upstreams behind one interface, keyed by channel;
//! - [`evidence`] — the hash-chained record of every call, its spool and replay;
//! - [`sidecar`] — wiring: configuration, listeners, the admin port, the policy-service watch and
//!   evidence shipping;
//! - [`service`] — the central policy service: store, snapshot push, ops, audit, evidence ingest;
//! - [`proto`] — the generated gRPC code of the control plane;
//! - [`codes`] — the one table of refusal codes and their wire mappings;
//! - [`cli`] — the `warden` command line.

pub mod cli;
pub mod codes;
pub mod connectors;
pub mod decide;
pub mod detect;
pub mod dev;
pub mod evidence;
pub mod front;
pub mod ids;
pub mod policy;
pub mod proto;
pub mod service;
pub mod sidecar;
pub mod spine;
