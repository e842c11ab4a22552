//! Loopback load of the SQL and MCP channels (`cargo bench --bench channel_load`; figures in
//! `BENCHMARKS.md`, "SQL channel" and "MCP channel").
//!
//! **MCP**: `tools/call get_ticket` (2026-07-28, stateless) to the tickets mock, which runs in
//! this process on a runtime of its own, straight ("direct") and through the sidecar's `/mcp`
//! (the same request; the sidecar speaks 2026-07-28 to the mock too).
//!
//! **SQL**:
//! The contract's `customer_by_id` template (one row by primary key out of 1,000) on a
//! throwaway PostgreSQL cluster (`tests/common/pg.rs`) and on a SQLite file, three ways in the
//! same run, since the machines are shared and noisy:
//!
//! - **direct**: the template's statement straight through a sqlx pool of 16 connections;
//! - **direct, as Warden runs it**: the same statement in what the SQL connector wraps it in
//!   (PostgreSQL: `BEGIN READ ONLY; SET LOCAL statement_timeout` in one round trip, the
//!   row-capped statement, the `ROLLBACK` left to the connection's release; SQLite: the
//!   row-capped statement on a read-only `query_only` pool) — the database's share of the
//!   sidecar's cost;
//! - **sidecar**: `POST /sql/customer_by_id` over 16 keep-alive HTTP/1.1 connections to a
//!   sidecar (`target/release/warden sidecar`, evidence `durability: os`) whose connector pool
//!   has 16 connections.
//!
//! Phases: sequential latency (one caller), open-loop latency at a fixed rate (16 callers each
//! sending every 16 ms — far longer than a call, so no call waits behind another in the client;
//! a call is timed from its actual send, since tokio's millisecond timer would add its own
//! lateness to a time taken from the schedule), and closed-loop throughput (16 callers).
//! `WARDEN_LOAD_QUICK=1` shortens every phase (a look while tuning); `WARDEN_LOAD_ONLY=mcp`
//! (or `pg`, `sqlite`) runs one part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row};
use tokio::net::TcpStream;

const CONNS: usize = 16;
const RATE: u64 = 1_000;
const ROWS: i64 = 1_000;
const STATEMENT: &str = "SELECT id, name, tier FROM customers WHERE id = $1";
const CAPPED: &str =
    "SELECT * FROM (SELECT id, name, tier FROM customers WHERE id = $1) AS warden_q LIMIT 101";
const CRM_ENV: &str = "WARDEN_SQL_LOAD_CRM";

struct Phases {
    seq: usize,
    open: Duration,
    closed: Duration,
    warm: Duration,
}

fn phases() -> Phases {
    if std::env::var_os("WARDEN_LOAD_QUICK").is_some() {
        Phases {
            seq: 300,
            open: Duration::from_secs(2),
            closed: Duration::from_secs(2),
            warm: Duration::from_millis(300),
        }
    } else {
        Phases {
            seq: 3_000,
            open: Duration::from_secs(6),
            closed: Duration::from_secs(6),
            warm: Duration::from_secs(1),
        }
    }
}

// === the ways a call is made ===

#[derive(Clone)]
enum Way {
    /// `POST /sql/customer_by_id` to a sidecar.
    Sidecar(SocketAddr),
    /// `tools/call get_ticket` to an MCP server at this address (the sidecar's `/mcp`, or the
    /// mock's).
    Mcp(SocketAddr),
    Pg {
        pool: PgPool,
        wrapped: bool,
    },
    Sqlite {
        pool: SqlitePool,
        wrapped: bool,
    },
}

/// One caller's means of making calls.
enum Caller {
    Http(SocketAddr, SendRequest<Full<Bytes>>),
    Mcp(SocketAddr, SendRequest<Full<Bytes>>),
    Pg(PgPool, bool),
    Sqlite(SqlitePool, bool),
}

