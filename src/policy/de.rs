//! A serde `Deserializer` over the located YAML tree of [`super::yaml`].
//!
//! Model types stay plain `#[derive(Deserialize)]` structs with `deny_unknown_fields`; this
//! deserializer tracks the field path as it descends, and stamps the first error with the
//! position and path of the node it happened at (the innermost node wins).
//!
//! Scalars follow the YAML 1.2 core schema: only `true`/`false` are booleans, quoted scalars
//! are always strings, `null`/`~`/empty are null.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::yaml::{is_null_text, path_string, Node, PathSeg, Pos, Value};

/// A deserialization error with where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub pos: Option<Pos>,
    pub path: Vec<PathSeg>,
    pub message: String,
}

impl std::fmt::Display for DeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", path_string(&self.path), self.message)
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self {
            pos: None,
            path: Vec::new(),
            message: msg.to_string(),
        }
    }
}

/// Deserialize `T` from `node`, whose path from the document root is `path`.
pub fn from_node<'a, T: de::Deserialize<'a>>(
    node: &'a Node,
    path: Vec<PathSeg>,
) -> Result<T, DeError> {
    let root = Link::Root(&path);
    T::deserialize(NodeDe { node, path: &root })
}

/// The field path as a chain of borrowed links on the stack: descending costs nothing, and the
/// path is only materialised when an error needs it.
#[derive(Clone, Copy)]
enum Link<'p> {
    Root(&'p [PathSeg]),
    Key(&'p Link<'p>, &'p str),
    Index(&'p Link<'p>, usize),
}

impl Link<'_> {
    fn to_vec(self) -> Vec<PathSeg> {
        let mut rev = Vec::new();
        let mut cur = self;
        let base = loop {
            match cur {
                Link::Root(base) => break base,
                Link::Key(parent, k) => {
                    rev.push(PathSeg::Key(k.to_string()));
                    cur = *parent;
                }
                Link::Index(parent, i) => {
                    rev.push(PathSeg::Index(i));
                    cur = *parent;
                }
            }
        };
        let mut out = base.to_vec();
        out.extend(rev.into_iter().rev());
        out
    }
}

struct NodeDe<'a, 'p> {
    node: &'a Node,
    path: &'p Link<'p>,
}

impl<'a> NodeDe<'a, '_> {
    /// Attach this node's location to an error that has none yet.
    fn locate(&self, err: DeError) -> DeError {
        attach(err, self.node, self.path)
    }

    fn scalar(&self) -> Option<(&'a str, bool)> {
        match &self.node.value {
            Value::Scalar { text, quoted } => Some((text.as_str(), *quoted)),
            _ => None,
        }
    }

    fn unexpected(&self) -> de::Unexpected<'a> {
        match &self.node.value {
            Value::Scalar { text, quoted } => {
                if !quoted && is_null_text(text) {
                    de::Unexpected::Unit
                } else {
                    de::Unexpected::Str(text)
                }
            }
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }

    fn invalid<V: Visitor<'a>>(&self, visitor: &V) -> DeError {
        self.locate(de::Error::invalid_type(self.unexpected(), visitor))
    }

    fn int<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some((text, false)) => {
                if let Ok(v) = text.parse::<u64>() {
                    visitor.visit_u64(v).map_err(|e| self.locate(e))
                } else if let Ok(v) = text.parse::<i64>() {
                    visitor.visit_i64(v).map_err(|e| self.locate(e))
                } else {
                    Err(self.invalid(&visitor))
                }
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn float<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some((text, false)) => match parse_float(text) {
                Some(v) => visitor.visit_f64(v).map_err(|e| self.locate(e)),
                None => Err(self.invalid(&visitor)),
            },
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            // A plain null is not a string: `name:` with nothing after it is a mistake.
            Some((text, false)) if is_null_text(text) => Err(self.invalid(&visitor)),
            Some((text, _)) => visitor.visit_borrowed_str(text).map_err(|e| self.locate(e)),
            None => Err(self.invalid(&visitor)),
        }
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => None,
        _ => text.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

