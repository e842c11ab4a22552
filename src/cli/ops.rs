//! `warden ops mode|kill-switch|status|approve|reject|audit`: the policy service's ops calls,
//! or (`--sidecar URL`) one sidecar's admin port.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use http_body_util::BodyExt;

use super::control::{self, Conn};
use super::policy::out;
use super::CliError;
use crate::proto as pb;

#[derive(Debug, Clone, Args)]
pub struct Target {
    #[command(flatten)]
    pub conn: Conn,
    /// One sidecar's admin port instead of the service (e.g. http://127.0.0.1:15000).
    #[arg(long)]
    pub sidecar: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Enforcing,
    Degraded,
    Bypass,
    Halted,
    /// A tenant drops its own mode and follows the global one (needs --tenant).
    Inherit,
}

impl ModeArg {
    fn as_str(self) -> &'static str {
        match self {
            ModeArg::Enforcing => "enforcing",
            ModeArg::Degraded => "degraded",
            ModeArg::Bypass => "bypass",
            ModeArg::Halted => "halted",
            ModeArg::Inherit => "inherit",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Switch {
    Engage,
    Release,
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Set the governance mode, globally or for one tenant.
    Mode {
        mode: ModeArg,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// The kill switch: `engage` halts (in-flight calls are cut), `release` goes back to enforcing.
    KillSwitch {
        action: Switch,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Modes, the snapshot in force, and the connected sidecars.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Approve a paused call (its retry in the same run passes).
    Approve {
        id: String,
        #[arg(long, default_value = "approved with warden ops approve")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Reject a paused call (its run stops).
    Reject {
        id: String,
        #[arg(long, default_value = "rejected with warden ops reject")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Read the audit ledger.
    Audit {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only this action (mode_change, policy_apply, lifecycle, shadow, approval, denied, …).
        #[arg(long, default_value = "")]
        action: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn run(cmd: OpsCommand) -> Result<ExitCode, CliError> {
    control::block_on(async move {
        match cmd {
            OpsCommand::Mode {
                mode,
                reason,
                tenant,
                target,
            } => set_mode(&target, mode.as_str(), tenant.as_deref(), &reason).await,
            OpsCommand::KillSwitch {
                action,
                reason,
                target,
            } => {
                let mode = match action {
                    Switch::Engage => "halted",
                    Switch::Release => "enforcing",
                };
                set_mode(&target, mode, None, &reason).await
            }
            OpsCommand::Status { target } => status(&target).await,
            OpsCommand::Approve { id, reason, target } => {
                decide(&target, &id, "approve", &reason).await
            }
            OpsCommand::Reject { id, reason, target } => {
                decide(&target, &id, "reject", &reason).await
            }
            OpsCommand::Audit {
                after,
                limit,
                action,
                conn,
            } => audit(&conn, after, limit, &action).await,
        }
    })?
}

/// One call to a sidecar's admin port.
async fn sidecar_call(
    base: &str,
    token: &str,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| CliError::Usage(format!("--sidecar `{base}`: {e}")))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| CliError::Usage(format!("the sidecar at {base} did not answer in 10 s")))?
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot reach the sidecar's admin port at {base} ({e}); is it running?"
            ))
        })?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Usage(format!("reading the sidecar's answer: {e}")))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        return Err(CliError::Usage(format!(
            "{}: {}",
            v["error"]["code"].as_str().unwrap_or(status.as_str()),
            v["error"]["message"].as_str().unwrap_or("refused")
        )));
    }
    Ok(v)
}

fn modes_line(m: &pb::Modes) -> String {
    let mut s = format!("global: {}", m.global);
    let mut tenants: Vec<_> = m.tenants.iter().collect();
    tenants.sort();
    for (t, v) in tenants {
        s.push_str(&format!("  {t}: {v}"));
    }
    s
}

fn modes_json(m: &pb::Modes) -> serde_json::Value {
    serde_json::json!({ "global": m.global, "tenants": m.tenants, "epoch": m.epoch, "reason": m.reason, "actor": m.actor, "changed_at_ms": m.changed_at_ms })
}

