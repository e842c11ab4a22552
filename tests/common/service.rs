//! The policy service and sidecars that follow it, on loopback, for the control-plane tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::Channel;
use warden::dev::mocks::{self, MockHandle};
use warden::proto as pb;
use warden::service::{self, config::ServiceConfig};
use warden::sidecar::{self, config::SidecarConfig, Running};

use super::{send, tmpdir, Resp};

pub const TOKEN: &str = "test-admin-token";

/// A policy service on loopback.
pub struct Svc {
    pub running: service::Running,
    pub url: String,
    pub dir: PathBuf,
    pub store_url: String,
}

/// Start a service on `store_url` (`sqlite://…` or `postgres://…`), at `grpc` ("127.0.0.1:0"
/// picks a port).
pub async fn start_service(dir: &std::path::Path, store_url: &str, grpc: &str) -> Svc {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "listen: {{ grpc: \"{grpc}\", http: \"127.0.0.1:0\" }}\n\
         store: {{ url: \"{store_url}\" }}\n\
         auth: {{ admin_token: \"file:admin-token\" }}\n"
    );
    std::fs::write(dir.join("service.yaml"), text).unwrap();
    let cfg = ServiceConfig::load(&dir.join("service.yaml")).unwrap();
    // The port of a service just stopped may take a moment to be free again.
    let mut tries = 0;
    let running = loop {
        match service::start(cfg.clone()).await {
            Ok(r) => break r,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("service did not start: {e}"),
        }
    };
    Svc {
        url: format!("http://{}", running.grpc_addr),
        running,
        dir: dir.to_path_buf(),
        store_url: store_url.to_string(),
    }
}

pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn admin(url: &str) -> pb::policy_admin_client::PolicyAdminClient<Channel> {
    pb::policy_admin_client::PolicyAdminClient::new(channel(url).await)
        .max_encoding_message_size(64 << 20)
}

pub async fn ops(url: &str) -> pb::ops_client::OpsClient<Channel> {
    pb::ops_client::OpsClient::new(channel(url).await)
}

pub async fn apply(url: &str, name: &str, text: &str) -> pb::ApplyReply {
    admin(url)
        .await
        .apply(request(pb::ApplyRequest {
            name: name.into(),
            text: text.into(),
            reason: "test".into(),
            dry_run: false,
        }))
        .await
        .unwrap()
        .into_inner()
}

pub async fn set_mode(url: &str, mode: &str, tenant: &str) -> pb::Modes {
    ops(url)
        .await
        .set_mode(request(pb::SetModeRequest {
            mode: mode.into(),
            tenant: tenant.into(),
            reason: "test".into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

pub async fn lifecycle(url: &str, id: &str, status: &str) -> pb::PolicyInfo {
    admin(url)
        .await
        .set_lifecycle(request(pb::LifecycleRequest {
            id: id.into(),
            tenant: String::new(),
            status: status.into(),
            reason: "test".into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

/// The mocks the contract bundle names, and that bundle pointed at them.
pub struct Upstreams {
    pub llm: MockHandle,
    pub weather: MockHandle,
    pub bundle: String,
}

pub async fn upstreams() -> Upstreams {
    std::env::set_var("WARDEN_IT_OPENAI_KEY", super::UPSTREAM_KEY);
    std::env::set_var("WARDEN_IT_WEATHER_AUTH", "Bearer weather-token");
    let llm = mocks::spawn_llm("127.0.0.1:0").await.unwrap();
    let weather = mocks::spawn_weather("127.0.0.1:0").await.unwrap();
    let bundle = super::bundle(&llm, &weather, |b| b);
    Upstreams {
        llm,
        weather,
        bundle,
    }
}

/// A sidecar following a service.
pub struct Side {
    pub dir: PathBuf,
    pub running: Running,
}

/// The config of a sidecar following `service_url`, in `dir`, with `extra` YAML lines.
pub fn side_config(dir: &std::path::Path, service_url: &str, extra: &str) -> SidecarConfig {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "identity: {{ tenant: acme, project: support, agent: support-bot }}\n\
         listen: {{ agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\n\
         policy: {{ source: service, service: \"{service_url}\", cache_dir: cache, token: \"file:admin-token\", connect_timeout_ms: 1500 }}\n\
         admin: {{ token: \"file:admin-token\" }}\n{extra}"
    );
    let text = if extra.contains("evidence:") {
        text
    } else {
        format!("{text}evidence: {{ spool_dir: evidence, durability: os }}\n")
    };
    std::fs::write(dir.join("sidecar.yaml"), text).unwrap();
    SidecarConfig::load(&dir.join("sidecar.yaml")).unwrap()
}

pub async fn start_side(dir: &std::path::Path, service_url: &str, extra: &str) -> Side {
    let cfg = side_config(dir, service_url, extra);
    Side {
        dir: dir.to_path_buf(),
        running: sidecar::start(cfg).await.unwrap(),
    }
}

impl Side {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.agent_addr)
    }

    pub fn snapshot(&self) -> String {
        self.running
            .shared
            .rt
            .snapshot()
            .map(|s| s.hash().to_string())
            .unwrap_or_default()
    }

    pub fn mode(&self) -> String {
        self.running.shared.rt.mode_for("acme").as_str().to_string()
    }

    pub async fn weather(&self, run: &str) -> Resp {
        send(
            http::Request::get(self.url("/http/weather/v1/forecast/oslo"))
                .header("x-warden-run-id", run)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
    }

    pub async fn chat(&self, run: &str, content: &str) -> Resp {
        send(
            http::Request::post(self.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("x-warden-run-id", run)
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    super::chat_body("gpt-4o-mini", content, false, None),
                )))
                .unwrap(),
        )
        .await
    }

    /// Evidence records in the spool now.
    pub fn records(&self) -> Vec<warden::evidence::Record> {
        warden::evidence::read_all(&self.dir.join("evidence"))
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.record)
            .collect()
    }

    pub fn sidecar_id(&self) -> String {
        std::fs::read_to_string(self.dir.join("evidence/SIDECAR_ID"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// A fresh temp dir.
pub fn dir(name: &str) -> PathBuf {
    tmpdir(name)
}
