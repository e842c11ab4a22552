//! The HTTP channel against a recording upstream: what the detectors cannot read is not clean
//! (content codings, charsets, JSON escapes, binary), everything sent upstream is scanned (path,
//! query, headers, body), and the upstream receives exactly what was judged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod upstream;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use upstream::{connector, Upstream};
use warden::codes::Code;
use warden::policy::model::Action;

const EMAIL: &str = "jane.doe@example.com";

/// A sidecar with two connectors on one recording upstream: `rec` (PII policy, fail_closed)
/// and `rec-open` (PII policy, fail_open).
async fn world(name: &str) -> (Env, Upstream) {
    let up = Upstream::start().await;
    let url = up.url();
    let env = start_with(
        name,
        move |b| {
            format!(
                "{b}{}{}",
                connector("rec", &url, "p310-rec", Some("fail_closed")),
                connector("rec-open", &url, "p320-rec-open", Some("fail_open"))
            )
        },
        |c| c,
    )
    .await;
    (env, up)
}

async fn call(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = http::Request::builder()
        .method(method)
        .uri(env.agent_url(path));
    for (k, v) in headers {
        b = b.header(*k, http::HeaderValue::from_bytes(v).unwrap());
    }
    send(b.body(Full::new(body.into())).unwrap()).await
}

