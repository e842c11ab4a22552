//! The agent port's gRPC front end: `warden.v1.Mediation` (proto/warden/v1/mediation.proto,
//! docs/grpc.md), on the same port as HTTP (a request with `content-type: application/grpc`).
//!
//! There is no second enforcement path: each RPC is read into the request its HTTP route would
//! receive (`POST /v1/chat/completions`, `/http/{connector}/…`, `POST /sql/{template}`, a
//! `tools/call` on `/mcp`) and handed to the spine through [`Agent::dispatch`] — the same
//! identity, policies, budgets, detectors and evidence. Only the wire differs: the answer is read
//! back into the RPC's reply, and a refusal becomes a gRPC status (its code from the one table)
//! with a `google.rpc.Status` / `google.rpc.ErrorInfo` in its details and the code, decision id
//! and policy id in its trailers.
//!
//! Before tonic decodes anything, the message is read here (at most `limits.max_request_bytes`)
//! and checked: an unknown method, an oversized or compressed message and a malformed protobuf
//! are refused through the spine too, so each leaves its evidence record.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::Stream;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost::Message;
use serde_json::{json, Value};
use tonic::{Request, Response, Status};
use tower::ServiceExt;

use super::agent::{Agent, Dispatched};
use crate::codes::Code;
use crate::proto as pb;
use crate::spine::{Ctx, Refusal, Reply};

/// The RPCs of `warden.v1.Mediation`.
const METHODS: [&str; 6] = [
    "ChatCompletion",
    "StreamChatCompletion",
    "HttpCall",
    "SqlQuery",
    "McpToolCall",
    "Access",
];

const SERVICE: &str = "/warden.v1.Mediation/";

/// The `ErrorInfo` domain of Warden's refusals.
pub const DOMAIN: &str = "warden.dev";

// google.rpc.Status and google.rpc.ErrorInfo, written out (wire-compatible with
// google/rpc/status.proto and google/rpc/error_details.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<RpcAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub domain: String,
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

