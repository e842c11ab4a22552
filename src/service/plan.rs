//! What a policy-service mutation changes, decided without I/O: applying a bundle, a lifecycle
//! or shadow change, a mode change. The store runs these plans inside its write lock
//! (`Store::mutate`, `Store::set_modes`) on the rows as they are then.

use std::collections::BTreeMap;

use serde_json::json;

use super::store::{AuditRow, Change, DocRow, ModesRow};
use crate::decide::Mode;
use crate::policy::load::Source;
use crate::policy::model::{Doc, Kind, Status};
use crate::policy::overlay::{self, Bundle, BundleSource, PolicyState};
use crate::policy::{parse_sources, BundleError};

/// Why a mutation was refused; `Invalid` is the caller's fault (INVALID_ARGUMENT),
/// `Precondition` a state that forbids it (FAILED_PRECONDITION), `NotFound` no such document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    NotFound(String),
}

/// Who asks, and why.
#[derive(Debug, Clone)]
pub struct Who {
    pub actor: String,
    pub reason: String,
    pub replica: String,
    pub now_ms: i64,
}

impl Who {
    pub fn audit(&self, action: &str, target: &str, before: String, after: String) -> AuditRow {
        AuditRow {
            seq: 0,
            at_ms: self.now_ms,
            actor: self.actor.clone(),
            action: action.into(),
            target: target.into(),
            reason: self.reason.clone(),
            before,
            after,
            critical: false,
            replica: self.replica.clone(),
        }
    }
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Draft => "draft",
        Status::Active => "active",
        Status::Suspended => "suspended",
        Status::Retired => "retired",
    }
}

pub fn parse_status(s: &str) -> Option<Status> {
    match s {
        "draft" => Some(Status::Draft),
        "active" => Some(Status::Active),
        "suspended" => Some(Status::Suspended),
        "retired" => Some(Status::Retired),
        _ => None,
    }
}

/// The snapshot bundle of a set of document rows: one source per document, sorted by kind,
/// tenant and id, with every policy's lifecycle.
pub fn bundle_of(docs: &[DocRow]) -> Result<Bundle, PlanError> {
    let mut docs: Vec<&DocRow> = docs.iter().collect();
    docs.sort_by(|a, b| (&a.kind, &a.tenant, &a.id).cmp(&(&b.kind, &b.tenant, &b.id)));
    let mut b = Bundle::default();
    for d in docs {
        b.sources.push(BundleSource {
            name: format!("{}/{}/{}", d.kind, d.tenant, d.id),
            text: d.text.clone(),
        });
        if d.kind == Kind::Policy.as_str() {
            let status = parse_status(&d.status).ok_or_else(|| {
                PlanError::Precondition(format!("stored policy {} has status `{}`", d.id, d.status))
            })?;
            b.lifecycle.push(PolicyState {
                tenant: d.tenant.clone(),
                id: d.id.clone(),
                status,
                shadow: d.shadow,
            });
        }
    }
    Ok(b)
}

/// Compile a bundle into (hash, bundle JSON).
pub fn seal(bundle: &Bundle) -> Result<(String, String), PlanError> {
    let snap = bundle.compile().map_err(|e| render(&e))?;
    let json = serde_json::to_string(bundle)
        .map_err(|e| PlanError::Invalid(vec![format!("bundle: {e}")]))?;
    Ok((snap.hash().to_string(), json))
}

fn render(errors: &[BundleError]) -> PlanError {
    PlanError::Invalid(errors.iter().map(BundleError::render).collect())
}

/// One document's change in an apply.
#[derive(Debug, Clone, PartialEq)]
pub struct DocChange {
    pub kind: String,
    pub tenant: String,
    pub id: String,
    pub change: &'static str,
}

/// What an apply did: each document's change, and the snapshot hash after it.
pub type Applied = (Vec<DocChange>, Option<String>);

