//! The MCP "tickets" mock: a deterministic MCP server on streamable HTTP at `/mcp`.
//!
//! Tools: `search_tickets(query)`, `get_ticket(id)`, `delete_ticket(id)`. Ticket 7's body holds
//! `jane.doe@example.com`, so a PII policy has something to find. It speaks both eras of the
//! protocol, told apart as the specification says — by how the client opens:
//!
//! - **2026-07-28** (stateless): every POST stands alone, names its revision in
//!   `params._meta["io.modelcontextprotocol/protocolVersion"]` and in `MCP-Protocol-Version`,
//!   its method in `Mcp-Method` and a tool call's tool in `Mcp-Name` (values may be
//!   `=?base64?…?=`); a header missing or disagreeing with the body is 400 with JSON-RPC
//!   `-32020`, an unknown revision 400 `-32022`, an unknown method 404 `-32601`.
//!   `server/discover` answers the revisions and capabilities; results carry `resultType`.
//! - **2025-11-25 and 2025-06-18**: `initialize` answers with an `Mcp-Session-Id`; every later
//!   request must carry it (missing: 400; unknown or ended: 404) and a supported
//!   `MCP-Protocol-Version` (unsupported: 400); `DELETE` ends the session.
//!
//! Notifications get 202; `GET` is 405 (no server-initiated stream); a foreign `Origin` is 403.
//! `tools/list` pages two tools at a time (`nextCursor`).
//!
//! Steering, for tests (in `search_tickets`'s `query`): `[[slow:MS]]` answers after MS
//! milliseconds; `[[die]]` closes the connection without an answer; `[[sse]]` answers as an
//! SSE stream (one `message` event); `[[full]]` returns whole tickets (bodies too). A ticket
//! from `get_ticket` comes with a `resource_link` (`tickets://ID`). Every POST is recorded.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{
    accept_loop, full, json_response, read_body, response, MockBody, ReceivedRequest, Recorder,
};

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// The revisions with `initialize` and sessions, newest first.
pub const LEGACY: [&str; 2] = ["2025-11-25", "2025-06-18"];
/// The `_meta` key naming a stateless request's revision.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The tickets: `(id, title, body)`.
const TICKETS: [(u64, &str, &str); 8] = [
    (
        1,
        "Login fails on mobile",
        "The app shows a blank screen after the password step.",
    ),
    (
        2,
        "Invoice total wrong",
        "The March invoice adds VAT twice.",
    ),
    (
        3,
        "Export to CSV",
        "Please add CSV export to the reports page.",
    ),
    (
        4,
        "Password reset email late",
        "The reset email takes over an hour to arrive.",
    ),
    (
        5,
        "Dark mode",
        "The settings page ignores the dark mode toggle.",
    ),
    (
        6,
        "Slow search",
        "Searching tickets takes ten seconds on large accounts.",
    ),
    (
        7,
        "Refund request",
        "Customer asks for a refund; reply to jane.doe@example.com.",
    ),
    (
        8,
        "Billing address",
        "The billing address form rejects postcodes with spaces.",
    ),
];

/// Tools per `tools/list` page.
const PAGE: usize = 2;

/// Which revisions a tickets mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// 2026-07-28 and the session revisions (the default).
    Both,
    /// Only the session era, at most this revision (a server from before 2026).
    Legacy(&'static str),
    /// Only 2026-07-28 (`initialize` is an unknown method).
    Modern,
}

/// A running mock's state, for tests: which revisions it speaks, and its open sessions.
pub struct Control {
    pub speaks: Speaks,
    sessions: Sessions,
}

impl Control {
    pub fn new(speaks: Speaks) -> Arc<Control> {
        Arc::new(Control {
            speaks,
            sessions: Sessions::default(),
        })
    }

    /// Forget every session, as a restarted server would.
    pub fn forget_sessions(&self) {
        self.sessions.set().clear();
    }

    /// How many sessions are open.
    pub fn open_sessions(&self) -> usize {
        self.sessions.set().len()
    }
}

/// The sessions the mock has opened and not ended.
#[derive(Default)]
struct Sessions {
    open: Mutex<HashSet<String>>,
}

impl Sessions {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn open(&self) -> String {
        let sid = uuid::Uuid::new_v4().simple().to_string();
        self.set().insert(sid.clone());
        sid
    }
    fn is_open(&self, sid: &str) -> bool {
        self.set().contains(sid)
    }
    fn end(&self, sid: &str) -> bool {
        self.set().remove(sid)
    }
}

