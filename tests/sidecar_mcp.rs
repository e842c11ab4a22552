//! The sidecar's `/mcp` over real sockets, with the tickets mock as the upstream: the official
//! `mcp` Python SDK (pinned) as the agent in both eras, and raw HTTP for the transport rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use warden::dev::mocks;

use common::{send, Env, Resp};

async fn start(name: &str) -> (Env, mocks::MockHandle) {
    let mock = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let url = format!("{}/mcp", mock.base_url());
    let env = common::start_with(
        name,
        move |b| b.replace("http://127.0.0.1:18082/mcp", &url),
        |c| c,
    )
    .await;
    (env, mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_through_the_sidecar() {
    let py = common::python::python_with("mcp");
    let (env, mock) = start("mcp-sdk").await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_sidecar_agent.py");
    let url = env.agent_url("/mcp");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py).arg(script).arg(url).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("12 passed, 0 failed"), "{stdout}\n{stderr}");
    // The hidden tool never reached the upstream; every call left its record.
    let recs = env.evidence();
    assert!(recs.iter().any(|r| r.tool.as_deref() == Some("get_ticket")
        && r.code.map(|c| c.as_str()) == Some("pii_detected")));
    let hidden: Vec<_> = recs
        .iter()
        .filter(|r| r.tool.as_deref() == Some("delete_ticket"))
        .collect();
    assert_eq!(hidden.len(), 2, "one per era");
    assert!(hidden
        .iter()
        .all(|r| r.code.map(|c| c.as_str()) == Some("no_allow_policy")));
    assert!(mock.request_count() > 0);
}

async fn post(env: &Env, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut b = http::Request::post(env.agent_url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

fn modern(method: &str, params: Value) -> String {
    let mut p = params;
    p["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    json!({ "jsonrpc": "2.0", "id": 9, "method": method, "params": p }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_rules_and_bad_input() {
    let (env, mock) = start("mcp-raw").await;
    let call = modern(
        "tools/call",
        json!({ "name": "search_tickets", "arguments": { "query": "x" } }),
    );
    // Headers that disagree with the body: Warden judges the body and refuses.
    for (what, h) in [
        (
            "name",
            [
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "delete_ticket"),
            ],
        ),
        (
            "method",
            [
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
                ("mcp-name", "search_tickets"),
            ],
        ),
        (
            "version",
            [
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "search_tickets"),
            ],
        ),
    ] {
        let r = post(&env, &h, &call).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], -32020, "{what}");
        assert_eq!(v["error"]["data"]["code"], "header_mismatch", "{what}");
        assert_eq!(v["id"], 9, "{what}");
    }
    let good = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "search_tickets"),
    ];
    let r = post(&env, &good, &call).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["resultType"], "complete", "{}", r.text());
    // A foreign origin, a wrong method, a body that is not JSON-RPC, an unknown method.
    let foreign = [
        ("origin", "https://evil.example"),
        good[0],
        good[1],
        good[2],
    ];
    assert_eq!(post(&env, &foreign, &call).await.status, 403);
    let get = send(
        http::Request::get(env.agent_url("/mcp"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (get.status, get.header("allow").as_deref()),
        (405, Some("POST"))
    );
    let r = post(&env, &[], "{not json").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!(-32700))
    );
    let r = post(&env, &[], r#"{"id": 1, "method": "ping"}"#).await;
    assert_eq!(r.status, 400, "no jsonrpc 2.0");
    let r = post(
        &env,
        &[("mcp-protocol-version", "2025-06-18")],
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/list"}"#,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32601, "{}", r.text());
    let r = post(
        &env,
        &[("mcp-protocol-version", "1999-01-01")],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!(-32022)),
        "{}",
        r.text()
    );
    // 2025-06-18 without a session: the handshake answers that revision, and calls stand alone.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let r = post(&env, &[], init).await;
    assert_eq!(
        r.json()["result"]["protocolVersion"],
        "2025-06-18",
        "{}",
        r.text()
    );
    let v = [("mcp-protocol-version", "2025-06-18")];
    let r = post(
        &env,
        &v,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    let r = post(&env, &v, r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_ticket","arguments":{"id":3}}}"#).await;
    assert_eq!(
        r.json()["result"]["structuredContent"]["id"],
        3,
        "{}",
        r.text()
    );
    // Arguments that are not an object.
    let r = post(&env, &v, r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_ticket","arguments":[1]}}"#).await;
    assert_eq!(
        r.json()["error"]["data"]["code"],
        "invalid_params",
        "{}",
        r.text()
    );
    // Every refusal above has its record; the mock saw only the allowed calls.
    let recs = env.evidence();
    assert!(
        recs.iter()
            .filter(|r| r.code.map(|c| c.as_str()) == Some("header_mismatch"))
            .count()
            >= 3
    );
    assert!(recs
        .iter()
        .any(|r| r.code.map(|c| c.as_str()) == Some("forbidden_origin")));
    assert!(mock.request_count() >= 2);
}
