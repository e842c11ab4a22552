//! A seeded corpus: PII of every kind in the formats people write it, obfuscated the ways
//! that slip past naive matching (full-width look-alikes, zero-width characters, soft
//! hyphens, no-break spaces, en dashes), and text that looks like PII and is not (prose,
//! code, logs with timestamps, ids, versions, prices, dates, UUIDs, IPs). Recall per kind and
//! false positives measured on it; `BENCHMARKS.md` has the figures.
//!
//! `cargo test --lib detect::pii::corpus -- --nocapture` prints the table.

use fastrand::Rng;

use super::*;
use PiiKind::{CreditCard as Card, Email, Iban, Phone, Ssn};

const SEED: u64 = 0x5EED_0008;
/// Positives per kind, negatives per class.
const N: usize = 2000;

// === positives ===

/// One generated PII value in a sentence.
struct Case {
    text: String,
    kind: PiiKind,
    /// Where the value sits in `text`.
    at: std::ops::Range<usize>,
    label: String,
}

fn digits(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + rng.u8(0..10))).collect()
}

fn nz(rng: &mut Rng) -> char {
    char::from(b'0' + rng.u8(1..10))
}

/// `prefix` completed with random digits and a Luhn check digit to `len` digits.
fn luhn_number(rng: &mut Rng, prefix: &str, len: usize) -> String {
    let mut s = format!("{prefix}{}", digits(rng, len - prefix.len() - 1));
    for d in b'0'..=b'9' {
        s.push(char::from(d));
        if luhn(s.as_bytes()) {
            return s;
        }
        s.pop();
    }
    unreachable!("one check digit always fits")
}

/// `groups` sizes applied to `s`, joined by separators from `seps` (one picked per gap).
fn grouped(rng: &mut Rng, s: &str, groups: &[usize], seps: &[&str]) -> String {
    let mut out = String::new();
    let mut i = 0;
    for (k, g) in groups.iter().enumerate() {
        if k > 0 {
            out.push_str(seps[rng.usize(0..seps.len())]);
        }
        out.push_str(&s[i..i + g]);
        i += g;
    }
    out
}

fn card(rng: &mut Rng) -> (String, String) {
    let (brand, prefix, len): (&str, String, usize) = match rng.u8(0..9) {
        0 => ("visa", "4".into(), 16),
        1 => ("visa13", "4".into(), 13),
        2 => ("visa19", "4".into(), 19),
        3 => ("mastercard", format!("5{}", rng.u8(1..6)), 16),
        4 => ("mastercard2", rng.u16(2221..2721).to_string(), 16),
        5 => ("amex", ["34", "37"][rng.usize(0..2)].into(), 15),
        6 => ("discover", "6011".into(), 16),
        7 => ("jcb", rng.u16(3528..3590).to_string(), 16),
        _ => ("unionpay", "62".into(), 16),
    };
    let n = luhn_number(rng, &prefix, len);
    let layout: &[usize] = match len {
        13 => &[4, 4, 4, 1],
        15 => &[4, 6, 5],
        19 => &[4, 4, 4, 4, 3],
        _ => &[4, 4, 4, 4],
    };
    let (fmt, text) = match rng.u8(0..7) {
        0 => ("unbroken", n.clone()),
        1 => ("spaces", grouped(rng, &n, layout, &[" "])),
        2 => ("hyphens", grouped(rng, &n, layout, &["-"])),
        3 => ("dots", grouped(rng, &n, layout, &["."])),
        4 => ("slashes", grouped(rng, &n, layout, &["/"])),
        5 => ("mixed", grouped(rng, &n, layout, &[" ", "-", ".", "/"])),
        _ => ("spaced-dash", grouped(rng, &n, layout, &[" - "])),
    };
    (format!("{brand} {fmt}"), text)
}