/// A refusal as a gRPC status: the code's status, its message, the details and trailers.
pub fn status_of(r: &Refusal, ctx: &Ctx) -> Status {
    let g = super::render::grpc_status(r, &ctx.decision_id);
    let mut meta = HashMap::new();
    meta.insert("decision_id".to_string(), ctx.decision_id.clone());
    if let Some(p) = &r.policy_id {
        meta.insert("policy_id".to_string(), p.clone());
    }
    if let Some(a) = &r.approval_id {
        meta.insert("approval_id".to_string(), a.clone());
    }
    let info = ErrorInfo {
        reason: r.code.as_str().to_string(),
        domain: DOMAIN.to_string(),
        metadata: meta,
    };
    let details = RpcStatus {
        code: g.status,
        message: g.message.clone(),
        details: vec![RpcAny {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    let mut s = Status::with_details(
        tonic::Code::from(g.status),
        g.message,
        Bytes::from(details.encode_to_vec()),
    );
    for (k, v) in g.metadata {
        if let Ok(v) = v.parse() {
            s.metadata_mut().insert(k, v);
        }
    }
    if let Some(a) = r.approval_id.as_deref().and_then(|a| a.parse().ok()) {
        s.metadata_mut().insert("x-warden-approval-id", a);
    }
    if let Ok(v) = ctx.run_id.parse() {
        s.metadata_mut().insert("x-warden-run-id", v);
    }
    s
}

/// The identity and tracing metadata a gRPC call may carry, copied onto the request its HTTP
/// route would see.
const CARRIED: [&str; 6] = [
    "x-warden-run-id",
    "x-warden-step-id",
    "x-warden-session-id",
    "x-warden-actor",
    "x-warden-api-key",
    "authorization",
];

fn head(
    method: http::Method,
    uri: &str,
    meta: &http::HeaderMap,
    extra: &[(&str, String)],
) -> Result<http::request::Parts, Refusal> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(http::Version::HTTP_2);
    for name in CARRIED {
        for v in meta.get_all(name) {
            b = b.header(name, v);
        }
    }
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(())
        .map(|r| r.into_parts().0)
        .map_err(|e| Refusal::new(Code::BadRequest, format!("cannot form the call: {e}")))
}

/// A buffered request body for the spine.
pub(crate) fn body(bytes: impl Into<Bytes>) -> crate::spine::InBody {
    Full::new(bytes.into())
        .map_err(|never| -> crate::spine::BoxError { match never {} })
        .boxed()
}

/// A call refused before it could be formed (a missing field, a malformed message): through the
/// spine all the same, so it is recorded.
async fn refuse(agent: Agent, meta: &http::HeaderMap, r: Refusal) -> Status {
    let parts = match head(http::Method::POST, "/grpc", meta, &[]) {
        Ok(p) => p,
        Err(_) => match head(http::Method::POST, "/grpc", &http::HeaderMap::new(), &[]) {
            Ok(p) => p,
            Err(e) => return Status::internal(e.message),
        },
    };
    let d = agent
        .dispatch(parts, body(Bytes::new()), Some(r), None)
        .await;
    match d.result {
        Err(r) => status_of(&r, &d.ctx),
        Ok(_) => Status::internal("a refused call was answered"),
    }
}

/// How long the caller waits (`grpc-timeout`), if it said.
pub fn deadline(meta: &http::HeaderMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A dispatched call's answer read whole (its status and bytes), or its refusal as a status.
async fn whole(
    d: Dispatched,
) -> Result<(u16, http::HeaderMap, Bytes, std::sync::Arc<Ctx>), Status> {
    let reply = match d.result {
        Ok(r) => r,
        Err(r) => return Err(status_of(&r, &d.ctx)),
    };
    let (parts, b) = reply.into_parts();
    let bytes = b
        .collect()
        .await
        .map_err(|e| Status::unavailable(format!("reading the answer failed: {e}")))?
        .to_bytes();
    Ok((parts.status.as_u16(), parts.headers, bytes, d.ctx))
}

fn ids<T>(mut resp: Response<T>, ctx: &Ctx) -> Response<T> {
    for (k, v) in [
        ("x-warden-decision-id", &ctx.decision_id),
        ("x-warden-run-id", &ctx.run_id),
        ("x-warden-evidence-id", &ctx.evidence_id),
    ] {
        if let Ok(v) = v.parse() {
            resp.metadata_mut().insert(k, v);
        }
    }
    resp
}

fn json_of(bytes: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::internal(format!("the route's answer is not JSON: {e}")))
}

fn usage_of(v: &Value) -> Option<pb::Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(pb::Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        total_tokens: n("total_tokens"),
    })
}

/// The chat-completion JSON of a `ChatRequest`.
fn chat_json(r: &pb::ChatRequest, stream: bool) -> Result<Value, Refusal> {
    if r.model.is_empty() {
        return Err(Refusal::new(Code::InvalidParams, "`model` is required"));
    }
    if r.messages.is_empty() {
        return Err(Refusal::new(Code::InvalidParams, "`messages` is required"));
    }
    let mut v = if r.extra_json.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(&r.extra_json) {
            Ok(Value::Object(m)) => Value::Object(m),
            _ => {
                return Err(Refusal::new(
                    Code::InvalidParams,
                    "`extra_json` must be a JSON object",
                ))
            }
        }
    };
    v["model"] = r.model.clone().into();
    v["messages"] = r
        .messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    if let Some(n) = r.max_tokens {
        v["max_tokens"] = n.into();
    }
    if let Some(t) = r.temperature {
        v["temperature"] = t.into();
    }
    v["stream"] = stream.into();
    if stream {
        v["stream_options"] = json!({ "include_usage": true });
    }
    Ok(v)
}

fn chat_reply(v: &Value, raw: &Bytes) -> pb::ChatReply {
    let choice = &v["choices"][0];
    pb::ChatReply {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        content: choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        usage: usage_of(v),
        json: String::from_utf8_lossy(raw).into_owned(),
    }
}

