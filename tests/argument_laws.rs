//! Property tests of MCP argument rules (`docs/policy.md`, "arguments"): what a rule breaks is
//! checked against an oracle written here over the generator's own model of the arguments; the
//! breaks do not depend on the order of the rules; and a decision refuses a tool call exactly
//! when a firing, enforced policy's rule is broken — whatever other allows say, in any order of
//! the policies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use warden::decide::{arguments_fact, decide, Facts, Mode, PiiFact, Request};
use warden::policy::args::{check, compile};
use warden::policy::model::{Action, ArgRule, Channel};

/// The generator's arguments: `a` and `b` scalars, `c.d` nested, `items.*.sku` in an array.
#[derive(Debug, Clone)]
struct Args {
    a: Option<Value>,
    b: Option<Value>,
    cd: Option<Value>,
    skus: Option<Vec<Value>>,
}

impl Args {
    fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(v) = &self.a {
            m.insert("a".into(), v.clone());
        }
        if let Some(v) = &self.b {
            m.insert("b".into(), v.clone());
        }
        if let Some(v) = &self.cd {
            m.insert("c".into(), json!({ "d": v }));
        }
        if let Some(s) = &self.skus {
            m.insert(
                "items".into(),
                Value::Array(s.iter().map(|v| json!({ "sku": v })).collect()),
            );
        }
        Value::Object(m)
    }

    /// What a path reaches, by the model (not by the code under test).
    fn reach(&self, path: &str) -> Vec<Value> {
        match path {
            "a" => self.a.iter().cloned().collect(),
            "b" => self.b.iter().cloned().collect(),
            "c.d" => self.cd.iter().cloned().collect(),
            "items.*.sku" => self.skus.clone().unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        // Small numbers, so values often sit on a range's bounds.
        (-2i64..12).prop_map(Value::from),
        (-2.0f64..12.0).prop_map(|f| json!((f * 2.0).round() / 2.0)),
        "[a-zA-Z ]{0,8}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn args() -> impl Strategy<Value = Args> {
    (
        proptest::option::of(scalar()),
        proptest::option::of(scalar()),
        proptest::option::of(scalar()),
        proptest::option::of(proptest::collection::vec(scalar(), 0..4)),
    )
        .prop_map(|(a, b, cd, skus)| Args { a, b, cd, skus })
}

#[derive(Debug, Clone)]
enum Kind {
    Required,
    Forbidden,
    Range(i64, i64),
    OneOf(Vec<Value>),
    Pattern,
    MaxLen(u64),
}

fn rule_of(k: &Kind) -> ArgRule {
    match k {
        Kind::Required => ArgRule {
            required: true,
            ..ArgRule::default()
        },
        Kind::Forbidden => ArgRule {
            forbidden: true,
            ..ArgRule::default()
        },
        Kind::Range(lo, hi) => ArgRule {
            min: Some(*lo as f64),
            max: Some(*hi as f64),
            ..ArgRule::default()
        },
        Kind::OneOf(v) => ArgRule {
            one_of: Some(v.clone()),
            ..ArgRule::default()
        },
        Kind::Pattern => ArgRule {
            pattern: Some("[a-z]+".into()),
            ..ArgRule::default()
        },
        Kind::MaxLen(n) => ArgRule {
            max_len: Some(*n),
            ..ArgRule::default()
        },
    }
}

/// Whether `values` (what the path reached) break the rule: the oracle.
fn oracle(k: &Kind, values: &[Value]) -> bool {
    let num_eq = |x: &Value, y: &Value| match (x.as_f64(), y.as_f64()) {
        (Some(a), Some(b)) if x.is_number() && y.is_number() => a == b,
        _ => x == y,
    };
    match k {
        Kind::Required => values.is_empty(),
        Kind::Forbidden => !values.is_empty(),
        Kind::Range(lo, hi) => values
            .iter()
            .any(|v| v.as_f64().is_none_or(|n| n < *lo as f64 || n > *hi as f64)),
        Kind::OneOf(allowed) => values.iter().any(|v| !allowed.iter().any(|a| num_eq(a, v))),
        Kind::Pattern => values.iter().any(|v| {
            v.as_str()
                .is_none_or(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_lowercase()))
        }),
        Kind::MaxLen(n) => values.iter().any(|v| match v {
            Value::String(s) => s.chars().count() as u64 > *n,
            Value::Array(a) => a.len() as u64 > *n,
            _ => true,
        }),
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Required),
        Just(Kind::Forbidden),
        (0i64..6, 0i64..5).prop_map(|(lo, w)| Kind::Range(lo, lo + w)),
        proptest::collection::vec(scalar().prop_filter("scalars", |v| !v.is_null()), 1..4)
            .prop_map(Kind::OneOf),
        Just(Kind::Pattern),
        (0u64..6).prop_map(Kind::MaxLen),
    ]
}

