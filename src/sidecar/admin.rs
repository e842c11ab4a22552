//! The admin port (`docs/sidecar.md`): health, readiness, metrics, modes, approvals, runs.
//!
//! Reading is open; changing anything (mode, approvals, reload) needs the admin bearer token,
//! and every change is written to the evidence spool as an audit record (who, why, when,
//! before/after).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::json;

use super::state::Shared;
use crate::codes::Code;
use crate::connectors::{body_of, json_reply};
use crate::decide::Mode;
use crate::evidence::record::{Kind, Record};
use crate::spine::state::runs::Approval;
use crate::spine::Reply;

#[derive(Clone)]
pub struct Admin {
    pub shared: Arc<Shared>,
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Reply {
    let mut r = http::Response::new(body_of(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// An admin error: the code's status from the one table, in the documented error shape.
fn error(code: Code, message: impl Into<String>) -> Reply {
    json_reply(
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({ "error": { "type": "warden_error", "code": code.as_str(), "message": message.into() } }),
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(shared: &Shared, parts: &http::request::Parts) -> bool {
    let Some(token) = &shared.admin_token else {
        return false;
    };
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
}

/// What `POST /ops/mode` may set: a mode, or `inherit` (a tenant drops its own mode and follows
/// the global one again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Setting {
    Enforcing,
    Degraded,
    Bypass,
    Halted,
    Inherit,
}

impl Setting {
    fn mode(self) -> Option<Mode> {
        match self {
            Setting::Enforcing => Some(Mode::Enforcing),
            Setting::Degraded => Some(Mode::Degraded),
            Setting::Bypass => Some(Mode::Bypass),
            Setting::Halted => Some(Mode::Halted),
            Setting::Inherit => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeChange {
    mode: Setting,
    reason: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalChange {
    decision: String,
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

/// Write an audit record; an operator action that cannot be recorded is not taken.
pub async fn audit(shared: &Shared, what: serde_json::Value) -> Result<(), Reply> {
    let mut r = Record::new(
        Kind::Audit,
        uuid::Uuid::now_v7().to_string(),
        crate::spine::state::Runtime::now_ms(),
    );
    r.tenant = Some(shared.cfg.identity.tenant.clone());
    r.agent = Some(shared.cfg.identity.agent.clone());
    r.mode = shared.rt.mode_for(&shared.cfg.identity.tenant);
    r.audit = Some(what);
    shared.rt.spool.append(r).await.map(|_| ()).map_err(|e| {
        error(
            Code::AuditUnavailable,
            format!("audit record could not be written, nothing changed: {e}"),
        )
    })
}

/// Apply a mode change (also used by `warden dev` and tests).
pub async fn set_mode(
    shared: &Shared,
    mode: Mode,
    tenant: Option<String>,
    reason: &str,
    actor: &str,
) -> Result<serde_json::Value, Reply> {
    change_mode(shared, Some(mode), tenant, reason, actor).await
}

/// Clear a tenant's own mode: it follows the global mode again.
pub async fn inherit_mode(
    shared: &Shared,
    tenant: String,
    reason: &str,
    actor: &str,
) -> Result<serde_json::Value, Reply> {
    change_mode(shared, None, Some(tenant), reason, actor).await
}

/// Set `mode` globally or for `tenant`, or (`None`, with a tenant) clear the tenant's own mode.
/// Audited before it takes effect: a change that cannot be recorded is not made.
async fn change_mode(
    shared: &Shared,
    mode: Option<Mode>,
    tenant: Option<String>,
    reason: &str,
    actor: &str,
) -> Result<serde_json::Value, Reply> {
    let before = shared
        .rt
        .modes
        .lock()
        .map(|m| m.clone())
        .map_err(|_| error(Code::InternalError, "mode lock poisoned"))?;
    let mut after = before.clone();
    match (&tenant, mode) {
        (Some(t), Some(m)) => {
            after.tenants.insert(t.clone(), m);
        }
        (Some(t), None) => {
            after.tenants.remove(t);
        }
        (None, Some(m)) => after.global = m,
        (None, None) => {
            return Err(error(
                Code::BadRequest,
                "`inherit` clears a tenant's own mode: it needs a tenant",
            ))
        }
    }
    let bypass = mode == Some(Mode::Bypass);
    if bypass {
        tracing::error!(%reason, %actor, tenant = ?tenant, "CRITICAL: governance bypass entered; calls pass unenforced");
    }
    audit(
        shared,
        json!({
            "event": "mode_change",
            "actor": actor,
            "reason": reason,
            "tenant": tenant,
            "mode": mode.map_or("inherit", Mode::as_str),
            "before": before,
            "after": after,
            "critical": bypass,
        }),
    )
    .await?;
    install_modes(shared, after.clone());
    Ok(json!({ "before": before, "after": after }))
}

/// Put `modes` in force at once: in-flight calls and streams see the change through the mode
/// epoch (a `halted` cuts them). Returns the modes before.
pub fn install_modes(
    shared: &Shared,
    modes: crate::spine::state::Modes,
) -> crate::spine::state::Modes {
    let tenants: Vec<(String, Mode)> = modes.tenants.iter().map(|(k, v)| (k.clone(), *v)).collect();
    shared.rt.metrics.set_modes(modes.global, &tenants);
    let before = match shared.rt.modes.lock() {
        Ok(mut m) => std::mem::replace(&mut *m, modes),
        Err(_) => crate::spine::state::Modes::default(),
    };
    shared.rt.mode_epoch.send_modify(|e| *e += 1);
    before
}

/// Settle a pending approval: the run's retry passes (approve) or the run stops (reject).
/// Returns the run's id, or why not.
pub fn settle_approval(shared: &Shared, id: &str, verdict: Approval) -> Result<String, Code> {
    let Some(run) = shared.rt.runs.approval_run(id) else {
        return Err(Code::UnknownApproval);
    };
    let mut approvals = run.approvals.lock().map_err(|_| Code::InternalError)?;
    match approvals.get_mut(id) {
        Some(entry) if entry.1 == Approval::Pending => entry.1 = verdict.clone(),
        _ => return Err(Code::NotPending),
    }
    drop(approvals);
    if verdict == Approval::Rejected {
        run.end(crate::policy::model::Action::Stop, id, Code::PolicyDenied);
    }
    Ok(run.id.clone())
}

async fn body_json<T: serde::de::DeserializeOwned>(
    body: hyper::body::Incoming,
) -> Result<T, Reply> {
    let bytes = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map_err(|e| error(Code::BadRequest, format!("cannot read body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(Code::BadRequest, format!("invalid JSON: {e}")))
}

async fn route(shared: Arc<Shared>, req: http::Request<hyper::body::Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let Some(allow) = allowed_methods(&segs) else {
        return error(Code::UnknownRoute, format!("no admin endpoint {path}"));
    };
    // HEAD is GET without the body (hyper drops it).
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        let mut r = error(
            Code::MethodNotSupported,
            format!("{path} answers {allow}, not {}", parts.method),
        );
        r.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        return r;
    }
    if method != Method::GET && !authorized(&shared, &parts) {
        return error(
            Code::Unauthorized,
            "this admin call needs `Authorization: Bearer <admin token>`",
        );
    }
    match (method, segs.as_slice()) {
        (Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        (Method::GET, ["readyz"]) => {
            let snap = shared.rt.snapshot();
            let poisoned = shared.rt.spool.stats().poisoned.load(Ordering::Relaxed);
            match (&snap, poisoned) {
                (Some(s), false) => json_reply(
                    StatusCode::OK,
                    &json!({ "ready": true, "snapshot": s.hash().to_string() }),
                ),
                (None, _) => json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "ready": false, "reason": "no verified snapshot" }),
                ),
                (Some(_), true) => json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "ready": false, "reason": "evidence spool failed" }),
                ),
            }
        }
        (Method::GET, ["metrics"]) => {
            let st = shared.rt.spool.stats();
            let body = shared.rt.metrics.render(
                st.bytes.load(Ordering::Relaxed),
                st.records.load(Ordering::Relaxed),
            );
            text(
                StatusCode::OK,
                body,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        (Method::GET, ["ops", "mode"]) => match shared.rt.modes.lock() {
            Ok(m) => {
                let own = &shared.cfg.identity.tenant;
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "global": m.global,
                        "tenants": m.tenants,
                        "effective": { own.as_str(): m.effective(own) },
                    }),
                )
            }
            Err(_) => error(Code::InternalError, "mode lock poisoned"),
        },
        (Method::POST, ["ops", "mode"]) => {
            let change: ModeChange = match body_json(body).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            if change.reason.trim().is_empty() {
                return error(Code::BadRequest, "a mode change needs a reason");
            }
            if change
                .tenant
                .as_deref()
                .is_some_and(|t| t.trim().is_empty())
            {
                return error(
                    Code::BadRequest,
                    "`tenant` must not be empty (leave it out for the global mode)",
                );
            }
            let actor = change.actor.unwrap_or_else(|| "admin-token".into());
            let mode = change.mode.mode();
            match change_mode(&shared, mode, change.tenant, &change.reason, &actor).await {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(r) => r,
            }
        }
        (Method::POST, ["ops", "approvals", id]) => {
            let change: ApprovalChange = match body_json(body).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let verdict = match change.decision.as_str() {
                "approve" => Approval::Approved,
                "reject" => Approval::Rejected,
                other => {
                    return error(
                        Code::BadRequest,
                        format!("decision must be approve or reject, not `{other}`"),
                    )
                }
            };
            let Some(run) = shared.rt.runs.approval_run(id) else {
                return error(Code::UnknownApproval, format!("no pending approval `{id}`"));
            };
            let pending = run
                .approvals
                .lock()
                .ok()
                .and_then(|a| a.get(*id).map(|(_, s)| *s == Approval::Pending))
                .unwrap_or(false);
            if !pending {
                return error(Code::NotPending, format!("approval `{id}` is not pending"));
            }
            let actor = change.actor.unwrap_or_else(|| "admin-token".into());
            if let Err(r) = audit(
                &shared,
                json!({ "event": "approval", "approval_id": id, "run_id": run.id, "decision": change.decision, "reason": change.reason, "actor": actor }),
            )
            .await
            {
                return r;
            }
            if let Err(code) = settle_approval(&shared, id, verdict.clone()) {
                return error(code, format!("approval `{id}` is not pending"));
            }
            json_reply(
                StatusCode::OK,
                &json!({ "approval_id": id, "run_id": run.id, "state": verdict }),
            )
        }
        (Method::GET, ["runs", id]) => match shared.rt.runs.get(id) {
            None => error(Code::UnknownRun, format!("no run `{id}` in memory")),
            Some(run) => {
                let recent: Vec<_> = run
                    .recent
                    .lock()
                    .map(|r| r.iter().cloned().collect())
                    .unwrap_or_default();
                let approvals: Vec<_> = run
                    .approvals
                    .lock()
                    .map(|a| {
                        a.iter()
                            .map(|(k, (_, s))| json!({ "id": k, "state": s }))
                            .collect()
                    })
                    .unwrap_or_default();
                json_reply(
                    StatusCode::OK,
                    &json!({ "run_id": run.id, "session_id": run.session_id, "status": run.status(), "started": run.started(), "recent": recent, "approvals": approvals }),
                )
            }
        },
        (Method::POST, ["ops", "reload"]) => match super::reload(&shared).await {
            Ok(hash) => json_reply(StatusCode::OK, &json!({ "snapshot": hash })),
            Err(e) => error(Code::InvalidBundle, e),
        },
        _ => error(Code::UnknownRoute, format!("no admin endpoint {path}")),
    }
}

/// The admin port's routes: the methods each path answers (the `Allow` header), or `None` for
/// a path that is no route at all.
fn allowed_methods(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["healthz"] | ["readyz"] | ["metrics"] | ["runs", _] => "GET, HEAD",
        ["ops", "mode"] => "GET, HEAD, POST",
        ["ops", "approvals", _] | ["ops", "reload"] => "POST",
        _ => return None,
    })
}

impl tower::Service<http::Request<hyper::body::Incoming>> for Admin {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(route(shared, req).await) })
    }
}
