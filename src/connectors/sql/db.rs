//! The databases: one bounded pool per (tenant, connector), created on first use, and the
//! run of one template in a read-only, time-boxed transaction on PostgreSQL or SQLite, its
//! rows read as JSON until the cap.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use futures_util::TryStreamExt;
use serde_json::Value as Json;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::types::BigDecimal;
use sqlx::{AssertSqlSafe, Column, Row, TypeInfo, ValueRef};

use super::numeric;
use super::params::{fmt_date, fmt_timestamp, fmt_timestamptz, Bound, Scalar};
use crate::codes::Code;
use crate::policy::model::ParamType;
use crate::spine::Refusal;

/// The longest a call waits for a connection (less when its time-out is shorter): a database
/// that cannot be reached answers `upstream_error` in this time, not the statement time-out.
pub const ACQUIRE_MS: u64 = 1_000;

/// A connector's pool.
#[derive(Clone, Debug)]
pub enum Db {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// The pools, by tenant and connector; a connector whose URL changed (a new snapshot, a
/// rotated credential) gets a new pool.
#[derive(Default)]
pub struct Pools {
    by_connector: Mutex<HashMap<PoolKey, ([u8; 32], Db)>>,
}

/// (tenant, connector).
type PoolKey = (Box<str>, Box<str>);

impl Pools {
    /// The pool of `connector` of `tenant` at `url` (resolved from its credential reference),
    /// at most `size` connections, created lazily: no connection is opened until a call needs
    /// one. A pool replaced (its URL or size changed) closes once its calls are done.
    pub fn get(&self, tenant: &str, connector: &str, url: &str, size: u32) -> Result<Db, Refusal> {
        use sha2::Digest;
        let key = (Box::<str>::from(tenant), Box::<str>::from(connector));
        let mut h = sha2::Sha256::new();
        h.update(size.to_be_bytes());
        h.update(url.as_bytes());
        let fp: [u8; 32] = h.finalize().into();
        let mut map = match self.by_connector.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some((have, db)) = map.get(&key) {
            if *have == fp {
                return Ok(db.clone());
            }
        }
        let db = open(connector, url, size)?;
        if let Some((_, old)) = map.insert(key, (fp, db.clone())) {
            old.close_later();
        }
        Ok(db)
    }
}

fn bad_url(connector: &str) -> Refusal {
    Refusal::new(
        Code::UpstreamError,
        format!(
            "connector `{connector}`: its database URL is not usable (postgres://… or sqlite:…)"
        ),
    )
}

impl Db {
    /// The most connections this pool opens.
    pub fn size(&self) -> u32 {
        match self {
            Db::Pg(p) => p.options().get_max_connections(),
            Db::Sqlite(p) => p.options().get_max_connections(),
        }
    }

    /// Close the pool in the background: calls holding a connection finish first.
    fn close_later(self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match self {
                    Db::Pg(p) => p.close().await,
                    Db::Sqlite(p) => p.close().await,
                }
            });
        }
    }
}

fn open(connector: &str, url: &str, size: u32) -> Result<Db, Refusal> {
    let acquire = Duration::from_millis(ACQUIRE_MS);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Errors of the URL parser can quote the URL: never pass them on.
        let opts = PgConnectOptions::from_str(url).map_err(|_| bad_url(connector))?;
        let opts = opts.application_name("warden");
        // sqlx pings every connection as it is released (which also flushes the ROLLBACK a
        // dropped transaction queues), so one released a moment ago is known alive: ping on
        // acquire only those idle longer than a second (a database restarted meanwhile).
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .min_connections(0)
            .acquire_timeout(acquire)
            .idle_timeout(Duration::from_secs(300))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(opts);
        return Ok(Db::Pg(pool));
    }
    if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|_| bad_url(connector))?
            .read_only(true)
            .create_if_missing(false)
            .pragma("query_only", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(size)
            .min_connections(0)
            .acquire_timeout(acquire)
            .connect_lazy_with(opts);
        return Ok(Db::Sqlite(pool));
    }
    Err(bad_url(connector))
}