fn ssn(rng: &mut Rng) -> (String, String) {
    let area = loop {
        let a = rng.u16(1..900);
        if a != 666 {
            break a;
        }
    };
    let n = format!("{area:03}{:02}{:04}", rng.u8(1..100), rng.u16(1..10000));
    let (fmt, sep) = [("hyphens", "-"), ("spaces", " "), ("dots", ".")][rng.usize(0..3)];
    (fmt.into(), grouped(rng, &n, &[3, 2, 4], &[sep]))
}

/// A valid IBAN for a sample of countries: (country, BBAN shape: `9` digit, `A` letter, `X`
/// either).
const IBAN_SHAPES: &[(&str, &str)] = &[
    ("DE", "999999999999999999"),
    ("GB", "AAAA99999999999999"),
    ("FR", "9999999999XXXXXXXXXXX99"),
    ("ES", "99999999999999999999"),
    ("IT", "A9999999999XXXXXXXXXXXX"),
    ("NL", "AAAA9999999999"),
    ("BE", "999999999999"),
    ("CH", "99999XXXXXXXXXXXX"),
    ("PL", "999999999999999999999999"),
    ("AT", "9999999999999999"),
    ("IE", "AAAA99999999999999"),
    ("NO", "99999999999"),
];

fn iban(rng: &mut Rng) -> (String, String) {
    let (cc, shape) = IBAN_SHAPES[rng.usize(0..IBAN_SHAPES.len())];
    let bban: String = shape
        .bytes()
        .map(|s| match s {
            b'9' => char::from(b'0' + rng.u8(0..10)),
            b'A' => char::from(b'A' + rng.u8(0..26)),
            _ => {
                let k = rng.u8(0..36);
                char::from(if k < 10 { b'0' + k } else { b'A' + k - 10 })
            }
        })
        .collect();
    let check = (0..100)
        .map(|c| format!("{cc}{c:02}{bban}"))
        .find(|s| mod97(s.as_bytes()))
        .unwrap_or_default();
    let groups: Vec<usize> = (0..check.len())
        .step_by(4)
        .map(|i| (check.len() - i).min(4))
        .collect();
    let (fmt, text) = match rng.u8(0..5) {
        0 => ("electronic", check.clone()),
        1 => ("printed", grouped(rng, &check, &groups, &[" "])),
        2 => ("hyphens", grouped(rng, &check, &groups, &["-"])),
        3 => (
            "lower printed",
            grouped(rng, &check, &groups, &[" "]).to_lowercase(),
        ),
        _ => ("lower electronic", check.to_lowercase()),
    };
    (format!("{cc} {fmt}"), text)
}

fn nanp(rng: &mut Rng) -> (String, String, String) {
    (
        format!("{}{}", char::from(b'0' + rng.u8(2..10)), digits(rng, 2)),
        format!("{}{}", char::from(b'0' + rng.u8(2..10)), digits(rng, 2)),
        digits(rng, 4),
    )
}

