//! Parameter values: the JSON object an agent sends, checked against the template's typed
//! declarations (`docs/policy.md`, "Parameter types") into values ready for binding. Pure: no
//! I/O, no coercion — a value must already be of its type.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value as Json};
use sqlx::types::BigDecimal;

use crate::policy::compile::ParamCheck;
use crate::policy::model::{ParamSpec, ParamType};

/// The longest `numeric` string accepted.
const MAX_NUMERIC_LEN: usize = 1_000;

/// One checked scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i32),
    Bigint(i64),
    Float(f64),
    Numeric(BigDecimal),
    Bool(bool),
    /// `text` and `enum`.
    Text(String),
    Uuid(uuid::Uuid),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    Timestamptz(DateTime<Utc>),
    Json(Json),
}

/// One checked parameter value, in `$n` order.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// SQL `NULL` of the declared type (an array's when `array`).
    Null(ParamType, bool),
    One(Scalar),
    /// An array of the declared type (no nulls).
    Many(ParamType, Vec<Scalar>),
}

/// Why a value was refused: the parameter and the rule (the `invalid_params` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

fn err(name: &str, what: impl std::fmt::Display) -> ParamError {
    ParamError(format!("parameter `{name}`: {what}"))
}

/// What a JSON value is, for messages.
fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Check the body (a JSON object) against the template's parameters, in `$n` order. A missing
/// parameter, one the template does not declare, and a body that is not an object are refused
/// like a badly typed value.
pub fn check(params: &[ParamCheck], body: &[u8]) -> Result<Vec<Bound>, ParamError> {
    let obj: Map<String, Json> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Json>(body) {
            Ok(Json::Object(m)) => m,
            Ok(other) => {
                return Err(ParamError(format!(
                    "the body must be a JSON object of parameters, not {}",
                    kind_of(&other)
                )))
            }
            Err(e) => return Err(ParamError(format!("the body is not valid JSON: {e}"))),
        }
    };
    let mut extra: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !params.iter().any(|p| p.name == *k))
        .collect();
    extra.sort_unstable();
    if let Some(first) = extra.first() {
        let mut takes: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        takes.sort_unstable();
        return Err(ParamError(format!(
            "unknown parameter `{first}` (the template takes: {})",
            if takes.is_empty() {
                "none".to_string()
            } else {
                takes.join(", ")
            }
        )));
    }
    params
        .iter()
        .map(|p| match obj.get(&p.name) {
            None => Err(err(&p.name, "is missing")),
            Some(v) => value(p, v),
        })
        .collect()
}

fn value(p: &ParamCheck, v: &Json) -> Result<Bound, ParamError> {
    let spec = &p.spec;
    if v.is_null() {
        return if spec.nullable {
            Ok(Bound::Null(spec.kind, spec.array))
        } else {
            Err(err(
                &p.name,
                format!("null is not allowed for {}", spec.type_name()),
            ))
        };
    }
    if !spec.array {
        return scalar(p, v, None).map(Bound::One);
    }
    let Json::Array(items) = v else {
        return Err(err(
            &p.name,
            format!(
                "expected {} (an array), got {}",
                spec.type_name(),
                kind_of(v)
            ),
        ));
    };
    if let Some(max) = spec.max_items {
        if items.len() > max as usize {
            return Err(err(
                &p.name,
                format!("{} items, more than max_items {max}", items.len()),
            ));
        }
    }
    let out = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.is_null() {
                return Err(err(
                    &p.name,
                    format!("item {i} is null; array items never are"),
                ));
            }
            scalar(p, item, Some(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bound::Many(spec.kind, out))
}

/// What each type expects, for messages.
fn expected(t: ParamType) -> &'static str {
    match t {
        ParamType::Int => "int (an integer from -2147483648 to 2147483647)",
        ParamType::Bigint => "bigint (a 64-bit integer)",
        ParamType::Float => "float (a number)",
        ParamType::Numeric => "numeric (a decimal string such as \"12.50\")",
        ParamType::Bool => "bool (true or false)",
        ParamType::Text => "text (a string)",
        ParamType::Uuid => "uuid (a hyphenated UUID string)",
        ParamType::Date => "date (a \"YYYY-MM-DD\" string)",
        ParamType::Timestamp => {
            "timestamp (an RFC 3339 date-time without offset, \"2026-01-31T12:00:00\")"
        }
        ParamType::Timestamptz => {
            "timestamptz (an RFC 3339 date-time with offset, \"2026-01-31T12:00:00Z\")"
        }
        ParamType::Enum => "enum (a string)",
        ParamType::Json => "json",
    }
}

