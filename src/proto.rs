//! Generated gRPC code of `proto/warden/v1/control.proto` (built by `build.rs` with `protox`).
//! The evidence record schema (`evidence.proto`) is written by hand in `evidence::compact`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("warden.v1");
