//! `warden evidence verify` and `warden evidence replay`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::policy::out;
use super::CliError;
use crate::evidence::{self, replay};
use crate::policy::store::SnapshotStore;

#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Check the hash chain of a spool directory or one segment file.
    Verify {
        path: PathBuf,
        /// Treat a torn tail (normal after a crash, cut at the next start) as a failure too.
        #[arg(long)]
        strict: bool,
    },
    /// Check every recorded call against the snapshot that judged it: decide it again (or derive
    /// its local answer again) and check its outcome; report every difference.
    Replay {
        path: PathBuf,
        /// Snapshot store directory (the sidecar's `cache_dir`).
        #[arg(long)]
        snapshots: PathBuf,
    },
}

pub fn run(cmd: EvidenceCommand) -> Result<ExitCode, CliError> {
    match cmd {
        EvidenceCommand::Verify { path, strict } => Ok(verify(&path, strict)),
        EvidenceCommand::Replay { path, snapshots } => Ok(replay_cmd(&path, &snapshots)),
    }
}

fn verify(path: &std::path::Path, strict: bool) -> ExitCode {
    match evidence::verify(path) {
        Ok(r) => {
            out(&format!(
                "ok: {} records in {} segment{}, chain verified\nhead: seq {} {}\n",
                r.records,
                r.segments,
                if r.segments == 1 { "" } else { "s" },
                r.head.next_seq.saturating_sub(1),
                r.head.hash
            ));
            for (seg, offset, len, why) in &r.torn {
                eprintln!(
                    "torn tail: {seg} at byte {offset}: {len} bytes ({why}); recovery cuts it"
                );
            }
            if strict && !r.torn.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("evidence verification failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn replay_cmd(path: &std::path::Path, snapshots: &std::path::Path) -> ExitCode {
    let records = match evidence::read_all(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read evidence: {e}");
            return ExitCode::from(1);
        }
    };
    let report = match replay::replay(&records, &SnapshotStore::new(snapshots)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("replay failed: {e}");
            return ExitCode::from(1);
        }
    };
    out(&format!(
        "{} calls checked: {} decisions replayed, {} refusals before a decision, {} local answers; {} records skipped (audit)\n{} mismatches\n",
        report.checked,
        report.decisions,
        report.before_decision,
        report.local,
        report.skipped,
        report.mismatches.len()
    ));
    for h in &report.missing_snapshots {
        eprintln!("missing snapshot {h}: its decisions were not replayed");
    }
    for m in &report.mismatches {
        eprintln!(
            "MISMATCH seq {} ({}): recorded {:?}, replayed {:?}: {}",
            m.seq,
            m.evidence_id,
            m.recorded,
            m.replayed,
            m.why.join("; ")
        );
    }
    if report.mismatches.is_empty() && report.missing_snapshots.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
