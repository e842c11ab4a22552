//! Body limit: read the request body, refusing anything over `limits.max_request_bytes` with
//! `body_too_large` before it is buffered, and a body that has not fully arrived within
//! `limits.body_read_timeout_ms` with `request_timeout` (a slow or stalled sender holds a
//! connection, and a slot under the connection cap, no longer than that).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::{next, BoxError, BoxFut, Call, InBody, Next, Refusal, Step};
use crate::codes::Code;

#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max_request_bytes: u64,
    pub body_read_timeout_ms: u64,
}

impl Step for BodyLimit {
    fn call(&self, mut call: Call, rest: Next) -> BoxFut {
        let BodyLimit {
            max_request_bytes: max,
            body_read_timeout_ms: ms,
        } = *self;
        Box::pin(async move {
            let too_large = || {
                Refusal::new(
                    Code::BodyTooLarge,
                    format!("request body is larger than {max} bytes"),
                )
            };
            let declared = call
                .parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(too_large());
            }
            if let Some(incoming) = call.incoming.take() {
                let cap = usize::try_from(max).unwrap_or(usize::MAX);
                let Ok(read) =
                    tokio::time::timeout(Duration::from_millis(ms), read_capped(incoming, cap))
                        .await
                else {
                    return Err(Refusal::new(
                        Code::RequestTimeout,
                        format!("the request body did not arrive within {ms} ms"),
                    ));
                };
                match read {
                    Ok(Some(bytes)) => call.body = bytes,
                    Ok(None) => return Err(too_large()),
                    Err(e) => {
                        return Err(Refusal::new(
                            Code::BadRequest,
                            format!("could not read the request body: {e}"),
                        ))
                    }
                }
            }
            let n = call.body.len() as u64;
            call.trace(|t| t.rec.bytes_in = n);
            next(rest, call).await
        })
    }
}

/// The whole body, or `None` once it grows past `cap` bytes (nothing more is read).
async fn read_capped(mut body: InBody, cap: usize) -> Result<Option<Bytes>, BoxError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > cap {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}
