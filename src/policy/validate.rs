//! Semantic checks over all documents of a bundle, each with its own message (`docs/policy.md`; INV-003).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::load::Loaded;
use super::model::*;
use super::sql::{self, SqlPlan};
use super::yaml::PathSeg;
use super::BundleError;

/// What validation learned that compilation reuses.
#[derive(Debug, Default)]
pub struct Checked {
    /// SQL plans by document index.
    pub sql_plans: HashMap<usize, SqlPlan>,
}

fn p(parts: &[&str]) -> Vec<PathSeg> {
    parts
        .iter()
        .map(|s| PathSeg::Key((*s).to_string()))
        .collect()
}

fn pi(parts: &[&str], index: usize) -> Vec<PathSeg> {
    let mut v = p(parts);
    v.push(PathSeg::Index(index));
    v
}

fn pik(parts: &[&str], index: usize, key: &str) -> Vec<PathSeg> {
    let mut v = pi(parts, index);
    v.push(PathSeg::Key(key.to_string()));
    v
}

/// Names of one kind: tenant → id → document index.
type Names = HashMap<String, HashMap<String, usize>>;

struct Index<'a> {
    docs: &'a [Loaded],
    connectors: Names,
    planes: Names,
    templates: Names,
    tools: Names,
    /// Planes that exist only because a connector names them: tenant → plane.
    implicit_planes: HashMap<String, HashSet<String>>,
}

impl Index<'_> {
    /// The declared `input_schema` of tool `id` of `tenant`, if its McpTool has one.
    fn tool_schema(&self, tenant: &str, id: &str) -> Option<&serde_json::Value> {
        let i = *self.tools.get(tenant)?.get(id)?;
        match &self.docs[i].doc {
            Doc::McpTool(t) => t.spec.input_schema.as_ref(),
            _ => None,
        }
    }

    fn connector(&self, tenant: &str, id: &str) -> Option<&ConnectorSpec> {
        let i = *self.connectors.get(tenant)?.get(id)?;
        match &self.docs[i].doc {
            Doc::Connector(c) => Some(&c.spec),
            _ => None,
        }
    }

    fn owner_elsewhere(names: &Names, tenant: &str, id: &str) -> Option<String> {
        let mut owners: Vec<&String> = names
            .iter()
            .filter(|(t, ids)| t.as_str() != tenant && ids.contains_key(id))
            .map(|(t, _)| t)
            .collect();
        owners.sort();
        owners.first().map(|t| (*t).clone())
    }

    fn plane_exists(&self, tenant: &str, id: &str) -> bool {
        self.planes.get(tenant).is_some_and(|m| m.contains_key(id))
            || self
                .implicit_planes
                .get(tenant)
                .is_some_and(|s| s.contains(id))
    }
}

