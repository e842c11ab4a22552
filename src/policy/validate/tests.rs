//! One test per validation rule: the specific message, and the line and column it points at.

use crate::policy::{compile_str, BundleError};

const CONTRACT: &str = include_str!("../../../examples/contract/bundle.yaml");

fn errors(text: &str) -> Vec<BundleError> {
    compile_str("b.yaml", text).expect_err("bundle should be refused")
}

/// Compile the contract bundle plus `extra` documents; expect exactly one error containing
/// `needle`, and return it.
fn one_error(extra: &str, needle: &str) -> BundleError {
    let text = format!("{CONTRACT}---\n{extra}");
    let errs = errors(&text);
    let hits: Vec<&BundleError> = errs.iter().filter(|e| e.message.contains(needle)).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one error with `{needle}`, got {errs:#?}"
    );
    assert_eq!(errs.len(), 1, "unexpected extra errors: {errs:#?}");
    hits[0].clone()
}

/// The 1-based line in the combined bundle of the `n`th line of `extra`.
fn line_of_extra(n: usize) -> usize {
    CONTRACT.lines().count() + 1 + n
}

fn policy(body: &str) -> String {
    format!("apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p900, tenant: acme }}\nspec:\n{body}")
}

#[test]
fn the_contract_bundle_is_valid() {
    let snap = compile_str("bundle.yaml", CONTRACT).unwrap();
    assert!(snap.hash().starts_with("sha256:"));
    assert_eq!(snap.active_per_channel(), [1, 1, 1, 1]);
}

#[test]
fn duplicate_ids_point_at_the_second_and_name_the_first() {
    let e = one_error(
        "apiVersion: warden/v1\nkind: Policy\nmetadata: { id: p100-llm, tenant: acme }\nspec:\n  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n",
        "duplicate Policy id `p100-llm`",
    );
    assert_eq!(e.pos.line, line_of_extra(3));
    assert_eq!(e.path, "metadata.id");
    assert!(
        e.message.contains("first defined at b.yaml:"),
        "{}",
        e.message
    );
    // Same connector id in another tenant is fine; in the same tenant it is not.
    one_error(
        "apiVersion: warden/v1\nkind: KnowledgePlane\nmetadata: { id: crm, tenant: acme }\nspec: { sensitivity: public }\n",
        "duplicate KnowledgePlane id `crm` in tenant `acme`",
    );
    let ok = format!("{CONTRACT}---\napiVersion: warden/v1\nkind: KnowledgePlane\nmetadata: {{ id: crm, tenant: globex }}\nspec: {{ sensitivity: public }}\n");
    compile_str("b.yaml", &ok).unwrap();
}

#[test]
fn dangling_references() {
    let e = one_error(
        &policy("  status: active\n  scope: { all_runs: true }\n  match: { channel: http, connectors: [nope] }\n  effect: allow\n"),
        "unknown connector `nope`",
    );
    assert_eq!(e.path, "spec.match.connectors[0]");
    assert_eq!(e.pos.line, line_of_extra(7));
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: sql, templates: [nope] }\n  effect: allow\n"),
        "unknown template `nope`",
    );
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: http, planes: [nope] }\n  effect: allow\n"),
        "unknown plane `nope`",
    );
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: llm, models: [gpt-9] }\n  effect: allow\n"),
        "unknown model `gpt-9`",
    );
    one_error(
        "apiVersion: warden/v1\nkind: SqlTemplate\nmetadata: { id: t2, tenant: acme }\nspec:\n  connector: nope\n  statement: SELECT 1\n",
        "unknown connector `nope`",
    );
}

#[test]
fn closed_tool_lists_make_unknown_tools_dangling() {
    // Registering one tool for `tickets` closes its list: other names become unknown.
    let tool = "apiVersion: warden/v1\nkind: McpTool\nmetadata: { id: search_tickets, tenant: acme }\nspec: { connector: tickets }\n";
    let e = one_error(tool, "unknown tool `get_ticket`");
    assert_eq!(e.path, "spec.match.tools[1]");
}

