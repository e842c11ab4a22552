//! Api-key identity is proved, never claimed: `scope.api_keys` matches only a key whose secret
//! the agent presented as `Authorization: Bearer` and the sidecar verified; a header naming a
//! key is refused, and the agent's bearer never reaches an upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use warden::codes::Code;

const CI_SECRET: &str = "ci-secret-must-not-leak";

/// p100-llm scoped to the api key `ci-key` instead of the agent.
fn scoped_to_ci_key(b: String) -> String {
    let b = b.replace(
        "metadata: { id: p100-llm, tenant: acme }\nspec:\n  status: active\n  scope: { agents: [support-bot] }",
        "metadata: { id: p100-llm, tenant: acme }\nspec:\n  status: active\n  scope: { api_keys: [ci-key] }",
    );
    assert!(b.contains("scope: { api_keys: [ci-key] }"));
    b
}

fn declaring_ci_key(c: String) -> String {
    c.replace(
        "identity: { tenant: acme, project: support, agent: support-bot }",
        "identity:\n  tenant: acme\n  project: support\n  agent: support-bot\n  api_keys:\n    - { id: ci-key, key: \"env:WARDEN_IT_CI_KEY\" }\n    - { id: other-key, key: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\" }",
    )
}

async fn chat_as(env: &Env, run: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = http::Request::post(env.agent_url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-warden-run-id", run);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        b.body(Full::new(Bytes::from(chat_body(
            "gpt-4o-mini",
            "hello",
            false,
            None,
        ))))
        .unwrap(),
    )
    .await
}