/// Validate every document; push one error per problem found.
pub fn validate(docs: &[Loaded], errors: &mut Vec<BundleError>) -> Checked {
    let mut checked = Checked::default();
    let mut index = Index {
        docs,
        connectors: Names::new(),
        planes: Names::new(),
        templates: Names::new(),
        tools: Names::new(),
        implicit_planes: HashMap::new(),
    };

    // Pass 1: identities and duplicates. Policy ids are unique across tenants (they order
    // decisions and name evidence); other ids are unique per kind and tenant.
    let mut policy_ids: HashMap<&str, usize> = HashMap::new();
    for (i, d) in docs.iter().enumerate() {
        let meta = d.doc.metadata();
        check_name(d, "id", &meta.id, errors);
        if meta.tenant != PLATFORM_TENANT {
            check_name(d, "tenant", &meta.tenant, errors);
        } else if d.doc.kind() != Kind::Policy {
            errors.push(d.error(
                &p(&["metadata", "tenant"]),
                format!(
                    "tenant `*` (platform-wide) is only for policies; a {} belongs to one tenant",
                    d.doc.kind().as_str()
                ),
            ));
        }
        let first = match &d.doc {
            Doc::Policy(_) => policy_ids.insert(&meta.id, i),
            Doc::Connector(_) => insert(&mut index.connectors, meta, i),
            Doc::KnowledgePlane(_) => insert(&mut index.planes, meta, i),
            Doc::SqlTemplate(_) => insert(&mut index.templates, meta, i),
            Doc::McpTool(_) => insert(&mut index.tools, meta, i),
        };
        if let Some(first) = first {
            let f = &docs[first];
            let at = f.node.locate(&p(&["metadata", "id"]));
            errors.push(d.error(
                &p(&["metadata", "id"]),
                format!(
                    "duplicate {} id `{}`{} (first defined at {}:{}:{})",
                    d.doc.kind().as_str(),
                    meta.id,
                    if d.doc.kind() == Kind::Policy {
                        String::new()
                    } else {
                        format!(" in tenant `{}`", meta.tenant)
                    },
                    f.file,
                    at.line,
                    at.col
                ),
            ));
        }
    }
    for d in docs {
        if let Doc::Connector(c) = &d.doc {
            index
                .implicit_planes
                .entry(c.metadata.tenant.clone())
                .or_default()
                .insert(c.spec.plane.clone());
        }
    }

    // Pass 2: each document against the index.
    for (i, d) in docs.iter().enumerate() {
        match &d.doc {
            Doc::Connector(c) => connector(d, &c.spec, &index, errors),
            Doc::KnowledgePlane(_) => {}
            Doc::SqlTemplate(t) => {
                if let Some(plan) = template(d, &t.spec, &index, errors) {
                    checked.sql_plans.insert(i, plan);
                }
            }
            Doc::McpTool(t) => {
                if let Some(schema) = &t.spec.input_schema {
                    let object = schema.get("type").and_then(|t| t.as_str()) == Some("object");
                    if !schema.is_object() || !object {
                        errors.push(d.error(
                            &p(&["spec", "input_schema"]),
                            "input_schema must be a JSON Schema of `type: object` (a tool's arguments are an object)",
                        ));
                    }
                }
                let path = p(&["spec", "connector"]);
                let found = reference(
                    d,
                    &path,
                    &t.spec.connector,
                    "connector",
                    &index.connectors,
                    errors,
                );
                if let Some(c) = found.and_then(|_| index.connector(d.tenant(), &t.spec.connector))
                {
                    if c.kind != Channel::Mcp {
                        errors.push(d.error(
                            &path,
                            format!(
                                "connector `{}` is of type {}; an McpTool needs an mcp connector",
                                t.spec.connector,
                                c.kind.as_str()
                            ),
                        ));
                    }
                }
            }
            Doc::Policy(pol) => policy(d, &pol.spec, &index, errors),
        }
    }
    checked
}

fn insert(names: &mut Names, meta: &Metadata, i: usize) -> Option<usize> {
    let ids = names.entry(meta.tenant.clone()).or_default();
    match ids.get(&meta.id) {
        Some(first) => Some(*first),
        None => {
            ids.insert(meta.id.clone(), i);
            None
        }
    }
}

fn check_name(d: &Loaded, field: &str, value: &str, errors: &mut Vec<BundleError>) {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        errors.push(d.error(
            &p(&["metadata", field]),
            format!("`{value}` is not a valid {field}: use 1–128 of A–Z a–z 0–9 - _ ."),
        ));
    }
}

/// Resolve a same-tenant reference; report dangling and cross-tenant ones. Returns the
/// document index when it resolves.
fn reference(
    d: &Loaded,
    path: &[PathSeg],
    id: &str,
    what: &str,
    names: &Names,
    errors: &mut Vec<BundleError>,
) -> Option<usize> {
    let tenant = d.tenant();
    if let Some(i) = names.get(tenant).and_then(|m| m.get(id)) {
        return Some(*i);
    }
    match Index::owner_elsewhere(names, tenant, id) {
        Some(owner) => errors.push(d.error(
            path,
            format!(
                "cross-tenant reference: {what} `{id}` belongs to tenant `{owner}`, not `{tenant}` (INV-003)"
            ),
        )),
        None => errors.push(d.error(path, format!("unknown {what} `{id}`"))),
    }
    None
}

/// A credential must be a reference the sidecar resolves, never the secret itself.
fn credential(d: &Loaded, path: &[PathSeg], value: &str, errors: &mut Vec<BundleError>) {
    let ok = if let Some(name) = value.strip_prefix("env:") {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    } else if let Some(file) = value.strip_prefix("file:") {
        !file.is_empty()
    } else {
        false
    };
    if !ok {
        errors.push(d.error(
            path,
            "credential written inline: use a reference, `env:NAME` or `file:PATH`",
        ));
    }
}

