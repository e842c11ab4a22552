//! A seeded corpus (no network, deterministic): credentials of every kind, generated in their
//! providers' shapes and put into realistic text (chat prose, `.env` lines, YAML and JSON
//! config, shell commands, log lines, JSON strings with escapes), whole and streamed in
//! chunks; and text that looks like secrets and is not (prose about keys and passwords, code
//! that reads them from the environment, UUIDs, sha1/sha256/md5 hex, base64 blobs, placeholders
//! from documentation, ordinary URLs and ids). Recall per kind and false positives measured on
//! it; `BENCHMARKS.md` has the figures.
//!
//! `cargo test --lib detect::secrets::corpus -- --nocapture` prints the table.

use fastrand::Rng;

use super::*;
use crate::policy::model::SecretKind as K;

const SEED: u64 = 0x5EC2_E709;
/// Positives per kind, negatives per class.
const N: usize = 1000;
/// Positives per kind also streamed split in two at every byte.
const EVERY_CUT: usize = 40;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGIT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

fn pick(rng: &mut Rng, alpha: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| char::from(alpha[rng.usize(0..alpha.len())]))
        .collect()
}

fn one<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.usize(0..xs.len())]
}

/// Random text of `alpha` with at least one digit and one letter (as real tokens have: a
/// body without either is one in millions at these lengths).
fn body(rng: &mut Rng, alpha: &[u8], n: usize) -> String {
    loop {
        let s = pick(rng, alpha, n);
        if s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic()) {
            return s;
        }
    }
}

fn b64url_encode(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &c| (a << 8) | u32::from(c)) << (8 * (3 - chunk.len()));
        for k in 0..=chunk.len() {
            out.push(char::from(B64URL[((n >> (18 - 6 * k)) & 63) as usize]));
        }
    }
    out
}

// === positives ===

