//! Connectors: machine-resolved targets. The agent names a connector (or a model, template or
//! tool); the sidecar resolves the URL and credentials from the snapshot and its own
//! environment (`docs/sidecar.md`) and applies the connector's limits.

pub mod creds;
pub mod egress;
pub mod http;
pub mod llm;
pub mod mcp;
pub mod sql;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use crate::codes::Code;
use crate::decide::{Decision, Request};
use crate::evidence::record::{Cut, Outcome};
use crate::policy::model::Channel;
use crate::spine::{downcast, Body, BoxFut, Call, Refusal, Reply, Target};

/// What every connector is given when the stack is built (the sidecar's `limits`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The cap on any connector's time-out.
    pub upstream_timeout_ms: u64,
    /// The cap on any answer's size (a connector may set a lower one).
    pub max_response_bytes: u64,
}

impl Settings {
    pub fn max_response(&self) -> usize {
        usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX)
    }
}

/// What a connector calls to re-check its call mid-way — a longer answer, PII or a secret in a
/// reply — given by the decide layer when it lets the call through. Same-step enforcement
/// rests on it; the connector never reaches into the spine's layers.
pub trait Guard: Send + Sync + 'static {
    /// Decide again on `req`, the call's whole amount and facts so far. `Some` is a refusing
    /// decision (already recorded as the call's); `None` lets the call go on.
    fn recheck(&self, call: &Call, req: Request) -> Result<Option<Decision>, Refusal>;
    /// The refusal a refusing decision becomes, its effects on the run applied (stop, kill).
    fn enforce(&self, call: &Call, d: &Decision) -> Refusal;
}

/// A whole result withheld by `refusal` (PII, a secret, a `bytes` limit): recorded as cut
/// before anything reached the agent, `what` naming the result.
pub fn withhold(call: &Call, refusal: Refusal, what: &str) -> Refusal {
    call.trace(|t| {
        t.rec.outcome = Some(Outcome::Cut);
        t.rec.cut = Some(Cut {
            after_tokens: 0,
            code: refusal.code,
            detail: format!("{what} withheld: it breached a policy"),
        });
    });
    refusal
}

/// Whether a blocking `bytes` limit bounds the call `decision` let through.
pub fn bytes_bounded(decision: &Decision) -> bool {
    decision
        .headroom_for(crate::policy::model::Metric::Bytes)
        .is_some()
}

/// A whole answer of `n` bytes about to go to the agent, judged against the `bytes` limits
/// before it does: when a blocking `bytes` limit bounds the call (`bounded`, from
/// [`bytes_bounded`]), the call is decided again with its request and answer bytes, and a
/// breach withholds the answer (its `on_breach` applied to the run). The amount decided is the
/// amount settled.
pub fn judge_answer_bytes(call: &Call, bounded: bool, n: u64) -> Result<(), Refusal> {
    if n == 0 || !bounded {
        return Ok(());
    }
    let mut req = call
        .request
        .clone()
        .ok_or_else(|| Refusal::internal("no request facts"))?;
    req.delta.bytes += n as f64;
    let guard = call.guard()?;
    match guard.recheck(call, req)? {
        Some(d) => Err(guard.enforce(call, &d)),
        None => Ok(()),
    }
}

/// A connector: takes an allowed call and the target it was parsed into, and answers it.
pub trait Connector: Send + Sync + 'static {
    fn call(&self, call: Call, target: Box<dyn Target>) -> BoxFut;
}

fn not_mine(channel: &str) -> Refusal {
    Refusal::internal(format!("not a target of the {channel} channel"))
}

/// The LLM channel: chat completions and the models list.
struct Llm(Settings);

impl Connector for Llm {
    fn call(&self, call: Call, target: Box<dyn Target>) -> BoxFut {
        let settings = self.0;
        Box::pin(async move {
            let target = match downcast::<llm::ChatCall>(target) {
                Ok(chat) => return llm::chat(call, chat, settings).await,
                Err(other) => other,
            };
            match target.downcast::<llm::Models>() {
                Ok(_) => llm::models(&call),
                Err(_) => Err(not_mine("llm")),
            }
        })
    }
}

/// The HTTP channel: calls through a named connector, and egress-proxy tunnels.
struct Http(Settings);

impl Connector for Http {
    fn call(&self, call: Call, target: Box<dyn Target>) -> BoxFut {
        let settings = self.0;
        Box::pin(async move {
            let target = match downcast::<http::HttpCall>(target) {
                Ok(hc) => return http::forward(call, hc, settings).await,
                Err(other) => other,
            };
            match target.downcast::<egress::Tunnel>() {
                Ok(t) => egress::tunnel(call, *t).await,
                Err(_) => Err(not_mine("http")),
            }
        })
    }
}

impl Connector for mcp::Mcp {
    fn call(&self, call: Call, target: Box<dyn Target>) -> BoxFut {
        let target = match downcast::<mcp::McpCall>(target) {
            Ok(tc) => {
                let hub = self.0.clone();
                return Box::pin(async move { mcp::tool_call(&hub, call, tc).await });
            }
            Err(other) => other,
        };
        let target = match target.downcast::<mcp::McpList>() {
            Ok(l) => {
                let hub = self.0.clone();
                return Box::pin(async move { mcp::list(&hub, call, *l).await });
            }
            Err(other) => other,
        };
        match target.downcast::<mcp::McpLocal>() {
            Ok(l) => Box::pin(async move { mcp::local(&call, *l) }),
            Err(_) => Box::pin(async { Err(not_mine("mcp")) }),
        }
    }
}

