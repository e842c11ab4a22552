//! The MCP channel's connector (`docs/mcp.md`): the tenant's `mcp` connectors are the
//! upstreams of one `/mcp` endpoint, each reached in whichever revision it speaks ([`client`]).
//!
//! Names. A connector with `McpTool` documents offers exactly those tools, by their ids (an
//! `upstream_name` renames); a connector without any offers whatever its server lists, under
//! the server's names — prefixed `{connector}__` when the tenant has more than one MCP
//! connector, so two servers' tools can never clash. Both are read from the snapshot alone, so
//! a call is resolved to (connector, tool) before it is decided.
//!
//! `tools/list` asks every upstream for every page and shows only the tools an active allow
//! of the agent matches; `tools/call` is decided on (connector, tool) and the arguments' fact,
//! sent with the connector's credentials, and its result read whole and judged by the
//! detectors before any of it reaches the agent.

pub mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_json::{json, Value as Json};

use super::Settings;
use crate::codes::Code;
use crate::decide::{PiiFact, SecretFact};
use crate::evidence::record::{content_hash, Content, McpFacts, Outcome, MAX_DOC_IDS};
use crate::policy::compile::ConnectorInfo;
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::{Call, CallState, Refusal, Reply};
use client::{Exchange, McpError, Upstream};

/// Between a connector's id and its server's tool name, when names need a prefix.
pub const PREFIX: &str = "__";
/// The most tools one `tools/list` gathers from one upstream (pages are followed to it).
pub const MAX_TOOLS: usize = 1_000;

/// A tool call resolved from the snapshot: which connector, the tool's id (what policies
/// name), and its name on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub connector: String,
    pub tool: String,
    pub upstream: String,
}

