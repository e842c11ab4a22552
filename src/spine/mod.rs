//! The mediation spine: every agent call goes through one stack of tower layers, each with one
//! job, in this fixed order:
//!
//! ```text
//! (front end) → evidence → mode → body limit → parse → detect → decide → connector
//! ```
//!
//! - the front end (`front/`) fixes who is calling (from config, never from the agent) and the
//!   run, step, session and decision ids, and renders what the spine returns: a refusal comes
//!   back as `Err`, and the front end turns it into its own wire format (`front/render.rs`);
//! - `evidence` writes one record per call, whatever happened — and catches panics of the
//!   layers below, which end as an `internal_error` refusal with a record, never as a pass;
//! - `mode` is the boot guard and the run-state gate (stopped, killed runs);
//! - the rest parse the call, run detectors, decide — reserving what an allowed call may
//!   consume, in the same critical section (`meter`) — and reach the connector.
//!
//! Enforcement here is synchronous with the call; alerts go to the event path (INV-001).

pub mod decide;
pub mod detect;
pub mod evidence;
pub mod limit;
pub mod meter;
pub mod mode;
pub mod parse;
pub mod refusal;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use crate::decide::reserve::{Plan, Want};
use crate::decide::{Decision, PiiFact, Request, SecretFact};
use crate::evidence::record::Content;
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::state::runs::RunState;
use state::Runtime;

pub use refusal::Refusal;

/// A request body still arriving, as the front end hands it over.
pub type InBody = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// Response bodies: buffered or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Reply = http::Response<Body>;
pub type BoxFut = Pin<Box<dyn Future<Output = Result<Reply, Refusal>> + Send>>;
/// The rest of the stack, as seen by a layer.
pub type Next = BoxCloneService<Call, Reply, Refusal>;

/// Who is calling and which run, step and decision this is.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub tenant: String,
    pub project: String,
    pub agent: String,
    pub actor: Option<String>,
    pub api_key: Option<String>,
    pub run_id: String,
    /// True when the agent sent no run id and one was assigned.
    pub run_assigned: bool,
    pub step_id: String,
    pub session_id: String,
    pub decision_id: String,
    pub evidence_id: String,
    pub started: std::time::Instant,
    pub at_ms: u64,
}

/// What a call is aimed at once parsed: a connector's own type (a chat completion, the models
/// list, an HTTP call, a tunnel…), seen by the spine only through this trait. A new channel
/// brings its target type with its connector; the spine does not change.
pub trait Target: Send + Sync + std::fmt::Debug + 'static {
    /// The channel whose connector answers this target (the registry's key).
    fn channel(&self) -> Channel;
    /// Answered locally from the policies themselves, with nothing sent upstream (the models
    /// list): the decide layer lets it through; its connector computes what the agent may see.
    fn local(&self) -> bool {
        false
    }
    /// The PII and secrets facts of everything the call would send upstream, for `decide`
    /// (`None`: nothing is sent). A target whose content cannot be read answers `Unavailable`,
    /// never clean.
    fn facts(&self, call: &CallState) -> Option<(PiiFact, SecretFact)>;
    /// What the call asks to reserve beyond its facts (a chat completion's output tokens).
    fn want(&self) -> Option<Want> {
        None
    }
    /// The reservation of the allowed call (a chat completion clamps its `max_tokens`).
    fn plan(&mut self, _plan: &Plan) {}
    /// The target as its connector's own type (`downcast`).
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// Recover a connector's own target type; any other is an `internal_error` (the registry only
/// hands a connector targets of its channel).
pub fn downcast<T: 'static>(target: Box<dyn Target>) -> Result<T, Box<dyn std::any::Any + Send>> {
    target.into_any().downcast::<T>().map(|b| *b)
}

