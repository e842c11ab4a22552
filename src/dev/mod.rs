//! `warden dev`: a first try in one command (README), and the mock upstreams it runs.
//!
//! Starts, in one process: the deterministic [`mocks`] (an OpenAI-compatible LLM, a weather
//! API, the MCP tickets server), a seeded SQLite CRM ([`crm`], unless `CRM_DATABASE_URL` names a
//! database), the policy service on SQLite (`<dir>/warden.db`) with the contract bundle applied
//! — its upstream URLs pointed at the mocks' real addresses — and one sidecar (identity
//! acme/support/support-bot) that follows the service. Every
//! address can be chosen (`:0` picks a free port), so `dev` runs beside the tests or a second
//! `dev`. It generates an admin token, writes it to `<dir>/admin-token`, and prints the bound
//! endpoints and four curls: a chat allowed, one refused, a SQL template, the MCP tool list.
//! `--smoke` makes those calls itself and exits (the tests use it to keep the quick start
//! working).
//!
//! The store persists across runs: lifecycle changes and modes set with `warden policy …` and
//! `warden ops …` are still there next time (the bundle is applied again; unchanged documents
//! stay as they are).
//!
//! This room ships in the binary, but nothing on the request path imports it.

pub mod crm;
pub mod mocks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::sidecar::{self, config::SidecarConfig};

/// The contract bundle, embedded so `warden dev` works from any directory.
pub const CONTRACT_BUNDLE: &str = include_str!("../../examples/contract/bundle.yaml");

/// The upstream addresses the contract bundle names, which `dev` replaces by the mocks' own.
const BUNDLE_LLM: &str = "127.0.0.1:18080";
const BUNDLE_WEATHER: &str = "127.0.0.1:18081";
const BUNDLE_MCP: &str = "127.0.0.1:18082";

/// Where `warden dev` listens and keeps its files.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub dir: PathBuf,
    pub agent: String,
    pub admin: String,
    pub mock_llm: String,
    pub mock_weather: String,
    pub mock_mcp: String,
    /// The policy service's gRPC and HTTP addresses.
    pub service: String,
    pub service_http: String,
    pub smoke: bool,
}

/// Why `warden dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("warden dev: {0}")]
    Setup(String),
    #[error(
        "warden dev: cannot listen on {addr} ({what}): {reason}; pick other addresses with \
         --agent, --admin, --service, --service-http, --mock-llm, --mock-weather and --mock-mcp \
         (port 0 picks a free one)"
    )]
    Bind {
        what: &'static str,
        addr: String,
        reason: String,
    },
}

fn setup(e: impl std::fmt::Display) -> DevError {
    DevError::Setup(e.to_string())
}