/// A refusal carried as the last event of a stream (`{"error": {…}}`), as a status.
fn stream_status(err: &Value, ctx: &Ctx) -> Status {
    let code = err["code"]
        .as_str()
        .and_then(Code::parse)
        .unwrap_or(Code::InternalError);
    let mut r = Refusal::new(code, err["message"].as_str().unwrap_or_default());
    if let Some(p) = err["policy_id"].as_str() {
        r = r.by_policy(Some(p));
    }
    status_of(&r, ctx)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChatChunk, Status>> + Send>>;

/// The agent port's service for a tonic service, which must be `Sync` (the agent's is `Send`
/// only): each call takes its own clone out of the mutex.
pub struct SyncAgent(std::sync::Mutex<Agent>);

impl SyncAgent {
    pub fn new(agent: Agent) -> Self {
        SyncAgent(std::sync::Mutex::new(agent))
    }

    pub fn get(&self) -> Agent {
        match self.0.lock() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The `warden.v1.Mediation` service.
pub struct Mediation {
    agent: SyncAgent,
}

impl Mediation {
    pub fn new(agent: Agent) -> Self {
        Mediation {
            agent: SyncAgent::new(agent),
        }
    }

    fn agent(&self) -> Agent {
        self.agent.get()
    }
}

/// A tonic body as the agent port's body type (which must be `Sync`; tonic's is not): its
/// frames, trailers included, relayed through a channel.
fn relay(b: tonic::body::Body) -> crate::spine::Body {
    use http_body::Body as _;
    if b.is_end_stream() {
        // A trailers-only answer (a refusal): the status rides in the headers, which must end
        // the stream themselves (grpcio refuses an empty DATA frame after them).
        return Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(8);
    tokio::spawn(async move {
        let mut b = b;
        while let Some(f) = b.frame().await {
            let f = f.map_err(|s| std::io::Error::other(s.to_string()));
            let end = f.is_err();
            if tx.send(f).await.is_err() || end {
                break;
            }
        }
    });
    http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
}

impl Mediation {
    /// Run `parts` + `payload` through the spine within the caller's deadline.
    async fn run(
        &self,
        meta: &http::HeaderMap,
        parts: Result<http::request::Parts, Refusal>,
        payload: Bytes,
    ) -> Result<Dispatched, Status> {
        let parts = match parts {
            Ok(p) => p,
            Err(r) => return Err(refuse(self.agent(), meta, r).await),
        };
        Ok(self
            .agent()
            .dispatch(parts, body(payload), None, deadline(meta))
            .await)
    }

    async fn chat(
        &self,
        meta: &http::HeaderMap,
        r: &pb::ChatRequest,
    ) -> Result<(Value, Bytes, std::sync::Arc<Ctx>), Status> {
        let v = match chat_json(r, false) {
            Ok(v) => v,
            Err(e) => return Err(refuse(self.agent(), meta, e).await),
        };
        let parts = head(
            http::Method::POST,
            "/v1/chat/completions",
            meta,
            &[("content-type", "application/json".into())],
        );
        let d = self.run(meta, parts, Bytes::from(v.to_string())).await?;
        let (_, _, bytes, ctx) = whole(d).await?;
        Ok((json_of(&bytes)?, bytes, ctx))
    }

    async fn http(
        &self,
        meta: &http::HeaderMap,
        connector: &str,
        method: &str,
        path: &str,
        headers: &HashMap<String, String>,
        payload: Bytes,
    ) -> Result<(pb::HttpReply, std::sync::Arc<Ctx>), Status> {
        if connector.is_empty() {
            return Err(refuse(
                self.agent(),
                meta,
                Refusal::new(Code::InvalidParams, "`connector` is required"),
            )
            .await);
        }
        let method = if method.is_empty() { "GET" } else { method };
        let Ok(m) = http::Method::from_bytes(method.as_bytes()) else {
            return Err(refuse(
                self.agent(),
                meta,
                Refusal::new(
                    Code::InvalidParams,
                    format!("`{method}` is not an HTTP method"),
                ),
            )
            .await);
        };
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let extra: Vec<(&str, String)> = headers
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                !CARRIED.contains(&k.as_str()) && k != "host" && k != "content-length"
            })
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let parts = head(m, &format!("/http/{connector}{path}"), meta, &extra);
        let d = self.run(meta, parts, payload).await?;
        let (status, hdrs, bytes, ctx) = whole(d).await?;
        let headers = hdrs
            .iter()
            .filter(|(k, _)| !k.as_str().starts_with("x-warden-"))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Ok((
            pb::HttpReply {
                status: status.into(),
                headers,
                body: bytes.to_vec(),
            },
            ctx,
        ))
    }

    async fn sql(
        &self,
        meta: &http::HeaderMap,
        template: &str,
        params: Bytes,
    ) -> Result<(pb::SqlReply, std::sync::Arc<Ctx>), Status> {
        if template.is_empty() {
            return Err(refuse(
                self.agent(),
                meta,
                Refusal::new(Code::InvalidParams, "`template` is required"),
            )
            .await);
        }
        let params = if params.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            params
        };
        let parts = head(
            http::Method::POST,
            &format!("/sql/{template}"),
            meta,
            &[("content-type", "application/json".into())],
        );
        let d = self.run(meta, parts, params).await?;
        let (_, _, bytes, ctx) = whole(d).await?;
        let v = json_of(&bytes)?;
        Ok((
            pb::SqlReply {
                rows: v["rows"].as_array().map_or(0, |r| r.len() as u64),
                truncated: v["truncated"].as_bool().unwrap_or(false),
                json: String::from_utf8_lossy(&bytes).into_owned(),
            },
            ctx,
        ))
    }

    async fn mcp(
        &self,
        meta: &http::HeaderMap,
        tool: &str,
        arguments: &[u8],
    ) -> Result<(pb::McpReply, std::sync::Arc<Ctx>), Status> {
        if tool.is_empty() {
            return Err(refuse(
                self.agent(),
                meta,
                Refusal::new(Code::InvalidParams, "`tool` is required"),
            )
            .await);
        }
        let args: Value = if arguments.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(arguments) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(refuse(
                        self.agent(),
                        meta,
                        Refusal::new(Code::InvalidParams, "the arguments must be a JSON object"),
                    )
                    .await)
                }
            }
        };
        let rpc = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": tool, "arguments": args },
        });
        let parts = head(
            http::Method::POST,
            "/mcp",
            meta,
            &[
                ("content-type", "application/json".into()),
                ("accept", "application/json, text/event-stream".into()),
                ("mcp-protocol-version", "2025-11-25".into()),
            ],
        );
        let mut d = self.run(meta, parts, Bytes::from(rpc.to_string())).await?;
        // A tool the agent may not see is unknown, as on /mcp.
        if let Err(r) = &d.result {
            d.result = Err(super::mcp::visible(r));
        }
        let (_, _, bytes, ctx) = whole(d).await?;
        let v = json_of(&bytes)?;
        if let Some(err) = v.get("error") {
            // A JSON-RPC error the MCP front end answered without a refusal (none is expected for
            // tools/call; kept whole rather than lost).
            return Err(Status::internal(format!("MCP error: {err}")));
        }
        let result = v.get("result").cloned().unwrap_or(Value::Null);
        Ok((
            pb::McpReply {
                is_error: result["isError"].as_bool().unwrap_or(false),
                result_json: result.to_string(),
            },
            ctx,
        ))
    }
}

