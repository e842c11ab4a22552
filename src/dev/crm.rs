//! The dev CRM: when `CRM_DATABASE_URL` is unset, `warden dev` writes a small SQLite database
//! (a few customers) so the contract bundle's `customer_by_id` template works offline.

use std::path::Path;

use sqlx::{Connection, SqliteConnection};

/// The customers the dev CRM holds: `(id, name, tier)`.
pub const CUSTOMERS: &[(i64, &str, &str)] = &[
    (1, "Ada Lovelace", "gold"),
    (2, "Grace Hopper", "silver"),
    (3, "Alan Turing", "gold"),
    (4, "Katherine Johnson", "bronze"),
];

/// Write the dev CRM at `path` afresh (a file left by an earlier run is replaced) and return
/// its `sqlite:` URL.
pub async fn seed(path: &Path) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot seed {}: {e}", path.display());
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&e)),
        }
    }
    let url = format!("sqlite:{}", path.display());
    let mut c = SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .map_err(|e| fail(&e))?;
    sqlx::raw_sql(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier TEXT NOT NULL)",
    )
    .execute(&mut c)
    .await
    .map_err(|e| fail(&e))?;
    for (id, name, tier) in CUSTOMERS {
        sqlx::query("INSERT INTO customers (id, name, tier) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(tier)
            .execute(&mut c)
            .await
            .map_err(|e| fail(&e))?;
    }
    c.close().await.map_err(|e| fail(&e))?;
    Ok(url)
}