fn scalar(p: &ParamCheck, v: &Json, item: Option<usize>) -> Result<Scalar, ParamError> {
    let spec: &ParamSpec = &p.spec;
    let t = spec.kind;
    let at = match item {
        Some(i) => format!("item {i}: "),
        None => String::new(),
    };
    let wrong = || {
        err(
            &p.name,
            format!("{at}expected {}, got {}", expected(t), kind_of(v)),
        )
    };
    let bad = |why: String| err(&p.name, format!("{at}{why}"));
    let text = || v.as_str().ok_or_else(wrong);
    Ok(match t {
        ParamType::Int => {
            let n = v
                .as_i64()
                .filter(|_| v.is_i64() || v.is_u64())
                .ok_or_else(|| {
                    if v.is_u64() {
                        bad(format!("{v} is out of range for {}", expected(t)))
                    } else {
                        wrong()
                    }
                })?;
            Scalar::Int(
                i32::try_from(n)
                    .map_err(|_| bad(format!("{n} is out of range for {}", expected(t))))?,
            )
        }
        ParamType::Bigint => match v {
            Json::Number(n) if n.is_i64() => Scalar::Bigint(n.as_i64().unwrap_or_default()),
            Json::Number(n) if n.is_u64() => {
                return Err(bad(format!("{n} is out of range for {}", expected(t))))
            }
            _ => return Err(wrong()),
        },
        ParamType::Float => match v.as_f64() {
            Some(f) if f.is_finite() => Scalar::Float(f),
            _ => return Err(wrong()),
        },
        ParamType::Numeric => {
            let s = text()?;
            if s.len() > MAX_NUMERIC_LEN {
                return Err(bad(format!(
                    "a numeric of {} characters, more than {MAX_NUMERIC_LEN}",
                    s.len()
                )));
            }
            if !is_decimal(s) {
                return Err(bad(format!("`{s}` is not a decimal number")));
            }
            let d = s
                .parse::<BigDecimal>()
                .map_err(|_| bad(format!("`{s}` is not a decimal number")))?;
            // An exponent must not turn a short text into a long number (`1e9999`).
            if d.to_plain_string().len() > MAX_NUMERIC_LEN {
                return Err(bad(format!(
                    "`{s}` has more than {MAX_NUMERIC_LEN} digits written out"
                )));
            }
            Scalar::Numeric(d)
        }
        ParamType::Bool => Scalar::Bool(v.as_bool().ok_or_else(wrong)?),
        ParamType::Text => {
            let s = text()?;
            if s.contains('\0') {
                return Err(bad("a NUL character is not allowed in text".into()));
            }
            if let Some(max) = spec.max_len {
                let n = s.chars().count();
                if n > max as usize {
                    return Err(bad(format!("{n} characters, more than max_len {max}")));
                }
            }
            if spec.pattern.is_some() {
                match &p.pattern {
                    Some(re) if re.is_match(s) => {}
                    Some(_) => return Err(bad("does not match the template's pattern".into())),
                    // A pattern that did not compile never passes (the bundle is refused
                    // before this; fail closed if not).
                    None => return Err(bad("the template's pattern is not usable".into())),
                }
            }
            Scalar::Text(s.to_string())
        }
        ParamType::Uuid => {
            let s = text()?;
            let ok = s.len() == 36 && s.as_bytes().get(8) == Some(&b'-');
            match uuid::Uuid::try_parse(s) {
                Ok(u) if ok => Scalar::Uuid(u),
                _ => return Err(bad(format!("`{s}` is not a hyphenated UUID"))),
            }
        }
        ParamType::Date => {
            let s = text()?;
            match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(d) if s.len() == 10 => Scalar::Date(d),
                _ => return Err(bad(format!("`{s}` is not a YYYY-MM-DD date"))),
            }
        }
        ParamType::Timestamp => {
            let s = text()?;
            match NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
                Ok(d) if s.as_bytes().get(4) == Some(&b'-') && s.len() >= 19 => {
                    Scalar::Timestamp(d)
                }
                _ if DateTime::parse_from_rfc3339(s).is_ok() => {
                    return Err(bad(format!(
                        "`{s}` has an offset; a timestamp has none (declare timestamptz)"
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "`{s}` is not an RFC 3339 date-time without offset"
                    )))
                }
            }
        }
        ParamType::Timestamptz => {
            let s = text()?;
            match DateTime::parse_from_rfc3339(s) {
                Ok(d) => Scalar::Timestamptz(d.with_timezone(&Utc)),
                Err(_) => {
                    return Err(bad(format!(
                        "`{s}` is not an RFC 3339 date-time with offset"
                    )))
                }
            }
        }
        ParamType::Enum => {
            let s = text()?;
            if !spec.values.iter().any(|x| x == s) {
                return Err(bad(format!(
                    "`{s}` is not one of {}",
                    spec.values.join(", ")
                )));
            }
            Scalar::Text(s.to_string())
        }
        ParamType::Json => Scalar::Json(v.clone()),
    })
}