#[test]
fn cross_tenant_references_fail_hard() {
    let globex = "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: gx-api, tenant: globex }\nspec:\n  type: http\n  plane: web\n  http: { base_url: \"http://127.0.0.1:1\", allow: [ { methods: [GET], paths: [\"/*\"] } ] }\n---\n";
    let e = one_error(
        &format!("{globex}{}", policy("  scope: { all_runs: true }\n  match: { channel: http, connectors: [gx-api] }\n  effect: allow\n")),
        "cross-tenant reference: connector `gx-api` belongs to tenant `globex`",
    );
    assert!(e.message.contains("INV-003"));
    one_error(
        &policy("  scope: { tenants: [globex] }\n  match: { channel: llm }\n  effect: allow\n"),
        "cross-tenant scope",
    );
    one_error(
        "apiVersion: warden/v1\nkind: SqlTemplate\nmetadata: { id: t2, tenant: globex }\nspec:\n  connector: crm-db\n  statement: SELECT 1\n",
        "cross-tenant reference: connector `crm-db` belongs to tenant `acme`",
    );
}

#[test]
fn sql_templates_are_parsed_not_pattern_matched() {
    let t = |stmt: &str, params: &str| {
        format!("apiVersion: warden/v1\nkind: SqlTemplate\nmetadata: {{ id: t2, tenant: acme }}\nspec:\n  connector: crm-db\n  statement: \"{stmt}\"\n  params: {params}\n")
    };
    let e = one_error(
        &t(
            "SELECT * FROM c WHERE id = :id AND k = :key",
            "{ key: int }",
        ),
        "does not declare",
    );
    assert_eq!(e.path, "spec.statement");
    assert_eq!(e.pos.line, line_of_extra(6));
    one_error(
        &t("SELECT * FROM c WHERE id = :id", "{ id: int, key: int }"),
        "declares `key`",
    );
    one_error(
        &t("SELECT 1 FROM c WHERE id = :id; SELECT 2", "{ id: int }"),
        "exactly one is allowed",
    );
    one_error(
        &t("DELETE FROM c WHERE id = :id", "{ id: int }"),
        "read-only",
    );
    one_error(&t("SELECT * FROM c WHERE", "{}"), "does not parse");
}

#[test]
fn bad_limits() {
    let lim = |l: &str| {
        policy(&format!("  scope: {{ all_runs: true }}\n  match: {{ channel: llm }}\n  effect: allow\n  limits:\n    - {l}\n"))
    };
    let e = one_error(
        &lim("{ metric: output_tokens, window: 90x, max: 10 }"),
        "bad window `90x`",
    );
    assert_eq!(e.path, "spec.limits[0].window");
    assert_eq!(e.pos.line, line_of_extra(9));
    one_error(
        &lim("{ metric: output_tokens, window: run, max: 0 }"),
        "max must be greater than zero",
    );
    one_error(
        &lim("{ metric: output_tokens, window: run, max: -5 }"),
        "max must be greater than zero",
    );
    one_error(
        &lim("{ metric: output_tokens, window: run, max: 2.5 }"),
        "whole number",
    );
    one_error(
        &lim("{ metric: output_tokens, window: run, max: 10, near: [0.8, 1.2] }"),
        "near tier 1.2 is outside (0, 1)",
    );
    one_error(
        &lim("{ metric: output_tokens, window: run, max: 10, near: [0] }"),
        "outside (0, 1)",
    );
    one_error(
        &lim("{ metric: vibes, window: run, max: 10 }"),
        "unknown variant `vibes`",
    );
    one_error(
        &lim("{ metric: queries, window: run, max: 10 }"),
        "does not apply to channel llm",
    );
    one_error(
        &lim("{ metric: requests, window: 1m, max: 10, on_breach: continue }"),
        "makes the limit do nothing",
    );
}

#[test]
fn unknown_channel_and_wrong_channel_fields() {
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: ftp }\n  effect: allow\n"),
        "unknown variant `ftp`",
    );
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: http, models: [gpt-4o-mini] }\n  effect: allow\n"), "only applies to channel llm");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: sql, connectors: [weather] }\n  effect: allow\n"), "is of type http");
}

#[test]
fn scope_effect_and_detectors() {
    one_error(
        &policy("  scope: {}\n  match: { channel: llm }\n  effect: allow\n"),
        "empty scope",
    );
    one_error(&policy("  scope: { all_runs: true, agents: [a] }\n  match: { channel: llm }\n  effect: allow\n"), "one or the other");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  action: stop\n"), "`action` is for deny");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: deny\n  action: warn\n"), "a deny must refuse");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: deny\n  max_tokens: 5\n"), "no effect on a deny");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: http }\n  effect: allow\n  max_tokens: 5\n"), "only applies to channel llm");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  detectors: { grounding: { min_score: 1.5 } }\n"), "min_score must be between 0 and 1");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  detectors: { pii: { on_match: continue } }\n"), "makes the detector do nothing");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  detectors: { grounding: { min_score: 0.5, on_low: continue } }\n"), "makes the detector do nothing");
}

