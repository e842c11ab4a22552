//! Parse: once the body is read, the front end's parser (`Parser`) turns the call's wire format
//! into a typed target and the facts `decide` needs; this layer adds what every call shares
//! (who, the body's size, the connector's plane). A parser's refusal (an unknown route, a wrong
//! method, a body that is not what the route reads) is raised here, after the mode gate and the
//! body limit, so its precedence is the same on every front end.

use super::{next, BoxFut, Call, Next, Refusal, Step};
use crate::decide::Request;
use crate::policy::model::Channel;

#[derive(Clone)]
pub struct Parse;

impl Step for Parse {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        Box::pin(async move {
            let snap = call
                .snapshot
                .clone()
                .ok_or_else(|| Refusal::internal("no snapshot bound"))?;
            let mut request = Request {
                tenant: call.ctx.tenant.clone(),
                project: call.ctx.project.clone(),
                agent: call.ctx.agent.clone(),
                api_key: call.ctx.api_key.clone(),
                actor: call.ctx.actor.clone(),
                channel: Channel::Llm,
                connector: None,
                model: None,
                tool: None,
                template: None,
                new_run: call.new_run,
                facts: Default::default(),
                delta: Default::default(),
            };
            let parser = call
                .parser
                .clone()
                .ok_or_else(|| Refusal::internal("the call came with no parser"))?;
            let target = parser.parse(&call, &snap, &mut request)?;
            request.delta.bytes = call.body.len() as f64;
            if let Some(c) = request
                .connector
                .as_deref()
                .and_then(|c| snap.connector(&call.ctx.tenant, c))
            {
                let plane = c.plane.to_string();
                call.trace(|t| t.rec.plane = Some(plane));
            }
            call.target = Some(target);
            call.request = Some(request);
            next(rest, call).await
        })
    }
}
