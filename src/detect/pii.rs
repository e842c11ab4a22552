//! PII "regex facts" (DESIGN §4): email, phone, payment card, US SSN and IBAN.
//!
//! Hand-written scanners, one per kind, over the text's bytes. Every pattern is ASCII, so a
//! match never starts or ends inside a UTF-8 character. Each scanner tries a bounded
//! *attempt* at each candidate start (a card reads at most 19 digits, an email's local part at
//! most 64 bytes back from its `@`, and email domains are disjoint runs), so a scan is linear
//! in the text with no backtracking blow-up on adversarial input.
//!
//! Kinds may overlap (a card number also looks like a phone number); the more specific kind
//! wins, in the order email > IBAN > card > SSN > phone, and hits never overlap.
//!
//! [`StreamScanner`] applies the same scanners to a streamed answer: it passes text through
//! as soon as no match could still start in it, and stops at the first match, so PII split
//! over chunks never reaches the client. To know "no match could still start here" every
//! attempt reports whether it needed a byte past the end of what has arrived: such an
//! attempt is *open*, and the text from its start is held back (at most [`HOLD_MAX`] bytes).

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

/// All matches in `text`, in order and non-overlapping.
pub fn scan(text: &str) -> Vec<Hit> {
    scan_bytes(text.as_bytes(), true).hits
}

/// The kinds found in `text`, as a bitmask of [`PiiKind::bit`].
pub fn kinds(text: &str) -> u8 {
    mask(&scan(text))
}

fn mask(hits: &[Hit]) -> u8 {
    hits.iter().fold(0, |m, h| m | h.kind.bit())
}

// === the scan ===

/// Hits plus the earliest start of an attempt that could not be decided yet (`t.len()` when
/// there is none, and always when the text is final).
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

