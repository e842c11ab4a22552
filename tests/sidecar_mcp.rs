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
    common::mcp::post(&env.agent_url("/mcp"), headers, body).await
}

fn modern(method: &str, params: Value) -> String {
    common::mcp::modern(9, method, params).to_string()
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
    // A body labelled as something else than JSON (a browser's simple request): 415.
    let form = send(
        http::Request::post(env.agent_url("/mcp"))
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(call.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(form.status, 415, "{}", form.text());
    assert_eq!(
        form.json()["error"]["data"]["code"],
        "unsupported_media_type"
    );
    // The stateless revision named in the header, the body without its `_meta`: refused.
    let bare = r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#;
    let r = post(
        &env,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        bare,
    )
    .await;
    assert_eq!(
        r.json()["error"]["data"]["code"],
        "invalid_params",
        "{}",
        r.text()
    );
    assert_eq!(r.json()["id"], 8);
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
    // 2025-06-18: the handshake answers that revision and opens a session.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let r = post(&env, &[], init).await;
    assert_eq!(
        r.json()["result"]["protocolVersion"],
        "2025-06-18",
        "{}",
        r.text()
    );
    // The session it opened: its id works; one Warden never gave is 404 unknown_session; a
    // request without one stands alone (below).
    let sid = r
        .header("mcp-session-id")
        .expect("initialize opens a session");
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let with = [
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-session-id", sid.as_str()),
    ];
    assert_eq!(post(&env, &with, list).await.status, 200);
    let ghost = [
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-session-id", "not-ours"),
    ];
    let r = post(&env, &ghost, list).await;
    assert_eq!(
        (r.status, r.json()["error"]["data"]["code"].clone()),
        (404, json!("unknown_session"))
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

/// A tools/call over raw HTTP in the session era (2025-11-25), its JSON-RPC answer.
async fn tool(env: &Env, name: &str, args: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": { "name": name, "arguments": args } });
    let r = post(
        env,
        &[("mcp-protocol-version", "2025-11-25")],
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn list(env: &Env) -> Vec<String> {
    let r = post(
        env,
        &[("mcp-protocol-version", "2025-11-25")],
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    )
    .await;
    r.json()["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text()))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

const MORE: &str = r#"---
apiVersion: warden/v1
kind: Connector
metadata: { id: tickets2, tenant: acme }
spec:
  type: mcp
  plane: support-tools
  mcp: { url: "TICKETS2_URL", timeout_ms: 400 }
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p401-tickets2, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: mcp, connectors: [tickets2] }
  effect: allow
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p402-limits, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: mcp, connectors: [tickets], tools: [search_tickets] }
  effect: allow
  arguments:
    limit: { max: 5 }
    query: { max_len: 40 }
---
apiVersion: warden/v1
kind: Connector
metadata: { id: vault, tenant: globex }
spec:
  type: mcp
  plane: globex-tools
  mcp: { url: "http://127.0.0.1:9/mcp" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_credentials_arguments_failures_and_evidence() {
    std::env::set_var("WARDEN_IT_TICKETS_AUTH", "Bearer tickets-secret");
    let one = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let (two, _) =
        mocks::spawn_mcp_speaking("127.0.0.1:0", mocks::mcp::Speaks::Legacy("2025-06-18"))
            .await
            .unwrap();
    let (u1, u2) = (
        format!("{}/mcp", one.base_url()),
        format!("{}/mcp", two.base_url()),
    );
    let env = common::start_with(
        "mcp-agg",
        move |b| {
            b.replace(
                "mcp: { url: \"http://127.0.0.1:18082/mcp\" }",
                &format!("mcp: {{ url: \"{u1}\", inject_headers: {{ authorization: \"env:WARDEN_IT_TICKETS_AUTH\" }} }}"),
            ) + &MORE.replace("TICKETS2_URL", &u2)
        },
        |c| c,
    )
    .await;

    // Two upstreams: each open list's names carry its connector; only allowed tools show.
    let names = list(&env).await;
    assert_eq!(
        names,
        [
            "tickets__search_tickets",
            "tickets__get_ticket",
            "tickets2__search_tickets",
            "tickets2__get_ticket",
            "tickets2__delete_ticket"
        ],
        "{names:?}"
    );
    // The credential reaches the upstream, never the agent's own Authorization.
    let r = send(
        http::Request::post(env.agent_url("/mcp"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer agent-key-must-not-pass")
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::from(
                json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": { "name": "tickets__get_ticket", "arguments": { "id": 2 } } })
                .to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(
        r.json()["result"]["structuredContent"]["id"],
        2,
        "{}",
        r.text()
    );
    let seen = one.last_request().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer tickets-secret"));
    assert!(!r.text().contains("tickets-secret"));
    // Evidence of the call: tool, connector, revision, the resource it read, no content.
    let recs = env.evidence();
    let rec = recs
        .iter()
        .rev()
        .find(|r| {
            r.tool.as_deref() == Some("get_ticket") && r.connector.as_deref() == Some("tickets")
        })
        .unwrap();
    let m = rec.mcp.clone().expect("mcp facts");
    assert_eq!((m.revision.as_str(), m.is_error), ("2026-07-28", false));
    assert!(m.upstream_us > 0);
    assert_eq!(rec.doc_ids, ["tickets://2"]);
    assert!(rec.prompt_hash.is_some() && rec.content.is_none());
    // The second upstream speaks 2025-06-18 only, and a tool error is a result, with isError.
    let v = tool(&env, "tickets2__get_ticket", json!({ "id": 999 })).await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let recs = env.evidence();
    let m = recs.last().unwrap().mcp.clone().unwrap();
    assert_eq!((m.revision.as_str(), m.is_error), ("2025-06-18", true));

    // Argument rules: within them, allowed; past them, refused by the policy that holds them.
    let v = tool(
        &env,
        "tickets__search_tickets",
        json!({ "query": "refund", "limit": 3 }),
    )
    .await;
    assert!(v.get("result").is_some(), "{v}");
    let v = tool(
        &env,
        "tickets__search_tickets",
        json!({ "query": "refund", "limit": 9 }),
    )
    .await;
    assert_eq!(v["error"]["code"], -32003, "{v}");
    assert_eq!(v["error"]["data"]["code"], "policy_denied");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("limit"),
        "{v}"
    );
    let before = one.request_count();
    let v = tool(
        &env,
        "tickets__search_tickets",
        json!({ "query": "x".repeat(41) }),
    )
    .await;
    assert_eq!(v["error"]["data"]["code"], "policy_denied", "{v}");
    assert_eq!(
        one.request_count(),
        before,
        "a refused call never reaches the upstream"
    );

    // Arguments the tool's own input schema refuses: a tool error the model can correct,
    // with the code, and nothing sent.
    let before = one.request_count();
    for bad in [
        json!({ "id": "seven" }),
        json!({ "id": 2, "extra": true }),
        json!({}),
    ] {
        let v = tool(&env, "tickets__get_ticket", bad.clone()).await;
        assert_eq!(v["result"]["isError"], true, "{bad}: {v}");
        assert_eq!(
            v["result"]["_meta"]["io.warden/code"], "invalid_params",
            "{bad}"
        );
        assert!(v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("invalid arguments"));
        let d = v["result"]["_meta"]["io.warden/decision_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            env.record_of(&d).await.code.map(|c| c.as_str()),
            Some("invalid_params")
        );
    }
    assert_eq!(one.request_count(), before, "the tool never saw them");

    // PII in a streamed (SSE) result is judged before any of it reaches the agent.
    let v = tool(
        &env,
        "tickets__search_tickets",
        json!({ "query": "refund [[full]] [[sse]]" }),
    )
    .await;
    assert_eq!(v["error"]["data"]["code"], "pii_detected", "{v}");
    assert!(!v.to_string().contains("jane.doe"), "{v}");

    // An upstream that hangs never holds the agent past the connector's time-out (400 ms);
    // one that dies mid-call is an error, and the next call reaches it again.
    let started = std::time::Instant::now();
    let v = tool(
        &env,
        "tickets2__search_tickets",
        json!({ "query": "x [[slow:3000]]" }),
    )
    .await;
    assert_eq!(v["error"]["data"]["code"], "upstream_timeout", "{v}");
    assert_eq!(v["error"]["code"], -32603);
    assert!(started.elapsed() < std::time::Duration::from_millis(2_000));
    let v = tool(
        &env,
        "tickets__search_tickets",
        json!({ "query": "x [[die]]" }),
    )
    .await;
    assert_eq!(v["error"]["data"]["code"], "upstream_error", "{v}");
    let v = tool(&env, "tickets__get_ticket", json!({ "id": 3 })).await;
    assert_eq!(v["result"]["structuredContent"]["id"], 3, "{v}");

    // Another tenant's connector: as unknown as no tool, audited as cross-tenant.
    let v = tool(&env, "vault__read_secret", json!({})).await;
    assert_eq!(
        (
            v["error"]["code"].clone(),
            v["error"]["data"]["code"].clone()
        ),
        (json!(-32602), json!("unknown_tool"))
    );
    let d = v["error"]["data"]["decision_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rec = env.record_of(&d).await;
    assert_eq!(rec.code.map(|c| c.as_str()), Some("cross_tenant"));
    // A name that resolves nowhere is unknown, and recorded as such.
    let v = tool(&env, "no_such_tool", json!({})).await;
    assert_eq!(v["error"]["code"], -32602);
}

/// A closed tool list: McpTool documents rename and describe the server's tools, and only they
/// are offered; a `requests` limit and argument rules of every kind apply to tool calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tool_documents_limits_and_argument_kinds() {
    let mock = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let url = format!("{}/mcp", mock.base_url());
    let closed = r#"---
apiVersion: warden/v1
kind: McpTool
metadata: { id: find_tickets, tenant: acme }
spec:
  connector: tickets
  upstream_name: search_tickets
  description: "Find support tickets by words."
---
apiVersion: warden/v1
kind: McpTool
metadata: { id: get_ticket, tenant: acme }
spec: { connector: tickets }
---
apiVersion: warden/v1
kind: Policy
metadata: { id: p403-find, tenant: acme }
spec:
  status: active
  scope: { agents: [support-bot] }
  match: { channel: mcp, connectors: [tickets], tools: [find_tickets] }
  effect: allow
  limits:
    - { metric: requests, window: 1m, max: 4, on_breach: stop }
  arguments:
    query: { required: true, pattern: "[a-z ]+" }
    limit: { enum: [1, 2, 3] }
    filter.owner: { forbidden: true }
"#;
    let env = common::start_with(
        "mcp-closed",
        move |b| {
            b.replace("http://127.0.0.1:18082/mcp", &url)
                .replace("tools: [search_tickets, get_ticket]", "tools: [get_ticket]")
                + closed
        },
        |c| c,
    )
    .await;
    let r = post(
        &env,
        &[("mcp-protocol-version", "2025-11-25")],
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    )
    .await;
    let tools = r.json()["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["find_tickets", "get_ticket"],
        "delete_ticket is not offered"
    );
    assert_eq!(tools[0]["description"], "Find support tickets by words.");
    // The renamed tool reaches the server under its own name.
    let v = tool(
        &env,
        "find_tickets",
        json!({ "query": "refund", "limit": 2 }),
    )
    .await;
    assert!(v.get("result").is_some(), "{v}");
    assert_eq!(
        mock.last_request().unwrap().json().unwrap()["params"]["name"],
        "search_tickets"
    );
    // The server's own name is not a tool here.
    let v = tool(&env, "search_tickets", json!({ "query": "refund" })).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // Each kind of argument rule, broken: refused by p403, the rule named.
    for (args, needle) in [
        (json!({ "limit": 1 }), "`query` is required"),
        (
            json!({ "query": "DROP TABLE" }),
            "`query` does not match the pattern",
        ),
        (
            json!({ "query": "refund", "limit": 9 }),
            "`limit` is not one of the allowed values",
        ),
        (
            json!({ "query": "refund", "filter": { "owner": "me" } }),
            "`filter.owner` is not allowed",
        ),
    ] {
        let v = tool(&env, "find_tickets", args.clone()).await;
        assert_eq!(v["error"]["data"]["code"], "policy_denied", "{args}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{args}: {v}"
        );
    }
    // The requests limit: 4 a minute counted over the tool's calls (1 allowed + 4 refused so
    // far are 5 decided; the refused ones were not allowed, so only the allowed one counts).
    for i in 0..3 {
        let v = tool(&env, "find_tickets", json!({ "query": "refund" })).await;
        assert!(v.get("result").is_some(), "call {i}: {v}");
    }
    let v = tool(&env, "find_tickets", json!({ "query": "refund" })).await;
    assert_eq!(v["error"]["data"]["code"], "rate_limited", "{v}");
    assert_eq!(v["error"]["code"], -32003);
}

/// An upstream written with the official SDK (MCPServer), aggregated beside the tickets mock:
/// its tools are listed under its connector's prefix, called through the sidecar, and its
/// results judged by the detectors — with the SDK's client as the agent too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_written_with_the_official_sdk() {
    let py = common::python::python_with("mcp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_upstream.py");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        Command::new(&py)
            .arg(&script)
            .arg(port.to_string())
            .arg("sessions")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_until(
        "the SDK's server listens",
        std::time::Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    )
    .await;
    let mock = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let tickets = format!("{}/mcp", mock.base_url());
    let orders = format!(
        "---\napiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: orders, tenant: acme }}\nspec:\n  type: mcp\n  plane: support-tools\n  mcp: {{ url: \"http://127.0.0.1:{port}/mcp\" }}\n---\napiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p404-orders, tenant: acme }}\nspec:\n  status: active\n  scope: {{ agents: [support-bot] }}\n  match: {{ channel: mcp, connectors: [orders], tools: [lookup_order] }}\n  effect: allow\n  detectors: {{ pii: {{ on_match: stop }} }}\n"
    );
    let env = common::start_with(
        "mcp-sdk-upstream",
        move |b| b.replace("http://127.0.0.1:18082/mcp", &tickets) + &orders,
        |c| c,
    )
    .await;
    let names = list(&env).await;
    assert_eq!(
        names,
        [
            "orders__lookup_order",
            "tickets__search_tickets",
            "tickets__get_ticket"
        ],
        "echo is allowed by no policy"
    );
    let v = tool(&env, "orders__lookup_order", json!({ "order_id": 7 })).await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("shipped"),
        "{v}"
    );
    // The SDK's server speaks both eras; Warden's discovery finds the stateless one.
    let recs = env.evidence();
    let m = recs.last().unwrap().mcp.clone().unwrap();
    assert_eq!(m.revision, "2026-07-28", "{m:?}");
    let v = tool(&env, "orders__lookup_order", json!({ "order_id": 42 })).await;
    assert_eq!(v["error"]["data"]["code"], "pii_detected", "{v}");
    let v = tool(&env, "orders__lookup_order", json!({ "order_id": "x" })).await;
    assert_eq!(
        v["result"]["isError"], true,
        "the server's schema refuses it: {v}"
    );
    let v = tool(&env, "orders__echo", json!({ "text": "hi" })).await;
    assert_eq!(v["error"]["code"], -32602, "hidden: {v}");
}