/// A value of `kind`, in one of its shapes.
fn value(rng: &mut Rng, kind: K) -> String {
    match kind {
        K::OpenaiKey => match rng.u8(0..4) {
            0 => format!("sk-{}", body(rng, ALNUM, 48)),
            1 => format!(
                "sk-proj-{}T3BlbkFJ{}",
                body(rng, B64URL, 74),
                body(rng, B64URL, 74)
            ),
            2 => format!("sk-svcacct-{}", body(rng, B64URL, 120)),
            _ => format!("sk-admin-{}", body(rng, B64URL, 80)),
        },
        K::AnthropicKey => format!(
            "sk-ant-{}-{}AA",
            one(rng, &["api03", "admin01"]),
            body(rng, B64URL, 93)
        ),
        K::AwsAccessKeyId => format!(
            "{}{}",
            one(rng, &["AKIA", "ASIA"]),
            pick(rng, UPPER_DIGIT, 16)
        ),
        K::AwsSecretKey => {
            let secret = loop {
                let s = pick(rng, B64, 40);
                let b = s.as_bytes();
                if b.iter().any(u8::is_ascii_uppercase)
                    && b.iter().any(u8::is_ascii_lowercase)
                    && b.iter().any(u8::is_ascii_digit)
                {
                    break s;
                }
            };
            match rng.u8(0..4) {
                0 => format!("aws_secret_access_key = {secret}"),
                1 => format!("AWS_SECRET_ACCESS_KEY={secret}"),
                2 => format!("\"SecretAccessKey\": \"{secret}\""),
                _ => format!("secret_access_key: '{secret}'"),
            }
        }
        K::GithubToken => match rng.u8(0..6) {
            5 => format!(
                "github_pat_{}_{}",
                body(rng, ALNUM, 22),
                body(rng, ALNUM, 59)
            ),
            k => format!(
                "gh{}_{}",
                ["p", "o", "u", "s", "r"][usize::from(k)],
                body(rng, ALNUM, 36)
            ),
        },
        K::GitlabToken => format!(
            "{}{}",
            one(rng, &["glpat-", "glpat-", "gldt-", "glrt-"]),
            body(rng, B64URL, 20)
        ),
        K::SlackToken => match rng.u8(0..5) {
            4 => format!(
                "xapp-1-A{}-{}-{}",
                pick(rng, b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10),
                pick(rng, b"0123456789", 13),
                pick(rng, HEX, 64)
            ),
            k => format!(
                "xox{}-{}-{}-{}",
                ["b", "p", "a", "r"][usize::from(k)],
                pick(rng, b"0123456789", 12),
                pick(rng, b"0123456789", 13),
                body(rng, ALNUM, 24)
            ),
        },
        K::SlackWebhook => format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            pick(rng, b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 8),
            pick(rng, b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10),
            body(rng, ALNUM, 24)
        ),
        K::GoogleApiKey => format!("AIza{}", body(rng, B64URL, 35)),
        K::Jwt => {
            let alg = one(rng, &["HS256", "RS256", "ES256", "EdDSA", "PS512", "none"]);
            let header = match rng.u8(0..3) {
                0 => format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"),
                1 => format!("{{\"typ\":\"JWT\",\"alg\":\"{alg}\"}}"),
                _ => format!(
                    "{{\"alg\":\"{alg}\",\"kid\":\"{}\",\"typ\":\"JWT\"}}",
                    pick(rng, HEX, 32)
                ),
            };
            let payload = format!(
                "{{\"sub\":\"{}\",\"name\":\"{}\",\"iat\":{},\"exp\":{}}}",
                pick(rng, ALNUM, 12),
                one(rng, &["Jane Doe", "svc-bot", "admin"]),
                1_700_000_000 + rng.u32(0..50_000_000),
                1_750_000_000 + rng.u32(0..50_000_000)
            );
            let sig = if alg == "none" {
                String::new()
            } else {
                let n = rng.usize(43..=86);
                pick(rng, B64URL, n)
            };
            format!(
                "{}.{}.{sig}",
                b64url_encode(header.as_bytes()),
                b64url_encode(payload.as_bytes())
            )
        }
        K::PrivateKey => {
            let label = one(rng, &["RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", ""]);
            let nl = one(rng, &["\n", "\r\n"]);
            let lines: Vec<String> = (0..rng.usize(3..12)).map(|_| pick(rng, B64, 64)).collect();
            format!(
                "-----BEGIN {label}PRIVATE KEY-----{nl}{}{nl}-----END {label}PRIVATE KEY-----",
                lines.join(nl)
            )
        }
        K::BearerToken => {
            let tok = match rng.u8(0..3) {
                0 => body(rng, HEX, 40),
                1 => {
                    let n = rng.usize(20..64);
                    body(rng, B64URL, n)
                }
                _ => format!("{}.{}", body(rng, ALNUM, 24), body(rng, ALNUM, 16)),
            };
            match rng.u8(0..4) {
                0 => format!("Authorization: Bearer {tok}"),
                1 => format!("-H 'authorization: bearer {tok}'"),
                2 => format!("\"Authorization\": \"Bearer {tok}\""),
                _ => format!("use the bearer {tok} for the call"),
            }
        }
        K::ConnectionPassword => {
            let n = rng.usize(8..24);
            let pw = body(
                rng,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%^*-_~",
                n,
            );
            let user = one(
                rng,
                &["app", "admin", "postgres", "svc_orders", "root", "reader"],
            );
            let host = one(
                rng,
                &[
                    "db.internal",
                    "10.0.3.7",
                    "cluster0.ab1cd.mongodb.net",
                    "cache",
                    "mq.prod.svc",
                ],
            );
            match rng.u8(0..9) {
                0 => format!("postgres://{user}:{pw}@{host}:5432/orders"),
                1 => format!("postgresql://{user}:{pw}@{host}/app?sslmode=require"),
                2 => format!("mysql://{user}:{pw}@{host}:3306/shop"),
                3 => format!("mongodb+srv://{user}:{pw}@{host}/test?retryWrites=true"),
                4 => format!("mongodb://{user}:{pw}@{host}:27017"),
                5 => format!("redis://:{pw}@{host}:6379/0"),
                6 => format!("amqp://{user}:{pw}@{host}:5672/vhost"),
                7 => format!("host={host} port=5432 user={user} password={pw} dbname=orders"),
                _ => format!("DB_PASSWORD={pw}"),
            }
        }
    }
}

