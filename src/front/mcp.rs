//! `/mcp`: one MCP endpoint (streamable HTTP) over every MCP connector of the agent's tenant
//! (`docs/mcp.md`). It speaks the stateless revision 2026-07-28 and the session revisions
//! 2025-11-25 and 2025-06-18, told apart as the specification says: a request carrying
//! `_meta["io.modelcontextprotocol/protocolVersion"]` (or a revision that only the stateless era
//! has) is stateless; everything else is the session era, where `initialize` opens a session
//! (`Mcp-Session-Id`): a request carrying an id Warden did not assign is `unknown_session`
//! (404), one carrying none stands alone (tools are stateless here).
//!
//! Warden judges the **body**: a stateless request whose `MCP-Protocol-Version`, `Mcp-Method`
//! or `Mcp-Name` disagree with it is refused (`header_mismatch`, 400 / `-32020`). A foreign
//! `Origin` is 403 (DNS rebinding). `initialize`, `ping`, `server/discover` and notifications
//! are answered here; `tools/list` and `tools/call` go to the MCP connector; resources and
//! prompts are methods a server without those capabilities does not have (`-32601`).
//! Refusals are JSON-RPC errors carrying the request's id, the stable code and the decision id.

use serde_json::{json, Value as Json};

use crate::codes::Code;
use crate::connectors::mcp::{self, McpCall, McpList, McpLocal};
use crate::decide::Request;
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Reply, Target};

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// The session revisions, newest first.
pub const LEGACY: [&str; 2] = ["2025-11-25", "2025-06-18"];
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

fn header(call: &Call, name: &str) -> Option<String> {
    header_text(&call.parts.headers, name)
}

/// A header's text, decoded from `=?base64?…?=` when written so (the stateless revision's
/// form for values that are not plain ASCII; `client::header_value` writes it).
pub fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = headers.get(name)?.to_str().ok()?;
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(raw.to_string()),
    }
}

/// No `Origin`, or a loopback one: the sidecar's own (anything else is DNS rebinding or a
/// foreign page).
pub fn origin_ok(headers: &http::HeaderMap) -> bool {
    let Some(o) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    let o = o.to_str().unwrap_or_default();
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| o == *p || o.strip_prefix(p).is_some_and(|r| r.starts_with(':')))
}

fn mismatch(what: &str) -> Refusal {
    Refusal::new(
        Code::HeaderMismatch,
        format!("header mismatch: {what} does not agree with the body"),
    )
}

/// The sessions `initialize` opened (session revisions only): id → the revision negotiated.
/// Bounded; a session idle for an hour is forgotten (the client then gets `unknown_session`
/// and opens another).
pub struct Sessions(moka::sync::Cache<String, &'static str>);

impl Default for Sessions {
    fn default() -> Self {
        Sessions(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(3_600))
                .build(),
        )
    }
}

