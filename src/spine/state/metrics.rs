//! Prometheus metrics for `/metrics` on the admin port.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::codes::Code;
use crate::decide::Mode;

type Labels = Vec<(&'static str, String)>;
/// Label sets of fixed names and values: no allocation to count a call.
type Fixed<const N: usize> = [(&'static str, &'static str); N];

pub struct Metrics {
    registry: Registry,
    calls: Family<Fixed<3>, Counter>,
    refusals: Family<Fixed<1>, Counter>,
    decision_seconds: Histogram,
    upstream_seconds: Family<Fixed<1>, Histogram>,
    tokens: Family<Fixed<1>, Counter>,
    cost_micro_usd: Counter,
    alerts_dropped: Counter,
    spool_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    spool_records: Gauge<i64, std::sync::atomic::AtomicI64>,
    mode: Family<Labels, Gauge>,
    ready: Gauge,
    /// The policy service link (`policy.source: service`) and evidence shipping.
    service: ServiceLink,
}

#[derive(Default)]
struct ServiceLink {
    connected: Gauge,
    snapshots_refused: Counter,
    unshipped_records: Gauge,
    unshipped_bytes: Gauge,
    shipped: Counter,
    lag_ms: Gauge,
}

fn upstream_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let calls = Family::<Fixed<3>, Counter>::default();
        let refusals = Family::<Fixed<1>, Counter>::default();
        let decision_seconds = Histogram::new(exponential_buckets(0.000_000_5, 2.0, 16));
        let upstream_seconds =
            Family::<Fixed<1>, Histogram>::new_with_constructor(upstream_hist as fn() -> Histogram);
        let tokens = Family::<Fixed<1>, Counter>::default();
        let cost_micro_usd = Counter::default();
        let alerts_dropped = Counter::default();
        let spool_bytes = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let spool_records = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let mode = Family::<Labels, Gauge>::default();
        let ready = Gauge::default();
        registry.register(
            "calls",
            "Mediated calls by channel, action and code",
            calls.clone(),
        );
        registry.register("refusals", "Refusals by code", refusals.clone());
        registry.register(
            "decision_seconds",
            "Time spent in decide()",
            decision_seconds.clone(),
        );
        registry.register(
            "upstream_seconds",
            "Upstream latency by channel",
            upstream_seconds.clone(),
        );
        registry.register("tokens", "LLM tokens by direction", tokens.clone());
        registry.register(
            "cost_micro_usd",
            "LLM cost in millionths of a US dollar",
            cost_micro_usd.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alerts dropped because the alert queue was full",
            alerts_dropped.clone(),
        );
        registry.register(
            "evidence_spool_bytes",
            "Bytes in the local evidence spool",
            spool_bytes.clone(),
        );
        registry.register(
            "evidence_records",
            "Records in the local evidence spool",
            spool_records.clone(),
        );
        registry.register(
            "mode",
            "Governance mode in force (1 = active), by scope and mode",
            mode.clone(),
        );
        registry.register(
            "ready",
            "1 when a verified snapshot is loaded",
            ready.clone(),
        );
        let service = ServiceLink::default();
        registry.register(
            "policy_service_connected",
            "1 while the snapshot watch stream to the policy service is open",
            service.connected.clone(),
        );
        registry.register(
            "snapshots_refused",
            "Snapshots from the policy service refused (did not compile to their hash)",
            service.snapshots_refused.clone(),
        );
        registry.register(
            "evidence_unshipped_records",
            "Evidence records not yet acknowledged by the policy service",
            service.unshipped_records.clone(),
        );
        registry.register(
            "evidence_unshipped_bytes",
            "Evidence bytes not yet acknowledged by the policy service",
            service.unshipped_bytes.clone(),
        );
        registry.register(
            "evidence_shipped_records",
            "Evidence records acknowledged by the policy service",
            service.shipped.clone(),
        );
        registry.register(
            "evidence_shipping_lag_ms",
            "Age of the oldest record of the last acknowledged batch, when acknowledged",
            service.lag_ms.clone(),
        );
        Metrics {
            service,
            registry,
            calls,
            refusals,
            decision_seconds,
            upstream_seconds,
            tokens,
            cost_micro_usd,
            alerts_dropped,
            spool_bytes,
            spool_records,
            mode,
            ready,
        }
    }

    pub fn call(&self, channel: &'static str, action: &'static str, code: Option<Code>) {
        self.calls
            .get_or_create(&[
                ("channel", channel),
                ("action", action),
                ("code", code.map_or("", |c| c.as_str())),
            ])
            .inc();
    }

    pub fn refusal(&self, code: Code) {
        self.refusals
            .get_or_create(&[("code", code.as_str())])
            .inc();
    }

    pub fn decision(&self, seconds: f64) {
        self.decision_seconds.observe(seconds);
    }

    pub fn upstream(&self, channel: &'static str, seconds: f64) {
        self.upstream_seconds
            .get_or_create(&[("channel", channel)])
            .observe(seconds);
    }

    pub fn tokens(&self, input: u64, output: u64, cost_usd: f64) {
        self.tokens
            .get_or_create(&[("direction", "input")])
            .inc_by(input);
        self.tokens
            .get_or_create(&[("direction", "output")])
            .inc_by(output);
        self.cost_micro_usd
            .inc_by((cost_usd * 1e6).round().max(0.0) as u64);
    }

    pub fn alert_dropped(&self) {
        self.alerts_dropped.inc();
    }

    pub fn set_service_connected(&self, up: bool) {
        self.service.connected.set(i64::from(up));
    }

    pub fn snapshot_refused(&self) {
        self.service.snapshots_refused.inc();
    }

    pub fn set_unshipped(&self, records: u64, bytes: u64) {
        self.service.unshipped_records.set(records as i64);
        self.service.unshipped_bytes.set(bytes as i64);
    }

    pub fn shipped(&self, records: u64, lag_ms: u64) {
        self.service.shipped.inc_by(records);
        self.service.lag_ms.set(lag_ms as i64);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn set_modes(&self, global: Mode, tenants: &[(String, Mode)]) {
        self.mode.clear();
        for m in [Mode::Enforcing, Mode::Degraded, Mode::Bypass, Mode::Halted] {
            self.mode
                .get_or_create(&vec![
                    ("scope", "global".into()),
                    ("mode", m.as_str().into()),
                ])
                .set(i64::from(m == global));
        }
        for (t, m) in tenants {
            self.mode
                .get_or_create(&vec![
                    ("scope", format!("tenant:{t}")),
                    ("mode", m.as_str().into()),
                ])
                .set(1);
        }
    }

    /// The exposition text, with spool figures read at scrape time.
    pub fn render(&self, spool_bytes: u64, spool_records: u64) -> String {
        self.spool_bytes.set(spool_bytes as i64);
        self.spool_records.set(spool_records as i64);
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