/// What the evidence layer needs, filled in by the layers as the call proceeds.
#[derive(Debug, Default)]
pub struct Trace {
    /// The call's evidence record as the layers learn it (amounts, hashes, the decision's
    /// request and usage, the outcome and cut); the evidence layer adds the ids, the decision
    /// and the basis when it seals it. One record, not a copy of one.
    pub rec: crate::evidence::Record,
    pub decision: Option<Decision>,
    pub content: Option<Content>,
    pub approval_id: Option<String>,
    /// The response streams; the stream seals the evidence at its end.
    pub streaming: bool,
    pub upstream_status: Option<u16>,
    /// The mode a local answer (no decision of its own) was computed under.
    pub mode: Option<crate::decide::Mode>,
    /// A refusal found before the spine could act on it (a bad identity header).
    pub refusal: Option<Refusal>,
    /// The id a request–response protocol's answer must carry (a JSON-RPC request's `id`), set
    /// by its front end's route, so a refusal from any layer can be rendered as its answer.
    pub reply_to: Option<serde_json::Value>,
    /// The refusal the call ended with, for the record.
    pub refused: Option<Refusal>,
    /// What the call holds against its limits, settled once its amounts are final (set by
    /// the decide layer).
    pub pending_meter: Option<meter::Pending>,
    /// The call's place under the sidecar's cap on calls in flight, released when the call is
    /// over (its record sealed) and its answer sent.
    pub place: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
    /// An assigned run, forgotten once this call's record is sealed (`Runs::retire`).
    pub retire: Option<Arc<RunState>>,
}

/// One call on its way through the spine: a box, so that handing it from layer to layer (and
/// into each layer's future) moves a pointer, not the whole state.
pub struct Call(Box<CallState>);

impl Call {
    pub fn new(state: CallState) -> Self {
        Call(Box::new(state))
    }
}

impl std::ops::Deref for Call {
    type Target = CallState;
    fn deref(&self) -> &CallState {
        &self.0
    }
}

impl std::ops::DerefMut for Call {
    fn deref_mut(&mut self) -> &mut CallState {
        &mut self.0
    }
}

/// What a call carries through the spine.
pub struct CallState {
    /// Shared with the evidence sealer and the front end (cloned by reference count).
    pub ctx: Arc<Ctx>,
    /// The request head as it arrived. Every entry point is HTTP-borne (HTTP/1, HTTP/2, and
    /// gRPC and MCP over them), so this is the `http` crate's plain head type, not a server's:
    /// the spine reads only its declared length; parsers and connectors read the rest.
    pub parts: http::request::Parts,
    /// The request body as it arrives (the body-limit layer reads it into `body`): any body, so
    /// a front end that is not HTTP/1 or HTTP/2 can feed the spine too.
    pub incoming: Option<InBody>,
    pub body: Bytes,
    pub target: Option<Box<dyn Target>>,
    pub run: Option<Arc<RunState>>,
    pub new_run: bool,
    pub snapshot: Option<Arc<Snapshot>>,
    pub request: Option<Request>,
    pub decision: Option<Decision>,
    pub trace: Arc<Mutex<Trace>>,
    pub sealer: Option<evidence::Sealer>,
    pub rt: Arc<Runtime>,
    /// Set by the decide layer when it lets the call through (`connectors::Guard`).
    pub guard: Option<Arc<dyn crate::connectors::Guard>>,
    /// The front end's reader of its wire format, called by the parse layer.
    pub parser: Option<Arc<dyn Parser>>,
    /// When the caller stops waiting (a gRPC deadline): the call is cut there, its upstream
    /// request dropped, and recorded (`request_timeout`).
    pub deadline: Option<tokio::time::Instant>,
    /// Decide and record, but do not forward (Envoy `ext_authz`: the mesh forwards an allowed
    /// call itself). Set only by a front end, never from the request.
    pub decide_only: bool,
}