fn bind_error(what: &'static str, addr: &str, e: &std::io::Error) -> DevError {
    DevError::Bind {
        what,
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

const ALLOWED: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello [[reply:8]]"}]}"#;
const REFUSED: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write to jane.doe@example.com"}]}"#;
const CHAT: &str = "/v1/chat/completions";
const SQL: &str = "/sql/customer_by_id";
const SQL_BODY: &str = r#"{"id":1}"#;
const MCP: &str = "/mcp";
const MCP_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn curl(agent: SocketAddr, path: &str, body: &str) -> String {
    let revision = if path == MCP {
        " -H 'mcp-protocol-version: 2025-11-25'"
    } else {
        ""
    };
    format!(
        "curl -s http://{agent}{path} -H 'content-type: application/json'{revision} -d '{body}'"
    )
}

/// The contract bundle with its LLM, weather and MCP upstreams at `llm`, `weather` and `mcp`.
pub fn bundle_for(llm: SocketAddr, weather: SocketAddr, mcp: SocketAddr) -> String {
    CONTRACT_BUNDLE
        .replace(BUNDLE_LLM, &llm.to_string())
        .replace(BUNDLE_WEATHER, &weather.to_string())
        .replace(BUNDLE_MCP, &mcp.to_string())
}

/// The sidecar configuration `dev` writes (YAML; quoted so any address form survives).
fn config_text(opts: &DevOptions, service: SocketAddr) -> String {
    format!(
        "# written by `warden dev`\n\
         identity: {{ tenant: acme, project: support, agent: support-bot }}\n\
         listen: {{ agent: {:?}, admin: {:?} }}\n\
         policy: {{ source: service, service: \"http://{service}\", cache_dir: cache, token: \"file:admin-token\" }}\n\
         evidence: {{ spool_dir: evidence, durability: sync }}\n\
         admin: {{ token: \"file:admin-token\" }}\n",
        opts.agent, opts.admin
    )
}

/// The policy service configuration `dev` writes.
fn service_text(opts: &DevOptions) -> String {
    format!(
        "# written by `warden dev`\n\
         listen: {{ grpc: {:?}, http: {:?} }}\n\
         store: {{ url: \"sqlite://warden.db\" }}\n\
         auth: {{ admin_token: \"file:admin-token\" }}\n\
         replica: dev\n",
        opts.service, opts.service_http
    )
}

/// Apply `text` to the service at `addr` as the dev user would with `warden policy apply`.
async fn apply(addr: SocketAddr, token: &str, text: &str) -> Result<String, DevError> {
    use crate::proto as pb;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(setup)?
        .connect()
        .await
        .map_err(|e| setup(format!("cannot reach the policy service just started: {e}")))?;
    let mut req = tonic::Request::new(pb::ApplyRequest {
        name: "bundle.yaml".into(),
        text: text.into(),
        reason: "warden dev: the contract bundle".into(),
        dry_run: false,
    });
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    let reply = pb::policy_admin_client::PolicyAdminClient::new(channel)
        .apply(req)
        .await
        .map_err(|e| setup(format!("applying the contract bundle: {}", e.message())))?;
    Ok(reply.into_inner().snapshot)
}

fn write(path: &Path, text: &str) -> Result<(), DevError> {
    std::fs::write(path, text).map_err(|e| setup(format!("cannot write {}: {e}", path.display())))
}

/// Run `warden dev` until Ctrl-C (or, with `smoke`, until the two calls are made).
pub fn run(opts: DevOptions) -> Result<ExitCode, DevError> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| setup(format!("cannot create {}: {e}", opts.dir.display())))?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token_path = opts.dir.join("admin-token");
    write(&token_path, &format!("{token}\n"))?;
    // Credentials the bundle references get dev values when unset.
    for (k, v) in [
        ("OPENAI_API_KEY", "dev-openai-key"),
        ("WEATHER_AUTH", "Bearer dev-weather-token"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(setup)?;
    rt.block_on(async move {
        let crm = if std::env::var_os("CRM_DATABASE_URL").is_none() {
            let dir = std::path::absolute(&opts.dir).map_err(setup)?;
            let url = crm::seed(&dir.join("crm.db")).await.map_err(setup)?;
            std::env::set_var("CRM_DATABASE_URL", &url);
            format!("{url} (seeded: {} customers)", crm::CUSTOMERS.len())
        } else {
            "CRM_DATABASE_URL (yours)".to_string()
        };
        let llm = mocks::spawn_llm(&opts.mock_llm)
            .await
            .map_err(|e| bind_error("mock LLM", &opts.mock_llm, &e))?;
        let weather = mocks::spawn_weather(&opts.mock_weather)
            .await
            .map_err(|e| bind_error("mock weather", &opts.mock_weather, &e))?;
        let mcp = mocks::spawn_mcp(&opts.mock_mcp)
            .await
            .map_err(|e| bind_error("mock MCP", &opts.mock_mcp, &e))?;
        let bundle = bundle_for(llm.addr, weather.addr, mcp.addr);
        write(&opts.dir.join("bundle.yaml"), &bundle)?;
        let svc_path = opts.dir.join("policy-service.yaml");
        write(&svc_path, &service_text(&opts))?;
        let svc_cfg = crate::service::config::ServiceConfig::load(&svc_path).map_err(setup)?;
        let service = crate::service::start(svc_cfg).await.map_err(|e| match e {
            crate::service::ServiceError::Listen {
                which,
                addr,
                source,
            } => bind_error(
                if which == "gRPC" {
                    "policy service gRPC"
                } else {
                    "policy service HTTP"
                },
                &addr,
                &source,
            ),
            e => setup(e),
        })?;
        apply(service.grpc_addr, &token, &bundle).await?;
        let cfg_path = opts.dir.join("sidecar.yaml");
        write(&cfg_path, &config_text(&opts, service.grpc_addr))?;
        let cfg = SidecarConfig::load(&cfg_path).map_err(setup)?;
        let running = sidecar::start(cfg).await.map_err(|e| match e {
            sidecar::SidecarError::Listen {
                which,
                addr,
                source,
            } => bind_error(
                if which == "agent" {
                    "agent port"
                } else {
                    "admin port"
                },
                &addr,
                &source,
            ),
            e => setup(e),
        })?;
        banner(
            &opts,
            &running,
            &service,
            &[&llm, &weather, &mcp],
            &crm,
            &token,
            &token_path,
        );
        if opts.smoke {
            let ok = smoke(running.agent_addr).await;
            drop(running);
            drop(service);
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        println!("\nCtrl-C stops everything.");
        let _ = tokio::signal::ctrl_c().await;
        drop(running);
        drop(service);
        Ok(ExitCode::SUCCESS)
    })
}

fn banner(
    opts: &DevOptions,
    running: &sidecar::Running,
    service: &crate::service::Running,
    mocks: &[&mocks::MockHandle; 3],
    crm: &str,
    token: &str,
    token_path: &Path,
) {
    let snapshot = running
        .shared
        .rt
        .snapshot()
        .map(|s| s.hash().to_string())
        .unwrap_or_else(|| "none (not ready)".into());
    let (agent, admin) = (running.agent_addr, running.admin_addr);
    println!("Warden dev is running.\n");
    println!("  agent endpoint   http://{agent}  (OpenAI-compatible /v1, /http/…, /sql/…, /mcp)");
    println!("  admin endpoint   http://{admin}  (/healthz /readyz /metrics /ops/mode /runs/ID)");
    println!(
        "  policy service   http://{}  (gRPC; HTTP /healthz /readyz /metrics on http://{})  store {}",
        service.grpc_addr,
        service.http_addr,
        opts.dir.join("warden.db").display()
    );
    let modes = running
        .shared
        .rt
        .modes
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    if modes.global != crate::decide::Mode::Enforcing || !modes.tenants.is_empty() {
        println!("  MODES            global {} {:?} (kept from an earlier run: `warden ops mode enforcing --reason …`)", modes.global.as_str(), modes.tenants);
    }
    let [llm, weather, mcp] = mocks;
    println!(
        "  mock LLM         {}   mock weather {}   mock MCP {}/mcp",
        llm.base_url(),
        weather.base_url(),
        mcp.base_url()
    );
    println!("  CRM database     {crm}");
    println!("  snapshot         {snapshot}");
    println!(
        "  admin token      {token}  (also in {})",
        token_path.display()
    );
    println!("  evidence         {}", opts.dir.join("evidence").display());
    println!(
        "\nAllowed (p100-llm lets support-bot use gpt-4o-mini):\n  {}",
        curl(agent, CHAT, ALLOWED)
    );
    println!(
        "\nRefused (PII in the prompt, pii_detected):\n  {}",
        curl(agent, CHAT, REFUSED)
    );
    println!(
        "\nA SQL template (p200-crm-read lets support-bot run customer_by_id):\n  {}",
        curl(agent, SQL, SQL_BODY)
    );
    println!(
        "\nMCP tools (p400-tickets shows search_tickets and get_ticket, not delete_ticket):\n  {}",
        curl(agent, MCP, MCP_LIST)
    );
    let server = if service.grpc_addr.to_string() == "127.0.0.1:15010"
        && opts.dir == Path::new(".warden/dev")
    {
        String::new()
    } else {
        format!(
            " --server http://{} --token-file {}",
            service.grpc_addr,
            token_path.display()
        )
    };
    println!(
        "\nKill switch, fleet-wide through the policy service (release with `release`):\n  warden ops kill-switch engage --reason test{server}"
    );
    println!(
        "\nOr one sidecar's admin port:\n  curl -s http://{admin}/ops/mode -H 'authorization: Bearer {token}' -d '{{\"mode\":\"halted\",\"reason\":\"try it\"}}'"
    );
}

/// Make the four calls the banner shows; true if the chat, the template and the tool list
/// passed and the refused chat was refused.
async fn smoke(agent: SocketAddr) -> bool {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut statuses = Vec::new();
    for (path, body) in [
        (CHAT, ALLOWED),
        (CHAT, REFUSED),
        (SQL, SQL_BODY),
        (MCP, MCP_LIST),
    ] {
        let req = http::Request::post(format!("http://{agent}{path}"))
            .header("mcp-protocol-version", "2025-11-25")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)));
        let Ok(req) = req else { return false };
        let Ok(resp) = client.request(req).await else {
            return false;
        };
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default();
        println!("\n$ {}\n{status} {text}", curl(agent, path, body));
        statuses.push(status);
    }
    statuses == [200, 403, 200, 200]
}

#[cfg(test)]
mod dev_tests {
    use super::*;

    #[test]
    fn the_bundle_points_at_the_mocks_it_is_given() {
        let llm: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let weather: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let mcp: SocketAddr = "127.0.0.1:40003".parse().unwrap();
        let text = bundle_for(llm, weather, mcp);
        assert!(text.contains("http://127.0.0.1:40001/v1"));
        assert!(text.contains("http://127.0.0.1:40002"));
        assert!(text.contains("http://127.0.0.1:40003/mcp"));
        for fixed in [BUNDLE_LLM, BUNDLE_WEATHER, BUNDLE_MCP] {
            assert!(
                !text.contains(fixed) && CONTRACT_BUNDLE.contains(fixed),
                "{fixed}"
            );
        }
    }
}