#[tonic::async_trait]
impl pb::mediation_server::Mediation for Mediation {
    async fn chat_completion(
        &self,
        req: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatReply>, Status> {
        let meta = req.metadata().clone().into_headers();
        let (v, raw, ctx) = self.chat(&meta, req.get_ref()).await?;
        Ok(ids(Response::new(chat_reply(&v, &raw)), &ctx))
    }

    type StreamChatCompletionStream = ChunkStream;

    async fn stream_chat_completion(
        &self,
        req: Request<pb::ChatRequest>,
    ) -> Result<Response<Self::StreamChatCompletionStream>, Status> {
        let meta = req.metadata().clone().into_headers();
        let v = match chat_json(req.get_ref(), true) {
            Ok(v) => v,
            Err(e) => return Err(refuse(self.agent(), &meta, e).await),
        };
        let parts = head(
            http::Method::POST,
            "/v1/chat/completions",
            &meta,
            &[("content-type", "application/json".into())],
        );
        let d = self.run(&meta, parts, Bytes::from(v.to_string())).await?;
        let ctx = d.ctx.clone();
        let reply = match d.result {
            Ok(r) => r,
            Err(r) => return Err(status_of(&r, &ctx)),
        };
        let permit = d.permit;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ChatChunk, Status>>(16);
        let cctx = ctx.clone();
        // The caller's deadline bounds the whole stream, not only its first answer.
        let until = deadline(&meta).map(|d| tokio::time::Instant::now() + d);
        tokio::spawn(async move {
            let _place = permit;
            let mut b = reply.into_body();
            let mut buf = String::new();
            loop {
                let next = match until {
                    None => b.frame().await,
                    Some(t) => match tokio::time::timeout_at(t, b.frame()).await {
                        Ok(f) => f,
                        Err(_) => {
                            let r = Refusal::new(
                                Code::RequestTimeout,
                                "the caller's deadline passed mid-stream",
                            );
                            let _ = tx.send(Err(status_of(&r, &cctx))).await;
                            return;
                        }
                    },
                };
                let Some(frame) = next else { break };
                let Ok(frame) = frame else {
                    let _ = tx.send(Err(Status::unavailable("the stream broke"))).await;
                    return;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(&data));
                while let Some(i) = buf.find("\n\n") {
                    let ev: String = buf.drain(..i + 2).collect();
                    let Some(data) = ev.trim().strip_prefix("data:").map(str::trim) else {
                        continue;
                    };
                    if data == "[DONE]" {
                        return;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    let item = if let Some(err) = v.get("error") {
                        Err(stream_status(err, &cctx))
                    } else {
                        let c = &v["choices"][0];
                        Ok(pb::ChatChunk {
                            content: c["delta"]["content"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            finish_reason: c["finish_reason"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            usage: usage_of(&v),
                        })
                    };
                    let end = item.is_err();
                    if tx.send(item).await.is_err() || end {
                        // The caller went away (the call still runs to its record), or the
                        // stream was cut and its status sent.
                        return;
                    }
                }
            }
        });
        let stream: ChunkStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(ids(Response::new(stream), &ctx))
    }

    async fn http_call(
        &self,
        req: Request<pb::HttpRequest>,
    ) -> Result<Response<pb::HttpReply>, Status> {
        let meta = req.metadata().clone().into_headers();
        let r = req.into_inner();
        let (reply, ctx) = self
            .http(
                &meta,
                &r.connector,
                &r.method,
                &r.path,
                &r.headers,
                Bytes::from(r.body),
            )
            .await?;
        Ok(ids(Response::new(reply), &ctx))
    }

    async fn sql_query(
        &self,
        req: Request<pb::SqlRequest>,
    ) -> Result<Response<pb::SqlReply>, Status> {
        let meta = req.metadata().clone().into_headers();
        let r = req.into_inner();
        let (reply, ctx) = self
            .sql(&meta, &r.template, Bytes::from(r.params_json))
            .await?;
        Ok(ids(Response::new(reply), &ctx))
    }

    async fn mcp_tool_call(
        &self,
        req: Request<pb::McpRequest>,
    ) -> Result<Response<pb::McpReply>, Status> {
        let meta = req.metadata().clone().into_headers();
        let r = req.into_inner();
        let (reply, ctx) = self
            .mcp(&meta, &r.tool, r.arguments_json.as_bytes())
            .await?;
        Ok(ids(Response::new(reply), &ctx))
    }

    async fn access(
        &self,
        req: Request<pb::AccessRequest>,
    ) -> Result<Response<pb::AccessReply>, Status> {
        let meta = req.metadata().clone().into_headers();
        let r = req.into_inner();
        let channel = match self.access_channel(&r) {
            Ok(c) => c,
            Err(e) => return Err(refuse(self.agent(), &meta, e).await),
        };
        let payload = Bytes::from(r.payload);
        let (status, bytes, ctx) = match channel {
            "llm" => {
                let parts = head(
                    http::Method::POST,
                    "/v1/chat/completions",
                    &meta,
                    &[("content-type", "application/json".into())],
                );
                let d = self.run(&meta, parts, payload).await?;
                let (s, _, b, ctx) = whole(d).await?;
                (s, b.to_vec(), ctx)
            }
            "http" => {
                let (method, path) = r
                    .action
                    .split_once(' ')
                    .unwrap_or(("GET", r.action.as_str()));
                let (reply, ctx) = self
                    .http(
                        &meta,
                        &r.connector,
                        method,
                        path.trim(),
                        &HashMap::new(),
                        payload,
                    )
                    .await?;
                (reply.status as u16, reply.body, ctx)
            }
            "sql" => {
                let (reply, ctx) = self.sql(&meta, &r.action, payload).await?;
                (200, reply.json.into_bytes(), ctx)
            }
            _ => {
                let (reply, ctx) = self.mcp(&meta, &r.action, &payload).await?;
                (200, reply.result_json.into_bytes(), ctx)
            }
        };
        Ok(ids(
            Response::new(pb::AccessReply {
                channel: channel.into(),
                status: status.into(),
                payload: bytes,
            }),
            &ctx,
        ))
    }
}

impl Mediation {
    /// The channel `Access` names, after checking the connector, its plane and that the action
    /// belongs to it. A connector another tenant owns is refused the way its route refuses it
    /// (`cross_tenant`, audited), by letting the route see it.
    fn access_channel(&self, r: &pb::AccessRequest) -> Result<&'static str, Refusal> {
        let agent = self.agent();
        let Some(snap) = agent.rt.snapshot() else {
            return Err(Refusal::new(
                Code::NotReady,
                "no verified policy snapshot yet; refusing all traffic",
            ));
        };
        if r.connector.is_empty() || r.action.is_empty() {
            return Err(Refusal::new(
                Code::InvalidParams,
                "`connector` and `action` are required",
            ));
        }
        let tenant = &agent.who.tenant;
        let Some(c) = snap.connector(tenant, &r.connector) else {
            // Another tenant's connector fails hard (and is recorded), as on `/http/…`.
            if snap
                .connector_owner_elsewhere(tenant, &r.connector)
                .is_some()
            {
                return Err(Refusal::new(
                    Code::CrossTenant,
                    format!("connector `{}` belongs to another tenant", r.connector),
                ));
            }
            return Err(Refusal::new(
                Code::UnknownConnector,
                format!("no connector `{}`", r.connector),
            ));
        };
        if !r.plane.is_empty() && *c.plane != *r.plane {
            return Err(Refusal::new(
                Code::InvalidParams,
                format!(
                    "connector `{}` is in plane `{}`, not `{}`",
                    r.connector, c.plane, r.plane
                ),
            ));
        }
        use crate::policy::model::Channel;
        match c.spec.kind {
            Channel::Llm => {
                if r.action != "chat" {
                    return Err(Refusal::new(
                        Code::InvalidParams,
                        "the action on an llm connector is `chat`",
                    ));
                }
                let model = serde_json::from_slice::<Value>(&r.payload)
                    .ok()
                    .and_then(|v| v["model"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let serves = c
                    .spec
                    .llm
                    .as_ref()
                    .is_some_and(|l| l.models.contains_key(&model));
                if !serves {
                    return Err(Refusal::new(
                        Code::InvalidParams,
                        format!("connector `{}` does not serve model `{model}`", r.connector),
                    ));
                }
                Ok("llm")
            }
            Channel::Http => Ok("http"),
            Channel::Sql => match snap.template(tenant, &r.action) {
                Some(t) if t.spec.connector == r.connector => Ok("sql"),
                Some(_) => Err(Refusal::new(
                    Code::InvalidParams,
                    format!(
                        "template `{}` does not run on connector `{}`",
                        r.action, r.connector
                    ),
                )),
                // The route refuses an unknown (or another tenant's) template as it always does.
                None => Ok("sql"),
            },
            Channel::Mcp => match crate::connectors::mcp::resolve(&snap, tenant, &r.action) {
                Some(t) if t.connector == r.connector => Ok("mcp"),
                Some(_) => Err(Refusal::new(
                    Code::InvalidParams,
                    format!(
                        "tool `{}` is not a tool of connector `{}`",
                        r.action, r.connector
                    ),
                )),
                None => Ok("mcp"),
            },
        }
    }
}

/// Read one gRPC message from `body` (at most `max` bytes): the frame checked, the bytes
/// returned whole for tonic to decode again.
async fn read_message(body: Incoming, max: usize) -> Result<Bytes, Refusal> {
    let limited = http_body_util::Limited::new(body, max.saturating_add(5));
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::new(
                Code::BodyTooLarge,
                format!("the message is larger than {max} bytes (limits.max_request_bytes)"),
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                Code::BadRequest,
                format!("cannot read the message: {e}"),
            ))
        }
    };
    let mut b = bytes.clone();
    if b.remaining() < 5 {
        return Err(Refusal::new(
            Code::BadRequest,
            "a gRPC message needs its 5-byte prefix",
        ));
    }
    let compressed = b.get_u8();
    let len = b.get_u32() as usize;
    if compressed != 0 {
        return Err(Refusal::new(
            Code::BadRequest,
            "compressed messages are not accepted (send identity encoding)",
        ));
    }
    if len != b.remaining() {
        return Err(Refusal::new(
            Code::BadRequest,
            "exactly one message is expected, whole (its length prefix does not match the body)",
        ));
    }
    Ok(bytes)
}

/// Envoy's `Check` (front/ext_authz.rs), its message read and checked here like any other.
async fn serve_check(agent: Agent, req: http::Request<Incoming>) -> Reply {
    let (parts, incoming) = req.into_parts();
    let meta = parts.headers.clone();
    let checked = match read_message(incoming, agent.max_message).await {
        Err(r) => Err(r),
        Ok(bytes) => match envoy_types::ext_authz::v3::pb::CheckRequest::decode(&bytes[5..]) {
            Ok(_) => Ok(bytes),
            Err(e) => Err(Refusal::new(
                Code::BadRequest,
                format!("the Check message is not a valid protobuf: {e}"),
            )),
        },
    };
    let bytes = match checked {
        Ok(b) => b,
        Err(r) => return refuse(agent, &meta, r).await.into_http().map(relay),
    };
    let server = envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
        super::ext_authz::ExtAuthz::new(agent),
    )
    .max_decoding_message_size(usize::MAX);
    let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)));
    match server.oneshot(req).await {
        Ok(resp) => resp.map(relay),
        Err(never) => match never {},
    }
}

