//! `POST /sql/{template}`: a registered SQL template, with a JSON object of parameters.

use crate::codes::Code;
use crate::decide::Request;
use crate::policy::model::Channel;
use crate::policy::Snapshot;
use crate::spine::{Call, Refusal, Target};

pub fn call(
    call: &Call,
    snap: &Snapshot,
    request: &mut Request,
) -> Result<Box<dyn Target>, Refusal> {
    super::openai::json_body(&call.parts.headers, &call.body)?;
    let path = call.parts.uri.path();
    let id = path.strip_prefix("/sql/").unwrap_or_default();
    if id.is_empty() || id.contains('/') || call.parts.uri.query().is_some() {
        return Err(Refusal::new(
            Code::UnknownTemplate,
            format!("no template at {path} (POST /sql/{{template}}, parameters in the body)"),
        ));
    }
    request.channel = Channel::Sql;
    request.template = Some(id.to_string());
    let sc = crate::connectors::sql::parse(snap, &call.ctx.tenant, id, &call.body)?;
    request.connector = Some(sc.info.id.to_string());
    Ok(Box::new(sc))
}
