//! The policy service's store: SQLite (one file, the embedded default) or PostgreSQL
//! (production, several replicas), through sqlx, with embedded migrations.
//!
//! Every query is written once and runs on either database (`$1` placeholders work on both);
//! [`with_db!`] compiles each body for both pool types. Mutations are serialised: in-process
//! by a mutex, across PostgreSQL replicas by a transaction-scoped advisory lock, so two replicas
//! applying at once cannot both build on the same snapshot. Snapshots, the audit ledger, mode
//! changes, approval decisions and evidence are append-only in the database itself (triggers
//! refuse UPDATE and DELETE).

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqlSafeStr};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store url `{0}`: use sqlite://PATH or postgres://…")]
    Url(String),
    #[error("store holds bad data: {0}")]
    Corrupt(String),
}

/// The PostgreSQL channel replicas notify each other on.
pub const CHANNEL: &str = "warden_changes";

/// The advisory lock key that serialises mutations across replicas ("warden" in ASCII).
const LOCK_KEY: i64 = 0x7761_7264_656e;

pub enum Db {
    Pg(PgPool),
    Lite(SqlitePool),
}

macro_rules! with_db {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.db {
            Db::Pg($p) => $body,
            Db::Lite($p) => $body,
        }
    };
}

/// Insert an audit row inside a transaction (a macro, so it compiles for both databases).
macro_rules! insert_audit {
    ($tx:ident, $a:expr) => {{
        let a: &AuditRow = $a;
        sqlx::query(
            "INSERT INTO audit (at_ms, actor, action, target, reason, before, after, critical, replica) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(a.at_ms)
        .bind(&a.actor)
        .bind(&a.action)
        .bind(&a.target)
        .bind(&a.reason)
        .bind(&a.before)
        .bind(&a.after)
        .bind(a.critical)
        .bind(&a.replica)
        .execute(&mut *$tx)
        .await?;
    }};
}

pub struct Store {
    pub db: Db,
    write: tokio::sync::Mutex<()>,
}

/// A stored document (one per kind, tenant and id).
#[derive(Debug, Clone, PartialEq)]
pub struct DocRow {
    pub kind: String,
    pub tenant: String,
    pub id: String,
    pub text: String,
    pub status: String,
    pub shadow: bool,
    pub revision: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub seq: i64,
    pub hash: String,
    /// JSON of [`crate::policy::overlay::Bundle`].
    pub bundle: String,
    pub created_at_ms: i64,
}

/// The current modes and the change that made them (epoch 0: never changed, enforcing).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModesRow {
    pub epoch: i64,
    pub global: String,
    /// JSON object: tenant → mode.
    pub tenants: String,
    pub reason: String,
    pub actor: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub reason: String,
    pub before: String,
    pub after: String,
    pub critical: bool,
    pub replica: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRow {
    pub seq: i64,
    pub approval_id: String,
    pub decision: String,
    pub reason: String,
    pub actor: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SidecarRow {
    pub sidecar_id: String,
    pub tenant: String,
    pub project: String,
    pub agent: String,
    pub version: String,
    pub snapshot: String,
    pub modes_epoch: i64,
    pub replica: String,
    pub connected: bool,
    pub last_seen_ms: i64,
    pub unshipped_records: i64,
    pub refused_snapshot: String,
}

/// One evidence record as shipped.
#[derive(Debug, Clone)]
pub struct EvidenceIn {
    pub evidence_id: String,
    pub seq: i64,
    pub hash: String,
    pub prev: String,
    pub body: Vec<u8>,
    /// Checked by the caller: the body hashes to `hash` and decodes to this id, seq and prev.
    pub intact: bool,
    pub run_id: String,
    /// When the record is a PAUSE refusal: its approval id and tenant.
    pub approval: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    pub stored: u32,
    pub duplicates: u32,
    pub issues: Vec<String>,
    pub stored_through: i64,
}

fn migrations(pg: bool) -> Migrator {
    let (sql, name) = if pg {
        (
            include_str!("../../migrations/postgres/0001_init.sql"),
            "init (postgres)",
        )
    } else {
        (
            include_str!("../../migrations/sqlite/0001_init.sql"),
            "init (sqlite)",
        )
    };
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed(name),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )])
}