/// Runs the tickets mock on `listener` forever, recording every POST into `recorder`.
pub async fn serve_recorded(
    listener: TcpListener,
    recorder: Arc<Recorder>,
    control: Arc<Control>,
) -> io::Result<()> {
    accept_loop(listener, move |req| {
        handle(Arc::clone(&recorder), Arc::clone(&control), req)
    })
    .await
}

fn tools() -> Vec<Value> {
    let id_schema = json!({
        "type": "object",
        "properties": { "id": { "type": "integer", "minimum": 1 } },
        "required": ["id"],
        "additionalProperties": false
    });
    vec![
        json!({
            "name": "search_tickets",
            "description": "Search tickets by a word of their title or body.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": { "type": "string", "maxLength": 200 },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 50 }
                },
                "required": ["query"],
                "additionalProperties": false
            }
        }),
        json!({
            "name": "get_ticket",
            "description": "One ticket by id.",
            "inputSchema": id_schema,
        }),
        json!({
            "name": "delete_ticket",
            "description": "Delete a ticket by id.",
            "inputSchema": id_schema,
            "annotations": { "destructiveHint": true }
        }),
    ]
}

/// A text result (and, for searches, the same as `structuredContent`).
fn text_result(text: String, structured: Option<Value>, is_error: bool) -> Value {
    let mut r = json!({ "content": [{ "type": "text", "text": text }], "isError": is_error });
    if let Some(s) = structured {
        r["structuredContent"] = s;
    }
    r
}

fn ticket_json(t: &(u64, &str, &str)) -> Value {
    json!({ "id": t.0, "title": t.1, "body": t.2 })
}

/// What a `tools/call` does: `Ok(result)`, or `Err(error)` for a JSON-RPC error.
fn call_tool(params: &Value) -> Result<Value, Value> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let id_arg = || args.get("id").and_then(Value::as_u64);
    match name {
        "search_tickets" => {
            let Some(q) = args.get("query").and_then(Value::as_str) else {
                return Ok(text_result("query must be a string".into(), None, true));
            };
            let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(50) as usize;
            let full = q.contains("[[full]]");
            let words: Vec<String> = q
                .split_whitespace()
                .filter(|w| !w.starts_with("[["))
                .map(str::to_lowercase)
                .collect();
            let hits: Vec<Value> = TICKETS
                .iter()
                .filter(|t| {
                    let text = format!("{} {}", t.1, t.2).to_lowercase();
                    words.iter().all(|w| text.contains(w.as_str()))
                })
                .take(limit)
                .map(|t| {
                    if full {
                        ticket_json(t)
                    } else {
                        json!({ "id": t.0, "title": t.1 })
                    }
                })
                .collect();
            let text = serde_json::to_string(&hits).unwrap_or_default();
            Ok(text_result(text, Some(json!({ "tickets": hits })), false))
        }
        "get_ticket" => match id_arg().and_then(|id| TICKETS.iter().find(|t| t.0 == id)) {
            Some(t) => {
                let mut r = text_result(
                    serde_json::to_string(&ticket_json(t)).unwrap_or_default(),
                    Some(ticket_json(t)),
                    false,
                );
                // The ticket as a resource, so a result names what it read.
                if let Some(content) = r["content"].as_array_mut() {
                    content.push(json!({
                        "type": "resource_link",
                        "uri": format!("tickets://{}", t.0),
                        "name": format!("ticket {}", t.0)
                    }));
                }
                Ok(r)
            }
            None => Ok(text_result("no such ticket".into(), None, true)),
        },
        "delete_ticket" => match id_arg() {
            Some(id) => Ok(text_result(format!("ticket {id} deleted"), None, false)),
            None => Ok(text_result("id must be an integer".into(), None, true)),
        },
        other => Err(json!({ "code": -32602, "message": format!("Unknown tool: {other}") })),
    }
}

/// The steering marker `[[name:N]]` or `[[name]]` in a search query.
fn marker(params: &Value, name: &str) -> Option<u64> {
    let q = params.pointer("/arguments/query")?.as_str()?;
    let open = format!("[[{name}");
    let at = q.find(&open)? + open.len();
    let rest = &q[at..];
    let end = rest.find("]]")?;
    let inner = &rest[..end];
    if inner.is_empty() {
        return Some(0);
    }
    inner.strip_prefix(':')?.parse().ok()
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn rpc_error(id: &Value, error: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

fn plain(status: StatusCode, text: &str) -> Response<MockBody> {
    response(status, "text/plain", full(text.to_string()))
}

fn error_response(status: StatusCode, code: i64, message: &str) -> Response<MockBody> {
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } }),
    )
}

