//! The HTTP channel: `/http/{connector}/{path…}` to the connector's base URL (DESIGN §6).
//!
//! The path is normalised before it is matched, and anything a server could read differently
//! from us is refused with `path_not_allowed`: `.` and `..` segments (plain or %-encoded, any
//! case), empty segments (`//`), encoded slashes and backslashes, double encoding, NUL and other
//! control characters. Matching is case-sensitive, so `/V1/…` does not pass for `/v1/…`. The
//! agent's credentials and hop-by-hop headers are dropped; the connector's headers are
//! injected from credential references; request and response sizes are capped.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};

use super::body_of;
use crate::codes::Code;
use crate::evidence::record::content_hash;
use crate::policy::compile::ConnectorInfo;
use crate::policy::model::HttpConnector;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Reply};

/// A parsed `/http/…` call.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub connector: String,
    /// The normalised path (always starts with `/`).
    pub path: String,
    /// The raw query string, passed through.
    pub query: Option<String>,
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
        match seg {
            "." | ".." => return Err(not_allowed("dot segment")),
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
) -> Result<&'a ConnectorInfo, Refusal> {
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
    if let Some(spec) = &info.spec.http {
        allowed(spec, call.parts.method.as_str(), &path)?;
        if call.body.len() as u64 > spec.max_request_bytes {
            return Err(Refusal::new(
                Code::BodyTooLarge,
                format!(
                    "request body is larger than this connector's {} bytes",
                    spec.max_request_bytes
                ),
            ));
        }
    }
    Ok(HttpCall {
        connector: id.to_string(),
        path,
        query: uri.query().map(str::to_string),
    })
}

/// Headers never forwarded: hop-by-hop ones (RFC 9110 §7.6.1), the agent's credentials, and
/// Warden's own.
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

/// Names listed in `Connection`, which are hop-by-hop too.
fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// Forward an allowed HTTP call.
pub async fn forward(call: Call, hc: HttpCall) -> Result<Reply, Refusal> {
    let snap = call
        .snapshot
        .clone()
        .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
    let info = resolve(&snap, &call.ctx.tenant, &hc.connector)?.clone();
    let spec = info
        .spec
        .http
        .clone()
        .ok_or_else(|| Refusal::internal("HTTP connector without http block"))?;
    let mut url = format!("{}{}", spec.base_url.trim_end_matches('/'), hc.path);
    if let Some(q) = &hc.query {
        url.push('?');
        url.push_str(q);
    }
    let mut b = http::Request::builder()
        .method(call.parts.method.clone())
        .uri(&url);
    let listed = connection_listed(&call.parts.headers);
    for (name, value) in &call.parts.headers {
        if forwardable(name, &listed) {
            b = b.header(name, value);
        }
    }
    for (name, reference) in &spec.inject_headers {
        let value = call.shared.credential(reference).map_err(|e| {
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
            t.query_hash = Some(content_hash(&call.body));
        }
    });
    let (resp, timeout) = super::send(&call, req, &hc.connector, spec.timeout_ms, "http").await?;
    let (parts, body) = resp.into_parts();
    let max = usize::try_from(
        spec.max_response_bytes
            .min(call.shared.cfg.limits.max_response_bytes),
    )
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
        t.bytes_out = n;
        t.upstream_status = Some(status);
        t.response_hash = Some(content_hash(&bytes));
    });
    // PII in what comes back: re-decide with the fact; a blocking policy withholds the answer.
    let mask = std::str::from_utf8(&bytes)
        .map(crate::detect::pii::kinds)
        .unwrap_or(0);
    if mask != 0 {
        if let Some(mut req) = call.request.clone() {
            req.facts.pii = Some(crate::spine::detect::fact(mask));
            if let Some(d) = crate::spine::decide::recheck(&call, req)? {
                let run = call
                    .run
                    .clone()
                    .ok_or_else(|| Refusal::internal("no run"))?;
                let r = crate::spine::decide::enforce(&run, &d);
                return Err(r);
            }
        }
    }
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