fn url(d: &Loaded, path: &[PathSeg], value: &str, errors: &mut Vec<BundleError>) {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains('@') && !r.contains(char::is_whitespace)
    });
    if !ok {
        errors.push(d.error(
            path,
            format!("`{value}` is not an http(s) URL with a host (and no user-info)"),
        ));
    }
}

const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn connector(d: &Loaded, c: &ConnectorSpec, index: &Index<'_>, errors: &mut Vec<BundleError>) {
    let blocks = [
        (Channel::Llm, c.llm.is_some()),
        (Channel::Http, c.http.is_some()),
        (Channel::Sql, c.sql.is_some()),
        (Channel::Mcp, c.mcp.is_some()),
    ];
    for (ch, present) in blocks {
        if ch == c.kind && !present {
            errors.push(d.error(
                &p(&["spec"]),
                format!("a connector of type {0} needs a `{0}` block", ch.as_str()),
            ));
        }
        if ch != c.kind && present {
            errors.push(d.error(
                &p(&["spec", ch.as_str()]),
                format!(
                    "`{}` block on a connector of type {}",
                    ch.as_str(),
                    c.kind.as_str()
                ),
            ));
        }
    }
    // A plane named here but declared only by another tenant is a cross-tenant reference.
    let tenant = d.tenant();
    if !index
        .planes
        .get(tenant)
        .is_some_and(|m| m.contains_key(&c.plane))
    {
        if let Some(owner) = Index::owner_elsewhere(&index.planes, tenant, &c.plane) {
            errors.push(d.error(
                &p(&["spec", "plane"]),
                format!(
                    "cross-tenant reference: plane `{}` belongs to tenant `{owner}`, not `{tenant}` (INV-003)",
                    c.plane
                ),
            ));
        }
    }
    if let Some(llm) = &c.llm {
        url(d, &p(&["spec", "llm", "base_url"]), &llm.base_url, errors);
        credential(d, &p(&["spec", "llm", "api_key"]), &llm.api_key, errors);
        if llm.models.is_empty() {
            errors.push(d.error(
                &p(&["spec", "llm", "models"]),
                "an LLM connector needs at least one model",
            ));
        }
        for (name, price) in &llm.models {
            let ok = [price.input_usd_per_mtok, price.output_usd_per_mtok]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0);
            if !ok {
                errors.push(d.error(
                    &p(&["spec", "llm", "models", name]),
                    "prices must be zero or positive",
                ));
            }
        }
        positive(
            d,
            &p(&["spec", "llm", "timeout_ms"]),
            llm.timeout_ms,
            errors,
        );
    }
    if let Some(http) = &c.http {
        url(d, &p(&["spec", "http", "base_url"]), &http.base_url, errors);
        if http.allow.is_empty() {
            errors.push(d.error(
                &p(&["spec", "http", "allow"]),
                "an HTTP connector needs at least one allow rule (nothing passes otherwise)",
            ));
        }
        for (i, rule) in http.allow.iter().enumerate() {
            if rule.methods.is_empty() {
                errors.push(d.error(
                    &pik(&["spec", "http", "allow"], i, "methods"),
                    "no methods listed",
                ));
            }
            for (j, m) in rule.methods.iter().enumerate() {
                if !HTTP_METHODS.contains(&m.as_str()) {
                    let mut path = pik(&["spec", "http", "allow"], i, "methods");
                    path.push(PathSeg::Index(j));
                    errors.push(d.error(
                        &path,
                        format!(
                            "unknown HTTP method `{m}` (use one of {})",
                            HTTP_METHODS.join(", ")
                        ),
                    ));
                }
            }
            if rule.paths.is_empty() {
                errors.push(d.error(
                    &pik(&["spec", "http", "allow"], i, "paths"),
                    "no paths listed",
                ));
            }
            for (j, pat) in rule.paths.iter().enumerate() {
                if let Err(msg) = path_pattern(pat) {
                    let mut path = pik(&["spec", "http", "allow"], i, "paths");
                    path.push(PathSeg::Index(j));
                    errors.push(d.error(&path, msg));
                }
            }
        }
        for (name, value) in &http.inject_headers {
            credential(
                d,
                &p(&["spec", "http", "inject_headers", name]),
                value,
                errors,
            );
        }
        positive(
            d,
            &p(&["spec", "http", "timeout_ms"]),
            http.timeout_ms,
            errors,
        );
        positive(
            d,
            &p(&["spec", "http", "max_request_bytes"]),
            http.max_request_bytes,
            errors,
        );
        positive(
            d,
            &p(&["spec", "http", "max_response_bytes"]),
            http.max_response_bytes,
            errors,
        );
    }
    if let Some(sql) = &c.sql {
        credential(d, &p(&["spec", "sql", "url"]), &sql.url, errors);
        if let Some(n) = sql.pool_size {
            if n == 0 || n > super::model::MAX_SQL_POOL {
                errors.push(d.error(
                    &p(&["spec", "sql", "pool_size"]),
                    format!(
                        "pool_size must be between 1 and {}",
                        super::model::MAX_SQL_POOL
                    ),
                ));
            }
        }
    }
    if let Some(mcp) = &c.mcp {
        url(d, &p(&["spec", "mcp", "url"]), &mcp.url, errors);
        for (name, value) in &mcp.inject_headers {
            credential(
                d,
                &p(&["spec", "mcp", "inject_headers", name]),
                value,
                errors,
            );
        }
    }
}

