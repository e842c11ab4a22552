//! Compilation of validated documents into an immutable, indexed [`Snapshot`].
//!
//! The index is by (tenant, channel): a decision only looks at the policies of its own tenant
//! and channel plus the platform-wide ones of that channel, already sorted by id. Only
//! `active` policies are indexed (shadow ones included, flagged); draft, suspended and retired
//! policies stay in the snapshot's documents for audit but never decide.

use std::collections::HashMap;
use std::sync::Arc;

use super::canonical;
use super::load::Loaded;
use super::model::*;
use super::sql::SqlPlan;
use super::validate::Checked;

/// A limit ready for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledLimit {
    pub metric: Metric,
    pub window: Window,
    pub max: f64,
    /// Sorted ascending.
    pub near: Box<[f64]>,
    pub on_breach: Action,
}

/// Scope lists; an empty list does not constrain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompiledScope {
    pub all_runs: bool,
    pub tenants: Box<[Box<str>]>,
    pub projects: Box<[Box<str>]>,
    pub agents: Box<[Box<str>]>,
    pub api_keys: Box<[Box<str>]>,
    pub actors: Box<[Box<str>]>,
}

/// A policy as the decision function sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    pub id: Arc<str>,
    pub tenant: Arc<str>,
    pub status: Status,
    pub shadow: bool,
    pub scope: CompiledScope,
    pub channel: Channel,
    pub planes: Box<[Box<str>]>,
    pub connectors: Box<[Box<str>]>,
    pub models: Box<[Box<str>]>,
    pub tools: Box<[Box<str>]>,
    pub templates: Box<[Box<str>]>,
    /// Names a plane, connector, template or tool: may reach into a default-deny plane.
    pub explicit: bool,
    pub effect: Effect,
    /// For a deny, the refusal action; `Continue` for an allow.
    pub action: Action,
    pub max_tokens: Option<u32>,
    pub limits: Box<[CompiledLimit]>,
    /// (action, kinds bitmask; 0 = all kinds).
    pub pii: Option<(Action, u8)>,
    /// (action, kinds bitmask of `SecretKind::bit`; 0 = all kinds).
    pub secrets: Option<(Action, u16)>,
    /// (min score, action when below).
    pub grounding: Option<(f64, Action)>,
    pub bind_at: BindAt,
    pub failure_mode: FailureMode,
    pub inspection: Inspection,
    /// MCP tool-argument rules (channel `mcp` only), in path order.
    pub arguments: Box<[super::args::CompiledArg]>,
}

/// A connector as the sidecar resolves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorInfo {
    pub id: Arc<str>,
    pub plane: Arc<str>,
    /// Whether the plane is default-allow (declared so, or not declared at all).
    pub plane_default_allow: bool,
    pub spec: ConnectorSpec,
}

/// A SQL template with its positional plan.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateInfo {
    pub id: Arc<str>,
    pub spec: SqlTemplateSpec,
    pub plan: SqlPlan,
    /// The parameters in `$n` order, with their declarations and compiled patterns.
    pub params: Vec<ParamCheck>,
}

/// One parameter of a template, ready for checking a value.
#[derive(Debug, Clone)]
pub struct ParamCheck {
    pub name: String,
    pub spec: ParamSpec,
    /// `text`: the compiled, anchored `pattern`.
    pub pattern: Option<regex::Regex>,
}

impl PartialEq for ParamCheck {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.spec == other.spec
    }
}

/// Everything one tenant owns, indexed.
#[derive(Debug, Clone, Default)]
pub struct TenantIndex {
    /// Policy indices (into `Snapshot::policies`) by channel, sorted by id.
    pub by_channel: [Vec<u32>; 4],
    /// Shared, so a call carries its resolved connector without a copy.
    pub connectors: HashMap<Box<str>, Arc<ConnectorInfo>>,
    pub planes: HashMap<Box<str>, PlaneSpec>,
    /// Shared, so a call carries its template without a copy.
    pub templates: HashMap<Box<str>, Arc<TemplateInfo>>,
    pub tools: HashMap<Box<str>, McpToolSpec>,
}

/// An immutable compiled bundle, identified by the hash of its canonical form.
#[derive(Debug, Clone)]
pub struct Snapshot {
    hash: Arc<str>,
    docs: Vec<Doc>,
    policies: Vec<CompiledPolicy>,
    tenants: HashMap<Box<str>, TenantIndex>,
    platform: [Vec<u32>; 4],
}

// === impl Snapshot ===

impl Snapshot {
    /// `sha256:<hex>` of the canonical form.
    pub fn hash(&self) -> &Arc<str> {
        &self.hash
    }

    /// All documents in canonical order, including inactive policies.
    pub fn docs(&self) -> &[Doc] {
        &self.docs
    }