use crate::front::mcp::{header_text, origin_ok};

async fn handle(
    recorder: Arc<Recorder>,
    control: Arc<Control>,
    req: Request<Incoming>,
) -> Response<MockBody> {
    let sessions = &control.sessions;
    let (parts, body) = req.into_parts();
    if parts.uri.path() != "/mcp" {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if !origin_ok(&parts.headers) {
        return plain(StatusCode::FORBIDDEN, "foreign origin");
    }
    let session = header_text(&parts.headers, "mcp-session-id");
    match parts.method {
        Method::POST => {}
        Method::GET => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "no server-initiated stream");
            r.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("POST, DELETE"),
            );
            return r;
        }
        Method::DELETE => {
            let Some(s) = session else {
                return plain(StatusCode::BAD_REQUEST, "no Mcp-Session-Id");
            };
            return if sessions.end(&s) {
                plain(StatusCode::OK, "session ended")
            } else {
                plain(StatusCode::NOT_FOUND, "no such session")
            };
        }
        _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "POST only"),
    }
    let Ok(body) = read_body(body).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    };
    recorder.record(ReceivedRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, -32700, "Parse error");
    };
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let id = msg.get("id").cloned();
    let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
    let header_version = header_text(&parts.headers, "mcp-protocol-version");
    let meta_version = params
        .pointer(&format!("/_meta/{}", META_VERSION.replace('/', "~1")))
        .and_then(Value::as_str)
        .map(str::to_string);

    // The era: a request carrying the stateless `_meta` (or naming a revision this mock knows
    // only as stateless) is served statelessly; everything else is the session era.
    let modern = meta_version.is_some()
        || header_version
            .as_deref()
            .is_some_and(|v| !LEGACY.contains(&v) && method != "initialize");
    let legacy: &[&str] = match control.speaks {
        Speaks::Both => &LEGACY,
        Speaks::Legacy(newest) => match LEGACY.iter().position(|v| *v == newest) {
            Some(i) => &LEGACY[i..],
            None => &LEGACY,
        },
        Speaks::Modern => &[],
    };
    // A server of the session era only reads a stateless request as a session request
    // without its session.
    if modern && !matches!(control.speaks, Speaks::Legacy(_)) {
        return stateless(
            &parts.headers,
            header_version,
            meta_version,
            &method,
            id,
            &params,
        )
        .await;
    }
    if control.speaks == Speaks::Modern {
        // A stateless-only server: the session era's `initialize` is an unknown method.
        return json_response(
            StatusCode::NOT_FOUND,
            &rpc_error(
                &id.unwrap_or(Value::Null),
                json!({ "code": -32601, "message": format!("Method not found: {method}") }),
            ),
        );
    }
    if method == "initialize" {
        let Some(id) = id else {
            return error_response(StatusCode::BAD_REQUEST, -32600, "initialize needs an id");
        };
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = legacy
            .iter()
            .find(|v| **v == asked)
            .copied()
            .unwrap_or(legacy[0]);
        let sid = sessions.open();
        let mut r = json_response(
            StatusCode::OK,
            &rpc_result(
                &id,
                json!({
                    "protocolVersion": version,
                    "capabilities": { "tools": { "listChanged": false } },
                    "serverInfo": { "name": "tickets-mock", "version": "1.0.0" }
                }),
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert("mcp-session-id", v);
        }
        return r;
    }
    // Every later message belongs to a session, under a revision it speaks.
    let Some(s) = session else {
        return error_response(StatusCode::BAD_REQUEST, -32600, "missing Mcp-Session-Id");
    };
    if !sessions.is_open(&s) {
        return error_response(StatusCode::NOT_FOUND, -32001, "session not found");
    }
    if header_version
        .as_deref()
        .is_some_and(|v| !legacy.contains(&v))
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            -32600,
            "unsupported MCP-Protocol-Version",
        );
    }
    // Notifications and responses: accepted, nothing to answer.
    let (Some(id), false) = (id, method.is_empty()) else {
        return response(StatusCode::ACCEPTED, "text/plain", full(""));
    };
    match answer(&method, &id, &params, false).await {
        Answer::Json(status, v) => json_response(status, &v),
        Answer::Sse(v) => sse(&v),
        Answer::Die => die(),
    }
}

