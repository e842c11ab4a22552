//! The HTTP channel: `/http/{connector}/{path…}` to the connector's base URL (`docs/sidecar.md`).
//!
//! The path is normalised before it is matched, and anything a server could read differently
//! from us is refused with `path_not_allowed`: `.` and `..` segments (plain or %-encoded, any
//! case), empty segments (`//`), encoded slashes and backslashes, double encoding, NUL and other
//! control characters, and dot segments carrying path parameters (`..;x`). Matching is
//! case-sensitive, so `/V1/…` does not pass for `/v1/…`.
//!
//! What is judged is what is sent: the upstream gets exactly the normalised path that was
//! matched, re-encoded segment by segment (so `%3F`, `%23` and `%20` stay data), and the query
//! re-encoded where it holds a byte outside RFC 3986's query characters. The agent's
//! credentials, hop-by-hop headers, method overrides (`X-HTTP-Method-Override`, …), URL
//! rewrites (`X-Original-URL`, `X-Rewrite-URL`), its proxy headers (`Forwarded`,
//! `X-Forwarded-*`, `X-Real-IP`, `Via`, …), `Range` and `Accept-Encoding` are dropped; Warden
//! asks for `Accept-Encoding: identity` and says `Via: 1.1 warden`; the connector's headers are
//! injected from credential references; request and response sizes are capped.
//!
//! Detectors read everything that goes upstream from the agent (the decoded path, the query
//! `%`-decoded, the forwarded header values, the body decoded by its charset) and the whole
//! reply (headers passed on and body), through [`crate::detect::text`]. A body they cannot
//! read (a content coding other than identity, an unknown charset, binary) makes the PII fact
//! unavailable, so a PII policy's `failure_mode` decides; it is never taken for clean.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};

use super::body_of;
use crate::codes::Code;
use crate::decide::{PiiFact, SecretFact};
use crate::detect::text;
use crate::evidence::record::content_hash;
use crate::policy::compile::ConnectorInfo;
use crate::policy::model::{Action, HttpConnector};
use crate::policy::Snapshot;
use crate::spine::{Call, CallState, Refusal, Reply};

/// A parsed `/http/…` call.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub connector: String,
    /// The connector, resolved from the call's snapshot when it was parsed.
    pub info: std::sync::Arc<ConnectorInfo>,
    /// The normalised path (always starts with `/`).
    pub path: String,
    /// The raw query string, passed through.
    pub query: Option<String>,
}

impl crate::spine::Target for HttpCall {
    fn channel(&self) -> crate::policy::model::Channel {
        crate::policy::model::Channel::Http
    }
    fn facts(&self, call: &CallState) -> Option<(PiiFact, SecretFact)> {
        Some((request_fact(call, self), request_secret_fact(call, self)))
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

fn not_allowed(why: &str) -> Refusal {
    Refusal::new(Code::PathNotAllowed, format!("path refused: {why}"))
}

/// Decode and check a raw request path (below the connector name). Returns the normalised path.
pub fn normalise(raw: &str) -> Result<String, Refusal> {
    if raw.is_empty() {
        return Ok("/".into());
    }
    if !raw.starts_with('/') {
        return Err(not_allowed("must start with /"));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| not_allowed("malformed %-escape"))?;
            match hex {
                b'/' | b'\\' => return Err(not_allowed("encoded slash")),
                b'%' => return Err(not_allowed("double %-encoding")),
                0..=0x1f | 0x7f => return Err(not_allowed("encoded control character")),
                _ => out.push(hex),
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(not_allowed("backslash"));
        }
        if b < 0x20 || b == 0x7f {
            return Err(not_allowed("control character"));
        }
        out.push(b);
        i += 1;
    }
    let path = String::from_utf8(out).map_err(|_| not_allowed("not UTF-8 after decoding"))?;
    for seg in path.split('/').skip(1) {
        // `..;x` is `..` to servers that strip path parameters (Tomcat, Spring).
        let bare = seg.split(';').next().unwrap_or(seg).trim_end_matches(' ');
        if matches!(bare, "." | "..") {
            return Err(not_allowed("dot segment"));
        }
        match seg {
            "" if path.len() > 1 && !path.ends_with('/') => {
                return Err(not_allowed("empty segment (//)"))
            }
            _ => {}
        }
    }
    if path.contains("//") {
        return Err(not_allowed("empty segment (//)"));
    }
    Ok(path)
}

/// Whether `path` matches a pattern: exact, or `prefix/*` (one or more further segments).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty()),
        None => pattern == path,
    }
}

