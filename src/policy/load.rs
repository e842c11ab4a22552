//! Reading bundle files into typed documents, collecting every error with its location.

use std::path::Path;
use std::sync::Arc;

use super::de::{from_node, DeError};
use super::model::{Doc, Header, Kind, Meta, Metadata, API_VERSION};
use super::yaml::{self, Node, PathSeg, Pos};
use super::BundleError;

/// Largest bundle file we read (bounded memory on untrusted input).
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// A bundle source: a name for messages and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: Arc<str>,
    pub text: String,
}

/// A parsed document with the tree it came from, so later stages can locate fields.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: Arc<str>,
    pub node: Node,
    pub doc: Doc,
}

impl Loaded {
    /// An error about `path` (relative to the document root) in this document.
    pub fn error(&self, path: &[PathSeg], message: impl Into<String>) -> BundleError {
        BundleError::at(&self.file, self.node.locate(path), path, message)
    }

    pub fn id(&self) -> &str {
        &self.doc.metadata().id
    }

    pub fn tenant(&self) -> &str {
        &self.doc.metadata().tenant
    }
}

/// Read a file, refusing anything over [`MAX_FILE_BYTES`] before reading it.
pub fn read_source(path: &Path) -> Result<Source, BundleError> {
    let name: Arc<str> = path.display().to_string().into();
    let fail = |message: String| BundleError {
        file: name.to_string(),
        pos: Pos { line: 1, col: 1 },
        path: String::new(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "file is {} bytes; bundles are limited to {} bytes (10 MiB)",
            meta.len(),
            MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "file grew past {MAX_FILE_BYTES} bytes while being read"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8: {e}")))?;
    Ok(Source { name, text })
}

/// Parse every document of `src`. Syntax errors end the file; document-level errors are
/// collected and parsing goes on with the next document.
pub fn parse_source(src: &Source, out: &mut Vec<Loaded>, errors: &mut Vec<BundleError>) {
    if src.text.len() as u64 > MAX_FILE_BYTES {
        errors.push(BundleError {
            file: src.name.to_string(),
            pos: Pos { line: 1, col: 1 },
            path: String::new(),
            message: format!("bundle is larger than {MAX_FILE_BYTES} bytes (10 MiB)"),
        });
        return;
    }
    let docs = match yaml::parse_stream(&src.text, yaml::Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            errors.push(BundleError {
                file: src.name.to_string(),
                pos: e.pos,
                path: String::new(),
                message: format!("invalid YAML: {}", e.message),
            });
            return;
        }
    };
    let before = out.len();
    let mut saw_doc = false;
    for d in docs {
        // An empty document (a stray `---`) is not a bundle document; skip it.
        if d.root.is_null() {
            continue;
        }
        saw_doc = true;
        match parse_doc(&d.root) {
            Ok(doc) => out.push(Loaded {
                file: src.name.clone(),
                node: d.root,
                doc,
            }),
            Err(e) => errors.push(BundleError::from_de(&src.name, e, d.pos)),
        }
    }
    if !saw_doc && out.len() == before {
        errors.push(BundleError {
            file: src.name.to_string(),
            pos: Pos { line: 1, col: 1 },
            path: String::new(),
            message: "empty bundle: no documents".into(),
        });
    }
}

fn parse_doc(root: &Node) -> Result<Doc, DeError> {
    let at = |node: Option<&Node>, key: &str, message: String| DeError {
        pos: node.map(|n| n.pos).or(Some(root.pos)),
        path: vec![PathSeg::Key(key.into())],
        message,
    };
    // The header first: unknown top-level fields, missing fields and wrong types of the four
    // fields, before we know which spec type to read.
    let _: Header = from_node(root, Vec::new())?;
    let version = root.get("apiVersion");
    let version_text: String = from_node(version.unwrap_or(root), key("apiVersion"))?;
    if version_text != API_VERSION {
        return Err(at(
            version,
            "apiVersion",
            format!("unsupported apiVersion `{version_text}` (expected `{API_VERSION}`)"),
        ));
    }
    let kind_node = root.get("kind");
    let kind_text: String = from_node(kind_node.unwrap_or(root), key("kind"))?;
    let Some(kind) = Kind::parse(&kind_text) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(at(
            kind_node,
            "kind",
            format!(
                "unknown kind `{kind_text}` (expected one of {})",
                known.join(", ")
            ),
        ));
    };
    let meta_node = root.get("metadata").unwrap_or(root);
    let metadata: Metadata = from_node(meta_node, key("metadata"))?;
    let spec = root.get("spec").unwrap_or(root);
    fn spec_of<'a, S: serde::Deserialize<'a>>(
        metadata: Metadata,
        spec: &'a Node,
    ) -> Result<Meta<S>, DeError> {
        Ok(Meta {
            metadata,
            spec: from_node(spec, key("spec"))?,
        })
    }
    Ok(match kind {
        Kind::Policy => Doc::Policy(spec_of(metadata, spec)?),
        Kind::KnowledgePlane => Doc::KnowledgePlane(spec_of(metadata, spec)?),
        Kind::Connector => Doc::Connector(spec_of(metadata, spec)?),
        Kind::SqlTemplate => Doc::SqlTemplate(spec_of(metadata, spec)?),
        Kind::McpTool => Doc::McpTool(spec_of(metadata, spec)?),
    })
}

fn key(k: &str) -> Vec<PathSeg> {
    vec![PathSeg::Key(k.into())]
}