impl Connector for sql::Sql {
    fn call(&self, call: Call, target: Box<dyn Target>) -> BoxFut {
        match downcast::<sql::SqlCall>(target) {
            Ok(sc) => Box::pin(sql::answer(self.settings, self.pools.clone(), call, sc)),
            Err(_) => Box::pin(async { Err(not_mine("sql")) }),
        }
    }
}

/// The connectors, keyed by channel. A channel without one refuses (`internal_error`): the
/// parse layer only builds targets of channels that exist.
pub struct Registry {
    by_channel: [Option<Arc<dyn Connector>>; Channel::ALL.len()],
}

impl Registry {
    pub fn new(settings: Settings) -> Self {
        let mut r = Registry {
            by_channel: Default::default(),
        };
        r.register(Channel::Llm, Arc::new(Llm(settings)));
        r.register(Channel::Http, Arc::new(Http(settings)));
        r.register(Channel::Sql, Arc::new(sql::Sql::new(settings)));
        r.register(Channel::Mcp, Arc::new(mcp::Mcp::new(settings)));
        r
    }

    pub fn register(&mut self, channel: Channel, connector: Arc<dyn Connector>) {
        self.by_channel[channel.index()] = Some(connector);
    }

    pub fn get(&self, channel: Channel) -> Option<&Arc<dyn Connector>> {
        self.by_channel[channel.index()].as_ref()
    }

    /// The innermost step of the spine: hand the call to its connector. Until the connector
    /// has its answer, killing the call's run or engaging the kill switch cuts it (the upstream
    /// request is dropped); streams and tunnels watch the same signal for as long as they last.
    pub fn dispatch(&self, mut call: Call) -> BoxFut {
        let cut = cut_signal(&call);
        let trace = call.trace.clone();
        let work = match call.target.take() {
            Some(target) => match self.get(target.channel()) {
                Some(c) => c.call(call, target),
                None => Box::pin(async move {
                    Err(Refusal::internal(format!(
                        "no connector for the {} channel",
                        target.channel().as_str()
                    )))
                }),
            },
            None => {
                Box::pin(async { Err(Refusal::internal("call reached dispatch without a target")) })
            }
        };
        Box::pin(async move {
            tokio::select! {
                biased;
                r = work => r,
                refusal = cut => {
                    if let Ok(mut t) = trace.lock() {
                        t.rec.outcome = Some(Outcome::Cut);
                        t.rec.cut = Some(Cut {
                            after_tokens: 0,
                            code: refusal.code,
                            detail: format!("cut before the answer: {}", refusal.message),
                        });
                    }
                    Err(refusal)
                }
            }
        })
    }
}

/// Resolves, with the refusal to end the call with, once the call must stop: its run was
/// killed (`run_killed`), the kill switch was engaged for its tenant (`governance_halted`), or
/// the caller's deadline passed (`request_timeout`).
pub fn cut_signal(call: &Call) -> impl std::future::Future<Output = Refusal> + Send + 'static {
    let killed = call.run.as_ref().map(|r| r.kill.subscribe());
    let deadline = call.deadline;
    let mut modes = call.rt.mode_epoch.subscribe();
    let rt = call.rt.clone();
    let tenant = call.ctx.tenant.clone();
    async move {
        let run_killed = async {
            if let Some(mut k) = killed {
                if k.wait_for(|v| *v).await.is_ok() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let halted = async {
            loop {
                if rt.mode_for(&tenant) == crate::decide::Mode::Halted {
                    return;
                }
                if modes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let expired = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = run_killed => Refusal::new(Code::RunKilled, "the run was killed"),
            _ = halted => Refusal::new(Code::GovernanceHalted, "the kill switch was engaged"),
            _ = expired => Refusal::new(Code::RequestTimeout, "the caller's deadline passed; the upstream request was dropped"),
        }
    }
}

/// A buffered body.
pub fn body_of(full: Full<Bytes>) -> Body {
    full.map_err(|never| match never {}).boxed()
}

/// A JSON response.
pub fn json_reply(status: ::http::StatusCode, v: &serde_json::Value) -> Reply {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = ::http::Response::new(body_of(Full::new(Bytes::from(bytes))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        ::http::header::CONTENT_TYPE,
        ::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Send a request upstream within the connector's timeout (capped by the sidecar's
/// `limits.upstream_timeout_ms`), recording the latency. Returns the response head and the
/// timeout in force, for reading the body. Refused connections and resets are `upstream_error`,
/// no answer in time is `upstream_timeout`.
pub async fn send(
    call: &Call,
    settings: &Settings,
    req: ::http::Request<Body>,
    connector: &str,
    connector_timeout_ms: u64,
    channel: &'static str,
) -> Result<(::http::Response<hyper::body::Incoming>, std::time::Duration), Refusal> {
    let timeout =
        std::time::Duration::from_millis(connector_timeout_ms.min(settings.upstream_timeout_ms));
    let started = std::time::Instant::now();
    let resp = match tokio::time::timeout(timeout, call.rt.client.request(req)).await {
        Err(_) => {
            return Err(Refusal::new(
                Code::UpstreamTimeout,
                format!(
                    "{connector} did not answer within {} ms",
                    timeout.as_millis()
                ),
            ))
        }
        Ok(Err(e)) => {
            return Err(Refusal::new(
                Code::UpstreamError,
                format!("upstream of connector `{connector}` failed: {e}"),
            ))
        }
        Ok(Ok(r)) => r,
    };
    call.rt
        .metrics
        .upstream(channel, started.elapsed().as_secs_f64());
    Ok((resp, timeout))
}

/// A response body fed by a channel (streamed answers).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelBody { rx }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