fn positive(d: &Loaded, path: &[PathSeg], v: u64, errors: &mut Vec<BundleError>) {
    if v == 0 {
        errors.push(d.error(path, "must be greater than zero"));
    }
}

/// Path patterns are normalised, absolute, and may end in `/*` (one or more segments).
pub fn path_pattern(pat: &str) -> Result<(), String> {
    if !pat.starts_with('/') {
        return Err(format!("path pattern `{pat}` must start with `/`"));
    }
    let body = pat.strip_suffix("/*").unwrap_or(pat);
    if body.contains('*') {
        return Err(format!(
            "path pattern `{pat}`: `*` is only allowed as a final `/*`"
        ));
    }
    if body.split('/').any(|s| s == ".." || s == ".") || body.contains("//") || body.contains('%') {
        return Err(format!(
            "path pattern `{pat}` must be normalised (no `.`, `..`, `//` or %-escapes)"
        ));
    }
    Ok(())
}

fn template(
    d: &Loaded,
    t: &SqlTemplateSpec,
    index: &Index<'_>,
    errors: &mut Vec<BundleError>,
) -> Option<SqlPlan> {
    if reference(
        d,
        &p(&["spec", "connector"]),
        &t.connector,
        "connector",
        &index.connectors,
        errors,
    )
    .is_some()
    {
        if let Some(c) = index.connector(d.tenant(), &t.connector) {
            if c.kind != Channel::Sql {
                errors.push(d.error(
                    &p(&["spec", "connector"]),
                    format!(
                        "connector `{}` is of type {}; a SqlTemplate needs a sql connector",
                        t.connector,
                        c.kind.as_str()
                    ),
                ));
            }
        }
    }
    if t.max_rows == 0 || t.max_rows > 100_000 {
        errors.push(d.error(
            &p(&["spec", "max_rows"]),
            "max_rows must be between 1 and 100000",
        ));
    }
    if t.timeout_ms == 0 || t.timeout_ms > 600_000 {
        errors.push(d.error(
            &p(&["spec", "timeout_ms"]),
            "timeout_ms must be between 1 and 600000",
        ));
    }
    for name in t.params.keys() {
        let ok = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !ok {
            errors.push(d.error(
                &p(&["spec", "params", name]),
                format!("`{name}` is not a valid parameter name"),
            ));
        }
    }
    for (name, spec) in &t.params {
        for m in param_rules(spec) {
            errors.push(d.error(&p(&["spec", "params", name]), format!("`{name}`: {m}")));
        }
    }
    let declared: BTreeSet<&str> = t.params.keys().map(String::as_str).collect();
    match sql::check(&t.statement, &declared) {
        Ok(plan) => Some(plan),
        Err(msgs) => {
            for m in msgs {
                errors.push(d.error(&p(&["spec", "statement"]), m));
            }
            None
        }
    }
}

