//! The agent listener's front end: one HTTP/1 and HTTP/2 service that fixes who is calling,
//! and which run, step and session, then hands the call to the spine.
//!
//! Tenant, project and agent come from the sidecar's configuration, never from the request.
//! Per call the agent may send `x-warden-run-id`, `x-warden-step-id`, `x-warden-session-id`
//! (defaults to the run id) and `x-warden-actor` (the human it acts for). A call without a run
//! id gets one, returned in `x-warden-run-id`; a call without a step id is a step of its own.
//!
//! An api key (for `scope.api_keys`) is identity only when it is proved: the agent's
//! `Authorization: Bearer <secret>` must match a key declared in `identity.api_keys`, held
//! here only as a SHA-256 hash and compared in constant time. A bearer that matches none is
//! refused (`unauthorized`), never taken as "no key"; with no keys declared the agent's
//! `Authorization` is ignored. A header that merely names a key (`x-warden-api-key`) is
//! refused as `bad_request`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::codes::Code;
use crate::sidecar::config::Identity as Who;
use crate::spine::state::Runtime;
use crate::spine::{Call, CallState, Ctx, Next, Refusal, Reply, Trace};

pub const RUN: &str = "x-warden-run-id";
pub const STEP: &str = "x-warden-step-id";
pub const SESSION: &str = "x-warden-session-id";
pub const ACTOR: &str = "x-warden-actor";
/// No longer identity: a call that sends it is refused (use `Authorization: Bearer`).
pub const API_KEY: &str = "x-warden-api-key";

/// The agent listener's service: establishes identity, then runs the spine.
#[derive(Clone)]
pub struct Agent {
    pub rt: Arc<Runtime>,
    /// Tenant, project and agent, from the sidecar's configuration.
    pub who: Arc<Who>,
    pub spine: Next,
    pub api_keys: Arc<ApiKeys>,
    /// Calls in flight on the agent listener, capped like its connections: an HTTP/2
    /// connection carries many calls, each of which may hold an upstream connection.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// One parser for every call of the agent port.
    pub routes: Arc<Routes>,
    /// The largest gRPC message read (`limits.max_request_bytes`).
    pub max_message: usize,
}

// === impl Routes ===

/// The agent port's routes: by method and path to the front end that reads the call, and what
/// a front end keeps between calls (the MCP sessions).
#[derive(Default)]
pub struct Routes {
    pub mcp_sessions: super::mcp::Sessions,
}

impl crate::spine::Parser for Routes {
    fn parse(
        &self,
        call: &Call,
        snap: &crate::policy::Snapshot,
        request: &mut crate::decide::Request,
    ) -> Result<Box<dyn crate::spine::Target>, Refusal> {
        let path = call.parts.uri.path();
        let method = &call.parts.method;
        match (method.as_str(), path) {
            ("CONNECT", _) => super::egress::tunnel(call, snap, request),
            _ if super::egress::is_absolute(&call.parts) => {
                super::egress::absolute(call, snap, request)
            }
            ("POST", "/v1/chat/completions") => super::openai::chat(call, snap, request),
            ("GET", "/v1/models") => Ok(Box::new(crate::connectors::llm::Models)),
            (_, p) if p.starts_with("/http/") => super::http::call(call, snap, request),
            ("POST", p) if p.starts_with("/sql/") => super::sql::call(call, snap, request),
            ("POST", "/mcp") => super::mcp::call(call, snap, request, &self.mcp_sessions),
            (_, "/mcp") => Err(Refusal::wrong_method(method, path, "POST")),
            (_, p) if p.starts_with("/sql/") => Err(Refusal::wrong_method(method, path, "POST")),
            (_, "/v1/chat/completions") => Err(Refusal::wrong_method(method, path, "POST")),
            (_, "/v1/models") => Err(Refusal::wrong_method(method, path, "GET")),
            _ => Err(Refusal::new(
                Code::UnknownRoute,
                format!("unknown endpoint {path}"),
            )),
        }
    }

    fn stream_refusal(&self, refusal: &Refusal, decision_id: &str) -> bytes::Bytes {
        super::render::sse_error(refusal, decision_id)
    }
}

// === impl ApiKeys ===

/// The api keys declared in `identity.api_keys`: ids and SHA-256 hashes of their secrets.
#[derive(Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("ApiKeys").field("ids", &ids).finish()
    }
}

