//! The egress proxy's requests on the agent port: `CONNECT host:port` tunnels and HTTP/1
//! absolute-form requests, each matched to an HTTP connector by its host.

use crate::connectors::egress;
use crate::decide::Request;
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Target};

/// Absolute-form is how an HTTP/1 client talks to a proxy; HTTP/2 always sends the scheme and
/// authority, so there it is an ordinary request to us.
pub fn is_absolute(parts: &http::request::Parts) -> bool {
    parts.version < http::Version::HTTP_2
        && parts.uri.scheme().is_some()
        && parts.uri.authority().is_some()
}

pub fn tunnel(
    call: &Call,
    snap: &Snapshot,
    request: &mut Request,
) -> Result<Box<dyn Target>, Refusal> {
    let t = egress::connect(call, snap)?;
    request.channel = Channel::Http;
    request.connector = Some(t.connector.clone());
    Ok(Box::new(t))
}

pub fn absolute(
    call: &Call,
    snap: &Snapshot,
    request: &mut Request,
) -> Result<Box<dyn Target>, Refusal> {
    let hc = egress::absolute(call, snap)?;
    request.channel = Channel::Http;
    request.connector = Some(hc.connector.clone());
    Ok(Box::new(hc))
}
