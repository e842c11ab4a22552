//! The canonical form of a bundle and the snapshot hash (`docs/snapshot-hash.md`).
//!
//! Canonical form: every document with defaults filled in (serde defaults), lists whose order
//! carries no meaning sorted and de-duplicated, maps ordered by key (`BTreeMap`), documents
//! sorted by (kind, tenant, id), serialised as compact JSON. The hash is
//! `sha256("warden/v1 snapshot\n" ‖ canonical JSON)`, written `sha256:<hex>`.
//!
//! So reordering documents, keys or unordered list items, comments, whitespace, quoting style
//! and writing out a default value leave the hash alone; any change to a value that reaches a
//! decision or an audit record changes it.

use sha2::{Digest, Sha256};

use super::model::*;

/// Domain separation, so a snapshot hash can never collide with another sha256 we compute.
const DOMAIN: &[u8] = b"warden/v1 snapshot\n";

/// Sort and de-duplicate a list whose order means nothing.
fn set<T: Ord>(v: &mut Vec<T>) {
    v.sort();
    v.dedup();
}

fn set_f64(v: &mut Vec<f64>) {
    v.sort_by(f64::total_cmp);
    v.dedup();
}

/// The canonical copy of one document.
pub fn canonical_doc(doc: &Doc) -> Doc {
    let mut doc = doc.clone();
    match &mut doc {
        Doc::Policy(p) => {
            let s = &mut p.spec;
            for l in [
                &mut s.scope.tenants,
                &mut s.scope.projects,
                &mut s.scope.agents,
                &mut s.scope.api_keys,
                &mut s.scope.actors,
                &mut s.matcher.planes,
                &mut s.matcher.connectors,
                &mut s.matcher.models,
                &mut s.matcher.tools,
                &mut s.matcher.templates,
            ] {
                set(l);
            }
            if s.effect == Effect::Deny && s.action.is_none() {
                s.action = Some(Action::Stop);
            }
            for l in &mut s.limits {
                set_f64(&mut l.near);
            }
            // Limits are all evaluated, so their order is not meaningful either.
            s.limits.sort_by(limit_order);
            s.limits.dedup();
            if let Some(pii) = &mut s.detectors.pii {
                set(&mut pii.kinds);
                if pii.kinds.len() == PiiKind::ALL.len() {
                    pii.kinds.clear();
                }
            }
            if let Some(sec) = &mut s.detectors.secrets {
                set(&mut sec.kinds);
                if sec.kinds.len() == SecretKind::ALL.len() {
                    sec.kinds.clear();
                }
            }
        }
        Doc::Connector(c) => {
            if let Some(http) = &mut c.spec.http {
                for r in &mut http.allow {
                    set(&mut r.methods);
                    set(&mut r.paths);
                }
                set(&mut http.allow);
            }
        }
        Doc::KnowledgePlane(_) | Doc::SqlTemplate(_) | Doc::McpTool(_) => {}
    }
    doc
}

/// Limits in canonical order: by metric, then window (step, run, session, then durations
/// shortest first), then the rest. This is also the index order of usage counters.
fn limit_order(a: &Limit, b: &Limit) -> std::cmp::Ordering {
    (a.metric, a.window)
        .cmp(&(b.metric, b.window))
        .then(a.max.total_cmp(&b.max))
        .then(a.on_breach.cmp(&b.on_breach))
        .then_with(|| {
            a.near
                .iter()
                .zip(&b.near)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(a.near.len().cmp(&b.near.len()))
        })
}

/// Documents in canonical order: (kind, tenant, id).
pub fn sort_docs(docs: &mut [Doc]) {
    docs.sort_by(|a, b| {
        let (ma, mb) = (a.metadata(), b.metadata());
        (a.kind(), &ma.tenant, &ma.id).cmp(&(b.kind(), &mb.tenant, &mb.id))
    });
}

/// Canonical JSON of already-canonical, sorted documents.
pub fn canonical_json(docs: &[Doc]) -> Vec<u8> {
    // Serialising plain data structs to JSON cannot fail (no maps with non-string keys, no
    // custom serializers that error); fall back to an empty body defensively.
    serde_json::to_vec(docs).unwrap_or_default()
}

/// `sha256:<hex>` of the canonical JSON.
pub fn hash(canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(canonical);
    let digest = h.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
