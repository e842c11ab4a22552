use super::*;
use crate::policy::model::SecretKind as K;

/// Realistic-looking fakes (not live credentials).
pub(super) const SAMPLES: &[(K, &str)] = &[
    (K::OpenaiKey, "sk-3kT9vQmZ8xLp2RwYbN4cHs7dFgJ1aE6uV0oIqWzXtKr5Mn"),
    (K::OpenaiKey, "sk-proj-Xk29fLq0Vb7TmW3pRz8N-aY5cH1dGj_6sUeKo4QiBvD2nAxPlMtS9rF0wE7yZhJ3gC"),
    (K::AnthropicKey, "sk-ant-api03-q8ZrT2xW9vK4mB7nL1pY6cH3sD0fG5jA-UeRtOiQwXzVbNmKl_JhGfDsA1b2C3d4E5f6G7h8-AA"),
    (K::AwsAccessKeyId, "AKIAIOSFODNN7EXAMPLE"),
    (K::AwsAccessKeyId, "ASIAY34FZKBOKMUTVV7A"),
    (K::GithubToken, "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    (K::GithubToken, "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV01234567"),
    (K::GitlabToken, "glpat-xY3kP9mQ2vR7tW1zB5nC"),
    (K::SlackToken, "xoxb-2345678901-3456789012345-AbCdEfGhIjKlMnOpQrStUvWx"),
    (K::SlackToken, "xapp-1-A0123456789-1234567890123-abcdef0123456789"),
    (K::SlackWebhook, "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/aBcDeFgHiJkLmNoPqRsTuVwX"),
    (K::GoogleApiKey, "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    (K::Jwt, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    (K::PrivateKey, "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi..\n-----END RSA PRIVATE KEY-----"),
    (K::PrivateKey, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
    (K::BearerToken, "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    (K::ConnectionPassword, "postgres://app:S3cr3tP4ss@db.internal:5432/orders"),
    (K::ConnectionPassword, "mongodb+srv://admin:hunter2xyz@cluster0.abcde.mongodb.net/test"),
    (K::ConnectionPassword, "redis://:r3d1sPass@cache:6379/0"),
    (K::ConnectionPassword, "host=db port=5432 user=app password=pa55w0rd dbname=orders"),
    (K::ConnectionPassword, "DB_PASSWORD=Tr0ub4dor&3"),
];

#[test]
fn every_sample_is_found_with_its_kind() {
    for (kind, s) in SAMPLES {
        let text = format!("here it is: {s} (keep it safe)");
        let hits = scan(&text);
        assert!(
            hits.iter().any(|h| h.kind == *kind),
            "{kind:?} not found in {text:?}: {hits:?}"
        );
        assert_ne!(kinds(s) & kind.bit(), 0, "{kind:?} alone: {s}");
    }
}

#[test]
fn an_access_key_id_with_its_secret_reports_both() {
    let t = "AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    assert_eq!(kinds(t), K::AwsAccessKeyId.bit() | K::AwsSecretKey.bit());
    let t = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
    assert_eq!(kinds(t), K::AwsSecretKey.bit());
    let t = "\"SecretAccessKey\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"";
    assert_eq!(kinds(t), K::AwsSecretKey.bit());
    // A bare 40-character string is not a secret key.
    assert_eq!(
        kinds("token wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY here"),
        0
    );
}

#[test]
fn look_alikes_do_not_match() {
    for t in [
        "The task-runner and desk-lamp are sk-learn friends.",
        "sk-this-is-not-a-key-at-all-just-words-in-a-row",
        "use scikit (sk-) or xoxo, hugs; ghp_ is GitHub's prefix",
        "uuid 123e4567-e89b-12d3-a456-426614174000 and sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "base64 blob: VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
        "eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0 has no alg",
        "-----BEGIN PRIVATE KEY----- is how a PEM key starts",
        "the bearer of this letter, Bearer YOUR_TOKEN_HERE, bearer token",
        "postgres://user:password@localhost/db and mysql://root:${DB_PASS}@db/x",
        "conn = connect(password=get_password(), host=h)",
        "password=<your password> or password=$PGPASSWORD or pwd=****",
        "AKIAISTHEPREFIXOFAWSKEYSBUTTHISISTOOLONG and AKIA1234",
        "AIzaTooShort and hooks.slack.com/services/ (docs)",
    ] {
        assert_eq!(scan(t), vec![], "{t}");
    }
}

#[test]
fn glued_prefixes_do_not_match() {
    assert_eq!(
        kinds("xsk-3kT9vQmZ8xLp2RwYbN4cHs7dFgJ1aE6uV0oIqWzXtKr5Mn"),
        0
    );
    assert_eq!(kinds("XAKIAIOSFODNN7EXAMPLE"), 0);
    assert_eq!(kinds("AKIAIOSFODNN7EXAMPLEX"), 0);
}

fn stream(parts: &[&str]) -> (String, u16) {
    let mut s = StreamScanner::new();
    let mut out = String::new();
    for p in parts {
        let r = s.push(p);
        out.push_str(&r.emit);
        if r.found != 0 {
            return (out, r.found);
        }
    }
    let r = s.finish();
    out.push_str(&r.emit);
    (out, r.found)
}

#[test]
fn a_secret_split_anywhere_never_leaks() {
    for (kind, secret) in SAMPLES {
        let text = format!("Sure, the value is {secret} and that is all.");
        let start = scan(&text).first().map(|h| h.start).unwrap();
        for cut in 1..text.len() {
            if !text.is_char_boundary(cut) {
                continue;
            }
            let (out, found) = stream(&[&text[..cut], &text[cut..]]);
            assert_ne!(found & kind.bit(), 0, "{kind:?} cut at {cut}");
            assert!(out.len() <= start, "{kind:?} leaked at cut {cut}: {out:?}");
            assert!(text.starts_with(&out));
        }
        // One byte at a time.
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let parts: Vec<&str> = bytes.iter().map(String::as_str).collect();
        let (out, found) = stream(&parts);
        assert_ne!(found, 0, "{kind:?} byte by byte");
        assert!(out.len() <= start, "{kind:?} leaked byte by byte");
    }
}

#[test]
fn prose_passes_whole_and_promptly() {
    let text =
        "The quick brown fox jumps over the lazy dog. Passwords and bearer tokens are secrets. ";
    let (out, found) = stream(&[text, text]);
    assert_eq!(found, 0);
    assert_eq!(out, format!("{text}{text}"));
    let mut s = StreamScanner::new();
    let r = s.push("a few words of prose then a space ");
    assert_eq!(r.emit, "a few words of prose then a space ");
}

#[test]
fn hold_back_is_bounded() {
    let mut s = StreamScanner::new();
    let mut emitted = 0;
    let mut pushed = 0;
    for _ in 0..200 {
        let r = s.push("eyJhbGciOiJIUzI1NiJ9eyJhbGciOiJIUzI1NiJ9");
        pushed += 40;
        emitted += r.emit.len();
        assert_eq!(r.found, 0);
        assert!(pushed - emitted <= HOLD_MAX + 64, "{}", pushed - emitted);
    }
}

proptest::proptest! {
    /// Any text, however chunked: the stream emits a prefix, all of it when nothing was found,
    /// and agrees with a whole-text scan on whether anything was found.
    #[test]
    fn stream_agrees_with_whole_scan(
        pieces in proptest::collection::vec(proptest::sample::select(vec![
            "sk-", "proj-", "ant-", "AKIA", "IOSFODNN7EXAMPLE", "ghp_", "16C7e42F292c6912E7710c838347Ae178B4a",
            "eyJhbGciOiJIUzI1NiJ9", ".", "eyJzdWIiOiIxMjM0NTY3ODkwIn0", "Bearer ", "9f8e7d6c5b4a3928", "postgres://",
            "u:", "p4ss@", "db", "password=", "s3cr3t", " ", "\n", "-----BEGIN ", "PRIVATE KEY-----",
            "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyu", "AIza", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "xoxb-", "12345678901234567890ab",
            "word", "é", "x", "a", "s", "b",
        ]), 0..24),
        cuts in proptest::collection::vec(0usize..400, 0..6),
    ) {
        let text: String = pieces.concat();
        let mut at: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).filter(|c| text.is_char_boundary(*c)).collect();
        at.sort_unstable();
        at.dedup();
        let mut parts = Vec::new();
        let mut prev = 0;
        for c in at { parts.push(&text[prev..c]); prev = c; }
        parts.push(&text[prev..]);
        let (out, found) = stream(&parts);
        proptest::prop_assert!(text.starts_with(&out));
        let whole = kinds(&text);
        proptest::prop_assert_eq!(found == 0, whole == 0, "{:?} parts {:?}", text, parts);
        if found == 0 {
            proptest::prop_assert_eq!(out, text);
        } else if let Some(first) = scan(&text).first() {
            proptest::prop_assert!(out.len() <= first.start);
        }
    }
}

#[test]
fn adversarial_megabyte_is_linear_and_sane() {
    // Every prefix a rule starts from, repeated until it is a megabyte, with nothing after it
    // that completes a secret; bounded, so a scanner gone quadratic fails instead of hanging.
    crate::detect::within(60, "secrets adversarial megabyte", || {
        for (unit, n) in [
            ("sk-", 350_000),
            ("sk-ant-", 150_000),
            ("AKIA", 250_000),
            ("ghp_", 250_000),
            ("glpat-", 170_000),
            ("xoxb-", 200_000),
            ("AIza", 250_000),
            ("eyJ.", 250_000),
            ("-----BEGIN ", 90_000),
            ("Bearer ", 140_000),
            ("postgres://a:", 75_000),
            ("password=", 110_000),
            ("a", 1_000_000),
            ("=", 1_000_000),
        ] {
            let text = unit.repeat(n);
            let hits = scan(&text);
            assert!(
                hits.windows(2).all(|w| w[0].end <= w[1].start),
                "{unit:?}: overlapping hits"
            );
            assert!(
                hits.iter().all(|h| h.start < h.end
                    && h.end <= text.len()
                    && text.is_char_boundary(h.start)),
                "{unit:?}: malformed hit"
            );
            // The streaming scanner reads it too, in small chunks, and emits all or holds it.
            let mut s = StreamScanner::new();
            let mut out = 0;
            for piece in text.as_bytes()[..text.len().min(200_000)].chunks(7) {
                out += s.push(std::str::from_utf8(piece).unwrap()).emit.len();
            }
            out += s.finish().emit.len();
            assert!(out <= 200_000, "{unit:?}");
        }
    });
}

#[test]
fn an_allowed_kind_resumes_a_stopped_stream_and_another_kind_still_stops_it() {
    let key = SAMPLES[0].1;
    let mut s = StreamScanner::new();
    let first = s.push(&format!("take {key} and go "));
    assert_eq!(first.emit, "take ");
    assert_eq!(first.found, K::OpenaiKey.bit());
    // Allowed: the held key and what follows pass on the next push.
    s.allow(K::OpenaiKey.bit());
    assert_eq!(s.found(), 0);
    let resumed = s.push("");
    assert_eq!(resumed.found, 0);
    let mut out = format!("{}{}", first.emit, resumed.emit);
    out.push_str(&s.push("on ").emit);
    out.push_str(&s.finish().emit);
    assert_eq!(out, format!("take {key} and go on "));
    // Allowing one kind leaves the others stopping the stream.
    let mut s = StreamScanner::new();
    s.allow(K::OpenaiKey.bit());
    let p = s.push("AKIAIOSFODNN7EXAMPLE ");
    assert_eq!(p.found, K::AwsAccessKeyId.bit());
    s.allow(K::GithubToken.bit());
    assert_eq!(
        s.found(),
        K::AwsAccessKeyId.bit(),
        "another kind's allowance does not resume it"
    );
    assert_eq!(s.push("more ").emit, "");
}