impl Way {
    async fn caller(&self) -> Caller {
        match self {
            Way::Sidecar(addr) => Caller::Http(*addr, connect(*addr).await),
            Way::Mcp(addr) => Caller::Mcp(*addr, connect(*addr).await),
            Way::Pg { pool, wrapped } => Caller::Pg(pool.clone(), *wrapped),
            Way::Sqlite { pool, wrapped } => Caller::Sqlite(pool.clone(), *wrapped),
        }
    }
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// A ticket without PII (ticket 7's body holds an address the contract's detector refuses).
fn ticket_of(id: i64) -> i64 {
    [1, 2, 3, 4, 5, 6, 8][(id as usize) % 7]
}

/// `tools/call get_ticket {id}`, stateless (2026-07-28).
fn mcp_request(addr: SocketAddr, id: i64) -> http::Request<Full<Bytes>> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "get_ticket", "arguments": { "id": id },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    http::Request::post("/mcp")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get_ticket")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Whether `resp` is 200 with `want` in its body.
async fn answered(resp: http::Response<hyper::body::Incoming>, want: &str) -> bool {
    let ok = resp.status() == http::StatusCode::OK;
    let body = resp.into_body().collect().await;
    ok && body.is_ok_and(|b| {
        b.to_bytes()
            .windows(want.len())
            .any(|w| w == want.as_bytes())
    })
}

impl Caller {
    /// One call for customer (or ticket) `id`; true when it returned that row (or ticket).
    async fn call(&mut self, id: i64) -> bool {
        match self {
            Caller::Mcp(addr, tx) => {
                if tx.ready().await.is_err() {
                    return false;
                }
                let id = ticket_of(id);
                match tx.send_request(mcp_request(*addr, id)).await {
                    Ok(resp) => answered(resp, "\"structuredContent\":{\"body\"").await,
                    Err(_) => false,
                }
            }
            Caller::Http(addr, tx) => {
                if tx.ready().await.is_err() {
                    return false;
                }
                let req = http::Request::post("/sql/customer_by_id")
                    .header(http::header::HOST, addr.to_string())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(format!("{{\"id\":{id}}}"))))
                    .unwrap();
                match tx.send_request(req).await {
                    Ok(resp) => answered(resp, &format!("\"rows\":[[{id},")).await,
                    Err(_) => false,
                }
            }
            Caller::Pg(pool, wrapped) => {
                if !*wrapped {
                    let row = sqlx::query(STATEMENT)
                        .bind(id as i32)
                        .fetch_one(&*pool)
                        .await;
                    return row.is_ok_and(|r| r.get::<i32, _>(0) == id as i32);
                }
                let begin = "BEGIN READ ONLY; SET LOCAL statement_timeout = 2000";
                let Ok(mut tx) = pool.begin_with(begin).await else {
                    return false;
                };
                let rows = sqlx::query(CAPPED)
                    .bind(id as i32)
                    .fetch_all(&mut *tx)
                    .await;
                // Dropped, not awaited: the release of the connection flushes the ROLLBACK.
                drop(tx);
                rows.is_ok_and(|r| r.len() == 1)
            }
            Caller::Sqlite(pool, wrapped) => {
                let q = if *wrapped { CAPPED } else { STATEMENT };
                let rows = sqlx::query(q).bind(id).fetch_all(&*pool).await;
                rows.is_ok_and(|r| r.len() == 1)
            }
        }
    }
}

fn id_of(n: u64) -> i64 {
    (n as i64 * 7919) % ROWS + 1
}

// === statistics ===

struct Stats {
    lat: Vec<u64>,
    errors: u64,
    rps: f64,
}

impl Stats {
    fn new(mut lat: Vec<u64>, errors: u64, wall: Duration) -> Stats {
        lat.sort_unstable();
        let rps = lat.len() as f64 / wall.as_secs_f64();
        Stats { lat, errors, rps }
    }
    fn ms(&self, q: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        self.lat[((self.lat.len() - 1) as f64 * q) as usize] as f64 / 1e6
    }
}

// === phases ===