fn phone(rng: &mut Rng) -> (String, String) {
    let d = |rng: &mut Rng, n| digits(rng, n);
    let (a, x, l) = nanp(rng);
    let (fmt, text) = match rng.u8(0..24) {
        20 => (
            "+7",
            format!("+7 (495) {}-{}-{}", d(rng, 3), d(rng, 2), d(rng, 2)),
        ),
        21 => ("+86", format!("+86 138 {} {}", d(rng, 4), d(rng, 4))),
        22 => ("+55", format!("+55 11 9{}-{}", d(rng, 4), d(rng, 4))),
        23 => ("+1 dots", format!("+1.{a}.{x}.{l}")),
        0 => ("+44 20", format!("+44 20 {} {}", d(rng, 4), d(rng, 4))),
        1 => ("+44 mobile", format!("+44 7{} {}", d(rng, 3), d(rng, 6))),
        2 => ("+49 (0)", format!("+49 (0)30 {}", d(rng, 7))),
        3 => ("+49", format!("+49 30 {}", d(rng, 8))),
        4 => ("0049", format!("0049 30 {}", d(rng, 7))),
        5 => ("0044", format!("0044 20 {} {}", d(rng, 4), d(rng, 4))),
        6 => {
            let p: Vec<String> = (0..4).map(|_| d(rng, 2)).collect();
            ("+33", format!("+33 {} {}", nz(rng), p.join(" ")))
        }
        7 => {
            let p: Vec<String> = (0..4).map(|_| d(rng, 2)).collect();
            ("+33 dots", format!("+33.{}.{}", nz(rng), p.join(".")))
        }
        8 => ("+1 (area)", format!("+1 ({a}) {x}-{l}")),
        9 => ("+1 spaces", format!("+1 {a} {x} {l}")),
        10 => ("+1 hyphens", format!("+1-{a}-{x}-{l}")),
        11 => ("(area)", format!("({a}) {x}-{l}")),
        12 => ("nanp hyphens", format!("{a}-{x}-{l}")),
        13 => ("nanp dots", format!("{a}.{x}.{l}")),
        14 => ("+91", format!("+91 9{} {}", d(rng, 4), d(rng, 5))),
        15 => (
            "+61",
            format!("+61 4{} {} {}", d(rng, 2), d(rng, 3), d(rng, 3)),
        ),
        16 => ("+81", format!("+81 90-{}-{}", d(rng, 4), d(rng, 4))),
        17 => ("uk national", format!("020 {} {}", d(rng, 4), d(rng, 4))),
        18 => {
            let p: Vec<String> = (0..4).map(|_| d(rng, 2)).collect();
            ("fr national", format!("0{} {}", nz(rng), p.join(" ")))
        }
        _ => ("+ unbroken", format!("+4930{}", d(rng, 7))),
    };
    (fmt.into(), text)
}

const FIRST: &[&str] = &[
    "jane",
    "john",
    "maria",
    "li",
    "olu",
    "anne-marie",
    "ravi",
    "zoe",
];
const LAST: &[&str] = &[
    "doe", "smith", "garcia", "wang", "okafor", "dupont", "patel",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.co.uk",
    "corp-mail.io",
    "uni.edu",
    "example.org",
    "post.example.de",
];

fn email(rng: &mut Rng) -> (String, String) {
    let f = FIRST[rng.usize(0..FIRST.len())];
    let l = LAST[rng.usize(0..LAST.len())];
    let d = DOMAINS[rng.usize(0..DOMAINS.len())];
    let (fmt, local) = match rng.u8(0..5) {
        0 => ("first.last", format!("{f}.{l}")),
        1 => ("f.last", format!("{}.{l}", &f[..1])),
        2 => ("first_last+tag", format!("{f}_{l}+news")),
        3 => ("first123", format!("{f}{}", rng.u16(1..1000))),
        _ => ("LAST", l.to_uppercase()),
    };
    (fmt.into(), format!("{local}@{d}"))
}

const ZW: &[char] = &['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];

/// Inserts `c()` at `n` random places strictly inside `s`.
fn insert(rng: &mut Rng, s: &str, n: usize, c: &mut dyn FnMut(&mut Rng) -> char) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..n {
        let at = rng.usize(1..chars.len());
        let ch = c(rng);
        chars.insert(at, ch);
    }
    chars.into_iter().collect()
}

fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(u32::from(c) - 0x21 + 0xFF01).unwrap_or(c),
            ' ' => '\u{3000}',
            _ => c,
        })
        .collect()
}

