//! The local evidence spool: durable, hash-chained, append-only.
//!
//! With `durability: sync` one writer thread owns the files. Callers hand it records through a
//! bounded queue and wait for their turn; the writer takes everything queued, chains and frames
//! it, writes it with one `write`, overwrites the segment's older head slot with the new chain
//! head ([`super::head`]), makes both durable with one `fdatasync` for the whole group (group
//! commit: the slot is in the same file), then answers every caller. With `durability: os` records queue up and a
//! task on the callers' own runtime writes each group out (chained and framed the same way),
//! which costs less than a round trip to a thread when no `fdatasync` is to be shared. A record is acknowledged only once it is on
//! disk as the configured durability promises; a failed write poisons the spool, and every
//! later append fails, so the sidecar refuses traffic rather than passing calls without
//! evidence.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::head;
use super::record::Record;
use super::segment::{self, Anchor, Head, HEADER, MAGIC, MAGIC3, MAX_BODY, SLOT};
use super::EvidenceError;

/// How durable an acknowledged record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `fdatasync` before acknowledging: survives power loss.
    #[default]
    Sync,
    /// Written to the OS before acknowledging: survives a process crash, not a power loss.
    Os,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// Start a new segment once the current one is this large.
    pub segment_bytes: u64,
    /// Appends that may wait for the writer.
    pub queue: usize,
}

impl SpoolConfig {
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> Self {
        SpoolConfig {
            dir: dir.into(),
            durability,
            segment_bytes: 64 * 1024 * 1024,
            queue: 8192,
        }
    }
}

/// What recovery found when the spool was opened.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    pub head: Head,
    /// A torn tail that was cut: (segment, offset, bytes, why). The cut bytes are kept beside
    /// the segment as `<segment>.torn-<offset>` for inspection.
    pub cut: Option<(PathBuf, u64, u64, String)>,
    /// Records past the durable head (a crash between a group's frames and its head slot);
    /// anchored again when the writer opens the segment.
    pub ahead: u64,
    /// Records of the last group the head names that a crash kept off the disk (never
    /// acknowledged under `sync`).
    pub lost: u64,
    /// The spool predates chain heads; the next record starts an anchored segment.
    pub legacy: bool,
}

/// Where an appended record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    /// `write` calls (each writes a group of records).
    pub writes: AtomicU64,
    pub poisoned: AtomicBool,
}

struct Job {
    record: Box<Record>,
    done: oneshot::Sender<Result<Appended, EvidenceError>>,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    to: To,
    stats: Arc<Stats>,
    /// The key of the placeholders that stand for redacted spans (`evidence::redact`).
    key: Arc<super::redact::Key>,
}

/// Where appends go: with `durability: sync`, to the writer thread that commits them in groups
/// (one `fdatasync` for many); with `os`, to a queue that a task on the caller's own runtime
/// writes out — no thread to wake and be woken back by.
#[derive(Clone)]
enum To {
    Thread(mpsc::Sender<Job>),
    Inline(Arc<Inline>),
}

/// `durability: os`: the first record into an empty queue starts a flush task; the task first
/// yields, so that the records of the calls ready to run join the queue, then writes the whole
/// queue with one `write` (a `write` per record cost ~10 % of a call's CPU, mostly the file
/// system's per-write bookkeeping).
struct Inline {
    queue: std::sync::Mutex<Vec<Job>>,
    writer: std::sync::Mutex<Writer>,
}

impl Inline {
    /// Queue a job; true when the queue was empty, so the caller must start a flush.
    fn push(&self, job: Job) -> bool {
        match self.queue.lock() {
            Ok(mut q) => {
                q.push(job);
                q.len() == 1
            }
            Err(_) => {
                let _ = job.done.send(Err(EvidenceError::Poisoned));
                false
            }
        }
    }

    /// Write everything queued, until the queue stays empty.
    fn flush(&self) {
        let mut writer = self.writer.lock();
        loop {
            let batch = match self.queue.lock() {
                Ok(mut q) => std::mem::take(&mut *q),
                Err(_) => return,
            };
            if batch.is_empty() {
                return;
            }
            match writer.as_mut() {
                Ok(w) => w.take(batch),
                // A panic while writing: what reached the file is unknown.
                Err(_) => {
                    for job in batch {
                        let _ = job.done.send(Err(EvidenceError::Poisoned));
                    }
                }
            }
        }
    }

