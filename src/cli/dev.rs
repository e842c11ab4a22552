//! `warden dev`: a first try in one command (README).
//!
//! Starts, in one process: the deterministic mock upstreams (LLM on 127.0.0.1:18080, weather on
//! 127.0.0.1:18081) and one sidecar (agent port 15001, admin port 15000, identity
//! acme/support/support-bot) serving `examples/contract/bundle.yaml` from `.warden/dev/`.
//! It generates an admin token, writes it to `.warden/dev/admin-token`, and prints the
//! endpoints and two curls: one allowed, one refused. `--smoke` runs those two calls itself and
//! exits (CI uses it to keep the quick start working).
//!
//! Not yet here (later work): the policy service on SQLite and the MCP "tickets" mock; the
//! sidecar reads the bundle file directly meanwhile.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::CliError;
use crate::mocks;
use crate::sidecar::{self, config::SidecarConfig};

/// The contract bundle, embedded so `warden dev` works from any directory.
pub const CONTRACT_BUNDLE: &str = include_str!("../../examples/contract/bundle.yaml");

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where dev keeps its files.
    #[arg(long, default_value = ".warden/dev")]
    pub dir: PathBuf,
    /// Make the allowed and the refused call, print the answers, and exit.
    #[arg(long)]
    pub smoke: bool,
}

const ALLOWED: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello [[reply:8]]"}]}"#;
const REFUSED: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write to jane.doe@example.com"}]}"#;

fn curl(body: &str) -> String {
    format!(
        "curl -s http://127.0.0.1:15001/v1/chat/completions -H 'content-type: application/json' -d '{body}'"
    )
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("warden dev: {e}"))
}

pub fn run(args: DevArgs) -> Result<ExitCode, CliError> {
    super::sidecar::init_tracing();
    std::fs::create_dir_all(&args.dir).map_err(fail)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token_path = args.dir.join("admin-token");
    std::fs::write(&token_path, format!("{token}\n")).map_err(fail)?;
    std::fs::write(args.dir.join("bundle.yaml"), CONTRACT_BUNDLE).map_err(fail)?;
    let cfg_text = "# written by `warden dev`\n\
        identity: { tenant: acme, project: support, agent: support-bot }\n\
        listen: { agent: \"127.0.0.1:15001\", admin: \"127.0.0.1:15000\" }\n\
        policy: { source: file, files: [bundle.yaml], cache_dir: cache }\n\
        evidence: { spool_dir: evidence, durability: sync }\n\
        admin: { token: \"file:admin-token\" }\n";
    let cfg_path = args.dir.join("sidecar.yaml");
    std::fs::write(&cfg_path, cfg_text).map_err(fail)?;
    // Credentials the bundle references get dev values when unset.
    for (k, v) in [
        ("OPENAI_API_KEY", "dev-openai-key"),
        ("WEATHER_AUTH", "Bearer dev-weather-token"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let cfg = SidecarConfig::load(&cfg_path).map_err(fail)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    rt.block_on(async move {
        let llm = mocks::spawn_llm("127.0.0.1:18080").await.map_err(fail)?;
        let weather = mocks::spawn_weather("127.0.0.1:18081").await.map_err(fail)?;
        let running = sidecar::start(cfg).await.map_err(fail)?;
        let snapshot = running
            .shared
            .snapshot()
            .map(|s| s.hash().to_string())
            .unwrap_or_else(|| "none (not ready)".into());
        println!("Warden dev is running.\n");
        println!("  agent endpoint   http://{}  (OpenAI-compatible /v1, /http/…)", running.agent_addr);
        println!("  admin endpoint   http://{}  (/healthz /readyz /metrics /ops/mode /runs/ID)", running.admin_addr);
        println!("  mock LLM         {}   mock weather {}", llm.base_url(), weather.base_url());
        println!("  snapshot         {snapshot}");
        println!("  admin token      {token}  (also in {})", token_path.display());
        println!("  evidence         {}", args.dir.join("evidence").display());
        println!("\nAllowed (p100-llm lets support-bot use gpt-4o-mini):\n  {}", curl(ALLOWED));
        println!("\nRefused (PII in the prompt, pii_detected):\n  {}", curl(REFUSED));
        println!(
            "\nKill switch:\n  curl -s http://127.0.0.1:15000/ops/mode -H 'authorization: Bearer {token}' -d '{{\"mode\":\"halted\",\"reason\":\"try it\"}}'"
        );
        if args.smoke {
            let ok = smoke(&running).await;
            drop(running);
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        println!("\nCtrl-C stops everything.");
        let _ = tokio::signal::ctrl_c().await;
        drop(running);
        Ok(ExitCode::SUCCESS)
    })
}

/// Make the two calls the banner shows; true if the first passed and the second was refused.
async fn smoke(running: &sidecar::Running) -> bool {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut statuses = Vec::new();
    for body in [ALLOWED, REFUSED] {
        let req = http::Request::post(format!("http://{}/v1/chat/completions", running.agent_addr))
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
        println!("\n$ {}\n{status} {text}", curl(body));
        statuses.push(status);
    }
    statuses == [200, 403]
}
