//! The pure decision function (`docs/decisions.md`).
//!
//! `decide(snapshot, request, usage, mode, now, decision_id) -> Decision` does no I/O, reads no
//! clock and draws no randomness: time and ids are arguments, so any decision can be replayed
//! from its evidence and every law of §4 can be property-tested.
//!
//! The laws, each tested in `tests/decide_laws.rs`:
//! - no active, non-shadow `allow` fires → STOP `no_allow_policy` (deny by default);
//! - the most restrictive action wins (`KILL > STOP > PAUSE > WARN > CONTINUE`); between equal
//!   actions the lowest policy id wins; the order policies are written in never matters
//!   (INV-005), and reasons come out in one canonical order;
//! - limits only say NEAR (alerts, never an action) or BREACH (their `on_breach` action);
//! - PII and secrets facts block by default, grounding never blocks unless the policy opts in (INV-002);
//! - a fact a policy needs but cannot have follows the policy's `failure_mode`;
//! - shadow, draft, suspended and retired policies never change the outcome.

pub mod bind;
pub mod reserve;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codes::Code;
use crate::policy::compile::{CompiledPolicy, Snapshot};
use crate::policy::model::{
    Action, Channel, Effect, FailureMode, Inspection, Metric, PiiKind, SecretKind, Window,
};

// === inputs ===

/// The facts of one mediated call, as the spine establishes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Identity, from the sidecar's configuration (never from the agent).
    pub tenant: String,
    pub project: String,
    pub agent: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// The human on whose behalf the agent acts (`x-warden-actor`).
    #[serde(default)]
    pub actor: Option<String>,
    pub channel: Channel,
    #[serde(default)]
    pub connector: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    /// True for the first call of a run (degraded mode refuses new runs).
    #[serde(default)]
    pub new_run: bool,
    #[serde(default)]
    pub facts: Facts,
    /// What this call adds, as far as known when deciding (prompt tokens before the call,
    /// output tokens so far while streaming). One request, and one query on the SQL channel,
    /// are implicit.
    #[serde(default)]
    pub delta: Delta,
}

/// Detector results. Absent means "not established at this point" (e.g. grounding before the
/// answer exists): the detector has nothing to say yet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    #[serde(default)]
    pub pii: Option<PiiFact>,
    #[serde(default)]
    pub grounding: Option<GroundingFact>,
    /// Credentials found (`detect::secrets`); left out of a record when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretFact>,
    /// MCP tool-argument rules the call's arguments break ([`arguments_fact`]); left out of a
    /// record when absent. The values themselves are never in the fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<ArgumentsFact>,
}

/// The argument rules a tool call breaks, by policy: computed from the call's arguments by
/// [`arguments_fact`] before deciding, so the decision reads facts only and replays from its
/// record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgumentsFact {
    pub broken: Vec<ArgumentBreak>,
}

/// One rule broken: the policy whose `arguments` hold it, the path, what it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgumentBreak {
    pub policy: String,
    pub path: String,
    pub rule: String,
}

/// Whether the agent may see `req`'s target in a listing (the models, the MCP tools): an
/// allow would let it through with clean facts (nothing found, every argument rule kept) and
/// no usage — what the content or the budget of a call says is judged on the call.
pub fn visible(
    snap: &Snapshot,
    mut req: Request,
    mode: Mode,
    now_ms: u64,
    decision_id: &str,
) -> bool {
    req.facts.pii = Some(PiiFact::Found(Vec::new()));
    req.facts.secrets = Some(SecretFact::Found(Vec::new()));
    req.facts.arguments = Some(ArgumentsFact::default());
    !decide(snap, &req, &(), mode, now_ms, decision_id).refused()
}

/// The argument rules `args` (a tool call's `arguments`) breaks, of every policy that could
/// fire on `req` — its tenant's and the platform's, on its channel, in scope, matching its
/// connector and tool. Pure: the same snapshot, request and arguments give the same fact.
pub fn arguments_fact(snap: &Snapshot, req: &Request, args: &serde_json::Value) -> ArgumentsFact {
    let conn = req
        .connector
        .as_deref()
        .and_then(|c| snap.connector(&req.tenant, c));
    let plane = conn.map(|c| &*c.plane);
    let plane_default_allow = conn.is_none_or(|c| c.plane_default_allow);
    let (own, platform) = snap.candidates(&req.tenant, req.channel);
    let mut broken = Vec::new();
    for &idx in own.iter().chain(platform) {
        let p = snap.policy(idx);
        if p.arguments.is_empty()
            || !in_scope(p, req)
            || !matches(p, req, plane, plane_default_allow)
        {
            continue;
        }
        for b in crate::policy::args::check(&p.arguments, args) {
            broken.push(ArgumentBreak {
                policy: p.id.to_string(),
                path: b.path,
                rule: b.rule,
            });
        }
    }
    ArgumentsFact { broken }
}