/// What a front end gives the spine to read its wire format. The parse layer calls it once the
/// body is read: it picks the call's target (refusing a route it does not know) and fills the
/// channel, connector, model and amounts of `request`, whose identity fields are already set.
pub trait Parser: Send + Sync + 'static {
    fn parse(
        &self,
        call: &Call,
        snap: &Snapshot,
        request: &mut Request,
    ) -> Result<Box<dyn Target>, Refusal>;
    /// The last event of a streamed answer cut with `refusal`, in the front end's wire format
    /// (an OpenAI SSE error event): the connector streams it, the front end shapes it.
    fn stream_refusal(&self, refusal: &Refusal, decision_id: &str) -> Bytes;
}

impl CallState {
    /// A call as a front end hands it over: who and which ids, the request head, the runtime
    /// state; everything the layers find is still to come.
    pub fn new(ctx: Arc<Ctx>, parts: http::request::Parts, rt: Arc<Runtime>) -> Self {
        CallState {
            ctx,
            parts,
            incoming: None,
            body: Bytes::new(),
            target: None,
            run: None,
            new_run: false,
            snapshot: None,
            request: None,
            decision: None,
            trace: Arc::new(Mutex::new(Trace::default())),
            sealer: None,
            rt,
            guard: None,
            parser: None,
            deadline: None,
            decide_only: false,
        }
    }

    /// Update the trace (a poisoned lock means a panic elsewhere; the record is then
    /// written from what is there).
    pub fn trace(&self, f: impl FnOnce(&mut Trace)) {
        if let Ok(mut t) = self.trace.lock() {
            f(&mut t);
        }
    }

    /// The guard the decide layer gave this call; a call without one was never allowed.
    pub fn guard(&self) -> Result<&dyn crate::connectors::Guard, Refusal> {
        self.guard
            .as_deref()
            .ok_or_else(|| Refusal::internal("the call reached its connector without a guard"))
    }
}

/// One step of the spine. Implemented by each layer; [`StepLayer`] makes it a tower layer.
pub trait Step: Clone + Send + Sync + 'static {
    fn call(&self, call: Call, next: Next) -> BoxFut;
}

/// A tower layer around a [`Step`].
#[derive(Clone)]
pub struct StepLayer<T>(pub T);

impl<T: Step, S> Layer<S> for StepLayer<T>
where
    S: Service<Call, Response = Reply, Error = Refusal> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Service = StepService<T>;

    fn layer(&self, inner: S) -> StepService<T> {
        StepService {
            step: self.0.clone(),
            next: BoxCloneService::new(inner),
        }
    }
}

#[derive(Clone)]
pub struct StepService<T> {
    step: T,
    next: Next,
}

impl<T: Step> Service<Call> for StepService<T> {
    type Response = Reply;
    type Error = Refusal;
    type Future = BoxFut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> BoxFut {
        self.step.call(call, self.next.clone())
    }
}

/// Call the rest of the stack.
pub fn next(next: Next, call: Call) -> BoxFut {
    Box::pin(next.oneshot(call))
}

/// The innermost service: hands the call to its connector.
#[derive(Clone)]
pub struct Dispatch(pub Arc<crate::connectors::Registry>);

impl Service<Call> for Dispatch {
    type Response = Reply;
    type Error = Refusal;
    type Future = BoxFut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> BoxFut {
        self.0.dispatch(call)
    }
}

/// What the layers are given when the stack is built (from the sidecar's `limits`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub body: limit::BodyLimit,
    pub connectors: crate::connectors::Settings,
}

/// The whole spine, from the outside in.
pub fn stack(settings: Settings) -> Next {
    let svc = tower::ServiceBuilder::new()
        .layer(StepLayer(evidence::Evidence))
        .layer(StepLayer(mode::ModeGate))
        .layer(StepLayer(settings.body))
        .layer(StepLayer(parse::Parse))
        .layer(StepLayer(detect::Detect))
        .layer(StepLayer(decide::Decide))
        .service(Dispatch(Arc::new(crate::connectors::Registry::new(
            settings.connectors,
        ))));
    BoxCloneService::new(svc)
}

#[cfg(test)]
mod tests;
