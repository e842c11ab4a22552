//! The weather mock: `GET /v1/forecast/{city}` returns a small deterministic forecast.
//!
//! The answer echoes whether an `authorization` header arrived (`"authorization_header":
//! true|false`), never its value, so a test can see that the sidecar injected the
//! connector's credential without the mock ever repeating a secret. Any other path or
//! method is 404 with a JSON error. Every request is recorded, whatever its path.

use std::io;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{accept_loop, json_response, read_body, MockBody, ReceivedRequest, Recorder};

const SUMMARIES: [&str; 5] = ["sunny", "partly cloudy", "cloudy", "light rain", "windy"];

/// Runs the weather mock on `listener` forever (HTTP/1.1 and h2c).
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    serve_recorded(listener, Recorder::new()).await
}

/// Like [`serve`], recording every request into `recorder`.
pub async fn serve_recorded(listener: TcpListener, recorder: Arc<Recorder>) -> io::Result<()> {
    accept_loop(listener, move |req| handle(Arc::clone(&recorder), req)).await
}

async fn handle(recorder: Arc<Recorder>, req: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    // The body only matters for the record; an unreadable one is recorded as empty.
    let body = read_body(body).await.unwrap_or_default();
    let authorized = parts.headers.contains_key(http::header::AUTHORIZATION);
    let city = match parts.method {
        Method::GET => parts
            .uri
            .path()
            .strip_prefix("/v1/forecast/")
            .filter(|c| !c.is_empty() && !c.contains('/'))
            .map(percent_decode),
        _ => None,
    };
    let not_found = format!("no route for {} {}", parts.method, parts.uri.path());
    recorder.record(ReceivedRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    });
    match city {
        Some(city) => json_response(StatusCode::OK, &forecast(&city, authorized)),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": { "code": "not_found", "message": not_found } }),
        ),
    }
}

/// Three days of weather derived from the city's name alone (FNV-1a, case-insensitive).
fn forecast(city: &str, authorized: bool) -> Value {
    let seed = city
        .to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let days: Vec<Value> = (0..3u64)
        .map(|d| {
            let bits = seed >> (d * 16);
            let high = 8 + (bits % 20) as i64;
            let low = high - 4 - ((bits >> 8) % 6) as i64;
            json!({
                "day": d + 1,
                "summary": SUMMARIES[((bits >> 4) % SUMMARIES.len() as u64) as usize],
                "high_c": high,
                "low_c": low,
            })
        })
        .collect();
    json!({ "city": city, "unit": "celsius", "forecast": days, "authorization_header": authorized })
}

/// Decodes `%XX` escapes in a path segment; falls back to the raw text when the result is
/// not UTF-8.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            // Two hex digits make at most 255.
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_string())
}
