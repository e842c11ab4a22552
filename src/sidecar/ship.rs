//! Evidence shipping: the spool, sent to the policy service at least once.
//!
//! A task reads the spool's segments from where the service's last acknowledgement left off,
//! sends the records (their bytes exactly as spooled, so the service can check each hash and the
//! chain) in batches over one `EvidenceIngest/Ingest` stream, and moves its cursor
//! (`spool_dir/SHIPPED`, the next sequence number to send) only when a batch is acknowledged. A
//! crash or an outage means records are sent again, which the service recognises by evidence id.
//! Nothing is dropped: while the service is away the spool only grows, and once what is not yet
//! acknowledged passes `evidence.max_unshipped_bytes` the sidecar refuses new calls with
//! `not_ready` (their refusals are still recorded) until shipping catches up.

use std::io::{Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::state::Shared;
use super::watch::Link;
use crate::evidence::segment::{self, HEADER, MAGIC3, MAX_BODY};
use crate::proto as pb;

const CURSOR: &str = "SHIPPED";
/// Most records, and about the most bytes, in one batch.
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// How often the spool is looked at when there was nothing to send.
const IDLE: Duration = Duration::from_millis(50);
/// How long a batch gathers once shipping has caught up.
const GATHER: Duration = Duration::from_millis(25);

/// The next sequence number to ship, as acknowledged.
pub fn read_cursor(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(CURSOR))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(dir: &Path, next: u64) -> std::io::Result<()> {
    let tmp = dir.join("SHIPPED.tmp");
    std::fs::write(&tmp, next.to_string())?;
    std::fs::rename(&tmp, dir.join(CURSOR))
}

/// (records, bytes) written but not yet acknowledged.
pub fn unshipped(shared: &Shared) -> (u64, u64) {
    let b = &shared.rt.backlog;
    (
        b.records.load(Ordering::Relaxed),
        b.bytes.load(Ordering::Relaxed),
    )
}

/// One record read from the spool.
struct Out {
    rec: pb::ShippedRecord,
    at_ms: u64,
}

/// Where reading stands: the segment and the byte after the last record read.
struct Reader {
    dir: PathBuf,
    /// The next sequence number to read.
    next: u64,
    at: Option<(PathBuf, u64)>,
}

impl Reader {
    /// Segments in order, with their first sequence numbers.
    fn segments(&self) -> Vec<(u64, PathBuf)> {
        segment::list(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((segment::name_seq(&p)?, p)))
            .collect()
    }

    /// Read up to a batch of whole records from `next` on.
    fn batch(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let segs = self.segments();
        // The segment holding `next`: the last one starting at or before it.
        let start = segs
            .iter()
            .rposition(|(first, _)| *first <= self.next)
            .unwrap_or(0);
        for (_, path) in segs.iter().skip(start) {
            let offset = match &self.at {
                Some((p, o)) if p == path => *o,
                _ => HEADER as u64,
            };
            let Ok(mut f) = std::fs::File::open(path) else {
                break;
            };
            let mut magic = [0u8; 8];
            if f.read_exact(&mut magic).is_err() || &magic != MAGIC3 {
                tracing::warn!(segment = %path.display(), "not a compact evidence segment; it is not shipped");
                continue;
            }
            if f.seek(SeekFrom::Start(offset)).is_err() {
                break;
            }
            let mut rest = Vec::new();
            if f.read_to_end(&mut rest).is_err() {
                break;
            }
            let mut pos = 0usize;
            let mut whole_segment = true;
            while pos + 8 <= rest.len() {
                let len =
                    u32::from_le_bytes([rest[pos], rest[pos + 1], rest[pos + 2], rest[pos + 3]]);
                let crc = u32::from_le_bytes([
                    rest[pos + 4],
                    rest[pos + 5],
                    rest[pos + 6],
                    rest[pos + 7],
                ]);
                if len > MAX_BODY || pos + 8 + len as usize > rest.len() {
                    whole_segment = false;
                    break;
                }
                let body = &rest[pos + 8..pos + 8 + len as usize];
                if crc32fast::hash(body) != crc {
                    // A group still being written; read it next time.
                    whole_segment = false;
                    break;
                }
                let Ok(r) = crate::evidence::compact::decode(body) else {
                    whole_segment = false;
                    break;
                };
                pos += 8 + len as usize;
                if r.seq < self.next {
                    continue;
                }
                self.next = r.seq + 1;
                self.at = Some((path.clone(), offset + pos as u64));
                bytes += body.len();
                out.push(Out {
                    at_ms: r.at_ms,
                    rec: pb::ShippedRecord {
                        evidence_id: r.evidence_id,
                        seq: r.seq,
                        hash: crate::evidence::record::record_hash(body),
                        prev: r.prev,
                        body: body.to_vec(),
                    },
                });
                if out.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                    return out;
                }
            }
            if !whole_segment {
                break;
            }
            // Read to its end: the next read starts there (or in the next segment).
            self.at = Some((path.clone(), offset + pos as u64));
        }
        out
    }

    /// Bytes of the spool from the record `acked` on (an estimate from the segment sizes).
    fn backlog_bytes(&self, acked_at: &Option<(PathBuf, u64)>) -> u64 {
        let segs = self.segments();
        let mut total = 0;
        let mut counting = acked_at.is_none();
        for (_, p) in &segs {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            match acked_at {
                Some((ap, off)) if ap == p => {
                    counting = true;
                    total += size.saturating_sub(*off);
                }
                _ if counting => total += size.saturating_sub(HEADER as u64),
                _ => {}
            }
        }
        total
    }
}

