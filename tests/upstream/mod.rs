//! A tiny recording upstream for the HTTP-channel tests: a hyper server on 127.0.0.1:0 that
//! logs the method, request target, headers and body of everything it receives (and every TCP
//! connection it accepts), and answers with a configured response. "Never reached the
//! upstream" and "the upstream received exactly path X" are asserted on its log.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target exactly as received (path and query, not decoded).
    pub target: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Mutex<Answer>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts one, answering `200 {"ok":true}` until told otherwise.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: b"{\"ok\":true}".to_vec(),
        }));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a, n) = (seen.clone(), answer.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                n.fetch_add(1, Ordering::SeqCst);
                let (s, a) = (s.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (s, a) = (s.clone(), a.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            s.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.as_str().to_string())
                                    .unwrap_or_default(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().map(str::to_string),
                                headers: parts.headers,
                                body,
                            });
                            let ans = a.lock().unwrap().clone();
                            let mut r = http::Response::new(Full::new(Bytes::from(ans.body)));
                            *r.status_mut() = http::StatusCode::from_u16(ans.status).unwrap();
                            for (k, v) in ans.headers {
                                r.headers_mut().append(
                                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    http::HeaderValue::from_bytes(&v).unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            answer,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every request from now on with this.
    pub fn answer(&self, status: u16, headers: &[(&str, &[u8])], body: impl Into<Vec<u8>>) {
        *self.answer.lock().unwrap() = Answer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            body: body.into(),
        };
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// TCP connections accepted (a tunnel that never opened never connected).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A bundle fragment: an HTTP connector `id` on `base_url` allowing GET and POST below `/`,
/// and an allow policy for it, with a PII detector when `pii` is `Some(failure_mode)`.
pub fn connector(id: &str, base_url: &str, policy: &str, pii: Option<&str>) -> String {
    let detectors = match pii {
        Some(mode) => {
            format!("  detectors: {{ pii: {{ on_match: stop }} }}\n  failure_mode: {mode}\n")
        }
        None => String::new(),
    };
    format!(
        "---\napiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: {id}, tenant: acme }}\nspec:\n  type: http\n  plane: public-web\n  http:\n    base_url: \"{base_url}\"\n    allow: [ {{ methods: [GET, POST], paths: [\"/*\"] }} ]\n    max_request_bytes: 256\n---\napiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: {policy}, tenant: acme }}\nspec:\n  status: active\n  scope: {{ all_runs: true }}\n  match: {{ channel: http, connectors: [{id}] }}\n  effect: allow\n{detectors}"
    )
}
