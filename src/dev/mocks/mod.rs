//! Deterministic mock upstreams for `warden dev` and the integration tests (README).
//!
//! Each mock is a plain HTTP server (HTTP/1.1 and h2c on one port) that answers the same
//! input with the same output, so anyone can reproduce an enforcement by hand:
//! - [`llm`] — an OpenAI-compatible `/v1/chat/completions` and `/v1/models` whose replies are
//!   steered by markers in the last user message (`[[reply:N]]`, `[[leak]]`, `[[leak:FIELD]]`,
//!   `[[tool:NAME]]`, `[[nousage]]`, `[[slow:MS]]`, `[[fail:CODE]]`, and the request's `n`);
//! - [`weather`] — `GET /v1/forecast/{city}`, a small fixed forecast that echoes whether an
//!   `authorization` header arrived (never its value);
//! - [`mcp`] — the MCP "tickets" server at `/mcp` (`search_tickets`, `get_ticket`,
//!   `delete_ticket`), stateless 2026-07-28 and the session revisions 2025-11-25 / 2025-06-18.
//!
//! Both record what reached them (the last request and a count) in a [`Recorder`], so tests
//! can check the credential the sidecar injected, the clamped `max_tokens`, or that a refused
//! call never reached the upstream at all.
//!
//! [`spawn_llm`] and [`spawn_weather`] bind, spawn and hand back a [`MockHandle`]; dropping
//! the handle stops the mock and every connection it holds.

pub mod llm;
pub mod mcp;
pub mod weather;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The response body every mock answers with: a whole buffer or a stream of SSE events.
pub type MockBody = BoxBody<Bytes, Infallible>;

/// Largest request body a mock reads; a bigger one is answered with 413.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

// === ReceivedRequest, Recorder ===

/// One request as a mock received it: what the sidecar actually sent upstream.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// Request method.
    pub method: Method,
    /// Request target (path and query).
    pub uri: Uri,
    /// Every header as received, `authorization` included.
    pub headers: HeaderMap,
    /// The body as received (empty when it could not be read).
    pub body: Bytes,
}

impl ReceivedRequest {
    /// The value of header `name`, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What a mock received: the last recorded request and how many were recorded.
///
/// Which requests count is the mock's to say: the LLM mock records chat completion
/// requests only (so `/v1/models` probes do not disturb "never called" assertions), the
/// weather mock records every request.
#[derive(Debug, Default)]
pub struct Recorder {
    last: Mutex<Option<ReceivedRequest>>,
    count: AtomicU64,
}

impl Recorder {
    /// A fresh recorder, shared between a mock and whoever inspects it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records `req` as the last request; returns its 1-based sequence number.
    pub(crate) fn record(&self, req: ReceivedRequest) -> u64 {
        // A poisoned lock only means a test thread panicked while reading; the data is whole.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(req);
        self.count.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A copy of the last recorded request.
    pub fn last_request(&self) -> Option<ReceivedRequest> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many requests were recorded.
    pub fn request_count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

// === MockHandle ===

/// A running mock on a bound address; dropping it stops the mock and its connections.
#[derive(Debug)]
pub struct MockHandle {
    /// The address the mock listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    recorder: Arc<Recorder>,
    task: JoinHandle<io::Result<()>>,
}

impl MockHandle {
    /// `http://{addr}`, the mock's origin.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last request the mock recorded (see [`Recorder`] for which ones count).
    pub fn last_request(&self) -> Option<ReceivedRequest> {
        self.recorder.last_request()
    }

    /// How many requests the mock recorded (LLM: chat completions; weather: all).
    pub fn request_count(&self) -> u64 {
        self.recorder.request_count()
    }

    /// The shared recorder, for callers that outlive the handle's borrow.
    pub fn recorder(&self) -> Arc<Recorder> {
        Arc::clone(&self.recorder)
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (e.g. `"127.0.0.1:18080"` or `"127.0.0.1:0"`) and runs the LLM mock on it.
pub async fn spawn_llm(addr: &str) -> io::Result<MockHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let recorder = Recorder::new();
    let task = tokio::spawn(llm::serve_recorded(listener, Arc::clone(&recorder)));
    Ok(MockHandle {
        addr,
        recorder,
        task,
    })
}

/// Binds `addr` (e.g. `"127.0.0.1:18082"` or `"127.0.0.1:0"`) and runs the MCP tickets mock on
/// it (`/mcp`).
pub async fn spawn_mcp(addr: &str) -> io::Result<MockHandle> {
    Ok(spawn_mcp_speaking(addr, mcp::Speaks::Both).await?.0)
}

/// [`spawn_mcp`] speaking only `speaks`, with its [`mcp::Control`] (sessions) for tests.
pub async fn spawn_mcp_speaking(
    addr: &str,
    speaks: mcp::Speaks,
) -> io::Result<(MockHandle, Arc<mcp::Control>)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let recorder = Recorder::new();
    let control = mcp::Control::new(speaks);
    let task = tokio::spawn(mcp::serve_recorded(
        listener,
        Arc::clone(&recorder),
        Arc::clone(&control),
    ));
    Ok((
        MockHandle {
            addr,
            recorder,
            task,
        },
        control,
    ))
}

/// Binds `addr` (e.g. `"127.0.0.1:18081"` or `"127.0.0.1:0"`) and runs the weather mock on it.
pub async fn spawn_weather(addr: &str) -> io::Result<MockHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let recorder = Recorder::new();
    let task = tokio::spawn(weather::serve_recorded(listener, Arc::clone(&recorder)));
    Ok(MockHandle {
        addr,
        recorder,
        task,
    })
}

// === serving ===

/// Accepts connections forever and serves each with `handler` (HTTP/1.1 or h2c).
///
/// Connections live in a `JoinSet` owned by this future, so aborting the future (dropping
/// a [`MockHandle`]) also closes every open connection.
pub(crate) async fn accept_loop<H, Fut>(listener: TcpListener, handler: H) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<MockBody>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small SSE events must not wait for Nagle (time-to-first-token benches).
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    conns.spawn(async move {
                        let service = service_fn(move |req| {
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%err, "mock connection ended with an error");
                        }
                    });
                }
                // Out of file descriptors and friends: transient, keep serving.
                Err(err) => {
                    tracing::warn!(%err, "mock upstream failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Why a request body could not be read.
pub(crate) enum BodyError {
    /// Larger than [`MAX_REQUEST_BODY`].
    TooLarge,
    /// The connection failed while reading.
    Read,
}

/// Reads a whole request body, at most [`MAX_REQUEST_BODY`] bytes.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Read),
    }
}

/// A whole-buffer body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into()).boxed()
}

/// A response with `status`, a `content-type` and `body`.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: MockBody,
) -> Response<MockBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<MockBody> {
    // `Value`'s Display is its compact JSON and cannot fail.
    response(status, "application/json", full(value.to_string()))
}

/// An error in the OpenAI shape: `{"error": {message, type, param, code}}`.
pub(crate) fn openai_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response<MockBody> {
    json_response(
        status,
        &serde_json::json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        }),
    )
}