/// What a template run returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `(name, type)` of each column, as the database names the type (lower case).
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Json>>,
    /// More rows were there than `max_rows` (one more was fetched to know).
    pub more: bool,
    /// Time in the database.
    pub db_us: u64,
}

/// One run: the statement, its values, the cap and the time-out.
pub struct Run<'a> {
    pub connector: &'a str,
    pub statement: &'a str,
    pub values: &'a [Bound],
    pub max_rows: u64,
    pub timeout_ms: u64,
    /// Cut the read when the rows' JSON passes this many bytes (`body_too_large`).
    pub max_bytes: usize,
    /// Texts that must never appear in an error passed on (the URL and its password).
    pub secrets: &'a [String],
}

impl Run<'_> {
    /// The statement as run: the template wrapped so the database itself stops at one row
    /// past the cap (its own integer, never the agent's).
    fn capped(&self) -> String {
        format!(
            "SELECT * FROM ({}) AS warden_q LIMIT {}",
            self.statement,
            self.max_rows.saturating_add(1)
        )
    }

    fn scrub(&self, msg: String) -> String {
        let mut m = msg;
        for s in self.secrets.iter().filter(|s| s.len() >= 3) {
            m = m.replace(s.as_str(), "***");
        }
        m
    }

    /// A database error as a refusal: cancellation by the statement time-out (PostgreSQL
    /// `57014`, SQLite's interrupt) is `upstream_timeout`; everything else `upstream_error`.
    fn refusal(&self, e: sqlx::Error) -> Refusal {
        let c = self.connector;
        match &e {
            sqlx::Error::Database(d) => {
                let code = d.code().map(|c| c.to_string()).unwrap_or_default();
                let msg = self.scrub(d.message().to_string());
                match code.as_str() {
                    "57014" | "9" => Refusal::new(
                        Code::UpstreamTimeout,
                        format!(
                            "the query of connector `{c}` ran past {} ms and was cancelled",
                            self.timeout_ms
                        ),
                    ),
                    "25006" | "8" => Refusal::new(
                        Code::UpstreamError,
                        format!("the database of connector `{c}` refused a write (templates run read-only): {msg}"),
                    ),
                    _ => Refusal::new(
                        Code::UpstreamError,
                        format!("the database of connector `{c}` refused the query: {msg}"),
                    ),
                }
            }
            sqlx::Error::PoolTimedOut => Refusal::new(
                Code::UpstreamError,
                format!(
                    "connector `{c}` got no database connection within {ACQUIRE_MS} ms (the \
                     database is unreachable, or every connection of its pool is busy)"
                ),
            ),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Refusal::new(
                Code::UpstreamError,
                format!(
                    "a value from connector `{c}` could not be read: {}",
                    self.scrub(e.to_string())
                ),
            ),
            _ => Refusal::new(
                Code::UpstreamError,
                format!(
                    "the database of connector `{c}` is unreachable: {}",
                    self.scrub(e.to_string())
                ),
            ),
        }
    }

    fn timed_out(&self) -> Refusal {
        Refusal::new(
            Code::UpstreamTimeout,
            format!(
                "the database of connector `{}` did not answer within {} ms",
                self.connector, self.timeout_ms
            ),
        )
    }
}

/// Run a template. The whole run — a connection, the transaction, every row — is bounded by
/// the time-out plus the wait for a connection; the database cancels the statement itself at
/// the time-out (PostgreSQL `statement_timeout`, SQLite's progress handler), so nothing is
/// left running.
pub async fn run(db: &Db, r: &Run<'_>) -> Result<Outcome, Refusal> {
    let bound = Duration::from_millis(r.timeout_ms + ACQUIRE_MS.min(r.timeout_ms) + 500);
    let work = async {
        match db {
            Db::Pg(p) => run_pg(p, r).await,
            Db::Sqlite(p) => run_sqlite(p, r).await,
        }
    };
    match tokio::time::timeout(bound, work).await {
        Ok(out) => out,
        Err(_) => Err(r.timed_out()),
    }
}

