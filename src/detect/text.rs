//! Text the detectors can read: a body decoded from its content coding and charset, and the
//! other readings an agent or an upstream may give the same bytes (JSON escapes, `%`-escapes,
//! HTML character references).
//!
//! What cannot be decoded is *unknown*, never clean: [`readable_text`] answers
//! [`Unreadable`], and the caller makes the detector's fact unavailable so the policy's
//! `failure_mode` decides. Unreadable are: a content coding other than `identity` (Warden asks
//! upstreams for `identity`; it does not inflate), a charset it does not know, bytes that are
//! not valid in the charset, and text holding NUL characters (binary data, or UTF-16/32 sent
//! without a label, which would otherwise pass as "valid UTF-8" full of NULs). An empty body
//! is clean.
//!
//! Charsets: UTF-8 (the default, a UTF-8 BOM is skipped), UTF-16 LE/BE (by label or BOM; a
//! BOM wins over the label, as browsers do), and the single-byte Latin family
//! (`iso-8859-1`, `latin1`, `us-ascii`, `windows-1252`, …, all read as windows-1252 like
//! browsers do). Where readers could disagree, every reading is scanned: a body labelled Latin-1
//! that is also valid UTF-8 is scanned both ways, unlabelled-BOM-less `utf-16` both LE and BE.
//!
//! [`pii_kinds`] scans every reading of a body: the text itself, the text with JSON/JavaScript
//! escapes decoded (for a JSON body that is every key and string value, decoded), `%`-decoded,
//! and with HTML character references decoded. The MCP and SQL
//! channels reuse this for their bodies.

use std::borrow::Cow;

use http::HeaderMap;

use super::{pii, secrets};

/// Why a body could not be read as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("content coding `{0}` is not decoded (only identity is read)")]
    Encoded(String),
    #[error("charset `{0}` is not supported")]
    Charset(String),
    #[error("the body is not valid {0}")]
    Invalid(&'static str),
    #[error("the body holds NUL characters (binary data, or an unlabelled UTF-16/32 text)")]
    Binary,
}

/// The charsets [`decode`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    /// The single-byte Latin family, read as windows-1252 (a superset of ISO-8859-1's
    /// printable range, and what browsers do for every one of these labels).
    Latin,
    Utf16Le,
    Utf16Be,
    /// `utf-16` without a BOM: LE by convention, BE scanned too.
    Utf16Unmarked,
}

fn charset_by_label(label: &str) -> Option<Charset> {
    Some(match label {
        "utf-8" | "utf8" | "unicode-1-1-utf-8" => Charset::Utf8,
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "iso_8859-1:1987" | "latin1" | "l1"
        | "iso-ir-100" | "csisolatin1" | "cp819" | "ibm819" | "us-ascii" | "ascii"
        | "ansi_x3.4-1968" | "windows-1252" | "cp1252" | "x-cp1252" => Charset::Latin,
        "utf-16le" => Charset::Utf16Le,
        "utf-16be" => Charset::Utf16Be,
        "utf-16" => Charset::Utf16Unmarked,
        _ => return None,
    })
}

/// The `Content-Type`, if any. Several that disagree (readers pick different ones) or one that
/// is not visible ASCII make the body unreadable.
pub fn one_content_type(headers: &HeaderMap) -> Result<Option<&str>, Unreadable> {
    let mut found: Option<&str> = None;
    for v in headers.get_all(http::header::CONTENT_TYPE) {
        let v = v
            .to_str()
            .map_err(|_| Unreadable::Charset("an unreadable Content-Type".into()))?;
        match found {
            Some(f) if !f.eq_ignore_ascii_case(v) => {
                return Err(Unreadable::Charset(
                    "conflicting Content-Type headers".into(),
                ))
            }
            _ => found = Some(v),
        }
    }
    Ok(found)
}

/// The `charset` parameter of a content type, lower-cased and unquoted.
pub fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| {
            v.trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_ascii_lowercase()
        })
    })
}

