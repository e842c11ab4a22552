//! Property tests for the laws of DESIGN §4 (INV-005 and friends) over random bundles,
//! requests and usage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::subsequence;
use warden::decide::{decide, Decision, Delta, Facts, Mode, PiiFact, Request, SecretFact, Usage};
use warden::policy::model::{Action, Channel, PiiKind, SecretKind};
use warden::policy::{compile_str, Snapshot};

/// The contract bundle without its policies: connectors, plane, template.
fn fixtures() -> String {
    include_str!("../examples/contract/bundle.yaml")
        .split("---\n")
        .filter(|d| !d.contains("kind: Policy"))
        .collect::<Vec<_>>()
        .join("---\n")
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
    status: &'static str,
    shadow: bool,
    all_runs: bool,
    agents: Vec<&'static str>,
    projects: Vec<&'static str>,
    channel: Channel,
    connectors: Vec<&'static str>,
    models: Vec<&'static str>,
    allow: bool,
    action: &'static str,
    limits: Vec<Lim>,
    pii: Option<&'static str>,
    secrets: Option<&'static str>,
}

fn connectors_of(ch: Channel) -> Vec<&'static str> {
    match ch {
        Channel::Llm => vec!["openai"],
        Channel::Http => vec!["weather"],
        Channel::Sql => vec!["crm-db"],
        Channel::Mcp => vec!["tickets"],
    }
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
        proptest::sample::select(metrics_of(ch)),
        proptest::sample::select(vec!["step", "run", "session", "1m", "1h"]),
        1u32..50,
        subsequence(vec!["0.5", "0.8", "0.9"], 0..=3),
        proptest::sample::select(vec!["warn", "pause", "stop", "kill"]),
    )
        .prop_map(|(metric, window, max, near, on_breach)| Lim {
            metric,
            window,
            max,
            near,
            on_breach,
        })
}

fn pol(id: u32) -> impl Strategy<Value = Pol> {
    channel().prop_flat_map(move |ch| {
        (
            prop_oneof![6 => Just("active"), 1 => Just("draft"), 1 => Just("suspended"), 1 => Just("retired")],
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.4),
            subsequence(vec!["support-bot", "other"], 1..=2),
            subsequence(vec!["support", "x"], 0..=2),
            subsequence(connectors_of(ch), 0..=1),
            if ch == Channel::Llm { subsequence(vec!["gpt-4o-mini"], 0..=1).boxed() } else { Just(vec![]).boxed() },
            prop::bool::weighted(0.6),
            proptest::sample::select(vec!["pause", "stop", "kill"]),
            prop::collection::vec(limit(ch), 0..=2),
            proptest::option::weighted(0.3, proptest::sample::select(vec!["warn", "pause", "stop", "kill"])),
            proptest::option::weighted(0.3, proptest::sample::select(vec!["warn", "pause", "stop", "kill"])),
        )
            .prop_map(move |(status, shadow, all_runs, agents, projects, connectors, models, allow, action, limits, pii, secrets)| Pol {
                id: format!("p{id:03}"),
                status,
                shadow,
                all_runs,
                agents,
                projects,
                channel: ch,
                connectors,
                models,
                allow,
                action,
                limits,
                pii,
                secrets,
            })
    })
}

fn list(v: &[&str]) -> String {
    format!("[{}]", v.join(", "))
}

