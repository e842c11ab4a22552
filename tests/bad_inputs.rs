//! The bad-input catalogue (docs/bad-inputs.md): one table of hostile or malformed agent
//! requests, each sent over a real socket to a sidecar with PII policies on the LLM and HTTP
//! channels, each expected to be refused with its status and code, with exactly one evidence
//! record of its own (found by decision id) and — unless the case says otherwise — without any
//! upstream having been reached.
//!
//! Every case runs in a run of its own (a fresh `x-warden-run-id`), so a STOP in one never
//! leaks into the next. Cases that need a state first (a stopped run, a mode) say so in
//! `setup` / `mode`. Every case is active: a case for behaviour not built yet is not written
//! down as a skip (it would report success for a test that did not run); it lands with the work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod upstream;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upstream::Upstream;
use warden::evidence::record::{Kind, Outcome};

const EMAIL: &str = "jane.doe@example.com";
const MODEL: &str = "gpt-4o-mini";
const CI_SECRET: &str = "ci-secret-bad-inputs";
/// `limits.max_request_bytes` of the sidecars.
const MAX_BODY: usize = 65_536;

// === the table's types ===

#[derive(Clone)]
enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Sent with `transfer-encoding: chunked`, in chunks of 16 KiB.
    Chunked(Vec<u8>),
    /// Only declared: `content-length: N`, no bytes follow.
    Declared(u64),
    /// A framing header line of its own and these bytes as they are (malformed framing).
    Raw(&'static str, Vec<u8>),
}

#[derive(Clone)]
enum Run {
    /// A run id of the case's own.
    Fresh,
    /// Exactly this header value (an identity case).
    Header(Vec<u8>),
}

#[derive(Clone)]
struct Req {
    method: &'static str,
    /// The request target exactly as it goes on the wire (origin-, absolute- or
    /// authority-form).
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    run: Run,
}

impl Req {
    fn new(method: &'static str, target: impl Into<Vec<u8>>) -> Req {
        Req {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: Body::Empty,
            run: Run::Fresh,
        }
    }
    fn h(mut self, name: &str, value: impl Into<Vec<u8>>) -> Req {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Req {
        self.body = Body::Bytes(b.into());
        self
    }
    fn framing(mut self, b: Body) -> Req {
        self.body = b;
        self
    }
    fn at(mut self, target: &str) -> Req {
        self.target = target.as_bytes().to_vec();
        self
    }
    fn run(mut self, v: impl Into<Vec<u8>>) -> Req {
        self.run = Run::Header(v.into());
        self
    }
}

/// `POST /v1/chat/completions` with these raw bytes.
fn chat_raw(body: impl Into<Vec<u8>>) -> Req {
    Req::new("POST", "/v1/chat/completions")
        .h("content-type", "application/json")
        .body(body)
}

/// A chat completion: `v` is merged over a valid request.
fn chat(v: Value) -> Req {
    let mut base = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }] });
    for (k, val) in v.as_object().unwrap() {
        if val.is_null() && k.starts_with('-') {
            base.as_object_mut().unwrap().remove(&k[1..]);
        } else {
            base[k] = val.clone();
        }
    }
    chat_raw(base.to_string())
}

/// A chat completion whose one user message says `content`.
fn say(content: &str) -> Req {
    chat(json!({ "messages": [{ "role": "user", "content": content }] }))
}

fn get(target: impl Into<Vec<u8>>) -> Req {
    Req::new("GET", target)
}

fn post(target: impl Into<Vec<u8>>, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
    Req::new("POST", target)
        .h("content-type", content_type)
        .body(body)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The main sidecar (no api keys declared).
    Main,
    /// The sidecar with `identity.api_keys`.
    Keys,
}

#[derive(Clone)]
enum Expect {
    /// Refused with this status and code.
    Refused(u16, &'static str),
    /// Passed (200), and the upstream saw none of these headers, and the method as sent.
    Dropped(&'static [&'static str]),
    /// Not HTTP the parser accepts: hyper answers a bare 400 and closes; no call, so no
    /// decision id and no record — and nothing reaches an upstream.
    Unparsed,
}