/// Check method and path against the connector's allow-list.
pub fn allowed(spec: &HttpConnector, method: &str, path: &str) -> Result<(), Refusal> {
    let rules: Vec<_> = spec
        .allow
        .iter()
        .filter(|r| r.paths.iter().any(|p| path_matches(p, path)))
        .collect();
    if rules.is_empty() {
        return Err(Refusal::new(
            Code::PathNotAllowed,
            format!("path {path} is not on this connector's allow-list"),
        ));
    }
    if !rules.iter().any(|r| r.methods.iter().any(|m| m == method)) {
        return Err(Refusal::new(
            Code::MethodNotAllowed,
            format!("method {method} is not allowed on {path}"),
        ));
    }
    Ok(())
}

/// Resolve the connector of `/http/{connector}/…` for `tenant`.
pub fn resolve<'a>(
    snap: &'a Snapshot,
    tenant: &str,
    id: &str,
) -> Result<&'a std::sync::Arc<ConnectorInfo>, Refusal> {
    match snap.connector(tenant, id) {
        Some(c) if c.spec.http.is_some() => Ok(c),
        Some(_) => Err(Refusal::new(
            Code::UnknownConnector,
            format!("connector `{id}` is not an HTTP connector"),
        )),
        None if snap.connector_owner_elsewhere(tenant, id).is_some() => Err(Refusal::new(
            Code::CrossTenant,
            format!("connector `{id}` belongs to another tenant"),
        )),
        None => Err(Refusal::new(
            Code::UnknownConnector,
            format!("no connector `{id}`"),
        )),
    }
}

/// Check a normalised call against its connector: method and path allow-lists, request size.
/// `/http/…` and absolute-form egress requests both pass here.
pub fn check(info: &ConnectorInfo, call: &Call, path: &str) -> Result<(), Refusal> {
    let spec = info
        .spec
        .http
        .as_ref()
        .ok_or_else(|| Refusal::internal("HTTP connector without http block"))?;
    allowed(spec, call.parts.method.as_str(), path)?;
    if call.body.len() as u64 > spec.max_request_bytes {
        return Err(Refusal::new(
            Code::BodyTooLarge,
            format!(
                "request body is larger than this connector's {} bytes",
                spec.max_request_bytes
            ),
        ));
    }
    Ok(())
}

/// Parse `/http/{connector}/{path…}` and check it against the connector.
pub fn parse(call: &Call, snap: &Snapshot) -> Result<HttpCall, Refusal> {
    let uri = &call.parts.uri;
    let rest = uri
        .path()
        .strip_prefix("/http/")
        .ok_or_else(|| Refusal::new(Code::BadRequest, "not an /http/ path"))?;
    let (id, raw) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if id.is_empty() || id.contains('%') {
        return Err(Refusal::new(
            Code::UnknownConnector,
            "missing or encoded connector name",
        ));
    }
    let info = resolve(snap, &call.ctx.tenant, id)?;
    let path = normalise(raw)?;
    check(info, call, &path)?;
    Ok(HttpCall {
        connector: id.to_string(),
        info: info.clone(),
        path,
        query: uri.query().map(str::to_string),
    })
}