/// The last evidence record's (action, code).
fn last(env: &Env) -> (Option<Action>, Option<Code>) {
    let ev = env.evidence();
    let r = ev.last().expect("a record");
    (r.action, r.code)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_the_detector_cannot_read_are_withheld() {
    let (env, up) = world("http-unreadable-reply").await;
    // A gzip answer (the agent asked for gzip; the upstream would oblige).
    up.answer(
        200,
        &[
            ("content-type", b"application/json"),
            ("content-encoding", b"gzip"),
        ],
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV*I-.Q\xb2R\xcaH\xcd\xc9\xc9W\xaa\x05\x00"
            .to_vec(),
    );
    let r = call(
        &env,
        "GET",
        "/http/rec/v1/x",
        &[("accept-encoding", b"gzip, br")],
        "",
    )
    .await;
    env.assert_refused(&r, 403, "fact_unavailable").await;
    assert_eq!(
        up.last().header("accept-encoding").as_deref(),
        Some("identity"),
        "the agent's Accept-Encoding never goes upstream"
    );
    assert_eq!(
        last(&env),
        (Some(Action::Stop), Some(Code::FactUnavailable))
    );
    // Binary, unlabelled UTF-16 (valid UTF-8 full of NULs), an unknown charset.
    for (ct, body) in [
        (
            "application/octet-stream",
            b"\xff\xfe\xfd\x00jane.doe@example.com\x80".to_vec(),
        ),
        ("text/plain", utf16le(EMAIL)),
        ("text/plain; charset=shift_jis", b"hello".to_vec()),
    ] {
        up.answer(200, &[("content-type", ct.as_bytes())], body);
        let r = call(&env, "GET", "/http/rec/v1/x", &[], "").await;
        env.assert_refused_for(ct, &r, 403, "fact_unavailable")
            .await;
        assert!(!r.text().contains("jane"), "{ct}");
        assert_eq!(
            last(&env),
            (Some(Action::Stop), Some(Code::FactUnavailable)),
            "{ct}"
        );
    }
    // fail_open: it passes, untouched, with a WARN on the record.
    up.answer(
        200,
        &[("content-encoding", b"gzip")],
        b"\x1f\x8bzz".to_vec(),
    );
    let r = call(&env, "GET", "/http/rec-open/v1/x", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&r.body[..], b"\x1f\x8bzz");
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(
        last(&env),
        (Some(Action::Warn), Some(Code::FactUnavailable))
    );
    // An empty body is clean; so is identity.
    up.answer(204, &[("content-encoding", b"identity")], Vec::new());
    let r = call(&env, "GET", "/http/rec/v1/x", &[], "").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(last(&env), (Some(Action::Continue), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_decoded_before_they_are_scanned() {
    let (env, up) = world("http-decoded-reply").await;
    let mut latin = b"Jos\xe9 ".to_vec();
    latin.extend_from_slice(EMAIL.as_bytes());
    for (ct, body) in [
        (
            "application/json",
            br#"{"contact":"jane.doe\u0040example.com"}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"jane\u002edoe\u0040example\u002ecom":1}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"a":"jane.doe\u0040example.com","a":"x"}"#.to_vec(),
        ),
        ("text/plain; charset=iso-8859-1", latin.clone()),
        ("text/plain; charset=windows-1252", latin.clone()),
        ("text/plain; charset=utf-16le", utf16le(EMAIL)),
        (
            "application/json; charset=UTF-16BE",
            utf16be(&format!("{{\"a\":\"{EMAIL}\"}}")),
        ),
        (
            "text/plain",
            [b"\xff\xfe".as_slice(), &utf16le(EMAIL)].concat(),
        ),
        ("text/html", b"<p>jane.doe&#64;example.com</p>".to_vec()),
    ] {
        up.answer(200, &[("content-type", ct.as_bytes())], body);
        let r = call(&env, "GET", "/http/rec/v1/x", &[], "").await;
        env.assert_refused_for(ct, &r, 403, "pii_detected").await;
        assert_eq!(
            last(&env),
            (Some(Action::Stop), Some(Code::PiiDetected)),
            "{ct}"
        );
        // Same under fail_open: PII found is not a missing fact.
        let r = call(&env, "GET", "/http/rec-open/v1/x", &[], "").await;
        env.assert_refused_for(ct, &r, 403, "pii_detected").await;
    }
    // Neighbours: clean texts in the same encodings pass, byte for byte.
    for (ct, body) in [
        (
            "application/json",
            br#"{"city":"S\u00e3o Paulo","at":"\u0040home"}"#.to_vec(),
        ),
        ("text/plain; charset=latin1", b"S\xe3o Paulo".to_vec()),
        ("text/plain; charset=utf-16le", utf16le("S\u{e3}o Paulo")),
    ] {
        up.answer(200, &[("content-type", ct.as_bytes())], body.clone());
        let r = call(&env, "GET", "/http/rec/v1/x", &[], "").await;
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
        assert_eq!(r.body.to_vec(), body, "{ct}");
    }
    // PII in a reply header the agent would get.
    up.answer(200, &[("x-contact", EMAIL.as_bytes())], b"ok".to_vec());
    let r = call(&env, "GET", "/http/rec/v1/x", &[], "").await;
    env.assert_refused(&r, 403, "pii_detected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_decoded_or_the_fact_is_unavailable() {
    let (env, up) = world("http-request-bodies").await;
    // One invalid byte: today's "not UTF-8, so clean".
    let mut bad = format!("{{\"to\":\"{EMAIL}\"}}").into_bytes();
    bad.push(0xff);
    let r = call(
        &env,
        "POST",
        "/http/rec/v1/send",
        &[("content-type", b"application/json")],
        bad.clone(),
    )
    .await;
    env.assert_refused(&r, 403, "fact_unavailable").await;
    assert_eq!(
        last(&env),
        (Some(Action::Stop), Some(Code::FactUnavailable))
    );
    let r = call(
        &env,
        "POST",
        "/http/rec/v1/send",
        &[("content-encoding", b"gzip")],
        Bytes::from_static(b"\x1f\x8bxx"),
    )
    .await;
    env.assert_refused(&r, 403, "fact_unavailable").await;
    let mut latin = b"Jos\xe9 ".to_vec();
    latin.extend_from_slice(EMAIL.as_bytes());
    for (ct, body) in [
        (
            "application/json",
            br#"{"to":"jane.doe\u0040example.com"}"#.to_vec(),
        ),
        ("text/plain; charset=latin1", latin),
        ("text/plain; charset=utf-16", utf16be(EMAIL)),
        (
            "application/x-www-form-urlencoded",
            b"to=jane.doe%40example.com&x=1".to_vec(),
        ),
    ] {
        let r = call(
            &env,
            "POST",
            "/http/rec/v1/send",
            &[("content-type", ct.as_bytes())],
            body,
        )
        .await;
        env.assert_refused_for(ct, &r, 403, "pii_detected").await;
    }
    assert_eq!(up.count(), 0, "no refused body reached the upstream");
    // fail_open: the unreadable body passes with a WARN, exactly as sent.
    let r = call(&env, "POST", "/http/rec-open/v1/send", &[], bad.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body.to_vec(), bad);
    assert_eq!(
        last(&env),
        (Some(Action::Warn), Some(Code::FactUnavailable))
    );
    // ...but PII beside an unreadable body still stops (the fact is partial, not missing).
    let r = call(
        &env,
        "POST",
        "/http/rec-open/v1/send?to=jane.doe%40example.com",
        &[],
        bad,
    )
    .await;
    env.assert_refused(&r, 403, "pii_detected").await;
    // A clean JSON body passes.
    let r = call(
        &env,
        "POST",
        "/http/rec/v1/send",
        &[("content-type", b"application/json")],
        r#"{"city":"\u0053ao"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_query_and_headers_sent_upstream_are_scanned() {
    let (env, up) = world("http-request-parts").await;
    for (path, headers) in [
        ("/http/rec/v1/users/jane.doe%40example.com", vec![]),
        ("/http/rec/v1/users/jane.doe@example.com", vec![]),
        ("/http/rec/v1/find?email=jane.doe%40example.com", vec![]),
        ("/http/rec/v1/find?email=jane.doe%2540example.com", vec![]),
        ("/http/rec/v1/find?ssn=078-05-1120", vec![]),
        ("/http/rec/v1/find?card=4111+1111+1111+1111", vec![]),
        ("/http/rec/v1/find", vec![("x-contact", EMAIL.as_bytes())]),
        (
            "/http/rec/v1/find",
            vec![("referer", b"http://x/?e=jane.doe%40example.com".as_slice())],
        ),
    ] {
        let r = call(&env, "GET", path, &headers, "").await;
        env.assert_refused_for(&format!("{path} {headers:?}"), &r, 403, "pii_detected")
            .await;
        assert_eq!(last(&env), (Some(Action::Stop), Some(Code::PiiDetected)));
    }
    assert_eq!(up.count(), 0);
    // Neighbours: headers that never go upstream are not the upstream's PII.
    let r = call(
        &env,
        "GET",
        "/http/rec/v1/find?q=paris+weather",
        &[("authorization", format!("Bearer {EMAIL}").as_bytes())],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_path_that_was_judged_and_no_override_headers() {
    let (env, up) = world("http-judged-is-sent").await;
    for (path, target) in [
        (
            "/http/rec/v1/forecast/a%3Fx=1%23frag",
            "/v1/forecast/a%3Fx=1%23frag",
        ),
        (
            "/http/rec/v1/forecast/new%20york",
            "/v1/forecast/new%20york",
        ),
        (
            "/http/rec/v1/forecast/s%C3%A3o%2Bx",
            "/v1/forecast/s%C3%A3o+x",
        ),
        (
            "/http/rec/v1/forecast/a?days=2&x=%41",
            "/v1/forecast/a?days=2&x=%41",
        ),
        (
            "/http/rec/v1/forecast/a?x=%zz&y=%",
            "/v1/forecast/a?x=%25zz&y=%25",
        ),
    ] {
        let r = call(&env, "GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(up.last().target, target, "{path}");
    }
    let seen = up.last();
    assert_eq!(seen.query.as_deref(), Some("x=%25zz&y=%25"));
    // Method overrides, URL rewrites, proxy headers and ranges stay behind.
    let r = call(
        &env,
        "GET",
        "/http/rec/v1/forecast/paris",
        &[
            ("x-http-method-override", b"DELETE"),
            ("x-http-method", b"DELETE"),
            ("x-method-override", b"DELETE"),
            ("x-original-url", b"/admin"),
            ("x-rewrite-url", b"/admin"),
            ("forwarded", b"for=10.0.0.1;host=internal"),
            ("x-forwarded-for", b"10.0.0.1"),
            ("x-forwarded-host", b"internal"),
            ("x-forwarded-proto", b"https"),
            ("x-real-ip", b"10.0.0.1"),
            ("via", b"1.1 evil"),
            ("range", b"bytes=0-3"),
            ("accept-encoding", b"gzip"),
            ("x-custom", b"passes"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "range",
    ] {
        assert_eq!(seen.header(h), None, "{h} must not reach the upstream");
    }
    assert_eq!(seen.header("via").as_deref(), Some("1.1 warden"));
    assert_eq!(seen.header("accept-encoding").as_deref(), Some("identity"));
    assert_eq!(seen.header("x-custom").as_deref(), Some("passes"));
    // `..;` is `..` to some servers: refused, never sent.
    let before = up.count();
    let r = call(&env, "GET", "/http/rec/v1/..;/admin", &[], "").await;
    env.assert_refused(&r, 403, "path_not_allowed").await;
    assert_eq!(last(&env).1, Some(Code::PathNotAllowed));
    assert_eq!(up.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_query_cannot_smuggle_a_fragment_or_bytes_the_upstream_reads_otherwise() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (env, up) = world("http-raw-query").await;
    for (target, sent) in [
        (&b"/http/rec/v1/a?x=1#frag?y=2"[..], "/v1/a?x=1"),
        (b"/http/rec/v1/a?x=\xc3\xa9&y=%zz", "/v1/a?x=%C3%A9&y=%25zz"),
        (b"/http/rec/v1/\xc3\xa9?q", "/v1/%C3%A9?q"),
    ] {
        let mut s = tokio::net::TcpStream::connect(env.sidecar.agent_addr)
            .await
            .unwrap();
        let req = [
            b"GET ".as_slice(),
            target,
            b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ]
        .concat();
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert_eq!(up.last().target, sent);
    }
}
