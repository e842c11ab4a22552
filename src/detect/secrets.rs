//! Secrets: credentials an agent may paste into a prompt or an upstream may echo back —
//! provider API keys (OpenAI, Anthropic, Google), AWS access key ids and secret access keys,
//! GitHub, GitLab and Slack tokens, Slack webhooks, JWTs, PEM private keys, `Bearer` values
//! and connection-string passwords (`docs/policy.md`, detectors).
//!
//! Like [`super::pii`]: hand-written scanners over the text's bytes, every pattern ASCII, one
//! bounded *attempt* at each byte that can start a secret (a table says which can: the scan
//! mostly skips plain text), so a scan is linear in the text with no backtracking blow-up.
//! Each attempt reads at most a few hundred bytes (token bodies are capped) and reports
//! whether it needed a byte that has not arrived yet; a match is reported as soon as it is
//! certain, since more text can only lengthen it.
//!
//! Shapes, not words: a token must have its provider's prefix and a body of the provider's
//! length and alphabet, glued to nothing before it; labels (`Bearer`, `password=`,
//! `aws_secret_access_key`) must be followed by a value that looks like one (long enough,
//! with digits, not a placeholder such as `${TOKEN}` or `<password>`). Prose, code, UUIDs,
//! hex hashes and base64 blobs without one of these shapes do not match.
//!
//! [`StreamScanner`] applies the same scanners to a streamed answer with the PII scanner's
//! contract: text passes as soon as no secret could still start in it, at most [`HOLD_MAX`]
//! bytes are held back, and nothing from the first match on is ever emitted.

use crate::policy::model::SecretKind;

/// One match: its kind and the byte range `start..end` of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub kind: SecretKind,
    pub start: usize,
    pub end: usize,
}

/// All matches in `text`, in order and non-overlapping.
pub fn scan(text: &str) -> Vec<Hit> {
    scan_bytes(text.as_bytes(), None, true).hits
}

/// The kinds found in `text`, as a bitmask of [`SecretKind::bit`].
pub fn kinds(text: &str) -> u16 {
    mask(&scan(text))
}

fn mask(hits: &[Hit]) -> u16 {
    hits.iter().fold(0, |m, h| m | h.kind.bit())
}

// === the scan ===

struct Scan {
    hits: Vec<Hit>,
    /// The earliest start of an attempt that could not be decided yet (`t.len()` if none).
    open: usize,
}

struct Src<'a> {
    t: &'a [u8],
    /// The byte before `t` (a stream's context that was dropped), for left boundaries.
    pre: Option<u8>,
    last: bool,
    touched: bool,
}

impl Src<'_> {
    fn at(&mut self, i: usize) -> Option<u8> {
        let b = self.t.get(i).copied();
        if b.is_none() {
            self.touched = true;
        }
        b
    }

    fn before(&self, i: usize) -> Option<u8> {
        match i.checked_sub(1) {
            Some(j) => self.t.get(j).copied(),
            None => self.pre,
        }
    }

    /// `lit` at `i` (ASCII case-insensitively where `ci`).
    fn lit(&mut self, i: usize, lit: &[u8], ci: bool) -> bool {
        for (k, &want) in lit.iter().enumerate() {
            match self.at(i + k) {
                Some(b) if b == want || (ci && b.eq_ignore_ascii_case(&want)) => {}
                _ => return false,
            }
        }
        true
    }

    /// Whether the text ends at `i` (no `glued` byte there); `None` when that byte has not
    /// arrived yet.
    fn ends(&mut self, i: usize, glued: fn(u8) -> bool) -> Option<bool> {
        match self.t.get(i) {
            Some(&b) => Some(!glued(b)),
            None if self.last => Some(true),
            None => {
                self.touched = true;
                None
            }
        }
    }

    /// Length of the run of `pred` bytes from `i`, at most `cap`.
    fn run(&mut self, i: usize, cap: usize, pred: fn(u8) -> bool) -> usize {
        let mut n = 0;
        while n < cap && self.at(i + n).is_some_and(pred) {
            n += 1;
        }
        n
    }
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Bytes that can start an attempt: token prefixes and labels.
static STARTS: [bool; 256] = {
    let mut t = [false; 256];
    let s = b"sSAagxe-bBpPmMrRh";
    let mut k = 0;
    while k < s.len() {
        t[s[k] as usize] = true;
        k += 1;
    }
    t
};

