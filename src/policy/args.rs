//! Argument rules of MCP tool calls: the paths a policy's `arguments` name, compiled, and the
//! pure check of a call's arguments against them (`docs/policy.md`, "arguments").
//!
//! A path is dot-separated object keys; a `*` segment stands for every item of an array (or
//! every member of an object), so `items.*.sku` is each item's `sku`. A rule applies to every
//! value its path reaches: `required` wants at least one, `forbidden` none; `min`/`max` want
//! numbers, `pattern` strings, `max_len` strings (characters) or arrays (items), `enum` one of
//! its values exactly. A value of the wrong kind for a rule breaks it.

use serde_json::Value as Json;

use super::model::ArgRule;

/// One segment of an argument path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(Box<str>),
    Any,
}

/// An argument rule ready to check.
#[derive(Debug, Clone)]
pub struct CompiledArg {
    /// The path as written, for messages.
    pub path: Box<str>,
    pub segs: Box<[Seg]>,
    pub rule: ArgRule,
    /// `rule.pattern`, compiled (anchored).
    pub pattern: Option<regex::Regex>,
}

impl PartialEq for CompiledArg {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.rule == other.rule
    }
}

/// A rule an argument broke: the path and what it asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArgBreak {
    pub path: String,
    pub rule: String,
}

/// Parse a path: segments of letters, digits, `_` and `-`, or `*`.
pub fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    if path.is_empty() {
        return Err("an argument path must not be empty".into());
    }
    path.split('.')
        .map(|s| match s {
            "*" => Ok(Seg::Any),
            s if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                Ok(Seg::Key(s.into()))
            }
            _ => Err(format!(
                "argument path `{path}`: each segment is a key (letters, digits, `_`, `-`) or `*`"
            )),
        })
        .collect()
}

/// Compile one rule (the path and pattern already validated).
pub fn compile(path: &str, rule: &ArgRule) -> Option<CompiledArg> {
    let segs = parse_path(path).ok()?;
    let pattern = match &rule.pattern {
        Some(p) => Some(super::sql::compile_pattern(p).ok()?),
        None => None,
    };
    Some(CompiledArg {
        path: path.into(),
        segs: segs.into(),
        rule: rule.clone(),
        pattern,
    })
}

/// Every value `segs` reaches in `v`.
fn reach<'a>(v: &'a Json, segs: &[Seg], out: &mut Vec<&'a Json>) {
    let Some((first, rest)) = segs.split_first() else {
        out.push(v);
        return;
    };
    match (first, v) {
        (Seg::Key(k), Json::Object(m)) => {
            if let Some(next) = m.get(k.as_ref()) {
                reach(next, rest, out);
            }
        }
        (Seg::Any, Json::Array(items)) => {
            for i in items {
                reach(i, rest, out);
            }
        }
        (Seg::Any, Json::Object(m)) => {
            for i in m.values() {
                reach(i, rest, out);
            }
        }
        _ => {}
    }
}

/// The first rule `value` breaks, as words.
fn broken(value: &Json, a: &CompiledArg) -> Option<String> {
    let r = &a.rule;
    if r.min.is_some() || r.max.is_some() {
        let Some(n) = value.as_f64() else {
            return Some("must be a number".into());
        };
        if let Some(min) = r.min.filter(|m| n < *m) {
            return Some(format!("{n} is below min {min}"));
        }
        if let Some(max) = r.max.filter(|m| n > *m) {
            return Some(format!("{n} is above max {max}"));
        }
    }
    if let Some(values) = &r.one_of {
        if !values.iter().any(|v| same(v, value)) {
            return Some("is not one of the allowed values".into());
        }
    }
    if let Some(re) = &a.pattern {
        match value.as_str() {
            Some(s) if re.is_match(s) => {}
            Some(_) => return Some("does not match the pattern".into()),
            None => return Some("must be a string (it has a pattern)".into()),
        }
    }
    if let Some(max) = r.max_len {
        let len = match value {
            Json::String(s) => s.chars().count() as u64,
            Json::Array(items) => items.len() as u64,
            _ => return Some("must be a string or an array (it has max_len)".into()),
        };
        if len > max {
            return Some(format!("is {len} long, more than max_len {max}"));
        }
    }
    None
}

