//! The SQL channel over real sockets, on a real SQLite file and a throwaway PostgreSQL cluster
//! (`common::pg`): typed binding, read-only runs, time-outs, row caps, errors that show no
//! password, evidence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use sqlx::Connection;

use common::{send, Env, Resp};

/// Templates beyond the contract's `customer_by_id`.
const TEMPLATES: &str = r#"---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: customers_by_name, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT id, name FROM customers WHERE name = :name ORDER BY id"
  params: { name: { type: text, max_len: 200 } }
  max_rows: 10
  doc_id_column: id
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: all_customers, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT id, name, tier FROM customers ORDER BY id"
  max_rows: 2
  doc_id_column: id
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: slow, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT count(*) AS n FROM generate_series(1, 2000000000) AS g"
  timeout_ms: 300
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: slow_long, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT count(*) AS n FROM generate_series(1, 2000000000) AS g"
  timeout_ms: 20000
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: echo, tenant: acme }
spec:
  connector: crm-db
  statement: >-
    SELECT :i AS i, :big AS big, :f AS f, :n AS n, :b AS b, :t AS t, :u AS u, :d AS d,
    :ts AS ts, :tz AS tz, :e AS e, :j AS j, :ia AS ia, :ta AS ta, :na AS na, :da AS da,
    :tza AS tza, :ja AS ja, :nul AS nul
  params:
    i: int
    big: bigint
    f: float
    n: numeric
    b: bool
    t: { type: text, max_len: 100 }
    u: uuid
    d: date
    ts: timestamp
    tz: timestamptz
    e: { type: enum, values: [gold, silver] }
    j: json
    ia: "int[]"
    ta: "text[]"
    na: "numeric[]"
    da: "date[]"
    tza: "timestamptz[]"
    ja: "json[]"
    nul: { type: text, nullable: true }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: kinds_row, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT * FROM kinds ORDER BY id"
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: rows_metered, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT id, name FROM customers ORDER BY id"
  max_rows: 10
  doc_id_column: id
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: said, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT :t AS t"
  params: { t: text }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: said_inspected, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT :t AS t"
  params: { t: text }
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p250-inspected, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [said] }
  effect: allow
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p251-inspected, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [said_inspected] }
  effect: allow
  inspection: { prompts: true, responses: true }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: bytes_metered, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT id, name, tier FROM customers ORDER BY id"
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p240-bytes, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [bytes_metered] }
  effect: allow
  limits:
    - { metric: bytes, window: run, max: 1000, on_breach: stop }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: customer_emails, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT id, email FROM contacts WHERE id = :id"
  params: { id: int }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: pii_in_a_name, tenant: acme }
spec:
  connector: crm-db
  statement: "SELECT 1 AS \"jane.doe@example.com\""
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p210-crm-more, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [customers_by_name, all_customers, slow, slow_long, echo, kinds_row] }
  effect: allow
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p220-rows, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [rows_metered] }
  effect: allow
  limits:
    - { metric: rows, window: run, max: 4, on_breach: stop }
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p230-contacts, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [customer_emails, pii_in_a_name] }
  effect: allow
  detectors: { pii: { on_match: stop } }
---
apiVersion: warden/v1
kind: Connector
metadata: { id: crm-db, tenant: globex }
spec:
  type: sql
  plane: globex-crm
  sql: { url: env:WARDEN_IT_GLOBEX_DB }
---
apiVersion: warden/v1
kind: KnowledgePlane
metadata: { id: globex-crm, tenant: globex }
spec: { sensitivity: confidential, default: deny }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: customer_by_id, tenant: globex }
spec:
  connector: crm-db
  statement: "SELECT 'globex' AS whose, :id AS id"
  params: { id: int }
---
apiVersion: warden/v1
kind: SqlTemplate
metadata: { id: globex_only, tenant: globex }
spec:
  connector: crm-db
  statement: "SELECT 'globex' AS whose"
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p900-globex, tenant: globex }
spec:
  status: active
  scope: { all_runs: true }
  match: { channel: sql, templates: [customer_by_id, globex_only] }
  effect: allow
