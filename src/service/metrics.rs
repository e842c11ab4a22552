//! The service's HTTP port (15011): `/healthz`, `/readyz` (the store answers), `/metrics`.

use std::convert::Infallible;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Core;

type Fixed = [(&'static str, &'static str); 1];

pub struct ServiceMetrics {
    registry: Registry,
    pub watchers: Gauge<i64, AtomicI64>,
    pub snapshot_seq: Gauge<i64, AtomicI64>,
    pub modes_epoch: Gauge<i64, AtomicI64>,
    pub pushes: Family<Fixed, Counter>,
    pub evidence: Family<Fixed, Counter>,
    pub chain_issues: Counter,
    pub unauthenticated: Counter,
    /// Age of the newest record of the last batch when it was stored (ms).
    pub ingest_lag_ms: Gauge<i64, AtomicI64>,
}

impl ServiceMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden_service");
        let m = ServiceMetrics {
            watchers: Gauge::default(),
            snapshot_seq: Gauge::default(),
            modes_epoch: Gauge::default(),
            pushes: Family::default(),
            evidence: Family::default(),
            chain_issues: Counter::default(),
            unauthenticated: Counter::default(),
            ingest_lag_ms: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "watchers",
            "Snapshot-watch streams open on this replica",
            m.watchers.clone(),
        );
        registry.register(
            "snapshot_seq",
            "Sequence number of the current snapshot",
            m.snapshot_seq.clone(),
        );
        registry.register(
            "modes_epoch",
            "Epoch of the current modes",
            m.modes_epoch.clone(),
        );
        registry.register(
            "pushes",
            "Events pushed to sidecars by kind",
            m.pushes.clone(),
        );
        registry.register(
            "evidence_records",
            "Evidence records received by result",
            m.evidence.clone(),
        );
        registry.register(
            "evidence_chain_issues",
            "Gaps and forks found in shipped evidence chains",
            m.chain_issues.clone(),
        );
        registry.register(
            "unauthenticated",
            "Calls refused for want of a valid token",
            m.unauthenticated.clone(),
        );
        registry.register(
            "evidence_lag_ms",
            "Age of the newest shipped record when stored",
            m.ingest_lag_ms.clone(),
        );
        ServiceMetrics { registry, ..m }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn err(code: crate::codes::Code, message: &str) -> String {
    serde_json::json!({ "error": { "type": "warden_error", "code": code.as_str(), "message": message } })
        .to_string()
}

fn reply(status: u16, ctype: &'static str, body: String) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

async fn route(
    core: Arc<Core>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let json = "application/json";
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut r = reply(
            405,
            json,
            err(
                crate::codes::Code::MethodNotSupported,
                "these endpoints answer GET",
            ),
        );
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match req.uri().path() {
        "/healthz" => reply(200, "text/plain", "ok\n".into()),
        "/readyz" => match core.store.modes().await {
            Ok(_) => reply(
                200,
                json,
                serde_json::json!({ "ready": true, "replica": core.replica, "snapshot": core.current().snapshot.map(|s| s.hash.clone()) }).to_string(),
            ),
            Err(e) => reply(503, json, serde_json::json!({ "ready": false, "why": e.to_string() }).to_string()),
        },
        "/metrics" => reply(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", core.metrics.render()),
        p => reply(404, json, err(crate::codes::Code::UnknownRoute, &format!("no endpoint {p}"))),
    }
}

pub async fn serve_http(listener: tokio::net::TcpListener, core: Arc<Core>) {
    let shutdown = core.shutdown.subscribe();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let core = core.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(route(core, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}