#[test]
fn inline_credentials_are_refused() {
    let e = one_error(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: llm2, tenant: acme }\nspec:\n  type: llm\n  plane: p\n  llm:\n    base_url: \"https://api.example.com/v1\"\n    api_key: sk-live-123456\n    models: { m: { input_usd_per_mtok: 1, output_usd_per_mtok: 2 } }\n",
        "credential written inline",
    );
    assert_eq!(e.path, "spec.llm.api_key");
    assert_eq!(e.pos.line, line_of_extra(9));
    one_error(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: db2, tenant: acme }\nspec:\n  type: sql\n  plane: p\n  sql: { url: \"postgres://u:secret@127.0.0.1/db\" }\n",
        "credential written inline",
    );
}

#[test]
fn connector_shape_rules() {
    one_error(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: h2, tenant: acme }\nspec:\n  type: http\n  plane: p\n  http: { base_url: \"ftp://x\", allow: [ { methods: [GET], paths: [\"/a\"] } ] }\n",
        "is not an http(s) URL",
    );
    one_error(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: h2, tenant: acme }\nspec:\n  type: http\n  plane: p\n  http: { base_url: \"http://x\", allow: [ { methods: [FETCH], paths: [\"/a\"] } ] }\n",
        "unknown HTTP method `FETCH`",
    );
    one_error(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: h2, tenant: acme }\nspec:\n  type: http\n  plane: p\n  http: { base_url: \"http://x\", allow: [ { methods: [GET], paths: [\"/a/../b\"] } ] }\n",
        "must be normalised",
    );
    one_error(
        "apiVersion: warden/v1\nkind: Connector\nmetadata: { id: h2, tenant: acme }\nspec:\n  type: http\n  plane: p\n",
        "needs a `http` block",
    );
}

#[test]
fn platform_tenant_is_for_policies_only() {
    one_error(
        "apiVersion: warden/v1\nkind: KnowledgePlane\nmetadata: { id: pl, tenant: \"*\" }\nspec: { sensitivity: public }\n",
        "only for policies",
    );
    one_error(
        "apiVersion: warden/v1\nkind: Policy\nmetadata: { id: p0, tenant: \"*\" }\nspec:\n  scope: { all_runs: true }\n  match: { channel: http, connectors: [weather] }\n  effect: deny\n",
        "cannot name tenant-owned connectors",
    );
}

#[test]
fn secrets_detector_is_validated_with_locations() {
    let e = one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  detectors: { secrets: { kinds: [openai_key, magic_key] } }\n"),
        "magic_key",
    );
    assert_eq!(e.pos.line, line_of_extra(8), "{e:?}");
    assert!(e.pos.col > 1, "{e:?}");
    assert!(
        e.message.contains("openai_key"),
        "the known kinds are listed: {e:?}"
    );
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  detectors: { secrets: { on_match: continue } }\n"), "makes the detector do nothing");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: deny\n  detectors: { secrets: {} }\n"), "no effect on a deny");
    one_error(&policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  detectors: { secrets: { on_match: stop, pattern: x } }\n"), "pattern");
    let ok = format!("{CONTRACT}---\n{}", policy("  scope: { all_runs: true }\n  match: { channel: http }\n  effect: allow\n  detectors: { secrets: { kinds: [jwt, private_key, bearer_token] } }\n"));
    let snap = compile_str("b.yaml", &ok).unwrap();
    let p = snap.policy_by_id("p900").unwrap();
    assert_eq!(
        p.secrets,
        Some((
            crate::policy::model::Action::Stop,
            crate::policy::model::SecretKind::Jwt.bit()
                | crate::policy::model::SecretKind::PrivateKey.bit()
                | crate::policy::model::SecretKind::BearerToken.bit()
        ))
    );
}

fn template(params: &str, statement: &str) -> String {
    format!(
        "apiVersion: warden/v1\nkind: SqlTemplate\nmetadata: {{ id: t900, tenant: acme }}\nspec:\n  connector: crm-db\n  statement: \"{statement}\"\n  params: {params}\n"
    )
}