async fn run_pg(pool: &PgPool, r: &Run<'_>) -> Result<Outcome, Refusal> {
    let acquire = Duration::from_millis(ACQUIRE_MS.min(r.timeout_ms));
    let conn = tokio::time::timeout(acquire, pool.acquire())
        .await
        .map_err(|_| r.refusal(sqlx::Error::PoolTimedOut))?
        .map_err(|e| r.refusal(e))?;
    // One round trip: both statements in one simple query.
    let begin = format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
        r.timeout_ms
    );
    let mut tx = sqlx::Transaction::begin(
        sqlx::pool::MaybePoolConnection::PoolConnection(conn),
        Some(sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(begin))),
    )
    .await
    .map_err(|e| r.refusal(e))?;
    let mut q = sqlx::query(AssertSqlSafe(r.capped()));
    for v in r.values {
        q = bind_pg(q, v);
    }
    let started = Instant::now();
    let mut out = Outcome {
        columns: Vec::new(),
        rows: Vec::new(),
        more: false,
        db_us: 0,
    };
    let mut bytes = 0usize;
    {
        let mut stream = q.fetch(&mut *tx);
        while let Some(row) = stream.try_next().await.map_err(|e| r.refusal(e))? {
            if out.columns.is_empty() {
                out.columns = row
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_string(), c.type_info().name().to_lowercase()))
                    .collect();
            }
            if out.rows.len() as u64 >= r.max_rows {
                out.more = true;
                break;
            }
            let cells = pg_row(&row, r)?;
            bytes += cells.iter().map(json_len).sum::<usize>();
            if bytes > r.max_bytes {
                return Err(too_large(r));
            }
            out.rows.push(cells);
        }
    }
    out.db_us = started.elapsed().as_micros() as u64;
    // Read-only: nothing to keep. Dropping the transaction queues its ROLLBACK, which the
    // connection's release flushes (and waits for) off the call's path.
    drop(tx);
    Ok(out)
}

fn too_large(r: &Run<'_>) -> Refusal {
    Refusal::new(
        Code::BodyTooLarge,
        format!(
            "the result of connector `{}` is larger than {} bytes",
            r.connector, r.max_bytes
        ),
    )
}

