//! The MCP tickets mock (`src/dev/mocks/mcp.rs`) speaks MCP as the official `mcp` Python SDK
//! (pinned) expects, in both eras, and keeps the transport rules of each revision — so tests of
//! the sidecar's `/mcp` can stand on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use warden::dev::mocks;

use common::{send, Resp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_speaks_to_the_mock_in_both_eras() {
    let py = common::python::python_with("mcp");
    let mock = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_agent.py");
    let url = format!("{}/mcp", mock.base_url());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py).arg(script).arg(url).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("10 passed, 0 failed"), "{stdout}\n{stderr}");
}

/// A JSON-RPC POST to the mock with `headers`.
async fn post(url: &str, headers: &[(&str, &str)], body: Value) -> Resp {
    common::mcp::post(url, headers, &body.to_string()).await
}

fn modern(method: &str, params: Value) -> Value {
    common::mcp::modern(1, method, params)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_keeps_each_revisions_transport_rules() {
    let mock = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let url = format!("{}/mcp", mock.base_url());

    // 2025-06-18: the handshake, the session, its end.
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": { "name": "raw", "version": "0" } } });
    let r = post(&url, &[], init.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-06-18");
    let sid = r.header("mcp-session-id").expect("a session id");
    let v = &[("mcp-protocol-version", "2025-06-18")];
    let with = |s: &str| {
        vec![
            ("mcp-session-id", s.to_string()),
            ("mcp-protocol-version", "2025-06-18".to_string()),
        ]
    };
    let h = with(&sid);
    let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert_eq!(post(&url, &hr, note).await.status, 202);
    let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" });
    let r = post(&url, &hr, list.clone()).await;
    assert_eq!(r.json()["result"]["nextCursor"], "2", "{}", r.text());
    assert_eq!(post(&url, v, list.clone()).await.status, 400, "no session");
    let ghost = with("no-such-session");
    let gr: Vec<(&str, &str)> = ghost.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(post(&url, &gr, list.clone()).await.status, 404);
    let bad_version = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "1999-01-01"),
    ];
    assert_eq!(post(&url, &bad_version, list.clone()).await.status, 400);
    let unknown = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "no_such_tool", "arguments": {} } });
    assert_eq!(
        post(&url, &hr, unknown).await.json()["error"]["code"],
        -32602
    );
    let resources = json!({ "jsonrpc": "2.0", "id": 4, "method": "resources/list" });
    assert_eq!(
        post(&url, &hr, resources).await.json()["error"]["code"],
        -32601
    );
    let del = send(
        http::Request::delete(&url)
            .header("mcp-session-id", sid.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(del.status, 200);
    assert_eq!(
        post(&url, &hr, list.clone()).await.status,
        404,
        "the session ended"
    );
    let get = send(
        http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(get.status, 405);
    let foreign = [("origin", "https://evil.example")];
    assert_eq!(post(&url, &foreign, init).await.status, 403);

    // 2026-07-28: stateless, headers must agree with the body.
    let h = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "server/discover"),
    ];
    let r = post(&url, &h, modern("server/discover", json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
    assert!(r.header("mcp-session-id").is_none());
    let call = modern(
        "tools/call",
        json!({ "name": "get_ticket", "arguments": { "id": 2 } }),
    );
    let good = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "get_ticket"),
    ];
    let r = post(&url, &good, call.clone()).await;
    assert_eq!(r.json()["result"]["resultType"], "complete", "{}", r.text());
    // The name in base64, as a client must send a value that is not plain ASCII.
    let b64 = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "=?base64?Z2V0X3RpY2tldA==?="),
    ];
    assert_eq!(post(&url, &b64, call.clone()).await.status, 200);
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
                ("mcp-name", "get_ticket"),
            ],
        ),
        (
            "version",
            [
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_ticket"),
            ],
        ),
    ] {
        let r = post(&url, &h, call.clone()).await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].clone()),
            (400, json!(-32020)),
            "{what}"
        );
    }
    let mut old = call.clone();
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2030-01-01");
    let h = [
        ("mcp-protocol-version", "2030-01-01"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "get_ticket"),
    ];
    let r = post(&url, &h, old).await;
    assert_eq!(r.json()["error"]["code"], -32022, "{}", r.text());
    let h = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "ping"),
    ];
    assert_eq!(
        post(&url, &h, modern("ping", json!({}))).await.status,
        404,
        "ping is gone"
    );

    // Steering: slow, dying, streamed.
    let q = |query: &str| {
        modern(
            "tools/call",
            json!({ "name": "search_tickets", "arguments": { "query": query } }),
        )
    };
    let h = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "search_tickets"),
    ];
    let started = Instant::now();
    assert_eq!(post(&url, &h, q("refund [[slow:300]]")).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = post(&url, &h, q("refund [[sse]]")).await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert!(
        r.text().starts_with("event: message\ndata: {"),
        "{}",
        r.text()
    );
    let died = common::client()
        .request(
            http::Request::post(&url)
                .header("content-type", "application/json")
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "search_tickets")
                .body(Full::new(Bytes::from(q("x [[die]]").to_string())))
                .unwrap(),
        )
        .await;
    assert!(
        died.is_err(),
        "the connection closes with no answer: {died:?}"
    );
}
