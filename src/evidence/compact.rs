//! The compact record body of `WEVSEG3` segments: protocol buffers (`proto/warden/v1/evidence.proto`
//! documents the schema), with what a plain call repeats left out and hashes and ids stored as
//! raw bytes.
//!
//! - `sha256:<hex>` hashes are 32 raw bytes; UUIDs (evidence and decision ids, `run-<uuid>`)
//!   16 raw bytes and their prefix; anything else is kept as its text.
//! - The step id of a call without one of its own (`step-<decision id>`) and a session that is
//!   the run are flags; the decision's request repeats no field the record already holds.
//! - Absent fields, zeros and empty lists are not written (protocol buffers' default).
//! - Audit details stay JSON inside the message (operators' words, free to grow).
//!
//! [`encode`] checks that the compact body decodes to exactly the record given; a record it
//! cannot represent that way (a variant missing from the tables below) is written as JSON,
//! which [`decode`] tells apart by its first byte (`{`, never the first byte of the message).
//! So the compact form never loses a field, and the chain hash covers the stored bytes as before.

use prost::Message;
use serde::Serialize;

use super::record::{Basis, Content, Cut, Kind, McpFacts, Outcome, Record, SqlFacts};
use crate::codes::Code;
use crate::decide::{
    ArgumentBreak, ArgumentsFact, Delta, Facts, GroundingFact, PiiFact, Reason, Request,
    SecretFact, Usage,
};
use crate::decide::{Mode, ReasonCode};
use crate::policy::model::{Action, Channel};
use crate::policy::model::{PiiKind, SecretKind};

// === the tables: append only, never reorder (the index + 1 is what is stored) ===

const KINDS: &[Kind] = &[Kind::Call, Kind::Audit];
const CHANNELS: &[Channel] = &[Channel::Llm, Channel::Http, Channel::Sql, Channel::Mcp];
const ACTIONS: &[Action] = &[
    Action::Continue,
    Action::Warn,
    Action::Pause,
    Action::Stop,
    Action::Kill,
];
const MODES: &[Mode] = &[Mode::Enforcing, Mode::Degraded, Mode::Bypass, Mode::Halted];
const OUTCOMES: &[Outcome] = &[
    Outcome::Allowed,
    Outcome::Refused,
    Outcome::Cut,
    Outcome::Bypassed,
    Outcome::Errored,
];
const BASES: &[Basis] = &[
    Basis::Decision,
    Basis::AfterDecision,
    Basis::BeforeDecision,
    Basis::Local,
];

#[derive(Clone, PartialEq, Message)]
struct Hash {
    #[prost(bytes = "vec", tag = "1")]
    sha256: Vec<u8>,
    #[prost(string, tag = "2")]
    text: String,
}

#[derive(Clone, PartialEq, Message)]
struct Id {
    #[prost(bytes = "vec", tag = "1")]
    uuid: Vec<u8>,
    #[prost(string, tag = "2")]
    prefix: String,
    #[prost(string, tag = "3")]
    text: String,
}

#[derive(Clone, PartialEq, Message)]
struct PReason {
    #[prost(string, optional, tag = "1")]
    policy: Option<String>,
    #[prost(uint32, tag = "2")]
    action: u32,
    #[prost(string, tag = "3")]
    code: String,
    #[prost(string, tag = "4")]
    detail: String,
}

#[derive(Clone, PartialEq, Message)]
struct PCut {
    #[prost(uint64, tag = "1")]
    after_tokens: u64,
    #[prost(string, tag = "2")]
    code: String,
    #[prost(string, tag = "3")]
    detail: String,
}

#[derive(Clone, PartialEq, Message)]
struct PDelta {
    #[prost(double, tag = "1")]
    input_tokens: f64,
    #[prost(double, tag = "2")]
    output_tokens: f64,
    #[prost(double, tag = "3")]
    cost_usd: f64,
    #[prost(double, tag = "4")]
    bytes: f64,
    #[prost(double, tag = "5")]
    rows: f64,
}

