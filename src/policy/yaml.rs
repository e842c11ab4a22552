//! A YAML stream turned into a tree of located nodes, with hard bounds.
//!
//! We parse with `saphyr-parser` (the maintained successor of `yaml-rust`, which reports the
//! line and column of every event) and build our own small tree instead of handing the bytes to
//! a serde YAML crate. Two reasons: every later error — a type mismatch deep in a policy, a
//! dangling reference found during validation — must point at `file:line:column` with the field
//! path, so we keep the tree and look locations up by path; and untrusted bundles must not be able
//! to exhaust memory or stack, so depth, node count and alias expansion are budgeted here, while
//! the tree is built, before anything recursive runs over it.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Where something is in a source file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Bounds that keep hostile input from costing unbounded time or memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of mappings and sequences (aliases included).
    pub max_depth: usize,
    /// Most nodes in the whole stream after alias expansion.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_nodes: 1_000_000,
        }
    }
}

/// One node of a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar with whether it was quoted (quoted scalars are always strings).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in source order; duplicate keys are rejected while building.
    Map(Vec<(Node, Node)>),
}

/// A document of the stream, with where it started.
#[derive(Debug, Clone)]
pub struct Document {
    pub pos: Pos,
    pub root: Node,
}

/// A syntax or bound error at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

// === impl Node ===

impl Node {
    /// The scalar text if this is a plain (unquoted) null-like scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if is_null_text(text))
    }

    /// Short name of the node's YAML kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value under `key` if this is a mapping holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The location of the deepest node along `path` (a missing tail resolves to its parent).
    pub fn locate(&self, path: &[PathSeg]) -> Pos {
        let mut node = self;
        for seg in path {
            let next = match (seg, &node.value) {
                (PathSeg::Key(k), Value::Map(_)) => node.get(k),
                (PathSeg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    /// The key node's own location for a mapping key (used for "unknown field" errors).
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
                .map(|(k, _)| k.pos),
            _ => None,
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Render a field path as `spec.limits[0].window`.
pub fn path_string(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

// === parsing ===

/// Streams smaller than this are parsed on the calling thread.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// Parse a whole YAML stream into documents. Stops at the first syntax error (the scanner
/// cannot resynchronise), and at the first exceeded bound.
///
/// Large streams are cut at document markers (`---` at the start of a line, which YAML forbids
/// inside any scalar) and the pieces parsed on several threads; anchors are per document, so
/// the result is the same as one sequential parse, positions included.
pub fn parse_stream(src: &str, limits: Limits) -> Result<Vec<Document>, YamlError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    // Directives (`%YAML`) belong to the document after them; keep such streams sequential.
    let has_directive = src.starts_with('%') || src.contains("\n%");
    if threads < 2 || src.len() < PARALLEL_MIN_BYTES || has_directive {
        return parse_chunk(src, 0, limits).map(|(docs, _)| docs);
    }
    let cuts = chunk_starts(src, threads);
    let pieces: Vec<(usize, &str)> = cuts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = cuts.get(i + 1).copied().unwrap_or(src.len());
            let line_offset = src.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            (line_offset, &src[start..end])
        })
        .collect();
    let results: Vec<Result<(Vec<Document>, usize), YamlError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|&(offset, piece)| scope.spawn(move || parse_chunk(piece, offset, limits)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(YamlError {
                        pos: Pos { line: 1, col: 1 },
                        message: "YAML parser failed".into(),
                    })
                })
            })
            .collect()
    });
    let mut docs = Vec::new();
    let mut nodes = 0usize;
    for r in results {
        let (mut d, n) = r?;
        nodes = nodes.saturating_add(n);
        if nodes > limits.max_nodes {
            let pos = d.first().map_or(Pos { line: 1, col: 1 }, |d| d.pos);
            return Err(YamlError {
                pos,
                message: format!(
                    "document expands to more than {} nodes (alias bomb?)",
                    limits.max_nodes
                ),
            });
        }
        docs.append(&mut d);
    }
    Ok(docs)
}