macro_rules! forward_int {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> { self.int(visitor) }
    )*};
}

impl<'a> de::Deserializer<'a> for NodeDe<'a, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, quoted } => {
                if *quoted {
                    return visitor.visit_borrowed_str(text).map_err(|e| self.locate(e));
                }
                let r = if is_null_text(text) {
                    visitor.visit_unit()
                } else if text == "true" {
                    visitor.visit_bool(true)
                } else if text == "false" {
                    visitor.visit_bool(false)
                } else if let Ok(v) = text.parse::<u64>() {
                    visitor.visit_u64(v)
                } else if let Ok(v) = text.parse::<i64>() {
                    visitor.visit_i64(v)
                } else if let Some(v) = parse_float(text) {
                    visitor.visit_f64(v)
                } else {
                    visitor.visit_borrowed_str(text)
                };
                r.map_err(|e| self.locate(e))
            }
            Value::Seq(_) => self.deserialize_seq(visitor),
            Value::Map(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(("true", false)) => visitor.visit_bool(true).map_err(|e| self.locate(e)),
            Some(("false", false)) => visitor.visit_bool(false).map_err(|e| self.locate(e)),
            _ => Err(self.invalid(&visitor)),
        }
    }

    forward_int! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.float(visitor)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.float(visitor)
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.string(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.string(visitor)
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.string(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none().map_err(|e| self.locate(e))
        } else {
            let (node, path) = (self.node, self.path);
            visitor
                .visit_some(NodeDe { node, path })
                .map_err(|e| self.locate(e))
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit().map_err(|e| self.locate(e))
        } else {
            Err(self.invalid(&visitor))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path);
        visitor
            .visit_newtype_struct(NodeDe { node, path })
            .map_err(|e| self.locate(e))
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => {
                let access = Seq {
                    items: items.iter().enumerate(),
                    path: self.path,
                };
                visitor.visit_seq(access).map_err(|e| self.locate(e))
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => {
                let access = Map {
                    entries: entries.iter(),
                    pending: None,
                    path: self.path,
                };
                visitor.visit_map(access).map_err(|e| self.locate(e))
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some((text, _)) if !self.node.is_null() => {
                let de: de::value::StrDeserializer<'_, DeError> = text.into_deserializer();
                visitor.visit_enum(de).map_err(|e| self.locate(e))
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

fn attach(mut err: DeError, node: &Node, path: &Link<'_>) -> DeError {
    if err.pos.is_none() {
        err.pos = Some(node.pos);
        err.path = path.to_vec();
    }
    err
}

/// Deserialize `node` at `path`; errors raised by a type's own `Deserialize` impl after the
/// visitor returned (custom validation such as a bad window) get this node's location.
fn located<'a, T: DeserializeSeed<'a>>(
    seed: T,
    node: &'a Node,
    path: &Link<'_>,
) -> Result<T::Value, DeError> {
    seed.deserialize(NodeDe { node, path })
        .map_err(|e| attach(e, node, path))
}

struct Seq<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p Link<'p>,
}

impl<'a> SeqAccess<'a> for Seq<'a, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => {
                let path = Link::Index(self.path, i);
                located(seed, node, &path).map(Some)
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    pending: Option<(&'a Node, &'a str)>,
    path: &'p Link<'p>,
}

fn key_text(key: &Node) -> &str {
    match &key.value {
        Value::Scalar { text, .. } => text,
        _ => "",
    }
}

impl<'a> MapAccess<'a> for Map<'a, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((key, value)) => {
                let name = key_text(key);
                self.pending = Some((value, name));
                let path = Link::Key(self.path, name);
                located(seed, key, &path).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.pending.take() {
            Some((node, name)) => {
                let path = Link::Key(self.path, name);
                located(seed, node, &path)
            }
            None => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