    /// All compiled policies, sorted by id (active or not).
    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    pub fn policy(&self, idx: u32) -> &CompiledPolicy {
        &self.policies[idx as usize]
    }

    /// A policy by id (policies are sorted by id).
    pub fn policy_by_id(&self, id: &str) -> Option<&CompiledPolicy> {
        self.policies
            .binary_search_by(|p| (*p.id).cmp(id))
            .ok()
            .map(|i| &self.policies[i])
    }

    pub fn tenant(&self, tenant: &str) -> Option<&TenantIndex> {
        self.tenants.get(tenant)
    }

    /// Evaluated policies of a tenant's channel, then the platform ones; each list sorted by id.
    pub fn candidates(&self, tenant: &str, channel: Channel) -> (&[u32], &[u32]) {
        let own = self
            .tenants
            .get(tenant)
            .map(|t| t.by_channel[channel.index()].as_slice())
            .unwrap_or(&[]);
        (own, &self.platform[channel.index()])
    }

    pub fn connector(&self, tenant: &str, id: &str) -> Option<&Arc<ConnectorInfo>> {
        self.tenants.get(tenant)?.connectors.get(id)
    }

    pub fn template(&self, tenant: &str, id: &str) -> Option<&Arc<TemplateInfo>> {
        self.tenants.get(tenant)?.templates.get(id)
    }

    /// Whether another tenant than `tenant` owns a template `id` (a cross-tenant attempt,
    /// INV-003, rather than an unknown name).
    pub fn template_owned_elsewhere(&self, tenant: &str, id: &str) -> bool {
        self.tenants
            .iter()
            .any(|(t, ti)| &**t != tenant && ti.templates.contains_key(id))
    }

    /// Whether a tenant other than `tenant` has an MCP tool `name`: one of its `McpTool` ids,
    /// or `{connector}__…` naming one of its MCP connectors.
    pub fn tool_owned_elsewhere(&self, tenant: &str, name: &str) -> bool {
        let prefixed = name.split_once("__").map(|(c, _)| c);
        self.tenants.iter().any(|(t, ti)| {
            &**t != tenant
                && (ti.tools.contains_key(name)
                    || prefixed.is_some_and(|c| {
                        ti.connectors.get(c).is_some_and(|k| k.spec.mcp.is_some())
                    }))
        })
    }

    /// The tenant that owns a connector id, if any other tenant than `tenant` does — for
    /// telling a cross-tenant attempt (INV-003) from an unknown name.
    pub fn connector_owner_elsewhere(&self, tenant: &str, id: &str) -> Option<&str> {
        let mut owners: Vec<&str> = self
            .tenants
            .iter()
            .filter(|(t, ti)| &***t != tenant && ti.connectors.contains_key(id))
            .map(|(t, _)| &**t)
            .collect();
        owners.sort_unstable();
        owners.first().copied()
    }

    /// Number of evaluated (active) policies per channel, summed over tenants and platform.
    pub fn active_per_channel(&self) -> [usize; 4] {
        let mut out = [0; 4];
        for ch in Channel::ALL {
            out[ch.index()] = self.platform[ch.index()].len()
                + self
                    .tenants
                    .values()
                    .map(|t| t.by_channel[ch.index()].len())
                    .sum::<usize>();
        }
        out
    }
}

