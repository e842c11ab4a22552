//! `/http/{connector}/{path…}`: an HTTP call through a named connector.

use crate::decide::Request;
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Target};

pub fn call(
    call: &Call,
    snap: &Snapshot,
    request: &mut Request,
) -> Result<Box<dyn Target>, Refusal> {
    let hc = crate::connectors::http::parse(call, snap)?;
    request.channel = Channel::Http;
    request.connector = Some(hc.connector.clone());
    Ok(Box::new(hc))
}