fn json_len(v: &Json) -> usize {
    match v {
        Json::String(s) => s.len() + 2,
        Json::Null => 4,
        other => other.to_string().len(),
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_pg<'q>(q: PgQuery<'q>, v: &Bound) -> PgQuery<'q> {
    match v {
        Bound::Null(t, false) => match t {
            ParamType::Int => q.bind(None::<i32>),
            ParamType::Bigint => q.bind(None::<i64>),
            ParamType::Float => q.bind(None::<f64>),
            ParamType::Numeric => q.bind(None::<BigDecimal>),
            ParamType::Bool => q.bind(None::<bool>),
            ParamType::Text | ParamType::Enum => q.bind(None::<String>),
            ParamType::Uuid => q.bind(None::<uuid::Uuid>),
            ParamType::Date => q.bind(None::<NaiveDate>),
            ParamType::Timestamp => q.bind(None::<NaiveDateTime>),
            ParamType::Timestamptz => q.bind(None::<DateTime<Utc>>),
            ParamType::Json => q.bind(None::<Json>),
        },
        Bound::Null(t, true) => match t {
            ParamType::Int => q.bind(None::<Vec<i32>>),
            ParamType::Bigint => q.bind(None::<Vec<i64>>),
            ParamType::Float => q.bind(None::<Vec<f64>>),
            ParamType::Numeric => q.bind(None::<Vec<BigDecimal>>),
            ParamType::Bool => q.bind(None::<Vec<bool>>),
            ParamType::Text | ParamType::Enum => q.bind(None::<Vec<String>>),
            ParamType::Uuid => q.bind(None::<Vec<uuid::Uuid>>),
            ParamType::Date => q.bind(None::<Vec<NaiveDate>>),
            ParamType::Timestamp => q.bind(None::<Vec<NaiveDateTime>>),
            ParamType::Timestamptz => q.bind(None::<Vec<DateTime<Utc>>>),
            ParamType::Json => q.bind(None::<Vec<Json>>),
        },
        Bound::One(s) => match s.clone() {
            Scalar::Int(n) => q.bind(n),
            Scalar::Bigint(n) => q.bind(n),
            Scalar::Float(f) => q.bind(f),
            Scalar::Numeric(d) => q.bind(d),
            Scalar::Bool(b) => q.bind(b),
            Scalar::Text(s) => q.bind(s),
            Scalar::Uuid(u) => q.bind(u),
            Scalar::Date(d) => q.bind(d),
            Scalar::Timestamp(t) => q.bind(t),
            Scalar::Timestamptz(t) => q.bind(t),
            Scalar::Json(v) => q.bind(v),
        },
        Bound::Many(t, items) => {
            macro_rules! many {
                ($variant:ident, $ty:ty) => {{
                    let v: Vec<$ty> = items
                        .iter()
                        .filter_map(|s| match s {
                            Scalar::$variant(x) => Some(x.clone()),
                            _ => None,
                        })
                        .collect();
                    q.bind(v)
                }};
            }
            match t {
                ParamType::Int => many!(Int, i32),
                ParamType::Bigint => many!(Bigint, i64),
                ParamType::Float => many!(Float, f64),
                ParamType::Numeric => many!(Numeric, BigDecimal),
                ParamType::Bool => many!(Bool, bool),
                ParamType::Text | ParamType::Enum => many!(Text, String),
                ParamType::Uuid => many!(Uuid, uuid::Uuid),
                ParamType::Date => many!(Date, NaiveDate),
                ParamType::Timestamp => many!(Timestamp, NaiveDateTime),
                ParamType::Timestamptz => many!(Timestamptz, DateTime<Utc>),
                ParamType::Json => many!(Json, Json),
            }
        }
    }
}

fn unreadable(r: &Run<'_>, column: &str, ty: &str) -> Refusal {
    Refusal::new(
        Code::UpstreamError,
        format!(
            "column `{column}` of connector `{}` has type {ty}, which Warden does not read: cast it in the template (`{column}::text`)",
            r.connector
        ),
    )
}

