//! The egress forward-proxy mode: absolute-form requests and CONNECT, over raw TCP as an HTTP
//! client with `HTTP_PROXY` pointing at the sidecar would send them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod upstream;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upstream::{connector, Upstream};
use warden::codes::Code;
use warden::policy::model::Action;

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_requests_follow_the_connector_rules() {
    let env = start("egress").await;
    let w = env.weather.addr;
    let ok = raw(
        env.sidecar.agent_addr,
        &format!(
            "GET http://{w}/v1/forecast/lima HTTP/1.1\r\nHost: {w}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"city\":\"lima\""), "{ok}");
    assert_eq!(
        env.weather.last_request().unwrap().header("authorization"),
        Some("Bearer weather-token")
    );
    let bad_path = raw(
        env.sidecar.agent_addr,
        &format!("GET http://{w}/v1/secrets HTTP/1.1\r\nHost: {w}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    env.assert_refused(&Resp::parse(&bad_path), 403, "path_not_allowed")
        .await;
    let other_host = raw(
        env.sidecar.agent_addr,
        "GET http://127.0.0.1:9/anything HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
    )
    .await;
    env.assert_refused(&Resp::parse(&other_host), 404, "unknown_connector")
        .await;
    // The LLM upstream is not an egress target: only HTTP connectors are.
    let l = env.llm.addr;
    let llm = raw(
        env.sidecar.agent_addr,
        &format!("GET http://{l}/v1/models HTTP/1.1\r\nHost: {l}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    env.assert_refused(&Resp::parse(&llm), 404, "unknown_connector")
        .await;
    assert_eq!(env.weather.request_count(), 1);
    assert_eq!(env.evidence().len(), 4);
}

/// The contract bundle plus `weather-tls`, the weather mock's host as an `https://` connector:
/// CONNECT reaches only TLS connectors, and a tunnel carries bytes, so the mock's plain HTTP
/// inside it does for these tests.
async fn start_tls(name: &str) -> Env {
    start_with(
        name,
        |b| {
            let w = b
                .split("id: weather")
                .nth(1)
                .and_then(|r| r.split("base_url: \"").nth(1))
                .and_then(|r| r.split('"').next())
                .unwrap()
                .replace("http://", "https://");
            format!(
                "{b}{}",
                connector("weather-tls", &w, "p301-weather-tls", None)
            )
        },
        |c| c,
    )
    .await
}

/// A `CONNECT` tunnel through the sidecar to the weather mock, its 200 read.
async fn open_tunnel(env: &Env) -> TcpStream {
    let w = env.weather.addr;
    let mut s = TcpStream::connect(env.sidecar.agent_addr).await.unwrap();
    s.write_all(format!("CONNECT {w} HTTP/1.1\r\nHost: {w}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_only_to_allowed_hosts() {
    let env = start_tls("connect").await;
    let w = env.weather.addr;
    let mut s = open_tunnel(&env).await;
    // Speak HTTP to the weather mock through the tunnel.
    s.write_all(
        format!("GET /v1/forecast/kyiv HTTP/1.1\r\nHost: {w}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let body = String::from_utf8_lossy(&out);
    assert!(body.contains("\"city\":\"kyiv\""), "{body}");
    let refused = raw(
        env.sidecar.agent_addr,
        "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n",
    )
    .await;
    assert!(refused.contains("unknown_connector"), "{refused}");
    let ev = env.evidence();
    assert_eq!(ev.len(), 2, "each tunnel decision is recorded");
    assert_eq!(ev[0].connector.as_deref(), Some("weather-tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http1_share_the_agent_port() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let env = start("h2c").await;
    let h2: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "hi [[reply:2]]",
            false,
            None,
        ))))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("assistant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_closes_open_tunnels() {
    let env = start_tls("tunnel-halt").await;
    let w = env.weather.addr;
    let mut s = open_tunnel(&env).await;
    let mut buf = [0u8; 4096];
    // A keep-alive exchange through the tunnel: it stays open afterwards.
    s.write_all(format!("GET /v1/forecast/kyiv HTTP/1.1\r\nHost: {w}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("kyiv") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("an answer through the tunnel")
            .unwrap();
        assert!(n > 0, "the tunnel closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(env.set_mode("halted").await.status, 200);
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the kill switch must close the tunnel")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more passes once halted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_plain_http_connector_is_refused() {
    // Plain HTTP hosts are reached in absolute-form, judged request by request; a tunnel would
    // let any method and path through unseen.
    let up = Upstream::start().await;
    let url = up.url();
    let env = start_with(
        "connect-plain",
        move |b| format!("{b}{}", connector("rec", &url, "p310-rec", None)),
        |c| c,
    )
    .await;
    for target in [up.addr.to_string(), env.weather.addr.to_string()] {
        let r = raw(
            env.sidecar.agent_addr,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        )
        .await;
        env.assert_refused(&Resp::parse(&r), 403, "method_not_allowed")
            .await;
        assert!(
            r.contains("absolute-form"),
            "the refusal says what to do instead: {r}"
        );
        assert_eq!(
            env.evidence().last().unwrap().code,
            Some(Code::MethodNotAllowed)
        );
    }
    assert_eq!(up.connections(), 0, "no tunnel was opened to the upstream");
    assert_eq!(env.weather.request_count(), 0);
    assert_eq!(env.evidence().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_has_no_pii_fact_so_pii_policies_decide_by_failure_mode() {
    let (plain, closed, open) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let urls = [plain.url(), closed.url(), open.url()].map(|u| u.replace("http://", "https://"));
    let env = start_with(
        "connect-pii",
        move |b| {
            format!(
                "{b}{}{}{}",
                connector("tls", &urls[0], "p310-tls", None),
                connector("vault", &urls[1], "p320-vault", Some("fail_closed")),
                connector("vault-open", &urls[2], "p330-vault-open", Some("fail_open"))
            )
        },
        |c| c,
    )
    .await;
    let connect = |a: std::net::SocketAddr| format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n");
    // fail_closed: nothing inside a tunnel can be read, so it does not open.
    let r = raw(env.sidecar.agent_addr, &connect(closed.addr)).await;
    env.assert_refused(&Resp::parse(&r), 403, "fact_unavailable")
        .await;
    let rec = env.evidence().last().unwrap().clone();
    assert_eq!(
        (rec.action, rec.code),
        (Some(Action::Stop), Some(Code::FactUnavailable))
    );
    assert_eq!(closed.connections(), 0);
    // fail_open: it opens, with a WARN on its record.
    let mut s = TcpStream::connect(env.sidecar.agent_addr).await.unwrap();
    s.write_all(connect(open.addr).as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let rec = env.evidence().last().unwrap().clone();
    assert_eq!(
        (rec.action, rec.code),
        (Some(Action::Warn), Some(Code::FactUnavailable))
    );
    drop(s);
    // No PII policy: the tunnel opens and carries whatever the agent sends.
    let mut s = TcpStream::connect(env.sidecar.agent_addr).await.unwrap();
    s.write_all(connect(plain.addr).as_bytes()).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let a = plain.addr;
    s.write_all(
        format!("GET /inside HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).contains("\"ok\":true"));
    assert_eq!(plain.last().path, "/inside");
    let rec = env.evidence().last().unwrap().clone();
    assert_eq!((rec.action, rec.code), (Some(Action::Continue), None));
    assert_eq!(rec.connector.as_deref(), Some("tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_judged_and_forwarded_like_the_http_channel() {
    let up = Upstream::start().await;
    let url = up.url();
    let env = start_with(
        "egress-judged",
        move |b| {
            format!(
                "{b}{}",
                connector("rec", &url, "p310-rec", Some("fail_closed"))
            )
        },
        |c| c,
    )
    .await;
    let a = up.addr;
    let get = |target: &str, extra: &str| {
        format!("GET http://{a}{target} HTTP/1.1\r\nHost: {a}\r\n{extra}Connection: close\r\n\r\n")
    };
    // The path judged is the path sent: escapes stay data.
    let r = raw(
        env.sidecar.agent_addr,
        &get("/v1/a%3Fx=1%23f/new%20york?d=2", ""),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.last().target, "/v1/a%3Fx=1%23f/new%20york?d=2");
    // Overrides and proxy headers stay behind.
    let r = raw(
        env.sidecar.agent_addr,
        &get("/v1/x", "X-HTTP-Method-Override: DELETE\r\nX-Original-URL: /admin\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nAccept-Encoding: gzip\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = up.last();
    assert_eq!(seen.method, "GET");
    for h in [
        "x-http-method-override",
        "x-original-url",
        "x-forwarded-for",
        "forwarded",
    ] {
        assert_eq!(seen.header(h), None, "{h}");
    }
    assert_eq!(seen.header("accept-encoding").as_deref(), Some("identity"));
    let count = up.count();
    // PII in the query is seen; `..;` is refused; the connector's request cap holds here too.
    let r = raw(
        env.sidecar.agent_addr,
        &get("/v1/find?e=jane.doe%40example.com", ""),
    )
    .await;
    env.assert_refused(&Resp::parse(&r), 403, "pii_detected")
        .await;
    let r = raw(env.sidecar.agent_addr, &get("/v1/..;/admin", "")).await;
    env.assert_refused(&Resp::parse(&r), 403, "path_not_allowed")
        .await;
    let big = "x".repeat(300);
    let r = raw(
        env.sidecar.agent_addr,
        &format!("POST http://{a}/v1/send HTTP/1.1\r\nHost: {a}\r\nContent-Length: 300\r\nConnection: close\r\n\r\n{big}"),
    )
    .await;
    env.assert_refused(&Resp::parse(&r), 413, "body_too_large")
        .await;
    assert_eq!(
        up.count(),
        count,
        "none of the refused requests reached the upstream"
    );
    // A reply the detector cannot read is withheld here as on /http/.
    up.answer(
        200,
        &[("content-encoding", b"gzip")],
        b"\x1f\x8b...".to_vec(),
    );
    let r = raw(
        env.sidecar.agent_addr,
        &get("/v1/x", "Accept-Encoding: gzip\r\n"),
    )
    .await;
    env.assert_refused(&Resp::parse(&r), 403, "fact_unavailable")
        .await;
    let codes: Vec<_> = env.evidence().iter().map(|r| r.code).collect();
    assert_eq!(
        &codes[2..],
        &[
            Some(Code::PiiDetected),
            Some(Code::PathNotAllowed),
            Some(Code::BodyTooLarge),
            Some(Code::FactUnavailable)
        ]
    );
}