fn scan_bytes(t: &[u8], pre: Option<u8>, last: bool) -> Scan {
    let mut src = Src {
        t,
        pre,
        last,
        touched: false,
    };
    let mut hits = Vec::new();
    let mut open = t.len();
    let mut i = 0;
    while i < t.len() {
        match t[i..].iter().position(|&b| STARTS[usize::from(b)]) {
            Some(k) => i += k,
            None => break,
        }
        src.touched = false;
        match attempt(&mut src, i) {
            Some((kind, end)) => {
                hits.push(Hit {
                    kind,
                    start: i,
                    end,
                });
                if kind == SecretKind::AwsAccessKeyId {
                    if let Some(h) = aws_secret_near(&mut src, end) {
                        hits.push(h);
                        i = h.end;
                        continue;
                    }
                }
                i = end.max(i + 1);
            }
            None => {
                if src.touched && !last {
                    open = open.min(i);
                }
                i += 1;
            }
        }
    }
    Scan { hits, open }
}

/// The attempts that can start at byte `i`. A `Some` is certain (more text only lengthens
/// it); a `None` after touching the end is undecided.
fn attempt(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    let b = s.t[i];
    // The second byte rules out most starts at once (prose is full of words starting with
    // these letters).
    let next = s.at(i + 1)?;
    if !second(b, next) {
        return None;
    }
    if b == b'-' {
        return pem(s, i);
    }
    // Everything else starts a word.
    let glued = s.before(i).is_some_and(alnum);
    match b {
        b's' if !glued && !s.before(i).is_some_and(word) => sk(s, i).or_else(|| aws_label(s, i)),
        b'S' if !glued => aws_label(s, i),
        b'A' if !glued => aws_id(s, i)
            .or_else(|| google(s, i))
            .or_else(|| aws_label(s, i)),
        b'a' if !glued => aws_label(s, i).or_else(|| url(s, i)),
        b'g' if !glued => github(s, i).or_else(|| gitlab(s, i)),
        b'x' if !glued => slack(s, i),
        b'e' if !glued => jwt(s, i),
        b'b' | b'B' if !glued => bearer(s, i),
        b'p' | b'P' if !glued || s.before(i) == Some(b'_') => {
            if glued {
                // `DB_PASSWORD=`: only the label, and not after a letter-glued word.
                dsn_password(s, i)
            } else {
                url(s, i).or_else(|| dsn_password(s, i))
            }
        }
        b'm' | b'M' | b'r' | b'R' if !glued => url(s, i),
        b'h' if !glued => slack_webhook(s, i),
        _ => None,
    }
}

/// Whether `b` can follow `a` at the start of some attempt (labels in any case).
fn second(a: u8, b: u8) -> bool {
    let l = b.to_ascii_lowercase();
    match a {
        b'-' => b == b'-',
        b's' => b == b'k' || l == b'e',
        b'S' => l == b'e',
        b'A' => matches!(b, b'K' | b'S' | b'I') || l == b'w',
        b'a' => matches!(l, b'w' | b'm'),
        b'g' => matches!(b, b'h' | b'l' | b'i'),
        b'x' => matches!(b, b'o' | b'a'),
        b'e' => b == b'y',
        b'b' | b'B' => l == b'e',
        b'p' | b'P' => matches!(l, b'o' | b'a' | b'w'),
        b'm' | b'M' => matches!(l, b'y' | b'o'),
        b'r' | b'R' => l == b'e',
        b'h' => b == b'o',
        _ => false,
    }
}

// === provider tokens ===

/// `prefix` at `i`, then a body of `alpha` bytes (at most `cap`): a match once it has
/// `min` bytes and a digit.
fn token(
    s: &mut Src<'_>,
    i: usize,
    prefix: &[u8],
    min: usize,
    cap: usize,
    alpha: fn(u8) -> bool,
) -> Option<usize> {
    if !s.lit(i, prefix, false) {
        return None;
    }
    let from = i + prefix.len();
    let n = s.run(from, cap, alpha);
    let body = &s.t[from..from + n];
    (n >= min && body.iter().any(u8::is_ascii_digit) && body.iter().any(u8::is_ascii_alphabetic))
        .then_some(from + n)
}