/// Build the snapshot. `docs` must have passed validation.
pub fn compile(docs: Vec<Loaded>, mut checked: Checked) -> Snapshot {
    let mut canon: Vec<Doc> = docs
        .iter()
        .map(|l| canonical::canonical_doc(&l.doc))
        .collect();
    canonical::sort_docs(&mut canon);
    let hash: Arc<str> = canonical::hash(&canonical::canonical_json(&canon)).into();

    let mut tenants: HashMap<Box<str>, TenantIndex> = HashMap::new();
    // Planes first, so connectors can see their plane's default.
    for d in &canon {
        if let Doc::KnowledgePlane(p) = d {
            tenants
                .entry(p.metadata.tenant.as_str().into())
                .or_default()
                .planes
                .insert(p.metadata.id.as_str().into(), p.spec.clone());
        }
    }
    let mut plans: HashMap<(String, String), SqlPlan> = HashMap::new();
    for (i, l) in docs.iter().enumerate() {
        if let (Doc::SqlTemplate(t), Some(plan)) = (&l.doc, checked.sql_plans.remove(&i)) {
            plans.insert((t.metadata.tenant.clone(), t.metadata.id.clone()), plan);
        }
    }
    let mut policies = Vec::new();
    for d in &canon {
        match d {
            Doc::Connector(c) => {
                let t = tenants
                    .entry(c.metadata.tenant.as_str().into())
                    .or_default();
                let plane_default_allow = t
                    .planes
                    .get(c.spec.plane.as_str())
                    .is_none_or(|p| p.default == Effect::Allow);
                t.connectors.insert(
                    c.metadata.id.as_str().into(),
                    Arc::new(ConnectorInfo {
                        id: c.metadata.id.as_str().into(),
                        plane: c.spec.plane.as_str().into(),
                        plane_default_allow,
                        spec: c.spec.clone(),
                    }),
                );
            }
            Doc::SqlTemplate(s) => {
                let key = (s.metadata.tenant.clone(), s.metadata.id.clone());
                if let Some(plan) = plans.remove(&key) {
                    let params = plan
                        .params
                        .iter()
                        .map(|name| {
                            let spec = s.spec.params.get(name).cloned().unwrap_or_default();
                            let pattern = spec
                                .pattern
                                .as_deref()
                                .and_then(|p| super::sql::compile_pattern(p).ok());
                            ParamCheck {
                                name: name.clone(),
                                spec,
                                pattern,
                            }
                        })
                        .collect();
                    tenants
                        .entry(s.metadata.tenant.as_str().into())
                        .or_default()
                        .templates
                        .insert(
                            s.metadata.id.as_str().into(),
                            Arc::new(TemplateInfo {
                                id: s.metadata.id.as_str().into(),
                                spec: s.spec.clone(),
                                plan,
                                params,
                            }),
                        );
                }
            }
            Doc::McpTool(m) => {
                tenants
                    .entry(m.metadata.tenant.as_str().into())
                    .or_default()
                    .tools
                    .insert(m.metadata.id.as_str().into(), m.spec.clone());
            }
            Doc::Policy(p) => policies.push(compile_policy(&p.metadata, &p.spec)),
            Doc::KnowledgePlane(_) => {}
        }
    }
    policies.sort_by(|a, b| a.id.cmp(&b.id));

    let mut platform: [Vec<u32>; 4] = Default::default();
    for (i, p) in policies.iter().enumerate() {
        if p.status != Status::Active {
            continue;
        }
        let i = i as u32;
        if &*p.tenant == PLATFORM_TENANT {
            platform[p.channel.index()].push(i);
        } else {
            tenants
                .entry(p.tenant.as_ref().into())
                .or_default()
                .by_channel[p.channel.index()]
            .push(i);
        }
    }
    Snapshot {
        hash,
        docs: canon,
        policies,
        tenants,
        platform,
    }
}

fn boxed(v: &[String]) -> Box<[Box<str>]> {
    v.iter().map(|s| s.as_str().into()).collect()
}

fn compile_policy(meta: &Metadata, s: &PolicySpec) -> CompiledPolicy {
    let m = &s.matcher;
    CompiledPolicy {
        id: meta.id.as_str().into(),
        tenant: meta.tenant.as_str().into(),
        status: s.status,
        shadow: s.shadow,
        scope: CompiledScope {
            all_runs: s.scope.all_runs,
            tenants: boxed(&s.scope.tenants),
            projects: boxed(&s.scope.projects),
            agents: boxed(&s.scope.agents),
            api_keys: boxed(&s.scope.api_keys),
            actors: boxed(&s.scope.actors),
        },
        channel: m.channel,
        planes: boxed(&m.planes),
        connectors: boxed(&m.connectors),
        models: boxed(&m.models),
        tools: boxed(&m.tools),
        templates: boxed(&m.templates),
        explicit: !(m.planes.is_empty()
            && m.connectors.is_empty()
            && m.templates.is_empty()
            && m.tools.is_empty()),
        effect: s.effect,
        action: match s.effect {
            Effect::Allow => Action::Continue,
            Effect::Deny => s.action.unwrap_or(Action::Stop),
        },
        max_tokens: s.max_tokens,
        limits: s
            .limits
            .iter()
            .map(|l| {
                let mut near = l.near.clone();
                near.sort_by(f64::total_cmp);
                CompiledLimit {
                    metric: l.metric,
                    window: l.window,
                    max: l.max,
                    near: near.into(),
                    on_breach: l.on_breach,
                }
            })
            .collect(),
        pii: s.detectors.pii.as_ref().map(|d| {
            let mask = d.kinds.iter().fold(0u8, |m, k| m | k.bit());
            (d.on_match, mask)
        }),
        secrets: s.detectors.secrets.as_ref().map(|d| {
            let mask = d.kinds.iter().fold(0u16, |m, k| m | k.bit());
            (d.on_match, mask)
        }),
        grounding: s
            .detectors
            .grounding
            .as_ref()
            .map(|g| (g.min_score, g.on_low)),
        bind_at: s.bind_at,
        failure_mode: s.failure_mode,
        inspection: s.inspection,
        arguments: s
            .arguments
            .iter()
            .filter_map(|(path, rule)| super::args::compile(path, rule))
            .collect(),
    }
}
