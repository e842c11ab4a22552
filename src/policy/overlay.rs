//! Snapshots the policy service makes: bundle sources plus the lifecycle of every policy.
//!
//! The service owns each policy's lifecycle (`draft → active ⇄ suspended → retired`, and shadow);
//! the documents keep the text they were applied with. A [`Bundle`] carries both, and
//! [`Bundle::compile`] applies the lifecycle to the parsed documents before compiling, so the
//! sidecar and the service arrive at the same snapshot hash from the same bundle.

use serde::{Deserialize, Serialize};

use super::load::{Loaded, Source};
use super::model::{Doc, Status};
use super::yaml::Pos;
use super::{compile_docs, parse_sources, BundleError, Snapshot};

/// One policy's lifecycle as the service holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    pub tenant: String,
    pub id: String,
    pub status: Status,
    pub shadow: bool,
}

/// A source of a service snapshot (one per document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSource {
    pub name: String,
    pub text: String,
}

/// What a service snapshot is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub sources: Vec<BundleSource>,
    pub lifecycle: Vec<PolicyState>,
}

impl Bundle {
    /// Parse the sources, apply the lifecycle, compile.
    pub fn compile(&self) -> Result<Snapshot, Vec<BundleError>> {
        let sources: Vec<Source> = self
            .sources
            .iter()
            .map(|s| Source {
                name: s.name.as_str().into(),
                text: s.text.clone(),
            })
            .collect();
        let (mut docs, mut errors) = parse_sources(&sources);
        errors.extend(apply_lifecycle(&mut docs, &self.lifecycle));
        if !errors.is_empty() {
            return Err(errors);
        }
        compile_docs(docs)
    }
}

/// Set each named policy's status and shadow; a state naming no policy is an error.
pub fn apply_lifecycle(docs: &mut [Loaded], states: &[PolicyState]) -> Vec<BundleError> {
    let mut errors = Vec::new();
    for s in states {
        let found = docs.iter_mut().find_map(|d| match &mut d.doc {
            Doc::Policy(p) if p.metadata.id == s.id && p.metadata.tenant == s.tenant => Some(p),
            _ => None,
        });
        match found {
            Some(p) => {
                p.spec.status = s.status;
                p.spec.shadow = s.shadow;
            }
            None => errors.push(BundleError {
                file: "lifecycle".into(),
                pos: Pos { line: 1, col: 1 },
                path: String::new(),
                message: format!(
                    "lifecycle names policy `{}` of tenant `{}`, which no document defines",
                    s.id, s.tenant
                ),
            }),
        }
    }
    errors
}

/// Split a YAML stream into the text of each document, at its `---` (or `...`) lines.
///
/// A document marker at column 0 cannot occur inside a document's content (YAML forbids it even
/// in quoted scalars), so splitting there is exact. A marker followed by content on its own line
/// (`--- {a: 1}`) is refused rather than guessed at. Pieces holding only comments or blank
/// lines are dropped.
pub fn split_documents(text: &str) -> Result<Vec<String>, String> {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare == "---"
            || bare == "..."
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare.starts_with("... ");
        if marker {
            let rest = bare[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(format!(
                    "line {}: put a document's content on the lines after its `---`",
                    n + 1
                ));
            }
            pieces.push(std::mem::take(&mut cur));
            continue;
        }
        if bare.starts_with('%') && cur.trim().is_empty() {
            return Err(format!(
                "line {}: YAML directives (`%`) are not supported here",
                n + 1
            ));
        }
        cur.push_str(line);
    }
    pieces.push(cur);
    Ok(pieces
        .into_iter()
        .filter(|p| {
            p.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");

    #[test]
    fn split_contract_compiles_to_the_same_hash() {
        let whole = super::super::compile_str("bundle.yaml", CONTRACT).unwrap();
        let pieces = split_documents(CONTRACT).unwrap();
        assert_eq!(pieces.len(), 10);
        let bundle = Bundle {
            sources: pieces
                .iter()
                .enumerate()
                .map(|(i, t)| BundleSource {
                    name: format!("doc{i}"),
                    text: t.clone(),
                })
                .collect(),
            lifecycle: vec![],
        };
        assert_eq!(bundle.compile().unwrap().hash(), whole.hash());
    }

    #[test]
    fn lifecycle_changes_the_hash_and_unknown_names_are_errors() {
        let pieces = split_documents(CONTRACT).unwrap();
        let mut bundle = Bundle {
            sources: pieces
                .into_iter()
                .map(|text| BundleSource {
                    name: "d".into(),
                    text,
                })
                .collect(),
            lifecycle: vec![PolicyState {
                tenant: "acme".into(),
                id: "p100-llm".into(),
                status: Status::Active,
                shadow: false,
            }],
        };
        let same = bundle.compile().unwrap();
        bundle.lifecycle[0].status = Status::Suspended;
        let suspended = bundle.compile().unwrap();
        assert_ne!(same.hash(), suspended.hash());
        bundle.lifecycle[0].status = Status::Active;
        bundle.lifecycle[0].shadow = true;
        assert_ne!(bundle.compile().unwrap().hash(), same.hash());
        bundle.lifecycle[0].tenant = "globex".into();
        let errs = bundle.compile().unwrap_err();
        assert!(errs[0].message.contains("no document defines"), "{errs:?}");
    }

    #[test]
    fn markers_with_content_and_directives_are_refused() {
        assert!(split_documents("a: 1\n--- {b: 2}\n").is_err());
        assert!(split_documents("%YAML 1.2\n---\na: 1\n").is_err());
        assert_eq!(
            split_documents("# c\n---\n---\na: 1\n...\n").unwrap(),
            vec!["a: 1\n"]
        );
        // `---` inside a block scalar is indented, so not a marker.
        assert_eq!(
            split_documents("a: |\n  ---\n  x\n").unwrap(),
            vec!["a: |\n  ---\n  x\n"]
        );
    }
}
