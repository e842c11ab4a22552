//! The HTTP channel over real sockets against the weather mock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod tls;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

async fn get(env: &Env, path: &str) -> Resp {
    send(
        http::Request::get(env.agent_url(path))
            .header("authorization", format!("Bearer {AGENT_KEY}"))
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "must-not-pass")
            .header("x-custom", "passes")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_get_injects_the_connector_credential_only() {
    let env = start("http-ok").await;
    let r = get(&env, "/http/weather/v1/forecast/paris?days=2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["city"], "paris");
    assert_eq!(v["authorization_header"], true);
    let seen = env.weather.last_request().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer weather-token"));
    assert_eq!(seen.uri.query(), Some("days=2"));
    assert_eq!(seen.header("x-custom"), Some("passes"));
    assert_eq!(
        seen.header("x-hop"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert!(!format!("{:?}", seen.headers).contains(AGENT_KEY));
    assert!(
        !r.text().contains("weather-token"),
        "the credential never reaches the agent"
    );
    let ev = env.evidence();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].channel, Some(warden::policy::model::Channel::Http));
    assert_eq!(ev[0].connector.as_deref(), Some("weather"));
    assert_eq!(ev[0].policy.as_deref(), Some("p300-weather"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_methods_paths_and_tricks_never_reach_the_upstream() {
    let env = start("http-tricks").await;
    let post = send(
        http::Request::post(env.agent_url("/http/weather/v1/forecast/paris"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    env.assert_refused(&post, 403, "method_not_allowed").await;
    for path in [
        "/http/weather/v1/admin",
        "/http/weather/v1/forecast",
        "/http/weather/v1/forecast/../../admin",
        "/http/weather/v1/forecast/%2e%2e/%2e%2e/admin",
        "/http/weather/v1/forecast/%2E%2E/admin",
        "/http/weather/v1//forecast/paris",
        "/http/weather/v1/forecast%2fparis",
        "/http/weather/V1/forecast/paris",
        "/http/weather/v1/forecast/paris%00",
        "/http/weather/v1/forecast/%252e%252e/admin",
        "/http/weather/v1/forecast/a%5c..%5cadmin",
    ] {
        let r = get(&env, path).await;
        env.assert_refused_for(path, &r, 403, "path_not_allowed")
            .await;
    }
    let r = get(&env, "/http/nope/v1/forecast/paris").await;
    env.assert_refused(&r, 404, "unknown_connector").await;
    let r = get(&env, "/http/crm-db/anything").await;
    env.assert_refused_for(
        "a SQL connector is not reachable over /http",
        &r,
        404,
        "unknown_connector",
    )
    .await;
    assert_eq!(env.weather.request_count(), 0);
    let ev = env.evidence();
    assert_eq!(ev.len(), 14, "each refusal recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_connectors_fail_hard() {
    let env = start_with(
        "http-xt",
        |b| {
            format!(
                "{b}---\napiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: globex-api, tenant: globex }}\nspec:\n  type: http\n  plane: web\n  http: {{ base_url: \"http://127.0.0.1:9\", allow: [ {{ methods: [GET], paths: [\"/*\"] }} ] }}\n"
            )
        },
        |c| c,
    )
    .await;
    let r = get(&env, "/http/globex-api/x").await;
    env.assert_refused(&r, 403, "cross_tenant").await;
    assert_eq!(
        env.evidence()[0].code,
        Some(warden::codes::Code::CrossTenant)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_allow_policy_for_a_connector_without_one() {
    let env = start_with(
        "http-deny",
        |b| b.replace("  scope: { all_runs: true }\n  match: { channel: http, connectors: [weather] }", "  scope: { agents: [someone-else] }\n  match: { channel: http, connectors: [weather] }"),
        |c| c,
    )
    .await;
    let r = get(&env, "/http/weather/v1/forecast/paris").await;
    env.assert_refused(&r, 403, "no_allow_policy").await;
    assert_eq!(env.weather.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_responses_are_refused() {
    let env = start_with(
        "http-caps",
        |b| b.replace("inject_headers: { authorization: \"env:WARDEN_IT_WEATHER_AUTH\" }", "inject_headers: { authorization: \"env:WARDEN_IT_WEATHER_AUTH\" }\n    max_response_bytes: 16\n    max_request_bytes: 8"),
        |c| c,
    )
    .await;
    let r = get(&env, "/http/weather/v1/forecast/paris").await;
    env.assert_refused(&r, 413, "body_too_large").await;
    assert!(
        !r.text().contains("forecast"),
        "no part of the oversized answer passes"
    );
    let big = send(
        http::Request::get(env.agent_url("/http/weather/v1/forecast/paris"))
            .body(Full::new(Bytes::from_static(b"0123456789abcdef")))
            .unwrap(),
    )
    .await;
    env.assert_refused(&big, 413, "body_too_large").await;
    assert_eq!(
        env.weather.request_count(),
        1,
        "the oversized request never left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connectors_are_verified_against_the_configured_roots() {
    // The HTTP connector channel honours the same trust roots as the LLM channel.
    tls::every_case(tls::Channel::Http).await;
}

/// A `bytes` limit counts the answer too, and judges it before it is passed on: the answer that
/// would cross the limit is withheld (the upstream was called), and `on_breach: stop` ends the
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bytes_limit_withholds_the_answer_that_crosses_it() {
    let env = start_with(
        "http-bytes",
        |b| {
            b.replace(
                "  match: { channel: http, connectors: [weather] }\n  effect: allow\n",
                "  match: { channel: http, connectors: [weather] }\n  effect: allow\n  limits:\n    - { metric: bytes, window: run, max: 1000, on_breach: stop }\n",
            )
        },
        |c| c,
    )
    .await;
    let call = || async {
        send(
            http::Request::get(env.agent_url("/http/weather/v1/forecast/paris"))
                .header("x-warden-run-id", "bytes-run")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    };
    let first = call().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let n = first.body.len();
    assert!((100..1000).contains(&n), "the answer is {n} bytes");
    // Allowed while the run's answers fit; the one that would cross 1,000 is withheld.
    let fit = (1000 / n) as u64;
    for _ in 1..fit {
        assert_eq!(call().await.status, 200);
    }
    let over = call().await;
    env.assert_refused(&over, 429, "budget_exceeded").await;
    assert!(!over.text().contains("paris"), "{}", over.text());
    assert_eq!(
        env.weather.request_count(),
        fit + 1,
        "it was asked, not passed on"
    );
    let after = call().await;
    env.assert_refused(&after, 403, "run_stopped").await;
    assert_eq!(env.weather.request_count(), fit + 1);
}