async fn set_mode(
    t: &Target,
    mode: &str,
    tenant: Option<&str>,
    reason: &str,
) -> Result<ExitCode, CliError> {
    let token = control::token(t.conn.token_file.as_ref())?;
    if let Some(base) = &t.sidecar {
        let mut body = serde_json::json!({ "mode": mode, "reason": reason });
        if let Some(tn) = tenant {
            body["tenant"] = tn.into();
        }
        let v = sidecar_call(base, &token, http::Method::POST, "/ops/mode", Some(body)).await?;
        out(&if t.conn.json {
            format!("{v}\n")
        } else {
            format!(
                "sidecar {base}: mode {mode}{}\n",
                tenant
                    .map(|t| format!(" for tenant {t}"))
                    .unwrap_or_default()
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    let mut c = pb::ops_client::OpsClient::new(control::channel(&t.conn.server).await?);
    let m = c
        .set_mode(control::request(
            pb::SetModeRequest {
                mode: mode.into(),
                tenant: tenant.unwrap_or("").into(),
                reason: reason.into(),
            },
            &token,
        ))
        .await
        .map_err(control::status_error)?
        .into_inner();
    out(&if t.conn.json {
        format!("{}\n", modes_json(&m))
    } else {
        format!("modes now (epoch {}): {}\n", m.epoch, modes_line(&m))
    });
    Ok(ExitCode::SUCCESS)
}

async fn status(t: &Target) -> Result<ExitCode, CliError> {
    let token = control::token(t.conn.token_file.as_ref())?;
    if let Some(base) = &t.sidecar {
        let v = sidecar_call(base, &token, http::Method::GET, "/ops/mode", None).await?;
        let ready = sidecar_call(base, &token, http::Method::GET, "/readyz", None)
            .await
            .unwrap_or_default();
        out(&if t.conn.json {
            format!("{}\n", serde_json::json!({ "modes": v, "ready": ready }))
        } else {
            format!(
                "sidecar {base}\nmodes: {}\nsnapshot: {}\n",
                v,
                ready["snapshot"].as_str().unwrap_or("none (not ready)")
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    let mut c = pb::ops_client::OpsClient::new(control::channel(&t.conn.server).await?);
    let s = c
        .status(control::request(pb::StatusRequest {}, &token))
        .await
        .map_err(control::status_error)?
        .into_inner();
    let modes = s.modes.unwrap_or_default();
    if t.conn.json {
        let sidecars: Vec<_> = s
            .sidecars
            .iter()
            .map(|x| {
                let id = x.sidecar.clone().unwrap_or_default();
                serde_json::json!({
                    "sidecar_id": id.sidecar_id, "tenant": id.tenant, "project": id.project, "agent": id.agent,
                    "version": id.version, "snapshot": x.snapshot, "connected": x.connected, "replica": x.replica,
                    "last_seen_ms": x.last_seen_ms, "unshipped_records": x.unshipped_records,
                    "evidence_through": x.evidence_through, "refused_snapshot": x.refused_snapshot,
                })
            })
            .collect();
        out(&format!(
            "{}\n",
            serde_json::json!({ "replica": s.replica, "snapshot": s.snapshot, "snapshot_seq": s.snapshot_seq, "modes": modes_json(&modes), "sidecars": sidecars })
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "service replica {}\nmodes: {}\nsnapshot: {} (seq {})\n\n",
        s.replica,
        modes_line(&modes),
        if s.snapshot.is_empty() {
            "none"
        } else {
            &s.snapshot
        },
        s.snapshot_seq
    );
    let rows: Vec<Vec<String>> = s
        .sidecars
        .iter()
        .map(|x| {
            let id = x.sidecar.clone().unwrap_or_default();
            let current = x.snapshot == s.snapshot;
            vec![
                id.sidecar_id,
                format!("{}/{}/{}", id.tenant, id.project, id.agent),
                if x.connected { "yes" } else { "no" }.into(),
                format!(
                    "{}{}",
                    control::short(&x.snapshot),
                    if current { "" } else { " (behind)" }
                ),
                x.unshipped_records.to_string(),
                control::when(x.last_seen_ms),
            ]
        })
        .collect();
    text.push_str(&control::table(
        &[
            "SIDECAR",
            "IDENTITY",
            "CONNECTED",
            "SNAPSHOT",
            "UNSHIPPED",
            "LAST SEEN (UTC)",
        ],
        &rows,
    ));
    out(&text);
    Ok(ExitCode::SUCCESS)
}

async fn decide(t: &Target, id: &str, decision: &str, reason: &str) -> Result<ExitCode, CliError> {
    let token = control::token(t.conn.token_file.as_ref())?;
    if let Some(base) = &t.sidecar {
        let v = sidecar_call(
            base,
            &token,
            http::Method::POST,
            &format!("/ops/approvals/{id}"),
            Some(serde_json::json!({ "decision": decision, "reason": reason })),
        )
        .await?;
        out(&format!("{v}\n"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut c = pb::ops_client::OpsClient::new(control::channel(&t.conn.server).await?);
    let a = c
        .decide_approval(control::request(
            pb::DecideApprovalRequest {
                approval_id: id.into(),
                decision: decision.into(),
                reason: reason.into(),
            },
            &token,
        ))
        .await
        .map_err(control::status_error)?
        .into_inner();
    out(&if t.conn.json {
        format!(
            "{}\n",
            serde_json::json!({ "approval_id": a.approval_id, "decision": a.decision, "actor": a.actor, "decided_at_ms": a.decided_at_ms })
        )
    } else {
        format!("{} {}: sent to the sidecars\n", a.approval_id, a.decision)
    });
    Ok(ExitCode::SUCCESS)
}

async fn audit(conn: &Conn, after: u64, limit: u32, action: &str) -> Result<ExitCode, CliError> {
    let token = control::token(conn.token_file.as_ref())?;
    let mut c = pb::audit_client::AuditClient::new(control::channel(&conn.server).await?);
    let entries = c
        .query(control::request(
            pb::AuditQuery {
                after_seq: after,
                limit,
                action: action.into(),
            },
            &token,
        ))
        .await
        .map_err(control::status_error)?
        .into_inner()
        .entries;
    if conn.json {
        for e in &entries {
            out(&format!(
                "{}\n",
                serde_json::json!({ "seq": e.seq, "at_ms": e.at_ms, "actor": e.actor, "action": e.action, "target": e.target, "reason": e.reason, "before": e.before, "after": e.after, "critical": e.critical, "replica": e.replica })
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                control::when(e.at_ms),
                e.actor.clone(),
                format!(
                    "{}{}",
                    e.action,
                    if e.critical { " (CRITICAL)" } else { "" }
                ),
                e.target.clone(),
                e.reason.clone(),
            ]
        })
        .collect();
    out(&control::table(
        &["SEQ", "AT (UTC)", "ACTOR", "ACTION", "TARGET", "REASON"],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}