/// The obfuscation applied to a value, and its name.
fn obfuscate(rng: &mut Rng, kind: PiiKind, s: String) -> (&'static str, String) {
    match rng.u8(0..8) {
        0..=2 => ("plain", s),
        3 => ("full-width", fullwidth(&s)),
        4 if kind == Email => ("full-width @", s.replace('@', "＠")),
        4 => ("no-break spaces", s.replace(' ', "\u{A0}")),
        5 => {
            let n = 1 + rng.usize(0..3);
            (
                "zero-width",
                insert(rng, &s, n, &mut |r| ZW[r.usize(0..ZW.len())]),
            )
        }
        6 => {
            let n = 1 + rng.usize(0..2);
            ("soft hyphen", insert(rng, &s, n, &mut |_| '\u{AD}'))
        }
        _ if kind == Email => ("bidi control", insert(rng, &s, 1, &mut |_| '\u{202E}')),
        _ => ("en dash", s.replace('-', "–")),
    }
}

const CONTEXTS: &[(&str, &str)] = &[
    ("Please contact ", " for the details."),
    ("", ""),
    ("Customer record: ", "\n"),
    ("{\"value\": \"", "\"}"),
    ("<td>", "</td>"),
    ("- ", "\n- next item"),
    ("(on file: ", ")"),
    ("Sure! Here it is: ", ". Anything else?"),
];

fn positives(rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    for kind in [Email, Phone, Card, Ssn, Iban] {
        for _ in 0..N {
            let (fmt, value) = match kind {
                Email => email(rng),
                Phone => phone(rng),
                Card => card(rng),
                Ssn => ssn(rng),
                Iban => iban(rng),
            };
            let (obf, value) = obfuscate(rng, kind, value);
            let (pre, post) = CONTEXTS[rng.usize(0..CONTEXTS.len())];
            out.push(Case {
                text: format!("{pre}{value}{post}"),
                kind,
                at: pre.len()..pre.len() + value.len(),
                label: format!("{fmt}, {obf}"),
            });
        }
    }
    out
}

// === negatives ===

const WORDS: &[&str] = &[
    "the", "report", "shows", "that", "revenue", "grew", "in", "quarter", "while", "costs", "fell",
    "and", "our", "team", "shipped", "release", "with", "fixes", "for", "users", "of", "build",
    "deploy", "latency", "queue", "items", "order", "invoice", "meeting", "room",
];

fn prose(rng: &mut Rng) -> String {
    let n = rng.usize(6..18);
    let mut s: Vec<String> = (0..n)
        .map(|_| WORDS[rng.usize(0..WORDS.len())].to_string())
        .collect();
    let k = rng.usize(0..n);
    s[k] = match rng.u8(0..8) {
        0 => format!("{}%", rng.u8(1..100)),
        1 => format!(
            "${},{:03}.{:02}",
            rng.u16(1..1000),
            rng.u16(0..1000),
            rng.u8(0..100)
        ),
        2 => format!(
            "{} {:03},{:02} €",
            rng.u16(1..1000),
            rng.u16(0..1000),
            rng.u8(0..100)
        ),
        3 => format!("{}", rng.u16(1990..2031)),
        4 => format!("{}x{}", rng.u16(1..5000), rng.u16(1..5000)),
        5 => format!("{} items in {} boxes", rng.u16(1..10000), rng.u16(1..100)),
        6 => format!("Q{} {}", rng.u8(1..5), rng.u16(2000..2031)),
        _ => format!("room {}.{}", rng.u8(1..10), rng.u8(1..40)),
    };
    s.join(" ") + "."
}

fn uuid(rng: &mut Rng) -> String {
    let h = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[rng.usize(0..16)]))
            .collect()
    };
    format!(
        "{}-{}-{}-{}-{}",
        h(rng, 8),
        h(rng, 4),
        h(rng, 4),
        h(rng, 4),
        h(rng, 12)
    )
}

fn hex(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.usize(0..16)]))
        .collect()
}

fn date(rng: &mut Rng) -> String {
    let (y, m, d) = (rng.u16(2000..2031), rng.u8(1..13), rng.u8(1..29));
    match rng.u8(0..5) {
        0 => format!("{y}-{m:02}-{d:02}"),
        1 => format!("{d:02}.{m:02}.{y}"),
        2 => format!("{m:02}/{d:02}/{y}"),
        3 => format!("{y}/{m:02}/{d:02}"),
        _ => format!("{d:02}-{m:02}-{y}"),
    }
}

