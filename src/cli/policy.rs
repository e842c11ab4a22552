//! `warden policy check` and `warden policy eval`; the policy-service commands (`apply`, `list`,
//! `show`, `activate`, `suspend`, `retire`, `shadow`) are in [`super::policy_admin`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::CliError;
use crate::decide::{self, Decision, Mode, Request, Usage};
use crate::policy::model::{Channel, Doc, Kind, Status};
use crate::policy::{self, BundleError, Snapshot};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate bundles; print the snapshot hash and a summary, or every error found.
    Check {
        /// Bundle files (multi-document YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Dry-run one request against bundles and print the decision with all its reasons.
    Eval(EvalArgs),
    /// Apply a bundle to the policy service: its documents are stored (an upsert by kind, tenant
    /// and id), validated with everything stored, and a new snapshot is pushed to the sidecars.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Why (recorded in the audit ledger).
        #[arg(long, default_value = "")]
        reason: String,
        /// Validate against what is stored; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: super::control::Conn,
    },
    /// List the documents on the policy service with their lifecycle.
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        /// Policy, Connector, KnowledgePlane, SqlTemplate or McpTool.
        #[arg(long, default_value = "")]
        kind: String,
        #[command(flatten)]
        conn: super::control::Conn,
    },
    /// Show one document as applied.
    Show {
        id: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        kind: String,
        #[command(flatten)]
        conn: super::control::Conn,
    },
    /// draft or suspended → active.
    Activate(super::policy_admin::Which),
    /// active → suspended.
    Suspend(super::policy_admin::Which),
    /// → retired (final: the id is never reused).
    Retire(super::policy_admin::Which),
    /// Put a policy in shadow (evaluated and recorded, never enforced), or `--off`.
    Shadow {
        #[command(flatten)]
        which: super::policy_admin::Which,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Bundle files.
    #[arg(long = "bundle", required = true, num_args = 1..)]
    pub bundles: Vec<PathBuf>,
    /// The request facts as JSON, or `@FILE` to read them from a file.
    #[arg(long)]
    pub request: String,
    /// Usage so far as JSON (`{"policy-id": [used per limit]}`), or `@FILE`.
    #[arg(long)]
    pub usage: Option<String>,
    /// Governance mode to decide under.
    #[arg(long, default_value = "enforcing", value_parser = parse_mode)]
    pub mode: Mode,
    /// Print the decision as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown mode `{s}` (enforcing, degraded, bypass, halted)"))
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode, CliError> {
    match cmd {
        PolicyCommand::Check { files } => Ok(check(&files)),
        PolicyCommand::Eval(args) => eval(args),
        PolicyCommand::Apply {
            file,
            reason,
            dry_run,
            conn,
        } => super::policy_admin::apply(file, reason, dry_run, conn),
        PolicyCommand::List { tenant, kind, conn } => super::policy_admin::list(tenant, kind, conn),
        PolicyCommand::Show {
            id,
            tenant,
            kind,
            conn,
        } => super::policy_admin::show(id, tenant, kind, conn),
        PolicyCommand::Activate(w) => super::policy_admin::lifecycle(w, "active"),
        PolicyCommand::Suspend(w) => super::policy_admin::lifecycle(w, "suspended"),
        PolicyCommand::Retire(w) => super::policy_admin::lifecycle(w, "retired"),
        PolicyCommand::Shadow { which, off } => super::policy_admin::shadow(which, !off),
    }
}

/// Write to stdout, ignoring a closed pipe (`warden policy eval --json | head`).
pub(crate) fn out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_errors(errors: &[BundleError]) -> ExitCode {
    let mut err = std::io::stderr().lock();
    for e in errors {
        let _ = writeln!(err, "{e}");
    }
    let _ = writeln!(
        err,
        "{} error{} found",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(1)
}

fn check(files: &[PathBuf]) -> ExitCode {
    match policy::compile_files(files) {
        Ok(snap) => {
            out(&summary(&snap));
            ExitCode::SUCCESS
        }
        Err(errors) => print_errors(&errors),
    }
}

/// The text `policy check` prints for a good bundle.
pub fn summary(snap: &Snapshot) -> String {
    let mut out = format!("snapshot {}\n", snap.hash());
    let kinds: Vec<String> = Kind::ALL
        .iter()
        .map(|k| {
            let n = snap.docs().iter().filter(|d| d.kind() == *k).count();
            format!("{} {n}", k.as_str())
        })
        .collect();
    out.push_str(&format!("documents: {}\n", kinds.join(", ")));
    let active = snap.active_per_channel();
    let per: Vec<String> = Channel::ALL
        .iter()
        .map(|c| format!("{} {}", c.as_str(), active[c.index()]))
        .collect();
    let policies = snap.docs().iter().filter_map(|d| match d {
        Doc::Policy(p) => Some(&p.spec),
        _ => None,
    });
    let (mut shadow, mut inactive) = (0, 0);
    for p in policies {
        if p.status != Status::Active {
            inactive += 1;
        } else if p.shadow {
            shadow += 1;
        }
    }
    out.push_str(&format!(
        "active policies: {} (of which shadow {shadow}; not active {inactive})\n",
        per.join(", ")
    ));
    out
}

fn json_arg<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, CliError> {
    let text = match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|source| CliError::Read {
            path: path.to_string(),
            source,
        })?,
        None => value.to_string(),
    };
    serde_json::from_str(&text).map_err(|source| CliError::Json {
        what: what.to_string(),
        source,
    })
}

