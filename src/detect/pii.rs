//! PII "regex facts" (`docs/policy.md`, detectors): email, phone, payment card, US SSN and IBAN.
//!
//! The text is first normalised ([`Norm`]): each character that has an ASCII NFKC form is
//! replaced by it (full-width `＠` and digits, no-break spaces, …), the dashes and dots that
//! sit between digit groups read as `-` and `.`, and invisible format characters (zero-width
//! space and joiners, soft hyphen, BOM, bidi controls, …) are removed. ASCII text is scanned
//! as it is. Hits are reported as ranges of the original text.
//!
//! Hand-written scanners, one per kind, then run over the normalised bytes. Every pattern is
//! ASCII. Each scanner tries a bounded *attempt* at each candidate start (a card reads at most
//! 19 digits in at most six groups, an email's local part at most 64 bytes back from its `@`,
//! and email domains are disjoint runs), so a scan is linear in the text with no backtracking
//! blow-up on adversarial input.
//!
//! Kinds may overlap (a card number also looks like a phone number); the more specific kind
//! wins, in the order email > IBAN > card > SSN > phone, and hits never overlap.
//!
//! [`StreamScanner`] applies the same scanners to a streamed answer: it passes text through
//! as soon as no match could still start in it, and stops at the first match, so PII split
//! over chunks never reaches the client. To know "no match could still start here" every
//! attempt reports whether it needed a byte past the end of what has arrived: such an
//! attempt is *open*, and the text from its start is held back (at most [`HOLD_MAX`] bytes
//! once normalised). What it passes on is always the original text.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

use crate::policy::model::PiiKind;

/// One match: its kind and the byte range `start..end` of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// What was found.
    pub kind: PiiKind,
    /// First byte of the match.
    pub start: usize,
    /// One past the last byte of the match.
    pub end: usize,
}

/// All matches in `text`, in order, as ranges of `text`.
pub fn scan(text: &str) -> Vec<Hit> {
    let norm = Norm::new(text);
    let hits = scan_bytes(norm.bytes(), true).hits;
    hits.into_iter().map(|h| norm.hit(h)).collect()
}

/// The kinds found in `text`, as a bitmask of [`PiiKind::bit`].
pub fn kinds(text: &str) -> u8 {
    let norm = Norm::new(text);
    mask(&scan_bytes(norm.bytes(), true).hits)
}

fn mask(hits: &[Hit]) -> u8 {
    hits.iter().fold(0, |m, h| m | h.kind.bit())
}

// === the scan ===

/// Hits plus the earliest start of an attempt that could not be decided yet (`t.len()` when
/// there is none, and always when the text is final), as offsets of the normalised text.
struct Scan {
    hits: Vec<Hit>,
    open: usize,
    /// The same for email addresses whose `@` has arrived, the one kind that may outgrow
    /// [`HOLD_MAX`].
    open_email: usize,
}

/// The text being scanned, and whether an attempt looked past its end.
struct Src<'a> {
    t: &'a [u8],
    /// The text is complete: the end is a boundary, not "not arrived yet".
    last: bool,
    touched: bool,
}

impl Src<'_> {
    /// The byte at `i`; asking past the end marks the current attempt as undecided.
    fn at(&mut self, i: usize) -> Option<u8> {
        let b = self.t.get(i).copied();
        if b.is_none() {
            self.touched = true;
        }
        b
    }

    fn before(&self, i: usize) -> Option<u8> {
        i.checked_sub(1).and_then(|j| self.t.get(j).copied())
    }

    fn digits(&mut self, from: usize, cap: usize) -> usize {
        let mut n = 0;
        while n < cap && self.at(from + n).is_some_and(|b| b.is_ascii_digit()) {
            n += 1;
        }
        n
    }

    fn alnums(&mut self, from: usize, cap: usize) -> usize {
        let mut n = 0;
        while n < cap && self.at(from + n).is_some_and(|b| b.is_ascii_alphanumeric()) {
            n += 1;
        }
        n
    }
}