/// What is wrong with a parameter declaration: a rule on a type it does not apply to, an
/// `enum` without values, a pattern that does not compile.
fn param_rules(spec: &ParamSpec) -> Vec<String> {
    let mut out = Vec::new();
    let text = spec.kind == ParamType::Text;
    if spec.max_len.is_some() && !text {
        out.push("max_len applies to text parameters only".to_string());
    }
    if spec.max_len == Some(0) {
        out.push("max_len must be at least 1".to_string());
    }
    if let Some(pat) = &spec.pattern {
        if !text {
            out.push("pattern applies to text parameters only".to_string());
        } else if let Err(e) = super::sql::compile_pattern(pat) {
            out.push(format!("pattern does not compile: {e}"));
        }
    }
    if spec.kind == ParamType::Enum {
        if spec.values.is_empty() {
            out.push("an enum needs `values`, the allowed values".to_string());
        }
        let mut seen = BTreeSet::new();
        for v in &spec.values {
            if !seen.insert(v) {
                out.push(format!("enum value `{v}` is listed twice"));
            }
        }
    } else if !spec.values.is_empty() {
        out.push("values apply to enum parameters only".to_string());
    }
    if spec.max_items.is_some() && !spec.array {
        out.push("max_items applies to arrays only (`type: int[]`)".to_string());
    }
    if spec.max_items == Some(0) {
        out.push("max_items must be at least 1".to_string());
    }
    out
}

/// A policy's MCP argument rules: channel `mcp` only; each path well formed; each rule asks
/// something, sensibly (`min` ≤ `max`, a pattern that compiles, a non-empty `enum` of scalars,
/// not both `required` and `forbidden`); and, where the policy names tools whose `McpTool`
/// documents declare an `input_schema`, each path is one the schema has, of a type the rule
/// can judge.
fn arguments(
    d: &Loaded,
    s: &PolicySpec,
    channel: Channel,
    index: &Index<'_>,
    errors: &mut Vec<BundleError>,
) {
    if s.arguments.is_empty() {
        return;
    }
    if channel != Channel::Mcp {
        errors.push(d.error(
            &p(&["spec", "arguments"]),
            "`arguments` only applies to channel mcp",
        ));
        return;
    }
    for (path, r) in &s.arguments {
        let at = p(&["spec", "arguments", path]);
        let mut bad = |m: String| errors.push(d.error(&at, m));
        let segs = match super::args::parse_path(path) {
            Ok(segs) => segs,
            Err(e) => {
                bad(e);
                continue;
            }
        };
        let asks = r.required
            || r.forbidden
            || r.min.is_some()
            || r.max.is_some()
            || r.one_of.is_some()
            || r.pattern.is_some()
            || r.max_len.is_some();
        if !asks {
            bad(format!("argument `{path}`: the rule asks nothing (required, forbidden, min, max, enum, pattern or max_len)"));
        }
        if r.forbidden
            && (r.required
                || r.min.is_some()
                || r.max.is_some()
                || r.one_of.is_some()
                || r.pattern.is_some()
                || r.max_len.is_some())
        {
            bad(format!(
                "argument `{path}`: `forbidden` cannot be combined with other rules"
            ));
        }
        for (name, v) in [("min", r.min), ("max", r.max)] {
            if v.is_some_and(|v| !v.is_finite()) {
                bad(format!("argument `{path}`: {name} must be a finite number"));
            }
        }
        if let (Some(lo), Some(hi)) = (r.min, r.max) {
            if lo > hi {
                bad(format!("argument `{path}`: min {lo} is above max {hi}"));
            }
        }
        if let Some(values) = &r.one_of {
            if values.is_empty() {
                bad(format!(
                    "argument `{path}`: enum must list at least one value"
                ));
            }
            if values
                .iter()
                .any(|v| v.is_object() || v.is_array() || v.is_null())
            {
                bad(format!(
                    "argument `{path}`: enum values are strings, numbers or booleans"
                ));
            }
        }
        if let Some(pat) = &r.pattern {
            if let Err(e) = super::sql::compile_pattern(pat) {
                bad(format!("argument `{path}`: pattern does not compile: {e}"));
            }
        }
        // Against the declared schema of every named tool that has one.
        for tool in &s.matcher.tools {
            let Some(schema) = index.tool_schema(d.tenant(), tool) else {
                continue;
            };
            if let Err(e) = fits_schema(schema, &segs, r) {
                bad(format!("argument `{path}` of tool `{tool}`: {e}"));
            }
        }
    }
}