type Attempt = fn(&mut Src<'_>, usize) -> Option<usize>;

const S_IBAN: u8 = 1;
const S_CARD: u8 = 2;
const S_SSN: u8 = 4;
const S_PHONE: u8 = 8;

/// For each byte, the kinds (bits `S_*`) whose attempt can start at it: IBANs at upper-case
/// letters, cards at 1–9, SSNs at digits, phone numbers at digits, `+` and `(`. A table
/// lookup instead of a call per byte: the scan is mostly skipping plain text.
static STARTS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_uppercase() {
            t[b] |= S_IBAN;
        }
        if c.is_ascii_digit() {
            t[b] |= S_SSN | S_PHONE;
            if c != b'0' {
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
        // A trailing word may be the local part of an address whose `@` has not arrived.
        let floor = hits.last().map_or(0, |h| h.end);
        let mut r = t.len();
        while r > floor && t.len() - r < LOCAL_MAX && is_local(t[r - 1]) {
            r -= 1;
        }
        open = open.min(r);
    }
    // Each attempt refuses at once, without looking further, when the byte it starts at cannot
    // start its kind; `STARTS` says which bytes can, so the scan skips the rest cheaply.
    let others: [(PiiKind, Attempt, u8); 4] = [
        (PiiKind::Iban, iban_at, S_IBAN),
        (PiiKind::CreditCard, card_at, S_CARD),
        (PiiKind::Ssn, ssn_at, S_SSN),
        (PiiKind::Phone, phone_at, S_PHONE),
    ];
    for (kind, attempt, first) in others {
        let found = attempts(&mut src, kind, attempt, first, &mut open);
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

/// Runs `attempt` at every byte that can start its kind (`first`, a bit of [`STARTS`]); a hit
/// resumes the search at its end.
fn attempts(
    src: &mut Src<'_>,
    kind: PiiKind,
    attempt: Attempt,
    first: u8,
    open: &mut usize,
) -> Vec<Hit> {
    let mut out = Vec::new();
    let mut i = 0;
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
            *open = (*open).min(i);
            i += 1;
            continue;
        }
        match end {
            Some(end) => {
                out.push(Hit {
                    kind,
                    start: i,
                    end,
                });
                i = end;
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

fn is_iban_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// Country code, check digits and 11–30 more upper-case alphanumerics, unbroken or in groups
/// of four separated by single spaces, passing ISO 7064 mod 97. Upper case only: that is how
/// IBANs are written, and lower-case ids and hashes would otherwise pass 1 time in 97.
fn iban_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    if !t[i].is_ascii_uppercase() || src.before(i).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if !src.at(i + 1)?.is_ascii_uppercase()
        || !src.at(i + 2)?.is_ascii_digit()
        || !src.at(i + 3)?.is_ascii_digit()
    {
        return None;
    }
    let run = src.alnums(i, IBAN_MAX + 1);
    if run > 4 {
        let end = i + run;
        let ok = (IBAN_MIN..=IBAN_MAX).contains(&run)
            && t[i..end].iter().all(|&b| is_iban_char(b))
            && mod97(&t[i..end]);
        return ok.then_some(end);
    }
    // Printed form: "DE89 3704 0044 0532 0130 00". Take the longest prefix that checks out.
    let mut best = None;
    let mut j = i + 4;
    let mut n = 4;
    while src.at(j) == Some(b' ') {
        let g = src.alnums(j + 1, 5);
        if g == 0
            || g > 4
            || n + g > IBAN_MAX
            || !t[j + 1..j + 1 + g].iter().all(|&b| is_iban_char(b))
        {
            break;
        }
        n += g;
        j += 1 + g;
        if n >= IBAN_MIN && mod97(&t[i..j]) {
            best = Some(j);
        }
        if g < 4 {
            break;
        }
    }
    best
}

/// ISO 7064 mod 97-10 over an IBAN (spaces ignored): move the first four characters to the
/// end, read letters as 10..=35, and the number must be 1 mod 97.
fn mod97(b: &[u8]) -> bool {
    let chars = || b.iter().copied().filter(|&c| c != b' ');
    let mut r: u32 = 0;
    for c in chars().skip(4).chain(chars().take(4)) {
        r = if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    r == 1
}

// === payment card ===

/// 13–19 digits passing Luhn, unbroken, or as a first group of four followed by groups of
/// 2–6 digits all separated by the same single space or hyphen (4-4-4-4, Amex 4-6-5, …).
/// Not preceded by a letter, digit or `+` (that is a phone number), not followed by a letter
/// or digit. Inside a longer run of groups the longest checking window wins.
fn card_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    // Issuer numbers never start with 0; all-zero padding would otherwise pass Luhn.
    if !matches!(t[i], b'1'..=b'9')
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
    let sep = src.at(i + 4).filter(|&b| b == b' ' || b == b'-')?;
    let mut best = None;
    let mut j = i + 4;
    let mut total = 4;
    while src.at(j) == Some(sep) {
        let g = src.digits(j + 1, 7);
        if !(2..=6).contains(&g) || total + g > 19 {
            break;
        }
        total += g;
        j += 1 + g;
        if src.at(j).is_some_and(|b| b.is_ascii_alphabetic()) {
            break;
        }
        if total >= 13 && luhn(&t[i..j]) {
            best = Some(j);
        }
    }
    best
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
    sum % 10 == 0
}

// === US SSN ===

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `AAA-GG-SSSS` outside any longer run of word characters or hyphen/dot-joined digits, with
/// the ranges the SSA never issues (area 000, 666, 9xx; group 00; serial 0000) refused.
fn ssn_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    let t = src.t;
    if !t[i].is_ascii_digit() || !left_clear(src, i, is_word) {
        return None;
    }
    for (k, shape) in b"ddd-dd-dddd".iter().enumerate() {
        let b = src.at(i + k)?;
        let fits = if *shape == b'd' {
            b.is_ascii_digit()
        } else {
            b == b'-'
        };
        if !fits {
            return None;
        }
    }
    let end = i + 11;
    if !right_clear(src, end, is_word) {
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

/// No `glued` byte before `i`, nor a digit joined to it by a hyphen or dot.
fn left_clear(src: &Src<'_>, i: usize, glued: fn(u8) -> bool) -> bool {
    match src.before(i) {
        Some(b) if glued(b) => false,
        Some(b'-' | b'.') => !src.before(i - 1).is_some_and(|b| b.is_ascii_digit()),
        _ => true,
    }
}

/// No `glued` byte at `end`, nor a digit joined to it by a hyphen or dot.
fn right_clear(src: &mut Src<'_>, end: usize, glued: fn(u8) -> bool) -> bool {
    match src.at(end) {
        Some(b) if glued(b) => false,
        Some(b'-' | b'.') => !src.at(end + 1).is_some_and(|b| b.is_ascii_digit()),
        _ => true,
    }
}

// === phone ===

fn phone_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    if src.t[i] == b'+' {
        plus_at(src, i)
    } else {
        nanp_at(src, i)
    }
}

fn is_phone_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.')
}

/// International: `+`, then 8–15 digits in groups joined by at most one space, hyphen or dot,
/// a group optionally in parentheses (`+1 (415) 555-2671`, `+44 20 7946 0958`, `+4930123456`).
fn plus_at(src: &mut Src<'_>, i: usize) -> Option<usize> {
    if src
        .before(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return None;
    }
    let mut n = src.digits(i + 1, 16);
    if n == 0 {
        return None;
    }
    let mut j = i + 1 + n;
    while n <= 15 {
        let k = if src.at(j).is_some_and(is_phone_sep) {
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
    }
    if !(8..=15).contains(&n) || src.at(j).is_some_and(|b| b.is_ascii_alphanumeric()) {
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
        || !left_clear(src, i, |b| b.is_ascii_alphanumeric())
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
    right_clear(src, end, |b| b.is_ascii_alphanumeric()).then_some(end)
}

/// Three digits, the first 2–9; `None` if the text ends first.
fn nxx(src: &mut Src<'_>, j: usize) -> Option<bool> {
    let first = src.at(j)?;
    Some(matches!(first, b'2'..=b'9') && src.digits(j + 1, 2) == 2)
}

// === streaming ===

/// Most bytes held back waiting to see whether they start a match.
pub const HOLD_MAX: usize = 128;

/// Bytes of already emitted text kept so matches see what precedes them (a boundary, or the
/// local part of an email whose `@` arrives later).
const CONTEXT: usize = 128;

/// What one [`StreamScanner::push`] or [`StreamScanner::finish`] lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text safe to pass on now.
    pub emit: String,
    /// Kinds found so far ([`PiiKind::bit`] mask); once non-zero nothing more is emitted.
    pub found: u8,
}

/// Scans a streamed text chunk by chunk.
///
/// The concatenated `emit`s are the stream up to the first match: the match and everything
/// after it are never emitted, however the text was split. Text that could still be the start
/// of a match (a trailing word, a half-typed number) waits for the next chunk, at most
/// [`HOLD_MAX`] bytes of it; prose that ends in a space passes at once.
#[derive(Debug, Default)]
pub struct StreamScanner {
    /// Up to [`CONTEXT`] bytes already emitted, then the held-back text.
    buf: String,
    /// Where the held-back text starts in `buf`.
    ctx: usize,
    found: u8,
}

impl StreamScanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk and returns what may be passed on.
    pub fn push(&mut self, chunk: &str) -> Pushed {
        if self.found != 0 {
            return self.stopped();
        }
        self.buf.push_str(chunk);
        self.step(false)
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
        let scan = scan_bytes(self.buf.as_bytes(), last);
        let len = self.buf.len();
        // Hits wholly inside the emitted context were seen (or are artefacts of the cut).
        let fresh = scan.hits.iter().filter(|h| h.end > self.ctx);
        let found = fresh.clone().fold(0, |m, h| m | h.kind.bit());
        let hold = if found != 0 {
            let first = fresh.map(|h| h.start).min().unwrap_or(self.ctx);
            first.min(scan.open)
        } else {
            scan.open
                .max(ceil_boundary(&self.buf, len.saturating_sub(HOLD_MAX)))
        };
        let hold = floor_boundary(&self.buf, hold.clamp(self.ctx, len));
        let emit = self.buf.get(self.ctx..hold).unwrap_or_default().to_owned();
        if found != 0 {
            self.found = found;
            self.buf = String::new();
            self.ctx = 0;
            return Pushed { emit, found };
        }
        // An address longer than the hold-back has had its start emitted, but keeping it in
        // view (at most 64 + 1 + 253 bytes) still finds it, as a whole-text scan would.
        let keep = ceil_boundary(&self.buf, hold.saturating_sub(CONTEXT)).min(scan.open_email);
        self.buf.drain(..keep);
        self.ctx = hold - keep;
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