fn time(rng: &mut Rng) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        rng.u8(0..24),
        rng.u8(0..60),
        rng.u8(0..60),
        rng.u16(0..1000)
    )
}

fn log(rng: &mut Rng) -> String {
    let ts = match rng.u8(0..4) {
        0 => format!("{}T{}Z", date(rng), time(rng)),
        1 => format!("{} {}", date(rng), time(rng)),
        2 => format!("ts={}", rng.u64(1_600_000_000_000..1_800_000_000_000)),
        _ => format!("[{}]", rng.u64(1_600_000_000..1_800_000_000)),
    };
    let level = ["INFO", "WARN", "DEBUG", "ERROR"][rng.usize(0..4)];
    let tail = match rng.u8(0..8) {
        0 => format!("request_id={} took {}ms", uuid(rng), rng.u16(1..5000)),
        1 => format!(
            "GET /api/v{}/orders/{} 200 {}B",
            rng.u8(1..4),
            rng.u32(1..10_000_000),
            rng.u32(1..100_000)
        ),
        2 => format!(
            "peer {}.{}.{}.{}:{}",
            rng.u8(1..255),
            rng.u8(0..255),
            rng.u8(0..255),
            rng.u8(1..255),
            rng.u16(1024..65535)
        ),
        3 => format!("commit {} deployed", hex(rng, 40)),
        4 => format!("trace_id={} span={}", hex(rng, 32), hex(rng, 16)),
        5 => format!(
            "job {} retried {} times, backoff {}.{}s",
            rng.u32(1..1_000_000),
            rng.u8(1..10),
            rng.u8(0..60),
            rng.u8(0..10)
        ),
        6 => format!(
            "gc pause {}.{:03}ms heap {} MB",
            rng.u8(0..100),
            rng.u16(0..1000),
            rng.u16(1..16000)
        ),
        _ => format!(
            "snowflake={}",
            rng.u64(1_000_000_000_000_000_000..1_999_999_999_999_999_999)
        ),
    };
    format!("{ts} {level} {tail}")
}

fn code(rng: &mut Rng) -> String {
    match rng.u8(0..8) {
        0 => format!("let buf = vec![0u8; {}];", rng.u32(1..1_000_000)),
        1 => format!(
            "SELECT * FROM orders WHERE id = {} AND total > {}.{:02};",
            rng.u32(1..100_000_000),
            rng.u16(0..10000),
            rng.u8(0..100)
        ),
        2 => format!(
            "version = \"{}.{}.{}\"",
            rng.u8(0..30),
            rng.u8(0..100),
            rng.u8(0..100)
        ),
        3 => format!(
            "timeout_ms: {}  # port {}",
            rng.u32(1..600_000),
            rng.u16(1..65535)
        ),
        4 => format!(
            "color: #{}; margin: {}px {}px;",
            hex(rng, 6),
            rng.u8(0..64),
            rng.u8(0..64)
        ),
        5 => format!(
            "assert_eq!(f({}, {}), {});",
            rng.u16(0..1000),
            rng.u16(0..1000),
            rng.u32(0..1_000_000)
        ),
        6 => format!(
            "image: registry.example.com/app:{}.{}.{}-{}",
            rng.u8(0..10),
            rng.u8(0..50),
            rng.u8(0..50),
            hex(rng, 7)
        ),
        _ => format!(
            "pos = ({}.{:04}, {}.{:04})",
            rng.u8(0..90),
            rng.u16(0..10000),
            rng.u8(0..180),
            rng.u16(0..10000)
        ),
    }
}