#[test]
fn parameter_declarations_short_and_long() {
    let text = format!(
        "{CONTRACT}---\n{}",
        template(
            "{ a: int, b: bigint, c: float, d: numeric, e: bool, f: { type: text, max_len: 8, pattern: \"[a-z]+\" }, g: uuid, h: date, i: timestamp, j: timestamptz, k: { type: enum, values: [x, y] }, l: json, m: { type: \"int[]\", max_items: 3 }, n: { type: text, nullable: true } }",
            "SELECT 1 WHERE :a = 1 AND :b = 1 AND :c = 1 AND :d = 1 AND :e AND :f = '' AND :g IS NULL AND :h IS NULL AND :i IS NULL AND :j IS NULL AND :k = '' AND :l IS NULL AND :m IS NULL AND :n IS NULL"
        )
    );
    let snap = compile_str("b.yaml", &text).unwrap();
    let t = snap.template("acme", "t900").unwrap();
    let by = |n: &str| t.params.iter().find(|p| p.name == n).unwrap();
    assert_eq!(by("m").spec.type_name(), "int[]");
    assert_eq!(by("m").spec.max_items, Some(3));
    assert!(by("f").pattern.as_ref().unwrap().is_match("abc"));
    assert!(
        !by("f").pattern.as_ref().unwrap().is_match("abc1"),
        "anchored"
    );
    assert!(by("n").spec.nullable);
    // The short form and the long form without rules hash alike.
    let long = CONTRACT.replace("params: { id: int }", "params: { id: { type: int } }");
    assert_ne!(long, CONTRACT);
    assert_eq!(
        compile_str("b.yaml", &long).unwrap().hash(),
        compile_str("b.yaml", CONTRACT).unwrap().hash()
    );
}

#[test]
fn parameter_rules_apply_to_their_types() {
    for (params, needle) in [
        ("{ id: integer }", "unknown parameter type `integer`"),
        (
            "{ id: { type: int, max_len: 3 } }",
            "max_len applies to text parameters only",
        ),
        (
            "{ id: { type: int, pattern: \"x\" } }",
            "pattern applies to text parameters only",
        ),
        (
            "{ id: { type: text, pattern: \"(\" } }",
            "pattern does not compile",
        ),
        ("{ id: { type: enum } }", "an enum needs `values`"),
        (
            "{ id: { type: enum, values: [a, a] } }",
            "enum value `a` is listed twice",
        ),
        (
            "{ id: { type: text, values: [a] } }",
            "values apply to enum parameters only",
        ),
        (
            "{ id: { type: int, max_items: 2 } }",
            "max_items applies to arrays only",
        ),
        (
            "{ id: { type: \"int[]\", max_items: 0 } }",
            "max_items must be at least 1",
        ),
        (
            "{ id: { type: text, max_len: 0 } }",
            "max_len must be at least 1",
        ),
        ("{ id: { type: text, size: 3 } }", "size"),
    ] {
        one_error(&template(params, "SELECT :id"), needle);
    }
}

#[test]
fn the_rows_metric_is_for_sql_only() {
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  limits:\n    - { metric: rows, window: run, max: 10 }\n"),
        "metric rows does not apply to channel llm",
    );
    let ok = format!(
        "{CONTRACT}---\n{}",
        policy("  scope: { all_runs: true }\n  match: { channel: sql, templates: [customer_by_id] }\n  effect: allow\n  limits:\n    - { metric: rows, window: 1h, max: 1000, on_breach: stop }\n")
    );
    compile_str("b.yaml", &ok).unwrap();
}

#[test]
fn a_sql_pool_size_is_bounded() {
    for n in ["0", "257"] {
        let e = one_error(
            &format!("apiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: db2, tenant: acme }}\nspec:\n  type: sql\n  plane: p\n  sql: {{ url: env:DB2, pool_size: {n} }}\n"),
            "pool_size must be between 1 and 256",
        );
        assert_eq!(e.path, "spec.sql.pool_size");
    }
    let ok = format!("{CONTRACT}---\napiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: db2, tenant: acme }}\nspec:\n  type: sql\n  plane: p\n  sql: {{ url: env:DB2, pool_size: 32 }}\n");
    let snap = compile_str("b.yaml", &ok).unwrap();
    let c = snap.connector("acme", "db2").unwrap();
    assert_eq!(c.spec.sql.as_ref().unwrap().pool_size(), 32);
    // Unset, it is left out of the canonical form: the contract's hash does not move.
    let contract = compile_str("b.yaml", CONTRACT).unwrap();
    let sql = contract
        .connector("acme", "crm-db")
        .unwrap()
        .spec
        .sql
        .clone()
        .unwrap();
    assert_eq!((sql.pool_size, sql.pool_size()), (None, 8));
    assert!(!serde_json::to_string(&sql).unwrap().contains("pool_size"));
}