/// An attempt at byte `i`: the end of a match that starts `back` bytes before `i`.
type Attempt = fn(&mut Src<'_>, usize) -> Option<usize>;

const S_IBAN: u8 = 1;
const S_CARD: u8 = 2;
const S_SSN: u8 = 4;
const S_PHONE: u8 = 8;

/// For each byte, the kinds (bits `S_*`) whose attempt can be made at it: IBANs at their
/// first check digit (the country code is looked back at), cards at 2–6, SSNs at digits,
/// phone numbers at digits, `+` and `(`. A table lookup instead of a call per byte: the scan
/// is mostly skipping plain text.
static STARTS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            t[b] |= S_IBAN | S_SSN | S_PHONE;
            if c >= b'2' && c <= b'6' {
                t[b] |= S_CARD;
            }
        }
        if c == b'+' || c == b'(' {
            t[b] |= S_PHONE;
        }
        b += 1;
    }
    t
};

fn scan_bytes(t: &[u8], last: bool) -> Scan {
    let mut src = Src {
        t,
        last,
        touched: false,
    };
    let mut open_email = t.len();
    // Most specific first: a later kind only keeps hits that overlap none already kept.
    let mut hits = emails(&mut src, &mut open_email);
    let mut open = open_email;
    if !last {
        // A trailing word may be the local part of an address whose `@` has not arrived (or
        // the country code of an IBAN whose digits have not).
        let floor = hits.last().map_or(0, |h| h.end);
        let mut r = t.len();
        while r > floor && t.len() - r < LOCAL_MAX && is_local(t[r - 1]) {
            r -= 1;
        }
        open = open.min(r);
    }
    // Each attempt refuses at once, without looking further, when the byte it is made at
    // cannot be its kind's; `STARTS` says which bytes can, so the scan skips the rest cheaply.
    let others: [(PiiKind, Attempt, u8, usize); 4] = [
        (PiiKind::Iban, iban_at, S_IBAN, 2),
        (PiiKind::CreditCard, card_at, S_CARD, 0),
        (PiiKind::Ssn, ssn_at, S_SSN, 0),
        (PiiKind::Phone, phone_at, S_PHONE, 0),
    ];
    for (kind, attempt, first, back) in others {
        let found = attempts(&mut src, kind, attempt, first, back, &mut open);
        if found.is_empty() {
            continue;
        }
        let before = hits.len();
        for h in found {
            let i = hits[..before].partition_point(|k| k.end <= h.start);
            if hits[..before].get(i).is_none_or(|k| k.start >= h.end) {
                hits.push(h);
            }
        }
        hits.sort_unstable_by_key(|h| h.start);
    }
    Scan {
        hits,
        open,
        open_email,
    }
}

/// Runs `attempt` at every byte that can be its kind's (`first`, a bit of [`STARTS`]); a hit
/// (starting `back` bytes before) resumes the search at its end.
fn attempts(
    src: &mut Src<'_>,
    kind: PiiKind,
    attempt: Attempt,
    first: u8,
    back: usize,
    open: &mut usize,
) -> Vec<Hit> {
    let mut out = Vec::new();
    let mut i = back;
    while i < src.t.len() {
        match src.t[i..]
            .iter()
            .position(|&b| STARTS[usize::from(b)] & first != 0)
        {
            Some(skip) => i += skip,
            None => break,
        }
        src.touched = false;
        let end = attempt(src, i);
        if src.touched && !src.last {
            // The answer depends on bytes not yet here: neither a hit nor safe to pass on.
            *open = (*open).min(i - back);
            i += 1;
            continue;
        }
        match end {
            Some(end) => {
                out.push(Hit {
                    kind,
                    start: i - back,
                    end,
                });
                i = end + back;
            }
            None => i += 1,
        }
    }
    out
}

// === email ===