impl Pol {
    /// YAML for this policy; `order` permutes the keys of `spec` (and of its maps).
    fn yaml(&self, order: &[usize]) -> String {
        let mut spec: Vec<String> = vec![
            format!("status: {}", self.status),
            format!("shadow: {}", self.shadow),
            if self.all_runs {
                "scope: { all_runs: true }".to_string()
            } else if order.first().copied().unwrap_or(0) % 2 == 0 {
                format!(
                    "scope: {{ agents: {}, projects: {} }}",
                    list(&self.agents),
                    list(&self.projects)
                )
            } else {
                format!(
                    "scope: {{ projects: {}, agents: {} }}",
                    list(&self.projects),
                    list(&self.agents)
                )
            },
            format!(
                "match: {{ channel: {}, connectors: {}, models: {} }}",
                self.channel.as_str(),
                list(&self.connectors),
                list(&self.models)
            ),
            format!("effect: {}", if self.allow { "allow" } else { "deny" }),
        ];
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
            match (self.pii, self.secrets) {
                (Some(a), Some(s)) => spec.push(format!(
                    "detectors: {{ pii: {{ on_match: {a} }}, secrets: {{ on_match: {s} }} }}"
                )),
                (Some(a), None) => spec.push(format!("detectors: {{ pii: {{ on_match: {a} }} }}")),
                (None, Some(s)) => {
                    spec.push(format!("detectors: {{ secrets: {{ on_match: {s} }} }}"))
                }
                (None, None) => {}
            }
        } else {
            spec.push(format!("action: {}", self.action));
        }
        let n = spec.len();
        let mut keyed: Vec<(usize, String)> = spec
            .into_iter()
            .enumerate()
            .map(|(i, s)| (order.get(i).copied().unwrap_or(i) % (n + 7), s))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        let body: String = keyed.into_iter().map(|(_, s)| format!("  {s}\n")).collect();
        format!("apiVersion: warden/v1\nkind: Policy\nmetadata: {{ tenant: acme, id: {} }}\nspec:\n{body}", self.id)
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

fn policies() -> impl Strategy<Value = Vec<Pol>> {
    // Distinct ids from a small range, so ties and permutations are common.
    subsequence((0u32..40).collect::<Vec<_>>(), 0..8)
        .prop_flat_map(|ids| ids.into_iter().map(pol).collect::<Vec<_>>())
}

fn request() -> impl Strategy<Value = Request> {
    channel().prop_flat_map(|ch| {
        (
            proptest::sample::select(vec!["support-bot", "other"]),
            proptest::sample::select(vec!["support", "x"]),
            proptest::option::of(proptest::sample::select(connectors_of(ch))),
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
                move |(agent, project, connector, pii, secrets, (i, o, b), new_run)| Request {
                    tenant: "acme".into(),
                    project: project.into(),
                    agent: agent.into(),
                    api_key: None,
                    actor: None,
                    channel: ch,
                    connector: connector.map(Into::into),
                    model: (ch == Channel::Llm).then(|| "gpt-4o-mini".to_string()),
                    tool: None,
                    template: (ch == Channel::Sql).then(|| "customer_by_id".to_string()),
                    new_run,
                    facts: Facts {
                        pii,
                        grounding: None,
                        secrets,
                    },
                    delta: Delta {
                        input_tokens: f64::from(i),
                        output_tokens: f64::from(o),
                        cost_usd: 0.0,
                        bytes: f64::from(b),
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// INV-005: the order policies are written in, and the order of keys, never matter.
    #[test]
    fn permutation_gives_the_same_decision_and_hash(
        pols in policies(),
        perm in Just(()).prop_perturb(|_, mut rng| { let mut v: Vec<usize> = (0..16).collect(); for i in (1..v.len()).rev() { let j = (rng.next_u32() as usize) % (i + 1); v.swap(i, j); } v }),
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
        let b = compile(&bundle(&shuffled, &perm));
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

    /// Adding a deny never makes a decision less restrictive.
    #[test]
    fn adding_a_deny_never_loosens(pols in policies(), extra in pol(99), req in request(), u in usage()) {
        let mut deny = extra;
        deny.allow = false;
        deny.status = "active";
        deny.shadow = false;
        let before = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let mut more = pols.clone();
        more.push(deny);
        let after = decide(&compile(&bundle(&more, &[])), &req, &u, Mode::Enforcing, 0, "d");
        prop_assert!(after.action >= before.action, "{:?} -> {:?}", before.action, after.action);
    }

    /// No active, enforced allow fires ⇒ STOP (at least) with `no_allow_policy` among the reasons.
    #[test]
    fn no_active_allow_means_stop(pols in policies(), req in request(), u in usage()) {
        let d = decide(&compile(&bundle(&pols, &[])), &req, &u, Mode::Enforcing, 0, "d");
        let allowed = d.reasons.iter().any(|r| r.code.as_str() == "allowed");
        if !allowed {
            prop_assert!(d.action >= Action::Stop);
            prop_assert!(d.reasons.iter().any(|r| r.code.as_str() == "no_allow_policy"));
        }
        // Conversely the default deny never appears next to an enforced allow.
        if allowed {
            prop_assert!(!d.reasons.iter().any(|r| r.code.as_str() == "no_allow_policy"));
        }
    }

    /// Shadow, draft, suspended and retired policies never change the outcome.
    #[test]
    fn inert_policies_never_change_the_outcome(pols in policies(), extra in prop::collection::vec(pol(0), 1..4), req in request(), u in usage(), m in mode()) {
        let base = decide(&compile(&bundle(&pols, &[])), &req, &u, m, 0, "d");
        let used: std::collections::HashSet<String> = pols.iter().map(|p| p.id.clone()).collect();
        let mut more = pols.clone();
        for (i, mut e) in extra.into_iter().enumerate() {
            e.id = format!("q{i:03}");
            if used.contains(&e.id) { continue; }
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
