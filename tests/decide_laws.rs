//! Property tests for the laws of the decision function (INV-005 and friends) over random
//! bundles, requests and usage. The generators reach every field a decision reads: three
//! tenants (one without policies) and the platform tenant `*`, planes (one default-deny per
//! tenant), connectors whose names two tenants share, models, tools, templates, api keys,
//! actors, `max_tokens`, `inspection`, `failure_mode`, and empty lists (the wildcards). The laws
//! that say *whether* something fires are checked against an oracle written here, over the
//! generator's own model of the bundle, not against the decision's own flags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use warden::decide::{decide, Decision, Delta, Facts, Mode, PiiFact, Request, SecretFact, Usage};
use warden::policy::model::{Action, Channel, Inspection, PiiKind, SecretKind};
use warden::policy::{compile_str, Snapshot};

/// The contract bundle without its policies (tenant `acme`), plus a second tenant `globex`
/// whose LLM connector has the same id as acme's (`openai`), and a default-deny plane each.
fn fixtures() -> String {
    let mut docs: Vec<String> = include_str!("../examples/contract/bundle.yaml")
        .split("---\n")
        .filter(|d| !d.contains("kind: Policy"))
        .map(str::to_string)
        .collect();
    docs.push(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: openai, tenant: globex }\nspec:\n  type: llm\n  plane: public-llm\n  llm:\n    base_url: \"http://127.0.0.1:18090/v1\"\n    api_key: env:GLOBEX_KEY\n    models:\n      gpt-4o-mini: { input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60 }\n      gpt-4o: { input_usd_per_mtok: 2.5, output_usd_per_mtok: 10.0 }\n"
            .into(),
    );
    docs.push(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: wiki, tenant: globex }\nspec:\n  type: http\n  plane: globex-web\n  http:\n    base_url: \"http://127.0.0.1:18091\"\n    allow: [ { methods: [GET], paths: [\"/*\"] } ]\n"
            .into(),
    );
    docs.push(
        "apiVersion: warden/v1\nkind: KnowledgePlane\nmetadata: { id: vault, tenant: globex }\nspec: { sensitivity: restricted, default: deny }\n"
            .into(),
    );
    docs.push(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: vault-mcp, tenant: globex }\nspec:\n  type: mcp\n  plane: vault\n  mcp: { url: \"http://127.0.0.1:18092/mcp\" }\n"
            .into(),
    );
    docs.join("---\n")
}

const TENANTS: [&str; 2] = ["acme", "globex"];
const PLATFORM: &str = "*";

/// One connector of the fixtures: (tenant, id, channel, plane, plane allows by default).
const CONNECTORS: [(&str, &str, Channel, &str, bool); 7] = [
    ("acme", "openai", Channel::Llm, "public-llm", true),
    ("acme", "weather", Channel::Http, "public-web", true),
    ("acme", "crm-db", Channel::Sql, "crm", false),
    ("acme", "tickets", Channel::Mcp, "support-tools", true),
    ("globex", "openai", Channel::Llm, "public-llm", true),
    ("globex", "wiki", Channel::Http, "globex-web", true),
    ("globex", "vault-mcp", Channel::Mcp, "vault", false),
];

fn connector_info(tenant: &str, id: &str) -> Option<(&'static str, bool)> {
    CONNECTORS
        .iter()
        .find(|c| c.0 == tenant && c.1 == id)
        .map(|c| (c.3, c.4))
}

/// What a policy of `tenant` may name on `ch` (the platform tenant names no connector).
fn connectors_of(tenant: &str, ch: Channel) -> Vec<&'static str> {
    CONNECTORS
        .iter()
        .filter(|c| c.0 == tenant && c.2 == ch)
        .map(|c| c.1)
        .collect()
}

fn planes_of(tenant: &str, ch: Channel) -> Vec<&'static str> {
    let mut v: Vec<&str> = CONNECTORS
        .iter()
        .filter(|c| c.0 == tenant && c.2 == ch)
        .map(|c| c.3)
        .collect();
    v.dedup();
    v
}

fn models_of(tenant: &str) -> Vec<&'static str> {
    match tenant {
        "globex" => vec!["gpt-4o", "gpt-4o-mini"],
        _ => vec!["gpt-4o-mini"],
    }
}

fn tools_of(tenant: &str) -> Vec<&'static str> {
    match tenant {
        "acme" | "globex" => vec!["search_tickets", "get_ticket", "delete_ticket"],
        _ => vec![],
    }
}

fn templates_of(tenant: &str) -> Vec<&'static str> {
    match tenant {
        "acme" => vec!["customer_by_id"],
        _ => vec![],
    }
}

#[derive(Debug, Clone)]
struct Lim {
    metric: &'static str,
    window: &'static str,
    max: u32,
    near: Vec<&'static str>,
    on_breach: &'static str,
}