/// Every `Content-Encoding` must be `identity` (or absent) for the body to be read.
pub fn check_coding(headers: &HeaderMap) -> Result<(), Unreadable> {
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        let s = v
            .to_str()
            .map_err(|_| Unreadable::Encoded(String::from_utf8_lossy(v.as_bytes()).into()))?;
        for coding in s.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Err(Unreadable::Encoded(coding.to_ascii_lowercase()));
            }
        }
    }
    Ok(())
}

/// The body as the text its headers say it is (content coding, then charset).
pub fn readable_text<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, str>, Unreadable> {
    check_coding(headers)?;
    decode(one_content_type(headers)?, body)
}

/// Decode `body` by the charset of `content_type` (UTF-8 when none), a BOM winning.
pub fn decode<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, str>, Unreadable> {
    let (cs, rest) = choose(content_type, body)?;
    decode_as(cs, rest)
}

fn choose<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<(Charset, &'a [u8]), Unreadable> {
    if let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
        return Ok((Charset::Utf8, rest));
    }
    if let Some(rest) = body.strip_prefix(b"\xFF\xFE") {
        return Ok((Charset::Utf16Le, rest));
    }
    if let Some(rest) = body.strip_prefix(b"\xFE\xFF") {
        return Ok((Charset::Utf16Be, rest));
    }
    let cs = match content_type.and_then(charset_param) {
        None => Charset::Utf8,
        Some(label) => charset_by_label(&label).ok_or(Unreadable::Charset(label))?,
    };
    Ok((cs, body))
}

fn decode_as(cs: Charset, bytes: &[u8]) -> Result<Cow<'_, str>, Unreadable> {
    let text: Cow<'_, str> = match cs {
        Charset::Utf8 => {
            Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| Unreadable::Invalid("UTF-8"))?)
        }
        Charset::Latin => match std::str::from_utf8(bytes) {
            Ok(ascii) if ascii.is_ascii() => Cow::Borrowed(ascii),
            _ => Cow::Owned(bytes.iter().map(|&b| windows_1252(b)).collect()),
        },
        Charset::Utf16Le | Charset::Utf16Unmarked => Cow::Owned(utf16(bytes, false)?),
        Charset::Utf16Be => Cow::Owned(utf16(bytes, true)?),
    };
    if memchr::memchr(0, text.as_bytes()).is_some() {
        return Err(Unreadable::Binary);
    }
    Ok(text)
}

fn utf16(bytes: &[u8], big_endian: bool) -> Result<String, Unreadable> {
    if !bytes.len().is_multiple_of(2) {
        return Err(Unreadable::Invalid("UTF-16 (odd length)"));
    }
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| Unreadable::Invalid("UTF-16 (lone surrogate)"))
}

/// windows-1252: ISO-8859-1 with printable characters in 0x80–0x9F (the five undefined
/// positions map to the C1 control of the same number, as browsers do).
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}',
        '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}',
        '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}',
        '\u{9D}', '\u{017E}', '\u{0178}',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// Every reading of the body a reader could reasonably give it: the one its headers say, and
/// others where readers disagree (see the module docs).
pub fn readings<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Vec<Cow<'a, str>>, Unreadable> {
    check_coding(headers)?;
    let (cs, rest) = choose(one_content_type(headers)?, body)?;
    let first = decode_as(cs, rest)?;
    let mut out = Vec::with_capacity(2);
    match cs {
        Charset::Latin if !first.is_ascii() => {
            if let Ok(u) = std::str::from_utf8(rest) {
                if !u.contains('\0') {
                    out.push(Cow::Borrowed(u));
                }
            }
        }
        Charset::Utf16Unmarked => {
            if let Ok(be) = decode_as(Charset::Utf16Be, rest) {
                out.push(be);
            }
        }
        _ => {}
    }
    out.insert(0, first);
    Ok(out)
}

// === scanning ===

/// The PII kinds (a [`pii::kinds`] bitmask) in every reading of a body; unreadable when the
/// headers and bytes do not make a text.
pub fn pii_kinds(headers: &HeaderMap, body: &[u8]) -> Result<u8, Unreadable> {
    body_kinds(headers, body, pii::kinds)
}

