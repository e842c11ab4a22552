//! Every string of a JSON document, for the detectors.
//!
//! A detector that reads a list of known fields misses the field a provider adds next year;
//! these walkers visit every string value *and* every object key, at any depth, so whatever
//! reaches the other side was read. [`kinds`] scans a whole document (a request, a plain
//! reply). [`fields`] names each string by its *field*: its JSON path with the array positions
//! as a stream identifies them, so a streamed answer can keep one scanner per field and find
//! text split across events (an element of an array that carries an integer `index`, such as
//! `choices[]` or `tool_calls[]`, is named by that index; the elements of any other array are
//! one field, their strings read in order, like the tokens of `logprobs.content[]`).

use serde_json::Value;

use super::{pii, secrets};

/// Calls `f` on every string value and every object key of `v`, depth first, in order.
pub fn strings<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|i| strings(i, f)),
        Value::Object(map) => {
            for (k, v) in map {
                f(k);
                strings(v, f);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The PII kinds ([`crate::policy::model::PiiKind::bit`] mask) in any string or key of `v`,
/// each string scanned on its own.
pub fn kinds(v: &Value) -> u8 {
    kinds_with(v, pii::kinds)
}

/// The secret kinds ([`crate::policy::model::SecretKind::bit`] mask), read like [`kinds`].
pub fn secret_kinds(v: &Value) -> u16 {
    kinds_with(v, secrets::kinds)
}

fn kinds_with<M: Default + std::ops::BitOrAssign>(v: &Value, scan: fn(&str) -> M) -> M {
    let mut mask = M::default();
    strings(v, &mut |s| mask |= scan(s));
    mask
}

/// [`kinds`], plus the strings of each field (see [`fields`]) concatenated in order and
/// scanned as one text: the tokens of `logprobs.content[]` read as the answer they spell.
pub fn kinds_by_field(v: &Value) -> u8 {
    by_field(v, pii::kinds)
}

/// [`secret_kinds`] with the strings of each field read together too.
pub fn secret_kinds_by_field(v: &Value) -> u16 {
    by_field(v, secrets::kinds)
}

fn by_field<M: Default + std::ops::BitOrAssign>(v: &Value, scan: fn(&str) -> M) -> M {
    let mut mask = kinds_with(v, scan);
    let mut joined: std::collections::HashMap<String, (usize, String)> = Default::default();
    let mut path = String::new();
    fields(
        v,
        &mut path,
        &mut |p, s| {
            let e = joined.entry(p.to_string()).or_default();
            e.0 += 1;
            e.1.push_str(s);
        },
        &mut |_| {},
    );
    for (n, text) in joined.values() {
        if *n > 1 {
            mask |= scan(text);
        }
    }
    mask
}

/// Calls `f(field, value)` on every string value of `v`, and `key(k)` on every object key.
///
/// `field` is the path of the value (`/`-separated, `#N` for the element of an array named by
/// its `index` N, `*` for the elements of an array without one). `path` is a scratch buffer
/// the caller may reuse between calls (it is left as it was given).
pub fn fields(
    v: &Value,
    path: &mut String,
    f: &mut impl FnMut(&str, &str),
    key: &mut impl FnMut(&str),
) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for item in items {
                let len = path.len();
                path.push('/');
                match item.get("index").and_then(Value::as_u64) {
                    Some(i) => {
                        path.push('#');
                        push_u64(path, i);
                    }
                    None => path.push('*'),
                }
                fields(item, path, f, key);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                key(k);
                let len = path.len();
                path.push('/');
                path.push_str(k);
                fields(v, path, f, key);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn push_u64(out: &mut String, n: u64) {
    use std::fmt::Write;
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_string_and_key_is_visited() {
        let v = json!({"a": ["x", {"b": "y", "jane.doe@example.com": 1}], "c": null, "d": 2});
        let mut seen = Vec::new();
        strings(&v, &mut |s| seen.push(s.to_string()));
        assert_eq!(seen, ["a", "x", "b", "y", "jane.doe@example.com", "c", "d"]);
        assert_ne!(kinds(&v), 0, "a key is read too");
        assert_eq!(kinds(&json!({"a": ["x", "y"]})), 0);
        assert_ne!(
            kinds(&json!({"deep": [[[{"z": "call 415-555-0123 now"}]]]})),
            0
        );
    }

    #[test]
    fn strings_of_one_field_are_read_together() {
        let v =
            json!({"logprobs": {"content": [{"token": "jane.doe"}, {"token": "@example.com"}]}});
        assert_eq!(kinds(&v), 0);
        assert_ne!(kinds_by_field(&v), 0);
        let apart = json!({"a": "jane.doe", "b": "@example.com"});
        assert_eq!(kinds_by_field(&apart), 0, "two fields stay apart");
    }

    #[test]
    fn fields_are_named_by_stream_index() {
        let v = json!({"choices": [
            {"index": 1, "delta": {"tool_calls": [{"index": 3, "function": {"arguments": "{\""}}]}},
            {"index": 0, "logprobs": {"content": [{"token": "a"}, {"token": "b"}]}},
        ]});
        let mut seen = Vec::new();
        let mut keys = 0;
        let mut path = String::from("pre");
        fields(
            &v,
            &mut path,
            &mut |p, s| seen.push((p.to_string(), s.to_string())),
            &mut |_| keys += 1,
        );
        assert_eq!(path, "pre");
        assert_eq!(
            seen,
            [
                (
                    "pre/choices/#1/delta/tool_calls/#3/function/arguments".into(),
                    "{\"".to_string()
                ),
                ("pre/choices/#0/logprobs/content/*/token".into(), "a".into()),
                ("pre/choices/#0/logprobs/content/*/token".into(), "b".into()),
            ]
        );
        assert_eq!(keys, 12);
    }
}
