//! `warden policy apply|list|show|activate|suspend|retire|shadow`: policy admin on the service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::control::{self, Conn};
use super::policy::out;
use super::CliError;
use crate::proto as pb;

/// Which policy a lifecycle command moves.
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// The policy id.
    pub id: String,
    /// Its tenant (needed only when two tenants use the same id).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Why (recorded in the audit ledger).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub conn: Conn,
}

fn info_json(p: &pb::PolicyInfo) -> serde_json::Value {
    let mut v = serde_json::json!({
        "kind": p.kind, "tenant": p.tenant, "id": p.id, "status": p.status, "shadow": p.shadow,
        "revision": p.revision, "updated_at_ms": p.updated_at_ms, "updated_by": p.updated_by,
    });
    if !p.text.is_empty() {
        v["text"] = p.text.clone().into();
    }
    v
}

async fn client(
    conn: &Conn,
) -> Result<
    (
        pb::policy_admin_client::PolicyAdminClient<tonic::transport::Channel>,
        String,
    ),
    CliError,
> {
    let token = control::token(conn.token_file.as_ref())?;
    let c = pb::policy_admin_client::PolicyAdminClient::new(control::channel(&conn.server).await?)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    Ok((c, token))
}

pub fn apply(
    file: PathBuf,
    reason: String,
    dry_run: bool,
    conn: Conn,
) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(&file).map_err(|source| CliError::Read {
        path: file.display().to_string(),
        source,
    })?;
    control::block_on(async move {
        let (mut c, token) = client(&conn).await?;
        let reply = c
            .apply(control::request(
                pb::ApplyRequest {
                    name: file.display().to_string(),
                    text,
                    reason,
                    dry_run,
                },
                &token,
            ))
            .await;
        let r = match reply {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                // Bundle errors, one per line with file:line:column: printed as they are.
                eprintln!("{}", s.message());
                eprintln!("nothing was applied");
                return Ok(ExitCode::from(1));
            }
            Err(s) => return Err(control::status_error(s)),
        };
        if conn.json {
            let changes: Vec<_> = r
                .changes
                .iter()
                .map(|c| serde_json::json!({ "kind": c.kind, "tenant": c.tenant, "id": c.id, "change": c.change }))
                .collect();
            out(&format!(
                "{}\n",
                serde_json::json!({ "snapshot": r.snapshot, "snapshot_seq": r.snapshot_seq, "dry_run": dry_run, "changes": changes })
            ));
        } else {
            let rows: Vec<Vec<String>> = r
                .changes
                .iter()
                .map(|c| {
                    vec![
                        c.kind.clone(),
                        c.tenant.clone(),
                        c.id.clone(),
                        c.change.clone(),
                    ]
                })
                .collect();
            let mut text = control::table(&["KIND", "TENANT", "ID", "CHANGE"], &rows);
            text.push_str(&format!(
                "{} snapshot {}\n",
                if dry_run { "would serve" } else { "serving" },
                r.snapshot
            ));
            out(&text);
        }
        Ok(ExitCode::SUCCESS)
    })?
}

pub fn list(tenant: String, kind: String, conn: Conn) -> Result<ExitCode, CliError> {
    control::block_on(async move {
        let (mut c, token) = client(&conn).await?;
        let r = c
            .list(control::request(pb::ListRequest { tenant, kind }, &token))
            .await
            .map_err(control::status_error)?
            .into_inner();
        if conn.json {
            let items: Vec<_> = r.items.iter().map(info_json).collect();
            out(&format!(
                "{}\n",
                serde_json::json!({ "snapshot": r.snapshot, "items": items })
            ));
        } else {
            let rows: Vec<Vec<String>> = r
                .items
                .iter()
                .map(|p| {
                    vec![
                        p.kind.clone(),
                        p.tenant.clone(),
                        p.id.clone(),
                        if p.status.is_empty() {
                            "-".into()
                        } else {
                            p.status.clone()
                        },
                        if p.shadow { "yes".into() } else { "-".into() },
                        p.revision.to_string(),
                        control::when(p.updated_at_ms),
                        p.updated_by.clone(),
                    ]
                })
                .collect();
            let mut text = control::table(
                &[
                    "KIND",
                    "TENANT",
                    "ID",
                    "STATUS",
                    "SHADOW",
                    "REV",
                    "UPDATED (UTC)",
                    "BY",
                ],
                &rows,
            );
            text.push_str(&format!(
                "snapshot {}\n",
                if r.snapshot.is_empty() {
                    "none"
                } else {
                    &r.snapshot
                }
            ));
            out(&text);
        }
        Ok(ExitCode::SUCCESS)
    })?
}

pub fn show(id: String, tenant: String, kind: String, conn: Conn) -> Result<ExitCode, CliError> {
    control::block_on(async move {
        let (mut c, token) = client(&conn).await?;
        let p = c
            .show(control::request(
                pb::ShowRequest { id, tenant, kind },
                &token,
            ))
            .await
            .map_err(control::status_error)?
            .into_inner();
        if conn.json {
            out(&format!("{}\n", info_json(&p)));
        } else {
            out(&format!(
                "# {} {} (tenant {}) status: {} shadow: {} revision {} by {} at {}\n{}",
                p.kind,
                p.id,
                p.tenant,
                if p.status.is_empty() { "-" } else { &p.status },
                p.shadow,
                p.revision,
                p.updated_by,
                control::when(p.updated_at_ms),
                p.text
            ));
        }
        Ok(ExitCode::SUCCESS)
    })?
}

pub fn lifecycle(w: Which, status: &'static str) -> Result<ExitCode, CliError> {
    control::block_on(async move {
        let (mut c, token) = client(&w.conn).await?;
        let p = c
            .set_lifecycle(control::request(
                pb::LifecycleRequest {
                    id: w.id,
                    tenant: w.tenant,
                    status: status.into(),
                    reason: w.reason,
                },
                &token,
            ))
            .await
            .map_err(control::status_error)?
            .into_inner();
        out(&if w.conn.json {
            format!("{}\n", info_json(&p))
        } else {
            format!("policy {} (tenant {}) is {}\n", p.id, p.tenant, p.status)
        });
        Ok(ExitCode::SUCCESS)
    })?
}

pub fn shadow(w: Which, on: bool) -> Result<ExitCode, CliError> {
    control::block_on(async move {
        let (mut c, token) = client(&w.conn).await?;
        let p = c
            .set_shadow(control::request(
                pb::ShadowRequest {
                    id: w.id,
                    tenant: w.tenant,
                    shadow: on,
                    reason: w.reason,
                },
                &token,
            ))
            .await
            .map_err(control::status_error)?
            .into_inner();
        out(&if w.conn.json {
            format!("{}\n", info_json(&p))
        } else {
            format!(
                "policy {} (tenant {}) is {}\n",
                p.id,
                p.tenant,
                if p.shadow {
                    "in shadow (evaluated, recorded, not enforced)"
                } else {
                    "out of shadow"
                }
            )
        });
        Ok(ExitCode::SUCCESS)
    })?
}