/// The route: one JSON-RPC message in, a target out.
pub fn call(
    call: &Call,
    snap: &Snapshot,
    request: &mut Request,
    sessions: &Sessions,
) -> Result<Box<dyn Target>, Refusal> {
    request.channel = Channel::Mcp;
    if !origin_ok(&call.parts.headers) {
        return Err(Refusal::new(
            Code::ForbiddenOrigin,
            "the Origin of this request is not the sidecar's own",
        ));
    }
    super::openai::json_body(&call.parts.headers, &call.body)?;
    let msg: Json = serde_json::from_slice(&call.body)
        .map_err(|e| Refusal::new(Code::InvalidJson, format!("Parse error: {e}")))?;
    if msg.get("jsonrpc").and_then(Json::as_str) != Some("2.0") {
        return Err(Refusal::new(
            Code::InvalidJson,
            "Invalid Request: one JSON-RPC 2.0 message (`jsonrpc: \"2.0\"`) per POST",
        ));
    }
    let id = msg.get("id").cloned();
    if let Some(id) = &id {
        call.trace(|t| t.reply_to = Some(id.clone()));
    }
    let method = msg.get("method").and_then(Json::as_str);
    let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
    let header_version = header(call, "mcp-protocol-version");
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .and_then(Json::as_str)
        .map(str::to_string);
    let modern = meta_version.is_some()
        || header_version
            .as_deref()
            .is_some_and(|v| !LEGACY.contains(&v) && method != Some("initialize"));
    if modern {
        let Some(meta) = &meta_version else {
            if let Some(v) = header_version.as_deref().filter(|v| *v != MODERN) {
                return Err(Refusal::new(
                    Code::UnsupportedProtocolVersion,
                    format!(
                        "Unsupported protocol version {v}: supported {MODERN}, {}",
                        LEGACY.join(", ")
                    ),
                ));
            }
            return Err(Refusal::new(
                Code::InvalidParams,
                format!("missing _meta {META_VERSION}"),
            ));
        };
        if header_version.as_deref() != Some(meta.as_str()) {
            return Err(mismatch("MCP-Protocol-Version"));
        }
        if meta != MODERN {
            return Err(Refusal::new(
                Code::UnsupportedProtocolVersion,
                format!(
                    "Unsupported protocol version {meta}: supported {MODERN}, {}",
                    LEGACY.join(", ")
                ),
            ));
        }
    } else {
        if let Some(v) = header_version.as_deref() {
            if !LEGACY.contains(&v) && method != Some("initialize") {
                return Err(Refusal::new(
                    Code::UnsupportedProtocolVersion,
                    format!("Unsupported MCP-Protocol-Version {v}"),
                ));
            }
        }
        // A session id is Warden's own, or refused; a request without one stands alone.
        if let Some(sid) = header(call, "mcp-session-id") {
            if method != Some("initialize") && sessions.0.get(&sid).is_none() {
                return Err(Refusal::new(
                    Code::UnknownSession,
                    "session not found: send initialize to open one",
                ));
            }
        }
    }
    // A response or a notification: accepted, nothing to answer.
    let (Some(id), Some(method)) = (id, method) else {
        return Ok(Box::new(McpLocal {
            rpc_id: Json::Null,
            result: None,
            modern,
            session: None,
        }));
    };
    if modern {
        if header(call, "mcp-method").as_deref() != Some(method) {
            return Err(mismatch("Mcp-Method"));
        }
        if method == "tools/call"
            && header(call, "mcp-name").as_deref() != params.get("name").and_then(Json::as_str)
        {
            return Err(mismatch("Mcp-Name"));
        }
    }
    let local = |result: Json| -> Result<Box<dyn Target>, Refusal> {
        Ok(Box::new(McpLocal {
            rpc_id: id.clone(),
            result: Some(result),
            modern,
            session: None,
        }))
    };
    let tools = json!({ "tools": { "listChanged": false } });
    let info = json!({ "name": "warden", "version": env!("CARGO_PKG_VERSION") });
    match method {
        "initialize" if !modern => {
            let asked = params
                .get("protocolVersion")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let version = LEGACY.iter().find(|v| **v == asked).unwrap_or(&LEGACY[0]);
            let sid = uuid::Uuid::new_v4().simple().to_string();
            sessions.0.insert(sid.clone(), version);
            Ok(Box::new(McpLocal {
                rpc_id: id.clone(),
                result: Some(
                    json!({ "protocolVersion": version, "capabilities": tools, "serverInfo": info }),
                ),
                modern,
                session: Some(sid),
            }))
        }
        "ping" if !modern => local(json!({})),
        "server/discover" if modern => local(json!({
            "supportedVersions": [MODERN],
            "capabilities": tools,
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": { "io.modelcontextprotocol/serverInfo": info }
        })),
        "tools/list" => Ok(Box::new(McpList { rpc_id: id, modern })),
        "tools/call" => {
            let name = params
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| Refusal::new(Code::InvalidParams, "tools/call needs a `name`"))?;
            let arguments = match params.get("arguments") {
                None | Some(Json::Null) => json!({}),
                Some(a @ Json::Object(_)) => a.clone(),
                Some(_) => {
                    return Err(Refusal::new(
                        Code::InvalidParams,
                        "tools/call `arguments` must be an object",
                    ))
                }
            };
            let Some(resolved) = mcp::resolve(snap, &call.ctx.tenant, name) else {
                // Another tenant's tool is as unknown as no tool, and audited (INV-003).
                let mut r = unknown_tool(name);
                if snap.tool_owned_elsewhere(&call.ctx.tenant, name) {
                    r.recorded_as = Some(Code::CrossTenant);
                }
                return Err(r);
            };
            request.connector = Some(resolved.connector.clone());
            request.tool = Some(resolved.tool.clone());
            request.facts.arguments =
                Some(crate::decide::arguments_fact(snap, request, &arguments));
            Ok(Box::new(McpCall {
                rpc_id: id,
                resolved,
                arguments,
                modern,
            }))
        }
        other => Err(Refusal::new(
            Code::UnknownRoute,
            format!("Method not found: {other}"),
        )),
    }
}

fn unknown_tool(name: &str) -> Refusal {
    Refusal::new(Code::UnknownTool, format!("Unknown tool: {name}"))
}

/// A refusal as this front end's answer: a JSON-RPC error with the request's id, the stable
/// code and the decision id in `data`. Transport problems keep their HTTP status (400 for a
/// header mismatch, 403 for a foreign origin, 413, 415, 405 with `Allow`); an answer to the
/// request itself is HTTP 200. A tool no policy lets the agent use is "unknown" — the agent
/// cannot tell a hidden tool from one that does not exist — while its record keeps why.
/// What the agent is told of a refused tool call: a tool no policy lets it use is one it may
/// not see, so it is "unknown" (the record keeps `no_allow_policy`).
pub fn visible(r: &Refusal) -> Refusal {
    if r.code == Code::NoAllowPolicy {
        let mut u = Refusal::new(Code::UnknownTool, "Unknown tool");
        u.recorded_as = Some(Code::NoAllowPolicy);
        u
    } else {
        r.clone()
    }
}

pub fn render(r: &Refusal, id: Option<Json>, decision_id: &str) -> Reply {
    let shown = if id.is_some() { visible(r) } else { r.clone() };
    let body = super::render::jsonrpc_error(&shown, id.unwrap_or(Json::Null), decision_id);
    let status = match shown.code {
        Code::InvalidJson
        | Code::HeaderMismatch
        | Code::UnsupportedProtocolVersion
        | Code::UnknownSession
        | Code::ForbiddenOrigin
        | Code::UnsupportedMediaType
        | Code::BodyTooLarge
        | Code::MethodNotSupported
        | Code::Unauthorized
        | Code::Overloaded
        | Code::NotReady
        | Code::RequestTimeout => shown.code.http_status(),
        _ => 200,
    };
    let mut reply = crate::connectors::json_reply(
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK),
        &body,
    );
    if let Some(allow) = r.allow {
        reply
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    }
    reply
}
