//! A client of one upstream MCP server over streamable HTTP, speaking whichever revision the
//! server does (`docs/mcp.md`).
//!
//! The first request finds out, as the specification asks of a client that speaks both eras:
//! it sends `server/discover` the stateless way (2026-07-28). A server that answers it is
//! spoken to statelessly from then on — every request carries its revision in `_meta` and in
//! `MCP-Protocol-Version`, its method in `Mcp-Method`, a tool call's name in `Mcp-Name`. Any
//! other answer means the session era: `initialize` (offering 2025-11-25, accepting 2025-06-18),
//! `notifications/initialized`, then every request with the `Mcp-Session-Id` and revision it
//! got. A session the server has forgotten (404) is opened again once, and the request resent.
//!
//! Answers are read whole — JSON, or a per-request SSE stream up to the response whose id is
//! the request's — within the caller's time-out and size cap. The credentials the connector
//! injects travel as headers given by the caller; nothing here logs them.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

use crate::connectors::body_of;
use crate::spine::state::UpstreamClient;

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// The session revisions, the one offered first.
pub const LEGACY: [&str; 2] = ["2025-11-25", "2025-06-18"];
/// The `_meta` key of a stateless request's revision.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Which revision an upstream was found to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Era {
    Unknown,
    Modern,
    Legacy {
        version: String,
        session: Option<String>,
    },
}

/// Why a request to an upstream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("the connection closed before the answer was whole: {0}")]
    Died(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("not an MCP answer: {0}")]
    Protocol(String),
}

/// One answer: the JSON-RPC response (a `result` or an `error`), the revision it was spoken
/// in, and its size on the wire (the body as read: JSON, or the whole SSE stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub message: Value,
    pub revision: String,
    pub bytes: usize,
}

/// What one exchange may use: the HTTP client, the connector's injected headers, the time-out
/// for the whole exchange (discovery included), and the answer's size cap.
pub struct Exchange<'a> {
    pub client: &'a UpstreamClient,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// One upstream MCP server, shared by every call to it.
#[derive(Debug)]
pub struct Upstream {
    url: http::Uri,
    era: Mutex<Era>,
}

/// A header value as the stateless revision sends one that is not plain visible ASCII:
/// `=?base64?…?=`.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    use base64::Engine as _;
    let plain = !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b));
    if plain && !text.starts_with("=?base64?") {
        return HeaderValue::from_str(text).ok();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    HeaderValue::from_str(&format!("=?base64?{b64}?=")).ok()
}

impl Upstream {
    pub fn new(url: &str) -> Result<Upstream, McpError> {
        let url: http::Uri = url
            .parse()
            .map_err(|_| McpError::Protocol("the connector's URL does not parse".into()))?;
        Ok(Upstream {
            url,
            era: Mutex::new(Era::Unknown),
        })
    }

