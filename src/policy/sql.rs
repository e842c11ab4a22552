//! SQL template checks: one read-only statement whose named parameters match its declaration.
//!
//! Templates are parsed with `sqlparser` (PostgreSQL dialect), never matched with regexes. Named
//! parameters (`:id`) are found by the tokenizer — so `':id'` in a string literal, `--:id` in a
//! comment and `x::int` casts are not parameters — and rewritten to positional `$1…$n`, which is
//! also the form the SQL connector binds (values are bound, never interpolated).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use serde::Serialize;
use sqlparser::ast::{visit_expressions, visit_statements, Expr, Query, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// A template ready for binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlPlan {
    /// The statement with `:name` replaced by `$1…$n`.
    pub positional: String,
    /// Parameter names in `$n` order.
    pub params: Vec<String>,
}

/// Functions that have side effects or reach outside the database even inside a read-only
/// transaction; a template calling one is refused.
const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "set_config",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "dblink",
    "dblink_exec",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "nextval",
    "setval",
    "txid_current",
    "pg_notify",
];

/// A `text` parameter's `pattern`, anchored so the whole value must match. The `regex` crate
/// runs in linear time (no backtracking), and its compiled size is capped.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// Check a template statement against its declared parameter names.
pub fn check(statement: &str, declared: &BTreeSet<&str>) -> Result<SqlPlan, Vec<String>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, statement)
        .tokenize()
        .map_err(|e| vec![format!("statement does not parse: {e}")])?;

    // Rewrite `:name` → `$n`.
    let mut params: Vec<String> = Vec::new();
    let mut out = String::with_capacity(statement.len());
    let mut i = 0;
    while i < tokens.len() {
        if let (Token::Colon, Some(Token::Word(w))) = (&tokens[i], tokens.get(i + 1)) {
            if w.quote_style.is_none() {
                let name = w.value.clone();
                let n = match params.iter().position(|p| *p == name) {
                    Some(n) => n + 1,
                    None => {
                        params.push(name);
                        params.len()
                    }
                };
                out.push('$');
                out.push_str(&n.to_string());
                i += 2;
                continue;
            }
        }
        out.push_str(&tokens[i].to_string());
        i += 1;
    }

    let mut errors = Vec::new();
    let used: BTreeSet<&str> = params.iter().map(String::as_str).collect();
    for name in used.difference(declared) {
        errors.push(format!(
            "statement uses parameter `:{name}` that `params` does not declare"
        ));
    }
    for name in declared.difference(&used) {
        errors.push(format!(
            "`params` declares `{name}` but the statement never uses `:{name}`"
        ));
    }
    if tokens.iter().any(|t| matches!(t, Token::Placeholder(_))) {
        errors.push("use named parameters (`:name`), not positional placeholders".into());
    }

    let statements = match Parser::parse_sql(&dialect, &out) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("statement does not parse: {e}"));
            return Err(errors);
        }
    };
    match statements.as_slice() {
        [] => errors.push("statement is empty".into()),
        [one] => read_only(one, &mut errors),
        many => errors.push(format!(
            "template holds {} statements; exactly one is allowed",
            many.len()
        )),
    }
    if errors.is_empty() {
        Ok(SqlPlan {
            positional: out.trim().trim_end_matches(';').trim_end().to_string(),
            params,
        })
    } else {
        Err(errors)
    }
}

fn read_only(statement: &Statement, errors: &mut Vec<String>) {
    let Statement::Query(query) = statement else {
        errors.push(format!(
            "only read-only SELECT or WITH queries are allowed, not `{}`",
            first_words(&statement.to_string())
        ));
        return;
    };
    query_read_only(query, errors);
    // Belt and braces: any statement nested anywhere (data-modifying CTEs and the like).
    let mut nested = 0usize;
    let _ = visit_statements(statement, |_s| {
        nested += 1;
        ControlFlow::<()>::Continue(())
    });
    if nested > 1 && errors.is_empty() {
        errors.push("statement nests another statement; only plain queries are allowed".into());
    }
    let _ = visit_expressions(statement, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            let base = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
            if FORBIDDEN_FUNCTIONS.contains(&base) {
                errors.push(format!(
                    "function `{base}` has side effects and is not allowed in templates"
                ));
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

fn query_read_only(q: &Query, errors: &mut Vec<String>) {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            query_read_only(&cte.query, errors);
        }
    }
    if !q.locks.is_empty() {
        errors.push("row locking (FOR UPDATE / FOR SHARE) is not allowed in templates".into());
    }
    set_expr_read_only(&q.body, errors);
}

fn set_expr_read_only(body: &SetExpr, errors: &mut Vec<String>) {
    match body {
        SetExpr::Select(s) => {
            if s.into.is_some() {
                errors.push("SELECT … INTO writes a table; not allowed in templates".into());
            }
        }
        SetExpr::Query(q) => query_read_only(q, errors),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_read_only(left, errors);
            set_expr_read_only(right, errors);
        }
        SetExpr::Values(_) | SetExpr::Table(_) => {}
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            errors.push("data-modifying statement inside a query; templates are read-only".into());
        }
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(names: &[&'static str]) -> BTreeSet<&'static str> {
        names.iter().copied().collect()
    }

    #[test]
    fn named_params_become_positional() {
        let plan = check(
            "SELECT id, name FROM customers WHERE id = :id AND tier = :tier OR id = :id",
            &declared(&["id", "tier"]),
        )
        .unwrap();
        assert_eq!(plan.params, vec!["id", "tier"]);
        assert!(plan.positional.contains("id = $1 AND tier = $2 OR id = $1"));
    }

    #[test]
    fn literals_comments_and_casts_are_not_params() {
        let plan = check(
            "SELECT ':nope' AS a, x::int FROM t WHERE id = :id -- :alsonot",
            &declared(&["id"]),
        )
        .unwrap();
        assert_eq!(plan.params, vec!["id"]);
    }

    #[test]
    fn param_mismatch_both_ways() {
        let errs = check(
            "SELECT * FROM t WHERE a = :a AND b = :b",
            &declared(&["a", "c"]),
        )
        .unwrap_err();
        assert!(errs
            .iter()
            .any(|e| e.contains("`:b`") && e.contains("does not declare")));
        assert!(errs.iter().any(|e| e.contains("declares `c`")));
    }

    #[test]
    fn refuses_writes_and_multiple_statements() {
        for (sql, needle) in [
            ("DELETE FROM t WHERE id = :id", "read-only"),
            ("UPDATE t SET a = 1 WHERE id = :id", "read-only"),
            (
                "SELECT 1 FROM t WHERE id = :id; DROP TABLE t",
                "2 statements",
            ),
            (
                "WITH d AS (DELETE FROM t WHERE id = :id RETURNING *) SELECT * FROM d",
                "data-modifying",
            ),
            ("SELECT * INTO t2 FROM t WHERE id = :id", "INTO"),
            ("SELECT * FROM t WHERE id = :id FOR UPDATE", "locking"),
            ("SELECT pg_sleep(:id)", "pg_sleep"),
            ("SELECT * FROM t WHERE id = $1", "positional"),
        ] {
            let id = declared(&["id"]);
            let errs = check(sql, &id).unwrap_err();
            assert!(
                errs.iter().any(|e| e.contains(needle)),
                "{sql}: expected `{needle}` in {errs:?}"
            );
        }
    }

    #[test]
    fn with_and_union_are_fine() {
        check(
            "WITH c AS (SELECT id FROM customers WHERE tier = :tier) SELECT id FROM c UNION SELECT 1",
            &declared(&["tier"]),
        )
        .unwrap();
    }
}
