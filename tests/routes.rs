//! Route errors on both ports: an unknown route is 404, a known route with the wrong method is
//! 405 with `Allow`, a JSON route sent a non-JSON body is 415 — each with its code from the one
//! table (`docs/codes.md`), and, on the agent port, its evidence record, the upstream untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::Full;

fn req(
    method: Method,
    url: String,
    content_type: Option<&str>,
    body: &str,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_routes_answer_404_405_415_with_records() {
    let env = start("routes-agent").await;
    let valid = chat_body("gpt-4o-mini", "hi", false, None);
    // (method, path, content type, body, status, code, Allow)
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        &'a str,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: [Case; 6] = [
        (
            Method::GET,
            "/v1/nope",
            None,
            "",
            404,
            "unknown_route",
            None,
        ),
        (
            Method::GET,
            "/v1/chat/completions",
            None,
            "",
            405,
            "method_not_supported",
            Some("POST"),
        ),
        (
            Method::DELETE,
            "/v1/chat/completions",
            None,
            "",
            405,
            "method_not_supported",
            Some("POST"),
        ),
        (
            Method::POST,
            "/v1/models",
            Some("application/json"),
            "{}",
            405,
            "method_not_supported",
            Some("GET"),
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            Some("text/plain"),
            &valid,
            415,
            "unsupported_media_type",
            None,
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            Some("application/x-www-form-urlencoded"),
            &valid,
            415,
            "unsupported_media_type",
            None,
        ),
    ];
    for (method, path, ct, body, status, code, allow) in cases {
        let what = format!("{method} {path} {ct:?}");
        let r = send(req(method, env.agent_url(path), ct, body)).await;
        // The record is found by the answer's decision id, with the code (checked inside).
        env.assert_refused_for(&what, &r, status, code).await;
        assert_eq!(r.header("allow").as_deref(), allow, "{what}");
    }
    assert_eq!(
        env.llm.request_count(),
        0,
        "no route error reaches the upstream"
    );
    // The same body labelled JSON passes (with parameters, in another case).
    let r = send(req(
        Method::POST,
        env.agent_url("/v1/chat/completions"),
        Some("Application/JSON; charset=utf-8"),
        &valid,
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.llm.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_come_from_the_code_table() {
    let env = start("routes-admin").await;
    let token = format!("Bearer {}", env.admin_token);
    let none = serde_json::Value::Null;
    // Unknown route: 404 whether or not the caller holds the token.
    for auth in [None, Some(token.as_str())] {
        let r = env
            .admin_call(Method::POST, "/ops/nope", none.clone(), auth)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "unknown_route"),
            "{}",
            r.text()
        );
    }
    let r = env.admin_get("/nope").await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_route"));
    // Wrong method: 405 with the methods the route answers.
    for (method, path, allow) in [
        (Method::POST, "/healthz", "GET, HEAD"),
        (Method::DELETE, "/ops/mode", "GET, HEAD, POST"),
        (Method::GET, "/ops/reload", "POST"),
        (Method::GET, "/ops/approvals/x", "POST"),
        (Method::PUT, "/runs/r1", "GET, HEAD"),
    ] {
        let r = env
            .admin_call(method.clone(), path, none.clone(), Some(&token))
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (405, "method_not_supported"),
            "{method} {path}"
        );
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{method} {path}");
    }
    // HEAD is GET without a body.
    let r = env
        .admin_call(Method::HEAD, "/healthz", none.clone(), None)
        .await;
    assert_eq!(r.status, 200);
    // A mutating call without the token.
    let body = serde_json::json!({ "mode": "halted", "reason": "x" });
    let r = env.admin_call(Method::POST, "/ops/mode", body, None).await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    // Known route, unknown thing.
    let r = env.admin_get("/runs/no-such-run").await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_run"));
    let verdict = serde_json::json!({ "decision": "approve", "reason": "x" });
    let r = env
        .admin_call(Method::POST, "/ops/approvals/apr-x", verdict, Some(&token))
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_approval"));
    // Every admin error names a code of the table, with the table's status.
    for r in [
        env.admin_get("/runs/no-such-run").await,
        env.admin_call(
            Method::POST,
            "/ops/mode",
            serde_json::json!({"mode": "halted"}),
            Some(&token),
        )
        .await,
    ] {
        let code = warden::codes::Code::parse(&r.code()).expect("a code of the table");
        assert_eq!(code.http_status(), r.status, "{}", r.text());
    }
}
