//! The bundle language: one serde type per document kind (`docs/policy.md`).
//!
//! Every struct denies unknown fields. Defaults live here, in `#[serde(default)]`, so the
//! canonical form (and hence the snapshot hash) sees a document the same whether a default was
//! written out or left implicit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "warden/v1";

/// The tenant name of platform-wide policies, which may scope over several tenants.
pub const PLATFORM_TENANT: &str = "*";

/// A parsed document, tagged by its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Doc {
    Policy(Meta<PolicySpec>),
    KnowledgePlane(Meta<PlaneSpec>),
    Connector(Meta<ConnectorSpec>),
    SqlTemplate(Meta<SqlTemplateSpec>),
    McpTool(Meta<McpToolSpec>),
}

/// The kinds, in canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    KnowledgePlane,
    Connector,
    SqlTemplate,
    McpTool,
    Policy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::KnowledgePlane,
        Kind::Connector,
        Kind::SqlTemplate,
        Kind::McpTool,
        Kind::Policy,
    ];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KnowledgePlane => "KnowledgePlane",
            Kind::Connector => "Connector",
            Kind::SqlTemplate => "SqlTemplate",
            Kind::McpTool => "McpTool",
            Kind::Policy => "Policy",
        }
    }
}

impl Doc {
    pub fn kind(&self) -> Kind {
        match self {
            Doc::Policy(_) => Kind::Policy,
            Doc::KnowledgePlane(_) => Kind::KnowledgePlane,
            Doc::Connector(_) => Kind::Connector,
            Doc::SqlTemplate(_) => Kind::SqlTemplate,
            Doc::McpTool(_) => Kind::McpTool,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Doc::Policy(d) => &d.metadata,
            Doc::KnowledgePlane(d) => &d.metadata,
            Doc::Connector(d) => &d.metadata,
            Doc::SqlTemplate(d) => &d.metadata,
            Doc::McpTool(d) => &d.metadata,
        }
    }
}

/// `metadata` and `spec` of one document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta<S> {
    pub metadata: Metadata,
    pub spec: S,
}

/// The head every document carries; `kind` is read first to pick the spec type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Header {
    #[allow(dead_code)]
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    #[allow(dead_code)]
    pub metadata: serde::de::IgnoredAny,
    #[allow(dead_code)]
    pub spec: serde::de::IgnoredAny,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind and tenant; for policies also the tiebreak (lowest id wins).
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

// === Policy ===

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub shadow: bool,
    pub scope: Scope,
    #[serde(rename = "match")]
    pub matcher: Match,
    pub effect: Effect,
    /// The action a `deny` takes (default `stop`). Not allowed on `allow`.
    #[serde(default)]
    pub action: Option<Action>,
    /// Clamp for `max_tokens` / `max_completion_tokens` (LLM channel only).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub limits: Vec<Limit>,
    #[serde(default)]
    pub detectors: Detectors,
    #[serde(default)]
    pub bind_at: BindAt,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default)]
    pub inspection: Inspection,
    /// MCP tool arguments this allow holds to, by path (`query`, `filter.owner`,
    /// `items.*.sku`). Left out of the canonical form when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, ArgRule>,
}

/// What one argument of an MCP tool call must satisfy (`docs/policy.md`, "arguments").
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArgRule {
    /// The argument must be there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The argument must not be there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forbidden: bool,
    /// A number, at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A number, at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// One of these values (strings, numbers, booleans), compared exactly.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// A string the whole of which matches this regular expression (Rust `regex` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A string of at most this many characters, or an array of at most this many items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Draft,
    Active,
    Suspended,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub all_runs: bool,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Human actors on whose behalf the agent acts (`x-warden-actor`).
    #[serde(default)]
    pub actors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub channel: Channel,
    #[serde(default)]
    pub planes: Vec<String>,
    #[serde(default)]
    pub connectors: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub templates: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Llm,
    Http,
    Sql,
    Mcp,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Llm, Channel::Http, Channel::Sql, Channel::Mcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Llm => "llm",
            Channel::Http => "http",
            Channel::Sql => "sql",
            Channel::Mcp => "mcp",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// Outcomes, least restrictive first, so `Ord` is restrictiveness:
/// `KILL > STOP > PAUSE > WARN > CONTINUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Continue,
    Warn,
    Pause,
    Stop,
    Kill,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Continue => "continue",
            Action::Warn => "warn",
            Action::Pause => "pause",
            Action::Stop => "stop",
            Action::Kill => "kill",
        }
    }

    /// Whether the call is refused.
    pub fn blocks(self) -> bool {
        self >= Action::Pause
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub metric: Metric,
    pub window: Window,
    pub max: f64,
    /// Near-threshold tiers as fractions of `max` in (0, 1); they only alert.
    #[serde(default)]
    pub near: Vec<f64>,
    #[serde(default = "default_breach")]
    pub on_breach: Action,
}