const LOCAL_MAX: usize = 64;
/// RFC 1035's limit; it also bounds how long an address can stay undecided.
const DOMAIN_MAX: usize = 253;

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// `local@domain.tld`: the local part is the run of local characters before the `@` (its last
/// 64 at most, RFC 5321's limit, which also bounds the look-back), the domain is the longest
/// prefix of the run after it (of its first 253 bytes) that ends in `.` and two or more letters.
fn emails(src: &mut Src<'_>, open: &mut usize) -> Vec<Hit> {
    let t = src.t;
    let mut out = Vec::new();
    // Local parts never reach back into the previous email.
    let mut floor = 0;
    let mut a = 0;
    while a < t.len() {
        match memchr::memchr(b'@', &t[a..]) {
            Some(k) => a += k,
            None => break,
        }
        let mut ls = a;
        while ls > floor && a - ls < LOCAL_MAX && is_local(t[ls - 1]) {
            ls -= 1;
        }
        if ls == a {
            a += 1;
            continue;
        }
        src.touched = false;
        let mut end = None;
        // Inside a label that follows a dot (with something before the dot), made only of
        // letters so far, of this many letters.
        let mut tld = false;
        let mut letters = 0;
        let mut d = a + 1;
        while d - a <= DOMAIN_MAX {
            let Some(b) = src.at(d).filter(|&b| is_domain(b)) else {
                break;
            };
            if b == b'.' {
                tld = d > a + 1;
                letters = 0;
            } else if b.is_ascii_alphabetic() {
                letters += 1;
                if tld && letters >= 2 {
                    end = Some(d + 1);
                }
            } else {
                tld = false;
            }
            d += 1;
        }
        match end {
            // More text can only lengthen the domain, never unmake the match: report it now.
            Some(end) => {
                out.push(Hit {
                    kind: PiiKind::Email,
                    start: ls,
                    end,
                });
                floor = end;
                a = end;
            }
            None => {
                if src.touched && !src.last {
                    *open = (*open).min(ls);
                }
                a = d;
            }
        }
    }
    out
}

// === IBAN ===

const IBAN_MIN: usize = 15;
const IBAN_MAX: usize = 34;

/// The IBAN length of each country in the SWIFT IBAN registry.
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&[u8; 2], u8)] = &[
    (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20), (b"BE", 16),
    (b"BG", 22), (b"BH", 22), (b"BI", 27), (b"BR", 29), (b"BY", 28), (b"CH", 21), (b"CR", 22),
    (b"CY", 28), (b"CZ", 24), (b"DE", 22), (b"DJ", 27), (b"DK", 18), (b"DO", 28), (b"EE", 20),
    (b"EG", 29), (b"ES", 24), (b"FI", 18), (b"FK", 18), (b"FO", 18), (b"FR", 27), (b"GB", 22),
    (b"GE", 22), (b"GI", 23), (b"GL", 18), (b"GR", 27), (b"GT", 28), (b"HN", 28), (b"HR", 21),
    (b"HU", 28), (b"IE", 22), (b"IL", 23), (b"IQ", 23), (b"IS", 26), (b"IT", 27), (b"JO", 30),
    (b"KW", 30), (b"KZ", 20), (b"LB", 28), (b"LC", 32), (b"LI", 21), (b"LT", 20), (b"LU", 20),
    (b"LV", 21), (b"LY", 25), (b"MC", 27), (b"MD", 24), (b"ME", 22), (b"MK", 19), (b"MN", 20),
    (b"MR", 27), (b"MT", 31), (b"MU", 30), (b"NI", 28), (b"NL", 18), (b"NO", 15), (b"OM", 23),
    (b"PK", 24), (b"PL", 28), (b"PS", 29), (b"QA", 29), (b"RO", 24), (b"RS", 22), (b"RU", 33),
    (b"SA", 24), (b"SC", 31), (b"SD", 18), (b"SE", 24), (b"SI", 19), (b"SK", 24), (b"SM", 27),
    (b"SO", 23), (b"ST", 25), (b"SV", 28), (b"TL", 23), (b"TN", 24), (b"TR", 26), (b"UA", 29),
    (b"VA", 22), (b"VG", 24), (b"XK", 20), (b"YE", 30),
];

/// The registered length of country `cc` (upper case).
fn iban_len(cc: [u8; 2]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == cc)
        .map(|&(_, n)| usize::from(n))
}