fn mcp_policy(arguments: &str) -> String {
    policy(&format!(
        "  scope: {{ all_runs: true }}\n  match: {{ channel: mcp, connectors: [tickets], tools: [search_tickets] }}\n  effect: allow\n  arguments:\n{arguments}"
    ))
}

#[test]
fn argument_rules() {
    for (args, needle) in [
        (
            "    \"a..b\": { required: true }\n",
            "each segment is a key",
        ),
        ("    q: {}\n", "the rule asks nothing"),
        (
            "    q: { forbidden: true, max_len: 3 }\n",
            "`forbidden` cannot be combined",
        ),
        ("    n: { min: 5, max: 1 }\n", "min 5 is above max 1"),
        ("    q: { pattern: \"(\" }\n", "pattern does not compile"),
        ("    q: { enum: [] }\n", "enum must list at least one value"),
        (
            "    q: { enum: [{ a: 1 }] }\n",
            "enum values are strings, numbers or booleans",
        ),
    ] {
        let e = one_error(&mcp_policy(args), needle);
        assert!(e.path.starts_with("spec.arguments."), "{}", e.path);
    }
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: http, connectors: [weather] }\n  effect: allow\n  arguments:\n    q: { required: true }\n"),
        "`arguments` only applies to channel mcp",
    );
    one_error(
        &policy("  scope: { all_runs: true }\n  match: { channel: mcp, connectors: [tickets] }\n  effect: deny\n  arguments:\n    q: { required: true }\n"),
        "`arguments` has no effect on a deny policy",
    );
    // Unknown fields of a rule are refused like everywhere.
    assert!(errors(&format!(
        "{CONTRACT}---\n{}",
        mcp_policy("    q: { maximum: 3 }\n")
    ))
    .iter()
    .any(|e| e.message.contains("unknown field")));
    // A good one compiles, and leaves the hash of a bundle without any alone.
    let ok = format!(
        "{CONTRACT}---\n{}",
        mcp_policy("    query: { required: true, max_len: 50, pattern: \"[a-z ]+\" }\n    limit: { min: 1, max: 20 }\n    \"filter.*.owner\": { forbidden: true }\n    status: { enum: [open, closed, 3, true] }\n")
    );
    let snap = compile_str("b.yaml", &ok).unwrap();
    assert_eq!(
        snap.policies()
            .iter()
            .find(|p| &*p.id == "p900")
            .unwrap()
            .arguments
            .len(),
        4
    );
}

#[test]
fn argument_rules_are_checked_against_a_declared_input_schema() {
    let tool = "apiVersion: warden/v1\nkind: McpTool\nmetadata: { id: search_tickets, tenant: acme }\nspec:\n  connector: tickets\n  input_schema:\n    type: object\n    properties:\n      query: { type: string }\n      limit: { type: integer }\n      tags: { type: array, items: { type: object, properties: { name: { type: string } } } }\n    additionalProperties: false\n---\napiVersion: warden/v1\nkind: McpTool\nmetadata: { id: get_ticket, tenant: acme }\nspec: { connector: tickets }\n---\n";
    let with = |args: &str| format!("{tool}{}", mcp_policy(args));
    one_error(
        &with("    color: { required: true }\n"),
        "has no property `color`",
    );
    one_error(
        &with("    query: { max: 3 }\n"),
        "min/max judge numbers; the schema says string",
    );
    one_error(
        &with("    limit: { pattern: \"[0-9]+\" }\n"),
        "pattern judges strings; the schema says integer",
    );
    one_error(
        &with("    tags.*.size: { max: 3 }\n"),
        "has no property `size`",
    );
    let ok = format!("{CONTRACT}---\n{}", with("    query: { max_len: 9 }\n    limit: { max: 9 }\n    tags: { max_len: 3 }\n    tags.*.name: { pattern: \"[a-z]+\" }\n"));
    compile_str("b.yaml", &ok).unwrap();
    // A schema that is not an object schema is refused where it is written.
    let e = one_error(
        "apiVersion: warden/v1\nkind: McpTool\nmetadata: { id: get_ticket, tenant: acme }\nspec:\n  connector: tickets\n  input_schema: { type: string }\n---\napiVersion: warden/v1\nkind: McpTool\nmetadata: { id: search_tickets, tenant: acme }\nspec: { connector: tickets }\n",
        "input_schema must be a JSON Schema of `type: object`",
    );
    assert_eq!(e.path, "spec.input_schema");
}