/// OpenAI `sk-…`, `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…` (a body of 32 or more), and
/// Anthropic `sk-ant-…`.
fn sk(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if !s.lit(i, b"sk-", false) {
        return None;
    }
    if s.lit(i, b"sk-ant-", false) {
        return token(s, i, b"sk-ant-", 32, 256, word).map(|e| (SecretKind::AnthropicKey, e));
    }
    token(s, i, b"sk-", 32, 256, word).map(|e| (SecretKind::OpenaiKey, e))
}

/// AWS access key id: `AKIA` or `ASIA` and 16 upper-case letters or digits, standing alone.
fn aws_id(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if !(s.lit(i, b"AKIA", false) || s.lit(i, b"ASIA", false)) {
        return None;
    }
    let n = s.run(i + 4, 17, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if n != 16 || !s.ends(i + 20, alnum)? {
        return None;
    }
    Some((SecretKind::AwsAccessKeyId, i + 20))
}

/// A 40-character secret access key: exactly 40 of `A-Za-z0-9/+`, glued to none of them, with
/// upper, lower case and a digit.
fn aws_secret_at(s: &mut Src<'_>, j: usize) -> Option<usize> {
    if s.before(j).is_some_and(b64) {
        return None;
    }
    let n = s.run(j, 41, b64);
    if n != 40 || !s.ends(j + 40, |b| b64(b) || b == b'=')? {
        return None;
    }
    let v = &s.t[j..j + n];
    let ok = v.iter().any(u8::is_ascii_uppercase)
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter().any(u8::is_ascii_digit);
    ok.then_some(j + 40)
}

/// A secret access key within 96 bytes after an access key id (`AKIA… / wJalr…`).
fn aws_secret_near(s: &mut Src<'_>, from: usize) -> Option<Hit> {
    let end = (from + 96).min(s.t.len());
    let mut j = from;
    while j < end {
        if b64(s.t[j]) && !s.before(j).is_some_and(b64) {
            if let Some(e) = aws_secret_at(s, j) {
                return Some(Hit {
                    kind: SecretKind::AwsSecretKey,
                    start: j,
                    end: e,
                });
            }
        }
        j += 1;
    }
    None
}

/// `aws_secret_access_key = …`, `AWS_SECRET_ACCESS_KEY: …`, `"SecretAccessKey": "…"`,
/// `secret_access_key=…`: a label, then `=` or `:` among quotes and spaces, then the key.
fn aws_label(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    const LABELS: [&[u8]; 5] = [
        b"aws_secret_access_key",
        b"aws-secret-access-key",
        b"aws_secret_key",
        b"secret_access_key",
        b"secretaccesskey",
    ];
    let at = LABELS
        .iter()
        .find_map(|l| s.lit(i, l, true).then_some(i + l.len()))?;
    let mut j = at;
    let mut eq = false;
    while j - at < 6 {
        match s.at(j)? {
            b'=' | b':' => eq = true,
            b' ' | b'\t' | b'"' | b'\'' => {}
            _ => break,
        }
        j += 1;
    }
    if !eq {
        return None;
    }
    aws_secret_at(s, j).map(|e| (SecretKind::AwsSecretKey, e))
}

/// GitHub: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and 36 or more letters and digits;
/// fine-grained `github_pat_` and 40 or more.
fn github(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if s.lit(i, b"github_pat_", false) {
        return token(s, i, b"github_pat_", 40, 255, |b| alnum(b) || b == b'_')
            .map(|e| (SecretKind::GithubToken, e));
    }
    if !s.lit(i, b"gh", false) {
        return None;
    }
    if !matches!(s.at(i + 2)?, b'p' | b'o' | b'u' | b's' | b'r') || s.at(i + 3)? != b'_' {
        return None;
    }
    let p = [b'g', b'h', s.t[i + 2], b'_'];
    token(s, i, &p, 36, 255, alnum).map(|e| (SecretKind::GithubToken, e))
}

/// GitLab personal, deploy and runner tokens: `glpat-`, `gldt-`, `glrt-` and 20 or more.
fn gitlab(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    [&b"glpat-"[..], b"gldt-", b"glrt-"]
        .into_iter()
        .find_map(|p| token(s, i, p, 20, 255, word))
        .map(|e| (SecretKind::GitlabToken, e))
}

/// Slack: `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-` and app-level `xapp-`, then 20
/// or more letters, digits and hyphens.
fn slack(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    let p: [u8; 5] = if s.lit(i, b"xapp-", false) {
        *b"xapp-"
    } else if s.lit(i, b"xox", false)
        && matches!(s.at(i + 3)?, b'b' | b'p' | b'a' | b'r' | b's' | b'e')
        && s.at(i + 4)? == b'-'
    {
        [b'x', b'o', b'x', s.t[i + 3], b'-']
    } else {
        return None;
    };
    token(s, i, &p, 20, 255, |b| alnum(b) || b == b'-').map(|e| (SecretKind::SlackToken, e))
}

/// `hooks.slack.com/services/T…/B…/…` (the scheme before it is not needed).
fn slack_webhook(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    token(s, i, b"hooks.slack.com/services/", 20, 255, |b| {
        alnum(b) || b == b'/'
    })
    .map(|e| (SecretKind::SlackWebhook, e))
}

/// Google API key: `AIza` and exactly 35 of `A-Za-z0-9_-`.
fn google(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if !s.lit(i, b"AIza", false) {
        return None;
    }
    let n = s.run(i + 4, 36, b64url);
    (n == 35 && s.ends(i + 39, b64url)?).then_some((SecretKind::GoogleApiKey, i + 39))
}

// === JWT ===

/// Longest JWT header read (base64url characters).
const JWT_HEADER_MAX: usize = 384;

/// `header.payload[.signature]`: a base64url header that decodes to a JSON object naming
/// `"alg"`, a `.`, and a payload of 16 or more base64url characters that starts like a JSON
/// object (`ey`). Certain once the payload has 16 characters; the span covers what follows.
fn jwt(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if !s.lit(i, b"eyJ", false) {
        return None;
    }
    let h = s.run(i, JWT_HEADER_MAX + 1, b64url);
    if h > JWT_HEADER_MAX || s.at(i + h)? != b'.' {
        return None;
    }
    let header = decode_b64url(&s.t[i..i + h]);
    let trimmed = header.trim_ascii_start();
    if !trimmed.starts_with(b"{") || memchr::memmem::find(&header, b"\"alg\"").is_none() {
        return None;
    }
    let p0 = i + h + 1;
    if !s.lit(p0, b"ey", false) || s.run(p0, 16, b64url) < 16 {
        return None;
    }
    // Certain now: extend over the rest of the payload and the signature, as far as here.
    let was = s.touched;
    let p = s.run(p0, 8192, b64url);
    let mut end = p0 + p;
    if s.t.get(end) == Some(&b'.') {
        end += 1 + s.run(end + 1, 1024, b64url);
    }
    s.touched = was;
    Some((SecretKind::Jwt, end))
}

/// Base64url (or base64) without padding, decoded; bad characters end it.
fn decode_b64url(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in b {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// === PEM private key ===

/// `-----BEGIN [RSA |EC |DSA |OPENSSH |ENCRYPTED |…]PRIVATE KEY-----` followed (after at
/// most a few spaces or line breaks) by a base64 body of 32 or more characters, or by the
/// `Proc-Type:` header of a legacy encrypted key. The header alone (a line of documentation)
/// is not a key.
fn pem(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if !s.lit(i, b"-----BEGIN ", false) {
        return None;
    }
    let mut j = i + 11;
    let label = s.run(j, 24, |b| b.is_ascii_uppercase() || b == b' ');
    // `PRIVATE KEY-----` ends the label run: find it inside.
    let mut k = j;
    loop {
        if k > j + label {
            return None;
        }
        if s.lit(k, b"PRIVATE KEY-----", false) {
            break;
        }
        if s.touched {
            return None;
        }
        k += 1;
    }
    j = k + 16;
    let ws = s.run(j, 5, |b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    j += ws;
    if s.lit(j, b"Proc-Type:", false) {
        return Some((SecretKind::PrivateKey, j + 10));
    }
    let n = s.run(j, 32, |b| b64(b) || b == b'=');
    (n == 32).then_some((SecretKind::PrivateKey, j + 32))
}

// === labelled values ===

/// A value that is a placeholder, not a secret: `${…}`, `{{…}}`, `<…>`, `%(…)s`, `$NAME`,
/// all `*` or `x`, or the word itself.
fn placeholder(v: &[u8]) -> bool {
    const WORDS: [&[u8]; 7] = [
        b"password",
        b"passwd",
        b"pass",
        b"pwd",
        b"secret",
        b"token",
        b"null",
    ];
    v.first()
        .is_some_and(|&b| matches!(b, b'$' | b'{' | b'<' | b'['))
        || v.starts_with(b"%(")
        || v.iter()
            .all(|&b| b == b'*' || b == b'x' || b == b'X' || b == b'.')
        || WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
        || v.iter().any(|&b| matches!(b, b'(' | b'{' | b'[' | b'<'))
}

/// `Bearer <token>` (any case, as in an `Authorization` header or prose): a token68 value of
/// 16 or more characters with a letter and a digit.
fn bearer(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    if !s.lit(i, b"bearer", true) {
        return None;
    }
    let sp = s.run(i + 6, 4, |b| b == b' ' || b == b'\t');
    if sp == 0 {
        return None;
    }
    let from = i + 6 + sp;
    let tok = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
    };
    let n = s.run(from, 256, tok);
    let v = &s.t[from..from + n];
    let ok = n >= 16
        && v.iter().any(u8::is_ascii_digit)
        && v.iter().any(u8::is_ascii_alphabetic)
        && !placeholder(v);
    ok.then_some((SecretKind::BearerToken, from + n))
}

const SCHEMES: [&[u8]; 9] = [
    b"postgresql://",
    b"postgres://",
    b"mysql://",
    b"mongodb+srv://",
    b"mongodb://",
    b"rediss://",
    b"redis://",
    b"amqps://",
    b"amqp://",
];

fn userinfo(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'@' | b'/' | b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\')
}

/// `scheme://user:PASSWORD@host` for the database and broker schemes; the user may be empty
/// (`redis://:PASSWORD@host`). The match is the password.
fn url(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    let at = SCHEMES
        .iter()
        .find_map(|sc| s.lit(i, sc, true).then_some(i + sc.len()))?;
    let u = s.run(at, 129, |b| userinfo(b) && b != b':');
    if u > 128 || s.at(at + u)? != b':' {
        return None;
    }
    let p0 = at + u + 1;
    let p = s.run(p0, 129, userinfo);
    if p == 0 || p > 128 || s.at(p0 + p)? != b'@' {
        return None;
    }
    if !s.at(p0 + p + 1)?.is_ascii_alphanumeric() && s.t[p0 + p + 1] != b'[' {
        return None;
    }
    (!placeholder(&s.t[p0..p0 + p])).then_some((SecretKind::ConnectionPassword, p0 + p))
}

/// `password=VALUE` or `pwd=VALUE` (any case) as in key=value DSNs (`host=db user=app
/// password=…`) and environment files (`DB_PASSWORD=…`): a value of 3 or more characters up to
/// a space, `;`, `&` or quote, not a placeholder or an expression.
fn dsn_password(s: &mut Src<'_>, i: usize) -> Option<(SecretKind, usize)> {
    let at = [&b"password="[..], b"pwd="]
        .into_iter()
        .find_map(|l| s.lit(i, l, true).then_some(i + l.len()))?;
    let n = s.run(at, 129, |b| {
        b.is_ascii_graphic()
            && !matches!(
                b,
                b';' | b'&' | b'"' | b'\'' | b',' | b'(' | b')' | b'[' | b'{' | b'<'
            )
    });
    // A value followed by `(`, `[` or `{` is an expression (`password=get_pw()`).
    if n > 128 || !s.ends(at + n, |b| matches!(b, b'(' | b'[' | b'{' | b'.'))? {
        return None;
    }
    let v = &s.t[at..at + n];
    (n >= 3 && !placeholder(v)).then_some((SecretKind::ConnectionPassword, at + n))
}

// === streaming ===

/// Most bytes held back waiting to see whether they start a secret (a JWT header, a
/// connection URL's user and password are the longest to decide).
pub const HOLD_MAX: usize = 512;

/// Bytes of already emitted text kept so attempts see what precedes them.
const CONTEXT: usize = 128;

/// What one [`StreamScanner::push`] or [`StreamScanner::finish`] lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text safe to pass on now.
    pub emit: String,
    /// Kinds found so far ([`SecretKind::bit`] mask); once non-zero nothing more is emitted.
    pub found: u16,
}

/// Scans a streamed text chunk by chunk, with [`super::pii::StreamScanner`]'s contract: the
/// concatenated `emit`s are the stream up to the first match, however it was split; text that
/// could still start a secret waits, at most [`HOLD_MAX`] bytes of it.
#[derive(Debug, Default)]
pub struct StreamScanner {
    /// Up to [`CONTEXT`] bytes already emitted, then the held-back text.
    buf: String,
    /// Where the held-back text starts in `buf`.
    ctx: usize,
    /// The byte before `buf` (context already dropped).
    pre: Option<u8>,
    found: u16,
    /// Kinds a policy let through ([`StreamScanner::allow`]): they neither stop nor hold.
    allowed: u16,
    /// Bytes pushed since the last scan.
    unscanned: usize,
}

/// While more than [`RESCAN_HELD`] bytes are held back, the text is scanned again only once
/// this many bytes more have arrived (or the hold is full, or the stream ends). Holding is always safe; rescanning a full hold
/// on every small chunk made a stream of never-ending token prefixes (`glpat-glpat-…`) cost
/// thousands of byte steps per byte.
const RESCAN_EVERY: usize = 64;

/// Held-back bytes from which rescans are spaced out (below it every push rescans, so prose
/// that only briefly looks like a secret's start is passed on as soon as it is decided).
const RESCAN_HELD: usize = 128;

/// Most bytes a stopped scanner keeps while its finding is judged.
const STOPPED_MAX: usize = 64 * 1024;

impl StreamScanner {
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
        self.unscanned += chunk.len();
        let held = self.buf.len() - self.ctx;
        if held >= chunk.len() + RESCAN_HELD && self.unscanned < RESCAN_EVERY && held < HOLD_MAX {
            return Pushed::default();
        }
        self.step(false)
    }

    /// A policy lets the kinds in `mask` through: matches of them no longer stop the scan or
    /// hold text back, and a scanner they stopped goes on (push `""` to get what may now be
    /// passed on). Every other kind still stops it.
    pub fn allow(&mut self, mask: u16) {
        self.allowed |= mask;
        if self.found & !self.allowed == 0 {
            self.found = 0;
        }
        // The next push rescans: what the allowed kinds held back may go now.
        self.unscanned = RESCAN_EVERY;
    }

    /// Ends the stream: the held-back rest is emitted unless it holds a match.
    pub fn finish(&mut self) -> Pushed {
        if self.found != 0 {
            return self.stopped();
        }
        self.step(true)
    }

    pub fn found(&self) -> u16 {
        self.found
    }

    fn stopped(&self) -> Pushed {
        Pushed {
            emit: String::new(),
            found: self.found,
        }
    }

    fn step(&mut self, last: bool) -> Pushed {
        self.unscanned = 0;
        let scan = scan_bytes(self.buf.as_bytes(), self.pre, last);
        let len = self.buf.len();
        // Hits wholly inside the emitted context were seen already.
        let allowed = self.allowed;
        let fresh = scan
            .hits
            .iter()
            .filter(|h| h.end > self.ctx && h.kind.bit() & allowed == 0);
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
            // Stopped. The text from the match on is kept (never emitted unless the kinds
            // are allowed); what was emitted becomes context.
            self.found = found;
            self.ctx = hold;
            return Pushed { emit, found };
        }
        let keep = ceil_boundary(&self.buf, hold.saturating_sub(CONTEXT));
        if keep > 0 {
            self.pre = self.buf.as_bytes().get(keep - 1).copied();
        }
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

#[cfg(test)]
mod corpus;
