//! Connectors: machine-resolved targets. The agent names a connector (or a model, template or
//! tool); the sidecar resolves the URL and credentials from the snapshot and its own
//! environment (`docs/sidecar.md`) and applies the connector's limits.

pub mod creds;
pub mod egress;
pub mod http;
pub mod llm;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use crate::codes::Code;
use crate::evidence::record::{Cut, Outcome};
use crate::spine::{Body, Call, Refusal, Reply, Target};

/// The innermost step of the spine: hand the call to its connector. Until the connector has
/// its answer, killing the call's run or engaging the kill switch cuts it (the upstream request
/// is dropped); streams and tunnels watch the same signal for as long as they last.
pub async fn dispatch(mut call: Call) -> Result<Reply, Refusal> {
    let cut = cut_signal(&call);
    let trace = call.trace.clone();
    let work = async move {
        match call.target.take() {
            Some(Target::Chat(chat)) => llm::chat(call, chat).await,
            Some(Target::Models) => llm::models(&call),
            Some(Target::Http(hc)) => http::forward(call, hc).await,
            Some(Target::Tunnel(t)) => egress::tunnel(call, t).await,
            None => Err(Refusal::internal("call reached dispatch without a target")),
        }
    };
    tokio::select! {
        biased;
        r = work => r,
        refusal = cut => {
            if let Ok(mut t) = trace.lock() {
                t.outcome = Some(Outcome::Cut);
                t.cut = Some(Cut {
                    after_tokens: 0,
                    code: refusal.code,
                    detail: format!("cut before the answer: {}", refusal.message),
                });
            }
            Err(refusal)
        }
    }
}

/// Resolves, with the refusal to end the call with, once the call must stop: its run was
/// killed (`run_killed`) or the kill switch was engaged for its tenant (`governance_halted`).
pub fn cut_signal(call: &Call) -> impl std::future::Future<Output = Refusal> + Send + 'static {
    let killed = call.run.as_ref().map(|r| r.kill.subscribe());
    let mut modes = call.shared.mode_epoch.subscribe();
    let shared = call.shared.clone();
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
                if shared.mode_for(&tenant) == crate::decide::Mode::Halted {
                    return;
                }
                if modes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = run_killed => Refusal::new(Code::RunKilled, "the run was killed"),
            _ = halted => Refusal::new(Code::GovernanceHalted, "the kill switch was engaged"),
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
    req: ::http::Request<Body>,
    connector: &str,
    connector_timeout_ms: u64,
    channel: &'static str,
) -> Result<(::http::Response<hyper::body::Incoming>, std::time::Duration), Refusal> {
    let timeout = std::time::Duration::from_millis(
        connector_timeout_ms.min(call.shared.cfg.limits.upstream_timeout_ms),
    );
    let started = std::time::Instant::now();
    let resp = match tokio::time::timeout(timeout, call.shared.client.request(req)).await {
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
    call.shared
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