/// Whether the bearer proves a declared key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// No keys are declared: the agent's `Authorization` means nothing to the sidecar.
    NotConfigured,
    /// Keys are declared and the call presents no `Authorization` at all.
    Absent,
    Verified(String),
    Refused(&'static str),
}

impl ApiKeys {
    /// Resolve the declared keys at start; a key that cannot be resolved stops the start.
    pub fn resolve(
        declared: &[crate::sidecar::config::ApiKeyConfig],
        base: &std::path::Path,
    ) -> Result<ApiKeys, String> {
        let mut keys = Vec::with_capacity(declared.len());
        for k in declared {
            let hash = match k.key.strip_prefix("sha256:") {
                Some(hex) => parse_hash(hex).ok_or_else(|| {
                    format!("identity.api_keys `{}`: sha256: needs 64 hex digits", k.id)
                })?,
                None => {
                    let secret = crate::connectors::creds::resolve(&k.key, base)
                        .map_err(|e| format!("identity.api_keys `{}`: {e}", k.id))?;
                    if secret.is_empty() {
                        return Err(format!("identity.api_keys `{}`: the secret is empty", k.id));
                    }
                    Sha256::digest(secret.as_bytes()).into()
                }
            };
            keys.push((k.id.clone(), hash));
        }
        Ok(ApiKeys { keys })
    }

    /// Check the call's credential header (`Authorization`, or `Proxy-Authorization` for a
    /// request to the sidecar as a proxy) against every declared key, in constant time over
    /// the hashes (every key is compared, whichever matches).
    pub fn check(&self, headers: &http::HeaderMap, name: &http::HeaderName) -> KeyCheck {
        if self.keys.is_empty() {
            return KeyCheck::NotConfigured;
        }
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return KeyCheck::Absent;
        };
        if values.next().is_some() {
            return KeyCheck::Refused("more than one credential header");
        }
        let Some(secret) = value.to_str().ok().and_then(bearer) else {
            return KeyCheck::Refused("the credential header is not `Bearer <api key>`");
        };
        let given: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found: Option<&str> = None;
        for (id, hash) in &self.keys {
            let diff = hash
                .iter()
                .zip(&given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(id);
            }
        }
        match found {
            Some(id) => KeyCheck::Verified(id.to_string()),
            None => KeyCheck::Refused("the bearer matches no api key declared for this sidecar"),
        }
    }
}

/// The secret of `Bearer <secret>` (scheme case-insensitive, as RFC 9110 has it).
fn bearer(v: &str) -> Option<&str> {
    let (scheme, rest) = v.split_once(' ')?;
    let secret = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn header(parts: &http::request::Parts, name: &str) -> Result<Option<String>, Refusal> {
    let Some(v) = parts.headers.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
                })
        })
        .ok_or_else(|| {
            Refusal::new(
                Code::BadRequest,
                format!("header {name} must be 1-128 characters of A-Z a-z 0-9 - _ . : @"),
            )
        })?;
    Ok(Some(s.to_string()))
}

/// Build the context of a call from the configuration, the request headers and the api keys.
pub fn establish(id: &Who, keys: &ApiKeys, parts: &http::request::Parts) -> (Ctx, Option<Refusal>) {
    let mut problem = None;
    if parts.headers.contains_key(API_KEY) {
        problem = Some(Refusal::new(
            Code::BadRequest,
            format!(
                "{API_KEY} does not name an api key: send the key itself as `Authorization: Bearer <api key>` (declared in sidecar.yaml identity.api_keys)"
            ),
        ));
    }
    // A client using the sidecar as its proxy (CONNECT, absolute-form HTTP/1) proves itself
    // with `Proxy-Authorization`; its `Authorization` is meant for the origin (and dropped).
    let proxied = parts.method == http::Method::CONNECT
        || (parts.version < http::Version::HTTP_2
            && parts.uri.scheme().is_some()
            && parts.uri.authority().is_some());
    let credential = if proxied {
        http::header::PROXY_AUTHORIZATION
    } else {
        http::header::AUTHORIZATION
    };
    let api_key = match keys.check(&parts.headers, &credential) {
        KeyCheck::Verified(id) => Some(id),
        KeyCheck::NotConfigured | KeyCheck::Absent => None,
        KeyCheck::Refused(why) => {
            problem.get_or_insert(Refusal::new(Code::Unauthorized, why));
            None
        }
    };
    let mut get = |name: &str| match header(parts, name) {
        Ok(v) => v,
        Err(r) => {
            problem.get_or_insert(r);
            None
        }
    };
    let run = get(RUN);
    let step = get(STEP);
    let session = get(SESSION);
    let actor = get(ACTOR);
    let decision_id = crate::ids::v7().to_string();
    let run_assigned = run.is_none();
    let run_id = run.unwrap_or_else(|| format!("run-{}", crate::ids::v4()));
    let ctx = Ctx {
        tenant: id.tenant.clone(),
        project: id.project.clone(),
        agent: id.agent.clone(),
        actor,
        api_key,
        session_id: session.unwrap_or_else(|| run_id.clone()),
        step_id: step.unwrap_or_else(|| format!("step-{decision_id}")),
        run_id,
        run_assigned,
        evidence_id: crate::ids::v7().to_string(),
        decision_id,
        started: std::time::Instant::now(),
        at_ms: Runtime::now_ms(),
    };
    (ctx, problem)
}