async fn sequential(way: &Way, n: usize) -> Stats {
    let mut c = way.caller().await;
    for i in 0..(n / 10) as u64 {
        c.call(id_of(i)).await;
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    let t0 = Instant::now();
    for i in 0..n as u64 {
        let s = Instant::now();
        if c.call(id_of(i)).await {
            lat.push(s.elapsed().as_nanos() as u64);
        } else {
            errors += 1;
        }
    }
    Stats::new(lat, errors, t0.elapsed())
}

async fn closed(way: &Way, warm: Duration, dur: Duration) -> Stats {
    let mut tasks = Vec::new();
    for k in 0..CONNS {
        let way = way.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = way.caller().await;
            let start = Instant::now();
            let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, k as u64);
            loop {
                let s = Instant::now();
                let since = s - start;
                if since >= warm + dur {
                    break;
                }
                let ok = c.call(id_of(i)).await;
                i += CONNS as u64;
                if since >= warm {
                    if ok {
                        lat.push(s.elapsed().as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    Stats::new(lat, errors, dur)
}

async fn open(way: &Way, warm: Duration, dur: Duration) -> Stats {
    let per = Duration::from_nanos(1_000_000_000 * CONNS as u64 / RATE);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for k in 0..CONNS {
        let way = way.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = way.caller().await;
            let offset = per * k as u32 / CONNS as u32;
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let mut n = 0u64;
            loop {
                let due = start + offset + per * n as u32;
                if due >= start + warm + dur {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let ok = c.call(id_of(n * CONNS as u64 + k as u64)).await;
                if due >= start + warm {
                    if ok {
                        lat.push(sent.elapsed().as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    Stats::new(lat, errors, dur)
}

// === the sidecar ===

struct Sidecar {
    child: Child,
    agent: SocketAddr,
    dir: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_sidecar(bin: &Path, name: &str, url: &str, mcp: Option<&str>) -> Sidecar {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("warden-sql-load-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let contract = include_str!("../examples/contract/bundle.yaml");
    let bundle = contract
        .replace(
            "sql: { url: env:CRM_DATABASE_URL }",
            &format!("sql: {{ url: env:{CRM_ENV}, pool_size: {CONNS} }}"),
        )
        // The contract's 60 queries a minute, raised so the load is metered but never refused.
        .replace(
            "{ metric: queries, window: 1m, max: 60, on_breach: stop }",
            "{ metric: queries, window: 1m, max: 1000000000, on_breach: stop }",
        );
    assert_ne!(bundle, contract);
    let bundle = match mcp {
        Some(u) => bundle.replace("http://127.0.0.1:18082/mcp", u),
        None => bundle,
    };
    std::fs::write(dir.join("bundle.yaml"), bundle).unwrap();
    std::fs::write(
        dir.join("sidecar.yaml"),
        "identity: { tenant: acme, project: support, agent: support-bot }\n\
         listen: { agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\n\
         policy: { source: file, files: [bundle.yaml], cache_dir: cache }\n\
         evidence: { spool_dir: evidence, durability: os }\n",
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args(["sidecar", "--config"])
        .arg(dir.join("sidecar.yaml"))
        .env(CRM_ENV, url)
        .env("OPENAI_API_KEY", "unused")
        .env("WEATHER_AUTH", "unused")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = support::agent_addr(&mut child, name);
    Sidecar { child, agent, dir }
}

impl Sidecar {
    /// The sidecar's own view of the calls that arrived in `window` (unix ms), from its
    /// evidence records: p50 of a call's time inside the sidecar (arrival to record) and of its
    /// time in the database, in ms.
    fn inside(&self, window: (u64, u64)) -> Option<(f64, f64)> {
        let recs: Vec<_> = warden::evidence::read_all(&self.dir.join("evidence"))
            .ok()?
            .into_iter()
            .map(|r| r.record)
            .filter(|r| {
                (r.sql.is_some() || r.mcp.is_some()) && (window.0..window.1).contains(&r.at_ms)
            })
            .collect();
        if recs.is_empty() {
            return None;
        }
        let p50 = |mut v: Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2] as f64 / 1000.0
        };
        Some((
            p50(recs.iter().map(|r| r.latency_us).collect()),
            p50(recs
                .iter()
                .filter_map(|r| {
                    r.sql
                        .map(|s| s.db_us)
                        .or(r.mcp.as_ref().map(|m| m.upstream_us))
                })
                .collect()),
        ))
    }
}

// === seeding ===

fn customers_sql() -> String {
    let mut s = String::from(
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, tier text);\n",
    );
    s.push_str("INSERT INTO customers VALUES ");
    for i in 1..=ROWS {
        if i > 1 {
            s.push(',');
        }
        s.push_str(&format!("({i}, 'Customer {i}', 'gold')"));
    }
    s.push(';');
    s
}

// === report ===

fn report(db: &str, what: &str, rows: &[(&str, Stats, Stats, Stats)]) {
    println!("\n{db}: {what} ({CONNS} connections; open loop {RATE} rps)");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "", "seq p50", "seq p99", "open p50", "open p99", "open max", "closed rps", "errors"
    );
    for (name, seq, open, closed) in rows {
        println!(
            "{:<28} {:>8.3}m {:>8.3}m {:>8.3}m {:>8.3}m {:>8.3}m {:>10.0} {:>7}",
            name,
            seq.ms(0.5),
            seq.ms(0.99),
            open.ms(0.5),
            open.ms(0.99),
            open.ms(1.0),
            closed.rps,
            seq.errors + open.errors + closed.errors,
        );
    }
    let (direct, sidecar) = (&rows[0], &rows[rows.len() - 1]);
    println!(
        "sidecar vs direct: added p50 {:.3} ms sequential, {:.3} ms open loop; throughput {:.2}×",
        sidecar.1.ms(0.5) - direct.1.ms(0.5),
        sidecar.2.ms(0.5) - direct.2.ms(0.5),
        sidecar.3.rps / direct.3.rps
    );
    if rows.len() == 3 {
        let wrapped = &rows[1];
        println!(
            "sidecar vs direct as Warden runs it: added p50 {:.3} ms sequential, {:.3} ms open loop",
            sidecar.1.ms(0.5) - wrapped.1.ms(0.5),
            sidecar.2.ms(0.5) - wrapped.2.ms(0.5),
        );
    }
}

fn inside(sidecar: &Sidecar, window: (u64, u64)) {
    if let Some((spine, db)) = sidecar.inside(window) {
        println!(
            "inside the sidecar (its evidence, sequential phase): p50 {spine:.3} ms from arrival \
             to record, of which {db:.3} ms upstream (the database, the MCP server)"
        );
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Every phase for each way; and the window (unix ms) of the last way's sequential phase.
async fn measure(
    ways: &[(&'static str, Way)],
) -> (Vec<(&'static str, Stats, Stats, Stats)>, (u64, u64)) {
    let p = phases();
    let mut out = Vec::new();
    let mut window = (0, 0);
    for (name, way) in ways {
        window.0 = unix_ms();
        let seq = sequential(way, p.seq).await;
        window.1 = unix_ms() + 1;
        let open = open(way, p.warm, p.open).await;
        let closed = closed(way, p.warm, p.closed).await;
        out.push((*name, seq, open, closed));
    }
    (out, window)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = support::release_binary();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("WARDEN_LOAD_ONLY").unwrap_or_default();
    let part = |p: &str| only.is_empty() || only == p;

    // MCP: the tickets mock on a runtime of its own, straight and through the sidecar.
    if part("mcp") {
        let mock_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mock = mock_rt
            .block_on(warden::dev::mocks::spawn_mcp("127.0.0.1:0"))
            .unwrap();
        let mcp_url = format!("{}/mcp", mock.base_url());
        let crm = Path::new(env!("CARGO_TARGET_TMPDIR")).join("warden-mcp-load-unused.db");
        let sidecar = start_sidecar(
            &bin,
            "mcp",
            &format!("sqlite:{}", crm.display()),
            Some(&mcp_url),
        );
        let rows = rt.block_on(measure(&[
            ("direct (the mock)", Way::Mcp(mock.addr)),
            ("sidecar", Way::Mcp(sidecar.agent)),
        ]));
        report("MCP", "tools/call get_ticket, 2026-07-28", &rows.0);
        inside(&sidecar, rows.1);
        drop(sidecar);
        drop(mock);
    }

    // PostgreSQL.
    match pg::Pg::start().filter(|_| part("pg")) {
        None if part("pg") => println!("PostgreSQL is not installed: its figures are skipped"),
        None => {}
        Some(pg) => {
            let url = pg.url("postgres");
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(customers_sql()))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            });
            let sidecar = start_sidecar(&bin, "pg", &url, None);
            let rows = rt.block_on(async {
                let pool = PgPoolOptions::new()
                    .max_connections(CONNS as u32)
                    .connect(&url)
                    .await
                    .unwrap();
                measure(&[
                    (
                        "direct (sqlx)",
                        Way::Pg {
                            pool: pool.clone(),
                            wrapped: false,
                        },
                    ),
                    (
                        "direct, as Warden runs it",
                        Way::Pg {
                            pool,
                            wrapped: true,
                        },
                    ),
                    ("sidecar", Way::Sidecar(sidecar.agent)),
                ])
                .await
            });
            report("PostgreSQL", "one row by primary key", &rows.0);
            inside(&sidecar, rows.1);
        }
    }

    // SQLite.
    if !part("sqlite") {
        return;
    }
    let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("warden-sql-load-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let url = format!("sqlite:{}", file.display());
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(customers_sql()))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    });
    let sidecar = start_sidecar(&bin, "sqlite", &url, None);
    let rows = rt.block_on(async {
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .read_only(true)
            .pragma("query_only", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(CONNS as u32)
            .connect_with(opts)
            .await
            .unwrap();
        measure(&[
            (
                "direct (sqlx)",
                Way::Sqlite {
                    pool: pool.clone(),
                    wrapped: false,
                },
            ),
            (
                "direct, as Warden runs it",
                Way::Sqlite {
                    pool,
                    wrapped: true,
                },
            ),
            ("sidecar", Way::Sidecar(sidecar.agent)),
        ])
        .await
    });
    report("SQLite", "one row by primary key", &rows.0);
    inside(&sidecar, rows.1);
    drop(sidecar);
    let _ = std::fs::remove_file(&file);
}