fn rules() -> impl Strategy<Value = Vec<(&'static str, Kind)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("c.d"),
                Just("items.*.sku"),
                Just("zz")
            ],
            kind(),
        ),
        1..5,
    )
}

const CONTRACT: &str = include_str!("../examples/contract/bundle.yaml");

fn yaml_rule(k: &Kind) -> String {
    serde_json::to_string(&rule_of(k)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_rule_breaks_exactly_when_the_oracle_says(args in args(), rules in rules()) {
        let compiled: Vec<_> = rules.iter().map(|(p, k)| compile(p, &rule_of(k)).unwrap()).collect();
        let got = check(&compiled, &args.json());
        let want: Vec<&str> = rules
            .iter()
            .filter(|(p, k)| oracle(k, &args.reach(p)))
            .map(|(p, _)| *p)
            .collect();
        let got_paths: Vec<&str> = got.iter().map(|b| b.path.as_str()).collect();
        prop_assert_eq!(got_paths, want, "{:?}", got);
        // The order of the rules changes the order of the breaks, never which break.
        let mut rev = compiled.clone();
        rev.reverse();
        let mut a: Vec<_> = check(&rev, &args.json()).into_iter().map(|b| (b.path, b.rule)).collect();
        let mut b: Vec<_> = got.into_iter().map(|b| (b.path, b.rule)).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn a_broken_rule_of_a_firing_policy_refuses_whatever_else_allows(
        args in args(),
        rules in rules(),
        other_first in any::<bool>(),
    ) {
        // p410 holds the rules; p401 (or p420, sorting before or after it) allows the same tool
        // with none. Rules of one path are merged by the map, so keep the last of each.
        let mut by_path = std::collections::BTreeMap::new();
        for (p, k) in &rules {
            by_path.insert(*p, k.clone());
        }
        let body: String = by_path
            .iter()
            .map(|(p, k)| format!("    \"{p}\": {}\n", yaml_rule(k)))
            .collect();
        let other = if other_first { "p401-any" } else { "p420-any" };
        let bundle = format!(
            "{CONTRACT}---\napiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p410-args, tenant: acme }}\nspec:\n  status: active\n  scope: {{ all_runs: true }}\n  match: {{ channel: mcp, connectors: [tickets], tools: [search_tickets] }}\n  effect: allow\n  arguments:\n{body}---\napiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: {other}, tenant: acme }}\nspec:\n  status: active\n  scope: {{ all_runs: true }}\n  match: {{ channel: mcp, connectors: [tickets] }}\n  effect: allow\n"
        );
        let snap = warden::policy::compile_str("b.yaml", &bundle).unwrap();
        let mut req = Request {
            tenant: "acme".into(), project: "support".into(), agent: "support-bot".into(),
            api_key: None, actor: None, channel: Channel::Mcp,
            connector: Some("tickets".into()), model: None,
            tool: Some("search_tickets".into()), template: None, new_run: false,
            facts: Facts { pii: Some(PiiFact::Found(vec![])), ..Facts::default() },
            delta: Default::default(),
        };
        req.facts.arguments = Some(arguments_fact(&snap, &req, &args.json()));
        let d = decide(&snap, &req, &(), Mode::Enforcing, 1, "d");
        let broken = by_path.iter().any(|(p, k)| oracle(k, &args.reach(p)));
        prop_assert_eq!(d.action == Action::Stop, broken, "{:?}", d);
        if broken {
            prop_assert_eq!(d.policy.as_deref(), Some("p410-args"));
        }
        // The same decision from the record alone.
        let back: Request = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        prop_assert_eq!(decide(&snap, &back, &(), Mode::Enforcing, 1, "d"), d);
    }
}