fn ids(rng: &mut Rng) -> String {
    match rng.u8(0..8) {
        0 => format!(
            "Order #{}-{}-{}",
            digits(rng, 4),
            digits(rng, 4),
            digits(rng, 4)
        ),
        1 => format!("INV-{}-{:06}", rng.u16(2000..2031), rng.u32(0..1_000_000)),
        2 => format!(
            "Tracking 1Z{}{}",
            hex(rng, 6).to_uppercase(),
            digits(rng, 10)
        ),
        3 => format!("ticket {} / {}", uuid(rng), rng.u32(1..100_000)),
        4 => format!(
            "build {}.{}.{}.{}",
            rng.u8(1..20),
            rng.u8(0..10),
            rng.u16(10000..30000),
            rng.u16(0..9999)
        ),
        5 => format!(
            "SKU {}-{}-{}",
            digits(rng, 3),
            digits(rng, 3),
            digits(rng, 3)
        ),
        6 => format!(
            "ref {}{}",
            ["AB", "XQ", "ZZ", "QA"][rng.usize(0..4)],
            digits(rng, 10)
        ),
        _ => format!("account {}", digits(rng, 8)),
    }
}

fn table(rng: &mut Rng) -> String {
    let cells: Vec<String> = (0..rng.usize(3..7))
        .map(|_| match rng.u8(0..4) {
            0 => date(rng),
            1 => format!("{}.{:02}", rng.u16(0..10000), rng.u8(0..100)),
            2 => rng.u16(0..10000).to_string(),
            _ => format!("{}%", rng.u8(0..100)),
        })
        .collect();
    format!("| {} |", cells.join(" | "))
}

/// Numeric look-alikes with the obfuscations the positives use.
fn obfuscated(rng: &mut Rng) -> String {
    let s = match rng.u8(0..4) {
        0 => format!("{} {}", date(rng), time(rng)),
        1 => ids(rng),
        2 => code(rng),
        _ => log(rng),
    };
    match rng.u8(0..3) {
        0 => fullwidth(&s),
        1 => s.replace(' ', "\u{A0}"),
        _ => insert(rng, &s, 2, &mut |r| ZW[r.usize(0..ZW.len())]),
    }
}

type Gen = fn(&mut Rng) -> String;

const NEGATIVES: &[(&str, Gen)] = &[
    ("prose with numbers and prices", prose),
    ("logs: timestamps, UUIDs, IPs, hashes", log),
    ("code and config", code),
    ("order ids, SKUs, builds", ids),
    ("tables of dates and numbers", table),
    ("obfuscated look-alikes", obfuscated),
];

/// Random 16-digit numbers starting with 2-6: Luhn lets one in ten through whatever the
/// scanner does, so they are reported apart.
fn sixteen(rng: &mut Rng) -> String {
    format!("id {}{}", char::from(b'0' + rng.u8(2..7)), digits(rng, 15))
}

// === measurement ===

struct Recall {
    kind: PiiKind,
    total: usize,
    found: usize,
    exact: usize,
    /// Caught when streamed in random chunks, with nothing of it emitted.
    streamed: usize,
    misses: Vec<String>,
}

/// Streams `text` cut at `cuts` random places: (emitted, kinds found).
fn streamed(rng: &mut Rng, text: &str, cuts: usize) -> (String, u8) {
    let mut at: Vec<usize> = (0..cuts)
        .map(|_| floor_boundary(text, rng.usize(0..=text.len())))
        .collect();
    at.sort_unstable();
    at.push(text.len());
    let mut s = StreamScanner::new();
    let mut out = String::new();
    let mut from = 0;
    for to in at {
        out.push_str(&s.push(&text[from..to]).emit);
        from = to;
    }
    let end = s.finish();
    out.push_str(&end.emit);
    (out, end.found)
}