/// A detector's fact: `state` 1 unavailable, 2 found, 3 partial; the kinds found as their
/// index + 1 in `PiiKind::ALL` or `SecretKind::ALL`.
#[derive(Clone, PartialEq, Message)]
struct PFact {
    #[prost(uint32, tag = "1")]
    state: u32,
    #[prost(uint32, repeated, tag = "2")]
    kinds: Vec<u32>,
}

fn kinds_of<K: PartialEq + Copy>(all: &[K], kinds: &[K]) -> Vec<u32> {
    kinds
        .iter()
        .map(|k| all.iter().position(|a| a == k).map_or(0, |i| i as u32 + 1))
        .collect()
}

fn kinds_from<K: Copy>(all: &[K], idx: &[u32]) -> Result<Vec<K>, DecodeError> {
    idx.iter()
        .map(|&i| {
            i.checked_sub(1)
                .and_then(|i| all.get(i as usize).copied())
                .ok_or_else(|| DecodeError::Field(format!("kind {i} is not in the table")))
        })
        .collect()
}

/// The codec of one detector's fact type (`PiiFact` and `SecretFact` share their shape).
macro_rules! fact_codec {
    ($to:ident, $from:ident, $fact:ident, $kind:ident) => {
        fn $to(f: &$fact) -> PFact {
            let (state, kinds) = match f {
                $fact::Unavailable => (1, Vec::new()),
                $fact::Found(k) => (2, kinds_of(&$kind::ALL, k)),
                $fact::Partial(k) => (3, kinds_of(&$kind::ALL, k)),
            };
            PFact { state, kinds }
        }

        fn $from(p: &PFact) -> Result<$fact, DecodeError> {
            Ok(match p.state {
                1 => $fact::Unavailable,
                2 => $fact::Found(kinds_from(&$kind::ALL, &p.kinds)?),
                3 => $fact::Partial(kinds_from(&$kind::ALL, &p.kinds)?),
                n => return Err(DecodeError::Field(format!("fact state {n}"))),
            })
        }
    };
}

fact_codec!(pii_fact, pii_from, PiiFact, PiiKind);
fact_codec!(secret_fact, secret_from, SecretFact, SecretKind);

/// What a call's limits had used, by policy: one figure per limit (doubles, exact).
#[derive(Clone, PartialEq, Message)]
struct PUsage {
    #[prost(btree_map = "string, message", tag = "1")]
    by_policy: std::collections::BTreeMap<String, PUsed>,
}

