//! The egress forward-proxy mode, for mesh routing: with `HTTP_PROXY`/`HTTPS_PROXY` pointing
//! at the sidecar, absolute-form requests (`GET http://host:port/path`) and `CONNECT host:port`
//! pass only to hosts that an HTTP connector of this tenant names in its `base_url`.
//!
//! An absolute-form request is the HTTP channel under another name: it resolves to the
//! connector and then meets the same path and method allow-lists, size caps, detectors,
//! policies and evidence as `/http/{connector}/…`, and is forwarded the same way (the
//! normalised path re-encoded, the same headers dropped).
//!
//! `CONNECT` is checked at host:port level only — the tunnel carries TLS Warden does not open —
//! so it reaches only connectors whose base URL is `https://` (port 443, or the URL's own
//! port), where host level is all there is anyway. To a plain-HTTP connector's host it is
//! refused (`method_not_allowed`): that traffic must use absolute-form, which is judged request
//! by request; a tunnel would let any method and path through unseen. The tunnel's record is
//! written when it is granted; its PII fact is *unavailable* (nothing inside is read), so a
//! policy with a PII detector refuses tunnels under `fail_closed` and warns under `fail_open`.

use bytes::Bytes;
use http_body_util::Full;

use super::body_of;
use crate::codes::Code;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Reply};

/// `host:port` of a URL, with the scheme's default port filled in.
pub fn authority_of(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let host_port = rest.split(['/', '?', '#']).next()?;
    let default = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let hp = if host_port.contains(':') {
        host_port.to_ascii_lowercase()
    } else {
        format!("{}:{default}", host_port.to_ascii_lowercase())
    };
    let base_path = rest[host_port.len()..].trim_end_matches('/').to_string();
    Some((hp, base_path))
}

/// The tenant's HTTP connectors whose base URL is on `authority`, sorted by id: (id, base
/// path, whether the base URL is `https://`).
fn connectors_on(snap: &Snapshot, tenant: &str, authority: &str) -> Vec<(String, String, bool)> {
    let Some(t) = snap.tenant(tenant) else {
        return Vec::new();
    };
    let mut hits: Vec<(String, String, bool)> = t
        .connectors
        .values()
        .filter_map(|c| {
            let url = &c.spec.http.as_ref()?.base_url;
            let (hp, base) = authority_of(url)?;
            let tls = url
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
            (hp == authority.to_ascii_lowercase()).then(|| (c.id.to_string(), base, tls))
        })
        .collect();
    hits.sort();
    hits
}

/// The tenant's HTTP connector whose base URL is on `authority` (lowest id first), with the
/// base URL's path prefix.
pub fn connector_for(snap: &Snapshot, tenant: &str, authority: &str) -> Option<(String, String)> {
    connectors_on(snap, tenant, authority)
        .into_iter()
        .next()
        .map(|(id, base, _)| (id, base))
}

fn no_egress(authority: &str) -> Refusal {
    Refusal::new(
        Code::UnknownConnector,
        format!("egress to {authority} is not allowed: no HTTP connector of this agent names it"),
    )
}

/// Resolve an absolute-form request to an HTTP call.
pub fn absolute(call: &Call, snap: &Snapshot) -> Result<super::http::HttpCall, Refusal> {
    let uri = &call.parts.uri;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| Refusal::new(Code::BadRequest, "absolute-form request without a host"))?;
    let (hp, _) = authority_of(&format!("{scheme}://{authority}"))
        .ok_or_else(|| Refusal::new(Code::BadRequest, format!("unsupported scheme {scheme}")))?;
    let (connector, base) =
        connector_for(snap, &call.ctx.tenant, &hp).ok_or_else(|| no_egress(&hp))?;
    let raw = uri.path();
    let below = if base.is_empty() {
        raw
    } else {
        raw.strip_prefix(base.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .ok_or_else(|| {
                Refusal::new(
                    Code::PathNotAllowed,
                    format!("path {raw} is outside the connector's base path {base}"),
                )
            })?
    };
    let info = super::http::resolve(snap, &call.ctx.tenant, &connector)?;
    let path = super::http::normalise(below)?;
    super::http::check(info, call, &path)?;
    Ok(super::http::HttpCall {
        info: info.clone(),
        connector,
        path,
        query: uri.query().map(str::to_string),
    })
}