/// Whether the rule `r` at `segs` fits the JSON Schema `schema` declares: each key a property
/// of an object (unless it allows any), each `*` the items of an array (or the values of an
/// object), and the leaf's type one the rule can judge.
fn fits_schema(
    schema: &serde_json::Value,
    segs: &[super::args::Seg],
    r: &ArgRule,
) -> Result<(), String> {
    use super::args::Seg;
    let mut at = schema;
    for seg in segs {
        let props = at.get("properties").and_then(|p| p.as_object());
        let next = match seg {
            Seg::Key(k) => match props.and_then(|p| p.get(k.as_ref())) {
                Some(s) => s,
                None if at.get("additionalProperties") == Some(&serde_json::Value::Bool(false))
                    || props.is_some() =>
                {
                    return Err(format!("the tool's input_schema has no property `{k}`"));
                }
                None => return Ok(()),
            },
            Seg::Any => match at.get("items").or_else(|| at.get("additionalProperties")) {
                Some(s) if s.is_object() => s,
                _ => return Ok(()),
            },
        };
        at = next;
    }
    let ty: Vec<&str> = match at.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.as_str()],
        Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => return Ok(()),
    };
    let any = |want: &[&str]| ty.iter().any(|t| want.contains(t));
    if (r.min.is_some() || r.max.is_some()) && !any(&["number", "integer"]) {
        return Err(format!(
            "min/max judge numbers; the schema says {}",
            ty.join("|")
        ));
    }
    if r.pattern.is_some() && !any(&["string"]) {
        return Err(format!(
            "pattern judges strings; the schema says {}",
            ty.join("|")
        ));
    }
    if r.max_len.is_some() && !any(&["string", "array"]) {
        return Err(format!(
            "max_len judges strings and arrays; the schema says {}",
            ty.join("|")
        ));
    }
    Ok(())
}

