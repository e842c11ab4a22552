//! The egress forward-proxy mode: absolute-form requests and CONNECT, over raw TCP as an HTTP
//! client with `HTTP_PROXY` pointing at the sidecar would send them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    assert!(
        bad_path.starts_with("HTTP/1.1 403") && bad_path.contains("path_not_allowed"),
        "{bad_path}"
    );
    let other_host = raw(
        env.sidecar.agent_addr,
        "GET http://127.0.0.1:9/anything HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        other_host.starts_with("HTTP/1.1 404") && other_host.contains("unknown_connector"),
        "{other_host}"
    );
    // The LLM upstream is not an egress target: only HTTP connectors are.
    let l = env.llm.addr;
    let llm = raw(
        env.sidecar.agent_addr,
        &format!("GET http://{l}/v1/models HTTP/1.1\r\nHost: {l}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(llm.contains("unknown_connector"), "{llm}");
    assert_eq!(env.weather.request_count(), 1);
    assert_eq!(env.evidence().len(), 4);
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
    let env = start("connect").await;
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
    assert_eq!(ev[0].connector.as_deref(), Some("weather"));
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
    let env = start("tunnel-halt").await;
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
