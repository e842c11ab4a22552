//! A sidecar with every channel's upstream for the gRPC tests: the LLM and weather mocks, the
//! MCP tickets mock, a seeded SQLite CRM, and a connector of another tenant (`globex-api`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use warden::dev::mocks;

use super::Env;

/// Another tenant's connector: reaching for it is `cross_tenant` in the record.
const GLOBEX: &str = "---\napiVersion: warden/v1\nkind: Connector\nmetadata: { id: globex-api, tenant: globex }\nspec:\n  type: http\n  plane: public-web\n  http: { base_url: \"http://127.0.0.1:9\", allow: [ { methods: [GET], paths: [\"/*\"] } ] }\n";

pub struct Grpc {
    pub env: Env,
    pub mcp: mocks::MockHandle,
}

pub async fn start(name: &str) -> Grpc {
    let mcp = mocks::spawn_mcp("127.0.0.1:0").await.unwrap();
    let url = format!("{}/mcp", mcp.base_url());
    let dir = super::tmpdir(&format!("{name}-crm"));
    let crm = warden::dev::crm::seed(&dir.join("crm.db")).await.unwrap();
    std::env::set_var("CRM_DATABASE_URL", &crm);
    let env = super::start_with(
        name,
        move |b| format!("{}{GLOBEX}", b.replace("http://127.0.0.1:18082/mcp", &url)),
        |c| c,
    )
    .await;
    Grpc { env, mcp }
}
