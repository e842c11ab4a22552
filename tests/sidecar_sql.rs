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
kind: Policy
metadata: { id: p210-crm-more, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: sql, templates: [customers_by_name, all_customers, slow] }
  effect: allow
"#;

async fn start(name: &str, env_var: &str, url: &str) -> Env {
    std::env::set_var(env_var, url);
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
];

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
        for s in SEED {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
        c.close().await.unwrap();
    }
    let env = start("sql-sqlite", "WARDEN_IT_CRM_SQLITE", &url).await;
    the_channel_works(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_templates_end_to_end() {
    let Some(pg) = common::pg::Pg::start() else {
        return;
    };
    let url = pg.url("postgres");
    {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        for s in SEED {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let env = start("sql-pg", "WARDEN_IT_CRM_PG", &url).await;
    the_channel_works(&env).await;

    // The statement time-out: 504, and the statement is gone from the server.
    let r = sql(&env, "slow", "{}").await;
    assert_eq!(
        (r.status, code_of(&r).as_str()),
        (504, "upstream_timeout"),
        "{}",
        r.text()
    );
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%generate_series%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(running, 0, "the timed-out statement still runs");
    // The table is still there, and holds what it held.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 3);
    c.close().await.unwrap();

    // The database goes away: 502 with no password; back, and the pool recovers.
    pg.stop();
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
    let pool = pools.get("acme", "crm-db", &url).unwrap();
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