/// Country code, check digits and 11–30 more alphanumerics, unbroken or in groups of four
/// separated by single spaces or hyphens (all the same), passing ISO 7064 mod 97. For a
/// country in the registry the length must be that country's, and any case is accepted
/// (`gb82 west 1234 …`); otherwise only upper case is, at 15–34 characters: lower-case ids
/// and hashes would pass 1 time in 97. Made at the first check digit `i`, two bytes past the
/// start.
fn iban_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    let s = i.checked_sub(2)?;
    if !t[i].is_ascii_digit()
        || !t[s].is_ascii_alphabetic()
        || !t[s + 1].is_ascii_alphabetic()
        || src.before(s).is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let want = iban_len([t[s].to_ascii_uppercase(), t[s + 1].to_ascii_uppercase()]);
    let fits = |c: &u8| match want {
        Some(_) => c.is_ascii_alphanumeric(),
        None => c.is_ascii_uppercase() || c.is_ascii_digit(),
    };
    let len_ok = |n: usize| want.map_or((IBAN_MIN..=IBAN_MAX).contains(&n), |w| n == w);
    if !t[s..i].iter().all(fits) || !src.at(i + 1)?.is_ascii_digit() {
        return None;
    }
    let run = src.alnums(s, IBAN_MAX + 1);
    if run > 4 {
        let end = s + run;
        let ok = len_ok(run) && t[s..end].iter().all(fits) && mod97(&t[s..end]);
        return ok.then_some(end);
    }
    // Printed form: "DE89 3704 0044 0532 0130 00". Take the longest prefix that checks out.
    let sep = src.at(s + 4).filter(|&b| b == b' ' || b == b'-')?;
    let mut best = None;
    let mut j = s + 4;
    let mut n = 4;
    while src.at(j) == Some(sep) {
        let g = src.alnums(j + 1, 5);
        if g == 0 || g > 4 || n + g > IBAN_MAX || !t[j + 1..j + 1 + g].iter().all(fits) {
            break;
        }
        n += g;
        j += 1 + g;
        if len_ok(n) && mod97(&t[s..j]) {
            best = Some(j);
        }
        if g < 4 || want.is_some_and(|w| n >= w) {
            break;
        }
    }
    best
}

/// ISO 7064 mod 97-10 over an IBAN (separators ignored, any case): move the first four
/// characters to the end, read letters as 10..=35, and the number must be 1 mod 97.
fn mod97(b: &[u8]) -> bool {
    let chars = || b.iter().copied().filter(|c| c.is_ascii_alphanumeric());
    let mut r: u32 = 0;
    for c in chars().skip(4).chain(chars().take(4)) {
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c.to_ascii_uppercase() - b'A') + 10) % 97
        };
    }
    r == 1
}

// === payment card ===

/// 13–19 digits passing Luhn, starting with 2–6 (the major issuer ranges: Mastercard 2 and
/// 5, Amex, Diners and JCB 3, Visa 4, Discover, UnionPay and Maestro 6; epoch-millisecond
/// timestamps start with 1), unbroken or in a printed layout: groups of four with a shorter
/// last one (4-4-4-4, 4-4-4-4-3, 4-4-4-1), or 4-6-5 / 4-6-4 (Amex, Diners). Groups are
/// separated by a space, `-`, `.` or `/`, each optionally with spaces around it, mixed freely.
/// Not preceded by a letter, digit or `+` (that is a phone number), not followed by a letter
/// or digit. Inside a longer run of groups the longest checking window wins.
fn card_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    if !matches!(t[i], b'2'..=b'6')
        || src
            .before(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return None;
    }
    let first = src.digits(i, 20);
    if (13..=19).contains(&first) {
        let end = i + first;
        if src.at(end).is_some_and(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        return luhn(&t[i..end]).then_some(end);
    }
    if first != 4 {
        return None;
    }
    let mut best = None;
    let mut j = i + 4;
    let mut total = 4;
    let mut groups = 1;
    let mut amex = false;
    let mut short = false;
    while let Some(k) = card_sep(src, j) {
        let g = src.digits(k, 7);
        let fits = match groups {
            _ if g == 0 => false,
            1 if g == 6 => {
                amex = true;
                true
            }
            _ if amex => groups == 2 && (4..=5).contains(&g),
            _ => !short && g <= 4,
        };
        if !fits || total + g > 19 {
            break;
        }
        short = g < 4;
        total += g;
        groups += 1;
        j = k + g;
        if src.at(j).is_some_and(|b| b.is_ascii_alphabetic()) {
            break;
        }
        if total >= 13 && luhn(&t[i..j]) {
            best = Some(j);
        }
        if amex && groups == 3 {
            break;
        }
    }
    best
}

/// The end of a card group separator at `j`: ` `, `-`, `.` or `/`, with at most one space
/// on either side of the punctuation.
fn card_sep(src: &mut Src<'_>, j: usize) -> Option<usize> {
    let mut k = j;
    if src.at(k) == Some(b' ') {
        k += 1;
    }
    if src.at(k).is_some_and(|b| matches!(b, b'-' | b'.' | b'/')) {
        k += 1;
        if src.at(k) == Some(b' ') {
            k += 1;
        }
    }
    (k > j).then_some(k)
}

