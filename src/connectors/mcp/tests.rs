//! The upstream MCP client against the tickets mock over loopback, in every era it speaks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};

use super::client::{header_value, Exchange, McpError, Upstream, MODERN};
use crate::dev::mocks::{self, mcp::Speaks};
use crate::spine::state::UpstreamClient;

fn http() -> UpstreamClient {
    let connector = crate::sidecar::https_connector(rustls::RootCertStore::empty()).unwrap();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

fn exchange<'a>(client: &'a UpstreamClient, ms: u64) -> Exchange<'a> {
    Exchange {
        client,
        headers: &[],
        timeout: Duration::from_millis(ms),
        max_bytes: 1 << 20,
    }
}

async fn get_ticket(up: &Upstream, x: &Exchange<'_>, id: u64) -> Result<Value, McpError> {
    let a = up
        .request(
            x,
            "tools/call",
            json!({ "name": "get_ticket", "arguments": { "id": id } }),
        )
        .await?;
    Ok(a.message)
}

#[tokio::test]
async fn speaks_whichever_revision_the_server_does() {
    let client = http();
    for (speaks, want) in [
        (Speaks::Both, MODERN),
        (Speaks::Modern, MODERN),
        (Speaks::Legacy("2025-11-25"), "2025-11-25"),
        (Speaks::Legacy("2025-06-18"), "2025-06-18"),
    ] {
        let (mock, control) = mocks::spawn_mcp_speaking("127.0.0.1:0", speaks)
            .await
            .unwrap();
        let up = Upstream::new(&format!("{}/mcp", mock.base_url())).unwrap();
        let x = exchange(&client, 5_000);
        let a = up.request(&x, "tools/list", json!({})).await.unwrap();
        assert_eq!(a.revision, want, "{speaks:?}");
        assert_eq!(up.revision().as_deref(), Some(want));
        let names: Vec<&str> = a.message["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["search_tickets", "get_ticket"], "{speaks:?}");
        let t = get_ticket(&up, &x, 7).await.unwrap();
        assert_eq!(t["result"]["structuredContent"]["id"], 7, "{speaks:?}: {t}");
        // The session era opened one session and kept it; the stateless one opened none.
        let sessions = if want == MODERN { 0 } else { 1 };
        assert_eq!(control.open_sessions(), sessions, "{speaks:?}");
        // The last request carried what its revision asks for.
        let last = mock.last_request().unwrap();
        assert_eq!(last.header("mcp-protocol-version"), Some(want));
        if want == MODERN {
            assert_eq!(last.header("mcp-method"), Some("tools/call"));
            assert_eq!(last.header("mcp-name"), Some("get_ticket"));
            assert!(last.header("mcp-session-id").is_none());
        } else {
            assert!(last.header("mcp-session-id").is_some());
        }
    }
}

#[tokio::test]
async fn a_forgotten_session_is_opened_again() {
    let client = http();
    let (mock, control) = mocks::spawn_mcp_speaking("127.0.0.1:0", Speaks::Legacy("2025-11-25"))
        .await
        .unwrap();
    let up = Upstream::new(&format!("{}/mcp", mock.base_url())).unwrap();
    let x = exchange(&client, 5_000);
    get_ticket(&up, &x, 1).await.unwrap();
    control.forget_sessions();
    let t = get_ticket(&up, &x, 2).await.unwrap();
    assert_eq!(t["result"]["structuredContent"]["id"], 2, "{t}");
    assert_eq!(control.open_sessions(), 1);
}

#[tokio::test]
async fn sse_answers_time_outs_deaths_and_absence() {
    let client = http();
    let mock = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let up = Upstream::new(&format!("{}/mcp", mock.base_url())).unwrap();
    let search = |q: &str| json!({ "name": "search_tickets", "arguments": { "query": q } });
    let x = exchange(&client, 2_000);
    let a = up
        .request(&x, "tools/call", search("invoice [[sse]]"))
        .await
        .unwrap();
    assert_eq!(
        a.message["result"]["structuredContent"]["tickets"][0]["id"],
        2
    );
    // A hanging upstream never holds the caller past the time-out.
    let short = exchange(&client, 200);
    let started = std::time::Instant::now();
    let e = up
        .request(&short, "tools/call", search("x [[slow:5000]]"))
        .await
        .unwrap_err();
    assert_eq!(e, McpError::Timeout(200));
    assert!(started.elapsed() < Duration::from_millis(1_000));
    // One that dies mid-call is an error; the next call reaches it again.
    let e = up
        .request(&x, "tools/call", search("x [[die]]"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, McpError::Unreachable(_) | McpError::Died(_)),
        "{e:?}"
    );
    assert!(get_ticket(&up, &x, 3).await.is_ok());
    // An answer past the cap is refused whole.
    let tiny = Exchange {
        max_bytes: 64,
        ..exchange(&client, 2_000)
    };
    assert_eq!(
        get_ticket(&up, &tiny, 7).await.unwrap_err(),
        McpError::TooLarge(64)
    );
    // Nobody there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = Upstream::new(&format!("http://127.0.0.1:{port}/mcp")).unwrap();
    assert!(matches!(
        gone.request(&x, "tools/list", json!({})).await,
        Err(McpError::Unreachable(_))
    ));
}

#[test]
fn header_values_outside_plain_ascii_are_base64() {
    assert_eq!(header_value("get_ticket").unwrap(), "get_ticket");
    assert_eq!(header_value("tïcket").unwrap(), "=?base64?dMOvY2tldA==?=");
    assert_eq!(header_value("a b").unwrap(), "=?base64?YSBi?=");
    // A plain value that looks encoded is encoded, so it cannot be misread.
    assert!(header_value("=?base64?eA==?=")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("=?base64?PT9i"));
}

mod names {
    use super::super::{exposed, resolve, Resolved};
    use crate::policy::compile_str;

    const CONTRACT: &str = include_str!("../../../examples/contract/bundle.yaml");

    fn snap(extra: &str) -> crate::policy::Snapshot {
        compile_str("b.yaml", &format!("{CONTRACT}---\n{extra}")).unwrap()
    }

    fn r(c: &str, t: &str, u: &str) -> Option<Resolved> {
        Some(Resolved {
            connector: c.into(),
            tool: t.into(),
            upstream: u.into(),
        })
    }

    #[test]
    fn one_open_connector_keeps_the_servers_names() {
        let s = compile_str("b.yaml", CONTRACT).unwrap();
        assert_eq!(
            resolve(&s, "acme", "get_ticket"),
            r("tickets", "get_ticket", "get_ticket")
        );
        assert_eq!(
            exposed(&s, "acme", "tickets", "x"),
            Some(("x".into(), "x".into()))
        );
        assert_eq!(resolve(&s, "globex", "get_ticket"), None);
    }

    #[test]
    fn several_connectors_prefix_open_lists_and_closed_lists_use_their_ids() {
        let s = snap("apiVersion: warden/v1\nkind: Connector\nmetadata: { id: kb, tenant: acme }\nspec:\n  type: mcp\n  plane: support-tools\n  mcp: { url: \"http://127.0.0.1:9/mcp\" }\n---\napiVersion: warden/v1\nkind: McpTool\nmetadata: { id: find_article, tenant: acme }\nspec: { connector: kb, upstream_name: search }\n");
        // tickets is open: prefixed; kb is closed: by McpTool id, renamed upstream.
        assert_eq!(
            resolve(&s, "acme", "tickets__get_ticket"),
            r("tickets", "get_ticket", "get_ticket")
        );
        assert_eq!(resolve(&s, "acme", "get_ticket"), None);
        assert_eq!(
            resolve(&s, "acme", "find_article"),
            r("kb", "find_article", "search")
        );
        assert_eq!(
            resolve(&s, "acme", "kb__search"),
            None,
            "a closed list has no prefixed names"
        );
        assert_eq!(
            exposed(&s, "acme", "kb", "search"),
            Some(("find_article".into(), "find_article".into()))
        );
        assert_eq!(
            exposed(&s, "acme", "kb", "delete"),
            None,
            "not offered by the closed list"
        );
        assert_eq!(
            exposed(&s, "acme", "tickets", "get_ticket"),
            Some(("tickets__get_ticket".into(), "get_ticket".into()))
        );
        assert_eq!(resolve(&s, "acme", "tickets__"), None);
    }
}