/// Byte offsets where pieces start: 0, then up to `n - 1` document-marker lines near even
/// splits of the text.
fn chunk_starts(src: &str, n: usize) -> Vec<usize> {
    let bytes = src.as_bytes();
    let is_marker = |at: usize| {
        bytes[at..].starts_with(b"---")
            && matches!(bytes.get(at + 3), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    };
    let mut starts = vec![0];
    for k in 1..n {
        let target = src.len() * k / n;
        let floor = *starts.last().unwrap_or(&0);
        // The first marker line at or after the target.
        let mut at = target.max(floor + 1);
        let found = loop {
            let Some(nl) = bytes
                .get(at..)
                .and_then(|b| b.iter().position(|c| *c == b'\n'))
            else {
                break None;
            };
            let line = at + nl + 1;
            if line < bytes.len() && is_marker(line) {
                break Some(line);
            }
            at = line;
        };
        match found {
            Some(line) => starts.push(line),
            None => break,
        }
    }
    starts
}

/// Parse one piece whose first line is line `line_offset + 1` of the whole stream. Returns the
/// documents and the nodes counted against the budget.
fn parse_chunk(
    src: &str,
    line_offset: usize,
    limits: Limits,
) -> Result<(Vec<Document>, usize), YamlError> {
    let mut builder = Builder {
        limits,
        nodes: 0,
        anchors: Vec::new(),
        stack: Vec::new(),
        docs: Vec::new(),
        doc_pos: Pos::default(),
    };
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e| YamlError {
            pos: Pos {
                line: e.marker().line() + line_offset,
                col: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            line: span.start.line() + line_offset,
            col: span.start.col() + 1,
        };
        builder.on_event(event, pos)?;
    }
    Ok((builder.docs, builder.nodes))
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    /// A mapping under construction; `key` holds a key waiting for its value.
    Map {
        node: Node,
        anchor: usize,
        key: Option<Node>,
    },
}

struct Builder {
    limits: Limits,
    nodes: usize,
    /// Anchored nodes by anchor id, with their subtree size (for expansion accounting).
    anchors: Vec<Option<(Node, usize)>>,
    stack: Vec<Frame>,
    docs: Vec<Document>,
    doc_pos: Pos,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), YamlError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                self.doc_pos = pos;
                self.anchors.clear();
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                check_tag(tag.as_deref(), pos)?;
                // `!!str` is the only tag allowed: it makes a plain scalar a string.
                let tagged_str = tag.is_some();
                self.count(pos, 1)?;
                let node = Node {
                    pos,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        quoted: tagged_str || !matches!(style, ScalarStyle::Plain),
                    },
                };
                self.remember(anchor, &node, 1);
                self.push_value(node, pos)
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                check_tag(tag.as_deref(), pos)?;
                if self.stack.len() >= self.limits.max_depth {
                    return Err(YamlError {
                        pos,
                        message: format!(
                            "nesting deeper than {} levels is not allowed",
                            self.limits.max_depth
                        ),
                    });
                }
                self.count(pos, 1)?;
                let frame = if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        node: Node {
                            pos,
                            value: Value::Seq(Vec::new()),
                        },
                        anchor,
                    }
                } else {
                    Frame::Map {
                        node: Node {
                            pos,
                            value: Value::Map(Vec::new()),
                        },
                        anchor,
                        key: None,
                    }
                };
                self.stack.push(frame);
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { node, anchor }) | Some(Frame::Map { node, anchor, .. }) => {
                        (node, anchor)
                    }
                    None => {
                        return Err(YamlError {
                            pos,
                            message: "unbalanced collection end".into(),
                        })
                    }
                };
                if anchor > 0 {
                    let size = subtree_size(&node);
                    self.remember(anchor, &node, size);
                }
                self.push_value(node, pos)
            }
            Event::Alias(id) => {
                let Some(Some((node, size))) = self.anchors.get(id).cloned() else {
                    return Err(YamlError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                // Aliases expand to copies: charge the whole copy against the node budget, so
                // a "billion laughs" bomb fails after `max_nodes` work, not after gigabytes.
                self.count(pos, size)?;
                if self.stack.len() + subtree_depth(&node) > self.limits.max_depth {
                    return Err(YamlError {
                        pos,
                        message: format!(
                            "nesting deeper than {} levels is not allowed",
                            self.limits.max_depth
                        ),
                    });
                }
                self.push_value(node, pos)
            }
        }
    }

    fn count(&mut self, pos: Pos, n: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError {
                pos,
                message: format!(
                    "document expands to more than {} nodes (alias bomb?)",
                    self.limits.max_nodes
                ),
            });
        }
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node, size: usize) {
        if anchor == 0 {
            return;
        }
        if self.anchors.len() <= anchor {
            self.anchors.resize(anchor + 1, None);
        }
        self.anchors[anchor] = Some((node.clone(), size));
    }

    fn push_value(&mut self, node: Node, pos: Pos) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => {
                self.docs.push(Document {
                    pos: self.doc_pos,
                    root: node,
                });
                Ok(())
            }
            Some(Frame::Seq { node: seq, .. }) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
                Ok(())
            }
            Some(Frame::Map { node: map, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. }) {
                        return Err(YamlError {
                            pos,
                            message: "mapping keys must be scalars".into(),
                        });
                    }
                    *key = Some(node);
                    Ok(())
                }
                Some(k) => {
                    if let Value::Map(entries) = &mut map.value {
                        // Keys compare by text: `a` and `"a"` are the same key.
                        let same = |e: &Node| match (&e.value, &k.value) {
                            (Value::Scalar { text: a, .. }, Value::Scalar { text: b, .. }) => {
                                a == b
                            }
                            _ => false,
                        };
                        if entries.iter().any(|(e, _)| same(e)) {
                            let name = match &k.value {
                                Value::Scalar { text, .. } => text.clone(),
                                _ => String::new(),
                            };
                            return Err(YamlError {
                                pos: k.pos,
                                message: format!("duplicate key `{name}`"),
                            });
                        }
                        entries.push((k, node));
                    }
                    Ok(())
                }
            },
        }
    }
}