    fn submit(self: &Arc<Self>, job: Job) {
        if !self.push(job) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                // The flush happens when the task ends — or when it is dropped unrun (a runtime
                // shutting down): a queue left behind with no flush coming would stall every
                // later append.
                let flush = FlushOnDrop(self.clone());
                rt.spawn(async move {
                    tokio::task::yield_now().await;
                    drop(flush);
                });
            }
            Err(_) => self.flush(),
        }
    }
}

struct FlushOnDrop(Arc<Inline>);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

impl Spool {
    /// Open (and recover) the spool in `cfg.dir` and start its writer thread.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, Recovery), EvidenceError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| EvidenceError::io(&cfg.dir, e))?;
        let recovery = recover(&cfg.dir, cfg.durability == Durability::Sync)?;
        let key = super::redact::load_or_create(&cfg.dir)
            .map_err(|e| EvidenceError::io(&cfg.dir.join(super::redact::KEY_FILE), e))?;
        let stats = Arc::new(Stats::default());
        let mut spool_bytes = 0;
        for p in segment::list(&cfg.dir)? {
            spool_bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        stats.bytes.store(spool_bytes, Ordering::Relaxed);
        stats.records.store(recovery.records, Ordering::Relaxed);
        let durability = cfg.durability;
        let queue = cfg.queue.max(1);
        let writer = Writer::new(cfg, recovery.head.clone(), stats.clone())?;
        let to = match durability {
            Durability::Os => To::Inline(Arc::new(Inline {
                queue: std::sync::Mutex::new(Vec::new()),
                writer: std::sync::Mutex::new(writer),
            })),
            Durability::Sync => {
                let (tx, rx) = mpsc::channel(queue);
                std::thread::Builder::new()
                    .name("warden-evidence".into())
                    .spawn(move || writer.run(rx))
                    .map_err(|e| EvidenceError::Io {
                        path: String::new(),
                        source: e,
                    })?;
                To::Thread(tx)
            }
        };
        Ok((
            Spool {
                to,
                stats,
                key: Arc::new(key),
            },
            recovery,
        ))
    }

    /// The redaction key of this spool (`redaction.key` in its directory).
    pub fn redaction_key(&self) -> &super::redact::Key {
        &self.key
    }

    /// Append a record; resolves once it is durable as configured.
    pub fn append(
        &self,
        record: Record,
    ) -> impl std::future::Future<Output = Result<Appended, EvidenceError>> + Send + '_ {
        // Boxed before the future is built: the future (and the queue) hold a pointer, not
        // the kilobyte of record.
        let record = Box::new(record);
        async move {
            let (done, wait) = oneshot::channel();
            let job = Job { record, done };
            match &self.to {
                To::Thread(tx) => tx.send(job).await.map_err(|_| EvidenceError::Closed)?,
                To::Inline(i) => i.submit(job),
            }
            wait.await.map_err(|_| EvidenceError::Closed)?
        }
    }

    /// Append from synchronous code (CLI, tests). Must not be called inside an async runtime.
    pub fn append_blocking(&self, record: Record) -> Result<Appended, EvidenceError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            record: Box::new(record),
            done,
        };
        match &self.to {
            To::Thread(tx) => tx.blocking_send(job).map_err(|_| EvidenceError::Closed)?,
            To::Inline(i) => {
                if i.push(job) {
                    i.flush();
                }
            }
        }
        wait.blocking_recv().map_err(|_| EvidenceError::Closed)?
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Check every segment, the chain and its head (see [`super::head`]); cut a torn tail of the
/// last segment; refuse a spool whose chain ends before its durable head.
fn recover(dir: &Path, sync: bool) -> Result<Recovery, EvidenceError> {
    let ex = head::examine(dir)?;
    let mut rec = Recovery {
        segments: ex.segs.len(),
        records: ex.records,
        head: ex.head.clone(),
        ahead: ex.ahead,
        lost: ex.lost,
        legacy: ex.legacy,
        ..Recovery::default()
    };
    if let Some(last) = ex.segs.last() {
        if let Some((len, why)) = &last.scan.torn {
            let path = &last.path;
            let good = last.scan.good_len;
            let keep = format!("{}.torn-{}", path.display(), good);
            std::fs::write(&keep, &last.bytes[good as usize..])
                .map_err(|e| EvidenceError::io(Path::new(&keep), e))?;
            if good < MAGIC.len() as u64 {
                std::fs::remove_file(path).map_err(|e| EvidenceError::io(path, e))?;
                rec.segments -= 1;
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| EvidenceError::io(path, e))?;
                f.set_len(good)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| EvidenceError::io(path, e))?;
            }
            rec.cut = Some((path.clone(), good, *len, why.clone()));
        }
    }
    // A crash while starting a segment: point at it now that it is known whole.
    if ex.repoint {
        if let Some(name) = ex.segs.last().and_then(|s| s.path.file_name()) {
            let name = name.to_string_lossy().to_string();
            head::write_pointer(dir, &name, sync)
                .and_then(|_| sync_dir(dir, sync))
                .map_err(|e| EvidenceError::io(dir, e))?;
        }
    }
    Ok(rec)
}

