//! Detectors on what the agent sends, before anything reaches an upstream: PII and secrets
//! facts for `decide` (`docs/policy.md`), over the same strings. Replies are scanned by the
//! connectors as they stream.
//!
//! Each target says what it sends (`Target::facts`), so a new channel brings its own reading.
//! On the LLM channel every string and key of a chat request's body is read, and each
//! message's text parts together (`ChatCall::pii_kinds`).
//!
//! On the HTTP channel everything that goes upstream is read (path, query, forwarded headers,
//! the body decoded by `detect::text`); a body that cannot be read makes the fact unavailable,
//! never clean. A `CONNECT` tunnel's content is never seen at all: its fact is unavailable,
//! so a PII policy's `failure_mode` decides whether a tunnel may open.

use super::{next, BoxFut, Call, Next, Step};

#[derive(Clone)]
pub struct Detect;

impl Step for Detect {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            let found = call.target.as_ref().and_then(|t| t.facts(&call));
            if let (Some((pii, secrets)), Some(req)) = (found, call.request.as_mut()) {
                req.facts.pii = Some(pii);
                req.facts.secrets = Some(secrets);
            }
            next(rest, call).await
        })
    }
}
