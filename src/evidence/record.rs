//! One evidence record (`docs/evidence.md`): what was asked, what was decided, what happened.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codes::Code;
use crate::decide::{Mode, Reason, Request, Usage};
use crate::policy::model::{Action, Channel};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A mediated call.
    Call,
    /// An operator action: a mode change, an approval, a snapshot activation.
    Audit,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Refused,
    /// Started, then stopped mid-way (same-step enforcement, kill switch).
    Cut,
    /// Passed unenforced in `bypass` mode.
    Bypassed,
    /// Failed inside Warden or upstream; refused, never passed.
    Errored,
}

impl Outcome {
    /// How a call that ended with a refusal of `code` ended: cut mid-way (`cut`), failed inside
    /// Warden or upstream, or refused.
    pub fn of_refusal(code: Code, cut: bool) -> Outcome {
        if cut {
            Outcome::Cut
        } else if matches!(
            code,
            Code::InternalError | Code::UpstreamError | Code::UpstreamTimeout
        ) {
            Outcome::Errored
        } else {
            Outcome::Refused
        }
    }
}

/// Where and why a call was cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    /// Output tokens the agent received before the cut.
    pub after_tokens: u64,
    pub code: Code,
    pub detail: String,
}

/// What a call record's `action`, `code`, `policy` and `reasons` rest on, so that
/// `warden evidence replay` knows what to derive again and what to check for consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A `decide` outcome: deciding again on `request`, `usage` and `mode` by `snapshot` gives
    /// the same action, code, policy and reasons.
    Decision,
    /// A decision allowed the call, then something that is not a `decide` outcome ended it: an
    /// upstream error or timeout, the kill switch, a killed run, a connector that could not be
    /// used, an internal error. `action`, `policy` and `reasons` are the allowing decision's;
    /// `code` is the refusal that ended the call.
    AfterDecision,
    /// Refused before any decision was taken (boot guard, identity, run state, body limit, bad
    /// input): no decision inputs, no action, no reasons; `code` says why.
    BeforeDecision,
    /// Answered by the sidecar without a decision of its own (`GET /v1/models`, the models the
    /// policies allow): `response_hash` is the answer's, derived again from `request` and `mode`.
    Local,
}

/// Content kept in clear, only as far as the deciding policies' `inspection` allows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// An evidence record. `seq` and `prev` are set by the spool when the record is appended; the
/// record's own hash is computed from its serialised bytes ([`record_hash`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Hash of the previous record (`sha256:` + 64 zeros for the first).
    pub prev: String,
    pub evidence_id: String,
    pub kind: Kind,
    pub at_ms: u64,
    pub latency_us: u64,
    pub decision_id: Option<String>,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub session_id: Option<String>,
    pub tenant: Option<String>,
    pub project: Option<String>,
    pub agent: Option<String>,
    pub actor: Option<String>,
    pub channel: Option<Channel>,
    pub plane: Option<String>,
    pub connector: Option<String>,
    pub model: Option<String>,
    pub tool: Option<String>,
    pub template: Option<String>,
    pub query_hash: Option<String>,
    pub doc_ids: Vec<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub prompt_hash: Option<String>,
    pub response_hash: Option<String>,
    pub snapshot: Option<String>,
    pub policy: Option<String>,
    pub action: Option<Action>,
    pub code: Option<Code>,
    pub reasons: Vec<Reason>,
    pub mode: Mode,
    pub outcome: Option<Outcome>,
    pub cut: Option<Cut>,
    /// What the record's outcome rests on (absent in records written before it existed).
    #[serde(default)]
    pub basis: Option<Basis>,
    /// The decision's inputs, so `warden evidence replay` can decide again.
    pub request: Option<Request>,
    pub usage: Option<Usage>,
    pub content: Option<Content>,
    /// For audit records: who, why, before and after.
    pub audit: Option<serde_json::Value>,
    /// A SQL template call's result (absent on other channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlFacts>,
    /// An MCP exchange's facts (absent on other channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpFacts>,
}

/// What an MCP exchange with an upstream was: the revision spoken, whether the tool said its
/// call failed (`isError`), and the upstream's time. The tool and connector are the record's;
/// the arguments' hash is `prompt_hash`, the result's `response_hash`; resources the result
/// names are `doc_ids`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpFacts {
    pub revision: String,
    pub is_error: bool,
    /// From the request sent to the answer read whole, in microseconds.
    pub upstream_us: u64,
}

/// The most document ids one record keeps (a SQL result's rest are counted in `sql.rows`).
pub const MAX_DOC_IDS: usize = 1_000;

/// What a SQL template call returned. The query hash and document ids are the record's
/// `query_hash` and `doc_ids`; the bound values and the rows are `content`, as far as the
/// deciding policies' `inspection` allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SqlFacts {
    /// Rows returned to the agent.
    pub rows: u64,
    /// More rows were there than the call could return (the template's `max_rows`, or what a
    /// `rows` limit left); they were not fetched past one.
    pub truncated: bool,
    /// Time in the database: from the statement sent to its last row read, in microseconds.
    pub db_us: u64,
    /// The statement time-out in force, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for Record {
    /// An empty call record, without ids yet.
    fn default() -> Self {
        Record::new(Kind::Call, String::new(), 0)
    }
}

impl Record {
    /// An empty record of `kind`; the caller fills what it knows.
    pub fn new(kind: Kind, evidence_id: impl Into<String>, at_ms: u64) -> Self {
        Record {
            seq: 0,
            prev: String::new(),
            evidence_id: evidence_id.into(),
            kind,
            at_ms,
            latency_us: 0,
            decision_id: None,
            run_id: None,
            step_id: None,
            session_id: None,
            tenant: None,
            project: None,
            agent: None,
            actor: None,
            channel: None,
            plane: None,
            connector: None,
            model: None,
            tool: None,
            template: None,
            query_hash: None,
            doc_ids: Vec::new(),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            prompt_hash: None,
            response_hash: None,
            snapshot: None,
            policy: None,
            action: None,
            code: None,
            reasons: Vec::new(),
            mode: Mode::Enforcing,
            outcome: None,
            cut: None,
            basis: None,
            request: None,
            usage: None,
            content: None,
            audit: None,
            sql: None,
            mcp: None,
        }
    }
}

/// Domain separation for record hashes.
const DOMAIN: &[u8] = b"warden/v1 evidence\n";

/// The `prev` of the first record.
pub fn genesis() -> String {
    format!("sha256:{}", "0".repeat(64))
}

/// The hash of a record, over the exact bytes stored in its frame.
pub fn record_hash(body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(body);
    hex("sha256:", &h.finalize())
}

/// `sha256:<hex>` of arbitrary content (prompts, responses, queries), for records that must not
/// hold the content itself.
pub fn content_hash(bytes: &[u8]) -> String {
    hex("sha256:", &Sha256::digest(bytes))
}

pub(crate) fn hex(prefix: &str, bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(prefix.len() + bytes.len() * 2);
    out.push_str(prefix);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_hash_is_lower_hex_sha256() {
        assert_eq!(
            super::content_hash(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