#[derive(Clone, PartialEq, Message)]
struct PUsed {
    #[prost(double, repeated, tag = "1")]
    used: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
struct PContent {
    #[prost(string, optional, tag = "1")]
    prompt: Option<String>,
    #[prost(string, optional, tag = "2")]
    response: Option<String>,
}

/// The decision's request: `same` has bit i set where field i equals the record's own
/// (0 tenant, 1 project, 2 agent, 3 actor, 4 channel, 5 connector, 6 model, 7 tool,
/// 8 template); only the others are written.
#[derive(Clone, PartialEq, Message)]
struct PRequest {
    #[prost(uint32, tag = "1")]
    same: u32,
    #[prost(string, optional, tag = "2")]
    tenant: Option<String>,
    #[prost(string, optional, tag = "3")]
    project: Option<String>,
    #[prost(string, optional, tag = "4")]
    agent: Option<String>,
    #[prost(string, optional, tag = "5")]
    actor: Option<String>,
    #[prost(uint32, tag = "6")]
    channel: u32,
    #[prost(string, optional, tag = "7")]
    connector: Option<String>,
    #[prost(string, optional, tag = "8")]
    model: Option<String>,
    #[prost(string, optional, tag = "9")]
    tool: Option<String>,
    #[prost(string, optional, tag = "10")]
    template: Option<String>,
    #[prost(string, optional, tag = "11")]
    api_key: Option<String>,
    #[prost(bool, tag = "12")]
    new_run: bool,
    #[prost(message, optional, tag = "13")]
    pii: Option<PFact>,
    #[prost(message, optional, tag = "15")]
    secrets: Option<PFact>,
    /// 0 absent, 1 unavailable, 2 a score (`grounding_score`).
    #[prost(uint32, tag = "16")]
    grounding: u32,
    #[prost(double, tag = "17")]
    grounding_score: f64,
    #[prost(message, optional, tag = "14")]
    delta: Option<PDelta>,
    #[prost(bool, tag = "18")]
    has_arguments: bool,
    #[prost(message, repeated, tag = "19")]
    arguments: Vec<PArgumentBreak>,
}

#[derive(Clone, PartialEq, Message)]
struct PArgumentBreak {
    #[prost(string, tag = "1")]
    policy: String,
    #[prost(string, tag = "2")]
    path: String,
    #[prost(string, tag = "3")]
    rule: String,
}

#[derive(Clone, PartialEq, Message)]
struct PRecord {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(message, optional, tag = "2")]
    prev: Option<Hash>,
    #[prost(message, optional, tag = "3")]
    evidence_id: Option<Id>,
    #[prost(uint32, tag = "4")]
    kind: u32,
    #[prost(uint64, tag = "5")]
    at_ms: u64,
    #[prost(uint64, tag = "6")]
    latency_us: u64,
    #[prost(message, optional, tag = "7")]
    decision_id: Option<Id>,
    #[prost(message, optional, tag = "8")]
    run_id: Option<Id>,
    #[prost(bool, tag = "9")]
    step_of_decision: bool,
    #[prost(message, optional, tag = "10")]
    step_id: Option<Id>,
    #[prost(bool, tag = "11")]
    session_is_run: bool,
    #[prost(message, optional, tag = "12")]
    session_id: Option<Id>,
    #[prost(string, optional, tag = "13")]
    tenant: Option<String>,
    #[prost(string, optional, tag = "14")]
    project: Option<String>,
    #[prost(string, optional, tag = "15")]
    agent: Option<String>,
    #[prost(string, optional, tag = "16")]
    actor: Option<String>,
    #[prost(uint32, tag = "17")]
    channel: u32,
    #[prost(string, optional, tag = "18")]
    plane: Option<String>,
    #[prost(string, optional, tag = "19")]
    connector: Option<String>,
    #[prost(string, optional, tag = "20")]
    model: Option<String>,
    #[prost(string, optional, tag = "21")]
    tool: Option<String>,
    #[prost(string, optional, tag = "22")]
    template: Option<String>,
    #[prost(message, optional, tag = "23")]
    query_hash: Option<Hash>,
    #[prost(string, repeated, tag = "24")]
    doc_ids: Vec<String>,
    #[prost(uint64, tag = "25")]
    input_tokens: u64,
    #[prost(uint64, tag = "26")]
    output_tokens: u64,
    #[prost(double, tag = "27")]
    cost_usd: f64,
    #[prost(uint64, tag = "28")]
    bytes_in: u64,
    #[prost(uint64, tag = "29")]
    bytes_out: u64,
    #[prost(message, optional, tag = "30")]
    prompt_hash: Option<Hash>,
    #[prost(message, optional, tag = "31")]
    response_hash: Option<Hash>,
    #[prost(message, optional, tag = "32")]
    snapshot: Option<Hash>,
    #[prost(string, optional, tag = "33")]
    policy: Option<String>,
    #[prost(uint32, tag = "34")]
    action: u32,
    #[prost(string, optional, tag = "35")]
    code: Option<String>,
    #[prost(message, repeated, tag = "36")]
    reasons: Vec<PReason>,
    #[prost(uint32, tag = "37")]
    mode: u32,
    #[prost(uint32, tag = "38")]
    outcome: u32,
    #[prost(message, optional, tag = "39")]
    cut: Option<PCut>,
    #[prost(uint32, tag = "40")]
    basis: u32,
    #[prost(message, optional, tag = "41")]
    request: Option<PRequest>,
    #[prost(message, optional, tag = "42")]
    usage: Option<PUsage>,
    #[prost(message, optional, tag = "43")]
    content: Option<PContent>,
    /// The audit details as JSON.
    #[prost(bytes = "vec", optional, tag = "44")]
    audit: Option<Vec<u8>>,
    #[prost(message, optional, tag = "45")]
    sql: Option<PSql>,
    #[prost(message, optional, tag = "46")]
    mcp: Option<PMcp>,
}

