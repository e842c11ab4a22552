//! Front ends: one per entry point. Each turns its wire format into a spine call — who is
//! calling (from the sidecar's configuration, never from the agent), the run, step and session
//! ids — and hands it to the one spine, so every protocol passes the same enforcement.
//!
//! - `agent`: the agent port's HTTP/1 and HTTP/2 service (OpenAI-compatible `/v1/…`,
//!   `/http/{connector}/…`, and the egress proxy's CONNECT and absolute-form requests);
//! - `openai`, `http`, `egress`, `sql`: the routes of the agent port, each reading its wire format
//!   into a spine target (`agent::Routes` picks one by method and path);
//! - `render`: a refusal in each front end's wire format (HTTP JSON error, JSON-RPC error,
//!   gRPC status), from the one code table.

pub mod agent;
pub mod egress;
pub mod ext_authz;
pub mod grpc;
pub mod http;
pub mod mcp;
pub mod openai;
pub mod render;
pub mod sql;