/// Plan `policy apply`: validate the bundle against everything stored, upsert its documents.
/// A new policy takes the status and shadow written in it; a stored policy keeps its lifecycle
/// (changed only through the lifecycle calls), and a retired id is never reused.
pub fn apply(
    docs: Vec<DocRow>,
    name: &str,
    text: &str,
    current: Option<&str>,
    who: &Who,
) -> Result<(Change, Applied), PlanError> {
    let whole = Source {
        name: name.into(),
        text: text.to_string(),
    };
    let (parsed, errors) = parse_sources(std::slice::from_ref(&whole));
    if !errors.is_empty() {
        return Err(render(&errors));
    }
    if parsed.is_empty() {
        return Err(PlanError::Invalid(vec![format!(
            "{name}: no documents in the bundle"
        )]));
    }
    let pieces = overlay::split_documents(text)
        .map_err(|e| PlanError::Invalid(vec![format!("{name}: {e}")]))?;
    if pieces.len() != parsed.len() {
        return Err(PlanError::Invalid(vec![format!(
            "{name}: {} documents parse, but its `---` lines make {} pieces; separate documents with `---` lines",
            parsed.len(),
            pieces.len()
        )]));
    }
    let mut index: BTreeMap<(String, String, String), DocRow> = docs
        .into_iter()
        .map(|d| ((d.kind.clone(), d.tenant.clone(), d.id.clone()), d))
        .collect();
    let mut upserts = Vec::new();
    let mut changes = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (loaded, piece) in parsed.iter().zip(&pieces) {
        let meta = loaded.doc.metadata();
        let kind = loaded.doc.kind().as_str().to_string();
        let key = (kind.clone(), meta.tenant.clone(), meta.id.clone());
        let at = loaded.node.pos;
        if !seen.insert(key.clone()) {
            problems.push(format!(
                "{name}:{}:{}: {kind} `{}` of tenant `{}` appears twice in the bundle",
                at.line, at.col, meta.id, meta.tenant
            ));
            continue;
        }
        let (status, shadow) = match &loaded.doc {
            Doc::Policy(p) => (status_str(p.spec.status).to_string(), p.spec.shadow),
            _ => (String::new(), false),
        };
        let change = match index.get(&key) {
            Some(old) if old.kind == Kind::Policy.as_str() && old.status == "retired" => {
                problems.push(format!(
                    "{name}:{}:{}: policy `{}` of tenant `{}` is retired; retired ids are not reused",
                    at.line, at.col, meta.id, meta.tenant
                ));
                continue;
            }
            Some(old) if old.text == *piece => "unchanged",
            Some(_) => "updated",
            None => "created",
        };
        changes.push(DocChange {
            kind: kind.clone(),
            tenant: meta.tenant.clone(),
            id: meta.id.clone(),
            change,
        });
        if change == "unchanged" {
            continue;
        }
        let row = match index.get(&key) {
            Some(old) => DocRow {
                text: piece.clone(),
                revision: old.revision + 1,
                updated_at_ms: who.now_ms,
                updated_by: who.actor.clone(),
                ..old.clone()
            },
            None => DocRow {
                kind,
                tenant: meta.tenant.clone(),
                id: meta.id.clone(),
                text: piece.clone(),
                status,
                shadow,
                revision: 1,
                updated_at_ms: who.now_ms,
                updated_by: who.actor.clone(),
            },
        };
        upserts.push(row.clone());
        index.insert(key, row);
    }
    if !problems.is_empty() {
        return Err(PlanError::Invalid(problems));
    }
    // Validate the whole result, the applied file under its own name so errors point into it.
    let applied: std::collections::BTreeSet<_> = seen;
    let mut sources = vec![whole];
    let mut lifecycle = Vec::new();
    for (key, d) in &index {
        if !applied.contains(key) {
            sources.push(Source {
                name: format!("stored:{}/{}/{}", d.kind, d.tenant, d.id).into(),
                text: d.text.clone(),
            });
        }
        if d.kind == Kind::Policy.as_str() {
            if let Some(status) = parse_status(&d.status) {
                lifecycle.push(PolicyState {
                    tenant: d.tenant.clone(),
                    id: d.id.clone(),
                    status,
                    shadow: d.shadow,
                });
            }
        }
    }
    let (mut all, errors) = parse_sources(&sources);
    let mut errors: Vec<BundleError> = errors;
    errors.extend(overlay::apply_lifecycle(&mut all, &lifecycle));
    if errors.is_empty() {
        if let Err(e) = crate::policy::compile_docs(all) {
            errors = e;
        }
    }
    if !errors.is_empty() {
        return Err(render(&errors));
    }
    let rows: Vec<DocRow> = index.into_values().collect();
    let (hash, bundle) = seal(&bundle_of(&rows)?)?;
    let new_snapshot = current != Some(hash.as_str());
    let audit = who.audit(
        "policy_apply",
        name,
        json!({ "snapshot": current }).to_string(),
        json!({
            "snapshot": hash,
            "documents": changes.iter().filter(|c| c.change != "unchanged").map(|c| json!({
                "kind": c.kind, "tenant": c.tenant, "id": c.id, "change": c.change,
            })).collect::<Vec<_>>(),
        })
        .to_string(),
    );
    let change = Change {
        upserts,
        snapshot: new_snapshot.then(|| (hash.clone(), bundle)),
        audit: if new_snapshot || changes.iter().any(|c| c.change != "unchanged") {
            vec![audit]
        } else {
            vec![]
        },
    };
    Ok((change, (changes, Some(hash))))
}