/// The Luhn check over the digits of `b` (separators skipped).
fn luhn(b: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &c in b.iter().rev().filter(|c| c.is_ascii_digit()) {
        let mut d = u32::from(c - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

// === US SSN ===

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `AAA-GG-SSSS`, `AAA GG SSSS` or `AAA.GG.SSSS` (the same separator twice) outside any
/// longer run of word characters or digits joined by that separator (or a hyphen or dot),
/// with the ranges the SSA never issues (area 000, 666, 9xx; group 00; serial 0000) refused.
fn ssn_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    if !t[i].is_ascii_digit() || !left_clear(src, i, is_word, b'-') {
        return None;
    }
    if src.digits(i, 3) != 3 {
        return None;
    }
    let sep = src.at(i + 3).filter(|&b| matches!(b, b'-' | b' ' | b'.'))?;
    if sep == b' ' && !left_clear(src, i, is_word, b' ') {
        return None;
    }
    if src.digits(i + 4, 2) != 2 || src.at(i + 6)? != sep || src.digits(i + 7, 5) != 4 {
        return None;
    }
    let end = i + 11;
    if !right_clear(src, end, is_word, sep) {
        return None;
    }
    let s = &t[i..end];
    let valid = &s[0..3] != b"000"
        && &s[0..3] != b"666"
        && s[0] != b'9'
        && &s[4..6] != b"00"
        && &s[7..11] != b"0000";
    valid.then_some(end)
}

/// No `glued` byte before `i`, nor a digit joined to it by a hyphen, a dot or `sep`.
fn left_clear(src: &Src<'_>, i: usize, glued: fn(u8) -> bool, sep: u8) -> bool {
    match src.before(i) {
        Some(b) if glued(b) => false,
        Some(b) if matches!(b, b'-' | b'.') || b == sep => {
            !src.before(i - 1).is_some_and(|b| b.is_ascii_digit())
        }
        _ => true,
    }
}

/// No `glued` byte at `end`, nor a digit joined to it by a hyphen, a dot or `sep`.
fn right_clear(src: &mut Src<'_>, end: usize, glued: fn(u8) -> bool, sep: u8) -> bool {
    match src.at(end) {
        Some(b) if glued(b) => false,
        Some(b) if matches!(b, b'-' | b'.') || b == sep => {
            !src.at(end + 1).is_some_and(|b| b.is_ascii_digit())
        }
        _ => true,
    }
}

// === phone ===

fn phone_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    match src.t[i] {
        b'+' => intl_at(src, i, 1),
        b'0' => match src.at(i + 1)? {
            b'0' => intl_at(src, i, 2),
            _ => trunk_at(src, i),
        },
        _ => nanp_at(src, i),
    }
}

fn is_phone_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.')
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// A number right after `#` is an id, not a phone number.
fn id_glued(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'#'
}

/// International: `+` or `00` (`prefix` bytes), then 8–15 digits starting with 1–9 in groups
/// joined by at most one space, hyphen, dot or `/`, a group optionally in parentheses (`+1
/// (415) 555-2671`, `+44 20 7946 0958`, `+49 (0)30 1234567`, `+4930123456`, `0044 20 7946
/// 0958`). After `00` at least two groups: a bare run of digits is just a number.
fn intl_at(src: &mut Src<'_>, i: usize, prefix: usize) -> Option<usize> {
    if src.before(i).is_some_and(|b| alnum(b) || b == b'+')
        || (prefix == 2 && !left_clear(src, i, id_glued, b' '))
    {
        return None;
    }
    if !src.at(i + prefix).is_some_and(|b| matches!(b, b'1'..=b'9')) {
        return None;
    }
    let mut n = src.digits(i + prefix, 16);
    let mut j = i + prefix + n;
    let mut groups = 1;
    while n <= 15 {
        let k = if src.at(j).is_some_and(|b| is_phone_sep(b) || b == b'/') {
            j + 1
        } else {
            j
        };
        match src.at(k) {
            Some(b'(') => {
                let g = src.digits(k + 1, 16);
                if g == 0 || src.at(k + 1 + g) != Some(b')') {
                    break;
                }
                n += g;
                j = k + 2 + g;
            }
            Some(b) if b.is_ascii_digit() => {
                let g = src.digits(k, 16);
                n += g;
                j = k + g;
            }
            _ => break,
        }
        groups += 1;
    }
    if !(8..=15).contains(&n) || (prefix == 2 && groups < 2) || src.at(j).is_some_and(alnum) {
        return None;
    }
    Some(j)
}

/// National with a trunk `0`: `0` and 1–9, then groups of 2 or more digits joined by one
/// space, hyphen, dot or `/`, the same throughout, 10–11 digits in all (`020 7946 0958`,
/// `030 1234567`, `01 23 45 67 89`, `06-12-34-56-78`), not after `#` (an order number).
/// Dates and versions are shorter.
fn trunk_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    if !left_clear(src, i, id_glued, b' ') || !src.at(i + 1)?.is_ascii_digit() {
        return None;
    }
    let mut n = src.digits(i, 13);
    if n < 2 {
        return None;
    }
    let mut j = i + n;
    let sep = src.at(j).filter(|&b| is_phone_sep(b) || b == b'/')?;
    while src.at(j) == Some(sep) {
        let g = src.digits(j + 1, 13);
        if g < 2 {
            break;
        }
        n += g;
        j += 1 + g;
        if n > 11 {
            return None;
        }
    }
    if !(10..=11).contains(&n) || j == i + n || !right_clear(src, j, alnum, b' ') {
        return None;
    }
    Some(j)
}