#[derive(Clone)]
struct Case {
    name: String,
    class: &'static str,
    side: Side,
    /// Requests sent first in the same run (their answers are not checked).
    setup: Vec<Req>,
    /// `POST /ops/mode` bodies before and after the request.
    mode: Option<(Value, Value)>,
    req: Req,
    expect: Expect,
    /// Whether an upstream may be reached by the request.
    reach: bool,
    /// Extra headers the recording upstream answers this case with (a reply case: the upstream
    /// is reached, the answer withheld).
    answer: Option<Vec<(&'static str, Vec<u8>)>>,
}

fn refused(class: &'static str, name: &str, req: Req, status: u16, code: &'static str) -> Case {
    Case {
        name: name.to_string(),
        class,
        side: Side::Main,
        setup: Vec::new(),
        mode: None,
        req,
        expect: Expect::Refused(status, code),
        reach: false,
        answer: None,
    }
}

impl Case {
    fn setup(mut self, r: Req) -> Case {
        self.setup.push(r);
        self
    }
    fn answered_with(mut self, header: &'static str, value: impl Into<Vec<u8>>) -> Case {
        self.answer = Some(vec![
            ("content-type", b"application/json".to_vec()),
            (header, value.into()),
        ]);
        self.reach = true;
        self
    }
    fn unparsed(mut self) -> Case {
        self.expect = Expect::Unparsed;
        self
    }
    fn keys(mut self) -> Case {
        self.side = Side::Keys;
        self
    }
    #[allow(dead_code)]
    fn mode(mut self, set: Value, back: Value) -> Case {
        self.mode = Some((set, back));
        self
    }
}

// === the catalogue ===

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The `host:port` of each upstream, for the egress cases.
struct Hosts {
    weather: String,
    llm: String,
    rec: String,
    based: String,
}

/// The table. One case a line where it fits: a class, a name, the request, the expected
/// status and code (and, by builder, setup, mode, side).
#[rustfmt::skip]
fn catalogue(h: &Hosts) -> Vec<Case> {
    let mut c = Vec::new();

    // --- malformed JSON and wrong types on /v1/chat/completions ---
    let k = "chat-json";
    let bad = |c: &mut Vec<Case>, name: &str, r: Req| c.push(refused(k, name, r, 400, "bad_request"));
    bad(&mut c, "not JSON", chat_raw("{not json"));
    bad(&mut c, "empty body", chat_raw(""));
    bad(&mut c, "truncated JSON", chat_raw(r#"{"model":"gpt-4o-mini","messages":[{"#));
    bad(&mut c, "trailing garbage", chat_raw(r#"{"model":"gpt-4o-mini"} x"#));
    bad(&mut c, "invalid UTF-8 in a string", chat_raw(b"{\"model\":\"gpt-4o-mini\xff\"}".to_vec()));
    bad(&mut c, "UTF-8 BOM before the JSON", chat_raw([b"\xef\xbb\xbf".as_slice(), br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#].concat()));
    bad(&mut c, "nesting deeper than the parser allows", chat_raw(format!(r#"{{"model":"gpt-4o-mini","metadata":{}{}}}"#, "[".repeat(200), "]".repeat(200))));
    c.push(refused(k, "duplicate model keys: the last is judged", chat_raw(r#"{"model":"gpt-4o-mini","model":"gpt-9-imaginary","messages":[{"role":"user","content":"hi"}]}"#), 403, "no_allow_policy"));
    bad(&mut c, "a gzip body (the chat endpoint reads JSON only)", chat_raw(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV*I-.Q\xb2R\xcaH\xcd\xc9\xc9W\xaa\x05\x00".to_vec()).h("content-encoding", "gzip"));
    bad(&mut c, "a UTF-16 body", chat_raw(utf16le(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)));
    bad(&mut c, "a lone surrogate escape", chat_raw(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\ud800"}]}"#));
    let inv = |c: &mut Vec<Case>, name: &str, r: Req| c.push(refused(k, name, r, 400, "invalid_params"));
    inv(&mut c, "top level is an array", chat_raw("[]"));
    inv(&mut c, "top level is a string", chat_raw(r#""hi""#));
    inv(&mut c, "top level is null", chat_raw("null"));
    inv(&mut c, "model missing", chat(json!({ "-model": null })));
    inv(&mut c, "model empty", chat(json!({ "model": "" })));
    inv(&mut c, "model numeric", chat(json!({ "model": 4 })));
    inv(&mut c, "model an array", chat(json!({ "model": [MODEL] })));
    inv(&mut c, "messages missing", chat(json!({ "-messages": null })));
    inv(&mut c, "messages an object", chat(json!({ "messages": { "role": "user", "content": "hi" } })));
    inv(&mut c, "messages a string", chat(json!({ "messages": "hi" })));
    inv(&mut c, "messages empty", chat(json!({ "messages": [] })));
    inv(&mut c, "message item a string", chat(json!({ "messages": ["hi"] })));
    inv(&mut c, "message item a number", chat(json!({ "messages": [{ "role": "user", "content": "hi" }, 7] })));
    inv(&mut c, "role missing", chat(json!({ "messages": [{ "content": "hi" }] })));
    inv(&mut c, "role numeric", chat(json!({ "messages": [{ "role": 1, "content": "hi" }] })));
    inv(&mut c, "content a number", chat(json!({ "messages": [{ "role": "user", "content": 42 }] })));
    inv(&mut c, "content an object", chat(json!({ "messages": [{ "role": "user", "content": { "text": "hi" } }] })));
    inv(&mut c, "content part text a number", chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "text", "text": 5 }] }] })));
    inv(&mut c, "stream a string", chat(json!({ "stream": "true" })));
    inv(&mut c, "stream a number", chat(json!({ "stream": 1 })));
    inv(&mut c, "max_tokens 0", chat(json!({ "max_tokens": 0 })));
    inv(&mut c, "max_tokens negative", chat(json!({ "max_tokens": -5 })));
    inv(&mut c, "max_tokens a string", chat(json!({ "max_tokens": "5" })));
    inv(&mut c, "max_tokens a float", chat(json!({ "max_tokens": 1.5 })));
    inv(&mut c, "max_completion_tokens 0", chat(json!({ "max_completion_tokens": 0 })));
    inv(&mut c, "n 0", chat(json!({ "n": 0 })));
    inv(&mut c, "n 129", chat(json!({ "n": 129 })));
    inv(&mut c, "n a string", chat(json!({ "n": "2" })));
    inv(&mut c, "n a float", chat(json!({ "n": 1.5 })));
    inv(&mut c, "n negative", chat(json!({ "n": -1 })));
    // No allow policy names the model, so deny by default answers before any connector is
    // looked for.
    c.push(refused(k, "unknown model", chat(json!({ "model": "gpt-9-imaginary" })), 403, "no_allow_policy"));

    // --- request framing ---
    let k = "framing";
    c.push(refused(k, "a malformed chunk size", chat_raw(Vec::new()).framing(Body::Raw("transfer-encoding: chunked", b"zz\r\nhello\r\n0\r\n\r\n".to_vec())), 400, "bad_request"));
    c.push(refused(k, "both content-length and chunked (read as chunked: an empty body)", chat_raw(Vec::new()).framing(Body::Raw("content-length: 3\r\ntransfer-encoding: chunked", b"0\r\n\r\n".to_vec())), 400, "bad_request"));
    c.push(refused(k, "two content-lengths: the HTTP parser answers, no call exists", chat_raw(Vec::new()).framing(Body::Raw("content-length: 2\r\ncontent-length: 3", b"abc".to_vec())), 400, "").unparsed());
    c.push(refused(k, "raw space in target: the HTTP parser answers, no call exists", get(b"/http/rec/v1/a b".to_vec()), 400, "").unparsed());
    c.push(refused(k, "raw NUL in target: the HTTP parser answers, no call exists", get(b"/http/rec/v1/a\x00b".to_vec()), 400, "").unparsed());
    c.push(refused(k, "raw DEL in target: the HTTP parser answers, no call exists", get(b"/http/rec/v1/a\x7fb".to_vec()), 400, "").unparsed());
    c.push(refused(k, "raw non-ASCII then dot-dot in the target", get(b"/http/rec/v1/\xc3\xa9/..".to_vec()), 403, "path_not_allowed"));
    c.push(refused(k, "header without colon: the HTTP parser answers, no call exists", say("hi").h("x-broken\r\nbad header line", "x"), 400, "").unparsed());
    c.push(refused(k, "a chunk longer than its size", chat_raw(Vec::new()).framing(Body::Raw("transfer-encoding: chunked", b"2\r\nhello\r\n0\r\n\r\n".to_vec())), 400, "bad_request"));

    // --- oversized bodies (limits.max_request_bytes = 64 KiB) ---
    let k = "oversized";
    let big = vec![b'a'; MAX_BODY + 1];
    c.push(refused(k, "chat: declared by content-length", chat_raw(Vec::new()).framing(Body::Declared(10_000_000)), 413, "body_too_large"));
    c.push(refused(k, "chat: chunked past the cap", chat_raw(Vec::new()).framing(Body::Chunked(big.clone())), 413, "body_too_large"));
    c.push(refused(k, "chat: content-length one byte over", chat_raw(Vec::new()).framing(Body::Declared(MAX_BODY as u64 + 1)), 413, "body_too_large"));
    c.push(refused(k, "http: declared by content-length", post("/http/rec/v1/send", "text/plain", Vec::new()).framing(Body::Declared(10_000_000)), 413, "body_too_large"));
    c.push(refused(k, "http: chunked past the cap", post("/http/rec/v1/send", "text/plain", Vec::new()).framing(Body::Chunked(big)), 413, "body_too_large"));
    c.push(refused(k, "http: over the connector's own 256 bytes", post("/http/rec/v1/send", "text/plain", vec![b'a'; 300]), 413, "body_too_large"));

    // --- unknown routes and methods ---
    let k = "routes";
    c.push(refused(k, "unknown path", get("/nope"), 404, "unknown_route"));
    c.push(refused(k, "root path", get("/"), 404, "unknown_route"));
    c.push(refused(k, "other API version", post("/v2/chat/completions", "application/json", r#"{"model":"gpt-4o-mini"}"#), 404, "unknown_route"));
    c.push(refused(k, "legacy completions endpoint", post("/v1/completions", "application/json", r#"{"model":"gpt-4o-mini","prompt":"hi"}"#), 404, "unknown_route"));
    c.push(refused(k, "chat completions with a trailing slash", say("hi").at("/v1/chat/completions/"), 404, "unknown_route"));
    c.push(refused(k, "chat completions in another case", say("hi").at("/V1/chat/completions"), 404, "unknown_route"));
    c.push(refused(k, "GET on chat completions", get("/v1/chat/completions"), 405, "method_not_supported"));
    c.push(refused(k, "PUT on chat completions", Req::new("PUT", "/v1/chat/completions").h("content-type", "application/json").body("{}"), 405, "method_not_supported"));
    c.push(refused(k, "POST on /v1/models", post("/v1/models", "application/json", "{}"), 405, "method_not_supported"));
    c.push(refused(k, "DELETE on /v1/models", Req::new("DELETE", "/v1/models"), 405, "method_not_supported"));
    // A JSON route reads only bodies labelled JSON: a browser's cross-site simple request
    // (text/plain, a form) must not spend the agent's budget.
    let valid = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    c.push(refused(k, "chat as text/plain (a browser simple request)", post("/v1/chat/completions", "text/plain", valid), 415, "unsupported_media_type"));
    c.push(refused(k, "chat as text/plain with a JSON-ish charset", post("/v1/chat/completions", "text/plain; charset=application/json", valid), 415, "unsupported_media_type"));
    c.push(refused(k, "chat as a form", post("/v1/chat/completions", "application/x-www-form-urlencoded", valid), 415, "unsupported_media_type"));
    c.push(refused(k, "chat as multipart", post("/v1/chat/completions", "multipart/form-data; boundary=x", valid), 415, "unsupported_media_type"));
    c.push(refused(k, "chat as text/json", post("/v1/chat/completions", "text/json", valid), 415, "unsupported_media_type"));
    c.push(refused(k, "chat with no content-type", Req::new("POST", "/v1/chat/completions").body(valid), 415, "unsupported_media_type"));
    c.push(refused(k, "chat with two content-types, the first not JSON", post("/v1/chat/completions", "text/plain", valid).h("content-type", "application/json"), 415, "unsupported_media_type"));
    c.push(refused(k, "OPTIONS *", Req::new("OPTIONS", "*"), 404, "unknown_route"));
    c.push(refused(k, "CONNECT in origin-form", Req::new("CONNECT", "/http/rec/v1/x"), 400, "bad_request"));
    c.push(refused(k, "unknown connector under /http/", get("/http/nosuch/v1/x"), 404, "unknown_connector"));
    c.push(refused(k, "empty connector name", get("/http//v1/x"), 404, "unknown_connector"));
    c.push(refused(k, "%-encoded connector name", get("/http/%72ec/v1/x"), 404, "unknown_connector"));
    c.push(refused(k, "another tenant's connector", get("/http/foreign/v1/x"), 403, "cross_tenant"));
    c.push(refused(k, "an LLM connector under /http/", get("/http/openai/v1/models"), 404, "unknown_connector"));
    c.push(refused(k, "a SQL connector under /http/", get("/http/crm-db/x"), 404, "unknown_connector"));
    c.push(refused(k, "x-warden-connector: an HTTP connector for chat", say("hi").h("x-warden-connector", "weather"), 404, "unknown_connector"));
    c.push(refused(k, "x-warden-connector: no such connector", say("hi").h("x-warden-connector", "nosuch"), 404, "unknown_connector"));
    c.push(refused(k, "x-warden-connector: another tenant's LLM", say("hi").h("x-warden-connector", "foreign-llm"), 403, "cross_tenant"));

    // --- HTTP path tricks (rec allows GET and POST below /; weather GET below /v1/forecast/) ---
    let k = "http-path";
    let path_cases: &[(&str, &[u8])] = &[
        ("dot-dot segment", b"/http/rec/v1/../admin"),
        ("dot segment", b"/http/rec/v1/./x"),
        ("trailing dot-dot", b"/http/rec/v1/.."),
        ("%2e%2e", b"/http/rec/v1/%2e%2e/admin"),
        ("%2E%2E", b"/http/rec/v1/%2E%2E/admin"),
        (".%2e", b"/http/rec/v1/.%2e/admin"),
        ("%2e.", b"/http/rec/v1/%2e./admin"),
        ("%2e", b"/http/rec/v1/%2e/admin"),
        ("..;", b"/http/rec/v1/..;/admin"),
        ("..;param", b"/http/rec/v1/..;jsessionid=1/admin"),
        ("%2e%2e;", b"/http/rec/v1/%2e%2e;x/admin"),
        ("dot-dot with an encoded trailing space", b"/http/rec/v1/..%20/admin"),
        ("empty segment //", b"/http/rec/v1//admin"),
        ("leading //", b"/http/rec//v1/x"),
        ("encoded slash %2f", b"/http/rec/v1/a%2fb"),
        ("encoded slash %2F", b"/http/rec/v1/a%2Fb"),
        ("encoded backslash %5c", b"/http/rec/v1/a%5cb"),
        ("encoded backslash %5C..", b"/http/rec/v1/%5C..%5Cadmin"),
        ("raw backslash", b"/http/rec/v1/a\\..\\admin"),
        ("double encoding %252e", b"/http/rec/v1/%252e%252e/admin"),
        ("double encoding %252f", b"/http/rec/v1/a%252fb"),
        ("encoded NUL", b"/http/rec/v1/a%00b"),
        ("encoded CR LF", b"/http/rec/v1/a%0d%0aX-Injected:%201"),
        ("encoded DEL", b"/http/rec/v1/a%7f"),
        ("encoded tab", b"/http/rec/v1/a%09b"),
        ("malformed escape %zz", b"/http/rec/v1/a%zz"),
        ("truncated escape %4", b"/http/rec/v1/a%4"),
        ("lone % at the end", b"/http/rec/v1/a%"),
        ("not UTF-8 after decoding", b"/http/rec/v1/a%ff%fe"),
        ("overlong UTF-8 dot", b"/http/rec/v1/%c0%ae%c0%ae/admin"),
    ];
    for (name, target) in path_cases {
        c.push(refused(k, name, get(target.to_vec()), 403, "path_not_allowed"));
    }
    c.push(refused(k, "path not on the allow-list", get("/http/weather/v1/secrets"), 403, "path_not_allowed"));
    c.push(refused(k, "allow-list is case-sensitive", get("/http/weather/V1/forecast/oslo"), 403, "path_not_allowed"));
    c.push(refused(k, "prefix without a segment", get("/http/weather/v1/forecast"), 403, "path_not_allowed"));
    c.push(refused(k, "prefix with an empty segment", get("/http/weather/v1/forecast/"), 403, "path_not_allowed"));
    c.push(refused(k, "prefix lookalike", get("/http/weather/v1/forecastx/oslo"), 403, "path_not_allowed"));
    c.push(refused(k, "escape out of the allowed prefix", get("/http/weather/v1/forecast/%2e%2e/%2e%2e/admin"), 403, "path_not_allowed"));
    c.push(refused(k, "POST where only GET is allowed", post("/http/weather/v1/forecast/oslo", "text/plain", "x"), 403, "method_not_allowed"));
    c.push(refused(k, "DELETE not on the allow-list", Req::new("DELETE", "/http/rec/v1/x"), 403, "method_not_allowed"));
    c.push(refused(k, "PUT not on the allow-list", Req::new("PUT", "/http/rec/v1/x").body("x"), 403, "method_not_allowed"));
    c.push(refused(k, "PATCH not on the allow-list", Req::new("PATCH", "/http/rec/v1/x").body("x"), 403, "method_not_allowed"));
    c.push(refused(k, "an invented method", Req::new("PURGE", "/http/rec/v1/x"), 403, "method_not_allowed"));
    c.push(refused(k, "TRACE not on the allow-list", Req::new("TRACE", "/http/rec/v1/x"), 403, "method_not_allowed"));
    c.push(refused(k, "IIS %u escape", get("/http/rec/v1/a%u002e%u002e/admin"), 403, "path_not_allowed"));
    c.push(refused(k, "lower-case get is another method", Req::new("get", "/http/rec/v1/x"), 403, "method_not_allowed"));
    // Not refusals: the call passes, but the upstream never sees the override.
    let dropped: &[(&str, &'static [&'static str], &[u8])] = &[
        ("x-http-method-override", &["x-http-method-override"], b"DELETE"),
        ("x-http-method", &["x-http-method"], b"DELETE"),
        ("x-method-override", &["x-method-override"], b"DELETE"),
        ("x-original-url", &["x-original-url"], b"/admin"),
        ("x-rewrite-url", &["x-rewrite-url"], b"/admin"),
        ("forwarded", &["forwarded"], b"for=10.0.0.1;host=internal"),
        ("x-forwarded-for", &["x-forwarded-for"], b"10.0.0.1"),
        ("x-forwarded-host", &["x-forwarded-host"], b"internal"),
        ("x-real-ip", &["x-real-ip"], b"10.0.0.1"),
    ];
    for (name, headers, value) in dropped {
        c.push(Case {
            expect: Expect::Dropped(headers),
            reach: true,
            ..refused(k, &format!("{name} is dropped, not obeyed"), get("/http/rec/v1/forecast/x").h(name, value.to_vec()), 200, "")
        });
    }

    // --- PII on the LLM channel request (p100-llm: PII stop) ---
    let k = "llm-pii";
    let pii = |c: &mut Vec<Case>, name: &str, r: Req| c.push(refused(k, name, r, 403, "pii_detected"));
    pii(&mut c, "email in content", say(&format!("write to {EMAIL}")));
    pii(&mut c, "email as a JSON \\u0040 escape", chat_raw(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"jane.doe\u0040example.com"}]}"#));
    pii(&mut c, "email in a system message", chat(json!({ "messages": [{ "role": "system", "content": EMAIL }, { "role": "user", "content": "hi" }] })));
    pii(&mut c, "email in an earlier turn", chat(json!({ "messages": [{ "role": "user", "content": EMAIL }, { "role": "assistant", "content": "ok" }, { "role": "user", "content": "hi" }] })));
    pii(&mut c, "email in a text part", chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "text", "text": EMAIL }] }] })));
    pii(&mut c, "email in a tool message's content parts", chat(json!({ "messages": [{ "role": "user", "content": "hi" }, { "role": "tool", "tool_call_id": "c1", "content": [{ "type": "text", "text": EMAIL }] }] })));
    pii(&mut c, "SSN in content", say("ssn 078-05-1120"));
    pii(&mut c, "card in content", say("card 4111 1111 1111 1111"));
    pii(&mut c, "card with dashes", say("card 4111-1111-1111-1111"));
    pii(&mut c, "IBAN in content", say("iban GB82 WEST 1234 5698 7654 32"));
    pii(&mut c, "international phone in content", say("call +44 20 7946 0958"));
    pii(&mut c, "email in a stream request", chat(json!({ "stream": true, "messages": [{ "role": "user", "content": EMAIL }] })));
    pii(&mut c, "email in the last of duplicate content keys", chat_raw(format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi","content":"{EMAIL}"}}]}}"#)));
    pii(&mut c, "email at the end of a 60 KB prompt", say(&format!("{} {EMAIL}", "word ".repeat(12_000))));
    // Every string the upstream reads is scanned, not a list of known fields.
    pii(&mut c, "email split across content parts", chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "text", "text": "jane.doe@exa" }, { "type": "text", "text": "mple.com" }] }] })));
    pii(&mut c, "email as a bare-string content part", chat(json!({ "messages": [{ "role": "user", "content": [EMAIL] }] })));
    pii(&mut c, "email in another key of a text part", chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hi", "annotations": [EMAIL] }] }] })));
    pii(&mut c, "email in a message name", chat(json!({ "messages": [{ "role": "user", "name": EMAIL, "content": "hi" }] })));
    pii(&mut c, "email in earlier tool-call arguments", chat(json!({ "messages": [
        { "role": "user", "content": "hi" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function", "function": { "name": "send", "arguments": format!("{{\"to\":\"{EMAIL}\"}}") } }] },
        { "role": "tool", "tool_call_id": "c1", "content": "sent" }
    ] })));
    pii(&mut c, "email in a tool description", chat(json!({ "tools": [{ "type": "function", "function": { "name": "send", "description": format!("always copy {EMAIL}"), "parameters": { "type": "object", "properties": {} } } }] })));
    pii(&mut c, "email in a tool parameter schema", chat(json!({ "tools": [{ "type": "function", "function": { "name": "send", "parameters": { "type": "object", "properties": { "to": { "type": "string", "default": EMAIL } } } } }] })));
    pii(&mut c, "email in user", chat(json!({ "user": EMAIL })));
    pii(&mut c, "email in metadata", chat(json!({ "metadata": { "customer": EMAIL } })));
    pii(&mut c, "email in an image URL", chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": format!("https://img.example/?to={EMAIL}") } }] }] })));
    pii(&mut c, "email in an unknown part type", chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "input_future", "input_future": { "note": EMAIL } }] }] })));
    pii(&mut c, "email in an unknown top-level field", chat(json!({ "prediction": { "type": "content", "content": EMAIL } })));

    // --- PII in every encoding on the HTTP channel (rec: PII stop, fail_closed) ---
    let k = "http-pii";
    let mut latin = b"Jos\xe9 ".to_vec();
    latin.extend_from_slice(EMAIL.as_bytes());
    let mut invalid = format!("{{\"to\":\"{EMAIL}\"}}").into_bytes();
    invalid.push(0xff);
    let body_cases: Vec<(&str, &str, Vec<u8>, &'static str)> = vec![
        ("plain body", "text/plain", EMAIL.into(), "pii_detected"),
        ("JSON body", "application/json", format!("{{\"to\":\"{EMAIL}\"}}").into(), "pii_detected"),
        ("JSON \\u0040 escape", "application/json", br#"{"to":"jane.doe\u0040example.com"}"#.to_vec(), "pii_detected"),
        ("JSON escapes in a key", "application/json", br#"{"jane\u002edoe\u0040example\u002ecom":1}"#.to_vec(), "pii_detected"),
        ("latin-1 body", "text/plain; charset=iso-8859-1", latin.clone(), "pii_detected"),
        ("windows-1252 body", "text/plain; charset=windows-1252", latin, "pii_detected"),
        ("UTF-16LE body", "text/plain; charset=utf-16le", utf16le(EMAIL), "pii_detected"),
        ("UTF-16BE JSON body", "application/json; charset=UTF-16BE", utf16be(&format!("{{\"a\":\"{EMAIL}\"}}")), "pii_detected"),
        ("UTF-16 with a BOM, unlabelled", "text/plain", [b"\xff\xfe".as_slice(), &utf16le(EMAIL)].concat(), "pii_detected"),
        ("unlabelled UTF-16 without a BOM", "text/plain", utf16le(EMAIL), "fact_unavailable"),
        ("form-urlencoded body", "application/x-www-form-urlencoded", b"to=jane.doe%40example.com&x=1".to_vec(), "pii_detected"),
        ("HTML character reference", "text/html", b"<p>jane.doe&#64;example.com</p>".to_vec(), "pii_detected"),
        ("SSN in a JSON body", "application/json", br#"{"ssn":"078-05-1120"}"#.to_vec(), "pii_detected"),
        ("IBAN in a body", "text/plain", b"pay GB82 WEST 1234 5698 7654 32".to_vec(), "pii_detected"),
        ("one invalid byte", "application/json", invalid, "fact_unavailable"),
        ("binary body", "application/octet-stream", b"\x00\x01\x02\xff".to_vec(), "fact_unavailable"),
        ("unknown charset", "text/plain; charset=shift_jis", b"hello".to_vec(), "fact_unavailable"),
    ];
    for (name, ct, body, code) in body_cases {
        c.push(refused(k, name, post("/http/rec/v1/send", ct, body), 403, code));
    }
    c.push(refused(k, "truncated JSON with a \\u0040 escape", post("/http/rec/v1/send", "application/json", br#"{"to":"jane.doe\u0040example.com"#.to_vec()), 403, "pii_detected"));
    c.push(refused(k, "a \\u0040 escape in a text/plain body", post("/http/rec/v1/send", "text/plain", br#"to: jane.doe\u0040example.com"#.to_vec()), 403, "pii_detected"));
    c.push(refused(k, "an escaped email nested 110 deep", post("/http/rec/v1/send", "application/json", format!("{}\"jane.doe\\u0040example.com\"{}", "[".repeat(110), "]".repeat(110))), 403, "pii_detected"));
    c.push(refused(k, "a %-encoded email in a JSON body", post("/http/rec/v1/send", "application/json", br#"{"to":"jane.doe%40example.com"}"#.to_vec()), 403, "pii_detected"));
    c.push(refused(k, "email in a path parameter", get("/http/rec/v1/x;user=jane.doe%40example.com"), 403, "pii_detected"));
    c.push(refused(k, "email as a query parameter name", get("/http/rec/v1/find?jane.doe%40example.com=1"), 403, "pii_detected"));
    c.push(refused(k, "gzip request body", post("/http/rec/v1/send", "application/json", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV*I-.Q\xb2R\xcaH\xcd\xc9\xc9W\xaa\x05\x00".to_vec()).h("content-encoding", "gzip"), 403, "fact_unavailable"));
    c.push(refused(k, "br request body", post("/http/rec/v1/send", "text/plain", b"\x0b\x02\x80hi\x03".to_vec()).h("content-encoding", "br"), 403, "fact_unavailable"));
    c.push(refused(k, "email %-encoded in the path", get("/http/rec/v1/users/jane.doe%40example.com"), 403, "pii_detected"));
    c.push(refused(k, "email plain in the path", get("/http/rec/v1/users/jane.doe@example.com"), 403, "pii_detected"));
    c.push(refused(k, "email %-encoded in the query", get("/http/rec/v1/find?email=jane.doe%40example.com"), 403, "pii_detected"));
    c.push(refused(k, "email double-encoded in the query", get("/http/rec/v1/find?email=jane.doe%2540example.com"), 403, "pii_detected"));
    c.push(refused(k, "card with + in the query", get("/http/rec/v1/find?card=4111+1111+1111+1111"), 403, "pii_detected"));
    c.push(refused(k, "SSN in the query", get("/http/rec/v1/find?ssn=078-05-1120"), 403, "pii_detected"));
    c.push(refused(k, "email in the body of a GET", get("/http/rec/v1/find").body(EMAIL), 403, "pii_detected"));
    c.push(refused(k, "email in a forwarded header", get("/http/rec/v1/find").h("x-contact", EMAIL), 403, "pii_detected"));
    c.push(refused(k, "email in a Referer", get("/http/rec/v1/find").h("referer", "http://x/?e=jane.doe%40example.com"), 403, "pii_detected"));
    c.push(refused(k, "email in the User-Agent", get("/http/rec/v1/find").h("user-agent", format!("bot ({EMAIL})")), 403, "pii_detected"));
    c.push(refused(k, "SSN in a forwarded header's name", get("/http/rec/v1/find").h("x-ssn-078-05-1120", "1"), 403, "pii_detected"));
    c.push(refused(k, "card in a forwarded header's name", get("/http/rec/v1/find").h("x-card-4111111111111111", "1"), 403, "pii_detected"));
    c.push(refused(k, "email in a reply header", get("/http/rec/v1/find"), 403, "pii_detected").answered_with("x-contact", EMAIL));
    c.push(refused(k, "SSN in a reply header's name", get("/http/rec/v1/find"), 403, "pii_detected").answered_with("x-ssn-078-05-1120", "1"));
    c.push(refused(k, "email in a latin-1 header", get("/http/rec/v1/find").h("x-note", [b"Jos\xe9 ".as_slice(), EMAIL.as_bytes()].concat()), 403, "pii_detected"));

    // --- PII obfuscation (normalised before matching) ---
    let k = "pii-obfuscation";
    let norm: &[(&str, &str)] = &[
        ("full-width @", "jane.doe\u{ff20}example.com"),
        ("full-width letters", "\u{ff4a}\u{ff41}\u{ff4e}\u{ff45}@example.com"),
        ("zero-width space in an address", "jane.doe@exa\u{200b}mple.com"),
        ("zero-width joiner in the domain", "jane.doe@exa\u{200d}mple.com"),
        ("soft hyphen in an address", "jane.doe@exam\u{ad}ple.com"),
        ("card with dots", "4111.1111.1111.1111"),
        ("card with slashes", "4111/1111/1111/1111"),
        ("SSN with spaces", "078 05 1120"),
        ("lower-case IBAN", "gb82west12345698765432"),
        ("hyphenated IBAN", "GB82-WEST-1234-5698-7654-32"),
        ("full-width digits in a card", "\u{ff14}\u{ff11}\u{ff11}\u{ff11} 1111 1111 1111"),
    ];
    for (name, text) in norm {
        c.push(refused(k, &format!("llm: {name}"), say(&format!("contact {text}")), 403, "pii_detected"));
    }
    for (name, text) in &norm[..5] {
        c.push(refused(k, &format!("http: {name}"), post("/http/rec/v1/send", "text/plain; charset=utf-8", format!("contact {text}")), 403, "pii_detected"));
    }

    // --- identity ---
    let k = "identity";
    let id_bad: &[(&str, &str, Vec<u8>)] = &[
        ("run id with a space", "x-warden-run-id", b"run 1".to_vec()),
        ("run id with a slash", "x-warden-run-id", b"run/1".to_vec()),
        ("run id with a quote", "x-warden-run-id", b"run\"1".to_vec()),
        ("run id with a semicolon", "x-warden-run-id", b"run;1".to_vec()),
        ("run id not ASCII", "x-warden-run-id", b"run-\xe9".to_vec()),
        ("run id too long (129)", "x-warden-run-id", vec![b'r'; 129]),
        ("run id empty", "x-warden-run-id", Vec::new()),
        ("step id with a space", "x-warden-step-id", b"step 1".to_vec()),
        ("session id with a slash", "x-warden-session-id", b"s/1".to_vec()),
        ("actor with a space", "x-warden-actor", b"Jane Doe".to_vec()),
        ("actor too long", "x-warden-actor", vec![b'a'; 200]),
    ];
    for (name, header, value) in id_bad {
        let r = if *header == "x-warden-run-id" { say("hi").run(value.clone()) } else { say("hi").h(header, value.clone()) };
        c.push(refused(k, name, r, 400, "bad_request"));
    }
    c.push(refused(k, "x-warden-api-key names a key", say("hi").h("x-warden-api-key", "ci-key"), 400, "bad_request"));
    c.push(refused(k, "x-warden-api-key on the HTTP channel", get("/http/weather/v1/forecast/oslo").h("x-warden-api-key", "ci-key"), 400, "bad_request"));
    // On the sidecar that declares `ci-key` in identity.api_keys.
    let unauth = |c: &mut Vec<Case>, name: &str, r: Req| c.push(refused(k, name, r, 401, "unauthorized").keys());
    unauth(&mut c, "unknown bearer", say("hi").h("authorization", "Bearer sk-guessed"));
    unauth(&mut c, "the key's id as the bearer", say("hi").h("authorization", "Bearer ci-key"));
    unauth(&mut c, "the secret with a suffix", say("hi").h("authorization", format!("Bearer {CI_SECRET}x")));
    unauth(&mut c, "Basic instead of Bearer", say("hi").h("authorization", format!("Basic {CI_SECRET}")));
    unauth(&mut c, "no scheme", say("hi").h("authorization", CI_SECRET));
    unauth(&mut c, "two Authorization headers", say("hi").h("authorization", format!("Bearer {CI_SECRET}")).h("authorization", format!("Bearer {CI_SECRET}")));
    unauth(&mut c, "unknown bearer on the HTTP channel", get("/http/weather/v1/forecast/oslo").h("authorization", "Bearer sk-guessed"));
    unauth(&mut c, "unknown bearer on /v1/models", get("/v1/models").h("authorization", "Bearer sk-guessed"));
    unauth(&mut c, "proxy mode: unknown Proxy-Authorization", get(format!("http://{}/v1/forecast/oslo", h.weather)).h("host", h.weather.clone()).h("proxy-authorization", "Bearer sk-guessed"));
    unauth(&mut c, "CONNECT: unknown Proxy-Authorization", Req::new("CONNECT", h.weather.clone()).h("host", h.weather.clone()).h("proxy-authorization", "Bearer sk-guessed"));
    c.push(refused(k, "x-warden-api-key beside a valid bearer", say("hi").h("x-warden-api-key", "ci-key").h("authorization", format!("Bearer {CI_SECRET}")), 400, "bad_request").keys());

    // --- egress (forward-proxy mode) ---
    let k = "egress";
    c.push(refused(k, "CONNECT to an http:// connector's host", Req::new("CONNECT", h.weather.clone()).h("host", h.weather.clone()), 403, "method_not_allowed"));
    c.push(refused(k, "CONNECT to the recording connector's host", Req::new("CONNECT", h.rec.clone()).h("host", h.rec.clone()), 403, "method_not_allowed"));
    c.push(refused(k, "CONNECT to an unknown host", Req::new("CONNECT", "127.0.0.1:9").h("host", "127.0.0.1:9"), 404, "unknown_connector"));
    c.push(refused(k, "CONNECT to a name no connector uses", Req::new("CONNECT", "internal.example:443").h("host", "internal.example:443"), 404, "unknown_connector"));
    c.push(refused(k, "CONNECT to the LLM upstream", Req::new("CONNECT", h.llm.clone()).h("host", h.llm.clone()), 404, "unknown_connector"));
    c.push(refused(k, "absolute-form to an unknown host", get("http://127.0.0.1:9/anything").h("host", "127.0.0.1:9"), 404, "unknown_connector"));
    c.push(refused(k, "absolute-form with userinfo before the host", get(format!("http://evil@{}/v1/forecast/oslo", h.weather)).h("host", h.weather.clone()), 404, "unknown_connector"));
    c.push(refused(k, "absolute-form to the LLM upstream", post(format!("http://{}/v1/chat/completions", h.llm), "application/json", r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#).h("host", h.llm.clone()), 404, "unknown_connector"));
    c.push(refused(k, "absolute-form outside the base path", get(format!("http://{}/other/x", h.based)).h("host", h.based.clone()), 403, "path_not_allowed"));
    c.push(refused(k, "absolute-form base-path lookalike", get(format!("http://{}/apix/x", h.based)).h("host", h.based.clone()), 403, "path_not_allowed"));
    c.push(refused(k, "absolute-form dot segments out of the base path", get(format!("http://{}/api/../admin", h.based)).h("host", h.based.clone()), 403, "path_not_allowed"));
    c.push(refused(k, "absolute-form path not on the allow-list", get(format!("http://{}/v1/secrets", h.weather)).h("host", h.weather.clone()), 403, "path_not_allowed"));
    c.push(refused(k, "absolute-form method not on the allow-list", post(format!("http://{}/v1/forecast/oslo", h.weather), "text/plain", "x").h("host", h.weather.clone()), 403, "method_not_allowed"));
    c.push(refused(k, "absolute-form encoded dot segments", get(format!("http://{}/v1/forecast/%2e%2e/admin", h.weather)).h("host", h.weather.clone()), 403, "path_not_allowed"));
    c.push(refused(k, "absolute-form PII in the query", get(format!("http://{}/api/find?e=jane.doe%40example.com", h.based)).h("host", h.based.clone()), 403, "pii_detected"));

    // --- budgets and run state ---
    let k = "budget-run";
    let tiny = || chat(json!({ "max_tokens": 2, "messages": [{ "role": "user", "content": "hi [[reply:2]]" }] }));
    c.push(refused(k, "a call on a stopped run", say("hi"), 403, "run_stopped").setup(say(EMAIL)));
    c.push(refused(k, "an HTTP call on a stopped run", get("/http/weather/v1/forecast/oslo"), 403, "run_stopped").setup(say(EMAIL)));
    c.push(refused(k, "a call on a killed run", say("hi"), 403, "run_killed").setup(get("/http/trap/v1/x")));
    c.push(refused(k, "an HTTP call on a killed run", get("/http/weather/v1/forecast/oslo"), 403, "run_killed").setup(get("/http/trap/v1/x")));
    c.push(refused(k, "absolute-form on a stopped run", get(format!("http://{}/v1/forecast/oslo", h.weather)).h("host", h.weather.clone()), 403, "run_stopped").setup(say(EMAIL)));
    c.push(refused(k, "a deny policy that kills", get("/http/trap/v1/x"), 403, "policy_denied"));
    c.push(refused(k, "a connector no policy allows", get("/http/bare/v1/x"), 403, "no_allow_policy"));
    c.push(refused(k, "a PAUSE asks for approval", get("/http/held/v1/x"), 403, "approval_required"));
    c.push(refused(k, "n that cannot fit the headroom", chat(json!({ "n": 101 })), 429, "budget_exceeded"));
    c.push(refused(k, "a run over its request limit", tiny(), 429, "budget_exceeded").setup(tiny()).setup(tiny()).setup(tiny()));
    c.push(refused(k, "a sliding request limit", get("/http/rated/v1/x"), 429, "rate_limited").setup(get("/http/rated/v1/x")));

    // --- modes (set through the admin port, set back at once) ---
    let k = "modes";
    let set = |m: &str| json!({ "mode": m, "reason": "bad-inputs" });
    let tenant = |m: &str| json!({ "mode": m, "tenant": "acme", "reason": "bad-inputs" });
    c.push(refused(k, "halted: a chat call", say("hi"), 503, "governance_halted").mode(set("halted"), set("enforcing")));
    c.push(refused(k, "halted: an HTTP call", get("/http/weather/v1/forecast/oslo"), 503, "governance_halted").mode(set("halted"), set("enforcing")));
    c.push(refused(k, "halted: absolute-form", get(format!("http://{}/v1/forecast/oslo", h.weather)).h("host", h.weather.clone()), 503, "governance_halted").mode(set("halted"), set("enforcing")));
    c.push(refused(k, "halted: a CONNECT the parser refuses keeps its code", Req::new("CONNECT", h.weather.clone()).h("host", h.weather.clone()), 403, "method_not_allowed").mode(set("halted"), set("enforcing")));
    c.push(refused(k, "tenant halted: a chat call", say("hi"), 503, "governance_halted").mode(tenant("halted"), tenant("inherit")));
    c.push(refused(k, "degraded: a new run's chat call", say("hi"), 503, "governance_degraded").mode(set("degraded"), set("enforcing")));
    c.push(refused(k, "degraded: a new run's HTTP call", get("/http/weather/v1/forecast/oslo"), 503, "governance_degraded").mode(set("degraded"), set("enforcing")));
    c
}

// === the bundle ===

fn http_connector(id: &str, tenant: &str, base: &str, allow: &str) -> String {
    format!(
        "---\napiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: {id}, tenant: {tenant} }}\nspec:\n  type: http\n  plane: public-web\n  http:\n    base_url: \"{base}\"\n    allow: [ {allow} ]\n    max_request_bytes: 256\n"
    )
}

fn policy(id: &str, connector: &str, body: &str) -> String {
    format!(
        "---\napiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: {id}, tenant: acme }}\nspec:\n  status: active\n  scope: {{ all_runs: true }}\n  match: {{ channel: http, connectors: [{connector}] }}\n{body}"
    )
}

fn bundle(b: String, rec: &str, based: &str) -> String {
    const OUT: &str =
        "    - { metric: output_tokens, window: run, max: 2000, near: [0.8], on_breach: stop }";
    assert!(b.contains(OUT));
    let b = b.replace(
        OUT,
        "    - { metric: output_tokens, window: run, max: 100, on_breach: stop }\n    - { metric: requests, window: run, max: 3, on_breach: stop }",
    );
    let any = "{ methods: [GET, POST], paths: [\"/*\"] }";
    let mut out = b;
    out += &http_connector("rec", "acme", rec, any);
    out += &policy(
        "p310-rec",
        "rec",
        "  effect: allow\n  detectors: { pii: { on_match: stop } }\n  failure_mode: fail_closed\n",
    );
    out += &http_connector("rated", "acme", rec, any);
    out += &policy(
        "p320-rated",
        "rated",
        "  effect: allow\n  limits:\n    - { metric: requests, window: 1m, max: 1, on_breach: stop }\n",
    );
    out += &http_connector("trap", "acme", rec, any);
    out += &policy("p330-trap", "trap", "  effect: deny\n  action: kill\n");
    out += &http_connector("held", "acme", rec, any);
    out += &policy("p340-held", "held", "  effect: deny\n  action: pause\n");
    // A PAUSE asks for approval only for a call something allows.
    out += &policy("p341-held-allow", "held", "  effect: allow\n");
    out += &http_connector("bare", "acme", rec, any);
    out += &http_connector("based", "acme", &format!("{based}/api"), any);
    out += &policy(
        "p350-based",
        "based",
        "  effect: allow\n  detectors: { pii: { on_match: stop } }\n  failure_mode: fail_closed\n",
    );
    out += &http_connector("foreign", "globex", rec, any);
    out += &format!(
        "---\napiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: foreign-llm, tenant: globex }}\nspec:\n  type: llm\n  plane: public-llm\n  llm:\n    base_url: \"{rec}/v1\"\n    api_key: env:WARDEN_IT_OPENAI_KEY\n    models:\n      gpt-4o-mini: {{ input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60 }}\n"
    );
    out
}

fn limits(c: String) -> String {
    format!("{c}limits: {{ max_request_bytes: {MAX_BODY} }}\n")
}

fn declaring_ci_key(c: String) -> String {
    let c = c.replace(
        "identity: { tenant: acme, project: support, agent: support-bot }",
        "identity:\n  tenant: acme\n  project: support\n  agent: support-bot\n  api_keys:\n    - { id: ci-key, key: \"env:WARDEN_IT_CI_KEY\" }",
    );
    assert!(c.contains("api_keys"));
    limits(c)
}

// === a raw HTTP/1.1 client ===

struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn exchange(addr: std::net::SocketAddr, req: &Req, run: &str) -> Result<Raw, String> {
    let mut head = Vec::new();
    head.extend_from_slice(req.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(&req.target);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers.iter().any(|(k, _)| k == "host") {
        head.extend_from_slice(format!("host: {addr}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n");
    match &req.run {
        Run::Fresh => head.extend_from_slice(format!("x-warden-run-id: {run}\r\n").as_bytes()),
        Run::Header(v) => {
            head.extend_from_slice(b"x-warden-run-id: ");
            head.extend_from_slice(v);
            head.extend_from_slice(b"\r\n");
        }
    }
    for (k, v) in &req.headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    let mut body = Vec::new();
    match &req.body {
        Body::Empty if req.method == "CONNECT" || req.method == "GET" => {}
        Body::Empty => head.extend_from_slice(b"content-length: 0\r\n"),
        Body::Bytes(b) => {
            head.extend_from_slice(format!("content-length: {}\r\n", b.len()).as_bytes());
            body = b.clone();
        }
        Body::Chunked(b) => {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            for chunk in b.chunks(16 * 1024) {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        }
        Body::Raw(line, b) => {
            head.extend_from_slice(format!("{line}\r\n").as_bytes());
            body = b.clone();
        }
        Body::Declared(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
    }
    head.extend_from_slice(b"\r\n");
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(&head)
        .await
        .map_err(|e| format!("write: {e}"))?;
    // The sidecar may answer (and close) before the whole body is in: that is fine.
    let _ = s.write_all(&body).await;
    let read = async {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = text.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line: {text}"))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let raw = Raw {
                    status,
                    headers,
                    body: Vec::new(),
                };
                let start = end + 4;
                let len = raw
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok());
                let chunked = raw
                    .header("transfer-encoding")
                    .is_some_and(|v| v.contains("chunked"));
                loop {
                    let have = &buf[start..];
                    let done = match (len, chunked) {
                        (Some(n), _) => have.len() >= n,
                        (None, true) => find(have, b"0\r\n\r\n").is_some(),
                        (None, false) => false,
                    };
                    if done {
                        break;
                    }
                    let n = s.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let have = buf[start..].to_vec();
                let body = match (len, chunked) {
                    (Some(n), _) => have[..n.min(have.len())].to_vec(),
                    (None, true) => dechunk(&have),
                    (None, false) => have,
                };
                return Ok(Raw { body, ..raw });
            }
            let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        let data = &b[i + 2..];
        out.extend_from_slice(&data[..n.min(data.len())]);
        b = &data[(n + 2).min(data.len())..];
    }
    out
}

// === the runner ===

struct World {
    env: Env,
    up: Upstream,
    up2: Upstream,
}

impl World {
    fn upstream_count(&self) -> u64 {
        self.env.llm.request_count()
            + self.env.weather.request_count()
            + self.up.connections() as u64
            + self.up2.connections() as u64
    }
}

fn calls(env: &Env) -> Vec<warden::evidence::Record> {
    // The chain is verified once, at the end (`Env::evidence`); per case only read.
    warden::evidence::read_all(&env.dir.join("evidence"))
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .filter(|r| r.kind == Kind::Call)
        .collect()
}

/// Send one case and check everything the catalogue promises about it.
async fn run_case(w: &World, case: &Case, run: &str) -> Result<(), String> {
    let env = &w.env;
    for s in &case.setup {
        exchange(env.sidecar.agent_addr, s, run).await?;
    }
    if let Some((set, _)) = &case.mode {
        let r = env
            .admin_post("/ops/mode", set.clone(), Some(&env.admin_token))
            .await;
        if r.status != 200 {
            return Err(format!("mode change refused: {}", r.text()));
        }
    }
    let before_records = calls(env).len();
    let before_up = w.upstream_count();
    let before_seen = w.up.count();
    if let Some(headers) = &case.answer {
        let h: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        w.up.answer(200, &h, b"{\"ok\":true}".to_vec());
    }
    let answer = exchange(env.sidecar.agent_addr, &case.req, run).await;
    if case.answer.is_some() {
        w.up.answer(
            200,
            &[("content-type", b"application/json")],
            b"{\"ok\":true}".to_vec(),
        );
    }
    if let Some((_, back)) = &case.mode {
        let r = env
            .admin_post("/ops/mode", back.clone(), Some(&env.admin_token))
            .await;
        assert_eq!(r.status, 200, "mode could not be set back: {}", r.text());
    }
    let r = answer?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let (status, code) = match &case.expect {
        Expect::Refused(s, c) => (*s, *c),
        Expect::Dropped(_) => (200, ""),
        Expect::Unparsed => (400, ""),
    };
    if r.status != status {
        return Err(format!("status {} (want {status}): {text}", r.status));
    }
    if !case.reach && w.upstream_count() != before_up {
        return Err("an upstream was reached".into());
    }
    if matches!(case.expect, Expect::Unparsed) {
        if r.header("x-warden-decision-id").is_some() || calls(env).len() != before_records {
            return Err("a call was made of it after all: move it to the refusals".into());
        }
        return Ok(());
    }
    let header = |h: &str| r.header(h).map(str::to_string);
    // A refusal: the same checks as every other test's (`Env::assert_refused`).
    let decision = match &case.expect {
        Expect::Refused(..) => refusal_problem(r.status, &header, &r.body, status, code)?,
        _ => header("x-warden-decision-id").ok_or("no x-warden-decision-id header")?,
    };
    let records = calls(env);
    let new = &records[before_records..];
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.decision_id.as_deref() == Some(decision.as_str()))
        .collect();
    if new.len() != 1 || mine.len() != 1 {
        return Err(format!(
            "{} new records, {} with decision id {decision}",
            new.len(),
            mine.len()
        ));
    }
    let rec = mine[0];
    match &case.expect {
        Expect::Refused(..) => record_problem(rec, code, &header)?,
        Expect::Unparsed => unreachable!(),
        Expect::Dropped(headers) => {
            if rec.outcome != Some(Outcome::Allowed) {
                return Err(format!("record outcome {:?}", rec.outcome));
            }
            if w.up.count() != before_seen + 1 {
                return Err("the upstream did not receive the call".into());
            }
            let seen = w.up.last();
            if seen.method != case.req.method {
                return Err(format!("the upstream saw method {}", seen.method));
            }
            for h in *headers {
                if let Some(v) = seen.header(h) {
                    return Err(format!("the upstream saw {h}: {v}"));
                }
            }
        }
    }
    Ok(())
}

/// The main sidecar: the contract bundle plus the connectors of `bundle`, on two recording
/// upstreams, with `limits.max_request_bytes` at 64 KiB.
async fn main_world() -> World {
    let up = Upstream::start().await;
    let up2 = Upstream::start().await;
    let (rec, based) = (up.url(), up2.url());
    let env = start_with("bad-inputs", move |b| bundle(b, &rec, &based), limits).await;
    World { env, up, up2 }
}

/// The same, with `ci-key` declared in `identity.api_keys`.
async fn keys_world() -> World {
    std::env::set_var("WARDEN_IT_CI_KEY", CI_SECRET);
    let up = Upstream::start().await;
    let up2 = Upstream::start().await;
    let (rec, based) = (up.url(), up2.url());
    let env = start_with(
        "bad-inputs-keys",
        move |b| bundle(b, &rec, &based),
        declaring_ci_key,
    )
    .await;
    World { env, up, up2 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_input_catalogue_is_refused_with_its_code_and_a_record() {
    let started = std::time::Instant::now();
    let main = main_world().await;
    let keys = keys_world().await;
    let hosts = |w: &World| Hosts {
        weather: w.env.weather.addr.to_string(),
        llm: w.env.llm.addr.to_string(),
        rec: w.up.addr.to_string(),
        based: w.up2.addr.to_string(),
    };
    let (main_hosts, keys_hosts) = (hosts(&main), hosts(&keys));
    let cases = catalogue(&main_hosts);
    let keys_cases = catalogue(&keys_hosts);
    let mut failures = Vec::new();
    let mut by_class: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, case) in cases.iter().enumerate() {
        // Keys-side cases name the hosts of their own sidecar's world.
        let (w, case) = match case.side {
            Side::Main => (&main, case),
            Side::Keys => (&keys, &keys_cases[i]),
        };
        *by_class.entry(case.class).or_default() += 1;
        let run = format!("bi-{i}");
        let result = run_case(w, case, &run).await;
        if let Err(e) = result {
            failures.push(format!("{}: {}: {e}", case.class, case.name));
        }
    }
    let refusals = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Refused(..)))
        .count();
    println!(
        "bad inputs: {} cases ({refusals} refusals with a record; {} s; by class: {by_class:?})",
        cases.len(),
        started.elapsed().as_secs()
    );
    // Every record of both sidecars still forms an intact chain.
    main.env.evidence();
    keys.env.evidence();
    assert!(
        failures.is_empty(),
        "{} active cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(refusals >= 100, "the catalogue holds {refusals} refusals");
}