/// JSON equality, numbers by value (`1` and `1.0` are the same number).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// The rules `args` (a tool call's `arguments`) breaks, each once, in the rules' order.
pub fn check(rules: &[CompiledArg], args: &Json) -> Vec<ArgBreak> {
    let mut out = Vec::new();
    for a in rules {
        let mut found = Vec::new();
        reach(args, &a.segs, &mut found);
        let why = if found.is_empty() {
            a.rule.required.then(|| "is required".to_string())
        } else if a.rule.forbidden {
            Some("is not allowed".to_string())
        } else {
            found.iter().find_map(|v| broken(v, a))
        };
        if let Some(rule) = why {
            out.push(ArgBreak {
                path: a.path.to_string(),
                rule,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(path: &str, r: ArgRule) -> CompiledArg {
        compile(path, &r).unwrap()
    }

    fn breaks(rules: &[CompiledArg], args: Json) -> Vec<String> {
        check(rules, &args)
            .into_iter()
            .map(|b| format!("{}: {}", b.path, b.rule))
            .collect()
    }

    #[test]
    fn each_kind_of_rule() {
        let rules = [
            rule(
                "limit",
                ArgRule {
                    min: Some(1.0),
                    max: Some(50.0),
                    ..ArgRule::default()
                },
            ),
            rule(
                "status",
                ArgRule {
                    one_of: Some(vec![json!("open"), json!("closed")]),
                    ..ArgRule::default()
                },
            ),
            rule(
                "query",
                ArgRule {
                    required: true,
                    max_len: Some(10),
                    pattern: Some("[a-z ]+".into()),
                    ..ArgRule::default()
                },
            ),
            rule(
                "filter.owner",
                ArgRule {
                    forbidden: true,
                    ..ArgRule::default()
                },
            ),
            rule(
                "items.*.sku",
                ArgRule {
                    pattern: Some("[A-Z]{3}".into()),
                    ..ArgRule::default()
                },
            ),
        ];
        assert!(breaks(
            &rules,
            json!({ "query": "refund", "limit": 5, "status": "open" })
        )
        .is_empty());
        assert_eq!(
            breaks(&rules, json!({ "query": "refund", "limit": 51 })),
            ["limit: 51 is above max 50"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": "a", "limit": 0.5 })),
            ["limit: 0.5 is below min 1"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": "a", "limit": "5" })),
            ["limit: must be a number"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": "a", "status": "OPEN" })),
            ["status: is not one of the allowed values"]
        );
        assert_eq!(
            breaks(&rules, json!({ "limit": 1 })),
            ["query: is required"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": "DROP" })),
            ["query: does not match the pattern"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": "abcdefghijk" })),
            ["query: is 11 long, more than max_len 10"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": 7 })),
            ["query: must be a string (it has a pattern)"]
        );
        assert_eq!(
            breaks(&rules, json!({ "query": "a", "filter": { "owner": "me" } })),
            ["filter.owner: is not allowed"]
        );
        // A null is there: forbidden all the same.
        assert_eq!(
            breaks(&rules, json!({ "query": "a", "filter": { "owner": null } })),
            ["filter.owner: is not allowed"]
        );
        assert_eq!(
            breaks(
                &rules,
                json!({ "query": "a", "items": [{ "sku": "ABC" }, { "sku": "abc" }] })
            ),
            ["items.*.sku: does not match the pattern"]
        );
        // Not an object at all: the required argument is missing.
        assert_eq!(breaks(&rules, json!(["query"])), ["query: is required"]);
    }

    #[test]
    fn numbers_compare_by_value_and_patterns_are_whole() {
        let r = [rule(
            "n",
            ArgRule {
                one_of: Some(vec![json!(1), json!(2.5)]),
                ..ArgRule::default()
            },
        )];
        assert!(breaks(&r, json!({ "n": 1.0 })).is_empty());
        assert!(breaks(&r, json!({ "n": 2.5 })).is_empty());
        assert_eq!(
            breaks(&r, json!({ "n": "1" })).len(),
            1,
            "a string is not the number"
        );
        let p = [rule(
            "s",
            ArgRule {
                pattern: Some("ab".into()),
                ..ArgRule::default()
            },
        )];
        assert_eq!(breaks(&p, json!({ "s": "xaby" })).len(), 1, "anchored");
        let arr = [rule(
            "tags",
            ArgRule {
                max_len: Some(2),
                ..ArgRule::default()
            },
        )];
        assert_eq!(
            breaks(&arr, json!({ "tags": [1, 2, 3] })),
            ["tags: is 3 long, more than max_len 2"]
        );
        // max_len counts characters, not bytes.
        let chars = [rule(
            "s",
            ArgRule {
                max_len: Some(3),
                ..ArgRule::default()
            },
        )];
        assert!(breaks(&chars, json!({ "s": "äöü" })).is_empty());
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("a.*.b").unwrap(),
            [Seg::Key("a".into()), Seg::Any, Seg::Key("b".into())]
        );
        for bad in ["", ".a", "a.", "a..b", "a b", "a.[0]", "a/b"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