/// The secrets detector's fact, read like [`PiiFact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretFact {
    /// The detector should have run and could not.
    Unavailable,
    /// The detector ran; these kinds were found (empty: none).
    Found(Vec<SecretKind>),
    /// Found in the part read; the rest could not be read (`failure_mode` judges it).
    Partial(Vec<SecretKind>),
}

impl SecretFact {
    /// The kinds of a [`SecretKind::bit`] mask, as a fact.
    pub fn of_mask(mask: u16) -> SecretFact {
        SecretFact::Found(SecretKind::of_mask(mask))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiFact {
    /// The detector should have run and could not.
    Unavailable,
    /// The detector ran; these kinds were found (empty: none).
    Found(Vec<PiiKind>),
    /// The detector read only part of the call (a body it could not decode): these kinds were
    /// found in the part it read, and the rest is unavailable. A policy judges both: the
    /// kinds as `Found`, the unread rest by its `failure_mode`; the most restrictive wins.
    Partial(Vec<PiiKind>),
}

impl PiiFact {
    /// The kinds of a [`PiiKind::bit`] mask, as a fact.
    pub fn of_mask(mask: u8) -> PiiFact {
        PiiFact::Found(
            PiiKind::ALL
                .into_iter()
                .filter(|k| mask & k.bit() != 0)
                .collect(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroundingFact {
    Unavailable,
    Score(f64),
}

/// Amounts this call adds to the metered metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delta {
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub cost_usd: f64,
    pub bytes: f64,
    /// Rows of a SQL result (absent in records written before the SQL channel).
    #[serde(skip_serializing_if = "is_zero")]
    pub rows: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Delta {
    /// The amount of `metric` (one request; one query on the SQL channel).
    pub fn get(&self, metric: Metric, channel: Channel) -> f64 {
        match metric {
            Metric::InputTokens => self.input_tokens,
            Metric::OutputTokens => self.output_tokens,
            Metric::TotalTokens => self.input_tokens + self.output_tokens,
            Metric::CostUsd => self.cost_usd,
            Metric::Requests => 1.0,
            Metric::Queries => f64::from(u8::from(channel == Channel::Sql)),
            Metric::Bytes => self.bytes,
            Metric::Rows => self.rows,
        }
    }
}

/// Usage so far, per (policy id, limit index), already windowed by the caller (the meter knows
/// the run, session, step and the sliding windows). Limits are indexed in canonical order.
pub trait UsageView {
    fn used(&self, policy: &str, limit: usize) -> f64;
}

/// No usage at all.
impl UsageView for () {
    fn used(&self, _policy: &str, _limit: usize) -> f64 {
        0.0
    }
}

/// Usage as plain data: policy id → used amount per limit index (evidence, replay, `policy eval`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usage(pub BTreeMap<String, Vec<f64>>);

impl UsageView for Usage {
    fn used(&self, policy: &str, limit: usize) -> f64 {
        self.0
            .get(policy)
            .and_then(|v| v.get(limit))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Governance mode (`docs/decisions.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforcing,
    Degraded,
    Bypass,
    Halted,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforcing => "enforcing",
            Mode::Degraded => "degraded",
            Mode::Bypass => "bypass",
            Mode::Halted => "halted",
        }
    }

    /// The mode in force for a tenant: `halted` anywhere wins (the kill switch is global);
    /// otherwise a tenant's own setting overrides the global one.
    pub fn effective(global: Mode, tenant: Option<Mode>) -> Mode {
        match (global, tenant) {
            (Mode::Halted, _) | (_, Some(Mode::Halted)) => Mode::Halted,
            (_, Some(t)) => t,
            (g, None) => g,
        }
    }
}

// === outputs ===

/// Why a policy fired (or the decision refused without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReasonCode {
    Allowed,
    NoAllowPolicy,
    PolicyDenied,
    BudgetExceeded,
    RateLimited,
    PiiDetected,
    SecretDetected,
    GroundingLow,
    FactUnavailable(Fact),
    GovernanceHalted,
    GovernanceDegraded,
}

/// A fact a detector needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fact {
    Pii,
    Grounding,
    Secrets,
    Arguments,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Allowed => "allowed",
            ReasonCode::NoAllowPolicy => "no_allow_policy",
            ReasonCode::PolicyDenied => "policy_denied",
            ReasonCode::BudgetExceeded => "budget_exceeded",
            ReasonCode::RateLimited => "rate_limited",
            ReasonCode::PiiDetected => "pii_detected",
            ReasonCode::SecretDetected => "secret_detected",
            ReasonCode::GroundingLow => "grounding_low",
            ReasonCode::FactUnavailable(Fact::Pii) => "fact_unavailable:pii",
            ReasonCode::FactUnavailable(Fact::Grounding) => "fact_unavailable:grounding",
            ReasonCode::FactUnavailable(Fact::Secrets) => "fact_unavailable:secrets",
            ReasonCode::FactUnavailable(Fact::Arguments) => "fact_unavailable:arguments",
            ReasonCode::GovernanceHalted => "governance_halted",
            ReasonCode::GovernanceDegraded => "governance_degraded",
        }
    }

    /// Every reason code.
    pub const ALL: [ReasonCode; 14] = [
        ReasonCode::Allowed,
        ReasonCode::NoAllowPolicy,
        ReasonCode::PolicyDenied,
        ReasonCode::BudgetExceeded,
        ReasonCode::RateLimited,
        ReasonCode::PiiDetected,
        ReasonCode::SecretDetected,
        ReasonCode::GroundingLow,
        ReasonCode::FactUnavailable(Fact::Pii),
        ReasonCode::FactUnavailable(Fact::Grounding),
        ReasonCode::FactUnavailable(Fact::Secrets),
        ReasonCode::FactUnavailable(Fact::Arguments),
        ReasonCode::GovernanceHalted,
        ReasonCode::GovernanceDegraded,
    ];

    pub fn parse(s: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The wire code a refusal for this reason carries.
    pub fn refusal(self) -> Option<Code> {
        Some(match self {
            ReasonCode::Allowed => return None,
            ReasonCode::NoAllowPolicy => Code::NoAllowPolicy,
            ReasonCode::PolicyDenied => Code::PolicyDenied,
            ReasonCode::BudgetExceeded => Code::BudgetExceeded,
            ReasonCode::RateLimited => Code::RateLimited,
            ReasonCode::PiiDetected => Code::PiiDetected,
            ReasonCode::SecretDetected => Code::SecretDetected,
            ReasonCode::GroundingLow => Code::GroundingLow,
            ReasonCode::FactUnavailable(_) => Code::FactUnavailable,
            ReasonCode::GovernanceHalted => Code::GovernanceHalted,
            ReasonCode::GovernanceDegraded => Code::GovernanceDegraded,
        })
    }
}

impl Serialize for ReasonCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReasonCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ReasonCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown reason `{s}`")))
    }
}

/// One firing of one policy (or of the default deny, `policy: None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub policy: Option<Arc<str>>,
    pub action: Action,
    pub code: ReasonCode,
    /// Human detail; empty when the code says it all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A NEAR tier reached: an alert for the event path, never an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearAlert {
    pub policy: Arc<str>,
    pub limit: usize,
    pub metric: Metric,
    pub window: Window,
    /// The highest tier reached, e.g. 0.8.
    pub tier: f64,
    pub used: f64,
    pub max: f64,
    pub shadow: bool,
}

/// A limit counter the meter must advance once the call's amounts are known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    pub policy: Arc<str>,
    pub limit: usize,
    pub metric: Metric,
    pub window: Window,
}

/// The verdict for one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub decision_id: String,
    pub at_ms: u64,
    pub snapshot: Arc<str>,
    pub mode: Mode,
    /// The outcome after the mode is applied.
    pub action: Action,
    /// The winning reason's wire code (none when the winner is a plain CONTINUE). Under
    /// `degraded`/`bypass` it stays the original winner's, next to `downgraded_from`; whether
    /// the call is refused is `action` alone.
    pub code: Option<Code>,
    /// The winning policy (none for the default deny and mode refusals).
    pub policy: Option<Arc<str>>,
    /// Every enforced firing, most restrictive first, then by policy id.
    pub reasons: Vec<Reason>,
    /// What shadow policies would have done; never enforced.
    pub shadow: Vec<Reason>,
    pub near: Vec<NearAlert>,
    /// The action before `degraded` (to WARN) or `bypass` (to CONTINUE) changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgraded_from: Option<Action>,
    /// Clamp for `max_tokens` (the least of the firing allow policies').
    pub max_tokens: Option<u32>,
    /// How much more of each metric this call may use before a blocking limit breaches
    /// (same-step enforcement cuts a stream there). Absent metrics are unlimited.
    pub headroom: Vec<(Metric, f64)>,
    /// What evidence may hold in clear: only what every firing allow policy permits.
    pub inspection: Inspection,
    pub meters: Vec<Meter>,
    /// Set by the spine's ledger, never by `decide`: the call is refused only because calls in
    /// flight hold the headroom (settled usage alone would have let it through). It is refused
    /// all the same, but it does not end the run: the holds may come back.
    #[serde(skip)]
    pub held_back: bool,
}

impl Decision {
    /// Whether the call is refused.
    pub fn refused(&self) -> bool {
        self.action.blocks()
    }

    /// Whether this outcome ends the run (STOP, KILL), as opposed to refusing only this call
    /// (PAUSE, and mode refusals, which last as long as the mode).
    pub fn ends_run(&self) -> bool {
        !self.held_back
            && self.action >= Action::Stop
            && !matches!(
                self.code,
                Some(Code::GovernanceHalted) | Some(Code::GovernanceDegraded)
            )
    }

    /// The headroom for one metric, if any blocking limit bounds it.
    pub fn headroom_for(&self, metric: Metric) -> Option<f64> {
        self.headroom
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }
}

// === decide ===

/// Decide one call. Pure: same inputs, same decision, whatever order the policies came in.
pub fn decide(
    snap: &Snapshot,
    req: &Request,
    usage: &dyn UsageView,
    mode: Mode,
    now_ms: u64,
    decision_id: &str,
) -> Decision {
    let mut d = Decision {
        decision_id: decision_id.to_string(),
        at_ms: now_ms,
        snapshot: snap.hash().clone(),
        mode,
        action: Action::Continue,
        code: None,
        policy: None,
        reasons: Vec::new(),
        shadow: Vec::new(),
        near: Vec::new(),
        downgraded_from: None,
        max_tokens: None,
        headroom: Vec::new(),
        inspection: Inspection::default(),
        meters: Vec::new(),
        held_back: false,
    };

    // Modes that refuse before any policy is consulted.
    let mode_refusal = match mode {
        Mode::Halted => Some(ReasonCode::GovernanceHalted),
        Mode::Degraded if req.new_run => Some(ReasonCode::GovernanceDegraded),
        _ => None,
    };
    if let Some(code) = mode_refusal {
        d.reasons.push(Reason {
            policy: None,
            action: Action::Stop,
            code,
            detail: String::new(),
        });
        d.action = Action::Stop;
        d.code = code.refusal();
        return d;
    }

    let conn = req
        .connector
        .as_deref()
        .and_then(|c| snap.connector(&req.tenant, c));
    let plane = conn.map(|c| &*c.plane);
    let plane_default_allow = conn.is_none_or(|c| c.plane_default_allow);
    let found = match &req.facts.pii {
        Some(PiiFact::Found(kinds)) | Some(PiiFact::Partial(kinds)) => {
            Some(kinds.iter().fold(0u8, |m, k| m | k.bit()))
        }
        _ => None,
    };

    let (own, platform) = snap.candidates(&req.tenant, req.channel);
    let mut any_allow = false;
    let mut inspection: Option<Inspection> = None;
    for &idx in own.iter().chain(platform) {
        let p = snap.policy(idx);
        if !in_scope(p, req) || !matches(p, req, plane, plane_default_allow) {
            continue;
        }
        let enforced = !p.shadow;
        if enforced && p.effect == Effect::Allow {
            any_allow = true;
            if let Some(mt) = p.max_tokens {
                d.max_tokens = Some(d.max_tokens.map_or(mt, |cur| cur.min(mt)));
            }
            inspection = Some(match inspection {
                None => p.inspection,
                Some(i) => Inspection {
                    prompts: i.prompts && p.inspection.prompts,
                    responses: i.responses && p.inspection.responses,
                    pii: i.pii && p.inspection.pii,
                    secrets: i.secrets && p.inspection.secrets,
                },
            });
        }
        evaluate(p, req, usage, found, &mut d);
    }
    d.inspection = inspection.unwrap_or_default();
    if !any_allow {
        d.reasons.push(Reason {
            policy: None,
            action: Action::Stop,
            code: ReasonCode::NoAllowPolicy,
            detail: String::new(),
        });
    }

    d.reasons.sort_by(reason_order);
    d.shadow.sort_by(reason_order);
    d.near
        .sort_by(|a, b| (&a.policy, a.limit).cmp(&(&b.policy, b.limit)));
    d.headroom.sort_by_key(|h| h.0);

    if let Some(win) = d.reasons.first() {
        d.action = win.action;
        d.policy = win.policy.clone();
        d.code = match win.action {
            Action::Continue => None,
            // A PAUSE refuses until an operator approves, whatever made it pause.
            Action::Pause => Some(Code::ApprovalRequired),
            _ => win.code.refusal(),
        };
    }

    match mode {
        Mode::Degraded if d.action.blocks() => {
            d.downgraded_from = Some(d.action);
            d.action = Action::Warn;
        }
        Mode::Bypass if d.action != Action::Continue => {
            d.downgraded_from = Some(d.action);
            d.action = Action::Continue;
        }
        _ => {}
    }
    d
}

/// Most restrictive first; then by policy id, the default deny (no policy) after all policies;
/// then by code and detail, so the order is total and independent of evaluation order.
fn reason_order(a: &Reason, b: &Reason) -> std::cmp::Ordering {
    b.action
        .cmp(&a.action)
        .then_with(|| match (&a.policy, &b.policy) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
        .then_with(|| a.code.cmp(&b.code))
        .then_with(|| a.detail.cmp(&b.detail))
}

fn listed(list: &[Box<str>], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| &**x == v))
}

pub(crate) fn in_scope(p: &CompiledPolicy, req: &Request) -> bool {
    let s = &p.scope;
    s.all_runs
        || (listed(&s.tenants, Some(&req.tenant))
            && listed(&s.projects, Some(&req.project))
            && listed(&s.agents, Some(&req.agent))
            && listed(&s.api_keys, req.api_key.as_deref())
            && listed(&s.actors, req.actor.as_deref()))
}

fn matches(
    p: &CompiledPolicy,
    req: &Request,
    plane: Option<&str>,
    plane_default_allow: bool,
) -> bool {
    // A default-deny plane is reached only by allows that name it (or something in it).
    if p.effect == Effect::Allow && !plane_default_allow && !p.explicit {
        return false;
    }
    p.channel == req.channel
        && listed(&p.planes, plane)
        && listed(&p.connectors, req.connector.as_deref())
        && listed(&p.models, req.model.as_deref())
        && listed(&p.tools, req.tool.as_deref())
        && listed(&p.templates, req.template.as_deref())
}

fn evaluate(
    p: &CompiledPolicy,
    req: &Request,
    usage: &dyn UsageView,
    pii_found: Option<u8>,
    d: &mut Decision,
) {
    let shadow = p.shadow;
    let push = |d: &mut Decision, action: Action, code: ReasonCode, detail: String| {
        let r = Reason {
            policy: Some(p.id.clone()),
            action,
            code,
            detail,
        };
        if shadow {
            d.shadow.push(r);
        } else {
            d.reasons.push(r);
        }
    };

    if p.effect == Effect::Deny {
        push(d, p.action, ReasonCode::PolicyDenied, String::new());
        return;
    }
    push(d, Action::Continue, ReasonCode::Allowed, String::new());

    for (i, l) in p.limits.iter().enumerate() {
        let used = usage.used(&p.id, i);
        let projected = used + req.delta.get(l.metric, req.channel);
        d.meters.push(Meter {
            policy: p.id.clone(),
            limit: i,
            metric: l.metric,
            window: l.window,
        });
        if projected > l.max {
            let code = match (l.metric, l.window) {
                (Metric::Requests | Metric::Queries, Window::Duration(_)) => {
                    ReasonCode::RateLimited
                }
                _ => ReasonCode::BudgetExceeded,
            };
            let detail = format!(
                "{} {} > {} per {}",
                l.metric.as_str(),
                projected,
                l.max,
                l.window
            );
            push(d, l.on_breach, code, detail);
        } else if let Some(tier) = l.near.iter().rev().find(|t| projected >= *t * l.max) {
            d.near.push(NearAlert {
                policy: p.id.clone(),
                limit: i,
                metric: l.metric,
                window: l.window,
                tier: *tier,
                used: projected,
                max: l.max,
                shadow,
            });
        }
        if !shadow && l.on_breach.blocks() {
            let room = (l.max - projected).max(0.0);
            match d.headroom.iter_mut().find(|(m, _)| *m == l.metric) {
                Some((_, cur)) => *cur = cur.min(room),
                None => d.headroom.push((l.metric, room)),
            }
        }
    }

    if let Some((action, mask)) = p.pii {
        if let Some(found) = pii_found {
            let relevant = if mask == 0 { found } else { found & mask };
            if relevant != 0 {
                let kinds: Vec<&str> = PiiKind::ALL
                    .iter()
                    .filter(|k| relevant & k.bit() != 0)
                    .map(|k| k.as_str())
                    .collect();
                push(d, action, ReasonCode::PiiDetected, kinds.join(","));
            }
        }
        if matches!(
            req.facts.pii,
            Some(PiiFact::Unavailable) | Some(PiiFact::Partial(_))
        ) {
            let (a, detail) = missing_fact(p.failure_mode, action);
            push(d, a, ReasonCode::FactUnavailable(Fact::Pii), detail);
        }
    }

    if let Some((action, mask)) = p.secrets {
        if let Some(SecretFact::Found(kinds) | SecretFact::Partial(kinds)) = &req.facts.secrets {
            let found = kinds.iter().fold(0u16, |m, k| m | k.bit());
            let relevant = if mask == 0 { found } else { found & mask };
            if relevant != 0 {
                let names: Vec<&str> = SecretKind::of_mask(relevant)
                    .into_iter()
                    .map(SecretKind::as_str)
                    .collect();
                push(d, action, ReasonCode::SecretDetected, names.join(","));
            }
        }
        if matches!(
            req.facts.secrets,
            Some(SecretFact::Unavailable) | Some(SecretFact::Partial(_))
        ) {
            let (a, detail) = missing_fact(p.failure_mode, action);
            push(d, a, ReasonCode::FactUnavailable(Fact::Secrets), detail);
        }
    }

    if !p.arguments.is_empty() {
        match &req.facts.arguments {
            Some(f) => {
                for b in f.broken.iter().filter(|b| *b.policy == *p.id) {
                    push(
                        d,
                        Action::Stop,
                        ReasonCode::PolicyDenied,
                        format!("argument `{}` {}", b.path, b.rule),
                    );
                }
            }
            None => {
                let (a, detail) = missing_fact(p.failure_mode, Action::Stop);
                push(d, a, ReasonCode::FactUnavailable(Fact::Arguments), detail);
            }
        }
    }

    if let Some((min, action)) = p.grounding {
        match &req.facts.grounding {
            Some(GroundingFact::Score(s)) if *s < min => {
                push(
                    d,
                    action,
                    ReasonCode::GroundingLow,
                    format!("score {s} < {min}"),
                );
            }
            Some(GroundingFact::Unavailable) => {
                let (a, detail) = missing_fact(p.failure_mode, action);
                push(d, a, ReasonCode::FactUnavailable(Fact::Grounding), detail);
            }
            _ => {}
        }
    }
}

/// A fact the policy needs is missing. `fail_closed` refuses with at least STOP when the
/// detector could block; a detector that never blocks (grounding by default, INV-002) stays
/// non-blocking and only reports. `fail_open` lets the call through with at most a WARN.
fn missing_fact(mode: FailureMode, detector_action: Action) -> (Action, String) {
    match mode {
        FailureMode::FailClosed if detector_action.blocks() => {
            (detector_action.max(Action::Stop), "fail_closed".to_string())
        }
        FailureMode::FailClosed => (detector_action, "fail_closed".to_string()),
        FailureMode::FailOpen => (detector_action.min(Action::Warn), "fail_open".to_string()),
    }
}

#[cfg(test)]
mod tests;