/// One PostgreSQL row as JSON cells: numbers as numbers (a float that is not finite as its
/// name), `numeric` as an exact decimal string, times in RFC 3339, `json`/`jsonb` as JSON,
/// `bytea` as base64, NULL as null.
fn pg_row(row: &PgRow, r: &Run<'_>) -> Result<Vec<Json>, Refusal> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_info().name().to_string();
        macro_rules! get {
            ($t:ty, $f:expr) => {{
                let v: Option<$t> = row.try_get(i).map_err(|e| r.refusal(e))?;
                v.map_or(Json::Null, $f)
            }};
        }
        macro_rules! arr {
            ($t:ty, $f:expr) => {{
                let v: Option<Vec<Option<$t>>> = row.try_get(i).map_err(|e| r.refusal(e))?;
                v.map_or(Json::Null, |items| {
                    Json::Array(
                        items
                            .into_iter()
                            .map(|x| x.map_or(Json::Null, $f))
                            .collect(),
                    )
                })
            }};
        }
        let cell = match ty.as_str() {
            "BOOL" => get!(bool, Json::Bool),
            "INT2" => get!(i16, Json::from),
            "INT4" => get!(i32, Json::from),
            "INT8" => get!(i64, Json::from),
            "OID" => get!(sqlx::postgres::types::Oid, |o| Json::from(o.0)),
            "FLOAT4" => get!(f32, |f| float(f64::from(f))),
            "FLOAT8" => get!(f64, float),
            "NUMERIC" => pg_numeric(row, i, r, false)?,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
                get!(String, Json::String)
            }
            "UUID" => get!(uuid::Uuid, uuid_text),
            "DATE" => get!(NaiveDate, |d| Json::String(fmt_date(&d))),
            "TIME" => get!(NaiveTime, |t| Json::String(
                t.format("%H:%M:%S%.f").to_string()
            )),
            "TIMESTAMP" => get!(NaiveDateTime, |t| Json::String(fmt_timestamp(&t))),
            "TIMESTAMPTZ" => get!(DateTime<Utc>, |t| Json::String(fmt_timestamptz(&t))),
            "JSON" | "JSONB" => get!(Json, |v| v),
            "BYTEA" => get!(Vec<u8>, bytes),
            "BOOL[]" => arr!(bool, Json::Bool),
            "INT2[]" => arr!(i16, Json::from),
            "INT4[]" => arr!(i32, Json::from),
            "INT8[]" => arr!(i64, Json::from),
            "FLOAT4[]" => arr!(f32, |f| float(f64::from(f))),
            "FLOAT8[]" => arr!(f64, float),
            "NUMERIC[]" => pg_numeric(row, i, r, true)?,
            "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "NAME[]" => arr!(String, Json::String),
            "UUID[]" => arr!(uuid::Uuid, uuid_text),
            "DATE[]" => arr!(NaiveDate, |d| Json::String(fmt_date(&d))),
            "TIMESTAMP[]" => arr!(NaiveDateTime, |t| Json::String(fmt_timestamp(&t))),
            "TIMESTAMPTZ[]" => arr!(DateTime<Utc>, |t| Json::String(fmt_timestamptz(&t))),
            "JSON[]" | "JSONB[]" => arr!(Json, |v| v),
            "BYTEA[]" => arr!(Vec<u8>, bytes),
            "VOID" => Json::Null,
            _ => {
                // A NULL of any type reads as null.
                let raw = row.try_get_raw(i).map_err(|e| r.refusal(e))?;
                if raw.is_null() {
                    Json::Null
                } else {
                    return Err(unreadable(r, col.name(), &ty.to_lowercase()));
                }
            }
        };
        cells.push(cell);
    }
    Ok(cells)
}