/// The secret kinds (a [`secrets::kinds`] bitmask) in every reading of a body, like
/// [`pii_kinds`].
pub fn secret_kinds(headers: &HeaderMap, body: &[u8]) -> Result<u16, Unreadable> {
    body_kinds(headers, body, secrets::kinds)
}

fn body_kinds<M: Default + std::ops::BitOrAssign>(
    headers: &HeaderMap,
    body: &[u8],
    scan: fn(&str) -> M,
) -> Result<M, Unreadable> {
    if body.is_empty() {
        return Ok(M::default());
    }
    let ct = one_content_type(headers)?.unwrap_or("");
    let form = ct.split(';').next().is_some_and(|e| {
        e.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    let mut mask = M::default();
    for text in readings(headers, body)? {
        mask |= scan_body_with(&text, form, scan);
    }
    Ok(mask)
}

/// The PII kinds of one body text: raw, with JSON/JavaScript escapes decoded, and the lighter
/// decodings of [`scan_text`] over both.
///
/// A JSON document's keys and string values are its text with the escapes decoded: backslashes
/// occur only inside strings. Decoding the whole text reads every key and value of a JSON body
/// (NDJSON, JSON with trailing garbage, JavaScript and SSE alike), duplicates included, where a
/// parsed value would keep only one of two duplicate keys, and a reader the other.
pub fn scan_body(text: &str, form: bool) -> u8 {
    scan_body_with(text, form, pii::kinds)
}

fn scan_body_with<M: Default + std::ops::BitOrAssign>(
    text: &str,
    form: bool,
    scan: fn(&str) -> M,
) -> M {
    let mut mask = scan_text_with(text, form, scan);
    if text.contains('\\') {
        mask |= scan_text_with(&unescape_js(text), form, scan);
    }
    mask
}

/// The PII kinds of a short text (a path, a query, a header value, a JSON string): raw,
/// `%`-decoded (repeatedly, `+` as a space where `plus_as_space`), and with HTML character
/// references decoded.
pub fn scan_text(text: &str, plus_as_space: bool) -> u8 {
    scan_text_with(text, plus_as_space, pii::kinds)
}

/// The secret kinds of a short text, with the readings of [`scan_text`].
pub fn secret_scan_text(text: &str, plus_as_space: bool) -> u16 {
    scan_text_with(text, plus_as_space, secrets::kinds)
}

fn scan_text_with<M: Default + std::ops::BitOrAssign>(
    text: &str,
    plus_as_space: bool,
    scan: fn(&str) -> M,
) -> M {
    let mut mask = scan(text);
    if has_percent_escape(text) || (plus_as_space && text.contains('+')) {
        let mut cur = percent_decode(text, plus_as_space);
        mask |= scan(&cur);
        // An upstream may decode more than once: so do we, a few rounds.
        for _ in 0..2 {
            if !has_percent_escape(&cur) {
                break;
            }
            cur = percent_decode(&cur, plus_as_space);
            mask |= scan(&cur);
        }
    }
    if text.contains('&') {
        let un = html_unescape(text);
        if un != text {
            mask |= scan(&un);
        }
    }
    mask
}

fn has_percent_escape(s: &str) -> bool {
    let b = s.as_bytes();
    memchr::memchr_iter(b'%', b).any(|i| {
        b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    })
}

/// `%XX` decoded (malformed escapes kept as they are), `+` as a space where asked; bytes
/// that are not UTF-8 afterwards become U+FFFD.
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |at: usize| b.get(at).and_then(|&c| char::from(c).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            // Two hex digits make at most 255.
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// JSON and JavaScript escapes decoded textually (`\uXXXX` with surrogate pairs, `\u{…}`,
/// `\xHH`, `\n`, `\"`, …), for text that is not a JSON document (JSON with trailing garbage,
/// JavaScript, SSE); a lone surrogate becomes U+FFFD.
pub fn unescape_js(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    // Reads `n` hex digits, consuming them only when all are there.
    let hex_n = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| -> Option<u32> {
        let mut look = chars.clone();
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 16 + look.next()?.to_digit(16)?;
        }
        *chars = look;
        Some(v)
    };
    let mut pending_high: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != '\\' {
            if pending_high.take().is_some() {
                out.push('\u{FFFD}');
            }
            out.push(c);
            continue;
        }
        let Some(&e) = chars.peek() else {
            out.push('\\');
            break;
        };
        chars.next();
        let unit = match e {
            'u' if chars.peek() == Some(&'{') => {
                let mut look = chars.clone();
                look.next();
                let digits: String = look.by_ref().take_while(|d| *d != '}').collect();
                match u32::from_str_radix(&digits, 16) {
                    Ok(v) if !digits.is_empty() && digits.len() <= 6 => {
                        chars = look;
                        Some(v)
                    }
                    _ => None,
                }
            }
            'u' => hex_n(&mut chars, 4),
            'x' => hex_n(&mut chars, 2),
            _ => {
                if pending_high.take().is_some() {
                    out.push('\u{FFFD}');
                }
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' | 'f' | 'v' | '0' => ' ',
                    other => other,
                });
                continue;
            }
        };
        match unit {
            Some(u @ 0xD800..=0xDBFF) => {
                if pending_high.replace(u).is_some() {
                    out.push('\u{FFFD}');
                }
            }
            Some(u @ 0xDC00..=0xDFFF) => match pending_high.take() {
                Some(h) => {
                    let cp = 0x10000 + ((h - 0xD800) << 10) + (u - 0xDC00);
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                }
                None => out.push('\u{FFFD}'),
            },
            Some(u) => {
                if pending_high.take().is_some() {
                    out.push('\u{FFFD}');
                }
                out.push(char::from_u32(u).unwrap_or('\u{FFFD}'));
            }
            None => {
                if pending_high.take().is_some() {
                    out.push('\u{FFFD}');
                }
                out.push('\\');
                out.push(e);
            }
        }
    }
    if pending_high.is_some() {
        out.push('\u{FFFD}');
    }
    out
}