/// North American: optional trunk `1` and separator, area code bare or in parentheses,
/// exchange, line: `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `1 415 555 2671`.
/// Separators are required (a bare ten-digit number is just a number); area and exchange
/// start with 2–9 as NANP numbers do.
fn nanp_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    if !(t[i].is_ascii_digit() || t[i] == b'(')
        || src.before(i) == Some(b'+')
        || !left_clear(src, i, alnum, b'-')
    {
        return None;
    }
    let mut j = i;
    if t[i] == b'1' && is_phone_sep(src.at(i + 1)?) {
        j += 2;
    }
    if src.at(j)? == b'(' {
        if !nxx(src, j + 1)? || src.at(j + 4)? != b')' {
            return None;
        }
        j += 5;
        if src.at(j)? == b' ' {
            j += 1;
        }
    } else {
        if !nxx(src, j)? || !is_phone_sep(src.at(j + 3)?) {
            return None;
        }
        j += 4;
    }
    if !nxx(src, j)? || !is_phone_sep(src.at(j + 3)?) {
        return None;
    }
    j += 4;
    if src.digits(j, 4) != 4 {
        return None;
    }
    let end = j + 4;
    right_clear(src, end, alnum, b'-').then_some(end)
}

/// Three digits, the first 2–9; `None` if the text ends first.
fn nxx(src: &mut Src<'_>, j: usize) -> Option<bool> {
    let first = src.at(j)?;
    Some(matches!(first, b'2'..=b'9') && src.digits(j + 1, 2) == 2)
}

// === normalisation ===

/// The text the scanners read: the original with each character replaced by its NFKC form
/// where that form holds ASCII (full-width `＠` and digits, mathematical digits, no-break
/// spaces, …), the dashes and middle dots that separate numbers read as `-` and `.`, and
/// format and other default-ignorable characters (zero-width space and joiners, word joiner,
/// BOM, soft hyphen, bidi controls, variation selectors, tags) removed.
///
/// Characters are replaced one at a time, so the form of a text is the concatenation of the
/// forms of its pieces: a stream can be normalised chunk by chunk, and every byte of the form
/// maps back to the one original character it came from. A character whose NFKC form holds no
/// ASCII is kept as it is: every pattern is ASCII, so for the scanners it is a boundary either
/// way. ASCII text, and text with nothing to replace, is scanned as it is (no copy).
struct Norm<'a> {
    raw: &'a str,
    text: Cow<'a, str>,
    /// For each byte of `text`, where the original character it came from starts (unused
    /// when `text` is the original).
    from: Vec<usize>,
}

