//! The SQL channel: `POST /sql/{template}` runs a registered template with the agent's typed
//! parameters (`docs/sidecar.md`, "SQL"). The agent never sends SQL: it names a template its
//! tenant owns and sends a JSON object of values, each checked against its declaration
//! (`params`) and bound — never interpolated — to the template's `$n` plan.
//!
//! Each call runs in a read-only transaction (PostgreSQL `BEGIN READ ONLY`; SQLite a read-only
//! connection with `query_only`) under the template's statement time-out, which the database
//! enforces itself, and stops reading at the row cap: the template's `max_rows`, or less where
//! a `rows` limit leaves less room (the reservation). One row more is fetched to know whether
//! the result was cut. Detectors read every column name and cell before anything reaches the
//! agent; a policy that refuses what they find withholds the whole result.
//!
//! Pools are per (tenant, connector), bounded, created on first use; the URL is a credential
//! reference resolved by the sidecar and never shown, logged or recorded.

pub mod db;
pub mod numeric;
pub mod params;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value as Json};

use super::{body_of, Settings};
use crate::codes::Code;
use crate::decide::reserve::{Plan, Want};
use crate::decide::{PiiFact, SecretFact};
use crate::evidence::record::{content_hash, Content, Cut, Outcome, SqlFacts};
use crate::policy::compile::{ConnectorInfo, TemplateInfo};
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::{Call, CallState, Refusal, Reply};
use params::Bound;

pub use crate::evidence::record::MAX_DOC_IDS;

/// A parsed template call.
#[derive(Debug, Clone)]
pub struct SqlCall {
    pub template: Arc<TemplateInfo>,
    /// The template's connector, resolved from the call's snapshot.
    pub info: Arc<ConnectorInfo>,
    /// The checked values, in `$n` order.
    pub values: Vec<Bound>,
    /// The values as canonical JSON (an array in `$n` order): hashed into the query hash, and
    /// the record's content where inspection allows.
    pub values_json: String,
    /// `sha256:` over the statement and the values.
    pub query_hash: String,
    /// The most rows the call may return: the template's cap, or what a `rows` limit left
    /// (set when the call is decided).
    pub max_rows: u64,
}