fn doc_row<R: Row>(r: &R) -> Result<DocRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DocRow {
        kind: r.try_get("kind")?,
        tenant: r.try_get("tenant")?,
        id: r.try_get("id")?,
        text: r.try_get("text")?,
        status: r.try_get("status")?,
        shadow: r.try_get("shadow")?,
        revision: r.try_get("revision")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        updated_by: r.try_get("updated_by")?,
    })
}

fn modes_row<R: Row>(r: &R) -> Result<ModesRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ModesRow {
        epoch: r.try_get("epoch")?,
        global: r.try_get("global")?,
        tenants: r.try_get("tenants")?,
        reason: r.try_get("reason")?,
        actor: r.try_get("actor")?,
        at_ms: r.try_get("at_ms")?,
    })
}

/// A mutation's plan: what to write, all in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub upserts: Vec<DocRow>,
    /// A new snapshot to record (hash, bundle JSON), when the documents' snapshot changed.
    pub snapshot: Option<(String, String)>,
    pub audit: Vec<AuditRow>,
}

impl Store {
    /// Open (and create, for SQLite) the store at `url` and run the migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts: PgConnectOptions = url.parse()?;
            Db::Pg(
                PgPoolOptions::new()
                    .max_connections(16)
                    .connect_with(opts)
                    .await?,
            )
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(10))
                .foreign_keys(true);
            Db::Lite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await?,
            )
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let pg = matches!(db, Db::Pg(_));
        let store = Store {
            db,
            write: tokio::sync::Mutex::new(()),
        };
        let m = migrations(pg);
        with_db!(store, p => m.run(p).await)?;
        Ok(store)
    }

    /// SQLite allows one writer: every write here takes the write lock, so a transaction never
    /// meets another's lock half-way (which SQLite answers with `database is locked` at once,
    /// whatever the busy timeout). PostgreSQL needs it only where [`Self::mutate`] does.
    async fn lite_writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.db {
            Db::Lite(_) => Some(self.write.lock().await),
            Db::Pg(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Pg(_))
    }

    /// What serialises mutations across replicas inside a transaction.
    fn lock_sql(&self) -> &'static str {
        match self.db {
            Db::Pg(_) => "SELECT pg_advisory_xact_lock($1)",
            Db::Lite(_) => "SELECT $1",
        }
    }

    /// Tell the other replicas (PostgreSQL) that something changed; delivered on commit.
    fn notify_sql(&self) -> &'static str {
        match self.db {
            Db::Pg(_) => "SELECT pg_notify('warden_changes', $1)",
            Db::Lite(_) => "SELECT $1",
        }
    }

    pub async fn documents(&self) -> Result<Vec<DocRow>, StoreError> {
        let sql =
            "SELECT kind, tenant, id, text, status, shadow, revision, updated_at_ms, updated_by \
                   FROM documents ORDER BY kind, tenant, id";
        with_db!(self, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(doc_row).collect::<Result<Vec<_>, _>>().map_err(StoreError::from)
        })
    }

    pub async fn current_snapshot(&self) -> Result<Option<SnapshotRow>, StoreError> {
        let sql =
            "SELECT seq, hash, bundle, created_at_ms FROM snapshots ORDER BY seq DESC LIMIT 1";
        with_db!(self, p => {
            let row = sqlx::query(sql).fetch_optional(p).await?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some(SnapshotRow {
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash")?,
                    bundle: r.try_get("bundle")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })),
            }
        })
    }

    /// Run `plan` on the current documents under the write lock and commit what it returns:
    /// upserts, perhaps a snapshot, audit rows. `plan` sees the documents as they are inside
    /// the lock, so concurrent mutations (on any replica) build on each other.
    pub async fn mutate<T, E>(
        &self,
        plan: impl FnOnce(Vec<DocRow>) -> Result<(Change, T), E>,
    ) -> Result<Result<(T, Option<i64>), E>, StoreError> {
        let _w = self.write.lock().await;
        let select =
            "SELECT kind, tenant, id, text, status, shadow, revision, updated_at_ms, updated_by \
                      FROM documents ORDER BY kind, tenant, id";
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(self.lock_sql()).bind(LOCK_KEY).execute(&mut *tx).await?;
            let rows = sqlx::query(select).fetch_all(&mut *tx).await?;
            let docs = rows.iter().map(doc_row).collect::<Result<Vec<_>, _>>()?;
            let (change, out) = match plan(docs) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            for d in &change.upserts {
                sqlx::query(
                    "INSERT INTO documents (kind, tenant, id, text, status, shadow, revision, updated_at_ms, updated_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (kind, tenant, id) DO UPDATE SET text = excluded.text, status = excluded.status, \
                     shadow = excluded.shadow, revision = excluded.revision, updated_at_ms = excluded.updated_at_ms, \
                     updated_by = excluded.updated_by",
                )
                .bind(&d.kind).bind(&d.tenant).bind(&d.id).bind(&d.text).bind(&d.status)
                .bind(d.shadow).bind(d.revision).bind(d.updated_at_ms).bind(&d.updated_by)
                .execute(&mut *tx).await?;
            }
            let mut seq = None;
            if let Some((hash, bundle)) = &change.snapshot {
                let actor = change.audit.first().map(|a| a.actor.clone()).unwrap_or_default();
                let reason = change.audit.first().map(|a| a.reason.clone()).unwrap_or_default();
                let r = sqlx::query(
                    "INSERT INTO snapshots (hash, bundle, created_at_ms, created_by, reason) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                )
                .bind(hash).bind(bundle).bind(now_ms()).bind(actor).bind(reason)
                .fetch_one(&mut *tx).await?;
                seq = Some(r.try_get::<i64, _>("seq")?);
            }
            for a in &change.audit {
                insert_audit!(tx, a);
            }
            if seq.is_some() {
                sqlx::query(self.notify_sql()).bind("snapshot").execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Ok((out, seq)))
        })
    }

    pub async fn modes(&self) -> Result<ModesRow, StoreError> {
        let sql = "SELECT epoch, global, tenants, reason, actor, at_ms FROM mode_changes ORDER BY epoch DESC LIMIT 1";
        with_db!(self, p => {
            match sqlx::query(sql).fetch_optional(p).await? {
                None => Ok(ModesRow {
                    global: "enforcing".into(),
                    tenants: "{}".into(),
                    ..ModesRow::default()
                }),
                Some(r) => Ok(modes_row(&r)?),
            }
        })
    }

    /// Change the modes: `plan` sees the current modes under the write lock and returns the new
    /// (global, tenants JSON) with the audit row; both are committed together.
    pub async fn set_modes<E>(
        &self,
        plan: impl FnOnce(&ModesRow) -> Result<(String, String, AuditRow), E>,
    ) -> Result<Result<(ModesRow, ModesRow), E>, StoreError> {
        let _w = self.write.lock().await;
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(self.lock_sql()).bind(LOCK_KEY).execute(&mut *tx).await?;
            let before = match sqlx::query(
                "SELECT epoch, global, tenants, reason, actor, at_ms FROM mode_changes ORDER BY epoch DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx).await? {
                None => ModesRow { global: "enforcing".into(), tenants: "{}".into(), ..ModesRow::default() },
                Some(r) => modes_row(&r)?,
            };
            let (global, tenants, audit) = match plan(&before) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let at = now_ms();
            let r = sqlx::query(
                "INSERT INTO mode_changes (global, tenants, reason, actor, at_ms) VALUES ($1, $2, $3, $4, $5) RETURNING epoch",
            )
            .bind(&global).bind(&tenants).bind(&audit.reason).bind(&audit.actor).bind(at)
            .fetch_one(&mut *tx).await?;
            let epoch: i64 = r.try_get("epoch")?;
            insert_audit!(tx, &audit);
            sqlx::query(self.notify_sql()).bind("modes").execute(&mut *tx).await?;
            tx.commit().await?;
            let after = ModesRow { epoch, global, tenants, reason: audit.reason, actor: audit.actor, at_ms: at };
            Ok(Ok((before, after)))
        })
    }

    pub async fn append_audit(&self, a: &AuditRow) -> Result<(), StoreError> {
        let _w = self.lite_writer().await;
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            insert_audit!(tx, a);
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn audit(
        &self,
        after_seq: i64,
        limit: i64,
        action: &str,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let sql =
            "SELECT seq, at_ms, actor, action, target, reason, before, after, critical, replica \
                   FROM audit WHERE seq > $1 AND ($2 = '' OR action = $2) ORDER BY seq LIMIT $3";
        with_db!(self, p => {
            let rows = sqlx::query(sql).bind(after_seq).bind(action).bind(limit).fetch_all(p).await?;
            rows.iter().map(|r| Ok(AuditRow {
                seq: r.try_get("seq")?,
                at_ms: r.try_get("at_ms")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                reason: r.try_get("reason")?,
                before: r.try_get("before")?,
                after: r.try_get("after")?,
                critical: r.try_get("critical")?,
                replica: r.try_get("replica")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>().map_err(StoreError::from)
        })
    }

    /// Whether an approval id was seen pending (in shipped evidence), and its tenant.
    pub async fn pending_approval(&self, id: &str) -> Result<Option<String>, StoreError> {
        with_db!(self, p => {
            let r = sqlx::query("SELECT tenant FROM pending_approvals WHERE approval_id = $1")
                .bind(id).fetch_optional(p).await?;
            Ok(match r { Some(r) => Some(r.try_get("tenant")?), None => None })
        })
    }

    /// Record an approval decision with its audit row. `Ok(None)`: it was already decided.
    pub async fn decide_approval(
        &self,
        id: &str,
        decision: &str,
        audit: &AuditRow,
    ) -> Result<Option<ApprovalRow>, StoreError> {
        let _w = self.write.lock().await;
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            let at = now_ms();
            let r = sqlx::query(
                "INSERT INTO approval_decisions (approval_id, decision, reason, actor, at_ms) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (approval_id) DO NOTHING RETURNING seq",
            )
            .bind(id).bind(decision).bind(&audit.reason).bind(&audit.actor).bind(at)
            .fetch_optional(&mut *tx).await?;
            let Some(r) = r else { return Ok(None) };
            let seq: i64 = r.try_get("seq")?;
            insert_audit!(tx, audit);
            sqlx::query(self.notify_sql()).bind("approval").execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(ApprovalRow { seq, approval_id: id.into(), decision: decision.into(), reason: audit.reason.clone(), actor: audit.actor.clone(), at_ms: at }))
        })
    }

    /// Approval decisions after `seq` (and none older than `since_ms`).
    pub async fn approvals_after(
        &self,
        seq: i64,
        since_ms: i64,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let sql =
            "SELECT seq, approval_id, decision, reason, actor, at_ms FROM approval_decisions \
                   WHERE seq > $1 AND at_ms >= $2 ORDER BY seq";
        with_db!(self, p => {
            let rows = sqlx::query(sql).bind(seq).bind(since_ms).fetch_all(p).await?;
            rows.iter().map(|r| Ok(ApprovalRow {
                seq: r.try_get("seq")?,
                approval_id: r.try_get("approval_id")?,
                decision: r.try_get("decision")?,
                reason: r.try_get("reason")?,
                actor: r.try_get("actor")?,
                at_ms: r.try_get("at_ms")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>().map_err(StoreError::from)
        })
    }

    pub async fn last_approval_seq(&self) -> Result<i64, StoreError> {
        with_db!(self, p => {
            let r = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM approval_decisions").fetch_one(p).await?;
            Ok(r.try_get::<i64, _>("m")?)
        })
    }

    pub async fn upsert_sidecar(&self, s: &SidecarRow) -> Result<(), StoreError> {
        let _w = self.lite_writer().await;
        let sql = "INSERT INTO sidecars (sidecar_id, tenant, project, agent, version, snapshot, modes_epoch, replica, connected, last_seen_ms, unshipped_records, refused_snapshot) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                   ON CONFLICT (sidecar_id) DO UPDATE SET tenant = excluded.tenant, project = excluded.project, agent = excluded.agent, \
                   version = excluded.version, snapshot = excluded.snapshot, modes_epoch = excluded.modes_epoch, replica = excluded.replica, \
                   connected = excluded.connected, last_seen_ms = excluded.last_seen_ms, unshipped_records = excluded.unshipped_records, \
                   refused_snapshot = excluded.refused_snapshot";
        with_db!(self, p => {
            sqlx::query(sql)
                .bind(&s.sidecar_id).bind(&s.tenant).bind(&s.project).bind(&s.agent).bind(&s.version)
                .bind(&s.snapshot).bind(s.modes_epoch).bind(&s.replica).bind(s.connected).bind(s.last_seen_ms)
                .bind(s.unshipped_records).bind(&s.refused_snapshot)
                .execute(p).await?;
            Ok(())
        })
    }

    pub async fn sidecar(&self, id: &str) -> Result<Option<SidecarRow>, StoreError> {
        Ok(self
            .sidecars()
            .await?
            .into_iter()
            .find(|s| s.sidecar_id == id))
    }

    pub async fn sidecars(&self) -> Result<Vec<SidecarRow>, StoreError> {
        let sql = "SELECT sidecar_id, tenant, project, agent, version, snapshot, modes_epoch, replica, connected, last_seen_ms, unshipped_records, refused_snapshot \
                   FROM sidecars ORDER BY sidecar_id";
        with_db!(self, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(|r| Ok(SidecarRow {
                sidecar_id: r.try_get("sidecar_id")?,
                tenant: r.try_get("tenant")?,
                project: r.try_get("project")?,
                agent: r.try_get("agent")?,
                version: r.try_get("version")?,
                snapshot: r.try_get("snapshot")?,
                modes_epoch: r.try_get("modes_epoch")?,
                replica: r.try_get("replica")?,
                connected: r.try_get("connected")?,
                last_seen_ms: r.try_get("last_seen_ms")?,
                unshipped_records: r.try_get("unshipped_records")?,
                refused_snapshot: r.try_get("refused_snapshot")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>().map_err(StoreError::from)
        })
    }

    /// Store a batch of one sidecar's evidence, in chain order: each record once (by evidence
    /// id), its chain checked against what is stored. A gap or a fork is reported (an audit row
    /// and a `chain_issues` row) and the record stored flagged, never silently.
    pub async fn ingest(
        &self,
        sidecar: &str,
        records: &[EvidenceIn],
        replica: &str,
    ) -> Result<IngestOutcome, StoreError> {
        let mut out = IngestOutcome::default();
        let _w = self.lite_writer().await;
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            let head = sqlx::query("SELECT next_seq, head_hash FROM chains WHERE sidecar_id = $1")
                .bind(sidecar).fetch_optional(&mut *tx).await?;
            let (mut next_seq, mut head_hash): (i64, String) = match head {
                Some(r) => (r.try_get("next_seq")?, r.try_get("head_hash")?),
                None => (0, crate::evidence::record::genesis()),
            };
            let at = now_ms();
            // What of this batch is stored already: one query per 500 ids, not one per record.
            let mut known: std::collections::HashMap<String, String> = std::collections::HashMap::new();
            for chunk in records.chunks(500) {
                let mut q = sqlx::QueryBuilder::new("SELECT evidence_id, hash FROM evidence WHERE evidence_id IN (");
                let mut list = q.separated(", ");
                for rec in chunk {
                    list.push_bind(rec.evidence_id.clone());
                }
                q.push(")");
                for r in q.build().fetch_all(&mut *tx).await? {
                    known.insert(r.try_get("evidence_id")?, r.try_get("hash")?);
                }
            }
            let mut new: Vec<(&EvidenceIn, bool)> = Vec::new();
            for rec in records {
                out.stored_through = out.stored_through.max(rec.seq);
                if let Some(h) = known.get(&rec.evidence_id) {
                    if *h == rec.hash {
                        out.duplicates += 1;
                    } else {
                        out.issues.push(format!(
                            "fork: evidence {} (seq {}) arrived again with hash {} where {} is stored",
                            rec.evidence_id, rec.seq, rec.hash, h
                        ));
                    }
                    continue;
                }
                let mut issue = None;
                if !rec.intact {
                    issue = Some(format!("damaged: evidence {} (seq {}) does not hash to {} or does not decode to what it claims", rec.evidence_id, rec.seq, rec.hash));
                } else if rec.seq == next_seq && rec.prev == head_hash {
                    next_seq += 1;
                    head_hash = rec.hash.clone();
                } else if rec.seq < next_seq {
                    issue = Some(format!("fork: evidence {} claims seq {}, which the chain already has (next {next_seq})", rec.evidence_id, rec.seq));
                } else {
                    issue = Some(if rec.seq > next_seq {
                        format!("gap: seq {} arrived where {next_seq} was expected", rec.seq)
                    } else {
                        format!("fork: seq {} names prev {} where the chain's head is {head_hash}", rec.seq, rec.prev)
                    });
                    // Carry on from this record, so one gap is reported once.
                    next_seq = rec.seq + 1;
                    head_hash = rec.hash.clone();
                }
                known.insert(rec.evidence_id.clone(), rec.hash.clone());
                new.push((rec, issue.is_none()));
                if let Some(i) = issue {
                    out.issues.push(i);
                }
            }
            // Many rows per statement (9 values a row, well inside every placeholder limit).
            for chunk in new.chunks(100) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO evidence (evidence_id, sidecar_id, seq, hash, prev, body, chain_ok, run_id, received_at_ms) ",
                );
                q.push_values(chunk, |mut b, (rec, ok)| {
                    b.push_bind(rec.evidence_id.clone())
                        .push_bind(sidecar.to_string())
                        .push_bind(rec.seq)
                        .push_bind(rec.hash.clone())
                        .push_bind(rec.prev.clone())
                        .push_bind(rec.body.clone())
                        .push_bind(*ok)
                        .push_bind(rec.run_id.clone())
                        .push_bind(at);
                });
                q.build().execute(&mut *tx).await?;
                out.stored += chunk.len() as u32;
            }
            for (rec, _) in &new {
                if let Some((approval, tenant)) = &rec.approval {
                    sqlx::query(
                        "INSERT INTO pending_approvals (approval_id, sidecar_id, run_id, tenant, at_ms) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (approval_id) DO NOTHING",
                    )
                    .bind(approval).bind(sidecar).bind(&rec.run_id).bind(tenant).bind(at)
                    .execute(&mut *tx).await?;
                }
            }
            for i in &out.issues {
                sqlx::query(
                    "INSERT INTO chain_issues (sidecar_id, record_seq, evidence_id, issue, at_ms) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(sidecar).bind(out.stored_through).bind("").bind(i).bind(at)
                .execute(&mut *tx).await?;
                let a = AuditRow {
                    seq: 0, at_ms: at, actor: format!("sidecar:{sidecar}"), action: "evidence_chain_issue".into(),
                    target: sidecar.into(), reason: i.clone(), before: String::new(), after: String::new(),
                    critical: true, replica: replica.into(),
                };
                insert_audit!(tx, &a);
            }
            sqlx::query(
                "INSERT INTO chains (sidecar_id, next_seq, head_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (sidecar_id) DO UPDATE SET next_seq = excluded.next_seq, head_hash = excluded.head_hash",
            )
            .bind(sidecar).bind(next_seq).bind(&head_hash)
            .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// How many evidence records the store holds (all sidecars, or one).
    pub async fn evidence_count(&self, sidecar: Option<&str>) -> Result<i64, StoreError> {
        with_db!(self, p => {
            let r = sqlx::query("SELECT COUNT(*) AS n FROM evidence WHERE ($1 = '' OR sidecar_id = $1)")
                .bind(sidecar.unwrap_or("")).fetch_one(p).await?;
            Ok(r.try_get::<i64, _>("n")?)
        })
    }

    /// Evidence ids of one sidecar in seq order, with their chain flags.
    pub async fn evidence_of(&self, sidecar: &str) -> Result<Vec<(i64, String, bool)>, StoreError> {
        with_db!(self, p => {
            let rows = sqlx::query("SELECT seq, evidence_id, chain_ok FROM evidence WHERE sidecar_id = $1 ORDER BY seq")
                .bind(sidecar).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("evidence_id")?, r.try_get("chain_ok")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>().map_err(StoreError::from)
        })
    }

    /// Where a sidecar's chain stands on the service: (next seq, head hash).
    pub async fn chain_head(&self, sidecar: &str) -> Result<Option<(i64, String)>, StoreError> {
        with_db!(self, p => {
            let r = sqlx::query("SELECT next_seq, head_hash FROM chains WHERE sidecar_id = $1")
                .bind(sidecar).fetch_optional(p).await?;
            Ok(match r { Some(r) => Some((r.try_get("next_seq")?, r.try_get("head_hash")?)), None => None })
        })
    }

    /// Run one statement (tests use it to prove the append-only triggers).
    pub async fn execute_raw(&self, sql: &'static str) -> Result<u64, StoreError> {
        with_db!(self, p => Ok(sqlx::query(sql).execute(p).await?.rows_affected()))
    }
}

pub fn now_ms() -> i64 {
    crate::spine::state::Runtime::now_ms() as i64
}