/// Headers never forwarded either way: hop-by-hop ones (RFC 9110 §7.6.1), the agent's
/// credentials, and Warden's own.
fn forwardable(name: &HeaderName, listed: &[String]) -> bool {
    let n = name.as_str();
    !matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "authorization"
            | "cookie"
            | "host"
            | "content-length"
    ) && !n.starts_with("x-warden-")
        && !listed.iter().any(|l| l == n)
}

/// Request headers of the agent never forwarded upstream, beyond [`forwardable`]'s: anything
/// that makes a server act on another method or URL than the one judged, claims to say who
/// the client is or which proxies it passed, asks for a part of the answer (the detectors
/// read whole answers: ranges would let an agent fetch PII piece by piece), or picks the
/// answer's content coding (Warden asks for identity itself).
fn dropped_upstream(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-method"
            | "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
            | "x-override-url"
            | "x-host"
            | "x-original-host"
            | "forwarded"
            | "via"
            | "x-real-ip"
            | "x-client-ip"
            | "client-ip"
            | "true-client-ip"
            | "x-cluster-client-ip"
            | "cf-connecting-ip"
            | "range"
            | "if-range"
            | "accept-encoding"
    ) || n.starts_with("x-forwarded-")
}

/// The request headers of the agent that go upstream.
pub fn upstream_headers(h: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let listed = connection_listed(h);
    h.iter()
        .filter(move |(name, _)| forwardable(name, &listed) && !dropped_upstream(name))
}

/// Names listed in `Connection`, which are hop-by-hop too.
fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// Percent-encode every byte of `s` outside `keep`, as `%XX` (upper case).
fn encode_into(out: &mut String, s: &[u8], keep: impl Fn(u8) -> bool) {
    for &b in s {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

/// RFC 3986 `pchar` without `%`: unreserved, sub-delims, `:` and `@`.
fn pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// The normalised path (decoded, checked) re-encoded for the wire: each segment's bytes outside
/// `pchar` percent-encoded, so the upstream reads exactly the path that was matched.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_into(&mut out, seg.as_bytes(), pchar);
    }
    out
}

/// The agent's query as it goes upstream: well-formed `%XX` escapes and RFC 3986 query
/// characters kept, every other byte (`#`, spaces, quotes, non-ASCII, a lone `%`) encoded, so
/// nothing in it can end the query or the request line. Upstream reads what the detectors read.
pub fn encode_query(q: &str) -> String {
    let b = q.as_bytes();
    let mut out = String::with_capacity(q.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let escape = c == b'%'
            && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if escape || pchar(c) || c == b'/' || c == b'?' {
            out.push(char::from(c));
        } else {
            encode_into(&mut out, &b[i..i + 1], |_| false);
        }
        i += 1;
    }
    out
}

/// A header value as text: UTF-8 when it is, else read as Latin-1 (`obs-text`).
fn header_text(v: &HeaderValue) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => s.into(),
        Err(_) => v
            .as_bytes()
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into(),
    }
}

/// The PII fact of what a call sends upstream: decoded path, query (`%`-decoded, `+` as a
/// space), forwarded headers (names too: `x-ssn-078-05-1120: 1` is a header like any other)
/// and body. A body the detector cannot read makes the fact unavailable (partial when PII was
/// found in the rest).
pub fn request_fact(call: &CallState, hc: &HttpCall) -> PiiFact {
    let mut mask = text::scan_text(&hc.path, false);
    if let Some(q) = &hc.query {
        mask |= text::scan_text(q, true);
    }
    for (name, v) in upstream_headers(&call.parts.headers) {
        mask |= text::scan_text(name.as_str(), false);
        mask |= text::scan_text(&header_text(v), false);
    }
    let body = text::pii_kinds(&call.parts.headers, &call.body);
    fact_of(mask, body, "request")
}