fn record_of(env: &Env, run: &str) -> warden::evidence::Record {
    env.evidence()
        .into_iter()
        .find(|r| r.run_id.as_deref() == Some(run))
        .unwrap_or_else(|| panic!("no record for {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_bearer_unlocks_its_policy_and_nothing_else_does() {
    std::env::set_var("WARDEN_IT_CI_KEY", CI_SECRET);
    let env = start_with("api-key", scoped_to_ci_key, declaring_ci_key).await;
    let bearer = format!("Bearer {CI_SECRET}");

    let ok = chat_as(&env, "run-right", &[("authorization", &bearer)]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let up = env.llm.last_request().unwrap();
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str()),
        "the connector's key is injected"
    );
    assert!(
        !format!("{:?}", up.headers).contains(CI_SECRET),
        "the agent's bearer never reaches the upstream"
    );
    let rec = record_of(&env, "run-right");
    assert_eq!(rec.policy.as_deref(), Some("p100-llm"));
    assert_eq!(
        rec.request.as_ref().and_then(|r| r.api_key.as_deref()),
        Some("ci-key")
    );
    let seen = env.llm.request_count();

    // A bearer matching no declared key is refused, not taken as "no key".
    for (run, value) in [
        ("run-wrong", "Bearer not-the-secret".to_string()),
        ("run-id-as-secret", "Bearer ci-key".to_string()),
        ("run-basic", format!("Basic {CI_SECRET}")),
    ] {
        let r = chat_as(&env, run, &[("authorization", &value)]).await;
        let rec = env.assert_refused_for(run, &r, 401, "unauthorized").await;
        assert_eq!(rec.run_id.as_deref(), Some(run));
    }

    // No Authorization at all: no api key, so the key-scoped policy does not match.
    let r = chat_as(&env, "run-none", &[]).await;
    env.assert_refused(&r, 403, "no_allow_policy").await;

    // Naming the key is not identity, with or without the right bearer.
    let r = chat_as(&env, "run-named", &[("x-warden-api-key", "ci-key")]).await;
    env.assert_refused(&r, 400, "bad_request").await;
    assert!(r.text().contains("Authorization"), "{}", r.text());
    let r = chat_as(
        &env,
        "run-named-and-bearer",
        &[("x-warden-api-key", "ci-key"), ("authorization", &bearer)],
    )
    .await;
    env.assert_refused(&r, 400, "bad_request").await;

    assert_eq!(
        env.llm.request_count(),
        seen,
        "no refused call reached the upstream"
    );

    // The HTTP channel drops the agent's bearer too (the connector injects its own).
    let r = send(
        http::Request::get(env.agent_url("/http/weather/v1/forecast/paris"))
            .header("authorization", &bearer)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = env.weather.last_request().unwrap();
    assert_eq!(up.header("authorization"), Some("Bearer weather-token"));
    assert!(!format!("{:?}", up.headers).contains(CI_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_naming_a_key_does_not_unlock_a_key_scoped_policy() {
    // No keys declared: the agent's Authorization is ignored, and no call has an api key.
    let env = start_with("api-key-claimed", scoped_to_ci_key, |c| c).await;
    let r = chat_as(
        &env,
        "run-claimed",
        &[
            ("x-warden-api-key", "ci-key"),
            ("authorization", "Bearer sk-anything"),
        ],
    )
    .await;
    env.assert_refused(&r, 400, "bad_request").await;
    assert_eq!(env.llm.request_count(), 0);
    let rec = record_of(&env, "run-claimed");
    assert_eq!(rec.code, Some(Code::BadRequest));

    // The neighbour: any bearer (the openai SDK always sends one) is ignored, not refused.
    let r = chat_as(&env, "run-any", &[("authorization", "Bearer sk-anything")]).await;
    env.assert_refused(&r, 403, "no_allow_policy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_declared_key_stops_the_start() {
    let dir = tmpdir("api-key-missing");
    std::fs::write(dir.join("bundle.yaml"), "").unwrap();
    let cfg = declaring_ci_key(
        "identity: { tenant: acme, project: support, agent: support-bot }\n\
         listen: { agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\n\
         policy: { source: file, files: [bundle.yaml], cache_dir: cache }\n\
         evidence: { spool_dir: evidence, durability: sync }\n"
            .to_string(),
    )
    .replace("WARDEN_IT_CI_KEY", "WARDEN_IT_UNSET_KEY");
    std::fs::write(dir.join("sidecar.yaml"), cfg).unwrap();
    let cfg = warden::sidecar::config::SidecarConfig::load(&dir.join("sidecar.yaml")).unwrap();
    let err = warden::sidecar::start(cfg).await.err().expect("refused");
    assert!(
        err.to_string().contains("identity.api_keys `ci-key`"),
        "{err}"
    );
}

/// The agent's view, with the official `openai` SDK: its `api_key` is the bearer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_proves_its_key_with_api_key() {
    let py = common::python::python_with("openai");
    std::env::set_var("WARDEN_IT_CI_KEY", CI_SECRET);
    let env = start_with("api-key-sdk", scoped_to_ci_key, declaring_ci_key).await;
    let script = r#"
import sys, openai
base, secret = sys.argv[1] + "/v1", sys.argv[2]
ok = openai.OpenAI(base_url=base, api_key=secret, max_retries=0)
r = ok.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
print("allowed", r.choices[0].finish_reason)
bad = openai.OpenAI(base_url=base, api_key="sk-guessed", max_retries=0)
try:
    bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    print("wrong key passed")
except openai.AuthenticationError as e:
    print("refused", e.status_code, e.body["code"])
"#;
    let agent = env.agent_url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .args(["-c", script, &agent, CI_SECRET])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("allowed "), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("refused 401 unauthorized"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(env.llm.request_count(), 1);
}

/// Proxy mode: a client using the sidecar as its HTTP proxy proves its key with
/// `Proxy-Authorization`; its `Authorization` belongs to the origin and proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_proves_the_key_with_proxy_authorization() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    std::env::set_var("WARDEN_IT_CI_KEY", CI_SECRET);
    let env = start_with(
        "api-key-proxy",
        |b| b.replace("scope: { all_runs: true }", "scope: { api_keys: [ci-key] }"),
        declaring_ci_key,
    )
    .await;
    let origin = env.weather.base_url();
    let ask = |headers: String| {
        let addr = env.sidecar.agent_addr;
        let origin = origin.clone();
        async move {
            let host = origin.trim_start_matches("http://").to_string();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET {origin}/v1/forecast/paris HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{headers}\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let r = ask(format!("proxy-authorization: Bearer {CI_SECRET}\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let up = env.weather.last_request().unwrap();
    assert_eq!(up.header("proxy-authorization"), None);
    assert_eq!(up.header("authorization"), Some("Bearer weather-token"));
    let r = ask("proxy-authorization: Bearer guessed\r\n".into()).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("\"code\":\"unauthorized\""), "{r}");
    let r = ask(format!("authorization: Bearer {CI_SECRET}\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("no_allow_policy"), "{r}");
    assert_eq!(env.weather.request_count(), 1);
}