    fn era(&self) -> Era {
        self.era.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_era(&self, era: Era) {
        *self.era.lock().unwrap_or_else(|e| e.into_inner()) = era;
    }

    /// The revision spoken, once known.
    pub fn revision(&self) -> Option<String> {
        match self.era() {
            Era::Unknown => None,
            Era::Modern => Some(MODERN.into()),
            Era::Legacy { version, .. } => Some(version),
        }
    }

    /// Send the request `method` with `params` and read its answer, all within the exchange's
    /// time-out.
    pub async fn request(
        &self,
        x: &Exchange<'_>,
        method: &str,
        params: Value,
    ) -> Result<Answer, McpError> {
        let ms = x.timeout.as_millis() as u64;
        tokio::time::timeout(x.timeout, self.request_inner(x, method, params))
            .await
            .unwrap_or(Err(McpError::Timeout(ms)))
    }

    async fn request_inner(
        &self,
        x: &Exchange<'_>,
        method: &str,
        params: Value,
    ) -> Result<Answer, McpError> {
        if self.era() == Era::Unknown {
            let era = self.discover(x).await?;
            self.set_era(era);
        }
        match self.era() {
            Era::Modern => self.modern(x, method, params).await,
            Era::Legacy { version, session } => {
                match self
                    .legacy(x, &version, session.as_deref(), method, params.clone())
                    .await
                {
                    // The server forgot the session (restarted, expired): open another, once.
                    Err(Resend) => {
                        let era = self.initialize(x).await?;
                        self.set_era(era.clone());
                        let Era::Legacy { version, session } = era else {
                            return Err(McpError::Protocol("lost the session era".into()));
                        };
                        self.legacy(x, &version, session.as_deref(), method, params)
                            .await
                            .map_err(|e| match e {
                                Resend => McpError::Protocol(
                                    "the server forgot a session it had just opened".into(),
                                ),
                                Failed(e) => e,
                            })
                    }
                    Err(Failed(e)) => Err(e),
                    Ok(a) => Ok(a),
                }
            }
            Era::Unknown => Err(McpError::Protocol("the revision is unknown".into())),
        }
    }

    /// Find the revision: `server/discover` the stateless way, else the session handshake.
    async fn discover(&self, x: &Exchange<'_>) -> Result<Era, McpError> {
        let body = modern_body(0, "server/discover", json!({}));
        let speaks_modern = match self
            .post(x, modern_headers("server/discover", None), body, 0)
            .await
        {
            Ok((status, msg, _)) => {
                status == StatusCode::OK
                    && msg
                        .pointer("/result/supportedVersions")
                        .and_then(Value::as_array)
                        .is_some_and(|v| v.iter().any(|s| s == MODERN))
            }
            // Whatever a session-era server says to a stateless request (a 400 in plain text,
            // a JSON-RPC error) means: not this revision.
            Err(McpError::Protocol(_)) => false,
            Err(e) => return Err(e),
        };
        if speaks_modern {
            return Ok(Era::Modern);
        }
        self.initialize(x).await
    }

    /// The session handshake: `initialize`, then `notifications/initialized`.
    async fn initialize(&self, x: &Exchange<'_>) -> Result<Era, McpError> {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": LEGACY[0],
                "capabilities": {},
                "clientInfo": { "name": "warden", "version": env!("CARGO_PKG_VERSION") }
            }
        });
        let (status, msg, session) = self.post_keep_session(x, Vec::new(), body, 0).await?;
        let version = msg
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .filter(|v| LEGACY.contains(v))
            .ok_or_else(|| {
                McpError::Protocol(format!(
                    "initialize answered {status} without a revision Warden speaks"
                ))
            })?
            .to_string();
        let mut headers = vec![(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_str(&version)
                .map_err(|_| McpError::Protocol("bad revision".into()))?,
        )];
        if let Some(s) = &session {
            headers.push((
                HeaderName::from_static("mcp-session-id"),
                HeaderValue::from_str(s)
                    .map_err(|_| McpError::Protocol("bad Mcp-Session-Id".into()))?,
            ));
        }
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.send(x, headers, note).await?;
        Ok(Era::Legacy { version, session })
    }

    async fn modern(
        &self,
        x: &Exchange<'_>,
        method: &str,
        params: Value,
    ) -> Result<Answer, McpError> {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .filter(|_| method == "tools/call")
            .map(str::to_string);
        let id = 1;
        let body = modern_body(id, method, params);
        let headers = modern_headers(method, name.as_deref());
        let (_, message, bytes) = self.post(x, headers, body, id).await?;
        Ok(Answer {
            message,
            revision: MODERN.into(),
            bytes,
        })
    }

    async fn legacy(
        &self,
        x: &Exchange<'_>,
        version: &str,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Answer, LegacyError> {
        let mut headers = vec![(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_str(version)
                .map_err(|_| Failed(McpError::Protocol("bad revision".into())))?,
        )];
        if let Some(s) = session {
            headers.push((
                HeaderName::from_static("mcp-session-id"),
                HeaderValue::from_str(s)
                    .map_err(|_| Failed(McpError::Protocol("bad Mcp-Session-Id".into())))?,
            ));
        }
        let id = 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let (status, message, bytes) = self.post(x, headers, body, id).await.map_err(Failed)?;
        if status == StatusCode::NOT_FOUND && session.is_some() {
            return Err(Resend);
        }
        Ok(Answer {
            message,
            revision: version.to_string(),
            bytes,
        })
    }

    /// POST a message that expects no answer (a notification): 202, or any 2xx.
    async fn send(
        &self,
        x: &Exchange<'_>,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Value,
    ) -> Result<(), McpError> {
        let resp = self.exchange(x, headers, body).await?;
        let status = resp.status();
        // Drain the body so the connection can be reused.
        let _ = Limited::new(resp.into_body(), x.max_bytes).collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(McpError::Protocol(format!(
                "a notification was answered {status}"
            )))
        }
    }

    async fn post(
        &self,
        x: &Exchange<'_>,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Value,
        id: u64,
    ) -> Result<(StatusCode, Value, usize), McpError> {
        let resp = self.exchange(x, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let bytes = read(body, x.max_bytes).await?;
        let message = message_of(&parts.headers, &bytes, id)?;
        Ok((parts.status, message, bytes.len()))
    }

    async fn post_keep_session(
        &self,
        x: &Exchange<'_>,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Value,
        id: u64,
    ) -> Result<(StatusCode, Value, Option<String>), McpError> {
        let resp = self.exchange(x, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let session = parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read(body, x.max_bytes).await?;
        Ok((
            parts.status,
            message_of(&parts.headers, &bytes, id)?,
            session,
        ))
    }

    async fn exchange(
        &self,
        x: &Exchange<'_>,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Value,
    ) -> Result<http::Response<hyper::body::Incoming>, McpError> {
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream");
        for (k, v) in x.headers.iter().chain(headers.iter()) {
            req = req.header(k, v);
        }
        let req = req
            .body(body_of(Full::new(Bytes::from(body.to_string()))))
            .map_err(|e| McpError::Protocol(e.to_string()))?;
        x.client
            .request(req)
            .await
            .map_err(|e| McpError::Unreachable(e.to_string()))
    }
}

/// A legacy request either fails, or must be resent in a new session.
enum LegacyError {
    Failed(McpError),
    Resend,
}
use LegacyError::{Failed, Resend};

fn modern_body(id: u64, method: &str, params: Value) -> Value {
    let mut params = if params.is_object() {
        params
    } else {
        json!({})
    };
    params["_meta"] = json!({
        META_VERSION: MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "warden", "version": env!("CARGO_PKG_VERSION") }
    });
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn modern_headers(method: &str, name: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = vec![(
        HeaderName::from_static("mcp-protocol-version"),
        HeaderValue::from_static(MODERN),
    )];
    if let Some(v) = header_value(method) {
        h.push((HeaderName::from_static("mcp-method"), v));
    }
    if let Some(v) = name.and_then(header_value) {
        h.push((HeaderName::from_static("mcp-name"), v));
    }
    h
}

async fn read(body: hyper::body::Incoming, max: usize) -> Result<Bytes, McpError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(McpError::TooLarge(max)),
        Err(e) => Err(McpError::Died(e.to_string())),
    }
}

/// The JSON-RPC response in an answer: the body itself (JSON), or the SSE event carrying the
/// response to request `id` (notifications before it are skipped).
fn message_of(headers: &http::HeaderMap, bytes: &[u8], id: u64) -> Result<Value, McpError> {
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    if !sse {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(bytes)
            .map_err(|e| McpError::Protocol(format!("the answer is not JSON: {e}")));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| McpError::Protocol("the SSE stream is not UTF-8".into()))?;
    for event in text.split("\n\n").flat_map(|e| e.split("\r\n\r\n")) {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) else {
            continue;
        };
        let is_response = v.get("result").is_some() || v.get("error").is_some();
        if is_response && v.get("id").and_then(Value::as_u64) == Some(id) {
            return Ok(v);
        }
    }
    Err(McpError::Died(
        "the SSE stream ended without the response".into(),
    ))
}