/// Find one policy by id (and tenant, when given or needed).
fn find_policy<'a>(docs: &'a [DocRow], id: &str, tenant: &str) -> Result<&'a DocRow, PlanError> {
    let found: Vec<&DocRow> = docs
        .iter()
        .filter(|d| d.kind == Kind::Policy.as_str() && d.id == id)
        .filter(|d| tenant.is_empty() || d.tenant == tenant)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(PlanError::NotFound(if tenant.is_empty() {
            format!("no policy `{id}`")
        } else {
            format!("no policy `{id}` of tenant `{tenant}`")
        })),
        _ => Err(PlanError::Invalid(vec![format!(
            "policy id `{id}` exists in several tenants; say which with --tenant"
        )])),
    }
}

/// What a lifecycle call asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LifecycleOp {
    Status(Status),
    Shadow(bool),
}

/// Plan a lifecycle move (`draft → active ⇄ suspended → retired`) or a shadow switch.
pub fn lifecycle(
    docs: Vec<DocRow>,
    id: &str,
    tenant: &str,
    op: LifecycleOp,
    current: Option<&str>,
    who: &Who,
) -> Result<(Change, DocRow), PlanError> {
    if who.reason.trim().is_empty() {
        return Err(PlanError::Invalid(vec![
            "a lifecycle change needs a reason (--reason)".into(),
        ]));
    }
    let old = find_policy(&docs, id, tenant)?.clone();
    let from = parse_status(&old.status).unwrap_or(Status::Draft);
    let mut new = old.clone();
    let action = match op {
        LifecycleOp::Status(to) => {
            use Status::*;
            let ok = matches!(
                (from, to),
                (Draft, Active)
                    | (Active, Suspended)
                    | (Suspended, Active)
                    | (Draft, Retired)
                    | (Active, Retired)
                    | (Suspended, Retired)
            );
            if !ok {
                return Err(PlanError::Precondition(if from == to {
                    format!("policy `{id}` is already {}", status_str(to))
                } else {
                    format!(
                        "policy `{id}` cannot go from {} to {} (draft → active ⇄ suspended → retired)",
                        status_str(from),
                        status_str(to)
                    )
                }));
            }
            new.status = status_str(to).into();
            "lifecycle"
        }
        LifecycleOp::Shadow(on) => {
            if from == Status::Retired {
                return Err(PlanError::Precondition(format!("policy `{id}` is retired")));
            }
            if old.shadow == on {
                return Err(PlanError::Precondition(format!(
                    "policy `{id}` is already {}",
                    if on { "in shadow" } else { "out of shadow" }
                )));
            }
            new.shadow = on;
            "shadow"
        }
    };
    new.revision += 1;
    new.updated_at_ms = who.now_ms;
    new.updated_by = who.actor.clone();
    let rows: Vec<DocRow> = docs
        .into_iter()
        .map(|d| {
            if d.kind == new.kind && d.tenant == new.tenant && d.id == new.id {
                new.clone()
            } else {
                d
            }
        })
        .collect();
    let (hash, bundle) = seal(&bundle_of(&rows)?)?;
    let audit = who.audit(
        action,
        &format!("policy/{}/{}", new.tenant, new.id),
        json!({ "status": old.status, "shadow": old.shadow, "snapshot": current }).to_string(),
        json!({ "status": new.status, "shadow": new.shadow, "snapshot": hash }).to_string(),
    );
    Ok((
        Change {
            upserts: vec![new.clone()],
            snapshot: (current != Some(hash.as_str())).then_some((hash, bundle)),
            audit: vec![audit],
        },
        new,
    ))
}

