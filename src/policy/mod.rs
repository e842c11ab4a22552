//! Policy bundles: the YAML language (`docs/policy.md`), its validation, and compilation into
//! an immutable, indexed, content-addressed [`Snapshot`].
//!
//! ```text
//! files ──parse──▶ Loaded docs ──validate──▶ compile ──▶ Snapshot { hash, index }
//!        (yaml, de)              (validate, sql)       (compile, canonical)
//! ```
//!
//! Every stage collects all the errors it can find; each carries `file:line:column` and the
//! field path.

pub mod args;
pub mod canonical;
pub mod compile;
pub mod de;
pub mod load;
pub mod model;
pub mod overlay;
pub mod sql;
pub mod store;
pub mod validate;
pub mod yaml;

use std::path::Path;

pub use compile::{CompiledPolicy, Snapshot};
pub use load::{Loaded, Source};

use yaml::{path_string, PathSeg, Pos};

/// One problem in a bundle, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct BundleError {
    pub file: String,
    pub pos: Pos,
    /// Field path from the document root, e.g. `spec.limits[0].window` (empty for file-level).
    pub path: String,
    pub message: String,
}

impl BundleError {
    pub fn at(file: &str, pos: Pos, path: &[PathSeg], message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            pos,
            path: path_string(path),
            message: message.into(),
        }
    }

    fn from_de(file: &str, e: de::DeError, fallback: Pos) -> Self {
        Self {
            file: file.to_string(),
            pos: e.pos.unwrap_or(fallback),
            path: path_string(&e.path),
            message: e.message,
        }
    }

    /// `file:line:column: path: message`, the format editors and CI logs understand.
    pub fn render(&self) -> String {
        if self.path.is_empty() {
            format!(
                "{}:{}:{}: {}",
                self.file, self.pos.line, self.pos.col, self.message
            )
        } else {
            format!(
                "{}:{}:{}: {}: {}",
                self.file, self.pos.line, self.pos.col, self.path, self.message
            )
        }
    }
}

/// Parse, validate and compile bundle sources into a snapshot, or return every error found.
pub fn compile_sources(sources: &[Source]) -> Result<Snapshot, Vec<BundleError>> {
    let (docs, mut errors) = parse_sources(sources);
    match compile_docs(docs) {
        Ok(snap) if errors.is_empty() => Ok(snap),
        Ok(_) => {
            sort_errors(&mut errors);
            Err(errors)
        }
        Err(more) => {
            errors.extend(more);
            sort_errors(&mut errors);
            Err(errors)
        }
    }
}

/// Parse sources into typed documents, with every parse error found.
pub fn parse_sources(sources: &[Source]) -> (Vec<Loaded>, Vec<BundleError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for src in sources {
        load::parse_source(src, &mut docs, &mut errors);
    }
    (docs, errors)
}

/// Validate parsed documents and compile them into a snapshot.
pub fn compile_docs(docs: Vec<Loaded>) -> Result<Snapshot, Vec<BundleError>> {
    let mut errors = Vec::new();
    let checked = validate::validate(&docs, &mut errors);
    if !errors.is_empty() {
        sort_errors(&mut errors);
        return Err(errors);
    }
    Ok(compile::compile(docs, checked))
}

/// Read the files (each at most 10 MiB) and compile them.
pub fn compile_files<P: AsRef<Path>>(paths: &[P]) -> Result<Snapshot, Vec<BundleError>> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match load::read_source(p.as_ref()) {
            Ok(s) => sources.push(s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    compile_sources(&sources)
}

/// Parse and compile one in-memory bundle (tests, fuzzing, the policy service).
///
/// ```
/// let bundle = "apiVersion: warden/v1\nkind: Policy\nmetadata: { id: p1, tenant: acme }\n\
///               spec: { status: active, scope: { all_runs: true }, match: { channel: http }, effect: allow }\n";
/// let snap = warden::policy::compile_str("bundle.yaml", bundle).unwrap();
/// assert!(snap.hash().starts_with("sha256:"));
/// let errors = warden::policy::compile_str("bad.yaml", "kind: Nope\n").unwrap_err();
/// assert!(errors[0].to_string().starts_with("bad.yaml:1:1:"));
/// ```
pub fn compile_str(name: &str, text: &str) -> Result<Snapshot, Vec<BundleError>> {
    compile_sources(&[Source {
        name: name.into(),
        text: text.to_string(),
    }])
}

fn sort_errors(errors: &mut [BundleError]) {
    errors.sort_by(|a, b| {
        (a.file.as_str(), a.pos.line, a.pos.col, a.message.as_str()).cmp(&(
            b.file.as_str(),
            b.pos.line,
            b.pos.col,
            b.message.as_str(),
        ))
    });
}

#[cfg(test)]
mod tests;

/// Read one YAML document of any serde type with the bundle parser's guarantees: budgets,
/// YAML 1.2 scalars, unknown-field errors with `file:line:column` and field path. Used for
/// configuration files.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &str,
) -> Result<T, BundleError> {
    let at_start = Pos { line: 1, col: 1 };
    let docs = yaml::parse_stream(text, yaml::Limits::default()).map_err(|e| BundleError {
        file: name.to_string(),
        pos: e.pos,
        path: String::new(),
        message: format!("invalid YAML: {}", e.message),
    })?;
    let mut docs = docs.into_iter().filter(|d| !d.root.is_null());
    let (Some(doc), None) = (docs.next(), docs.next()) else {
        return Err(BundleError::at(
            name,
            at_start,
            &[],
            "expected exactly one YAML document",
        ));
    };
    de::from_node(&doc.root, Vec::new()).map_err(|e| BundleError::from_de(name, e, doc.pos))
}