"#;

async fn start(name: &str, env_var: &str, url: &str) -> Env {
    std::env::set_var(env_var, url);
    std::env::set_var("WARDEN_IT_GLOBEX_DB", "sqlite::memory:");
    let var = format!("env:{env_var}");
    common::start_with(
        name,
        move |b| b.replace("env:CRM_DATABASE_URL", &var) + TEMPLATES,
        |c| c,
    )
    .await
}

async fn sql(env: &Env, template: &str, body: &str) -> Resp {
    send(
        http::Request::post(env.agent_url(&format!("/sql/{template}")))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

fn json_of(r: &Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn code_of(r: &Resp) -> String {
    json_of(r)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const SEED: &[&str] = &[
    "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, tier text)",
    "INSERT INTO customers VALUES (1, 'Ada', 'gold'), (2, 'Grace', 'silver'), (3, 'Linus', NULL)",
    "CREATE TABLE contacts (id integer PRIMARY KEY, email text)",
    "INSERT INTO contacts VALUES (1, 'jane.doe@example.com'), (2, 'nobody')",
];

/// A row of every column type each database reads, and what the agent must get back.
const PG_KINDS: &[&str] = &[
    "CREATE TABLE kinds (id int, n numeric, tiny numeric, ts timestamp, tz timestamptz, \
     j jsonb, jt json, b bytea, nul text, ia int[], ta text[], d date, u uuid, f float8, \
     big bigint, flag bool, na numeric[], tsa timestamp[], ba bytea[], nulnum numeric)",
    "INSERT INTO kinds VALUES (1, 12345678901234567890.000000001, 0.0000001, \
     '2026-12-04 10:11:12.345678', '2026-12-04 10:11:12.5+02', \
     '{\"a\": [1, \"x\"], \"b\": null}', '{\"k\": 1.5}', '\\x00ff10', NULL, '{1,NULL,3}', \
     '{\"a b\",c}', '2026-02-28', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1.25, \
     9007199254740993, true, '{1.10,2}', '{\"2026-01-01 00:00:00\"}', '{\"\\\\x01\"}', NULL)",
];

const SQLITE_KINDS: &[&str] = &[
    "CREATE TABLE kinds (id INTEGER, n TEXT, f REAL, b BLOB, nul TEXT, flag BOOLEAN, \
     ts TEXT, j TEXT, big INTEGER)",
    "INSERT INTO kinds VALUES (1, '12345678901234567890.000000001', 1.25, X'00FF10', NULL, 1, \
     '2026-12-04T10:11:12.345678', '{\"a\":[1,\"x\"]}', 9007199254740993)",
];

/// The values the `echo` template is sent.
fn echo_args() -> Value {
    json!({
        "i": 2147483647, "big": i64::MIN, "f": 0.1, "n": "-0.000000000000000000001",
        "b": false, "t": "x' OR 1=1 --", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "d": "2024-02-29", "ts": "2026-12-04T10:11:12.123456", "tz": "2026-12-04T10:11:12+02:00",
        "e": "gold", "j": {"nested": [1, {"k": null}], "s": "ü"}, "ia": [1, 2], "ta": [],
        "na": ["1.50"], "da": ["2024-01-01"], "tza": ["2026-01-01T00:00:00.500Z"],
        "ja": [{"a": 1}], "nul": null
    })
}

/// The one row of `template` as an object, column by column.
async fn row_of(env: &Env, template: &str, body: &str) -> serde_json::Map<String, Value> {
    let r = sql(env, template, body).await;
    assert_eq!(r.status, 200, "{template}: {}", r.text());
    let v = json_of(&r);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{template}: {v}");
    v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .zip(rows[0].as_array().unwrap())
        .map(|(c, cell)| (c["name"].as_str().unwrap().to_string(), cell.clone()))
        .collect()
}

fn assert_row(got: &serde_json::Map<String, Value>, want: Value) {
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(got.get(k), Some(v), "column {k}: {got:?}");
    }
}

/// The same behaviour on both databases.
async fn the_channel_works(env: &Env) {
    let r = sql(env, "customer_by_id", r#"{"id": 1}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json_of(&r);
    assert_eq!(v["rows"], json!([[1, "Ada", "gold"]]));
    assert_eq!(v["truncated"], json!(false));
    let names: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "name", "tier"]);

    // Typed, never coerced; missing and extra parameters; the body must be JSON.
    for (body, needle) in [
        (r#"{"id": "1"}"#, "parameter `id`: expected int"),
        (r#"{"id": 1099511627776}"#, "out of range"),
        (r#"{"id": 1, "admin": true}"#, "unknown parameter `admin`"),
        (r#"{}"#, "parameter `id`: is missing"),
        (r#"[1]"#, "JSON object"),
    ] {
        let r = sql(env, "customer_by_id", body).await;
        assert_eq!(
            (r.status, code_of(&r).as_str()),
            (400, "invalid_params"),
            "{body}"
        );
        assert!(r.text().contains(needle), "{body}: {}", r.text());
    }
    // Route errors.
    let r = send(
        http::Request::get(env.agent_url("/sql/customer_by_id"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let r = sql(env, "no_such_template", "{}").await;
    assert_eq!((r.status, code_of(&r).as_str()), (404, "unknown_template"));
    let r = send(
        http::Request::post(env.agent_url("/sql/customer_by_id"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(r#"{"id": 1}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 415);

    // Injection strings are data: nothing found, nothing changed.
    for evil in [
        "x' OR '1'='1",
        "'; DROP TABLE customers; --",
        "Ada'); SELECT pg_sleep(5); --",
        "Ada\" OR 1=1 --",
    ] {
        let started = std::time::Instant::now();
        let r = sql(
            env,
            "customers_by_name",
            &json!({ "name": evil }).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{evil}: {}", r.text());
        assert_eq!(json_of(&r)["rows"], json!([]), "{evil}");
        assert!(started.elapsed() < Duration::from_secs(3), "{evil} slept");
    }
    let r = sql(env, "all_customers", "{}").await;
    let v = json_of(&r);
    assert_eq!(v["rows"].as_array().unwrap().len(), 2, "max_rows 2");
    assert_eq!(v["truncated"], json!(true), "3 rows, cap 2");

    // Evidence: template, query hash, doc ids, rows, truncation.
    let recs = env.evidence();
    let one = recs
        .iter()
        .find(|r| r.template.as_deref() == Some("all_customers"))
        .expect("a record of the all_customers call");
    assert_eq!(one.doc_ids, ["1", "2"]);
    let facts = one.sql.expect("sql facts");
    assert_eq!((facts.rows, facts.truncated), (2, true));
    assert!(one.query_hash.as_deref().unwrap().starts_with("sha256:"));
    let typed = recs
        .iter()
        .filter(|r| r.code.map(|c| c.as_str()) == Some("invalid_params"))
        .count();
    assert!(typed >= 5, "each refused value has its record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_templates_end_to_end() {
    let dir = common::tmpdir("sqlite-crm");
    let file = dir.join("crm.db");
    let url = format!("sqlite:{}", file.display());
    {
        let mut c = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        for s in SEED.iter().chain(SQLITE_KINDS) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
        c.close().await.unwrap();
    }
    let env = start("sql-sqlite", "WARDEN_IT_CRM_SQLITE", &url).await;
    the_channel_works(&env).await;
    the_rest_works(&env, false).await;
}

/// Every log line of this test binary, at debug level (the sidecar's and sqlx's alike).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        let logs = Logs::default();
        let w = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || w.clone())
            .try_init()
            .expect("the first subscriber of this test binary");
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_templates_end_to_end() {
    let logs = Logs::capture();
    let Some(pg) = common::pg::Pg::start() else {
        return;
    };
    let url = pg.url("postgres");
    {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        for s in SEED.iter().chain(PG_KINDS) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let env = start("sql-pg", "WARDEN_IT_CRM_PG", &url).await;
    the_channel_works(&env).await;
    the_rest_works(&env, true).await;

    // The statement time-out: 504, and the statement is gone from the server.
    let r = sql(&env, "slow", "{}").await;
    assert_eq!(
        (r.status, code_of(&r).as_str()),
        (504, "upstream_timeout"),
        "{}",
        r.text()
    );
    // The backend reports itself idle a moment after it sends the error: poll briefly. A
    // statement not cancelled would count to 2e9 for many seconds.
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut running = -1i64;
    for _ in 0..20 {
        running = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE '%generate_series%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0, "the timed-out statement still runs");
    // The table is still there, and holds what it held.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 3);
    c.close().await.unwrap();

    // The database goes away in the middle of a statement: 502 with no password; calls while
    // it is away are 502 too; back, and the pool recovers.
    let (r, ()) = tokio::join!(sql(&env, "slow_long", "{}"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::block_in_place(|| pg.stop());
    });
    assert_eq!(
        (r.status, code_of(&r).as_str()),
        (502, "upstream_error"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("pw-must-not-leak"), "{}", r.text());
    let r = sql(&env, "customer_by_id", r#"{"id": 1}"#).await;
    assert_eq!(
        (r.status, code_of(&r).as_str()),
        (502, "upstream_error"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("pw-must-not-leak"), "{}", r.text());
    pg.restart();
    let mut ok = false;
    for _ in 0..50 {
        if sql(&env, "customer_by_id", r#"{"id": 2}"#).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the pool did not recover");
    // Never logged either: the sidecar's and the driver's debug logs of the outage and the
    // recovery hold neither the password nor the URL.
    let logged = logs.text();
    assert!(
        logged.contains("crm-db") || logged.contains("sqlx"),
        "the capture works: {logged}"
    );
    assert!(
        !logged.contains("pw-must-not-leak"),
        "the password is in the logs"
    );
    let spool = std::fs::read_dir(env.dir.join("evidence")).unwrap();
    for f in spool.flatten() {
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(
            !bytes.windows(16).any(|w| w == b"pw-must-not-leak"),
            "the password is in the evidence"
        );
    }
}

/// A write that slipped past validation (a template put straight into the run) fails inside
/// the read-only transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fails_in_the_read_only_transaction() {
    use warden::connectors::sql::db;
    let Some(pg) = common::pg::Pg::start() else {
        return;
    };
    let url = pg.url("postgres");
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x int)")
        .execute(&mut c)
        .await
        .unwrap();
    let pools = db::Pools::default();
    let pool = pools.get("acme", "crm-db", &url, 8).unwrap();
    for statement in [
        "WITH w AS (INSERT INTO t VALUES (1) RETURNING x) SELECT x FROM w",
        "SELECT x FROM t FOR UPDATE",
    ] {
        let run = db::Run {
            connector: "crm-db",
            statement,
            values: &[],
            max_rows: 10,
            timeout_ms: 2_000,
            max_bytes: 1 << 20,
            secrets: std::slice::from_ref(&url),
        };
        let e = db::run(&pool, &run).await.expect_err(statement);
        assert_eq!(e.code.as_str(), "upstream_error", "{statement}");
        // Refused either way: by the read-only transaction, or (a data-modifying WITH, once
        // wrapped under the row cap) by the parser itself.
        assert!(
            ["read-only", "read only", "data-modifying"]
                .iter()
                .any(|w| e.message.contains(w)),
            "{}",
            e.message
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// Every parameter type binds and comes back; every column type reads faithfully.
async fn types_round_trip(env: &Env, pg: bool) {
    let got = row_of(env, "echo", &echo_args().to_string()).await;
    // What both databases give back alike.
    assert_row(
        &got,
        json!({
            "i": 2147483647, "big": i64::MIN, "f": 0.1, "n": "-0.000000000000000000001",
            "t": "x' OR 1=1 --", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "d": "2024-02-29", "ts": "2026-12-04T10:11:12.123456",
            "tz": "2026-12-04T08:11:12Z", "e": "gold", "nul": null
        }),
    );
    if pg {
        assert_row(
            &got,
            json!({
                "b": false, "j": {"nested": [1, {"k": null}], "s": "ü"}, "ia": [1, 2],
                "ta": [], "na": ["1.50"], "da": ["2024-01-01"],
                "tza": ["2026-01-01T00:00:00.500Z"], "ja": [{"a": 1}]
            }),
        );
        let kinds = row_of(env, "kinds_row", "{}").await;
        assert_row(
            &kinds,
            json!({
                "n": "12345678901234567890.000000001", "tiny": "0.0000001",
                "ts": "2026-12-04T10:11:12.345678", "tz": "2026-12-04T08:11:12.500Z",
                "j": {"a": [1, "x"], "b": null}, "jt": {"k": 1.5}, "b": "AP8Q", "nul": null,
                "ia": [1, null, 3], "ta": ["a b", "c"], "d": "2026-02-28",
                "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "f": 1.25,
                "big": 9007199254740993_i64, "flag": true, "na": ["1.10", "2"],
                "tsa": ["2026-01-01T00:00:00"], "ba": ["AQ=="], "nulnum": null
            }),
        );
        let r = sql(env, "kinds_row", "{}").await;
        let types: Vec<String> = json_of(&r)["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            &types[..6],
            [
                "int4",
                "numeric",
                "numeric",
                "timestamp",
                "timestamptz",
                "jsonb"
            ]
        );
    } else {
        // SQLite has no boolean, array or JSON type: booleans bind as 0/1, arrays and JSON as
        // their JSON text — which comes back exactly.
        assert_row(
            &got,
            json!({
                "b": 0, "j": r#"{"nested":[1,{"k":null}],"s":"ü"}"#, "ia": "[1,2]", "ta": "[]",
                "na": r#"["1.50"]"#, "ja": r#"[{"a":1}]"#
            }),
        );
        let kinds = row_of(env, "kinds_row", "{}").await;
        assert_row(
            &kinds,
            json!({
                "n": "12345678901234567890.000000001", "f": 1.25, "b": "AP8Q", "nul": null,
                "flag": true, "ts": "2026-12-04T10:11:12.345678", "j": r#"{"a":[1,"x"]}"#,
                "big": 9007199254740993_i64
            }),
        );
    }
}

/// A `rows` limit: the call that would cross it gets the rows up to it, marked cut with the
/// code; the limit's `on_breach: stop` then stops the run.
async fn rows_limit_cuts(env: &Env) {
    let run = format!("rows-run-{}", uuid::Uuid::new_v4().simple());
    let call = |run: String| async move {
        send(
            http::Request::post(env.agent_url("/sql/rows_metered"))
                .header("content-type", "application/json")
                .header("x-warden-run-id", run)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await
    };
    let first = call(run.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let v = json_of(&first);
    assert_eq!(v["rows"].as_array().unwrap().len(), 3);
    assert!(v.get("cut").is_none(), "{v}");
    // One row of the run's four is left: the next call returns it, and is cut.
    let second = call(run.clone()).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let v = json_of(&second);
    assert_eq!(v["rows"], json!([[1, "Ada"]]), "{v}");
    assert_eq!(v["truncated"], json!(true));
    assert_eq!(v["cut"]["code"], json!("budget_exceeded"), "{v}");
    assert_eq!(v["cut"]["policy_id"], json!("p220-rows"), "{v}");
    let decision = v["cut"]["decision_id"].as_str().unwrap().to_string();
    let rec = env.record_of(&decision).await;
    assert_eq!(rec.doc_ids, ["1"]);
    assert_eq!(
        rec.cut.as_ref().map(|c| c.code.as_str()),
        Some("budget_exceeded")
    );
    assert_eq!(rec.sql.map(|s| s.rows), Some(1));
    // on_breach: stop — the run is over.
    let third = call(run.clone()).await;
    env.assert_refused(&third, 403, "run_stopped").await;
    // Another run is not.
    let other = call(format!("{run}-other")).await;
    assert_eq!(other.status, 200, "{}", other.text());
}

/// A policy with a PII detector withholds a result carrying PII — in a cell or in a column
/// name — and lets a clean one through.
async fn pii_in_rows_refused(env: &Env) {
    let r = sql(env, "customer_emails", r#"{"id": 1}"#).await;
    let rec = env.assert_refused(&r, 403, "pii_detected").await;
    assert!(!r.text().contains("jane.doe"), "{}", r.text());
    assert_eq!(rec.template.as_deref(), Some("customer_emails"));
    let r = sql(env, "pii_in_a_name", "{}").await;
    env.assert_refused(&r, 403, "pii_detected").await;
    let r = sql(env, "customer_emails", r#"{"id": 2}"#).await;
    assert_eq!(json_of(&r)["rows"], json!([[2, "nobody"]]), "{}", r.text());
}

/// Another tenant's template is unknown to the agent, audited as cross-tenant; a template of
/// the same id in another tenant never shadows the agent's own.
async fn cross_tenant_refused(env: &Env) {
    let r = sql(env, "globex_only", "{}").await;
    assert_eq!((r.status, code_of(&r).as_str()), (404, "unknown_template"));
    let decision = json_of(&r)["error"]["decision_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rec = env.record_of(&decision).await;
    assert_eq!(
        rec.code.map(|c| c.as_str()),
        Some("cross_tenant"),
        "{rec:?}"
    );
    let r = sql(env, "customer_by_id", r#"{"id": 1}"#).await;
    assert_eq!(json_of(&r)["rows"], json!([[1, "Ada", "gold"]]));
}

/// A `bytes` limit counts the answer, judged before it is passed on: the result that would
/// cross it is withheld, and `on_breach: stop` ends the run.
async fn bytes_limit_withholds(env: &Env) {
    let run = format!("bytes-run-{}", uuid::Uuid::new_v4().simple());
    let call = || {
        let run = run.clone();
        async move {
            send(
                http::Request::post(env.agent_url("/sql/bytes_metered"))
                    .header("content-type", "application/json")
                    .header("x-warden-run-id", run)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
            )
            .await
        }
    };
    let first = call().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let n = first.body.len() + 2;
    assert!((100..500).contains(&n), "a call is {n} bytes");
    for _ in 1..1000 / n {
        assert_eq!(call().await.status, 200);
    }
    let over = call().await;
    let rec = env.assert_refused(&over, 429, "budget_exceeded").await;
    assert!(!over.text().contains("Grace"), "{}", over.text());
    assert_eq!(rec.template.as_deref(), Some("bytes_metered"));
    env.assert_refused(&call().await, 403, "run_stopped").await;
}

/// The values and rows are in evidence only where every firing policy's `inspection` allows,
/// PII in them replaced by placeholders; otherwise only the query hash.
async fn values_only_where_inspection_allows(env: &Env) {
    let mark = format!("mark-{}", uuid::Uuid::new_v4().simple());
    let said = |template: &'static str, t: String| async move {
        let r = sql(env, template, &json!({ "t": t }).to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        json_of(&r)
    };
    // `said`'s policy keeps nothing; `said_inspected`'s keeps prompts and responses.
    said("said", format!("{mark}-hidden")).await;
    let v = said("said_inspected", format!("{mark} for jane.doe@example.com")).await;
    assert_eq!(
        v["rows"][0][0],
        json!(format!("{mark} for jane.doe@example.com"))
    );
    let recs = env.evidence();
    let hidden = recs
        .iter()
        .find(|r| r.template.as_deref() == Some("said"))
        .unwrap();
    assert!(hidden.content.is_none(), "{hidden:?}");
    assert!(hidden.query_hash.is_some());
    let kept = recs
        .iter()
        .find(|r| r.template.as_deref() == Some("said_inspected"))
        .unwrap();
    let c = kept.content.as_ref().expect("inspection keeps the content");
    for text in [c.prompt.as_deref().unwrap(), c.response.as_deref().unwrap()] {
        assert!(text.contains(&mark), "{text}");
        assert!(
            text.contains("[pii:email:") && !text.contains("jane.doe"),
            "{text}"
        );
    }
    let spool: Vec<u8> = std::fs::read_dir(env.dir.join("evidence"))
        .unwrap()
        .flatten()
        .flat_map(|f| std::fs::read(f.path()).unwrap())
        .collect();
    let hidden_mark = format!("{mark}-hidden");
    assert!(
        !spool
            .windows(hidden_mark.len())
            .any(|w| w == hidden_mark.as_bytes()),
        "a value no policy let evidence keep is in the spool"
    );
}

async fn the_rest_works(env: &Env, pg: bool) {
    types_round_trip(env, pg).await;
    values_only_where_inspection_allows(env).await;
    bytes_limit_withholds(env).await;
    rows_limit_cuts(env).await;
    pii_in_rows_refused(env).await;
    cross_tenant_refused(env).await;
}

/// Pools are per tenant and connector, and bounded: one tenant holding every connection of its
/// pool neither starves another tenant's connector of the same name on the same database, nor
/// gets a ninth connection itself (it waits, then `upstream_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_isolated_between_tenants() {
    use std::sync::Arc;
    use warden::connectors::sql::db;
    let Some(pg) = common::pg::Pg::start() else {
        return;
    };
    let url = pg.url("postgres");
    let pools = Arc::new(db::Pools::default());
    let run = |statement: &'static str, timeout_ms: u64| {
        let (pools, url) = (pools.clone(), url.clone());
        async move {
            let (tenant, s) = statement.split_once('|').unwrap();
            let pool = pools.get(tenant, "crm-db", &url, 8).unwrap();
            let r = db::Run {
                connector: "crm-db",
                statement: s,
                values: &[],
                max_rows: 10,
                timeout_ms,
                max_bytes: 1 << 20,
                secrets: std::slice::from_ref(&url),
            };
            db::run(&pool, &r).await
        }
    };
    let busy: Vec<_> = (0..8)
        .map(|_| tokio::spawn(run("acme|SELECT pg_sleep(2) AS slept", 5_000)))
        .collect();
    // Let the eight sleeps take every acme connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let globex = run("globex|SELECT 'globex' AS whose", 5_000).await.unwrap();
    assert_eq!(globex.rows, [[json!("globex")]]);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "globex waited for acme's pool: {:?}",
        started.elapsed()
    );
    let ninth = run("acme|SELECT 1 AS one", 5_000)
        .await
        .expect_err("a ninth connection");
    assert_eq!(ninth.code.as_str(), "upstream_error", "{}", ninth.message);
    assert!(
        ninth.message.contains("no database connection"),
        "{}",
        ninth.message
    );
    for b in busy {
        b.await.unwrap().unwrap();
    }
    assert!(
        run("acme|SELECT 1 AS one", 5_000).await.is_ok(),
        "acme's pool is back"
    );
    // A connector's pool size is its own; a new size is a new pool.
    assert_eq!(pools.get("acme", "crm-db", &url, 8).unwrap().size(), 8);
    assert_eq!(pools.get("acme", "crm-db", &url, 16).unwrap().size(), 16);
}

/// The contract's `p200-crm-read`: 60 `customer_by_id` queries a minute, for every run of the
/// agent together — the 61st is `rate_limited`, with or without a run id of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_limited_per_minute() {
    let dir = common::tmpdir("sqlite-crm-rate");
    let url = warden::dev::crm::seed(&dir.join("crm.db")).await.unwrap();
    let env = start("sql-rate", "WARDEN_IT_CRM_RATE", &url).await;
    for i in 0..60 {
        let r = sql(
            &env,
            "customer_by_id",
            &json!({ "id": 1 + i % 4 }).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
    }
    let r = sql(&env, "customer_by_id", r#"{"id": 1}"#).await;
    let rec = env.assert_refused(&r, 429, "rate_limited").await;
    assert_eq!(rec.policy.as_deref(), Some("p200-crm-read"));
    let r = send(
        http::Request::post(env.agent_url("/sql/customer_by_id"))
            .header("content-type", "application/json")
            .header("x-warden-run-id", "a-fresh-run")
            .body(Full::new(Bytes::from_static(br#"{"id": 2}"#)))
            .unwrap(),
    )
    .await;
    env.assert_refused(&r, 429, "rate_limited").await;
}