/// HTML/XML character references decoded: numeric (`&#64;`, `&#x40;`, the `;` optional as
/// browsers accept) and the named ones that spell the characters PII is made of.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some((c, used)) = char_ref(after) {
            out.push(c);
            rest = &after[used..];
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// One reference after its `&`: the character and how many bytes it used.
fn char_ref(s: &str) -> Option<(char, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (radix, digits, skip) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (16, h, 2),
            None => (10, num, 1),
        };
        let len = digits
            .bytes()
            .take_while(|b| char::from(*b).is_digit(radix))
            .count();
        if len == 0 || len > 8 {
            return None;
        }
        let v = u32::from_str_radix(&digits[..len], radix).ok()?;
        let c = char::from_u32(v)
            .filter(|c| *c != '\0')
            .unwrap_or('\u{FFFD}');
        let semi = usize::from(digits[len..].starts_with(';'));
        return Some((c, skip + len + semi));
    }
    const NAMED: [(&str, char); 16] = [
        ("commat;", '@'),
        ("period;", '.'),
        ("amp;", '&'),
        ("lt;", '<'),
        ("gt;", '>'),
        ("quot;", '"'),
        ("apos;", '\''),
        ("nbsp;", ' '),
        ("hyphen;", '-'),
        ("dash;", '-'),
        ("minus;", '-'),
        ("plus;", '+'),
        ("lpar;", '('),
        ("rpar;", ')'),
        ("lowbar;", '_'),
        ("num;", '#'),
    ];
    NAMED
        .iter()
        .find(|(n, _)| s.starts_with(n))
        .map(|(n, c)| (*c, n.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn email_bit() -> u8 {
        crate::policy::model::PiiKind::Email.bit()
    }

    #[test]
    fn plain_text_and_empty() {
        assert_eq!(pii_kinds(&h(&[]), b"").unwrap(), 0);
        assert_eq!(pii_kinds(&h(&[]), b"hello").unwrap(), 0);
        assert_ne!(
            pii_kinds(&h(&[]), b"mail jane.doe@example.com").unwrap() & email_bit(),
            0
        );
    }

    #[test]
    fn content_codings_other_than_identity_are_unreadable() {
        let gz = h(&[("content-encoding", "gzip")]);
        assert_eq!(
            pii_kinds(&gz, b"\x1f\x8b...").unwrap_err(),
            Unreadable::Encoded("gzip".into())
        );
        let two = h(&[("content-encoding", "identity"), ("content-encoding", "br")]);
        assert!(pii_kinds(&two, b"x").is_err());
        let id = h(&[("content-encoding", "identity")]);
        assert_eq!(pii_kinds(&id, b"x").unwrap(), 0);
    }

    #[test]
    fn json_escapes_are_decoded() {
        let j = h(&[("content-type", "application/json")]);
        for body in [
            r#"{"contact":"jane.doe\u0040example.com"}"#,
            r#"{"jane.doe\u0040example.com": 1}"#,
            r#"["x", {"a": ["jane\u002edoe\u0040example\u002ecom"]}]"#,
        ] {
            assert_ne!(
                pii_kinds(&j, body.as_bytes()).unwrap() & email_bit(),
                0,
                "{body}"
            );
            // Also without the content type: it parses.
            assert_ne!(
                pii_kinds(&h(&[]), body.as_bytes()).unwrap() & email_bit(),
                0,
                "{body}"
            );
        }
        // Not JSON (trailing garbage, JS): the escapes are still decoded.
        let js = r#"var x = "jane.doe\u0040example.com"; }}"#;
        assert_ne!(pii_kinds(&h(&[]), js.as_bytes()).unwrap() & email_bit(), 0);
        // A duplicate key: a parser keeping the last value would miss the first.
        let dup = r#"{"a":"jane.doe\u0040example.com","a":"x"}"#;
        assert_ne!(pii_kinds(&j, dup.as_bytes()).unwrap() & email_bit(), 0);
        let ndjson = "{\"a\":\"jane.doe\\u0040example.com\"}\n{\"b\":1}\n";
        assert_ne!(pii_kinds(&j, ndjson.as_bytes()).unwrap() & email_bit(), 0);
    }

    #[test]
    fn charsets_are_honoured() {
        let latin = h(&[("content-type", "text/plain; charset=ISO-8859-1")]);
        // "José: jane.doe@example.com" in latin-1 (é = 0xE9, invalid as UTF-8).
        let mut b = b"Jos\xE9: jane.doe@example.com".to_vec();
        assert!(std::str::from_utf8(&b).is_err());
        assert_ne!(pii_kinds(&latin, &b).unwrap() & email_bit(), 0);
        // The same bytes without a label are not UTF-8: unreadable.
        assert_eq!(
            pii_kinds(&h(&[]), &b).unwrap_err(),
            Unreadable::Invalid("UTF-8")
        );
        b.clear();
        let text = "jane.doe@example.com";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for (ct, body) in [
            ("text/plain; charset=utf-16le", le.clone()),
            ("text/plain; charset=\"UTF-16BE\"", be.clone()),
            ("text/plain; charset=utf-16", le.clone()),
            ("text/plain; charset=utf-16", be.clone()),
            ("application/json", [b"\xFF\xFE".as_slice(), &le].concat()),
            ("text/plain", [b"\xFE\xFF".as_slice(), &be].concat()),
        ] {
            let m = pii_kinds(&h(&[("content-type", ct)]), &body).unwrap();
            assert_ne!(m & email_bit(), 0, "{ct}");
        }
        // UTF-16 without a label or BOM is valid UTF-8 full of NULs: unreadable, not clean.
        assert_eq!(pii_kinds(&h(&[]), &le).unwrap_err(), Unreadable::Binary);
        assert!(pii_kinds(
            &h(&[("content-type", "text/plain; charset=shift_jis")]),
            b"x"
        )
        .is_err());
        assert!(pii_kinds(
            &h(&[("content-type", "image/png")]),
            b"\x89PNG\r\n\x1a\n\0\0"
        )
        .is_err());
    }

    #[test]
    fn conflicting_content_types_are_unreadable() {
        let two = h(&[
            ("content-type", "text/plain; charset=utf-16le"),
            ("content-type", "text/plain; charset=latin1"),
        ]);
        assert!(pii_kinds(&two, b"ab").is_err());
        let same = h(&[
            ("content-type", "text/plain"),
            ("content-type", "TEXT/PLAIN"),
        ]);
        assert_eq!(pii_kinds(&same, b"ab").unwrap(), 0);
    }

    #[test]
    fn a_latin_label_on_utf8_bytes_is_read_both_ways() {
        // Full-width @ in UTF-8, labelled latin-1: the UTF-8 reading is scanned too (whether it
        // matches depends on the PII normaliser; the reading must at least be offered).
        let hm = h(&[("content-type", "text/plain; charset=latin1")]);
        let r = readings(&hm, "jane.doe\u{FF20}example.com".as_bytes()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], "jane.doe\u{FF20}example.com");
    }

    #[test]
    fn percent_and_html_readings() {
        assert_ne!(scan_text("jane.doe%40example.com", false) & email_bit(), 0);
        assert_ne!(
            scan_text("jane.doe%2540example.com", false) & email_bit(),
            0
        );
        assert_ne!(
            scan_text("q=jane.doe%40example.com&x=1", true) & email_bit(),
            0
        );
        assert_ne!(
            scan_text("jane.doe&#64;example.com", false) & email_bit(),
            0
        );
        assert_ne!(
            scan_text("jane.doe&#x40;example&period;com", false) & email_bit(),
            0
        );
        assert_ne!(
            scan_text("jane.doe&commat;example.com", false) & email_bit(),
            0
        );
        assert_eq!(html_unescape("a &amp b &#65 &#x;"), "a &amp b A &#x;");
        assert_eq!(percent_decode("a+b%20c%zz", true), "a b c%zz");
    }

    #[test]
    fn js_unescape_handles_surrogates_and_garbage() {
        assert_eq!(
            unescape_js(r"\ud83d\ude00 \u0040 \x41 \u{1F600} \q \"),
            "\u{1F600} @ A \u{1F600} q \\"
        );
        assert_eq!(unescape_js(r"\ud800x"), "\u{FFFD}x");
        assert_eq!(unescape_js(r"\u12"), "\\u12");
    }

    proptest::proptest! {
        /// Arbitrary bytes under any label never panic, and decoded readings only add kinds:
        /// whatever the raw text shows is reported. Encoding an email in any of the escapes
        /// read here never hides it.
        #[test]
        fn readings_only_add_and_escapes_never_hide(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            label in proptest::sample::select(vec!["", "; charset=utf-8", "; charset=latin1", "; charset=utf-16", "; charset=utf-16be", "; charset=x-unknown"]),
            local in "[a-z][a-z0-9]{0,10}",
            how in 0usize..6,
        ) {
            let hm = h(&[("content-type", &format!("text/plain{label}"))]);
            if let Ok(m) = pii_kinds(&hm, &bytes) {
                if let Ok(t) = std::str::from_utf8(&bytes) {
                    if label.is_empty() || label.contains("utf-8") {
                        proptest::prop_assert_eq!(pii::kinds(t) & !m, 0);
                    }
                }
            }
            let _ = (unescape_js(&String::from_utf8_lossy(&bytes)), html_unescape(&String::from_utf8_lossy(&bytes)));
            let at = ["@", "\\u0040", "%40", "&#64;", "&#x40;", "%2540"][how];
            let body = format!("{{\"to\":\"{local}{at}example.com\"}}");
            let m = pii_kinds(&h(&[("content-type", "application/json")]), body.as_bytes());
            proptest::prop_assert!(m.is_ok_and(|m| m & email_bit() != 0), "{}", body);
        }
    }
}