/// The secrets fact of what a call sends upstream, over the same texts as [`request_fact`].
pub fn request_secret_fact(call: &CallState, hc: &HttpCall) -> SecretFact {
    let mut mask = text::secret_scan_text(&hc.path, false);
    if let Some(q) = &hc.query {
        mask |= text::secret_scan_text(q, true);
    }
    for (name, v) in upstream_headers(&call.parts.headers) {
        mask |= text::secret_scan_text(name.as_str(), false);
        mask |= text::secret_scan_text(&header_text(v), false);
    }
    secret_fact_of(mask, text::secret_kinds(&call.parts.headers, &call.body))
}

/// The secrets fact of an upstream's answer, over the same texts as [`reply_fact`].
fn reply_secret_fact(headers: &HeaderMap, body: &[u8]) -> SecretFact {
    let listed = connection_listed(headers);
    let mut mask = 0;
    for (name, v) in headers {
        if forwardable(name, &listed) || name == http::header::SET_COOKIE {
            mask |= text::secret_scan_text(name.as_str(), false);
            mask |= text::secret_scan_text(&header_text(v), false);
        }
    }
    secret_fact_of(mask, text::secret_kinds(headers, body))
}

fn secret_fact_of(mask: u16, body: Result<u16, text::Unreadable>) -> SecretFact {
    match body {
        Ok(m) => SecretFact::of_mask(mask | m),
        Err(_) if mask != 0 => SecretFact::Partial(crate::policy::model::SecretKind::of_mask(mask)),
        Err(_) => SecretFact::Unavailable,
    }
}

/// The PII fact of an upstream's answer: the headers passed on to the agent (names and
/// values) and the body.
fn reply_fact(headers: &HeaderMap, body: &[u8]) -> PiiFact {
    let listed = connection_listed(headers);
    let mut mask = 0;
    for (name, v) in headers {
        if forwardable(name, &listed) || name == http::header::SET_COOKIE {
            mask |= text::scan_text(name.as_str(), false);
            mask |= text::scan_text(&header_text(v), false);
        }
    }
    fact_of(mask, text::pii_kinds(headers, body), "reply")
}

fn fact_of(mask: u8, body: Result<u8, text::Unreadable>, what: &str) -> PiiFact {
    match body {
        Ok(m) => PiiFact::of_mask(mask | m),
        Err(why) => {
            tracing::info!(%why, "{what} body unreadable: the PII fact is unavailable");
            match PiiFact::of_mask(mask) {
                PiiFact::Found(kinds) if !kinds.is_empty() => PiiFact::Partial(kinds),
                _ => PiiFact::Unavailable,
            }
        }
    }
}

/// Judge the reply's PII fact: a blocking outcome withholds the answer; a WARN (e.g.
/// `fail_open` on an unreadable body) lets it through and becomes the call's recorded decision.
fn judge_reply(call: &Call, fact: PiiFact, secrets: SecretFact) -> Result<(), Refusal> {
    if fact == PiiFact::Found(Vec::new()) && secrets == SecretFact::Found(Vec::new()) {
        return Ok(());
    }
    let mut req = call
        .request
        .clone()
        .ok_or_else(|| Refusal::internal("no request facts"))?;
    req.facts.pii = Some(fact);
    req.facts.secrets = Some(secrets);
    let guard = call.guard()?;
    if let Some(d) = guard.recheck(call, req.clone())? {
        return Err(guard.enforce(call, &d));
    }
    // Not refused, but a WARN (`fail_open` on an unreadable body, `on_match: warn`) is still
    // the call's outcome and goes on its record: decided purely on the usage the call's
    // decision saw, so `evidence replay` reproduces it.
    let before = call
        .decision
        .as_ref()
        .map_or(Action::Continue, |d| d.action);
    let snap = call
        .snapshot
        .clone()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    let usage = call
        .trace
        .lock()
        .ok()
        .and_then(|t| t.rec.usage.clone())
        .unwrap_or_default();
    let d = crate::decide::decide(
        &snap,
        &req,
        &usage,
        call.rt.mode_for(&call.ctx.tenant),
        call.ctx.at_ms,
        &call.ctx.decision_id,
    );
    if d.action > before && !d.refused() {
        tracing::warn!(decision = %d.decision_id, code = ?d.code, "reply passed with a warning");
        call.trace(|t| {
            t.rec.request = Some(req);
            t.rec.usage = Some(usage);
            t.decision = Some(d);
        });
    }
    Ok(())
}