/// The value in a realistic sentence or line.
fn context(rng: &mut Rng, v: &str) -> String {
    match rng.u8(0..8) {
        0 => format!("Here is my key, can you check why it fails? {v}"),
        1 => format!("export SECRET_VALUE=\"{v}\"\n"),
        2 => format!("config:\n  credential: {v}\n  timeout: 30\n"),
        3 => format!(
            "2026-12-01T10:22:{:02}Z INFO using {v} for upstream",
            rng.u8(0..60)
        ),
        4 => format!("curl -s https://api.example.com/v1/items \\\n  {v}"),
        5 => format!("The deploy log printed:\n{v}\nand then exited with 1."),
        6 => format!("({v})"),
        _ => v.to_string(),
    }
}

struct Case {
    kind: K,
    text: String,
}

fn positives(rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    for kind in K::ALL {
        for _ in 0..N {
            let v = value(rng, kind);
            out.push(Case {
                kind,
                text: context(rng, &v),
            });
        }
    }
    out
}

// === negatives ===

fn prose(rng: &mut Rng) -> String {
    let s = [
        "Rotate your API keys every ninety days and never paste a secret key into a chat.",
        "The bearer of this letter is authorised to collect the parcel.",
        "Set the password in the vault, not in the repository; tokens expire after an hour.",
        "Our SDK reads the key from OPENAI_API_KEY; see the docs for the sk- prefix format.",
        "A JWT has three parts separated by dots: header, payload and signature.",
        "Use a bearer token in the Authorization header, e.g. Bearer <token>.",
        "AWS access keys start with AKIA; never commit them.",
        "She asked for the password reset link and the support task-list.",
        "The skeleton key opened the desk-drawer; ghosts and glyphs aside, nothing was taken.",
        "Private keys begin with a -----BEGIN line and must stay private.",
    ];
    (0..rng.usize(1..4))
        .map(|_| one(rng, &s))
        .collect::<Vec<_>>()
        .join(" ")
}

