//! Envoy ext_authz (`envoy.service.auth.v3.Authorization/Check`) on the agent port, from a gRPC
//! client built on Envoy's own protos (`envoy-types`): allowed, denied (path, unknown host,
//! a malformed check), each recorded — and a check and the same call through `/http/…` give the
//! same action and record shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

fn check(host: &str, method: &str, path: &str, run: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    host: host.into(),
                    path: path.into(),
                    scheme: "http".into(),
                    headers: HashMap::from([("x-warden-run-id".to_string(), run.to_string())]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn decision_of(headers: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]) -> String {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "x-warden-decision-id")
        .map(|h| h.value.clone())
        .unwrap()
}

/// (gRPC code of the check, the HTTP status Envoy would answer with, the body, the decision id).
fn verdict(r: &CheckResponse) -> (i32, u32, String, String) {
    let code = r.status.as_ref().map_or(0, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => (code, 200, String::new(), decision_of(&ok.headers)),
        Some(HttpResponse::DeniedResponse(d)) => (
            code,
            d.status.as_ref().map_or(0, |s| s.code as u32),
            d.body.clone(),
            decision_of(&d.headers),
        ),
        other => panic!("no HTTP response in the check: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_judged_and_recorded_like_http_calls() {
    let g = common::grpc::start("ext-authz").await;
    let env = &g.env;
    let host = env.weather.addr.to_string();
    let ch = tonic::transport::Endpoint::from_shared(env.agent_url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = AuthorizationClient::new(ch);

    // Allowed: decided and recorded, not forwarded.
    let r = c
        .check(check(&host, "GET", "/v1/forecast/oslo?days=2", "ea-1"))
        .await
        .unwrap()
        .into_inner();
    let (code, status, _, decision) = verdict(&r);
    assert_eq!((code, status), (0, 200));
    let rec = env.record_of(&decision).await;
    assert_eq!(rec.outcome, Some(warden::evidence::Outcome::Allowed));
    assert_eq!(rec.channel, Some(warden::policy::model::Channel::Http));
    assert_eq!(rec.connector.as_deref(), Some("weather"));
    assert_eq!(rec.run_id.as_deref(), Some("ea-1"));

    // Denied: a path the connector does not allow — the status and body of every refusal.
    let r = c
        .check(check(&host, "GET", "/v2/secret", "ea-2"))
        .await
        .unwrap()
        .into_inner();
    let (code, status, body, decision) = verdict(&r);
    assert_eq!((code, status), (7, 403), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "path_not_allowed");
    assert_eq!(v["error"]["decision_id"], decision.as_str());
    let by_check = env.record_of(&decision).await;
    // The same call through the sidecar's own route: the same action and record shape.
    let via = common::send(
        http::Request::get(env.agent_url("/http/weather/v2/secret"))
            .header("x-warden-run-id", "ea-3")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(via.status, 403);
    let by_route = env
        .record_of(&via.header("x-warden-decision-id").unwrap())
        .await;
    for (what, a, b) in [
        (
            "code",
            format!("{:?}", by_check.code),
            format!("{:?}", by_route.code),
        ),
        (
            "action",
            format!("{:?}", by_check.action),
            format!("{:?}", by_route.action),
        ),
        (
            "outcome",
            format!("{:?}", by_check.outcome),
            format!("{:?}", by_route.outcome),
        ),
        (
            "channel",
            format!("{:?}", by_check.channel),
            format!("{:?}", by_route.channel),
        ),
        (
            "connector",
            format!("{:?}", by_check.connector),
            format!("{:?}", by_route.connector),
        ),
        (
            "policy",
            format!("{:?}", by_check.policy),
            format!("{:?}", by_route.policy),
        ),
        (
            "snapshot",
            format!("{:?}", by_check.snapshot),
            format!("{:?}", by_route.snapshot),
        ),
    ] {
        assert_eq!(a, b, "{what}");
    }

    // A host no connector names: NOT_FOUND, 404, recorded.
    let r = c
        .check(check("127.0.0.1:9", "GET", "/x", "ea-4"))
        .await
        .unwrap()
        .into_inner();
    let (code, status, body, decision) = verdict(&r);
    assert_eq!((code, status), (5, 404), "{body}");
    assert!(body.contains("unknown_connector"));
    env.record_of(&decision).await;

    // A check without its HTTP request: INVALID_ARGUMENT, 400, recorded.
    let r = c.check(CheckRequest::default()).await.unwrap().into_inner();
    let (code, status, body, decision) = verdict(&r);
    assert_eq!((code, status), (3, 400), "{body}");
    let rec = env.record_of(&decision).await;
    assert_eq!(rec.code.map(|c| c.as_str()), Some("bad_request"));

    // The kill switch: every check is denied (503 governance_halted).
    let m = env.set_mode("halted").await;
    assert_eq!(m.status, 200, "{}", m.text());
    let r = c
        .check(check(&host, "GET", "/v1/forecast/oslo", "ea-5"))
        .await
        .unwrap()
        .into_inner();
    let (code, status, body, _) = verdict(&r);
    assert_eq!((code, status), (14, 503), "{body}");
    assert!(body.contains("governance_halted"));
}