#[derive(Debug, Clone)]
struct Pol {
    id: String,
    tenant: &'static str,
    status: &'static str,
    shadow: bool,
    all_runs: bool,
    tenants: Vec<&'static str>,
    agents: Vec<&'static str>,
    projects: Vec<&'static str>,
    api_keys: Vec<&'static str>,
    actors: Vec<&'static str>,
    channel: Channel,
    planes: Vec<&'static str>,
    connectors: Vec<&'static str>,
    models: Vec<&'static str>,
    tools: Vec<&'static str>,
    templates: Vec<&'static str>,
    allow: bool,
    action: &'static str,
    limits: Vec<Lim>,
    pii: Option<&'static str>,
    secrets: Option<&'static str>,
    max_tokens: Option<u32>,
    failure_mode: Option<&'static str>,
    inspection: Option<[bool; 4]>,
}

fn metrics_of(ch: Channel) -> Vec<&'static str> {
    match ch {
        Channel::Llm => vec![
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "cost_usd",
            "requests",
        ],
        Channel::Sql => vec!["queries", "requests", "bytes"],
        _ => vec!["requests", "bytes"],
    }
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Llm),
        Just(Channel::Http),
        Just(Channel::Sql),
        Just(Channel::Mcp)
    ]
}

fn limit(ch: Channel) -> impl Strategy<Value = Lim> {
    (
        select(metrics_of(ch)),
        select(vec!["step", "run", "session", "1m", "1h"]),
        1u32..50,
        subsequence(vec!["0.5", "0.8", "0.9"], 0..=3),
        select(vec!["warn", "pause", "stop", "kill"]),
    )
        .prop_map(|(metric, window, max, near, on_breach)| Lim {
            metric,
            window,
            max,
            near,
            on_breach,
        })
}

fn action() -> impl Strategy<Value = &'static str> {
    select(vec!["warn", "pause", "stop", "kill"])
}

/// Scope lists; at least one is non-empty unless `all_runs`.
type ScopeLists = (
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
);

fn scope(tenant: &'static str) -> impl Strategy<Value = ScopeLists> {
    let tenants: Vec<&str> = if tenant == PLATFORM {
        TENANTS.to_vec()
    } else {
        vec![tenant]
    };
    (
        prop_oneof![3 => Just(vec![]), 1 => subsequence(tenants.clone(), 1..=tenants.len())],
        prop_oneof![2 => Just(vec![]), 1 => subsequence(vec!["support-bot", "other"], 1..=2)],
        prop_oneof![2 => Just(vec![]), 1 => subsequence(vec!["support", "x"], 1..=2)],
        prop_oneof![3 => Just(vec![]), 1 => subsequence(vec!["k1", "k2"], 1..=2)],
        prop_oneof![3 => Just(vec![]), 1 => subsequence(vec!["alice", "bob"], 1..=2)],
    )
}

fn pol(id: u32) -> impl Strategy<Value = Pol> {
    (select(vec!["acme", "acme", "globex", PLATFORM]), channel()).prop_flat_map(move |(tenant, ch)| {
        let platform = tenant == PLATFORM;
        let names = |v: Vec<&'static str>| if platform || v.is_empty() { Just(vec![]).boxed() } else { subsequence(v, 0..=1).boxed() };
        let models = if ch == Channel::Llm { subsequence(models_of(if platform { "acme" } else { tenant }), 0..=1).boxed() } else { Just(vec![]).boxed() };
        let tools = if ch == Channel::Mcp && !platform && !tools_of(tenant).is_empty() { subsequence(tools_of(tenant), 0..=2).boxed() } else { Just(vec![]).boxed() };
        let templates = if ch == Channel::Sql { names(templates_of(tenant)) } else { Just(vec![]).boxed() };
        (
            (
                prop_oneof![6 => Just("active"), 1 => Just("draft"), 1 => Just("suspended"), 1 => Just("retired")],
                prop::bool::weighted(0.15),
                prop::bool::weighted(0.3),
                scope(tenant),
            ),
            (names(planes_of(tenant, ch)), names(connectors_of(tenant, ch)), models, tools, templates),
            (
                prop::bool::weighted(0.6),
                select(vec!["pause", "stop", "kill"]),
                prop::collection::vec(limit(ch), 0..=2),
                proptest::option::weighted(0.3, action()),
                proptest::option::weighted(0.3, action()),
            ),
            (
                if ch == Channel::Llm { proptest::option::weighted(0.4, 1u32..4096).boxed() } else { Just(None).boxed() },
                proptest::option::weighted(0.4, select(vec!["fail_open", "fail_closed"])),
                proptest::option::weighted(0.5, any::<[bool; 4]>()),
            ),
        )
            .prop_map(move |((status, shadow, all_runs, sc), (planes, connectors, models, tools, templates), (allow, action, limits, pii, secrets), (max_tokens, failure_mode, inspection))| {
                let (tenants, agents, projects, api_keys, actors) = sc;
                let empty = tenants.is_empty() && agents.is_empty() && projects.is_empty() && api_keys.is_empty() && actors.is_empty();
                Pol {
                    id: format!("p{id:03}"),
                    tenant,
                    status,
                    shadow,
                    all_runs: all_runs || empty,
                    tenants: if all_runs { vec![] } else { tenants },
                    agents: if all_runs { vec![] } else { agents },
                    projects: if all_runs { vec![] } else { projects },
                    api_keys: if all_runs { vec![] } else { api_keys },
                    actors: if all_runs { vec![] } else { actors },
                    channel: ch,
                    planes,
                    connectors,
                    models,
                    tools,
                    templates,
                    allow,
                    action,
                    limits,
                    pii,
                    secrets,
                    max_tokens,
                    failure_mode,
                    inspection,
                }
            })
    })
}