fn default_breach() -> Action {
    Action::Stop
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    InputTokens,
    OutputTokens,
    TotalTokens,
    CostUsd,
    Requests,
    Queries,
    Bytes,
    /// Rows of SQL results.
    Rows,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::InputTokens,
        Metric::OutputTokens,
        Metric::TotalTokens,
        Metric::CostUsd,
        Metric::Requests,
        Metric::Queries,
        Metric::Bytes,
        Metric::Rows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::InputTokens => "input_tokens",
            Metric::OutputTokens => "output_tokens",
            Metric::TotalTokens => "total_tokens",
            Metric::CostUsd => "cost_usd",
            Metric::Requests => "requests",
            Metric::Queries => "queries",
            Metric::Bytes => "bytes",
            Metric::Rows => "rows",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether only whole numbers make sense as a `max`.
    pub fn integral(self) -> bool {
        !matches!(self, Metric::CostUsd)
    }
}

/// `step`, `run`, `session`, or a sliding duration such as `30s`, `1m`, `24h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    Step,
    Run,
    Session,
    /// A sliding window of this many seconds.
    Duration(u64),
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "step" => return Some(Window::Step),
            "run" => return Some(Window::Run),
            "session" => return Some(Window::Session),
            _ => {}
        }
        let unit = s.chars().last()?;
        let digits = &s[..s.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        let secs = match unit {
            's' => n,
            'm' => n.checked_mul(60)?,
            'h' => n.checked_mul(3600)?,
            'd' => n.checked_mul(86_400)?,
            _ => return None,
        };
        (secs > 0).then_some(Window::Duration(secs))
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Window::Step => f.write_str("step"),
            Window::Run => f.write_str("run"),
            Window::Session => f.write_str("session"),
            Window::Duration(s) => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Window::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "bad window `{s}`: use step, run, session or a duration like 30s, 5m, 1h, 7d"
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Detectors {
    #[serde(default)]
    pub pii: Option<PiiDetector>,
    #[serde(default)]
    pub grounding: Option<GroundingDetector>,
    /// Absent from the canonical form when not written, so bundles without it keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsDetector>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiDetector {
    /// PII is a fact, so it blocks by default (INV-002).
    #[serde(default = "default_breach")]
    pub on_match: Action,
    /// Which kinds count; empty means all.
    #[serde(default)]
    pub kinds: Vec<PiiKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    CreditCard,
    Ssn,
    Iban,
}

impl PiiKind {
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::CreditCard,
        PiiKind::Ssn,
        PiiKind::Iban,
    ];

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::CreditCard => "credit_card",
            PiiKind::Ssn => "ssn",
            PiiKind::Iban => "iban",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsDetector {
    /// A credential is a fact, so it blocks by default, like PII.
    #[serde(default = "default_breach")]
    pub on_match: Action,
    /// Which kinds count; empty means all.
    #[serde(default)]
    pub kinds: Vec<SecretKind>,
}

/// What the secrets detector finds (`detect::secrets`, `docs/policy.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    OpenaiKey,
    AnthropicKey,
    AwsAccessKeyId,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    SlackWebhook,
    GoogleApiKey,
    Jwt,
    PrivateKey,
    BearerToken,
    ConnectionPassword,
}