/// A `CONNECT host:port`: the (TLS) connector it reaches.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub connector: String,
    pub authority: String,
}

impl crate::spine::Target for Tunnel {
    fn channel(&self) -> crate::policy::model::Channel {
        crate::policy::model::Channel::Http
    }
    /// Nothing inside a tunnel is read: both facts are unavailable, never clean.
    fn facts(
        &self,
        _call: &crate::spine::CallState,
    ) -> Option<(crate::decide::PiiFact, crate::decide::SecretFact)> {
        Some((
            crate::decide::PiiFact::Unavailable,
            crate::decide::SecretFact::Unavailable,
        ))
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

pub fn connect(call: &Call, snap: &Snapshot) -> Result<Tunnel, Refusal> {
    let authority = call
        .parts
        .uri
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .ok_or_else(|| Refusal::new(Code::BadRequest, "CONNECT needs host:port"))?;
    if !authority.contains(':') {
        return Err(Refusal::new(Code::BadRequest, "CONNECT needs host:port"));
    }
    let hits = connectors_on(snap, &call.ctx.tenant, &authority);
    match hits.iter().find(|(_, _, tls)| *tls) {
        Some((connector, _, _)) => Ok(Tunnel {
            connector: connector.clone(),
            authority,
        }),
        None => match hits.first() {
            Some((connector, _, _)) => Err(Refusal::new(
                Code::MethodNotAllowed,
                format!(
                    "CONNECT reaches only TLS (https://) connectors; `{connector}` on {authority} is \
                     plain HTTP: send each request in absolute-form instead \
                     (GET http://{authority}/path HTTP/1.1), so it is judged and recorded"
                ),
            )),
            None => Err(no_egress(&authority)),
        },
    }
}

/// Grant an allowed tunnel: answer 200, then splice the agent's connection to the target.
pub async fn tunnel(mut call: Call, t: Tunnel) -> Result<Reply, Refusal> {
    let Some(on_upgrade) = call.parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(Refusal::new(
            Code::BadRequest,
            "this connection cannot be upgraded to a tunnel",
        ));
    };
    let target = tokio::net::TcpStream::connect(&t.authority)
        .await
        .map_err(|e| {
            Refusal::new(
                Code::UpstreamError,
                format!("cannot reach {}: {e}", t.authority),
            )
        })?;
    let authority = t.authority.clone();
    // A tunnel is an in-flight call like any other: killing its run or engaging the kill
    // switch closes it, both ways, at once.
    let cut = super::cut_signal(&call);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%authority, error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let mut agent = hyper_util::rt::TokioIo::new(upgraded);
        let mut target = target;
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut agent, &mut target) => match r {
                Ok((up, down)) => tracing::debug!(%authority, up, down, "tunnel closed"),
                Err(e) => tracing::debug!(%authority, error = %e, "tunnel ended"),
            },
            r = cut => tracing::info!(%authority, code = %r.code, "tunnel cut"),
        }
    });
    Ok(http::Response::new(body_of(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_get_default_ports_and_base_paths() {
        assert_eq!(
            authority_of("http://127.0.0.1:18081"),
            Some(("127.0.0.1:18081".into(), String::new()))
        );
        assert_eq!(
            authority_of("https://API.example.com/v1/"),
            Some(("api.example.com:443".into(), "/v1".into()))
        );
        assert_eq!(
            authority_of("http://h/x"),
            Some(("h:80".into(), "/x".into()))
        );
        assert_eq!(authority_of("ftp://h"), None);
    }
}