#[derive(Clone, PartialEq, Message)]
struct PMcp {
    #[prost(string, tag = "1")]
    revision: String,
    #[prost(bool, tag = "2")]
    is_error: bool,
    #[prost(uint64, tag = "3")]
    upstream_us: u64,
}

#[derive(Clone, PartialEq, Message)]
struct PSql {
    #[prost(uint64, tag = "1")]
    rows: u64,
    #[prost(bool, tag = "2")]
    truncated: bool,
    #[prost(uint64, tag = "3")]
    db_us: u64,
    #[prost(uint64, tag = "4")]
    timeout_ms: u64,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a compact record: {0}")]
    Proto(#[from] prost::DecodeError),
    #[error("not a JSON record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("compact record: {0}")]
    Field(String),
}

/// Thrown inside [`to_proto`] when a value is not in its table: the record is written as JSON.
struct Unrepresentable;

fn index<T: PartialEq>(table: &[T], v: &T) -> Result<u32, Unrepresentable> {
    table
        .iter()
        .position(|t| t == v)
        .map(|i| i as u32 + 1)
        .ok_or(Unrepresentable)
}

fn opt_index<T: PartialEq>(table: &[T], v: &Option<T>) -> Result<u32, Unrepresentable> {
    v.as_ref().map_or(Ok(0), |v| index(table, v))
}

fn at_index<T: Copy>(table: &[T], i: u32, what: &str) -> Result<Option<T>, DecodeError> {
    if i == 0 {
        return Ok(None);
    }
    table
        .get(i as usize - 1)
        .copied()
        .map(Some)
        .ok_or_else(|| DecodeError::Field(format!("{what} {i} is not in the table")))
}

fn code_of(s: &str) -> Result<Code, DecodeError> {
    Code::parse(s).ok_or_else(|| DecodeError::Field(format!("unknown code `{s}`")))
}

fn reason_code_of(s: &str) -> Result<ReasonCode, DecodeError> {
    ReasonCode::parse(s).ok_or_else(|| DecodeError::Field(format!("unknown reason code `{s}`")))
}

const SHA: &str = "sha256:";

fn hash_of(s: &str) -> Hash {
    if let Some(hex) = s.strip_prefix(SHA) {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let raw = (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            return Hash {
                sha256: raw,
                text: String::new(),
            };
        }
    }
    Hash {
        sha256: Vec::new(),
        text: s.to_string(),
    }
}

fn hash_text(h: &Hash) -> String {
    if h.sha256.is_empty() {
        return h.text.clone();
    }
    super::record::hex(SHA, &h.sha256)
}

/// A canonical (lower-case, hyphenated) UUID at the end of `s`, and what comes before it.
fn id_of(s: &str) -> Id {
    if s.len() >= 36 && s.is_char_boundary(s.len() - 36) {
        let (prefix, tail) = s.split_at(s.len() - 36);
        if let Ok(u) = uuid::Uuid::parse_str(tail) {
            if u.hyphenated().to_string() == tail && prefix.len() <= 16 {
                return Id {
                    uuid: u.as_bytes().to_vec(),
                    prefix: prefix.to_string(),
                    text: String::new(),
                };
            }
        }
    }
    Id {
        uuid: Vec::new(),
        prefix: String::new(),
        text: s.to_string(),
    }
}

fn id_text(id: &Id) -> Result<String, DecodeError> {
    if id.uuid.is_empty() {
        return Ok(id.text.clone());
    }
    let u = uuid::Uuid::from_slice(&id.uuid)
        .map_err(|e| DecodeError::Field(format!("bad uuid: {e}")))?;
    Ok(format!("{}{}", id.prefix, u.hyphenated()))
}

fn opt_id(id: &Option<Id>) -> Result<Option<String>, DecodeError> {
    id.as_ref().map(id_text).transpose()
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, Unrepresentable> {
    serde_json::to_vec(v).map_err(|_| Unrepresentable)
}

fn to_proto(r: &Record) -> Result<PRecord, Unrepresentable> {
    let step_of_decision = match (&r.step_id, &r.decision_id) {
        (Some(s), Some(d)) => s.strip_prefix("step-") == Some(d.as_str()),
        _ => false,
    };
    let session_is_run = r.session_id.is_some() && r.session_id == r.run_id;
    Ok(PRecord {
        seq: r.seq,
        prev: Some(hash_of(&r.prev)),
        evidence_id: Some(id_of(&r.evidence_id)),
        kind: index(KINDS, &r.kind)?,
        at_ms: r.at_ms,
        latency_us: r.latency_us,
        decision_id: r.decision_id.as_deref().map(id_of),
        run_id: r.run_id.as_deref().map(id_of),
        step_of_decision,
        step_id: if step_of_decision {
            None
        } else {
            r.step_id.as_deref().map(id_of)
        },
        session_is_run,
        session_id: if session_is_run {
            None
        } else {
            r.session_id.as_deref().map(id_of)
        },
        tenant: r.tenant.clone(),
        project: r.project.clone(),
        agent: r.agent.clone(),
        actor: r.actor.clone(),
        channel: opt_index(CHANNELS, &r.channel)?,
        plane: r.plane.clone(),
        connector: r.connector.clone(),
        model: r.model.clone(),
        tool: r.tool.clone(),
        template: r.template.clone(),
        query_hash: r.query_hash.as_deref().map(hash_of),
        doc_ids: r.doc_ids.clone(),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_usd: r.cost_usd,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        prompt_hash: r.prompt_hash.as_deref().map(hash_of),
        response_hash: r.response_hash.as_deref().map(hash_of),
        snapshot: r.snapshot.as_deref().map(hash_of),
        policy: r.policy.clone(),
        action: opt_index(ACTIONS, &r.action)?,
        code: r.code.map(|c| c.as_str().to_string()),
        reasons: r
            .reasons
            .iter()
            .map(|x| {
                Ok(PReason {
                    policy: x.policy.as_deref().map(str::to_string),
                    action: index(ACTIONS, &x.action)?,
                    code: x.code.as_str().to_string(),
                    detail: x.detail.clone(),
                })
            })
            .collect::<Result<_, _>>()?,
        mode: index(MODES, &r.mode)?,
        outcome: opt_index(OUTCOMES, &r.outcome)?,
        cut: r
            .cut
            .as_ref()
            .map(|c| {
                Ok(PCut {
                    after_tokens: c.after_tokens,
                    code: c.code.as_str().to_string(),
                    detail: c.detail.clone(),
                })
            })
            .transpose()?,
        basis: opt_index(BASES, &r.basis)?,
        request: r.request.as_ref().map(|q| request_of(q, r)).transpose()?,
        usage: r.usage.as_ref().map(|u| PUsage {
            by_policy: u
                .0
                .iter()
                .map(|(k, v)| (k.clone(), PUsed { used: v.clone() }))
                .collect(),
        }),
        content: r.content.as_ref().map(|c| PContent {
            prompt: c.prompt.clone(),
            response: c.response.clone(),
        }),
        audit: r.audit.as_ref().map(json).transpose()?,
        sql: r.sql.map(|s| PSql {
            rows: s.rows,
            truncated: s.truncated,
            db_us: s.db_us,
            timeout_ms: s.timeout_ms,
        }),
        mcp: r.mcp.as_ref().map(|m| PMcp {
            revision: m.revision.clone(),
            is_error: m.is_error,
            upstream_us: m.upstream_us,
        }),
    })
}

fn request_of(q: &Request, r: &Record) -> Result<PRequest, Unrepresentable> {
    let mut p = PRequest {
        api_key: q.api_key.clone(),
        new_run: q.new_run,
        pii: q.facts.pii.as_ref().map(pii_fact),
        secrets: q.facts.secrets.as_ref().map(secret_fact),
        grounding: match q.facts.grounding {
            None => 0,
            Some(GroundingFact::Unavailable) => 1,
            Some(GroundingFact::Score(_)) => 2,
        },
        grounding_score: match q.facts.grounding {
            Some(GroundingFact::Score(x)) => x,
            _ => 0.0,
        },
        has_arguments: q.facts.arguments.is_some(),
        arguments: q
            .facts
            .arguments
            .iter()
            .flat_map(|f| &f.broken)
            .map(|b| PArgumentBreak {
                policy: b.policy.clone(),
                path: b.path.clone(),
                rule: b.rule.clone(),
            })
            .collect(),
        delta: (q.delta != Delta::default()).then_some(PDelta {
            input_tokens: q.delta.input_tokens,
            output_tokens: q.delta.output_tokens,
            cost_usd: q.delta.cost_usd,
            bytes: q.delta.bytes,
            rows: q.delta.rows,
        }),
        ..PRequest::default()
    };
    let mut same = 0u32;
    let mut field =
        |bit: u32, mine: &Option<String>, theirs: &Option<String>, out: &mut Option<String>| {
            if mine == theirs {
                same |= 1 << bit;
            } else {
                *out = mine.clone();
            }
        };
    field(0, &Some(q.tenant.clone()), &r.tenant, &mut p.tenant);
    field(1, &Some(q.project.clone()), &r.project, &mut p.project);
    field(2, &Some(q.agent.clone()), &r.agent, &mut p.agent);
    field(3, &q.actor, &r.actor, &mut p.actor);
    field(5, &q.connector, &r.connector, &mut p.connector);
    field(6, &q.model, &r.model, &mut p.model);
    field(7, &q.tool, &r.tool, &mut p.tool);
    field(8, &q.template, &r.template, &mut p.template);
    if Some(q.channel) == r.channel {
        same |= 1 << 4;
    } else {
        p.channel = index(CHANNELS, &q.channel)?;
    }
    p.same = same;
    Ok(p)
}

fn from_proto(p: PRecord) -> Result<Record, DecodeError> {
    let missing = |what: &str| DecodeError::Field(format!("no {what}"));
    let decision_id = opt_id(&p.decision_id)?;
    let run_id = opt_id(&p.run_id)?;
    let step_id = if p.step_of_decision {
        Some(format!(
            "step-{}",
            decision_id
                .as_deref()
                .ok_or_else(|| missing("decision id"))?
        ))
    } else {
        opt_id(&p.step_id)?
    };
    let session_id = if p.session_is_run {
        Some(run_id.clone().ok_or_else(|| missing("run id"))?)
    } else {
        opt_id(&p.session_id)?
    };
    let mut r = Record::new(
        at_index(KINDS, p.kind, "kind")?.ok_or_else(|| missing("kind"))?,
        id_text(
            p.evidence_id
                .as_ref()
                .ok_or_else(|| missing("evidence id"))?,
        )?,
        p.at_ms,
    );
    r.seq = p.seq;
    r.prev = hash_text(p.prev.as_ref().ok_or_else(|| missing("prev"))?);
    r.latency_us = p.latency_us;
    r.decision_id = decision_id;
    r.run_id = run_id;
    r.step_id = step_id;
    r.session_id = session_id;
    r.tenant = p.tenant;
    r.project = p.project;
    r.agent = p.agent;
    r.actor = p.actor;
    r.channel = at_index(CHANNELS, p.channel, "channel")?;
    r.plane = p.plane;
    r.connector = p.connector;
    r.model = p.model;
    r.tool = p.tool;
    r.template = p.template;
    r.query_hash = p.query_hash.as_ref().map(hash_text);
    r.doc_ids = p.doc_ids;
    r.input_tokens = p.input_tokens;
    r.output_tokens = p.output_tokens;
    r.cost_usd = p.cost_usd;
    r.bytes_in = p.bytes_in;
    r.bytes_out = p.bytes_out;
    r.prompt_hash = p.prompt_hash.as_ref().map(hash_text);
    r.response_hash = p.response_hash.as_ref().map(hash_text);
    r.snapshot = p.snapshot.as_ref().map(hash_text);
    r.policy = p.policy;
    r.action = at_index(ACTIONS, p.action, "action")?;
    r.code = p.code.as_deref().map(code_of).transpose()?;
    r.reasons = p
        .reasons
        .into_iter()
        .map(|x| {
            Ok(Reason {
                policy: x.policy.map(Into::into),
                action: at_index(ACTIONS, x.action, "action")?.ok_or_else(|| missing("action"))?,
                code: reason_code_of(&x.code)?,
                detail: x.detail,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    r.mode = at_index(MODES, p.mode, "mode")?.ok_or_else(|| missing("mode"))?;
    r.outcome = at_index(OUTCOMES, p.outcome, "outcome")?;
    r.cut = p
        .cut
        .map(|c| {
            Ok::<_, DecodeError>(Cut {
                after_tokens: c.after_tokens,
                code: code_of(&c.code)?,
                detail: c.detail,
            })
        })
        .transpose()?;
    r.basis = at_index(BASES, p.basis, "basis")?;
    r.usage = p
        .usage
        .map(|u| Usage(u.by_policy.into_iter().map(|(k, v)| (k, v.used)).collect()));
    r.content = p.content.map(|c| Content {
        prompt: c.prompt,
        response: c.response,
    });
    r.audit = p.audit.as_deref().map(serde_json::from_slice).transpose()?;
    r.sql = p.sql.map(|s| SqlFacts {
        rows: s.rows,
        truncated: s.truncated,
        db_us: s.db_us,
        timeout_ms: s.timeout_ms,
    });
    r.mcp = p.mcp.map(|m| McpFacts {
        revision: m.revision,
        is_error: m.is_error,
        upstream_us: m.upstream_us,
    });
    r.request = p.request.map(|q| request_from(q, &r)).transpose()?;
    Ok(r)
}

fn request_from(q: PRequest, r: &Record) -> Result<Request, DecodeError> {
    let same = |bit: u32| q.same & (1 << bit) != 0;
    let pick = |bit: u32, theirs: &Option<String>, mine: Option<String>| {
        if same(bit) {
            theirs.clone()
        } else {
            mine
        }
    };
    let need = |v: Option<String>, what: &str| {
        v.ok_or_else(|| DecodeError::Field(format!("request without {what}")))
    };
    let channel = if same(4) {
        r.channel
    } else {
        at_index(CHANNELS, q.channel, "channel")?
    };
    let d = q.delta.unwrap_or_default();
    Ok(Request {
        tenant: need(pick(0, &r.tenant, q.tenant), "tenant")?,
        project: need(pick(1, &r.project, q.project), "project")?,
        agent: need(pick(2, &r.agent, q.agent), "agent")?,
        actor: pick(3, &r.actor, q.actor),
        channel: channel.ok_or_else(|| DecodeError::Field("request without channel".into()))?,
        connector: pick(5, &r.connector, q.connector),
        model: pick(6, &r.model, q.model),
        tool: pick(7, &r.tool, q.tool),
        template: pick(8, &r.template, q.template),
        api_key: q.api_key,
        new_run: q.new_run,
        facts: Facts {
            pii: q.pii.as_ref().map(pii_from).transpose()?,
            secrets: q.secrets.as_ref().map(secret_from).transpose()?,
            grounding: match q.grounding {
                0 => None,
                1 => Some(GroundingFact::Unavailable),
                2 => Some(GroundingFact::Score(q.grounding_score)),
                n => return Err(DecodeError::Field(format!("grounding {n}"))),
            },
            arguments: q.has_arguments.then(|| ArgumentsFact {
                broken: q
                    .arguments
                    .into_iter()
                    .map(|b| ArgumentBreak {
                        policy: b.policy,
                        path: b.path,
                        rule: b.rule,
                    })
                    .collect(),
            }),
        },
        delta: Delta {
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            cost_usd: d.cost_usd,
            bytes: d.bytes,
            rows: d.rows,
        },
    })
}

/// The body of `r` in a `WEVSEG3` segment: compact, or JSON where compact would not read back
/// as exactly `r`.
pub fn encode(r: &Record) -> Result<Vec<u8>, serde_json::Error> {
    if let Ok(p) = to_proto(r) {
        let body = p.encode_to_vec();
        if body.first() != Some(&b'{') && decode(&body).is_ok_and(|back| back == *r) {
            return Ok(body);
        }
    }
    serde_json::to_vec(r)
}

/// A `WEVSEG3` record body: compact, or JSON (first byte `{`).
pub fn decode(body: &[u8]) -> Result<Record, DecodeError> {
    if body.first() == Some(&b'{') {
        return Ok(serde_json::from_slice(body)?);
    }
    from_proto(PRecord::decode(body)?)
}

#[cfg(test)]
mod tests;
