//! What an allowed call reserves against its limits (`docs/decisions.md`, "Reservation").
//!
//! Concurrent calls of one run must not each see the whole headroom, so a call reserves, when it
//! is decided, the most it may consume: its request, its bytes, its prompt and — for a chat
//! completion — `max_tokens × n` output tokens and their cost. Where a blocking limit leaves less
//! room than that, `max_tokens` is clamped to what fits rather than the call refused; where not
//! even one token per choice fits, the call is refused. Pure: same inputs, same plan.

use super::{Decision, Delta, Mode, Request};
use crate::policy::model::Metric;

/// What a call asks to reserve beyond the facts `decide` reads: a chat completion's output
/// tokens, a SQL template's rows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Want {
    /// Choices asked for (`n`, at least 1).
    pub n: u64,
    /// The agent's own `max_tokens` / `max_completion_tokens` (the smaller), if any.
    pub max_tokens: Option<u64>,
    /// Price of one output token, in USD (0 when the model is free or unpriced).
    pub output_usd_per_token: f64,
    /// A SQL result's row cap (the template's `max_rows`); `None` off the SQL channel.
    pub rows: Option<u64>,
}

/// The reservation of an allowed call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// `max_tokens` to send upstream, per choice (none: leave the request as it is).
    pub max_tokens: Option<u64>,
    /// The most rows a SQL result may return: the template's cap, or less where a blocking
    /// `rows` limit leaves less room.
    pub max_rows: Option<u64>,
    /// Amounts reserved now and settled when the call's record is sealed.
    pub reserve: Delta,
    /// False when not even one output token per choice fits a blocking limit.
    pub fits: bool,
}

/// The per-choice output tokens a blocking limit leaves room for, given the decision's headroom
/// (already net of this call's known amounts: its prompt, its input cost).
fn room_per_choice(d: &Decision, want: &Want) -> Option<u64> {
    let n = want.n.max(1) as f64;
    let per = |room: f64, unit: f64| -> u64 {
        if room <= 0.0 {
            0
        } else {
            // floor, so the reservation never exceeds the room.
            (room / (n * unit)).floor().min(u64::MAX as f64) as u64
        }
    };
    let mut best: Option<u64> = None;
    let mut take = |v: u64| best = Some(best.map_or(v, |b| b.min(v)));
    if let Some(r) = d.headroom_for(Metric::OutputTokens) {
        take(per(r, 1.0));
    }
    if let Some(r) = d.headroom_for(Metric::TotalTokens) {
        take(per(r, 1.0));
    }
    if let Some(r) = d.headroom_for(Metric::CostUsd) {
        if want.output_usd_per_token > 0.0 {
            take(per(r, want.output_usd_per_token));
        }
    }
    best
}

/// Plan the reservation of a call `decide` allowed. `want` is the chat completion's ask (none
/// for channels without output tokens). Under `degraded` and `bypass` the headroom does not
/// clamp (limits there only warn); the policy clamp (`max_tokens`) always does. The call holds
/// what it may consume, never more than the headroom.
pub fn plan(d: &Decision, req: &Request, want: Option<&Want>) -> Plan {
    let mut reserve = req.delta;
    let Some(want) = want else {
        return Plan {
            max_tokens: None,
            max_rows: None,
            reserve,
            fits: true,
        };
    };
    if let Some(cap) = want.rows {
        // Rows: the cap, or the room a blocking limit leaves (enforcing only), held whole.
        let room = d
            .headroom_for(Metric::Rows)
            .filter(|_| d.mode == Mode::Enforcing)
            .map(|r| {
                if r <= 0.0 {
                    0
                } else {
                    r.floor().min(u64::MAX as f64) as u64
                }
            });
        let rows = room.map_or(cap, |r| cap.min(r));
        reserve.rows += rows as f64;
        return Plan {
            max_tokens: None,
            max_rows: Some(rows),
            reserve,
            fits: rows > 0,
        };
    }
    let mut cap: Option<u64> = None;
    let mut take = |v: u64| cap = Some(cap.map_or(v, |c| c.min(v)));
    if let Some(m) = want.max_tokens {
        take(m);
    }
    if let Some(m) = d.max_tokens {
        take(u64::from(m));
    }
    let room = room_per_choice(d, want);
    if d.mode == Mode::Enforcing {
        if let Some(r) = room {
            take(r);
        }
    }
    let fits = cap != Some(0);
    // Held: the cap, but never past the headroom. Under `degraded` and `bypass` an answer may go
    // past it: it then draws more like a stream past its hold, and the decision taken then
    // records the breach its mode downgraded (WARN) — and refuses, if the mode is back to
    // `enforcing` by then.
    if let Some(c) = cap.map(|c| room.map_or(c, |r| c.min(r))) {
        let out = c.saturating_mul(want.n.max(1)) as f64;
        reserve.output_tokens += out;
        reserve.cost_usd += out * want.output_usd_per_token;
    }
    Plan {
        max_tokens: cap,
        max_rows: None,
        reserve,
        fits,
    }
}