impl<'a> Norm<'a> {
    fn new(raw: &'a str) -> Self {
        if raw.is_ascii() || !raw.chars().any(|c| !c.is_ascii() && folds(c)) {
            return Self {
                raw,
                text: Cow::Borrowed(raw),
                from: Vec::new(),
            };
        }
        let mut text = String::with_capacity(raw.len());
        let mut from = Vec::with_capacity(raw.len());
        for (i, c) in raw.char_indices() {
            fold(c, &mut text);
            from.resize(text.len(), i);
        }
        Self {
            raw,
            text: Cow::Owned(text),
            from,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The text is the original (offsets are the same).
    fn same(&self) -> bool {
        matches!(self.text, Cow::Borrowed(_))
    }

    /// Where the character holding normalised byte `k` starts in the original (its length
    /// for `k` at the end).
    fn start(&self, k: usize) -> usize {
        if self.same() {
            return floor_boundary(&self.text, k);
        }
        self.from.get(k).copied().unwrap_or(self.raw.len())
    }

    /// Where a normalised range ending at `k` ends in the original.
    fn end(&self, k: usize) -> usize {
        if self.same() {
            return ceil_boundary(&self.text, k);
        }
        match k.checked_sub(1).and_then(|j| self.from.get(j)) {
            Some(&i) => {
                let c = self.raw.get(i..).and_then(|r| r.chars().next());
                i + c.map_or(0, char::len_utf8)
            }
            None if k == 0 => 0,
            None => self.raw.len(),
        }
    }

    /// The first normalised byte that comes from original byte `raw` or later.
    fn of(&self, raw: usize) -> usize {
        if self.same() {
            return raw.min(self.text.len());
        }
        self.from.partition_point(|&f| f < raw)
    }

    fn hit(&self, h: Hit) -> Hit {
        Hit {
            kind: h.kind,
            start: self.start(h.start),
            end: self.end(h.end),
        }
    }
}

/// Whether the non-ASCII `c` reads differently to the scanners.
fn folds(c: char) -> bool {
    if ignorable(c) || sep_like(c).is_some() {
        return true;
    }
    let mut plain = true;
    unicode_normalization::char::decompose_compatible(c, |d| plain &= d == c);
    // Canonical forms (`é`) recompose to themselves: only a form with ASCII in it matters.
    !plain && std::iter::once(c).nfkc().any(|d| d.is_ascii())
}

fn fold(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c);
    } else if ignorable(c) {
    } else if let Some(s) = sep_like(c) {
        out.push(s);
    } else if folds(c) {
        out.extend(std::iter::once(c).nfkc());
    } else {
        out.push(c);
    }
}

/// Dashes and dots that NFKC leaves alone but people write between digit groups.
fn sep_like(c: char) -> Option<char> {
    match c {
        '\u{2010}'..='\u{2013}' | '\u{2212}' => Some('-'),
        '\u{00B7}' | '\u{2027}' | '\u{2219}' | '\u{22C5}' => Some('.'),
        _ => None,
    }
}

/// General category Cf (Unicode 15) and the other default-ignorable code points: characters
/// that render as nothing, so they can sit inside an address or a number unseen.
fn ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x34F
            | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}
// === streaming ===

/// Most bytes, once normalised, held back waiting to see whether they start a match.
pub const HOLD_MAX: usize = 128;

/// Bytes of already emitted text (normalised) kept so matches see what precedes them (a
/// boundary, or the local part of an email whose `@` arrives later).
const CONTEXT: usize = 128;

/// Most original bytes held back, however little they normalise to (invisible characters
/// normalise to nothing). Past it, what is held is decided as if the text ended there: a
/// match is reported, anything else passes.
pub const HOLD_RAW_MAX: usize = 1024;

/// Most bytes a stopped scanner keeps while its finding is judged.
const STOPPED_MAX: usize = 64 * 1024;

/// What one [`StreamScanner::push`] or [`StreamScanner::finish`] lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text safe to pass on now (the original text, not its normalised form).
    pub emit: String,
    /// Kinds found so far ([`PiiKind::bit`] mask); once non-zero nothing more is emitted.
    pub found: u8,
}

/// Scans a streamed text chunk by chunk.
///
/// The concatenated `emit`s are the stream up to the first match: the match and everything
/// after it are never emitted, however the text was split. Text that could still be the start
/// of a match (a trailing word, a half-typed number) waits for the next chunk, at most
/// [`HOLD_MAX`] bytes of it once normalised (and at most 1 KiB of original bytes); prose that
/// ends in a space passes at once.
#[derive(Debug, Default)]
pub struct StreamScanner {
    /// Already emitted text kept as context, then the held-back text (original bytes).
    buf: String,
    /// Where the held-back text starts in `buf`.
    ctx: usize,
    found: u8,
    /// Kinds a policy let through ([`StreamScanner::allow`]): they neither stop nor hold.
    allowed: u8,
}