fn eval(args: EvalArgs) -> Result<ExitCode, CliError> {
    let snap = match policy::compile_files(&args.bundles) {
        Ok(s) => s,
        Err(errors) => return Ok(print_errors(&errors)),
    };
    let req: Request = json_arg("--request", &args.request)?;
    let usage: Usage = match &args.usage {
        Some(u) => json_arg("--usage", u)?,
        None => Usage::default(),
    };
    let d = decide::decide(&snap, &req, &usage, args.mode, 0, "dry-run");
    if args.json {
        let text = serde_json::to_string_pretty(&d).map_err(|source| CliError::Json {
            what: "decision".into(),
            source,
        })?;
        out(&format!("{text}\n"));
    } else {
        out(&render(&d));
    }
    Ok(ExitCode::SUCCESS)
}

/// A decision as text: the outcome, then every reason, alert and clamp.
pub fn render(d: &Decision) -> String {
    let mut out = format!(
        "decision: {}{}\n",
        d.action.as_str().to_uppercase(),
        d.code.map(|c| format!(" ({c})")).unwrap_or_default()
    );
    out.push_str(&format!(
        "winning policy: {}\nsnapshot: {}\nmode: {}\n",
        d.policy.as_deref().unwrap_or("-"),
        d.snapshot,
        d.mode.as_str()
    ));
    if let Some(from) = d.downgraded_from {
        out.push_str(&format!(
            "downgraded from {} by mode {}\n",
            from.as_str().to_uppercase(),
            d.mode.as_str()
        ));
    }
    let line = |r: &decide::Reason| {
        format!(
            "  {:<8} {:<20} {}{}\n",
            r.action.as_str().to_uppercase(),
            r.policy.as_deref().unwrap_or("(default)"),
            r.code.as_str(),
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            }
        )
    };
    out.push_str("reasons:\n");
    for r in &d.reasons {
        out.push_str(&line(r));
    }
    if !d.shadow.is_empty() {
        out.push_str("shadow (not enforced):\n");
        for r in &d.shadow {
            out.push_str(&line(r));
        }
    }
    for n in &d.near {
        out.push_str(&format!(
            "near: {} limit {} {} {}/{} per {} reached tier {}\n",
            n.policy,
            n.limit,
            n.metric.as_str(),
            n.used,
            n.max,
            n.window,
            n.tier
        ));
    }
    if let Some(mt) = d.max_tokens {
        out.push_str(&format!("clamp: max_tokens {mt}\n"));
    }
    for (m, v) in &d.headroom {
        out.push_str(&format!("headroom: {} {v}\n", m.as_str()));
    }
    out
}