fn mcp_connectors<'a>(snap: &'a Snapshot, tenant: &str) -> Vec<&'a Arc<ConnectorInfo>> {
    let mut v: Vec<&Arc<ConnectorInfo>> = snap
        .tenant(tenant)
        .map(|t| {
            t.connectors
                .values()
                .filter(|c| c.spec.mcp.is_some())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Whether `connector` of `tenant` has `McpTool` documents (a closed tool list).
fn closed(snap: &Snapshot, tenant: &str, connector: &str) -> bool {
    snap.tenant(tenant)
        .is_some_and(|t| t.tools.values().any(|s| s.connector == connector))
}

/// The (connector, tool, upstream name) an agent's tool name stands for, if any.
pub fn resolve(snap: &Snapshot, tenant: &str, name: &str) -> Option<Resolved> {
    let t = snap.tenant(tenant)?;
    if let Some(spec) = t.tools.get(name) {
        return Some(Resolved {
            connector: spec.connector.clone(),
            tool: name.to_string(),
            upstream: spec
                .upstream_name
                .clone()
                .unwrap_or_else(|| name.to_string()),
        });
    }
    let conns = mcp_connectors(snap, tenant);
    let open = |c: &str| !closed(snap, tenant, c);
    if conns.len() == 1 {
        let c = &conns[0].id;
        return open(c).then(|| Resolved {
            connector: c.to_string(),
            tool: name.to_string(),
            upstream: name.to_string(),
        });
    }
    let (c, tool) = name.split_once(PREFIX)?;
    conns
        .iter()
        .find(|k| &*k.id == c && open(c))
        .filter(|_| !tool.is_empty())
        .map(|k| Resolved {
            connector: k.id.to_string(),
            tool: tool.to_string(),
            upstream: tool.to_string(),
        })
}

/// The name an agent sees for `upstream` (a server's tool name) of `connector`, and the tool
/// id policies match; `None` for a tool a closed list does not offer.
pub fn exposed(
    snap: &Snapshot,
    tenant: &str,
    connector: &str,
    upstream: &str,
) -> Option<(String, String)> {
    let t = snap.tenant(tenant)?;
    if closed(snap, tenant, connector) {
        let mut ids: Vec<&str> = t
            .tools
            .iter()
            .filter(|(id, s)| {
                s.connector == connector
                    && s.upstream_name.as_deref().unwrap_or(id.as_ref()) == upstream
            })
            .map(|(id, _)| id.as_ref())
            .collect();
        ids.sort_unstable();
        return ids.first().map(|id| (id.to_string(), id.to_string()));
    }
    let name = if mcp_connectors(snap, tenant).len() > 1 {
        format!("{connector}{PREFIX}{upstream}")
    } else {
        upstream.to_string()
    };
    Some((name, upstream.to_string()))
}

/// A message the front end answers without an upstream (`initialize`, `ping`,
/// `server/discover`): its result, or `None` for a notification (answered 202).
#[derive(Debug, Clone)]
pub struct McpLocal {
    pub rpc_id: Json,
    pub result: Option<Json>,
    /// Spoken in 2026-07-28 (results carry `resultType`).
    pub modern: bool,
    /// The session an `initialize` opened (sent as `Mcp-Session-Id`).
    pub session: Option<String>,
}

impl crate::spine::Target for McpLocal {
    fn channel(&self) -> Channel {
        Channel::Mcp
    }
    fn local(&self) -> bool {
        true
    }
    fn facts(&self, _call: &CallState) -> Option<(PiiFact, SecretFact)> {
        None
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// Answer a local message.
pub fn local(call: &Call, target: McpLocal) -> Result<Reply, Refusal> {
    call.trace(|t| t.rec.outcome = Some(Outcome::Allowed));
    Ok(match target.result {
        None => {
            let mut r = http::Response::new(super::body_of(http_body_util::Full::new(
                bytes::Bytes::new(),
            )));
            *r.status_mut() = http::StatusCode::ACCEPTED;
            r
        }
        Some(result) => {
            let mut r = rpc_reply(&target.rpc_id, result, target.modern).0;
            if let Some(v) = target.session.and_then(|s| HeaderValue::from_str(&s).ok()) {
                r.headers_mut().insert("mcp-session-id", v);
            }
            r
        }
    })
}

/// `tools/list`: answered from every upstream, filtered by the agent's policies.
#[derive(Debug, Clone)]
pub struct McpList {
    pub rpc_id: Json,
    pub modern: bool,
}

impl crate::spine::Target for McpList {
    fn channel(&self) -> Channel {
        Channel::Mcp
    }
    fn local(&self) -> bool {
        true
    }
    fn facts(&self, _call: &CallState) -> Option<(PiiFact, SecretFact)> {
        None
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// `tools/call`, resolved.
#[derive(Debug, Clone)]
pub struct McpCall {
    pub rpc_id: Json,
    pub resolved: Resolved,
    pub arguments: Json,
    pub modern: bool,
}

impl crate::spine::Target for McpCall {
    fn channel(&self) -> Channel {
        Channel::Mcp
    }
    /// What goes upstream: the arguments (keys and values).
    fn facts(&self, _call: &CallState) -> Option<(PiiFact, SecretFact)> {
        Some((
            PiiFact::of_mask(crate::detect::json::kinds(&self.arguments)),
            SecretFact::of_mask(crate::detect::json::secret_kinds(&self.arguments)),
        ))
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// The MCP connector (its state shared by every call).
pub struct Mcp(pub Arc<Hub>);

impl Mcp {
    pub fn new(settings: Settings) -> Self {
        Mcp(Arc::new(Hub {
            settings,
            upstreams: Mutex::new(HashMap::new()),
            listed: Mutex::new(HashMap::new()),
        }))
    }
}

/// (tenant, connector).
type Key = (Box<str>, Box<str>);
/// (tenant, connector) → (URL, its client).
type Upstreams = HashMap<Key, (String, Arc<Upstream>)>;

/// One client per (tenant, connector), kept while its URL stays; and the tools each upstream
/// listed last, with their input schemas.
pub struct Hub {
    pub settings: Settings,
    upstreams: Mutex<Upstreams>,
    listed: Mutex<HashMap<Key, Listed>>,
}

/// An upstream's tools as it listed them, by name, and when.
struct Listed {
    at: std::time::Instant,
    tools: Arc<HashMap<String, ToolDef>>,
}

/// A tool as its server lists it, and its input schema compiled once, on first use.
pub struct ToolDef {
    pub json: Json,
    validator: std::sync::OnceLock<Result<Arc<jsonschema::Validator>, String>>,
}

impl ToolDef {
    /// The tool's input schema compiled, `None` without one; an error for a schema that
    /// cannot be used.
    fn validator(&self) -> Option<Result<Arc<jsonschema::Validator>, String>> {
        let schema = self.json.get("inputSchema")?;
        Some(
            self.validator
                .get_or_init(|| {
                    jsonschema::validator_for(schema)
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .clone(),
        )
    }
}

/// How long an upstream's tool list (and the input schemas in it) is reused for tool calls.
pub const LISTED_TTL: Duration = Duration::from_secs(60);

impl Hub {
    /// `connector`'s tools by name (every page), from the last listing if fresh.
    async fn tools_of(
        &self,
        tenant: &str,
        c: &ConnectorInfo,
        up: &Upstream,
        x: &Exchange<'_>,
    ) -> Result<Arc<HashMap<String, ToolDef>>, Refusal> {
        let key = (Box::<str>::from(tenant), Box::<str>::from(&*c.id));
        if let Some(l) = self
            .listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|l| l.at.elapsed() < LISTED_TTL)
        {
            return Ok(l.tools.clone());
        }
        let all = fetch_tools(up, x).await.map_err(|e| match e {
            Fetch::Mcp(e) => refusal_of(&c.id, e),
            Fetch::Refused => Refusal::new(
                Code::UpstreamError,
                format!("MCP server of connector `{}` refused tools/list", c.id),
            ),
        })?;
        Ok(self.remember(tenant, &c.id, &all))
    }

    /// Keep an upstream's fresh listing for the tool calls that follow.
    fn remember(
        &self,
        tenant: &str,
        connector: &str,
        all: &[Json],
    ) -> Arc<HashMap<String, ToolDef>> {
        let tools: HashMap<String, ToolDef> = all
            .iter()
            .filter_map(|t| {
                let name = t.get("name")?.as_str()?.to_string();
                Some((
                    name,
                    ToolDef {
                        json: t.clone(),
                        validator: std::sync::OnceLock::new(),
                    },
                ))
            })
            .collect();
        let tools = Arc::new(tools);
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (tenant.into(), connector.into()),
                Listed {
                    at: std::time::Instant::now(),
                    tools: tools.clone(),
                },
            );
        tools
    }

    fn upstream(&self, tenant: &str, c: &ConnectorInfo) -> Result<Arc<Upstream>, Refusal> {
        let url = c
            .spec
            .mcp
            .as_ref()
            .map(|m| m.url.clone())
            .ok_or_else(|| Refusal::internal("MCP connector without mcp block"))?;
        let key = (Box::<str>::from(tenant), Box::<str>::from(&*c.id));
        let mut map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((u, up)) = map.get(&key) {
            if *u == url {
                return Ok(up.clone());
            }
        }
        let up = Arc::new(Upstream::new(&url).map_err(|e| {
            Refusal::new(Code::UpstreamError, format!("connector `{}`: {e}", c.id))
        })?);
        map.insert(key, (url, up.clone()));
        Ok(up)
    }
}

/// The connector's injected headers, resolved (never shown, never logged).
fn headers(call: &Call, c: &ConnectorInfo) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
    let Some(m) = &c.spec.mcp else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(m.inject_headers.len());
    for (name, reference) in &m.inject_headers {
        let unusable = || {
            Refusal::new(
                Code::UpstreamError,
                format!("connector `{}` has no usable credential", c.id),
            )
        };
        let value = call.rt.credentials.get(reference).map_err(|e| {
            tracing::error!(connector = %c.id, header = %name, error = %e, "credential unavailable");
            unusable()
        })?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| unusable())?;
        let value = HeaderValue::from_str(&value).map_err(|_| unusable())?;
        out.push((name, value));
    }
    Ok(out)
}

fn refusal_of(connector: &str, e: McpError) -> Refusal {
    match e {
        McpError::Timeout(ms) => Refusal::new(
            Code::UpstreamTimeout,
            format!("MCP server of connector `{connector}` did not answer within {ms} ms"),
        ),
        McpError::TooLarge(n) => Refusal::new(
            Code::BodyTooLarge,
            format!("the answer of connector `{connector}` is larger than {n} bytes"),
        ),
        other => Refusal::new(
            Code::UpstreamError,
            format!("MCP server of connector `{connector}`: {other}"),
        ),
    }
}

fn timeout(settings: &Settings, c: &ConnectorInfo) -> Duration {
    let own = c.spec.mcp.as_ref().map_or(30_000, |m| m.timeout_ms());
    Duration::from_millis(own.min(settings.upstream_timeout_ms))
}

/// A JSON-RPC answer (`result` with `id`; in 2026-07-28 the result says `resultType`), and
/// its size.
pub fn rpc_reply(id: &Json, mut result: Json, modern: bool) -> (Reply, usize) {
    if modern && result.is_object() {
        result["resultType"] = json!("complete");
    }
    let body = json!({ "jsonrpc": "2.0", "id": id, "result": result });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let n = bytes.len();
    let mut r = http::Response::new(super::body_of(http_body_util::Full::new(
        bytes::Bytes::from(bytes),
    )));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (r, n)
}

/// Why an upstream's tool list could not be had.
enum Fetch {
    Mcp(McpError),
    Refused,
}

/// Every tool an upstream lists, page after page (at most [`MAX_TOOLS`]).
async fn fetch_tools(up: &Upstream, x: &Exchange<'_>) -> Result<Vec<Json>, Fetch> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let a = up
            .request(x, "tools/list", params)
            .await
            .map_err(Fetch::Mcp)?;
        let page = a.message.get("result").ok_or(Fetch::Refused)?;
        out.extend(
            page.get("tools")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .cloned(),
        );
        cursor = page
            .get("nextCursor")
            .and_then(Json::as_str)
            .map(str::to_string);
        if cursor.is_none() || out.len() >= MAX_TOOLS {
            return Ok(out);
        }
    }
}

/// `tools/list`: every upstream's tools (every page), those the agent may use.
pub async fn list(mcp: &Hub, call: Call, target: McpList) -> Result<Reply, Refusal> {
    let snap = call
        .snapshot
        .clone()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    let base = call
        .request
        .clone()
        .ok_or_else(|| Refusal::internal("no request facts"))?;
    let tenant = call.ctx.tenant.clone();
    let mode = call.rt.mode_for(&tenant);
    let mut tools: Vec<Json> = Vec::new();
    for c in mcp_connectors(&snap, &tenant) {
        let up = mcp.upstream(&tenant, c)?;
        let hs = headers(&call, c)?;
        let x = Exchange {
            client: &call.rt.client,
            headers: &hs,
            timeout: timeout(&mcp.settings, c),
            max_bytes: mcp.settings.max_response(),
        };
        let listed = fetch_tools(&up, &x).await.map_err(|e| match e {
            Fetch::Mcp(e) => refusal_of(&c.id, e),
            Fetch::Refused => Refusal::new(
                Code::UpstreamError,
                format!("MCP server of connector `{}` refused tools/list", c.id),
            ),
        })?;
        mcp.remember(&tenant, &c.id, &listed);
        for t in listed {
            let Some(name) = t.get("name").and_then(Json::as_str) else {
                continue;
            };
            let Some((shown, tool)) = exposed(&snap, &tenant, &c.id, name) else {
                continue;
            };
            let mut req = base.clone();
            req.channel = Channel::Mcp;
            req.connector = Some(c.id.to_string());
            req.tool = Some(tool);
            if !crate::decide::visible(&snap, req, mode, call.ctx.at_ms, &call.ctx.decision_id) {
                continue;
            }
            let mut t = t.clone();
            // An McpTool's own description replaces the server's.
            if let Some(d) = snap
                .tenant(&tenant)
                .and_then(|ti| ti.tools.get(shown.as_str()))
                .and_then(|s| s.description.clone())
            {
                t["description"] = Json::String(d);
            }
            t["name"] = Json::String(shown);
            tools.push(t);
        }
    }
    let mut result = json!({ "tools": tools });
    if target.modern {
        // What an agent sees depends on its policies, which may change at any time: never
        // cached, and never shared.
        result["ttlMs"] = json!(0);
        result["cacheScope"] = json!("private");
    }
    let (reply, n) = rpc_reply(&target.rpc_id, result, target.modern);
    call.trace(|t| {
        t.rec.request = Some(base);
        t.rec.snapshot = Some(snap.hash().to_string());
        t.mode = Some(mode);
        t.rec.bytes_out = n as u64;
        t.rec.outcome = Some(Outcome::Allowed);
    });
    Ok(reply)
}

/// `tools/call`: allowed; sent, and its result judged whole before the agent sees it.
pub async fn tool_call(mcp: &Hub, mut call: Call, target: McpCall) -> Result<Reply, Refusal> {
    let decision = call
        .decision
        .take()
        .ok_or_else(|| Refusal::internal("no decision"))?;
    let snap = call
        .snapshot
        .clone()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    let r = &target.resolved;
    let c = snap
        .connector(&call.ctx.tenant, &r.connector)
        .filter(|c| c.spec.mcp.is_some())
        .ok_or_else(|| {
            Refusal::new(
                Code::UnknownTool,
                format!("no MCP connector for tool `{}`", r.tool),
            )
        })?
        .clone();
    let args_text = target.arguments.to_string();
    call.trace(|t| {
        t.rec.prompt_hash = Some(content_hash(args_text.as_bytes()));
        if decision.inspection.prompts {
            t.content.get_or_insert_with(Content::default).prompt = Some(args_text.clone());
        }
    });
    let up = mcp.upstream(&call.ctx.tenant, &c)?;
    let hs = headers(&call, &c)?;
    let x = Exchange {
        client: &call.rt.client,
        headers: &hs,
        timeout: timeout(&mcp.settings, &c),
        max_bytes: mcp.settings.max_response(),
    };
    // The arguments against the tool's own input schema, before anything is sent: a tool
    // error the model can correct (`isError`), carrying the code.
    let tools = mcp.tools_of(&call.ctx.tenant, &c, &up, &x).await?;
    let Some(def) = tools.get(&r.upstream) else {
        return Err(Refusal::new(
            Code::UnknownTool,
            format!("Unknown tool: {}", r.tool),
        ));
    };
    if let Some(validator) = def.validator() {
        let validator = validator.map_err(|e| {
            Refusal::new(
                Code::UpstreamError,
                format!("the input schema of tool `{}` cannot be used: {e}", r.tool),
            )
        })?;
        if let Err(e) = validator.validate(&target.arguments) {
            let at = e.instance_path().to_string();
            let refusal = Refusal::new(
                Code::InvalidParams,
                format!(
                    "invalid arguments for tool `{}`{}: {e}",
                    r.tool,
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!(" at {at}")
                    }
                ),
            );
            let result = json!({
                "content": [{ "type": "text", "text": refusal.message }],
                "isError": true,
                "_meta": {
                    "io.warden/code": Code::InvalidParams.as_str(),
                    "io.warden/decision_id": call.ctx.decision_id,
                }
            });
            let (reply, n) = rpc_reply(&target.rpc_id, result, target.modern);
            call.trace(|t| {
                t.rec.bytes_out = n as u64;
                t.rec.outcome = Some(Outcome::Refused);
                t.refused = Some(refusal);
            });
            return Ok(reply);
        }
    }
    let started = std::time::Instant::now();
    let answer = up
        .request(
            &x,
            "tools/call",
            json!({ "name": r.upstream, "arguments": target.arguments }),
        )
        .await;
    let took = started.elapsed();
    call.rt.metrics.upstream("mcp", took.as_secs_f64());
    let answer = answer.map_err(|e| refusal_of(&c.id, e))?;
    let revision = answer.revision.clone();
    call.trace(|t| {
        t.rec.mcp = Some(McpFacts {
            revision,
            is_error: false,
            upstream_us: took.as_micros() as u64,
        })
    });
    // A JSON-RPC error from the server is passed on as the server's (unknown tool and such).
    let result = match (answer.message.get("result"), answer.message.get("error")) {
        (Some(res), _) => res.clone(),
        (None, Some(err)) => {
            let msg = err.get("message").and_then(Json::as_str).unwrap_or("error");
            let code = if err.get("code").and_then(Json::as_i64) == Some(-32602) {
                Code::UnknownTool
            } else {
                Code::UpstreamError
            };
            return Err(Refusal::new(
                code,
                format!("MCP server of connector `{}`: {msg}", c.id),
            ));
        }
        _ => {
            return Err(Refusal::new(
                Code::UpstreamError,
                format!("MCP server of connector `{}` answered no result", c.id),
            ))
        }
    };
    // Detectors over the whole result: text content, structuredContent, embedded resources.
    let pii = crate::detect::json::kinds_by_field(&result);
    let secret = crate::detect::json::secret_kinds_by_field(&result);
    if pii != 0 || secret != 0 {
        let mut req = call
            .request
            .clone()
            .ok_or_else(|| Refusal::internal("no request facts"))?;
        req.facts.pii = Some(PiiFact::of_mask(pii));
        req.facts.secrets = Some(SecretFact::of_mask(secret));
        let guard = call.guard()?;
        if let Some(d) = guard.recheck(&call, req)? {
            return Err(super::withhold(
                &call,
                guard.enforce(&call, &d),
                "tool result",
            ));
        }
    }
    let result_text = result.to_string();
    let is_error = result.get("isError").and_then(Json::as_bool) == Some(true);
    let docs = doc_ids(&result);
    let (reply, n) = rpc_reply(&target.rpc_id, result, target.modern);
    super::judge_answer_bytes(&call, super::bytes_bounded(&decision), n as u64)?;
    call.trace(|t| {
        if let Some(m) = t.rec.mcp.as_mut() {
            m.is_error = is_error;
        }
        t.rec.doc_ids = docs;
        t.rec.bytes_out = n as u64;
        t.rec.response_hash = Some(content_hash(result_text.as_bytes()));
        if decision.inspection.responses {
            t.content.get_or_insert_with(Content::default).response = Some(result_text);
        }
    });
    Ok(reply)
}

/// The resources a tool result names (`resource_link` blocks and embedded `resource`s), by
/// URI, at most [`MAX_DOC_IDS`].
pub fn doc_ids(result: &Json) -> Vec<String> {
    result
        .get("content")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| match b.get("type").and_then(Json::as_str) {
            Some("resource_link") => b.get("uri"),
            Some("resource") => b.pointer("/resource/uri"),
            _ => None,
        })
        .filter_map(Json::as_str)
        .take(MAX_DOC_IDS)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