impl StreamScanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk and returns what may be passed on.
    pub fn push(&mut self, chunk: &str) -> Pushed {
        if self.found != 0 {
            // Stopped: keep what arrives (bounded) in case the kinds found are allowed.
            if self.buf.len() + chunk.len() <= STOPPED_MAX {
                self.buf.push_str(chunk);
            }
            return self.stopped();
        }
        self.buf.push_str(chunk);
        self.step(false)
    }

    /// A policy lets the kinds in `mask` through: matches of them no longer stop the scan or
    /// hold text back, and a scanner they stopped goes on (call [`StreamScanner::push`] with
    /// `""` to get what may now be passed on). Every other kind still stops it.
    pub fn allow(&mut self, mask: u8) {
        self.allowed |= mask;
        if self.found & !self.allowed == 0 {
            self.found = 0;
        }
    }

    /// Ends the stream: the held-back rest is emitted unless it holds a match.
    pub fn finish(&mut self) -> Pushed {
        if self.found != 0 {
            return self.stopped();
        }
        self.step(true)
    }

    /// Kinds found so far.
    pub fn found(&self) -> u8 {
        self.found
    }

    fn stopped(&self) -> Pushed {
        Pushed {
            emit: String::new(),
            found: self.found,
        }
    }

    fn step(&mut self, last: bool) -> Pushed {
        let norm = Norm::new(&self.buf);
        let len = self.buf.len();
        let nlen = norm.bytes().len();
        // Hits wholly inside the emitted context were seen (or are artefacts of the cut).
        let ctx = norm.of(self.ctx);
        let mut scan = scan_bytes(norm.bytes(), last);
        let waiting = |scan: &Scan| {
            let first = scan
                .hits
                .iter()
                .find(|h| h.end > ctx && h.kind.bit() & self.allowed == 0)
                .map(|h| h.start);
            first.map_or(scan.open, |s| s.min(scan.open))
        };
        if !last && waiting(&scan) < nlen && len - norm.start(waiting(&scan)) > HOLD_RAW_MAX {
            // Invisible characters keep an attempt undecided without adding to what it
            // reads: past the raw bound, decide as if the text ended here.
            scan = scan_bytes(norm.bytes(), true);
        }
        let allowed = self.allowed;
        let mut fresh = scan
            .hits
            .iter()
            .filter(|h| h.end > ctx && h.kind.bit() & allowed == 0)
            .peekable();
        let first = fresh.peek().map(|h| (h.start, h.end));
        let mut found = fresh.fold(0, |m, h| m | h.kind.bit());
        if first.is_some_and(|(_, end)| scan.open < end) {
            // An attempt still open where the first hit is may yet be a more specific kind
            // covering it (a card inside a half-arrived IBAN): report the kind a whole-text
            // scan would, once it is decided; meanwhile nothing from the hit on is emitted.
            found = 0;
        }
        let hold = match first {
            Some((start, _)) => norm.start(start.min(scan.open)),
            None => norm
                .start(scan.open)
                .max(norm.start(nlen.saturating_sub(HOLD_MAX)))
                .max(ceil_boundary(&self.buf, len.saturating_sub(HOLD_RAW_MAX))),
        };
        let hold = floor_boundary(&self.buf, hold.clamp(self.ctx, len));
        let emit = self.buf.get(self.ctx..hold).unwrap_or_default().to_owned();
        if found != 0 {
            // Stopped. The text from the match on is kept (never emitted unless the kinds
            // are allowed); what was emitted becomes context.
            self.found = found;
            self.ctx = hold;
            return Pushed { emit, found };
        }
        // An address longer than the hold-back has had its start emitted, but keeping it in
        // view (at most 64 + 1 + 253 bytes) still finds it, as a whole-text scan would.
        let keep = norm
            .start(norm.of(hold).saturating_sub(CONTEXT))
            .min(norm.start(scan.open_email))
            .min(hold);
        // The context is only read, never emitted again: keep its normalised form, so
        // invisible padding cannot push what precedes it out of view.
        let context = match Norm::new(&self.buf[keep..hold]).text {
            Cow::Borrowed(_) => None,
            Cow::Owned(c) => Some(c),
        };
        match context {
            Some(c) => {
                self.buf.replace_range(..hold, &c);
                self.ctx = c.len();
            }
            None => {
                self.buf.drain(..keep);
                self.ctx = hold - keep;
            }
        }
        Pushed { emit, found: 0 }
    }
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod corpus;