/// What the spine made of a call: its answer or its refusal (not yet rendered: each front end
/// renders it in its own wire format), the call's ids, and the id a JSON-RPC refusal answers.
pub struct Dispatched {
    pub result: Result<Reply, Refusal>,
    pub ctx: Arc<Ctx>,
    pub reply_to: Option<serde_json::Value>,
    /// The call's place under the in-flight cap: keep it until the answer is sent.
    pub permit: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl Agent {
    /// Run one call through the spine: identity from the configuration and the request head,
    /// the in-flight cap, the call's span. `problem` is a refusal the front end already knows
    /// (a malformed gRPC message, say): the spine records it like any other.
    pub fn dispatch(
        &self,
        parts: http::request::Parts,
        body: crate::spine::InBody,
        problem: Option<Refusal>,
        deadline: Option<std::time::Duration>,
    ) -> impl Future<Output = Dispatched> + Send + 'static {
        self.dispatch_with(parts, body, problem, deadline, false)
    }

    /// [`Agent::dispatch`], and `decide_only`: decided and recorded, not forwarded (ext_authz).
    pub fn dispatch_with(
        &self,
        parts: http::request::Parts,
        body: crate::spine::InBody,
        problem: Option<Refusal>,
        deadline: Option<std::time::Duration>,
        decide_only: bool,
    ) -> impl Future<Output = Dispatched> + Send + 'static {
        let agent = self.clone();
        async move {
            agent
                .dispatch_owned(parts, body, problem, deadline, decide_only)
                .await
        }
    }

    async fn dispatch_owned(
        self,
        parts: http::request::Parts,
        body: crate::spine::InBody,
        problem: Option<Refusal>,
        deadline: Option<std::time::Duration>,
        decide_only: bool,
    ) -> Dispatched {
        let permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Arc::new);
        let (ctx, mut early) = establish(&self.who, &self.api_keys, &parts);
        if permit.is_none() {
            early = Some(Refusal::new(
                Code::Overloaded,
                "too many calls in flight on this sidecar; retry later",
            ));
        }
        let early = early.or(problem);
        let ctx = Arc::new(ctx);
        let span = tracing::info_span!(
            "call",
            run = %ctx.run_id,
            step = %ctx.step_id,
            decision = %ctx.decision_id,
            path = %parts.uri.path(),
        );
        // The call's place under the cap: held by its trace (so a call the agent hangs up on
        // keeps it until its record is sealed) and by its answer's body (until it is sent).
        let trace = Arc::new(Mutex::new(Trace {
            refusal: early,
            place: permit.clone(),
            ..Trace::default()
        }));
        let routes: Arc<dyn crate::spine::Parser> = self.routes.clone();
        let call = Call::new(CallState {
            incoming: Some(body),
            trace: trace.clone(),
            parser: Some(routes),
            deadline: deadline.map(|d| tokio::time::Instant::now() + d),
            decide_only,
            ..CallState::new(ctx.clone(), parts, self.rt.clone())
        });
        let run = self.spine.clone().oneshot(call).instrument(span);
        // A caller's deadline (gRPC): the connector cuts the call there (its upstream request
        // dropped, the record sealed); this bound, a little later, answers the caller even if
        // the call is still before its connector.
        let result = match deadline {
            None => run.await,
            Some(d) => match tokio::time::timeout(d + std::time::Duration::from_millis(50), run)
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Refusal::new(
                    Code::RequestTimeout,
                    format!("the caller's deadline ({d:?}) passed before the call was answered"),
                )),
            },
        };
        if let Err(r) = &result {
            self.rt.metrics.refusal(r.code);
        }
        let reply_to = trace.lock().ok().and_then(|t| t.reply_to.clone());
        Dispatched {
            result,
            ctx,
            reply_to,
            permit,
        }
    }
}