fn decodes(method: &str, msg: &[u8]) -> Result<(), prost::DecodeError> {
    match method {
        "ChatCompletion" | "StreamChatCompletion" => pb::ChatRequest::decode(msg).map(drop),
        "HttpCall" => pb::HttpRequest::decode(msg).map(drop),
        "SqlQuery" => pb::SqlRequest::decode(msg).map(drop),
        "McpToolCall" => pb::McpRequest::decode(msg).map(drop),
        _ => pb::AccessRequest::decode(msg).map(drop),
    }
}

/// Answer a gRPC request of the agent port.
pub async fn serve(agent: Agent, req: http::Request<Incoming>) -> Reply {
    if req.uri().path() == super::ext_authz::CHECK {
        return serve_check(agent, req).await;
    }
    let (parts, incoming) = req.into_parts();
    let method = parts
        .uri
        .path()
        .strip_prefix(SERVICE)
        .filter(|m| METHODS.contains(m))
        .map(str::to_string);
    let meta = parts.headers.clone();
    let checked = match method {
        None => Err(Refusal::new(
            Code::UnknownRoute,
            format!(
                "no gRPC method {} on this port (warden.v1.Mediation: {})",
                parts.uri.path(),
                METHODS.join(", ")
            ),
        )),
        Some(m) => match read_message(incoming, agent.max_message).await {
            Err(r) => Err(r),
            Ok(bytes) => match decodes(&m, &bytes[5..]) {
                Ok(()) => Ok(bytes),
                Err(e) => Err(Refusal::new(
                    Code::BadRequest,
                    format!("the {m} message is not a valid protobuf: {e}"),
                )),
            },
        },
    };
    let bytes = match checked {
        Ok(b) => b,
        Err(r) => {
            let status = refuse(agent.clone(), &meta, r).await;
            return status.into_http().map(relay);
        }
    };
    let server = pb::mediation_server::MediationServer::new(Mediation::new(agent))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(64 << 20);
    let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)));
    match server.oneshot(req).await {
        Ok(resp) => resp.map(relay),
        Err(never) => match never {},
    }
}