fn recall() -> Vec<Recall> {
    let mut rng = Rng::with_seed(SEED);
    let cases = positives(&mut rng);
    let mut out: Vec<Recall> = [Email, Phone, Card, Ssn, Iban]
        .into_iter()
        .map(|kind| Recall {
            kind,
            total: 0,
            found: 0,
            exact: 0,
            streamed: 0,
            misses: Vec::new(),
        })
        .collect();
    for c in cases {
        let hits = scan(&c.text);
        let r = out.iter_mut().find(|r| r.kind == c.kind);
        let Some(r) = r else { continue };
        r.total += 1;
        let cuts = rng.usize(1..8);
        let (out, mask) = streamed(&mut rng, &c.text, cuts);
        if mask & c.kind.bit() != 0 && out.len() <= c.at.start {
            r.streamed += 1;
        } else if r.misses.len() < 5 {
            r.misses.push(format!(
                "streamed {}: {:?} emitted {out:?}",
                c.label, c.text
            ));
        }
        let hit = hits
            .iter()
            .find(|h| h.kind == c.kind && h.start < c.at.end && c.at.start < h.end);
        if let Some(h) = hit {
            r.found += 1;
            if h.start == c.at.start && h.end == c.at.end {
                r.exact += 1;
            }
        } else if r.misses.len() < 5 {
            r.misses.push(format!("{}: {:?} {hits:?}", c.label, c.text));
        }
    }
    out
}

/// (class, lines, lines with a hit, examples)
fn false_positives() -> Vec<(&'static str, usize, usize, Vec<String>)> {
    let mut rng = Rng::with_seed(SEED ^ 0xFF);
    let mut classes: Vec<(&str, Gen)> = NEGATIVES.to_vec();
    classes.push(("random 16-digit ids (Luhn floor)", sixteen));
    classes
        .into_iter()
        .map(|(name, make)| {
            let mut hit = 0;
            let mut examples = Vec::new();
            for _ in 0..N {
                let text = make(&mut rng);
                let hits = scan(&text);
                if !hits.is_empty() {
                    hit += 1;
                    if examples.len() < 5 {
                        examples.push(format!("{text:?} {hits:?}"));
                    }
                }
            }
            (name, N, hit, examples)
        })
        .collect()
}

#[test]
fn recall_and_false_positives_hold_their_floors() {
    let mut failed = Vec::new();
    for r in recall() {
        let rate = r.found as f64 / r.total as f64;
        let exact = r.exact as f64 / r.total as f64;
        let streamed = r.streamed as f64 / r.total as f64;
        println!(
            "recall {:<12} {:>5}/{:<5} {:.4}  exact span {:.4}  streamed {:.4}",
            r.kind.as_str(),
            r.found,
            r.total,
            rate,
            exact,
            streamed
        );
        for m in &r.misses {
            println!("  miss {m}");
        }
        if rate < 0.999 || exact < 0.99 || streamed < 0.999 {
            failed.push(format!(
                "recall {}: {rate} (exact {exact})",
                r.kind.as_str()
            ));
        }
    }
    let mut lines = 0;
    let mut hits = 0;
    for (name, n, hit, examples) in false_positives() {
        let rate = hit as f64 / n as f64;
        println!("false positives {name:<40} {hit:>4}/{n:<5} {rate:.4}");
        for e in &examples {
            println!("  hit {e}");
        }
        if name.starts_with("random 16-digit") {
            if rate > 0.12 {
                failed.push(format!("{name}: {rate}"));
            }
            continue;
        }
        lines += n;
        hits += hit;
        if rate > 0.01 {
            failed.push(format!("false positives {name}: {rate}"));
        }
    }
    let rate = hits as f64 / lines as f64;
    println!("false positives overall {hits}/{lines} {rate:.4}");
    if rate > 0.005 {
        failed.push(format!("false positives overall: {rate}"));
    }
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn the_corpus_is_deterministic() {
    let mut a = Rng::with_seed(SEED);
    let mut b = Rng::with_seed(SEED);
    let (x, y) = (positives(&mut a), positives(&mut b));
    assert!(x.iter().zip(&y).all(|(p, q)| p.text == q.text));
}
