//! MCP over raw HTTP for the tests: a JSON-RPC POST with chosen headers, and stateless
//! (2026-07-28) request bodies.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use super::{send, Resp};

/// A JSON-RPC POST of `body` to `url` with `headers` (JSON in, JSON or SSE accepted).
pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut b = http::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

/// A 2026-07-28 request `method` with `params` and the required `_meta`, id `id`.
pub fn modern(id: u64, method: &str, params: Value) -> Value {
    let mut p = params;
    p["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": p })
}