pub fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "enforcing" => Some(Mode::Enforcing),
        "degraded" => Some(Mode::Degraded),
        "bypass" => Some(Mode::Bypass),
        "halted" => Some(Mode::Halted),
        _ => None,
    }
}

/// The tenants' modes of a stored row.
pub fn tenants_of(row: &ModesRow) -> BTreeMap<String, String> {
    serde_json::from_str(&row.tenants).unwrap_or_default()
}

/// Plan a mode change: `mode` globally (no tenant) or for one tenant, or `inherit` (a tenant
/// follows the global mode again). Entering `bypass` is a critical audit event.
pub fn modes(
    before: &ModesRow,
    mode: &str,
    tenant: &str,
    who: &Who,
) -> Result<(String, String, AuditRow), PlanError> {
    if who.reason.trim().is_empty() {
        return Err(PlanError::Invalid(vec![
            "a mode change needs a reason (--reason)".into(),
        ]));
    }
    let tenant = tenant.trim();
    let mut global = before.global.clone();
    let mut tenants = tenants_of(before);
    match (mode, tenant.is_empty()) {
        ("inherit", true) => {
            return Err(PlanError::Invalid(vec![
                "`inherit` clears a tenant's own mode: it needs a tenant".into(),
            ]))
        }
        ("inherit", false) => {
            tenants.remove(tenant);
        }
        (m, _) if parse_mode(m).is_none() => {
            return Err(PlanError::Invalid(vec![format!(
                "unknown mode `{m}`: enforcing, degraded, bypass, halted (or inherit with a tenant)"
            )]))
        }
        (m, true) => global = m.to_string(),
        (m, false) => {
            tenants.insert(tenant.to_string(), m.to_string());
        }
    }
    let after_tenants = serde_json::to_string(&tenants).unwrap_or_else(|_| "{}".into());
    let mut audit = who.audit(
        "mode_change",
        if tenant.is_empty() { "global" } else { tenant },
        json!({ "global": before.global, "tenants": tenants_of(before) }).to_string(),
        json!({ "global": global, "tenants": tenants }).to_string(),
    );
    audit.critical = mode == "bypass";
    Ok((global, after_tenants, audit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");

    fn who() -> Who {
        Who {
            actor: "admin-token".into(),
            reason: "test".into(),
            replica: "r1".into(),
            now_ms: 1,
        }
    }

    fn applied() -> (Vec<DocRow>, String) {
        let (change, (_, hash)) = apply(vec![], "bundle.yaml", CONTRACT, None, &who()).unwrap();
        (change.upserts, hash.unwrap())
    }

    #[test]
    fn apply_stores_each_document_and_the_snapshot_matches_the_file() {
        let (rows, hash) = applied();
        assert_eq!(rows.len(), 10);
        let file = crate::policy::compile_str("b", CONTRACT).unwrap();
        assert_eq!(hash, file.hash().to_string());
        // Applying the same again changes nothing and makes no snapshot.
        let (change, (changes, _)) =
            apply(rows.clone(), "bundle.yaml", CONTRACT, Some(&hash), &who()).unwrap();
        assert!(change.upserts.is_empty() && change.snapshot.is_none() && change.audit.is_empty());
        assert!(changes.iter().all(|c| c.change == "unchanged"));
    }

    #[test]
    fn apply_refuses_a_bundle_broken_against_the_stored_documents() {
        let (rows, hash) = applied();
        let policy = "apiVersion: warden/v1\nkind: Policy\nmetadata: { id: p9, tenant: acme }\n\
                      spec: { status: active, scope: { all_runs: true }, match: { channel: http, connectors: [nope] }, effect: allow }\n";
        let err = apply(rows.clone(), "extra.yaml", policy, Some(&hash), &who()).unwrap_err();
        let PlanError::Invalid(lines) = err else {
            panic!()
        };
        assert!(lines[0].starts_with("extra.yaml:"), "{lines:?}");
        // A policy naming a stored connector is fine.
        let ok = policy.replace("nope", "weather");
        let (change, (changes, h)) = apply(rows, "extra.yaml", &ok, Some(&hash), &who()).unwrap();
        assert_eq!(changes[0].change, "created");
        assert!(change.snapshot.is_some() && h.as_deref() != Some(hash.as_str()));
    }

    #[test]
    fn lifecycle_moves_and_refusals() {
        let (rows, hash) = applied();
        let (change, row) = lifecycle(
            rows.clone(),
            "p100-llm",
            "",
            LifecycleOp::Status(Status::Suspended),
            Some(&hash),
            &who(),
        )
        .unwrap();
        assert_eq!(row.status, "suspended");
        assert!(change.snapshot.is_some());
        let e = lifecycle(
            rows.clone(),
            "p100-llm",
            "",
            LifecycleOp::Status(Status::Active),
            Some(&hash),
            &who(),
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::Precondition(_)), "{e:?}");
        let e = lifecycle(
            rows.clone(),
            "nope",
            "",
            LifecycleOp::Status(Status::Active),
            None,
            &who(),
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::NotFound(_)));
        let mut retired = rows.clone();
        for r in &mut retired {
            if r.id == "p100-llm" {
                r.status = "retired".into();
            }
        }
        let e = lifecycle(
            retired.clone(),
            "p100-llm",
            "",
            LifecycleOp::Status(Status::Active),
            None,
            &who(),
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::Precondition(_)));
        // A retired id is not reused by an apply.
        let e = apply(retired, "b.yaml", CONTRACT, None, &who()).unwrap_err();
        assert!(e.to_string().contains("retired ids are not reused"), "{e}");
        let mut no_reason = who();
        no_reason.reason = " ".into();
        assert!(lifecycle(
            rows,
            "p100-llm",
            "",
            LifecycleOp::Shadow(true),
            None,
            &no_reason
        )
        .is_err());
    }

    #[test]
    fn mode_plans() {
        let before = ModesRow {
            global: "enforcing".into(),
            tenants: "{}".into(),
            ..ModesRow::default()
        };
        let (g, t, a) = modes(&before, "halted", "", &who()).unwrap();
        assert_eq!(
            (g.as_str(), t.as_str(), a.critical),
            ("halted", "{}", false)
        );
        let (g, t, a) = modes(&before, "bypass", "acme", &who()).unwrap();
        assert_eq!(
            (g.as_str(), t.as_str(), a.critical),
            ("enforcing", "{\"acme\":\"bypass\"}", true)
        );
        assert!(modes(&before, "inherit", "", &who()).is_err());
        assert!(modes(&before, "off", "", &who()).is_err());
        let row = ModesRow {
            tenants: t,
            ..before.clone()
        };
        let (_, t, _) = modes(&row, "inherit", "acme", &who()).unwrap();
        assert_eq!(t, "{}");
    }
}