/// A stateless (2026-07-28) request: its headers must agree with its body.
async fn stateless(
    headers: &http::HeaderMap,
    header_version: Option<String>,
    meta_version: Option<String>,
    method: &str,
    id: Option<Value>,
    params: &Value,
) -> Response<MockBody> {
    let mismatch = |what: &str| {
        error_response(
            StatusCode::BAD_REQUEST,
            -32020,
            &format!("header mismatch: {what}"),
        )
    };
    let Some(meta) = meta_version else {
        return error_response(
            StatusCode::BAD_REQUEST,
            -32602,
            "missing _meta io.modelcontextprotocol/protocolVersion",
        );
    };
    if header_version.as_deref() != Some(meta.as_str()) {
        return mismatch("MCP-Protocol-Version");
    }
    if meta != MODERN {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "jsonrpc": "2.0", "id": id, "error": {
                "code": -32022, "message": "Unsupported protocol version",
                "data": { "supported": [MODERN], "requested": meta } } }),
        );
    }
    let Some(id) = id else {
        return response(StatusCode::ACCEPTED, "text/plain", full(""));
    };
    if header_text(headers, "mcp-method").as_deref() != Some(method) {
        return mismatch("Mcp-Method");
    }
    if method == "tools/call"
        && header_text(headers, "mcp-name").as_deref() != params.get("name").and_then(Value::as_str)
    {
        return mismatch("Mcp-Name");
    }
    match answer(method, &id, params, true).await {
        Answer::Json(status, v) => json_response(status, &v),
        Answer::Sse(v) => sse(&v),
        Answer::Die => die(),
    }
}

/// How a request is answered.
enum Answer {
    Json(StatusCode, Value),
    Sse(Value),
    Die,
}

/// The answer to a request of either era (`modern`: 2026-07-28).
async fn answer(method: &str, id: &Value, params: &Value, modern: bool) -> Answer {
    let complete = |mut r: Value| {
        if modern {
            r["resultType"] = json!("complete");
        }
        r
    };
    let ok = |r: Value| Answer::Json(StatusCode::OK, rpc_result(id, complete(r)));
    match method {
        "ping" if !modern => ok(json!({})),
        "server/discover" if modern => ok(json!({
            "supportedVersions": [MODERN],
            "capabilities": { "tools": { "listChanged": false } },
            "ttlMs": 60_000,
            "cacheScope": "public",
            "_meta": { "io.modelcontextprotocol/serverInfo": { "name": "tickets-mock", "version": "1.0.0" } }
        })),
        "tools/list" => {
            let all = tools();
            let from = params
                .get("cursor")
                .and_then(Value::as_str)
                .map(|c| c.parse::<usize>().unwrap_or(usize::MAX));
            if from.is_some_and(|f| f >= all.len()) {
                return Answer::Json(
                    StatusCode::OK,
                    rpc_error(id, json!({ "code": -32602, "message": "Invalid cursor" })),
                );
            }
            let f = from.unwrap_or(0);
            let page: Vec<Value> = all.iter().skip(f).take(PAGE).cloned().collect();
            let mut result = json!({ "tools": page });
            if f + PAGE < all.len() {
                result["nextCursor"] = json!((f + PAGE).to_string());
            }
            if modern {
                result["ttlMs"] = json!(60_000);
                result["cacheScope"] = json!("public");
            }
            ok(result)
        }
        "tools/call" => {
            if let Some(ms) = marker(params, "slow") {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if marker(params, "die").is_some() {
                return Answer::Die;
            }
            let a = match call_tool(params) {
                Ok(r) => rpc_result(id, complete(r)),
                Err(e) => rpc_error(id, e),
            };
            if marker(params, "sse").is_some() {
                Answer::Sse(a)
            } else {
                Answer::Json(StatusCode::OK, a)
            }
        }
        _ => Answer::Json(
            // Stateless HTTP answers an unknown method with 404; the session era with 200.
            if modern {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            rpc_error(
                id,
                json!({ "code": -32601, "message": format!("Method not found: {method}") }),
            ),
        ),
    }
}

/// One JSON-RPC message as a per-request SSE stream.
fn sse(v: &Value) -> Response<MockBody> {
    let mut r = response(
        StatusCode::OK,
        "text/event-stream",
        full(format!("event: message\ndata: {v}\n\n")),
    );
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// An upstream dying mid-call: the connection's task unwinds (without the panic hook's
/// message) and the connection closes with no answer.
fn die() -> Response<MockBody> {
    std::panic::resume_unwind(Box::new("the tickets mock dies mid-call"))
}
