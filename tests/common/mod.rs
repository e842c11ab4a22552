//! Shared helpers for the integration tests: mocks, a sidecar on loopback, a small client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use warden::mocks::{self, MockHandle};
use warden::sidecar::{self, config::SidecarConfig, Running};

pub const AGENT_KEY: &str = "agent-secret-must-not-leak";
pub const UPSTREAM_KEY: &str = "upstream-key-123";

pub struct Env {
    pub dir: PathBuf,
    pub llm: MockHandle,
    pub weather: MockHandle,
    pub sidecar: Running,
    pub admin_token: String,
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "warden-it-{}-{name}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The contract bundle pointed at the mocks, with `edit` applied to its text.
pub fn bundle(llm: &MockHandle, weather: &MockHandle, edit: impl Fn(String) -> String) -> String {
    let text = include_str!("../../examples/contract/bundle.yaml")
        .replace(
            "http://127.0.0.1:18080/v1",
            &format!("{}/v1", llm.base_url()),
        )
        .replace("http://127.0.0.1:18081", &weather.base_url())
        .replace("env:OPENAI_API_KEY", "env:WARDEN_IT_OPENAI_KEY")
        .replace("env:WEATHER_AUTH", "env:WARDEN_IT_WEATHER_AUTH");
    edit(text)
}

pub async fn start_with(
    name: &str,
    edit: impl Fn(String) -> String,
    cfg_edit: impl Fn(String) -> String,
) -> Env {
    std::env::set_var("WARDEN_IT_OPENAI_KEY", UPSTREAM_KEY);
    std::env::set_var("WARDEN_IT_WEATHER_AUTH", "Bearer weather-token");
    let dir = tmpdir(name);
    let llm = mocks::spawn_llm("127.0.0.1:0").await.unwrap();
    let weather = mocks::spawn_weather("127.0.0.1:0").await.unwrap();
    std::fs::write(dir.join("bundle.yaml"), bundle(&llm, &weather, edit)).unwrap();
    std::fs::write(dir.join("admin-token"), "test-admin-token\n").unwrap();
    let cfg_text = cfg_edit(
        "identity: { tenant: acme, project: support, agent: support-bot }\n\
         listen: { agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\n\
         policy: { source: file, files: [bundle.yaml], cache_dir: cache }\n\
         evidence: { spool_dir: evidence, durability: sync }\n\
         admin: { token: \"file:admin-token\" }\n"
            .to_string(),
    );
    std::fs::write(dir.join("sidecar.yaml"), &cfg_text).unwrap();
    let cfg = SidecarConfig::load(&dir.join("sidecar.yaml")).unwrap();
    let sidecar = sidecar::start(cfg).await.unwrap();
    Env {
        dir,
        llm,
        weather,
        sidecar,
        admin_token: "test-admin-token".into(),
    }
}

pub async fn start(name: &str) -> Env {
    start_with(name, |b| b, |c| c).await
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(req: http::Request<Full<Bytes>>) -> Resp {
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

pub fn chat_body(model: &str, content: &str, stream: bool, max_tokens: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": content }],
        "stream": stream,
    });
    if let Some(m) = max_tokens {
        v["max_tokens"] = m.into();
    }
    v.to_string()
}

impl Env {
    pub fn agent_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar.agent_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar.admin_addr)
    }

    pub async fn chat(&self, run: Option<&str>, body: String) -> Resp {
        let mut b = http::Request::post(self.agent_url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {AGENT_KEY}"));
        if let Some(r) = run {
            b = b.header("x-warden-run-id", r);
        }
        send(b.body(Full::new(Bytes::from(body))).unwrap()).await
    }

    pub async fn admin_post(
        &self,
        path: &str,
        body: serde_json::Value,
        token: Option<&str>,
    ) -> Resp {
        let mut b =
            http::Request::post(self.admin_url(path)).header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        send(
            http::Request::get(self.admin_url(path))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }

    pub async fn set_mode(&self, mode: &str) -> Resp {
        self.admin_post(
            "/ops/mode",
            serde_json::json!({ "mode": mode, "reason": "test" }),
            Some(&self.admin_token),
        )
        .await
    }

    /// Evidence records in the spool, after verifying its chain.
    pub fn evidence(&self) -> Vec<warden::evidence::Record> {
        let dir = self.dir.join("evidence");
        warden::evidence::verify(&dir).unwrap();
        warden::evidence::read_all(&dir)
            .unwrap()
            .into_iter()
            .map(|r| r.record)
            .collect()
    }
}

/// Read a streamed response event by event (`data:` payloads), stopping after `limit` events.
pub async fn stream_events(resp: hyper::Response<hyper::body::Incoming>) -> Vec<String> {
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(d) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&d));
            while let Some(i) = buf.find("\n\n") {
                let ev: String = buf.drain(..i + 2).collect();
                if let Some(data) = ev.trim().strip_prefix("data:") {
                    events.push(data.trim().to_string());
                }
            }
        }
    }
    events
}

/// The text content of streamed chunk events.
pub fn stream_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .collect()
}