/// Tags are not part of the bundle language: they would change meaning silently in other YAML
/// tools (and some YAML libraries construct objects from them). Only `!!str`, which changes
/// nothing a quoted scalar would not, is accepted.
fn check_tag(tag: Option<&saphyr_parser::Tag>, pos: Pos) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(t) if (t.handle == "!!" || t.handle == "tag:yaml.org,2002:") && t.suffix == "str" => {
            Ok(())
        }
        Some(t) => Err(YamlError {
            pos,
            message: format!("unsupported YAML tag `{}{}`", t.handle, t.suffix),
        }),
    }
}

fn subtree_size(node: &Node) -> usize {
    // Iterative: the tree is already depth-bounded, but keep it cheap and stack-free anyway.
    let mut count = 0usize;
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        count = count.saturating_add(1);
        match &n.value {
            Value::Scalar { .. } => {}
            Value::Seq(items) => todo.extend(items.iter()),
            Value::Map(entries) => {
                for (k, v) in entries {
                    todo.push(k);
                    todo.push(v);
                }
            }
        }
    }
    count
}

fn subtree_depth(node: &Node) -> usize {
    let mut max = 0;
    let mut todo = vec![(node, 0usize)];
    while let Some((n, d)) = todo.pop() {
        match &n.value {
            Value::Scalar { .. } => max = max.max(d),
            Value::Seq(items) => todo.extend(items.iter().map(|i| (i, d + 1))),
            Value::Map(entries) => todo.extend(entries.iter().map(|(_, v)| (v, d + 1))),
        }
        max = max.max(d + usize::from(!matches!(n.value, Value::Scalar { .. })));
    }
    max
}

#[cfg(test)]
mod tests;