/// A request the gRPC front ends answer.
fn is_grpc(req: &http::Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl Service<http::Request<Incoming>> for Agent {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let agent = self.clone();
        if is_grpc(&req) {
            return Box::pin(async move { Ok(super::grpc::serve(agent, req).await) });
        }
        Box::pin(async move {
            let (parts, incoming) = req.into_parts();
            let mcp = parts.uri.path() == "/mcp";
            let body = http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
                incoming,
                |e| -> crate::spine::BoxError { Box::new(e) },
            ));
            let d = agent.dispatch(parts, body, None, None).await;
            // The spine answers or refuses; a refusal is rendered here, in this front end's
            // wire format, and every answer carries the call's ids.
            let mut reply = match d.result {
                Ok(r) => r,
                Err(r) if mcp => super::mcp::render(&r, d.reply_to, &d.ctx.decision_id),
                Err(r) => super::render::to_response(&r, &d.ctx.decision_id),
            };
            super::render::stamp(&mut reply, &d.ctx);
            // The call keeps its place until its answer (streamed or not) is done.
            Ok(match d.permit {
                Some(p) => reply.map(|b| crate::sidecar::server::Holding::body(b, p)),
                None => reply,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::config::ApiKeyConfig;

    fn keys() -> ApiKeys {
        std::env::set_var("WARDEN_TEST_IDENTITY_KEY", "s3cret-ci");
        let hash: String = Sha256::digest(b"other-secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ApiKeys::resolve(
            &[
                ApiKeyConfig {
                    id: "ci-key".into(),
                    key: "env:WARDEN_TEST_IDENTITY_KEY".into(),
                },
                ApiKeyConfig {
                    id: "ops-key".into(),
                    key: format!("sha256:{hash}"),
                },
            ],
            std::path::Path::new("."),
        )
        .unwrap()
    }

    const A: http::HeaderName = http::header::AUTHORIZATION;

    fn auth(v: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in v {
            h.append(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_bearer_is_an_api_key_only_when_it_matches_a_declared_one() {
        let k = keys();
        assert_eq!(
            k.check(&auth(&["Bearer s3cret-ci"]), &A),
            KeyCheck::Verified("ci-key".into())
        );
        assert_eq!(
            k.check(&auth(&["bearer other-secret"]), &A),
            KeyCheck::Verified("ops-key".into())
        );
        assert_eq!(k.check(&auth(&[]), &A), KeyCheck::Absent);
        for bad in [
            &["Bearer ci-key"][..],
            &["Bearer s3cret-ci2"],
            &["Bearer "],
            &["Basic czNjcmV0LWNp"],
            &["s3cret-ci"],
            &["Bearer s3cret-ci", "Bearer s3cret-ci"],
        ] {
            assert!(
                matches!(k.check(&auth(bad), &A), KeyCheck::Refused(_)),
                "{bad:?}"
            );
        }
        assert_eq!(
            ApiKeys::default().check(&auth(&["Bearer anything"]), &A),
            KeyCheck::NotConfigured
        );
        // The proxy credential is its own header: an origin's Authorization does not count.
        assert_eq!(
            k.check(
                &auth(&["Bearer s3cret-ci"]),
                &http::header::PROXY_AUTHORIZATION
            ),
            KeyCheck::Absent
        );
    }

    #[test]
    fn keys_that_cannot_be_resolved_stop_the_start() {
        let bad = |key: &str| {
            ApiKeys::resolve(
                &[ApiKeyConfig {
                    id: "k".into(),
                    key: key.into(),
                }],
                std::path::Path::new("."),
            )
            .unwrap_err()
        };
        assert!(bad("env:WARDEN_TEST_NO_SUCH_KEY").contains("not set"));
        assert!(bad("sha256:abc").contains("64 hex"));
        assert!(bad("plain-secret").contains("credential reference"));
        let dbg = format!("{:?}", keys());
        assert!(dbg.contains("ci-key") && !dbg.contains("s3cret"), "{dbg}");
    }
}