/// `-?digits[.digits][e[+-]digits]`, or with the integer part omitted (`.5`): what PostgreSQL's
/// `numeric` reads, without `NaN` and `Infinity`.
fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let f = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - f;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let e = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == e || i - e > 4 {
            return false;
        }
    }
    i == b.len()
}

impl Scalar {
    /// The value as canonical JSON: the form hashed into the query hash and shown in content,
    /// so two spellings of one instant (`+02:00` and `Z`) hash alike. A numeric keeps the digits
    /// and scale sent, in plain form (`"1e3"` is `"1000"`, `"1.50"` stays `"1.50"`).
    pub fn to_json(&self) -> Json {
        match self {
            Scalar::Int(n) => Json::from(*n),
            Scalar::Bigint(n) => Json::from(*n),
            Scalar::Float(f) => Json::from(*f),
            Scalar::Numeric(d) => Json::String(d.to_plain_string()),
            Scalar::Bool(b) => Json::Bool(*b),
            Scalar::Text(s) => Json::String(s.clone()),
            Scalar::Uuid(u) => Json::String(u.hyphenated().to_string()),
            Scalar::Date(d) => Json::String(fmt_date(d)),
            Scalar::Timestamp(t) => Json::String(fmt_timestamp(t)),
            Scalar::Timestamptz(t) => Json::String(fmt_timestamptz(t)),
            Scalar::Json(v) => v.clone(),
        }
    }
}

/// A date as `YYYY-MM-DD`: how parameters are read and results written.
pub fn fmt_date(d: &NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A timestamp without zone as `YYYY-MM-DDTHH:MM:SS[.fraction]`.
pub fn fmt_timestamp(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

/// A timestamp with zone as RFC 3339 in UTC (`…Z`), the fraction as long as it needs.
pub fn fmt_timestamptz(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Bound {
    pub fn to_json(&self) -> Json {
        match self {
            Bound::Null(..) => Json::Null,
            Bound::One(s) => s.to_json(),
            Bound::Many(_, items) => Json::Array(items.iter().map(Scalar::to_json).collect()),
        }
    }
}

#[cfg(test)]
mod tests;
