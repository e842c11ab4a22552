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
    /// Check the hash chain of a spool directory (and that it ends at its durable head) or of
    /// one segment file.
    Verify {
        path: PathBuf,
        /// Treat a torn tail or a lost last group (normal after a crash, handled at the next
        /// start) and an unanchored (pre-head) spool as failures too.
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

/// What no local check can prove, said with every verdict.
const CANNOT_PROVE: &str = "note: this proves the records are whole, in order and end at the durable head; it cannot prove that nobody with write access to the spool rewrote the segments, head slots and HEAD pointer consistently (the policy service's acknowledged head will anchor the chain off this machine once evidence is shipped)";

fn verify(path: &std::path::Path, strict: bool) -> ExitCode {
    match evidence::verify(path) {
        Ok(r) => {
            let anchored = match (&r.anchor, r.legacy) {
                (Some(_), _) => "chain verified, head anchored",
                (None, true) => {
                    "chain verified, head NOT anchored (spool written before chain heads)"
                }
                (None, false) if path.is_dir() => "chain verified (empty spool)",
                (None, false) => {
                    "chain verified (one segment: its end is not checked against the spool's head)"
                }
            };
            out(&format!(
                "ok: {} records in {} segment{}, {anchored}\nhead: seq {} {}\n",
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
            if r.ahead > 0 {
                eprintln!(
                    "{} record{} past the durable head (a crash between a group's records and its head); anchored at the next start",
                    r.ahead,
                    if r.ahead == 1 { "" } else { "s" }
                );
            }
            if r.lost > 0 {
                eprintln!(
                    "WARNING: the last {} record{} the head names {} not on disk: a power loss explains it (under durability: sync none of them was acknowledged), a deletion of exactly that last group cannot be told from it",
                    r.lost,
                    if r.lost == 1 { "" } else { "s" },
                    if r.lost == 1 { "is" } else { "are" }
                );
            }
            eprintln!("{CANNOT_PROVE}");
            if strict && (!r.torn.is_empty() || r.lost > 0 || r.legacy) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("evidence verification failed: {e}");
            eprintln!("{CANNOT_PROVE}");
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