fn sync_dir(dir: &Path, sync: bool) -> std::io::Result<()> {
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

struct Writer {
    cfg: SpoolConfig,
    head: Head,
    /// The newest segment (opened without `O_APPEND`: frames and head slots are written at
    /// their offsets), its length, and the head slot to overwrite next.
    file: Option<Open>,
    stats: Arc<Stats>,
}

struct Open {
    file: File,
    len: u64,
    slot: usize,
}

impl Open {
    /// Overwrite the older head slot with `anchor` (made durable by the caller's flush).
    fn anchor(&mut self, anchor: &Anchor) -> std::io::Result<()> {
        let at = (MAGIC3.len() + self.slot * SLOT) as u64;
        self.file.write_all_at(&segment::encode_slot(anchor), at)?;
        self.slot ^= 1;
        Ok(())
    }
}

impl Writer {
    fn new(cfg: SpoolConfig, head: Head, stats: Arc<Stats>) -> Result<Self, EvidenceError> {
        let sync = cfg.durability == Durability::Sync;
        let file = match segment::list(&cfg.dir)?.pop() {
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|e| EvidenceError::io(&path, e))?;
                let scan = segment::scan(&path, &bytes)?;
                // A segment of JSON records stays as it is; an empty one (a crash while an
                // older build started it) becomes compact — a new segment would take its name.
                let empty_json = scan.v2 && !scan.compact && scan.records.is_empty();
                if scan.compact || empty_json {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| EvidenceError::io(&path, e))?;
                    if empty_json {
                        f.write_all_at(MAGIC3, 0)
                            .and_then(|_| if sync { f.sync_data() } else { Ok(()) })
                            .map_err(|e| EvidenceError::io(&path, e))?;
                    }
                    let mut open = Open {
                        file: f,
                        len: bytes.len() as u64,
                        slot: scan.older_slot(),
                    };
                    // Recovery accepted this chain: anchor it where it ends now, so that what a
                    // crash explained once (records past the head, or a lost group) is not
                    // explained again.
                    if scan.anchor() != Some(&Anchor::at(&head)) {
                        let a = Anchor::at(&head);
                        open.anchor(&a)
                            .and_then(|_| open.anchor(&a))
                            .and_then(|_| if sync { open.file.sync_data() } else { Ok(()) })
                            .map_err(|e| EvidenceError::io(&path, e))?;
                    }
                    Some(open)
                } else {
                    // Written before chain heads or before compact records: the next group starts
                    // a segment of the current format.
                    None
                }
            }
            None => None,
        };
        Ok(Writer {
            cfg,
            head,
            file,
            stats,
        })
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.take(batch);
        }
    }

    /// Write a batch and answer each of its jobs — or refuse them all once poisoned.
    fn take(&mut self, batch: Vec<Job>) {
        if self.stats.poisoned.load(Ordering::Relaxed) {
            for job in batch {
                let _ = job.done.send(Err(EvidenceError::Poisoned));
            }
            return;
        }
        self.write_batch(batch);
    }

    fn write_batch(&mut self, batch: Vec<Job>) {
        let first_seq = self.head.next_seq;
        let mut buf = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        let saved = self.head.clone();
        for mut job in batch {
            job.record.seq = self.head.next_seq;
            job.record.prev = self.head.hash.clone();
            let body = match super::compact::encode(&job.record) {
                Ok(b) if b.len() <= MAX_BODY as usize => b,
                Ok(_) => {
                    let _ = job.done.send(Err(EvidenceError::TooLarge));
                    continue;
                }
                Err(e) => {
                    let _ = job.done.send(Err(EvidenceError::Encode(e.to_string())));
                    continue;
                }
            };
            let hash = super::record::record_hash(&body);
            buf.extend_from_slice(&segment::frame(&body));
            self.head.next_seq += 1;
            self.head.hash = hash.clone();
            answers.push((
                job.done,
                Appended {
                    seq: self.head.next_seq - 1,
                    hash,
                },
            ));
        }
        if answers.is_empty() {
            return;
        }
        let anchor = Anchor {
            next_seq: self.head.next_seq,
            hash: self.head.hash.clone(),
            group_seq: first_seq,
            group_prev: saved.hash.clone(),
        };
        match self.write_durably(first_seq, &buf, &anchor, &saved) {
            Ok(()) => {
                self.stats
                    .records
                    .fetch_add(answers.len() as u64, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                for (done, a) in answers {
                    let _ = done.send(Ok(a));
                }
            }
            Err(e) => {
                // We cannot know how much reached the disk: refuse everything from now on.
                self.head = saved;
                self.stats.poisoned.store(true, Ordering::Relaxed);
                for (done, _) in answers {
                    let _ = done.send(Err(EvidenceError::Write(e.to_string())));
                }
            }
        }
    }

    /// Write a group's frames, then its head slot, then (`sync`) one `fdatasync` for both.
    fn write_durably(
        &mut self,
        first_seq: u64,
        buf: &[u8],
        anchor: &Anchor,
        before: &Head,
    ) -> std::io::Result<()> {
        let rotate = match &self.file {
            None => true,
            Some(o) => o.len + buf.len() as u64 > self.cfg.segment_bytes && o.len > HEADER as u64,
        };
        if rotate {
            let sync = self.cfg.durability == Durability::Sync;
            if let Some(o) = self.file.take() {
                if sync {
                    o.file.sync_all()?;
                } else {
                    // `os` promises no more than the page cache, and flushing a full segment
                    // takes long enough (tens of ms) to stall every call waiting on the
                    // writer: the old segment goes to disk in the background.
                    let _ = std::thread::Builder::new()
                        .name("warden-segment-sync".into())
                        .spawn(move || o.file.sync_all());
                }
            }
            let name = segment::segment_name(first_seq);
            let path = self.cfg.dir.join(&name);
            let f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)?;
            // Both slots start at the chain as it is before this segment's first record.
            let start = segment::encode_slot(&Anchor::at(before));
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC3);
            header.extend_from_slice(&start);
            header.extend_from_slice(&start);
            f.write_all_at(&header, 0)?;
            if sync {
                f.sync_all()?;
            }
            // The pointer moves only once the new segment is whole (and, under `sync`, durable):
            // a crash in between leaves one empty segment after the pointed-at one.
            head::write_pointer(&self.cfg.dir, &name, sync)?;
            // Make the new file's name and the pointer durable.
            sync_dir(&self.cfg.dir, sync)?;
            self.stats.bytes.fetch_add(HEADER as u64, Ordering::Relaxed);
            self.file = Some(Open {
                file: f,
                len: HEADER as u64,
                slot: 0,
            });
        }
        let Some(o) = self.file.as_mut() else {
            return Err(std::io::Error::other("no segment open"));
        };
        o.file.write_all_at(buf, o.len)?;
        o.len += buf.len() as u64;
        // After the frames: a crash between the two leaves the chain past the head (explained),
        // never a head past frames that a process crash kept.
        o.anchor(anchor)?;
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        if self.cfg.durability == Durability::Sync {
            // One flush for the frames and the slot: they are in the same file.
            o.file.sync_data()?;
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
