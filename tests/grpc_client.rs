//! The official Python `grpcio` client (pinned in tests/clients/requirements.txt; its stubs made
//! by `grpcio-tools` from proto/warden/v1/mediation.proto as the test starts) as the agent on
//! `warden.v1.Mediation`: each RPC allowed and refused with the right status and code, a
//! streamed completion cut at the run budget after the allowed chunks, `Access` on each
//! channel, cross-tenant refused, deadlines — and each refusal's decision id in the evidence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use serde_json::Value;
use warden::front::grpc::{ErrorInfo, RpcStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_as_the_agent() {
    let py = common::python::python_with("grpc_tools");
    let g = common::grpc::start("grpcio").await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (stdout, rows) = run_client(
        py,
        "grpc_agent.py",
        vec![
            g.env.sidecar.agent_addr.to_string(),
            root.join("proto").display().to_string(),
            common::tmpdir("grpcio-stubs").display().to_string(),
        ],
    )
    .await;
    let row = |n: &str| {
        rows.get(n)
            .unwrap_or_else(|| panic!("no row {n}: {stdout}"))
    };
    let ok = |n: &str| {
        let r = row(n);
        assert_eq!(r["status"], "OK", "{n}: {r}");
        r.clone()
    };
    // A refusal: its status, the code in the trailers and in the details, and its record.
    let refused = |n: &str, status: &str, code: &str| {
        let r = row(n);
        assert_eq!(r["status"], status, "{n}: {r}");
        let t = &r["trailing"];
        assert_eq!(t["x-warden-code"], code, "{n}: {r}");
        let details = hex(t["grpc-status-details-bin"].as_str().unwrap());
        let s = RpcStatus::decode(&details[..]).unwrap();
        let info = ErrorInfo::decode(&s.details[0].value[..]).unwrap();
        assert_eq!(info.reason, code, "{n}");
        let decision = t["x-warden-decision-id"].as_str().unwrap().to_string();
        assert_eq!(info.metadata["decision_id"], decision);
        decision
    };
    let chat = ok("chat");
    assert_eq!(
        chat["reply"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        5
    );
    assert!(chat["initial"]["x-warden-decision-id"].is_string());
    let d = refused("chat_pii", "PERMISSION_DENIED", "pii_detected");
    assert_eq!(
        g.env.record_of(&d).await.code.map(|c| c.as_str()),
        Some("pii_detected")
    );

    // The stream allowed whole, then the one cut at the budget: the status after the chunks.
    let streams: Vec<Value> = stdout
        .lines()
        .filter(|l| l.contains("\"stream:py-budget\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    assert_eq!(streams.len(), 2, "{stdout}");
    assert_eq!(streams[0]["status"], "OK");
    assert_eq!(streams[0]["chunks"], 1024);
    assert_eq!(streams[1]["status"], "RESOURCE_EXHAUSTED", "{}", streams[1]);
    assert_eq!(streams[1]["trailing"]["x-warden-code"], "budget_exceeded");
    let n = streams[1]["chunks"].as_u64().unwrap();
    assert!((970..=976).contains(&n), "{n} chunks before the cut");

    let http = ok("http");
    assert_eq!(http["reply"]["status"], 200);
    refused("http_path", "PERMISSION_DENIED", "path_not_allowed");
    assert_eq!(ok("sql")["reply"]["rows"], "1", "{}", row("sql"));
    refused("sql_injection", "INVALID_ARGUMENT", "invalid_params");
    assert!(ok("mcp")["reply"]["result_json"]
        .as_str()
        .unwrap()
        .contains("content"));
    refused("mcp_pii", "PERMISSION_DENIED", "pii_detected");
    refused("mcp_hidden", "NOT_FOUND", "unknown_tool");
    for (n, ch) in [
        ("access_llm", "llm"),
        ("access_http", "http"),
        ("access_sql", "sql"),
        ("access_mcp", "mcp"),
    ] {
        assert_eq!(ok(n)["reply"]["channel"], ch, "{n}");
    }
    refused("access_wrong_plane", "INVALID_ARGUMENT", "invalid_params");
    for n in ["cross_tenant", "access_cross_tenant"] {
        let d = refused(n, "PERMISSION_DENIED", "cross_tenant");
        assert_eq!(
            g.env.record_of(&d).await.code.map(|c| c.as_str()),
            Some("cross_tenant"),
            "{n}"
        );
    }
    assert_eq!(row("deadline")["status"], "DEADLINE_EXCEEDED");
    assert_eq!(row("stream:py-deadline")["status"], "DEADLINE_EXCEEDED");
}

/// Run a Python client of tests/clients with `args`; its stdout, and its JSON lines by name.
async fn run_client(
    py: PathBuf,
    script: &str,
    args: Vec<String>,
) -> (String, HashMap<String, Value>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py).arg(script).args(args).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    (stdout, rows)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Envoy's ext_authz `Check` from a Python gRPC client: allowed and denied, each recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_asks_ext_authz() {
    let py = common::python::python_with("grpc_tools");
    let g = common::grpc::start("grpcio-ext-authz").await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (_, rows) = run_client(
        py,
        "ext_authz_agent.py",
        vec![
            g.env.sidecar.agent_addr.to_string(),
            root.join("tests/clients/proto").display().to_string(),
            common::tmpdir("grpcio-ext-authz-stubs")
                .display()
                .to_string(),
            g.env.weather.addr.to_string(),
        ],
    )
    .await;
    let allow = &rows["allow"];
    assert_eq!(
        (allow["code"].as_i64(), allow["http"].as_i64()),
        (Some(0), Some(200)),
        "{allow}"
    );
    let rec = g
        .env
        .record_of(allow["headers"]["x-warden-decision-id"].as_str().unwrap())
        .await;
    assert_eq!(rec.outcome, Some(warden::evidence::Outcome::Allowed));
    assert_eq!(rec.run_id.as_deref(), Some("py-ea-1"));
    for (n, grpc, http, code) in [
        ("deny_path", 7, 403, "path_not_allowed"),
        ("deny_method", 7, 403, "method_not_allowed"),
        ("unknown_host", 5, 404, "unknown_connector"),
    ] {
        let r = &rows[n];
        assert_eq!(
            (r["code"].as_i64(), r["http"].as_i64()),
            (Some(grpc), Some(http)),
            "{n}: {r}"
        );
        assert_eq!(r["body"]["error"]["code"], code, "{n}");
        let d = r["headers"]["x-warden-decision-id"].as_str().unwrap();
        assert_eq!(r["body"]["error"]["decision_id"], d, "{n}");
        assert_eq!(
            g.env.record_of(d).await.code.map(|c| c.as_str()),
            Some(code),
            "{n}"
        );
    }
}