fn policy(d: &Loaded, s: &PolicySpec, index: &Index<'_>, errors: &mut Vec<BundleError>) {
    let tenant = d.tenant();
    let platform = tenant == PLATFORM_TENANT;
    let channel = s.matcher.channel;

    // Scope.
    let sc = &s.scope;
    let lists = [
        &sc.tenants,
        &sc.projects,
        &sc.agents,
        &sc.api_keys,
        &sc.actors,
    ];
    let any_list = lists.iter().any(|l| !l.is_empty());
    if sc.all_runs && any_list {
        errors.push(d.error(
            &p(&["spec", "scope"]),
            "scope has `all_runs: true` and lists; use one or the other",
        ));
    }
    if !sc.all_runs && !any_list {
        errors.push(d.error(
            &p(&["spec", "scope"]),
            "empty scope: say `all_runs: true` or list tenants, projects, agents, api_keys or actors",
        ));
    }
    if !platform {
        for (i, t) in sc.tenants.iter().enumerate() {
            if t != tenant {
                errors.push(d.error(
                    &pi(&["spec", "scope", "tenants"], i),
                    format!(
                        "cross-tenant scope: a policy of tenant `{tenant}` cannot apply to tenant `{t}` (INV-003)"
                    ),
                ));
            }
        }
    }

    // Match.
    let m = &s.matcher;
    let wrong_channel =
        |field: &str, list: &Vec<String>, needs: Channel, errors: &mut Vec<BundleError>| {
            if !list.is_empty() && channel != needs {
                errors.push(d.error(
                    &p(&["spec", "match", field]),
                    format!(
                        "`{field}` only applies to channel {}, not {}",
                        needs.as_str(),
                        channel.as_str()
                    ),
                ));
            }
        };
    wrong_channel("models", &m.models, Channel::Llm, errors);
    wrong_channel("templates", &m.templates, Channel::Sql, errors);
    wrong_channel("tools", &m.tools, Channel::Mcp, errors);

    if platform {
        for field in ["connectors", "planes", "templates", "tools"] {
            let list = match field {
                "connectors" => &m.connectors,
                "planes" => &m.planes,
                "templates" => &m.templates,
                _ => &m.tools,
            };
            if !list.is_empty() {
                errors.push(d.error(
                    &p(&["spec", "match", field]),
                    format!("a platform policy (tenant `*`) cannot name tenant-owned {field}"),
                ));
            }
        }
    } else {
        for (i, c) in m.connectors.iter().enumerate() {
            let path = pi(&["spec", "match", "connectors"], i);
            if reference(d, &path, c, "connector", &index.connectors, errors).is_some() {
                if let Some(spec) = index.connector(tenant, c) {
                    if spec.kind != channel {
                        errors.push(d.error(
                            &path,
                            format!(
                                "connector `{c}` is of type {}, but this policy matches channel {}",
                                spec.kind.as_str(),
                                channel.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        for (i, plane) in m.planes.iter().enumerate() {
            if !index.plane_exists(tenant, plane) {
                let path = pi(&["spec", "match", "planes"], i);
                match Index::owner_elsewhere(&index.planes, tenant, plane) {
                    Some(owner) => errors.push(d.error(
                        &path,
                        format!("cross-tenant reference: plane `{plane}` belongs to tenant `{owner}`, not `{tenant}` (INV-003)"),
                    )),
                    None => errors.push(d.error(&path, format!("unknown plane `{plane}`"))),
                }
            }
        }
        for (i, t) in m.templates.iter().enumerate() {
            let path = pi(&["spec", "match", "templates"], i);
            if let Some(ti) = reference(d, &path, t, "template", &index.templates, errors) {
                if let Doc::SqlTemplate(tpl) = &index.docs[ti].doc {
                    if !m.connectors.is_empty() && !m.connectors.contains(&tpl.spec.connector) {
                        errors.push(d.error(
                            &path,
                            format!(
                                "template `{t}` runs on connector `{}`, which this policy's connectors do not include",
                                tpl.spec.connector
                            ),
                        ));
                    }
                }
            }
        }
        // Models: each must be served by a connector in scope of this policy.
        let llm_connectors: Vec<&ConnectorSpec> = index
            .connectors
            .get(tenant)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter(|(id, _)| m.connectors.is_empty() || m.connectors.contains(id))
            .filter_map(|(id, _)| index.connector(tenant, id))
            .filter(|c| c.kind == Channel::Llm)
            .collect();
        for (i, model) in m.models.iter().enumerate() {
            let served = llm_connectors
                .iter()
                .any(|c| c.llm.as_ref().is_some_and(|l| l.models.contains_key(model)));
            if !served {
                errors.push(d.error(
                    &pi(&["spec", "match", "models"], i),
                    format!("unknown model `{model}`: no LLM connector of this policy serves it"),
                ));
            }
        }
        // Tools: a connector with registered McpTools has a closed tool list; one without is
        // open (its tools are discovered from the server at run time).
        let mcp_ids: Vec<&String> = index
            .connectors
            .get(tenant)
            .into_iter()
            .flat_map(|ids| ids.keys())
            .filter(|id| m.connectors.is_empty() || m.connectors.contains(id))
            .filter(|id| {
                index
                    .connector(tenant, id)
                    .is_some_and(|c| c.kind == Channel::Mcp)
            })
            .collect();
        for (i, tool) in m.tools.iter().enumerate() {
            let known = mcp_ids.iter().any(|cid| {
                let registered: Vec<&McpToolSpec> = index
                    .tools
                    .get(tenant)
                    .into_iter()
                    .flat_map(|ids| ids.values())
                    .filter_map(|ti| match &index.docs[*ti].doc {
                        Doc::McpTool(t) if &t.spec.connector == *cid => Some(&t.spec),
                        _ => None,
                    })
                    .collect();
                registered.is_empty()
                    || index
                        .tools
                        .get(tenant)
                        .and_then(|ids| ids.get(tool))
                        .is_some_and(|ti| matches!(&index.docs[*ti].doc, Doc::McpTool(t) if &t.spec.connector == *cid))
            });
            if !known {
                let path = pi(&["spec", "match", "tools"], i);
                match Index::owner_elsewhere(&index.tools, tenant, tool) {
                    Some(owner) => errors.push(d.error(
                        &path,
                        format!("cross-tenant reference: tool `{tool}` belongs to tenant `{owner}`, not `{tenant}` (INV-003)"),
                    )),
                    None => errors.push(d.error(
                        &path,
                        format!("unknown tool `{tool}`: no MCP connector of this policy offers it"),
                    )),
                }
            }
        }
    }

    // Effect and what goes with it.
    match s.effect {
        Effect::Allow => {
            if s.action.is_some() {
                errors.push(d.error(
                    &p(&["spec", "action"]),
                    "`action` is for deny policies; an allow passes",
                ));
            }
        }
        Effect::Deny => {
            if s.action.is_some_and(|a| !a.blocks()) {
                errors.push(d.error(
                    &p(&["spec", "action"]),
                    "a deny must refuse: use pause, stop or kill (warn-only rules are allow policies with limits or detectors)",
                ));
            }
            for (field, present) in [
                ("limits", !s.limits.is_empty()),
                ("max_tokens", s.max_tokens.is_some()),
                ("arguments", !s.arguments.is_empty()),
                (
                    "detectors",
                    s.detectors.pii.is_some()
                        || s.detectors.grounding.is_some()
                        || s.detectors.secrets.is_some(),
                ),
            ] {
                if present {
                    errors.push(d.error(
                        &p(&["spec", field]),
                        format!("`{field}` has no effect on a deny policy (it refuses outright)"),
                    ));
                }
            }
        }
    }
    arguments(d, s, channel, index, errors);
    if let Some(mt) = s.max_tokens {
        if channel != Channel::Llm {
            errors.push(d.error(
                &p(&["spec", "max_tokens"]),
                "`max_tokens` only applies to channel llm",
            ));
        } else if mt == 0 {
            errors.push(d.error(
                &p(&["spec", "max_tokens"]),
                "max_tokens must be greater than zero",
            ));
        }
    }

    // Limits.
    for (i, l) in s.limits.iter().enumerate() {
        let at = |field: &str| pik(&["spec", "limits"], i, field);
        if !l.max.is_finite() || l.max <= 0.0 {
            errors.push(d.error(
                &at("max"),
                format!("max must be greater than zero, not {}", l.max),
            ));
        } else if l.metric.integral() && l.max.fract() != 0.0 {
            errors.push(d.error(
                &at("max"),
                format!(
                    "max for {} must be a whole number, not {}",
                    l.metric.as_str(),
                    l.max
                ),
            ));
        }
        let allowed = match l.metric {
            Metric::InputTokens | Metric::OutputTokens | Metric::TotalTokens | Metric::CostUsd => {
                channel == Channel::Llm
            }
            Metric::Queries | Metric::Rows => channel == Channel::Sql,
            Metric::Requests | Metric::Bytes => true,
        };
        if !allowed {
            errors.push(d.error(
                &at("metric"),
                format!(
                    "metric {} does not apply to channel {}",
                    l.metric.as_str(),
                    channel.as_str()
                ),
            ));
        }
        let mut seen = Vec::new();
        for (j, tier) in l.near.iter().enumerate() {
            let mut path = at("near");
            path.push(PathSeg::Index(j));
            if !(tier.is_finite() && *tier > 0.0 && *tier < 1.0) {
                errors.push(d.error(&path, format!("near tier {tier} is outside (0, 1)")));
            } else if seen.contains(tier) {
                errors.push(d.error(&path, format!("near tier {tier} is listed twice")));
            }
            seen.push(*tier);
        }
        if l.on_breach == Action::Continue {
            errors.push(d.error(
                &at("on_breach"),
                "on_breach: continue makes the limit do nothing; use warn to only alert",
            ));
        }
    }

    if s.detectors
        .pii
        .as_ref()
        .is_some_and(|d| d.on_match == Action::Continue)
    {
        errors.push(d.error(
            &p(&["spec", "detectors", "pii", "on_match"]),
            "on_match: continue makes the detector do nothing; use warn to only alert",
        ));
    }
    if s.detectors
        .secrets
        .as_ref()
        .is_some_and(|d| d.on_match == Action::Continue)
    {
        errors.push(d.error(
            &p(&["spec", "detectors", "secrets", "on_match"]),
            "on_match: continue makes the detector do nothing; use warn to only alert",
        ));
    }
    if s.detectors
        .grounding
        .as_ref()
        .is_some_and(|g| g.on_low == Action::Continue)
    {
        errors.push(d.error(
            &p(&["spec", "detectors", "grounding", "on_low"]),
            "on_low: continue makes the detector do nothing; use warn to only alert",
        ));
    }
    if let Some(g) = &s.detectors.grounding {
        if !(g.min_score.is_finite() && (0.0..=1.0).contains(&g.min_score)) {
            errors.push(d.error(
                &p(&["spec", "detectors", "grounding", "min_score"]),
                format!("min_score must be between 0 and 1, not {}", g.min_score),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