impl crate::spine::Target for SqlCall {
    fn channel(&self) -> Channel {
        Channel::Sql
    }
    /// What goes to the database: the values (strings inside `json` values too).
    fn facts(&self, _call: &CallState) -> Option<(PiiFact, SecretFact)> {
        let v: Vec<Json> = self.values.iter().map(Bound::to_json).collect();
        let v = Json::Array(v);
        Some((
            PiiFact::of_mask(crate::detect::json::kinds(&v)),
            SecretFact::of_mask(crate::detect::json::secret_kinds(&v)),
        ))
    }
    fn want(&self) -> Option<Want> {
        Some(Want {
            rows: Some(u64::from(self.template.spec.max_rows)),
            ..Want::default()
        })
    }
    fn plan(&mut self, plan: &Plan) {
        if let Some(rows) = plan.max_rows {
            self.max_rows = rows;
        }
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// The query hash: `sha256` over the positional statement, a newline, and the values as
/// canonical JSON.
pub fn query_hash(statement: &str, values_json: &str) -> String {
    let mut text = String::with_capacity(statement.len() + values_json.len() + 1);
    text.push_str(statement);
    text.push('\n');
    text.push_str(values_json);
    content_hash(text.as_bytes())
}

/// Resolve `id` among the tenant's templates and check the body's values. A template of
/// another tenant is refused as unknown — the agent cannot tell it exists — and recorded as
/// `cross_tenant` (INV-003).
pub fn parse(snap: &Snapshot, tenant: &str, id: &str, body: &[u8]) -> Result<SqlCall, Refusal> {
    let Some(template) = snap.template(tenant, id) else {
        let mut r = Refusal::new(Code::UnknownTemplate, format!("no template `{id}`"));
        if snap.template_owned_elsewhere(tenant, id) {
            r.recorded_as = Some(Code::CrossTenant);
        }
        return Err(r);
    };
    let info = snap
        .connector(tenant, &template.spec.connector)
        .filter(|c| c.spec.sql.is_some())
        .ok_or_else(|| {
            Refusal::new(
                Code::UnknownConnector,
                format!("template `{id}` has no SQL connector"),
            )
        })?;
    let values = params::check(&template.params, body)
        .map_err(|e| Refusal::new(Code::InvalidParams, e.0))?;
    let values_json =
        Json::Array(values.iter().map(Bound::to_json).collect::<Vec<_>>()).to_string();
    Ok(SqlCall {
        query_hash: query_hash(&template.plan.positional, &values_json),
        template: template.clone(),
        info: info.clone(),
        values,
        values_json,
        max_rows: u64::from(template.spec.max_rows),
    })
}

/// The SQL connector: its pools, shared by every call.
pub struct Sql {
    pub settings: Settings,
    pub pools: Arc<db::Pools>,
}

impl Sql {
    pub fn new(settings: Settings) -> Self {
        Sql {
            settings,
            pools: Arc::new(db::Pools::default()),
        }
    }
}

/// Run an allowed template call and answer it.
pub async fn answer(
    settings: Settings,
    pools: Arc<db::Pools>,
    mut call: Call,
    sc: SqlCall,
) -> Result<Reply, Refusal> {
    let decision = call
        .decision
        .take()
        .ok_or_else(|| Refusal::internal("no decision"))?;
    let connector = sc.info.id.to_string();
    let spec = &sc.template.spec;
    let timeout_ms = u64::from(spec.timeout_ms).min(settings.upstream_timeout_ms);
    call.trace(|t| {
        t.rec.query_hash = Some(sc.query_hash.clone());
        t.rec.prompt_hash = Some(sc.query_hash.clone());
        t.rec.sql = Some(SqlFacts {
            timeout_ms,
            ..SqlFacts::default()
        });
        if decision.inspection.prompts {
            t.content.get_or_insert_with(Content::default).prompt = Some(sc.values_json.clone());
        }
    });
    let (reference, pool_size) = sc
        .info
        .spec
        .sql
        .as_ref()
        .map(|s| (s.url.clone(), s.pool_size()))
        .ok_or_else(|| Refusal::internal("SQL connector without sql block"))?;
    // The error names the reference, never its value.
    let url = call.rt.credentials.get(&reference).map_err(|e| {
        tracing::warn!(connector = %connector, error = %e, "database URL unavailable");
        Refusal::new(
            Code::UpstreamError,
            format!("connector `{connector}` has no usable database URL"),
        )
    })?;
    let db = pools.get(&call.ctx.tenant, &connector, &url, pool_size)?;
    let secrets = secret_parts(&url);
    let run = db::Run {
        connector: &connector,
        statement: &sc.template.plan.positional,
        values: &sc.values,
        max_rows: sc.max_rows,
        timeout_ms,
        max_bytes: settings.max_response(),
        secrets: &secrets,
    };
    let started = std::time::Instant::now();
    let out = db::run(&db, &run).await;
    call.rt
        .metrics
        .upstream("sql", started.elapsed().as_secs_f64());
    let out = out?;
    let n = out.rows.len() as u64;
    let doc_ids = doc_ids(&out, spec.doc_id_column.as_deref());

    // Detectors over every column name and cell the agent would read.
    let names: Vec<Json> = out
        .columns
        .iter()
        .map(|(name, _)| Json::String(name.clone()))
        .collect();
    let all = json!([names, out.rows]);
    let pii = crate::detect::json::kinds_by_field(&all);
    let secret = crate::detect::json::secret_kinds_by_field(&all);
    // Past the rows a limit left: the limit decides (its `on_breach` applies to the run).
    let limited = out.more && sc.max_rows < u64::from(spec.max_rows);
    let mut cut = None;
    if pii != 0 || secret != 0 || limited {
        let mut req = call
            .request
            .clone()
            .ok_or_else(|| Refusal::internal("no request facts"))?;
        req.delta.rows = if limited { n as f64 + 1.0 } else { n as f64 };
        if pii != 0 || secret != 0 {
            req.facts.pii = Some(PiiFact::of_mask(pii));
            req.facts.secrets = Some(SecretFact::of_mask(secret));
        }
        if let Some(d) = call.guard()?.recheck(&call, req.clone())? {
            let refusal = call.guard()?.enforce(&call, &d);
            let found = d
                .reasons
                .iter()
                .any(|r| matches!(r.code.as_str(), "pii_detected" | "secret_detected"));
            if found || !limited {
                return Err(super::withhold(&call, refusal, "result"));
            }
            // The rows limit: the rows up to it are the answer, marked cut.
            cut = Some((refusal, d));
        }
        if cut.is_none() && limited {
            // The limit let one more row through after all (rounding, a mode): settle
            // what was returned.
            let mut settle = req;
            settle.delta.rows = n as f64;
            let _ = call.guard()?.recheck(&call, settle)?;
        }
    }
    let columns: Vec<Json> = out
        .columns
        .iter()
        .map(|(name, ty)| json!({ "name": name, "type": ty }))
        .collect();
    let mut body = json!({
        "template": sc.template.id.as_ref(),
        "columns": columns,
        "rows": out.rows,
        "truncated": out.more,
    });
    if let (Some((r, _)), Some(obj)) = (&cut, body.as_object_mut()) {
        obj.insert(
            "cut".into(),
            json!({
                "code": r.code.as_str(),
                "message": r.message,
                "policy_id": r.policy_id,
                "decision_id": call.ctx.decision_id,
            }),
        );
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| Refusal::internal(e.to_string()))?;
    // A `bytes` limit the answer would cross withholds it, like PII.
    if let Err(refusal) =
        super::judge_answer_bytes(&call, super::bytes_bounded(&decision), bytes.len() as u64)
    {
        return Err(super::withhold(&call, refusal, "result"));
    }
    let rows_text = serde_json::to_string(&body["rows"]).unwrap_or_default();
    call.trace(|t| {
        t.rec.bytes_out = bytes.len() as u64;
        t.rec.response_hash = Some(content_hash(rows_text.as_bytes()));
        t.rec.doc_ids = doc_ids;
        t.rec.sql = Some(SqlFacts {
            rows: n,
            truncated: out.more,
            db_us: out.db_us,
            timeout_ms,
        });
        if decision.inspection.responses {
            t.content.get_or_insert_with(Content::default).response = Some(rows_text);
        }
        if let Some((r, _)) = &cut {
            t.rec.outcome = Some(Outcome::Cut);
            t.rec.cut = Some(Cut {
                after_tokens: n,
                code: r.code,
                detail: format!("rows cut at {n}: {}", r.message),
            });
            t.refused = Some(r.clone());
        }
    });
    let mut reply = http::Response::new(body_of(Full::new(Bytes::from(bytes))));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(reply)
}

/// The values of the `doc_id_column` column, as text, at most [`MAX_DOC_IDS`].
fn doc_ids(out: &db::Outcome, column: Option<&str>) -> Vec<String> {
    let Some(i) = column.and_then(|c| out.columns.iter().position(|(n, _)| n == c)) else {
        return Vec::new();
    };
    out.rows
        .iter()
        .take(MAX_DOC_IDS)
        .filter_map(|r| match r.get(i)? {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .collect()
}

/// The parts of a database URL that must never be shown: the URL itself and its password.
fn secret_parts(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        if let Some((auth, _)) = rest.split_once('@') {
            if let Some((_, pw)) = auth.split_once(':') {
                // As written in the URL, and as the driver decodes it (`%40` is `@`).
                out.push(pw.to_string());
                let decoded = percent_encoding::percent_decode_str(pw).decode_utf8_lossy();
                if decoded != pw {
                    out.push(decoded.into_owned());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_and_the_url_are_secret() {
        let s = secret_parts("postgres://app:s3cr%40t@db:5432/crm");
        assert_eq!(s[1], "s3cr%40t");
        assert_eq!(s[2], "s3cr@t");
        assert_eq!(secret_parts("sqlite:crm.db").len(), 1);
    }

    #[test]
    fn the_query_hash_covers_statement_and_values() {
        let a = query_hash("SELECT $1", "[1]");
        assert_ne!(a, query_hash("SELECT $1", "[2]"));
        assert_ne!(a, query_hash("SELECT $1 ", "[1]"));
        assert!(a.starts_with("sha256:"));
    }
}