fn list(v: &[&str]) -> String {
    format!("[{}]", v.join(", "))
}

impl Pol {
    /// YAML for this policy; `order` permutes the keys of `spec` and of its maps.
    fn yaml(&self, order: &[usize]) -> String {
        let o = |i: usize| order.get(i).copied().unwrap_or(i);
        let permuted = |items: Vec<String>, salt: usize| -> String {
            let mut keyed: Vec<(usize, String)> = items
                .into_iter()
                .enumerate()
                .map(|(i, s)| (o(i + salt) % 17, s))
                .collect();
            keyed.sort_by_key(|a| a.0);
            format!(
                "{{ {} }}",
                keyed
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut scope_items = Vec::new();
        if self.all_runs {
            scope_items.push("all_runs: true".to_string());
        } else {
            for (k, v) in [
                ("tenants", &self.tenants),
                ("agents", &self.agents),
                ("projects", &self.projects),
                ("api_keys", &self.api_keys),
                ("actors", &self.actors),
            ] {
                if !v.is_empty() || o(k.len()) % 3 == 0 {
                    // An empty list written out is the same as one left out.
                    scope_items.push(format!("{k}: {}", list(v)));
                }
            }
            if scope_items.iter().all(|s| s.ends_with("[]")) {
                scope_items.retain(|s| !s.ends_with("[]"));
            }
        }
        let mut match_items = vec![format!("channel: {}", self.channel.as_str())];
        for (k, v) in [
            ("planes", &self.planes),
            ("connectors", &self.connectors),
            ("models", &self.models),
            ("tools", &self.tools),
            ("templates", &self.templates),
        ] {
            let applies = match k {
                "models" => self.channel == Channel::Llm,
                "tools" => self.channel == Channel::Mcp,
                "templates" => self.channel == Channel::Sql,
                _ => true,
            };
            if !v.is_empty() || (applies && o(k.len() + 3) % 2 == 0) {
                match_items.push(format!("{k}: {}", list(v)));
            }
        }
        let mut spec: Vec<String> = vec![
            format!("status: {}", self.status),
            format!("shadow: {}", self.shadow),
            format!("scope: {}", permuted(scope_items, 1)),
            format!("match: {}", permuted(match_items, 7)),
            format!("effect: {}", if self.allow { "allow" } else { "deny" }),
        ];
        if let Some(f) = self.failure_mode {
            spec.push(format!("failure_mode: {f}"));
        }
        if self.allow {
            if !self.limits.is_empty() {
                let ls: Vec<String> = self
                    .limits
                    .iter()
                    .map(|l| {
                        format!(
                            "{{ on_breach: {}, max: {}, window: {}, metric: {}, near: {} }}",
                            l.on_breach,
                            l.max,
                            l.window,
                            l.metric,
                            list(&l.near)
                        )
                    })
                    .collect();
                spec.push(format!(
                    "limits: {}",
                    list(&ls.iter().map(String::as_str).collect::<Vec<_>>())
                ));
            }
            let mut det = Vec::new();
            if let Some(a) = self.pii {
                det.push(format!("pii: {{ on_match: {a} }}"));
            }
            if let Some(s) = self.secrets {
                det.push(format!("secrets: {{ on_match: {s} }}"));
            }
            if !det.is_empty() {
                spec.push(format!("detectors: {}", permuted(det, 11)));
            }
            if let Some(mt) = self.max_tokens {
                spec.push(format!("max_tokens: {mt}"));
            }
            if let Some([p, r, pi, s]) = self.inspection {
                spec.push(format!(
                    "inspection: {}",
                    permuted(
                        vec![
                            format!("prompts: {p}"),
                            format!("responses: {r}"),
                            format!("pii: {pi}"),
                            format!("secrets: {s}"),
                        ],
                        13
                    )
                ));
            }
        } else {
            spec.push(format!("action: {}", self.action));
        }
        let n = spec.len();
        let mut keyed: Vec<(usize, String)> = spec
            .into_iter()
            .enumerate()
            .map(|(i, s)| (o(i) % (n + 7), s))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        let body: String = keyed.into_iter().map(|(_, s)| format!("  {s}\n")).collect();
        format!(
            "apiVersion: warden/v1\nkind: Policy\nmetadata: {{ tenant: \"{}\", id: {} }}\nspec:\n{body}",
            self.tenant, self.id
        )
    }

    /// Whether this policy is evaluated and enforced at all (status active, not shadow).
    fn enforced(&self) -> bool {
        self.status == "active" && !self.shadow
    }

    /// The oracle: whether this policy applies to `req`, from the generator's model of the
    /// bundle (written from the documented semantics, independently of `decide`).
    fn applies(&self, req: &Request) -> bool {
        fn listed(list: &[&str], v: Option<&str>) -> bool {
            list.is_empty() || v.is_some_and(|v| list.contains(&v))
        }
        if self.status != "active" || (self.tenant != req.tenant && self.tenant != PLATFORM) {
            return false;
        }
        let in_scope = self.all_runs
            || (listed(&self.tenants, Some(&req.tenant))
                && listed(&self.projects, Some(&req.project))
                && listed(&self.agents, Some(&req.agent))
                && listed(&self.api_keys, req.api_key.as_deref())
                && listed(&self.actors, req.actor.as_deref()));
        let conn = req
            .connector
            .as_deref()
            .and_then(|c| connector_info(&req.tenant, c));
        let explicit = !(self.planes.is_empty()
            && self.connectors.is_empty()
            && self.tools.is_empty()
            && self.templates.is_empty());
        // A default-deny plane is reached only by allows that name something of it.
        let plane_ok =
            !self.allow || explicit || conn.is_none_or(|(_, default_allow)| default_allow);
        in_scope
            && plane_ok
            && self.channel == req.channel
            && listed(&self.planes, conn.map(|c| c.0))
            && listed(&self.connectors, req.connector.as_deref())
            && listed(&self.models, req.model.as_deref())
            && listed(&self.tools, req.tool.as_deref())
            && listed(&self.templates, req.template.as_deref())
    }
}

fn bundle(pols: &[Pol], order: &[usize]) -> String {
    let mut docs: Vec<String> = fixtures().split("---\n").map(str::to_string).collect();
    docs.extend(pols.iter().map(|p| p.yaml(order)));
    docs.join("---\n")
}

fn compile(text: &str) -> Snapshot {
    match compile_str("prop.yaml", text) {
        Ok(s) => s,
        Err(e) => panic!("generated bundle invalid: {e:#?}\n{text}"),
    }
}

/// Distinct ids from a small range, so ties and permutations are common.
fn policies() -> impl Strategy<Value = Vec<Pol>> {
    subsequence((0u32..40).collect::<Vec<_>>(), 0..8)
        .prop_flat_map(|ids| ids.into_iter().map(pol).collect::<Vec<_>>())
}

fn request() -> impl Strategy<Value = Request> {
    channel().prop_flat_map(|ch| {
        let mut conns: Vec<&str> = CONNECTORS
            .iter()
            .filter(|c| c.2 == ch)
            .map(|c| c.1)
            .collect();
        conns.push("nope");
        conns.dedup();
        (
            (
                select(vec!["acme", "acme", "globex", "initech"]),
                select(vec!["support-bot", "other"]),
                select(vec!["support", "x"]),
                proptest::option::of(select(vec!["k1", "k2", "k3"])),
                proptest::option::of(select(vec!["alice", "bob", "carol"])),
                proptest::option::weighted(0.85, select(conns)),
            ),
            (
                proptest::option::weighted(0.9, select(vec!["gpt-4o-mini", "gpt-4o"])),
                proptest::option::of(select(vec![
                    "search_tickets",
                    "get_ticket",
                    "delete_ticket",
                ])),
                proptest::option::weighted(
                    0.9,
                    select(vec!["customer_by_id", "orders_by_customer"]),
                ),
            ),
            prop_oneof![
                Just(None),
                Just(Some(PiiFact::Unavailable)),
                Just(Some(PiiFact::Found(vec![]))),
                Just(Some(PiiFact::Found(vec![PiiKind::Email]))),
                Just(Some(PiiFact::Partial(vec![]))),
                Just(Some(PiiFact::Partial(vec![PiiKind::Email])))
            ],
            prop_oneof![
                Just(None),
                Just(Some(SecretFact::Unavailable)),
                Just(Some(SecretFact::Found(vec![]))),
                Just(Some(SecretFact::Found(vec![SecretKind::OpenaiKey]))),
                Just(Some(SecretFact::Partial(vec![]))),
                Just(Some(SecretFact::Partial(vec![SecretKind::PrivateKey])))
            ],
            (0u32..60, 0u32..60, 0u32..5000),
            prop::bool::ANY,
        )
            .prop_map(
                move |(
                    (tenant, agent, project, api_key, actor, connector),
                    (model, tool, template),
                    pii,
                    secrets,
                    (i, o, b),
                    new_run,
                )| Request {
                    tenant: tenant.into(),
                    project: project.into(),
                    agent: agent.into(),
                    api_key: api_key.map(Into::into),
                    actor: actor.map(Into::into),
                    channel: ch,
                    connector: connector.map(Into::into),
                    model: model.filter(|_| ch == Channel::Llm).map(Into::into),
                    tool: tool.filter(|_| ch == Channel::Mcp).map(Into::into),
                    template: template.filter(|_| ch == Channel::Sql).map(Into::into),
                    new_run,
                    facts: Facts {
                        pii,
                        grounding: None,
                        secrets,
                        arguments: None,
                    },
                    delta: Delta {
                        input_tokens: f64::from(i),
                        output_tokens: f64::from(o),
                        cost_usd: 0.0,
                        bytes: f64::from(b),
                        rows: 0.0,
                    },
                },
            )
    })
}

fn usage() -> impl Strategy<Value = Usage> {
    prop::collection::btree_map(
        (0u32..40).prop_map(|i| format!("p{i:03}")),
        prop::collection::vec(0u32..60, 0..3),
        0..10,
    )
    .prop_map(|m| {
        Usage(
            m.into_iter()
                .map(|(k, v)| (k, v.into_iter().map(f64::from).collect()))
                .collect(),
        )
    })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![4 => Just(Mode::Enforcing), 1 => Just(Mode::Degraded), 1 => Just(Mode::Bypass), 1 => Just(Mode::Halted)]
}

fn act(s: &str) -> Action {
    match s {
        "warn" => Action::Warn,
        "pause" => Action::Pause,
        "stop" => Action::Stop,
        "kill" => Action::Kill,
        other => panic!("action {other}"),
    }
}

/// Limits in the documented canonical order (the index of usage counters): by metric, window
/// (step, run, session, then durations shortest first), max, `on_breach`, NEAR tiers; duplicates
/// dropped.
fn canonical_limits(ls: &[Lim]) -> Vec<Lim> {
    let metric = |m: &str| {
        [
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "cost_usd",
            "requests",
            "queries",
            "bytes",
        ]
        .iter()
        .position(|x| *x == m)
        .unwrap()
    };
    let window = |w: &str| {
        ["step", "run", "session", "1m", "1h"]
            .iter()
            .position(|x| *x == w)
            .unwrap()
    };
    let key = |l: &Lim| {
        let mut near: Vec<&str> = l.near.clone();
        near.sort_unstable();
        near.dedup();
        (
            metric(l.metric),
            window(l.window),
            l.max,
            act(l.on_breach),
            near,
        )
    };
    let mut v: Vec<(_, Lim)> = ls.iter().map(|l| (key(l), l.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|a, b| a.0 == b.0);
    v.into_iter().map(|(_, l)| l).collect()
}

/// The enforced part of a decision.
fn outcome(d: &Decision) -> impl PartialEq + std::fmt::Debug {
    (
        d.action,
        d.code,
        d.policy.clone(),
        d.reasons.clone(),
        d.max_tokens,
        d.headroom.clone(),
        d.downgraded_from,
        d.inspection,
        d.near
            .iter()
            .filter(|n| !n.shadow)
            .cloned()
            .collect::<Vec<_>>(),
    )
}

fn has(d: &Decision, code: &str) -> bool {
    d.reasons.iter().any(|r| r.code.as_str() == code)
}

/// A permutation of 0..32, as proptest draws it.
fn perm() -> impl Strategy<Value = Vec<usize>> {
    Just(()).prop_perturb(|_, mut rng| {
        let mut v: Vec<usize> = (0..32).collect();
        for i in (1..v.len()).rev() {
            let j = (rng.next_u32() as usize) % (i + 1);
            v.swap(i, j);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, .. ProptestConfig::default() })]

    /// INV-005: the order policies are written in, and the order of keys, never matter.
    #[test]
    fn permutation_gives_the_same_decision_and_hash(
        pols in policies(),
        order in perm(),
        shuffle in any::<prop::sample::Index>(),
        req in request(), u in usage(), m in mode(),
    ) {
        let a = compile(&bundle(&pols, &[]));
        let mut shuffled = pols.clone();
        if !shuffled.is_empty() {
            let k = shuffle.index(shuffled.len());
            shuffled.rotate_left(k);
            shuffled.reverse();
        }
        let b = compile(&bundle(&shuffled, &order));
        prop_assert_eq!(a.hash(), b.hash());
        let da = decide(&a, &req, &u, m, 1, "d");
        let db = decide(&b, &req, &u, m, 1, "d");
        prop_assert_eq!(da, db);
    }

    /// Same inputs, same decision.
    #[test]
    fn decisions_are_deterministic(pols in policies(), req in request(), u in usage(), m in mode()) {
        let text = bundle(&pols, &[]);
        let (a, b) = (compile(&text), compile(&text));
        prop_assert_eq!(a.hash(), b.hash());
        prop_assert_eq!(decide(&a, &req, &u, m, 5, "x"), decide(&b, &req, &u, m, 5, "x"));
    }

    /// Adding a deny never makes a decision less restrictive, in any mode.
    #[test]
    fn adding_a_deny_never_loosens(pols in policies(), extra in pol(99), req in request(), u in usage(), m in mode()) {
        let mut deny = extra;
        deny.allow = false;
        deny.status = "active";
        deny.shadow = false;
        deny.limits.clear();
        deny.pii = None;
        deny.secrets = None;
        deny.max_tokens = None;
        deny.inspection = None;
        let before = decide(&compile(&bundle(&pols, &[])), &req, &u, m, 0, "d");
        let mut more = pols.clone();
        more.push(deny.clone());
        let after = decide(&compile(&bundle(&more, &[])), &req, &u, m, 0, "d");
        prop_assert!(after.action >= before.action, "{:?} -> {:?}", before.action, after.action);
        // And when it applies, it is among the reasons with its own action (enforcing mode).
        if m == Mode::Enforcing && deny.applies(&req) {
            prop_assert!(after.reasons.iter().any(|r| r.policy.as_deref() == Some(deny.id.as_str())
                && r.code.as_str() == "policy_denied" && r.action == act(deny.action)));
            prop_assert!(after.action >= act(deny.action));
        }
    }

    /// Deny by default, read against the oracle: exactly when no active, enforced allow of the
    /// request's tenant (or of the platform) applies, the call is refused (STOP at least) with
    /// `no_allow_policy`; exactly the allows that apply say `allowed`.
    #[test]
    fn no_applying_allow_means_stop(pols in policies(), req in request(), u in usage()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let mut expect: Vec<&str> = pols.iter().filter(|p| p.enforced() && p.allow && p.applies(&req)).map(|p| p.id.as_str()).collect();
        expect.sort_unstable();
        let mut got: Vec<&str> = d.reasons.iter().filter(|r| r.code.as_str() == "allowed").filter_map(|r| r.policy.as_deref()).collect();
        got.sort_unstable();
        prop_assert_eq!(&got, &expect, "allows that fire");
        prop_assert_eq!(has(&d, "no_allow_policy"), expect.is_empty());
        if expect.is_empty() {
            prop_assert!(d.action >= Action::Stop);
            prop_assert!(d.refused());
        }
        // Every deny that applies fires, and nothing else says `policy_denied`.
        let mut denies: Vec<&str> = pols.iter().filter(|p| p.enforced() && !p.allow && p.applies(&req)).map(|p| p.id.as_str()).collect();
        denies.sort_unstable();
        let mut denied: Vec<&str> = d.reasons.iter().filter(|r| r.code.as_str() == "policy_denied").filter_map(|r| r.policy.as_deref()).collect();
        denied.sort_unstable();
        prop_assert_eq!(denied, denies);
    }

    /// INV-003: a decision never cites a policy of another tenant, enforced or shadow; a tenant
    /// with no policies of its own gets only platform policies.
    #[test]
    fn other_tenants_policies_never_fire(pols in policies(), req in request(), u in usage(), m in mode()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, m, 0, "d");
        let tenant_of = |id: &str| pols.iter().find(|p| p.id == id).map(|p| p.tenant);
        for r in d.reasons.iter().chain(&d.shadow) {
            if let Some(id) = r.policy.as_deref() {
                let t = tenant_of(id);
                prop_assert!(t == Some(req.tenant.as_str()) || t == Some(PLATFORM), "{id} of {t:?} fired for {}", req.tenant);
            }
        }
        for n in &d.near {
            let t = tenant_of(&n.policy);
            prop_assert!(t == Some(req.tenant.as_str()) || t == Some(PLATFORM));
        }
    }

    /// `max_tokens` is the least of the applying enforced allows' clamps; `inspection` is what
    /// every one of them permits (nothing when none applies).
    #[test]
    fn clamp_and_inspection_are_the_meet_of_the_applying_allows(pols in policies(), req in request(), u in usage()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let firing: Vec<&Pol> = pols.iter().filter(|p| p.enforced() && p.allow && p.applies(&req)).collect();
        prop_assert_eq!(d.max_tokens, firing.iter().filter_map(|p| p.max_tokens).min());
        let want = if firing.is_empty() {
            Inspection::default()
        } else {
            let all = |i: usize| firing.iter().all(|p| p.inspection.is_some_and(|x| x[i]));
            Inspection { prompts: all(0), responses: all(1), pii: all(2), secrets: all(3) }
        };
        prop_assert_eq!(d.inspection, want);
    }

    /// A detector fact that could not be established follows its policy's `failure_mode`:
    /// fail_open never refuses for it (WARN at most), fail_closed (the default) refuses with
    /// STOP at least when the detector's own action blocks.
    #[test]
    fn missing_facts_follow_failure_mode(pols in policies(), req in request(), u in usage()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let unavailable = |fact: &str| match fact {
            "pii" => matches!(req.facts.pii, Some(PiiFact::Unavailable | PiiFact::Partial(_))),
            _ => matches!(req.facts.secrets, Some(SecretFact::Unavailable | SecretFact::Partial(_))),
        };
        let found = |fact: &str| match fact {
            "pii" => matches!(&req.facts.pii, Some(PiiFact::Found(k) | PiiFact::Partial(k)) if !k.is_empty()),
            _ => matches!(&req.facts.secrets, Some(SecretFact::Found(k) | SecretFact::Partial(k)) if !k.is_empty()),
        };
        for p in pols.iter().filter(|p| p.enforced() && p.allow && p.applies(&req)) {
            // A kind found fires the detector with its own action, naming the kind.
            for (fact, det, code, kind) in [("pii", p.pii, "pii_detected", "email"), ("secrets", p.secrets, "secret_detected", "")] {
                let r = d.reasons.iter().find(|r| r.policy.as_deref() == Some(p.id.as_str()) && r.code.as_str() == code);
                match det.filter(|_| found(fact)) {
                    Some(a) => {
                        let r = r.expect("a found kind fires its detector");
                        prop_assert_eq!(r.action, act(a));
                        prop_assert!(r.detail.contains(kind) && !r.detail.is_empty());
                    }
                    None => prop_assert!(r.is_none()),
                }
            }
            for (fact, det) in [("pii", p.pii), ("secrets", p.secrets)] {
                let code = format!("fact_unavailable:{fact}");
                let r = d.reasons.iter().find(|r| r.policy.as_deref() == Some(p.id.as_str()) && r.code.as_str() == code);
                match (det, unavailable(fact)) {
                    (Some(a), true) => {
                        let r = r.expect("a missing fact a policy needs is a reason");
                        if p.failure_mode == Some("fail_open") {
                            prop_assert!(r.action <= Action::Warn);
                        } else if act(a).blocks() {
                            prop_assert!(r.action >= Action::Stop);
                            prop_assert!(d.refused());
                        } else {
                            prop_assert_eq!(r.action, act(a));
                        }
                    }
                    _ => prop_assert!(r.is_none()),
                }
            }
        }
    }

    /// Modes: halted refuses everything before any policy; degraded refuses new runs and turns
    /// every other refusal into a WARN that remembers the action; bypass lets everything through
    /// and remembers what it overrode.
    #[test]
    fn modes_change_only_what_they_say(pols in policies(), req in request(), u in usage()) {
        let s = compile(&bundle(&pols, &[]));
        let base = decide(&s, &req, &u, Mode::Enforcing, 0, "d");
        let h = decide(&s, &req, &u, Mode::Halted, 0, "d");
        prop_assert_eq!(h.action, Action::Stop);
        prop_assert_eq!(h.code.map(|c| c.as_str()), Some("governance_halted"));
        prop_assert_eq!(h.reasons.len(), 1);
        let dg = decide(&s, &req, &u, Mode::Degraded, 0, "d");
        if req.new_run {
            prop_assert_eq!(dg.code.map(|c| c.as_str()), Some("governance_degraded"));
            prop_assert!(dg.refused());
        } else if base.refused() {
            prop_assert_eq!(dg.action, Action::Warn);
            prop_assert_eq!(dg.downgraded_from, Some(base.action));
            prop_assert_eq!(&dg.reasons, &base.reasons);
        } else {
            prop_assert_eq!(outcome(&dg), outcome(&base));
        }
        let b = decide(&s, &req, &u, Mode::Bypass, 0, "d");
        prop_assert_eq!(b.action, Action::Continue);
        prop_assert_eq!(b.downgraded_from, (base.action != Action::Continue).then_some(base.action));
        prop_assert_eq!(&b.reasons, &base.reasons);
    }

    /// Limits, against the oracle: each limit of an applying allow breaches exactly when usage
    /// so far plus what this call adds passes its max (its `on_breach`, `rate_limited` for
    /// request counts per time window, `budget_exceeded` otherwise); else it raises the highest
    /// NEAR tier reached. Headroom is the least room any blocking limit leaves per metric, and
    /// every limit (shadow ones too) is metered.
    #[test]
    fn limits_breach_exactly_past_their_max(pols in policies(), req in request(), u in usage()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let delta = |metric: &str| -> f64 {
            let dl = &req.delta;
            match metric {
                "input_tokens" => dl.input_tokens,
                "output_tokens" => dl.output_tokens,
                "total_tokens" => dl.input_tokens + dl.output_tokens,
                "cost_usd" => dl.cost_usd,
                "requests" => 1.0,
                "queries" => if req.channel == Channel::Sql { 1.0 } else { 0.0 },
                "bytes" => dl.bytes,
                m => panic!("metric {m}"),
            }
        };
        let mut room: std::collections::BTreeMap<&str, f64> = Default::default();
        let mut metered = 0;
        for p in pols.iter().filter(|p| p.allow && p.applies(&req)) {
            metered += canonical_limits(&p.limits).len();
            if !p.enforced() { continue; }
            let mut want = Vec::new();
            for (i, l) in canonical_limits(&p.limits).iter().enumerate() {
                let used = warden::decide::UsageView::used(&u, &p.id, i);
                let projected = used + delta(l.metric);
                let max = f64::from(l.max);
                let near: Vec<_> = d.near.iter().filter(|n| &*n.policy == p.id.as_str() && n.limit == i).collect();
                if projected > max {
                    let rate = matches!(l.metric, "requests" | "queries") && matches!(l.window, "1m" | "1h");
                    let window = match l.window { "1m" => "60s", "1h" => "3600s", w => w };
                    want.push((
                        format!("{} {} > {} per {}", l.metric, projected, max, window),
                        act(l.on_breach),
                        if rate { "rate_limited" } else { "budget_exceeded" },
                    ));
                    prop_assert!(near.is_empty());
                } else {
                    let tier = l.near.iter().map(|t| t.parse::<f64>().unwrap()).filter(|t| projected >= t * max).fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
                    match tier {
                        Some(t) => {
                            prop_assert_eq!(near.len(), 1);
                            prop_assert_eq!(near[0].tier, t);
                            prop_assert_eq!(near[0].used, projected);
                            prop_assert_eq!(near[0].max, max);
                        }
                        None => prop_assert!(near.is_empty()),
                    }
                }
                if act(l.on_breach).blocks() {
                    let r = (max - projected).max(0.0);
                    let e = room.entry(l.metric).or_insert(r);
                    *e = e.min(r);
                }
            }
            let mut got: Vec<(String, Action, &str)> = d.reasons.iter()
                .filter(|r| r.policy.as_deref() == Some(p.id.as_str()) && matches!(r.code.as_str(), "budget_exceeded" | "rate_limited"))
                .map(|r| (r.detail.clone(), r.action, r.code.as_str()))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            want.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            prop_assert_eq!(got, want, "{} breaches", p.id);
        }
        let got: std::collections::BTreeMap<&str, f64> = d.headroom.iter().map(|(m, v)| (m.as_str(), *v)).collect();
        prop_assert_eq!(got, room);
        prop_assert_eq!(d.meters.len(), metered);
    }

    /// Shadow, draft, suspended and retired policies — of any tenant, with ids that sort before,
    /// between or after the enforced ones — never change the outcome.
    #[test]
    fn inert_policies_never_change_the_outcome(
        pols in policies(),
        extra in prop::collection::vec((0u32..40).prop_flat_map(pol), 1..5),
        req in request(), u in usage(), m in mode(),
    ) {
        let base = decide(&compile(&bundle(&pols, &[])), &req, &u, m, 0, "d");
        let mut used: std::collections::HashSet<String> = pols.iter().map(|p| p.id.clone()).collect();
        let mut more = pols.clone();
        for (i, mut e) in extra.into_iter().enumerate() {
            if !used.insert(e.id.clone()) { continue; }
            match i % 4 {
                0 => { e.shadow = true; e.status = "active"; }
                1 => e.status = "draft",
                2 => e.status = "suspended",
                _ => e.status = "retired",
            }
            more.push(e);
        }
        let with = decide(&compile(&bundle(&more, &[])), &req, &u, m, 0, "d");
        prop_assert_eq!(outcome(&base), outcome(&with));
    }

    /// The winner is the most restrictive reason, and among equal actions the lowest policy id;
    /// reasons come out sorted that way.
    #[test]
    fn most_restrictive_then_lowest_id_wins(pols in policies(), req in request(), u in usage()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let top = d.reasons.iter().map(|r| r.action).max().unwrap();
        prop_assert_eq!(d.action, top);
        let best_id = d.reasons.iter().filter(|r| r.action == top).filter_map(|r| r.policy.clone()).min();
        prop_assert_eq!(d.policy.clone(), best_id);
        for w in d.reasons.windows(2) {
            prop_assert!(w[0].action >= w[1].action);
            if w[0].action == w[1].action {
                if let (Some(a), Some(b)) = (&w[0].policy, &w[1].policy) { prop_assert!(a <= b); }
            }
        }
    }
}

/// The generators reach what they claim to: over a fixed number of draws, every tenant, channel,
/// scope list, clamp, inspection flag, failure mode and inert status shows up, allows fire and
/// fail to fire, and an inert policy's id sorts before an active one's.
#[test]
fn generators_cover_the_fields_decisions_read() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config::default());
    let mut seen: std::collections::BTreeSet<String> = Default::default();
    for _ in 0..600 {
        let pols = policies().new_tree(&mut runner).unwrap().current();
        let req = request().new_tree(&mut runner).unwrap().current();
        for p in &pols {
            seen.insert(format!("tenant:{}", p.tenant));
            seen.insert(format!("status:{}", p.status));
            for (k, v) in [
                ("tenants", &p.tenants),
                ("api_keys", &p.api_keys),
                ("actors", &p.actors),
                ("planes", &p.planes),
                ("tools", &p.tools),
                ("templates", &p.templates),
                ("models", &p.models),
            ] {
                if !v.is_empty() {
                    seen.insert(format!("list:{k}"));
                }
            }
            if p.max_tokens.is_some() {
                seen.insert("max_tokens".into());
            }
            if p.inspection.is_some_and(|i| i[2]) {
                seen.insert("inspection.pii".into());
            }
            if let Some(f) = p.failure_mode {
                seen.insert(format!("failure_mode:{f}"));
            }
            if p.applies(&req) && p.allow && p.enforced() {
                seen.insert("allow applies".into());
            }
            if p.applies(&req) && !p.allow && p.enforced() {
                seen.insert("deny applies".into());
            }
        }
        let inert_first = pols.iter().filter(|p| !p.enforced()).map(|p| &p.id).min()
            < pols.iter().filter(|p| p.enforced()).map(|p| &p.id).min();
        if inert_first && pols.iter().any(|p| p.enforced()) {
            seen.insert("inert sorts first".into());
        }
        seen.insert(format!("req:{}", req.tenant));
        if req.api_key.is_some() {
            seen.insert("req api_key".into());
        }
        if req.actor.is_some() {
            seen.insert("req actor".into());
        }
    }
    for want in [
        "tenant:acme",
        "tenant:globex",
        "tenant:*",
        "status:draft",
        "status:retired",
        "status:suspended",
        "list:tenants",
        "list:api_keys",
        "list:actors",
        "list:planes",
        "list:tools",
        "list:templates",
        "list:models",
        "max_tokens",
        "inspection.pii",
        "failure_mode:fail_open",
        "failure_mode:fail_closed",
        "allow applies",
        "deny applies",
        "inert sorts first",
        "req:initech",
        "req:globex",
        "req api_key",
        "req actor",
    ] {
        assert!(
            seen.contains(want),
            "generators never produce `{want}`; saw {seen:?}"
        );
    }
}