/// The request to decide again when a call does not fit: it asks for one output token per
/// choice, so the limit that left no room breaches and refuses with its own reason.
pub fn at_least_one_token(req: &Request, want: &Want) -> Request {
    let mut r = req.clone();
    if want.rows.is_some() {
        // The SQL channel: one row.
        r.delta.rows += 1.0;
        return r;
    }
    let n = want.n.max(1) as f64;
    r.delta.output_tokens += n;
    r.delta.cost_usd += n * want.output_usd_per_token;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{decide, Usage};

    const BUNDLE: &str = r#"
apiVersion: warden/v1
kind: Connector
metadata: { id: openai, tenant: acme }
spec:
  type: llm
  plane: public-llm
  llm:
    base_url: "http://127.0.0.1:1/v1"
    api_key: env:K
    models: { m: { input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0 } }
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p1, tenant: acme }
spec:
  status: active
  scope: { all_runs: true }
  match: { channel: llm }
  effect: allow
  max_tokens: 1024
  limits:
    - { metric: output_tokens, window: run, max: 2000, on_breach: stop }
"#;

    fn req() -> Request {
        serde_json::from_value(serde_json::json!({
            "tenant": "acme", "project": "p", "agent": "a", "channel": "llm",
            "connector": "openai", "model": "m"
        }))
        .unwrap()
    }

    fn used(v: f64) -> Usage {
        Usage([("p1".to_string(), vec![v])].into_iter().collect())
    }

    #[test]
    fn the_clamp_is_the_least_of_agent_policy_and_headroom() {
        let snap = crate::policy::compile_str("b.yaml", BUNDLE).unwrap();
        let want = |n, m| Want {
            n,
            max_tokens: m,
            output_usd_per_token: 0.0,
            rows: None,
        };
        let d = decide(&snap, &req(), &used(0.0), Mode::Enforcing, 0, "d");
        assert_eq!(
            plan(&d, &req(), Some(&want(1, None))).max_tokens,
            Some(1024)
        );
        assert_eq!(
            plan(&d, &req(), Some(&want(1, Some(10)))).max_tokens,
            Some(10)
        );
        // Headroom 976 after 1024 used: clamped to it rather than refused.
        let d = decide(&snap, &req(), &used(1024.0), Mode::Enforcing, 0, "d");
        let p = plan(&d, &req(), Some(&want(1, None)));
        assert_eq!(
            (p.max_tokens, p.reserve.output_tokens, p.fits),
            (Some(976), 976.0, true)
        );
        // n choices share it.
        let p = plan(&d, &req(), Some(&want(4, None)));
        assert_eq!((p.max_tokens, p.reserve.output_tokens), (Some(244), 976.0));
        // Fewer tokens left than choices: nothing fits, and the re-decision refuses.
        let d = decide(&snap, &req(), &used(1997.0), Mode::Enforcing, 0, "d");
        let p = plan(&d, &req(), Some(&want(4, None)));
        assert!(!p.fits);
        let again = decide(
            &snap,
            &at_least_one_token(&req(), &want(4, None)),
            &used(1997.0),
            Mode::Enforcing,
            0,
            "d",
        );
        assert!(again.refused());
        assert_eq!(again.code, Some(crate::codes::Code::BudgetExceeded));
        // Degraded: limits only warn, so the headroom does not clamp; the policy clamp does.
        let d = decide(&snap, &req(), &used(1997.0), Mode::Degraded, 0, "d");
        let p = plan(&d, &req(), Some(&want(1, None)));
        assert_eq!(p.max_tokens, Some(1024));
        assert_eq!(
            p.reserve.output_tokens, 3.0,
            "it holds no more than the headroom"
        );
    }

    #[test]
    fn cost_headroom_clamps_by_the_output_price() {
        let bundle = BUNDLE.replace(
            "metric: output_tokens, window: run, max: 2000",
            "metric: cost_usd, window: run, max: 0.001",
        );
        let snap = crate::policy::compile_str("b.yaml", &bundle).unwrap();
        let want = Want {
            n: 1,
            max_tokens: None,
            output_usd_per_token: 2.0 / 1e6,
            rows: None,
        };
        let d = decide(&snap, &req(), &used(0.0), Mode::Enforcing, 0, "d");
        let p = plan(&d, &req(), Some(&want));
        assert_eq!(p.max_tokens, Some(500));
        assert!(p.reserve.cost_usd <= 0.001);
    }

    #[test]
    fn rows_are_capped_by_the_template_and_the_headroom() {
        let bundle = include_str!("../../examples/contract/bundle.yaml").replace(
            "    - { metric: queries, window: 1m, max: 60, on_breach: stop }",
            "    - { metric: queries, window: 1m, max: 60, on_breach: stop }\n    - { metric: rows, window: run, max: 250, on_breach: stop }",
        );
        let snap = crate::policy::compile_str("b.yaml", &bundle).unwrap();
        let req: Request = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "project": "support", "agent": "support-bot", "channel": "sql",
            "connector": "crm-db", "template": "customer_by_id"
        }))
        .unwrap();
        let want = Want {
            rows: Some(100),
            ..Want::default()
        };
        // Limits in canonical order: queries (index 0), then rows (index 1).
        let used = |rows: f64| {
            Usage(
                [("p200-crm-read".to_string(), vec![0.0, rows])]
                    .into_iter()
                    .collect(),
            )
        };
        let d = decide(&snap, &req, &used(0.0), Mode::Enforcing, 0, "d");
        let p = plan(&d, &req, Some(&want));
        assert_eq!(
            (p.max_rows, p.reserve.rows, p.fits),
            (Some(100), 100.0, true)
        );
        let d = decide(&snap, &req, &used(200.0), Mode::Enforcing, 0, "d");
        let p = plan(&d, &req, Some(&want));
        assert_eq!((p.max_rows, p.reserve.rows, p.fits), (Some(50), 50.0, true));
        // No row left: nothing fits, and asking for one row refuses with the limit's reason.
        let d = decide(&snap, &req, &used(250.0), Mode::Enforcing, 0, "d");
        let p = plan(&d, &req, Some(&want));
        assert!(!p.fits);
        let again = decide(
            &snap,
            &at_least_one_token(&req, &want),
            &used(250.0),
            Mode::Enforcing,
            0,
            "d",
        );
        assert_eq!(again.code, Some(crate::codes::Code::BudgetExceeded));
        // Degraded: the headroom does not cap; the template does.
        let d = decide(&snap, &req, &used(250.0), Mode::Degraded, 0, "d");
        assert_eq!(plan(&d, &req, Some(&want)).max_rows, Some(100));
    }
}
