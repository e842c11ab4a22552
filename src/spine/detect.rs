//! Detectors on what the agent sends, before anything reaches an upstream: PII facts for
//! `decide` (DESIGN §4). Replies are scanned by the connectors as they stream.

use super::{next, BoxFut, Call, Next, Step, Target};
use crate::decide::PiiFact;
use crate::detect::pii;
use crate::policy::model::PiiKind;

#[derive(Clone)]
pub struct Detect;

/// The kinds in a bitmask, as a fact.
pub fn fact(mask: u8) -> PiiFact {
    PiiFact::Found(
        PiiKind::ALL
            .into_iter()
            .filter(|k| mask & k.bit() != 0)
            .collect(),
    )
}

impl Step for Detect {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            let mask = match &call.target {
                Some(Target::Chat(chat)) => Some(pii::kinds(&chat.prompt_text)),
                Some(Target::Http(_)) => {
                    Some(std::str::from_utf8(&call.body).map(pii::kinds).unwrap_or(0))
                }
                Some(Target::Models) | Some(Target::Tunnel(_)) | None => None,
            };
            if let (Some(mask), Some(req)) = (mask, call.request.as_mut()) {
                req.facts.pii = Some(fact(mask));
            }
            next(rest, call).await
        })
    }
}