/// Update the backlog figures (all records before `acked_next` are acknowledged) and the bound
/// that refuses calls.
fn account(shared: &Shared, acked_next: u64, bytes: u64) {
    let written = shared.rt.spool.stats().records.load(Ordering::Relaxed);
    let records = written.saturating_sub(acked_next);
    let b = &shared.rt.backlog;
    b.records.store(records, Ordering::Relaxed);
    b.bytes.store(bytes, Ordering::Relaxed);
    let full = bytes >= shared.cfg.evidence.max_unshipped_bytes;
    if b.full.swap(full, Ordering::Relaxed) != full {
        if full {
            tracing::error!(bytes, bound = shared.cfg.evidence.max_unshipped_bytes, "evidence backlog at its bound: refusing new calls (not_ready) until the policy service acknowledges");
        } else {
            tracing::info!(bytes, "evidence backlog below its bound again");
        }
    }
    shared.rt.metrics.set_unshipped(records, bytes);
}

/// Ship until the task is dropped.
pub async fn ship(shared: Arc<Shared>, link: Link) {
    let dir = shared.cfg.evidence.spool_dir.clone();
    let endpoint = match link.endpoint() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot ship evidence");
            return;
        }
    };
    let acked = read_cursor(&dir);
    let mut reader = Reader {
        dir: dir.clone(),
        next: acked,
        at: None,
    };
    // Where the acknowledged records end, for the backlog figure.
    let mut acked_next = acked;
    let mut acked_at: Option<(PathBuf, u64)> = None;
    let mut backoff = Duration::from_millis(100);
    let mut batch_no = 0u64;
    loop {
        let channel = endpoint.connect_lazy();
        let mut client = pb::evidence_ingest_client::EvidenceIngestClient::new(channel)
            .max_encoding_message_size(super::watch::MAX_MESSAGE);
        let (tx, rx) = mpsc::channel::<pb::EvidenceBatch>(2);
        // Resend from what was acknowledged: what was sent but not acknowledged may be lost.
        reader.next = acked_next;
        reader.at = acked_at.clone();
        let opened = client.ingest(link.request(ReceiverStream::new(rx))).await;
        let mut acks = match opened {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ship evidence to the policy service");
                let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 2);
                let pause = backoff / 2 + Duration::from_millis(jitter);
                wait_accounting(&shared, &reader, acked_next, &acked_at, pause).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            let before = (reader.next, reader.at.clone());
            let d = dir.clone();
            let mut r = Reader {
                dir: d,
                next: reader.next,
                at: reader.at.take(),
            };
            let (r, out) = match tokio::task::spawn_blocking(move || {
                let out = r.batch();
                (r, out)
            })
            .await
            {
                Ok(v) => v,
                Err(_) => break,
            };
            reader = r;
            if out.is_empty() {
                if reader.next == acked_next {
                    // Nothing past the acknowledged records: where reading stands is where
                    // acknowledgement does (a restart learns it by reading to the end).
                    acked_at = reader.at.clone();
                }
                account(&shared, acked_next, reader.backlog_bytes(&acked_at));
                tokio::time::sleep(IDLE).await;
                continue;
            }
            batch_no += 1;
            let n = out.len() as u64;
            let oldest = out.iter().map(|o| o.at_ms).min().unwrap_or(0);
            let batch = pb::EvidenceBatch {
                sidecar: Some(link.identity.clone()),
                batch: batch_no,
                records: out.into_iter().map(|o| o.rec).collect(),
            };
            if tx.send(batch).await.is_err() {
                reader.next = before.0;
                reader.at = before.1;
                break;
            }
            match acks.message().await {
                Ok(Some(ack)) if ack.batch == batch_no => {
                    acked_next = reader.next;
                    acked_at = reader.at.clone();
                    if let Err(e) = write_cursor(&dir, acked_next) {
                        tracing::warn!(error = %e, "could not save the shipping cursor (records will be sent again)");
                    }
                    for i in &ack.chain_issues {
                        tracing::error!(issue = %i, "the policy service found a chain issue in shipped evidence");
                    }
                    shared.rt.metrics.shipped(
                        n,
                        crate::spine::state::Runtime::now_ms().saturating_sub(oldest),
                    );
                    account(&shared, acked_next, reader.backlog_bytes(&acked_at));
                    if (n as usize) < BATCH_RECORDS {
                        // Caught up: let the next batch gather for a moment rather than send
                        // a stream of small ones (each costs a read of the segment and a
                        // round trip).
                        tokio::time::sleep(GATHER).await;
                    }
                }
                Ok(other) => {
                    tracing::warn!(ack = ?other.map(|a| a.batch), "evidence stream out of step; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "evidence stream failed; reconnecting");
                    break;
                }
            }
        }
        wait_accounting(&shared, &reader, acked_next, &acked_at, backoff).await;
    }
}

/// Wait `total` while the service is away, keeping the backlog figure (and the bound that
/// refuses calls) current as the spool grows.
async fn wait_accounting(
    shared: &Shared,
    reader: &Reader,
    acked_next: u64,
    acked_at: &Option<(PathBuf, u64)>,
    total: Duration,
) {
    let until = tokio::time::Instant::now() + total;
    loop {
        account(shared, acked_next, reader.backlog_bytes(acked_at));
        let now = tokio::time::Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(50))).await;
    }
}