impl SecretKind {
    pub const ALL: [SecretKind; 13] = [
        SecretKind::OpenaiKey,
        SecretKind::AnthropicKey,
        SecretKind::AwsAccessKeyId,
        SecretKind::AwsSecretKey,
        SecretKind::GithubToken,
        SecretKind::GitlabToken,
        SecretKind::SlackToken,
        SecretKind::SlackWebhook,
        SecretKind::GoogleApiKey,
        SecretKind::Jwt,
        SecretKind::PrivateKey,
        SecretKind::BearerToken,
        SecretKind::ConnectionPassword,
    ];

    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::OpenaiKey => "openai_key",
            SecretKind::AnthropicKey => "anthropic_key",
            SecretKind::AwsAccessKeyId => "aws_access_key_id",
            SecretKind::AwsSecretKey => "aws_secret_key",
            SecretKind::GithubToken => "github_token",
            SecretKind::GitlabToken => "gitlab_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::SlackWebhook => "slack_webhook",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::Jwt => "jwt",
            SecretKind::PrivateKey => "private_key",
            SecretKind::BearerToken => "bearer_token",
            SecretKind::ConnectionPassword => "connection_password",
        }
    }

    /// The kinds in a [`SecretKind::bit`] mask.
    pub fn of_mask(mask: u16) -> Vec<SecretKind> {
        Self::ALL
            .into_iter()
            .filter(|k| mask & k.bit() != 0)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroundingDetector {
    /// Scores below this (0..=1) are "low".
    pub min_score: f64,
    /// Grounding is a guess, so it never blocks unless the author opts in (INV-002).
    #[serde(default = "default_grounding")]
    pub on_low: Action,
}

fn default_grounding() -> Action {
    Action::Warn
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindAt {
    #[default]
    RunStart,
    FirstToken,
    EachStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    FailClosed,
    FailOpen,
}

/// What evidence may hold in clear; the default is none of it (hashes and counts only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inspection {
    #[serde(default)]
    pub prompts: bool,
    #[serde(default)]
    pub responses: bool,
    #[serde(default)]
    pub pii: bool,
    #[serde(default)]
    pub secrets: bool,
}

// === KnowledgePlane ===

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlaneSpec {
    pub sensitivity: Sensitivity,
    /// `deny` (default): only policies naming the plane or one of its connectors explicitly
    /// can allow access; a channel-wide allow does not reach into it.
    #[serde(default = "default_plane")]
    pub default: Effect,
}

fn default_plane() -> Effect {
    Effect::Deny
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    Public,
    Internal,
    Confidential,
    Restricted,
}

// === Connector ===

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    #[serde(rename = "type")]
    pub kind: Channel,
    pub plane: String,
    #[serde(default)]
    pub llm: Option<LlmConnector>,
    #[serde(default)]
    pub http: Option<HttpConnector>,
    #[serde(default)]
    pub sql: Option<SqlConnector>,
    #[serde(default)]
    pub mcp: Option<McpConnector>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConnector {
    pub base_url: String,
    pub api_key: String,
    pub models: BTreeMap<String, ModelPrice>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnector {
    pub base_url: String,
    pub allow: Vec<HttpRule>,
    #[serde(default)]
    pub inject_headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_body_cap")]
    pub max_request_bytes: u64,
    #[serde(default = "default_body_cap")]
    pub max_response_bytes: u64,
}

fn default_body_cap() -> u64 {
    1 << 20
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    pub methods: Vec<String>,
    /// Path patterns: exact, or ending in `/*` (one or more further segments).
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConnector {
    /// A credential reference: the URL holds the password.
    pub url: String,
    /// Connections the sidecar's pool for this connector may open (default
    /// [`DEFAULT_SQL_POOL`]). Left out of the canonical form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
}

/// The pool size of a SQL connector that names none.
pub const DEFAULT_SQL_POOL: u32 = 8;
/// The largest pool a SQL connector may ask for.
pub const MAX_SQL_POOL: u32 = 256;

impl SqlConnector {
    pub fn pool_size(&self) -> u32 {
        self.pool_size.unwrap_or(DEFAULT_SQL_POOL)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConnector {
    pub url: String,
    #[serde(default)]
    pub inject_headers: BTreeMap<String, String>,
    /// The most one exchange with the server may take (default 30 s). Left out of the
    /// canonical form when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl McpConnector {
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(30_000)
    }
}

// === SqlTemplate ===

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlTemplateSpec {
    pub connector: String,
    pub statement: String,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default = "default_rows")]
    pub max_rows: u32,
    #[serde(default = "default_sql_timeout")]
    pub timeout_ms: u32,
    #[serde(default)]
    pub doc_id_column: Option<String>,
}

fn default_rows() -> u32 {
    100
}

fn default_sql_timeout() -> u32 {
    2_000
}

/// The scalar type of a template parameter (`docs/policy.md`, "Parameter types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ParamType {
    /// 32-bit signed (PostgreSQL `integer`).
    Int,
    /// 64-bit signed (`bigint`).
    Bigint,
    /// 64-bit IEEE float (`double precision`).
    Float,
    /// An exact decimal, sent as a JSON string (`numeric`).
    Numeric,
    Bool,
    #[default]
    Text,
    Uuid,
    /// `YYYY-MM-DD`.
    Date,
    /// An RFC 3339 date-time without offset (`timestamp`).
    Timestamp,
    /// An RFC 3339 date-time with offset (`timestamptz`).
    Timestamptz,
    /// One of the declared `values` (bound as text).
    Enum,
    /// Any JSON value (`jsonb`).
    Json,
}

impl ParamType {
    pub const ALL: [ParamType; 12] = [
        ParamType::Int,
        ParamType::Bigint,
        ParamType::Float,
        ParamType::Numeric,
        ParamType::Bool,
        ParamType::Text,
        ParamType::Uuid,
        ParamType::Date,
        ParamType::Timestamp,
        ParamType::Timestamptz,
        ParamType::Enum,
        ParamType::Json,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Int => "int",
            ParamType::Bigint => "bigint",
            ParamType::Float => "float",
            ParamType::Numeric => "numeric",
            ParamType::Bool => "bool",
            ParamType::Text => "text",
            ParamType::Uuid => "uuid",
            ParamType::Date => "date",
            ParamType::Timestamp => "timestamp",
            ParamType::Timestamptz => "timestamptz",
            ParamType::Enum => "enum",
            ParamType::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<ParamType> {
        ParamType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A template parameter's declaration: a type name (`int`, `text[]` for an array) or a map
/// with the type and its rules. Written back in the short form when it has no rules, so a
/// bundle's snapshot hash does not depend on which form was used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParamSpec {
    /// The scalar type; of each item for an array.
    pub kind: ParamType,
    /// An array of `kind` (`int[]`).
    pub array: bool,
    /// `null` is accepted (bound as SQL NULL). Arrays never hold nulls.
    pub nullable: bool,
    /// `text`: the most characters (Unicode scalar values) a value may have.
    pub max_len: Option<u32>,
    /// `text`: a regular expression (Rust `regex` syntax) the whole value must match.
    pub pattern: Option<String>,
    /// `enum`: the allowed values.
    pub values: Vec<String>,
    /// Arrays: the most items.
    pub max_items: Option<u32>,
}

impl ParamSpec {
    /// The declaration's type name, `[]` after it for an array.
    pub fn type_name(&self) -> String {
        let base = self.kind.as_str();
        if self.array {
            format!("{base}[]")
        } else {
            base.to_string()
        }
    }

    fn short(&self) -> bool {
        !self.nullable
            && self.max_len.is_none()
            && self.pattern.is_none()
            && self.values.is_empty()
            && self.max_items.is_none()
    }

    fn of_type_name(name: &str) -> Result<ParamSpec, String> {
        let (base, array) = match name.strip_suffix("[]") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let kind = ParamType::parse(base).ok_or_else(|| {
            let all: Vec<&str> = ParamType::ALL.iter().map(|t| t.as_str()).collect();
            format!(
                "unknown parameter type `{name}` (expected one of {}, or one of them followed by [])",
                all.join(", ")
            )
        })?;
        Ok(ParamSpec {
            kind,
            array,
            ..ParamSpec::default()
        })
    }
}

impl Serialize for ParamSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.short() {
            return s.serialize_str(&self.type_name());
        }
        let mut m = s.serialize_map(None)?;
        // Keys in sorted order: the canonical form orders keys.
        if let Some(n) = self.max_items {
            m.serialize_entry("max_items", &n)?;
        }
        if let Some(n) = self.max_len {
            m.serialize_entry("max_len", &n)?;
        }
        if self.nullable {
            m.serialize_entry("nullable", &true)?;
        }
        if let Some(p) = &self.pattern {
            m.serialize_entry("pattern", p)?;
        }
        m.serialize_entry("type", &self.type_name())?;
        if !self.values.is_empty() {
            let mut v = self.values.clone();
            v.sort();
            v.dedup();
            m.serialize_entry("values", &v)?;
        }
        m.end()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamMap {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    nullable: bool,
    #[serde(default)]
    max_len: Option<u32>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    max_items: Option<u32>,
}

impl<'de> Deserialize<'de> for ParamSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ParamSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a parameter type (`int`, `text[]`) or a map with `type` and its rules")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamSpec, E> {
                ParamSpec::of_type_name(v).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<ParamSpec, A::Error> {
                let m = ParamMap::deserialize(serde::de::value::MapAccessDeserializer::new(a))?;
                let base = ParamSpec::of_type_name(&m.kind).map_err(serde::de::Error::custom)?;
                Ok(ParamSpec {
                    nullable: m.nullable,
                    max_len: m.max_len,
                    pattern: m.pattern,
                    values: m.values,
                    max_items: m.max_items,
                    ..base
                })
            }
        }
        d.deserialize_any(V)
    }
}

// === McpTool ===

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpToolSpec {
    pub connector: String,
    /// The tool's name on the upstream server, when it differs from `metadata.id`.
    #[serde(default)]
    pub upstream_name: Option<String>,
    #[serde(default)]
    pub destructive: bool,
    /// What agents are told the tool does, in place of the server's own description. Left out
    /// of the canonical form when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The tool's input as a JSON Schema object, when the bundle declares it: policies'
    /// `arguments` are checked against it at `policy check` time. Left out of the canonical
    /// form when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}