fn code(rng: &mut Rng) -> String {
    let s = [
        "api_key = os.environ[\"OPENAI_API_KEY\"]",
        "conn = psycopg2.connect(host=h, user=u, password=get_password())",
        "const token = process.env.GITHUB_TOKEN ?? \"\";",
        "headers = {\"Authorization\": f\"Bearer {token}\"}",
        "password=${DB_PASSWORD}",
        "DATABASE_URL=postgres://user:password@localhost:5432/dev",
        "redis_url = \"redis://localhost:6379/0\"",
        "let sk = SigningKey::from_bytes(&seed);",
        "if user.password == hashed: return True",
        "mysql://root:<password>@db/app",
        "pwd=$(pwd)",
        "password: \"{{ vault_db_password }}\"",
        "aws_secret_access_key = <YOUR_SECRET_KEY>",
        "client = Slack(token=os.getenv('SLACK_BOT_TOKEN'))",
        "jwt.decode(token, key, algorithms=[\"HS256\"])",
    ];
    (0..rng.usize(1..4))
        .map(|_| one(rng, &s))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hashes(rng: &mut Rng) -> String {
    let uuid = format!(
        "{}-{}-4{}-{}{}-{}",
        pick(rng, HEX, 8),
        pick(rng, HEX, 4),
        pick(rng, HEX, 3),
        one(rng, &["8", "9", "a", "b"]),
        pick(rng, HEX, 3),
        pick(rng, HEX, 12)
    );
    match rng.u8(0..5) {
        0 => format!("request {uuid} done"),
        1 => format!("commit {} (sha1)", pick(rng, HEX, 40)),
        2 => format!("sha256:{}", pick(rng, HEX, 64)),
        3 => format!("md5 {} etag \"{}\"", pick(rng, HEX, 32), pick(rng, HEX, 32)),
        _ => format!(
            "trace_id={} span_id={}",
            pick(rng, HEX, 32),
            pick(rng, HEX, 16)
        ),
    }
}

fn blobs(rng: &mut Rng) -> String {
    let n = rng.usize(16..200);
    let mut b = pick(rng, B64, n);
    while !b.len().is_multiple_of(4) {
        b.push('=');
    }
    match rng.u8(0..4) {
        0 => format!("data:image/png;base64,{b}"),
        1 => format!("\"attachment\": \"{b}\""),
        2 => format!("signature {}", pick(rng, B64, 40)),
        _ => format!(
            "nonce={} cursor={}",
            pick(rng, B64URL, 40),
            pick(rng, B64URL, 24)
        ),
    }
}

fn ids(rng: &mut Rng) -> String {
    match rng.u8(0..6) {
        0 => format!(
            "pod checkout-{}-{}",
            pick(rng, HEX, 10),
            pick(rng, b"abcdefghijklmnopqrstuvwxyz0123456789", 5)
        ),
        1 => format!("order AKIA-{} shipped", pick(rng, b"0123456789", 8)),
        2 => format!(
            "https://example.com/users/{}?page=2&sort=asc",
            pick(rng, ALNUM, 12)
        ),
        3 => format!(
            "ssh git@github.com:acme/{}.git",
            pick(rng, b"abcdefghijklmnopqrstuvwxyz", 8)
        ),
        4 => format!(
            "postgres://{}@db.internal/app (no password)",
            one(rng, &["app", "reader"])
        ),
        _ => format!(
            "task-{} sk-{} gh-{}",
            pick(rng, ALNUM, 8),
            pick(rng, ALNUM, 10),
            pick(rng, ALNUM, 12)
        ),
    }
}

/// Near misses: a secret's prefix with the wrong length, alphabet or structure.
fn near(rng: &mut Rng) -> String {
    let n = rng.usize(8..30);
    let v = match rng.u8(0..10) {
        0 => format!("sk-{}", body(rng, ALNUM, n)),
        1 => format!("AKIA{}", pick(rng, UPPER_DIGIT, 15)),
        2 => format!("AIza{}", body(rng, B64URL, 34)),
        3 => format!("eyJ{}.eyJ{}", pick(rng, B64URL, 30), pick(rng, B64URL, 40)),
        4 => format!("ghp_{}", body(rng, ALNUM, 35)),
        5 => format!("xoxb-{}", body(rng, ALNUM, 12)),
        6 => format!("Bearer {}", body(rng, ALNUM, 15)),
        7 => format!("glpat-{}", body(rng, ALNUM, 19)),
        8 => format!("{}sk-{}", pick(rng, ALNUM, 3), body(rng, ALNUM, 48)),
        _ => format!(
            "-----BEGIN PRIVATE KEY----- {}",
            pick(rng, b"abcdefghij ", 20)
        ),
    };
    format!("near {v} miss")
}

/// A named class of negatives and its generator.
type Class = (&'static str, fn(&mut Rng) -> String);

const CLASSES: [Class; 6] = [
    ("prose about keys, tokens and passwords", prose),
    (
        "code and config reading secrets from elsewhere, placeholders",
        code,
    ),
    ("UUIDs, sha1/sha256/md5 hex, trace ids", hashes),
    ("base64 blobs, nonces, signatures", blobs),
    ("ids, pod names, URLs without passwords", ids),
    (
        "near misses: prefixes with the wrong length, alphabet or structure",
        near,
    ),
];

// === measuring ===

fn streamed(rng: &mut Rng, text: &str, cuts: usize) -> u16 {
    let mut at: Vec<usize> = (0..cuts)
        .map(|_| rng.usize(0..=text.len()))
        .filter(|c| text.is_char_boundary(*c))
        .collect();
    at.sort_unstable();
    let mut s = StreamScanner::new();
    let mut prev = 0;
    for c in at {
        let r = s.push(&text[prev..c]);
        prev = c;
        if r.found != 0 {
            return r.found;
        }
    }
    let r = s.push(&text[prev..]);
    if r.found != 0 {
        return r.found;
    }
    s.finish().found
}

/// Found whole, in a JSON document (the value as a JSON string, escapes and all, read by the
/// JSON walker), streamed with random cuts, and streamed split in two at every byte.
struct Recall {
    kind: K,
    whole: usize,
    json: usize,
    stream: usize,
    every_cut: (usize, usize),
}

fn recall() -> Vec<Recall> {
    let mut rng = Rng::with_seed(SEED);
    let cases = positives(&mut rng);
    K::ALL
        .into_iter()
        .map(|kind| {
            let mine: Vec<&Case> = cases.iter().filter(|c| c.kind == kind).collect();
            let mut r = Recall {
                kind,
                whole: 0,
                json: 0,
                stream: 0,
                every_cut: (0, 0),
            };
            for (i, c) in mine.iter().enumerate() {
                r.whole += usize::from(kinds(&c.text) & kind.bit() != 0);
                let doc =
                    serde_json::json!({ "messages": [{ "role": "user", "content": c.text }] });
                let parsed: serde_json::Value =
                    serde_json::from_str(&doc.to_string()).unwrap_or_default();
                r.json += usize::from(crate::detect::json::secret_kinds(&parsed) & kind.bit() != 0);
                let cuts = rng.usize(1..8);
                r.stream += usize::from(streamed(&mut rng, &c.text, cuts) != 0);
                if i < EVERY_CUT {
                    for cut in 1..c.text.len() {
                        if !c.text.is_char_boundary(cut) {
                            continue;
                        }
                        let mut s = StreamScanner::new();
                        let a = s.push(&c.text[..cut]);
                        let b = if a.found != 0 {
                            a.clone()
                        } else {
                            s.push(&c.text[cut..])
                        };
                        let f = if b.found != 0 {
                            b.found
                        } else {
                            s.finish().found
                        };
                        r.every_cut.1 += 1;
                        r.every_cut.0 += usize::from(f != 0);
                    }
                }
            }
            r
        })
        .collect()
}

fn false_positives() -> Vec<(&'static str, usize, Vec<String>)> {
    let mut rng = Rng::with_seed(SEED ^ 0xFFFF);
    CLASSES
        .iter()
        .map(|(name, make)| {
            let mut hits = 0;
            let mut examples = Vec::new();
            for _ in 0..N {
                let t = make(&mut rng);
                if kinds(&t) != 0 {
                    hits += 1;
                    if examples.len() < 3 {
                        examples.push(t);
                    }
                }
            }
            (*name, hits, examples)
        })
        .collect()
}

#[test]
fn recall_and_false_positives_hold_their_floors() {
    let r = recall();
    println!(
        "| kind | whole text | in JSON | streamed (1-7 random cuts) | split in two at every byte |"
    );
    println!("|---|---:|---:|---:|---:|");
    for x in &r {
        let f = |n: usize| n as f64 / N as f64;
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} ({} splits) |",
            x.kind.as_str(),
            f(x.whole),
            f(x.json),
            f(x.stream),
            x.every_cut.0 as f64 / x.every_cut.1 as f64,
            x.every_cut.1
        );
    }
    let fp = false_positives();
    println!("\n| negatives (lines with any match) | count |");
    println!("|---|---:|");
    let mut total = 0;
    for (name, hits, examples) in &fp {
        println!("| {name} | {hits} / {N} |");
        for e in examples {
            println!("  e.g. {e:?}");
        }
        total += hits;
    }
    println!("| **all** | **{total} / {}** |", N * CLASSES.len());
    for x in &r {
        assert!(
            x.whole as f64 / N as f64 >= 0.999,
            "{:?} whole recall {}",
            x.kind,
            x.whole
        );
        assert!(
            x.json as f64 / N as f64 >= 0.999,
            "{:?} JSON recall {}",
            x.kind,
            x.json
        );
        assert_eq!(
            x.stream, x.whole,
            "{:?}: the stream finds what the whole text does",
            x.kind
        );
        assert_eq!(x.every_cut.0, x.every_cut.1, "{:?}: a split hid it", x.kind);
    }
    for (name, hits, _) in &fp {
        assert!(
            *hits as f64 / N as f64 <= 0.01,
            "{name}: {hits} false positives"
        );
    }
}

#[test]
fn the_corpus_is_deterministic() {
    let a: Vec<String> = positives(&mut Rng::with_seed(SEED))
        .into_iter()
        .map(|c| c.text)
        .collect();
    let b: Vec<String> = positives(&mut Rng::with_seed(SEED))
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(a, b);
}