/// A `numeric` (or a `numeric[]`) as the exact text PostgreSQL prints: never in exponent form
/// (`0.0000001`, not `1E-7`), its scale kept (`1.10` stays `1.10`), `NaN` and the infinities
/// as those words.
fn pg_numeric(row: &PgRow, i: usize, r: &Run<'_>, many: bool) -> Result<Json, Refusal> {
    let raw = row.try_get_raw(i).map_err(|e| r.refusal(e))?;
    if raw.is_null() {
        return Ok(Json::Null);
    }
    let name = row.columns()[i].name();
    let bad = || unreadable(r, name, if many { "numeric[]" } else { "numeric" });
    let bytes = raw.as_bytes().map_err(|_| bad())?;
    let one = |b: &[u8]| numeric::text(b).map(Json::String).ok_or_else(bad);
    if !many {
        return one(bytes);
    }
    let items = numeric::array(bytes).ok_or_else(bad)?;
    items
        .into_iter()
        .map(|x| x.map_or(Ok(Json::Null), one))
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

fn uuid_text(u: uuid::Uuid) -> Json {
    Json::String(u.hyphenated().to_string())
}

/// Bytes as standard base64 with padding.
fn bytes(b: Vec<u8>) -> Json {
    Json::String(base64::engine::general_purpose::STANDARD.encode(b))
}

fn float(f: f64) -> Json {
    if f.is_finite() {
        Json::from(f)
    } else if f.is_nan() {
        Json::String("NaN".into())
    } else if f > 0.0 {
        Json::String("Infinity".into())
    } else {
        Json::String("-Infinity".into())
    }
}

async fn run_sqlite(pool: &SqlitePool, r: &Run<'_>) -> Result<Outcome, Refusal> {
    let acquire = Duration::from_millis(ACQUIRE_MS.min(r.timeout_ms));
    let mut conn = tokio::time::timeout(acquire, pool.acquire())
        .await
        .map_err(|_| r.refusal(sqlx::Error::PoolTimedOut))?
        .map_err(|e| r.refusal(e))?;
    // The statement time-out: SQLite calls this every 1,000 virtual-machine steps, and stops
    // the statement (SQLITE_INTERRUPT) once the deadline is past.
    let deadline = Instant::now() + Duration::from_millis(r.timeout_ms);
    conn.lock_handle()
        .await
        .map_err(|e| r.refusal(e))?
        .set_progress_handler(1_000, move || Instant::now() < deadline);
    let mut q = sqlx::query(AssertSqlSafe(r.capped()));
    for v in r.values {
        q = bind_sqlite(q, v);
    }
    let started = Instant::now();
    let mut out = Outcome {
        columns: Vec::new(),
        rows: Vec::new(),
        more: false,
        db_us: 0,
    };
    let mut bytes = 0usize;
    {
        let mut stream = q.fetch(&mut *conn);
        while let Some(row) = stream.try_next().await.map_err(|e| r.refusal(e))? {
            if out.columns.is_empty() {
                out.columns = row
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_string(), c.type_info().name().to_lowercase()))
                    .collect();
            }
            if out.rows.len() as u64 >= r.max_rows {
                out.more = true;
                break;
            }
            let cells = sqlite_row(&row, r)?;
            bytes += cells.iter().map(json_len).sum::<usize>();
            if bytes > r.max_bytes {
                return Err(too_large(r));
            }
            out.rows.push(cells);
        }
    }
    out.db_us = started.elapsed().as_micros() as u64;
    Ok(out)
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// SQLite has no types of its own for most of ours: numbers and booleans bind as numbers,
/// everything else as its canonical text (an array or a `json` value as JSON text).
fn bind_sqlite<'q>(q: SqliteQuery<'q>, v: &Bound) -> SqliteQuery<'q> {
    match v {
        Bound::Null(..) => q.bind(None::<String>),
        Bound::One(Scalar::Int(n)) => q.bind(*n),
        Bound::One(Scalar::Bigint(n)) => q.bind(*n),
        Bound::One(Scalar::Float(f)) => q.bind(*f),
        Bound::One(Scalar::Bool(b)) => q.bind(*b),
        Bound::One(Scalar::Numeric(d)) => q.bind(d.to_plain_string()),
        Bound::One(Scalar::Json(j)) => q.bind(j.to_string()),
        Bound::One(s) => match s.to_json() {
            Json::String(t) => q.bind(t),
            other => q.bind(other.to_string()),
        },
        Bound::Many(..) => q.bind(v.to_json().to_string()),
    }
}

/// One SQLite row as JSON cells, by each value's storage class.
fn sqlite_row(row: &SqliteRow, r: &Run<'_>) -> Result<Vec<Json>, Refusal> {
    let mut cells = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let raw = row.try_get_raw(i).map_err(|e| r.refusal(e))?;
        if raw.is_null() {
            cells.push(Json::Null);
            continue;
        }
        let class = raw.type_info().name().to_string();
        // A column declared BOOLEAN holds integers; it reads as true and false.
        let declared_bool = row.columns()[i].type_info().name() == "BOOLEAN";
        let cell = match class.as_str() {
            "INTEGER" | "BOOLEAN" => {
                let n = row.try_get::<i64, _>(i).map_err(|e| r.refusal(e))?;
                if declared_bool {
                    Json::Bool(n != 0)
                } else {
                    Json::from(n)
                }
            }
            "REAL" => float(row.try_get::<f64, _>(i).map_err(|e| r.refusal(e))?),
            "BLOB" => bytes(row.try_get::<Vec<u8>, _>(i).map_err(|e| r.refusal(e))?),
            _ => Json::String(row.try_get::<String, _>(i).map_err(|e| r.refusal(e))?),
        };
        cells.push(cell);
    }
    Ok(cells)
}
