//! Alerts on the EVENT path (INV-001): NEAR tiers and BREACHes go to webhooks from a bounded
//! queue, de-duplicated per (run, policy, limit, tier). A slow or dead webhook never slows or
//! changes a call: enqueueing never waits, and a full queue drops the alert (counted), never
//! evidence.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use moka::sync::Cache;
use serde::Serialize;
use tokio::sync::mpsc;

use super::UpstreamClient;

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `near` or `breach`.
    pub kind: &'static str,
    pub run_id: String,
    pub decision_id: String,
    pub tenant: String,
    pub agent: String,
    pub policy: String,
    pub limit: usize,
    pub metric: String,
    pub tier: f64,
    pub used: f64,
    pub max: f64,
    pub at_ms: u64,
}

pub struct Alerts {
    tx: Option<mpsc::Sender<Alert>>,
    seen: Cache<String, ()>,
}

impl Alerts {
    /// Start the sender task (when there are webhooks).
    pub fn start(
        webhooks: Vec<String>,
        queue: usize,
        timeout_ms: u64,
        client: UpstreamClient,
    ) -> Self {
        let seen = Cache::builder()
            .max_capacity(100_000)
            .time_to_idle(Duration::from_secs(3600))
            .build();
        if webhooks.is_empty() {
            return Alerts { tx: None, seen };
        }
        let (tx, mut rx) = mpsc::channel::<Alert>(queue.max(1));
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let Ok(body) = serde_json::to_vec(&alert) else {
                    continue;
                };
                for url in &webhooks {
                    let req = http::Request::post(url.as_str())
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(
                            Full::new(Bytes::from(body.clone()))
                                .map_err(|never| match never {})
                                .boxed(),
                        );
                    let Ok(req) = req else { continue };
                    let send = client.request(req);
                    match tokio::time::timeout(Duration::from_millis(timeout_ms), send).await {
                        Ok(Ok(resp)) => {
                            let _ = resp.into_body().collect().await;
                        }
                        Ok(Err(e)) => tracing::warn!(%url, error = %e, "alert webhook failed"),
                        Err(_) => tracing::warn!(%url, "alert webhook timed out"),
                    }
                }
            }
        });
        Alerts { tx: Some(tx), seen }
    }

    /// Queue an alert unless an identical one (same run, policy, limit, tier) was queued
    /// before. Returns false if the queue was full and the alert dropped.
    pub fn send(&self, alert: Alert) -> bool {
        let Some(tx) = &self.tx else { return true };
        let key = format!(
            "{}|{}|{}|{}|{}",
            alert.run_id, alert.policy, alert.limit, alert.kind, alert.tier
        );
        if self.seen.contains_key(&key) {
            return true;
        }
        self.seen.insert(key, ());
        tx.try_send(alert).is_ok()
    }
}