/// Forward an allowed HTTP call.
pub async fn forward(
    call: Call,
    hc: HttpCall,
    settings: super::Settings,
) -> Result<Reply, Refusal> {
    if call.decide_only {
        // Decided and recorded; the mesh (Envoy ext_authz) forwards the allowed call itself.
        return Ok(super::json_reply(
            http::StatusCode::OK,
            &serde_json::json!({ "allowed": true }),
        ));
    }
    // Resolved once, when the call was parsed.
    let info = hc.info.clone();
    let spec = info
        .spec
        .http
        .clone()
        .ok_or_else(|| Refusal::internal("HTTP connector without http block"))?;
    let mut url = format!(
        "{}{}",
        spec.base_url.trim_end_matches('/'),
        encode_path(&hc.path)
    );
    if let Some(q) = &hc.query {
        url.push('?');
        url.push_str(&encode_query(q));
    }
    let mut b = http::Request::builder()
        .method(call.parts.method.clone())
        .uri(&url);
    for (name, value) in upstream_headers(&call.parts.headers) {
        b = b.header(name, value);
    }
    // Only identity answers can be read; `Via` also keeps servers such as nginx from
    // compressing by default (`gzip_proxied off`).
    b = b
        .header(http::header::ACCEPT_ENCODING, "identity")
        .header(http::header::VIA, "1.1 warden");
    for (name, reference) in &spec.inject_headers {
        let value = call.rt.credentials.get(reference).map_err(|e| {
            tracing::error!(connector = %hc.connector, header = %name, error = %e, "credential unavailable");
            Refusal::new(Code::UpstreamError, format!("connector `{}` has no usable credential", hc.connector))
        })?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Refusal::new(
                Code::UpstreamError,
                "injected header value is not a valid header",
            )
        })?;
        b = b.header(name.as_str(), value);
    }
    let req = b.body(body_of(Full::new(call.body.clone()))).map_err(|e| {
        Refusal::new(
            Code::UpstreamError,
            format!("bad upstream request {url}: {e}"),
        )
    })?;
    call.trace(|t| {
        if !call.body.is_empty() {
            t.rec.query_hash = Some(content_hash(&call.body));
        }
    });
    let (resp, timeout) = super::send(
        &call,
        &settings,
        req,
        &hc.connector,
        spec.timeout_ms,
        "http",
    )
    .await?;
    let (parts, body) = resp.into_parts();
    let max = usize::try_from(spec.max_response_bytes.min(settings.max_response_bytes))
        .unwrap_or(usize::MAX);
    let bytes: Bytes = match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await
    {
        Err(_) => {
            return Err(Refusal::new(
                Code::UpstreamTimeout,
                "upstream response body stalled",
            ))
        }
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Refusal::new(
                Code::BodyTooLarge,
                format!("upstream response is larger than {max} bytes"),
            ))
        }
        Ok(Err(e)) => {
            return Err(Refusal::new(
                Code::UpstreamError,
                format!("reading upstream response: {e}"),
            ))
        }
    };
    let n = bytes.len() as u64;
    let status = parts.status.as_u16();
    call.trace(|t| {
        t.rec.bytes_out = n;
        t.upstream_status = Some(status);
        t.rec.response_hash = Some(content_hash(&bytes));
    });
    // PII in what comes back (or a body that cannot be read): re-decide with the fact; a
    // blocking policy withholds the answer.
    judge_reply(
        &call,
        reply_fact(&parts.headers, &bytes),
        reply_secret_fact(&parts.headers, &bytes),
    )?;
    // A `bytes` limit: the whole answer is known, so it is judged before it is passed on.
    let bounded = call.decision.as_ref().is_some_and(super::bytes_bounded);
    super::judge_answer_bytes(&call, bounded, n)?;
    let listed = connection_listed(&parts.headers);
    let mut reply = http::Response::new(body_of(Full::new(bytes)));
    *reply.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if forwardable(name, &listed) || name == http::header::SET_COOKIE {
            reply.headers_mut().append(name, value.clone());
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_refuses_every_trick() {
        for raw in [
            "/v1/forecast/../admin",
            "/v1/forecast/%2e%2e/admin",
            "/v1/forecast/%2E%2E/admin",
            "/v1/forecast/.%2e/admin",
            "/v1/forecast/./paris",
            "/v1//forecast/paris",
            "/v1/forecast%2fparis",
            "/v1/forecast%2Fparis",
            "/v1/forecast%5cparis",
            "/v1/forecast\\paris",
            "/v1/forecast/paris%00.json",
            "/v1/forecast/%252e%252e/admin",
            "/v1/forecast/%zz",
            "/v1/forecast/%2",
            "/v1/forecast/..;x/admin",
            "/v1/forecast/..%3B/admin",
            "/v1/forecast/.;/paris",
            "/v1/forecast/..%20/admin",
        ] {
            let e = normalise(raw).unwrap_err();
            assert_eq!(e.code, Code::PathNotAllowed, "{raw}");
        }
        assert_eq!(
            normalise("/v1/forecast/new%20york").unwrap(),
            "/v1/forecast/new york"
        );
        assert_eq!(normalise("").unwrap(), "/");
    }

    #[test]
    fn the_matched_path_is_what_goes_out() {
        for (raw, wire) in [
            ("/v1/forecast/paris", "/v1/forecast/paris"),
            ("/v1/forecast/a%3Fx=1%23f", "/v1/forecast/a%3Fx=1%23f"),
            ("/v1/forecast/new%20york", "/v1/forecast/new%20york"),
            ("/v1/forecast/s%C3%A3o", "/v1/forecast/s%C3%A3o"),
            ("/v1/forecast/a%40b;c=d", "/v1/forecast/a@b;c=d"),
            (
                "/v1/forecast/%22%3C%3E%60%7B%7D%7C%5E",
                "/v1/forecast/%22%3C%3E%60%7B%7D%7C%5E",
            ),
            ("/v1/forecast/", "/v1/forecast/"),
        ] {
            assert_eq!(encode_path(&normalise(raw).unwrap()), wire, "{raw}");
        }
        assert_eq!(encode_query("a=1&b=%40x"), "a=1&b=%40x");
        assert_eq!(encode_query("a=b#frag"), "a=b%23frag");
        assert_eq!(encode_query("a=%zz%4"), "a=%25zz%254");
        assert_eq!(
            encode_query("a=\"x y\"\r\nGET /"),
            "a=%22x%20y%22%0D%0AGET%20/"
        );
        assert_eq!(encode_query("q=é"), "q=%C3%A9");
    }

    #[test]
    fn patterns_match_exactly_or_below_a_prefix() {
        assert!(path_matches("/v1/forecast/*", "/v1/forecast/paris"));
        assert!(path_matches("/v1/forecast/*", "/v1/forecast/a/b"));
        assert!(!path_matches("/v1/forecast/*", "/v1/forecast/"));
        assert!(!path_matches("/v1/forecast/*", "/v1/forecast"));
        assert!(!path_matches("/v1/forecast/*", "/v1/forecastx/paris"));
        assert!(
            !path_matches("/v1/forecast/*", "/V1/forecast/paris"),
            "case-sensitive"
        );
        assert!(path_matches("/health", "/health"));
        assert!(!path_matches("/health", "/health/x"));
    }
}
