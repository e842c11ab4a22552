//! Shared helpers for the integration tests: mocks, a sidecar on loopback, a small client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod grpc;
pub mod mcp;
pub mod pg;
pub mod python;
pub mod service;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use warden::dev::mocks::{self, MockHandle};
use warden::evidence::record::{Basis, Kind, Outcome, Record};
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
    /// A whole HTTP/1.1 reply as read off a socket (one reply, `content-length` framed).
    pub fn parse(reply: &str) -> Resp {
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not a complete reply: {reply:?}"));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {reply:?}"));
        let mut headers = http::HeaderMap::new();
        for l in lines {
            let (k, v) = l.split_once(':').unwrap();
            headers.append(
                http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                v.trim().parse().unwrap(),
            );
        }
        Resp {
            status,
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

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

    /// An admin request with exactly this `Authorization` header value (or none).
    pub async fn admin_call(
        &self,
        method: http::Method,
        path: &str,
        body: serde_json::Value,
        authorization: Option<&str>,
    ) -> Resp {
        let mut b = http::Request::builder()
            .method(method)
            .uri(self.admin_url(path))
            .header("content-type", "application/json");
        if let Some(a) = authorization {
            b = b.header("authorization", a);
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

    /// Evidence records in the spool as they are now (no chain check: for polling).
    pub fn records(&self) -> Vec<Record> {
        warden::evidence::read_all(&self.dir.join("evidence"))
            .unwrap()
            .into_iter()
            .map(|r| r.record)
            .collect()
    }

    /// The one call record with `decision_id`, once it is sealed (waits up to [`SEALED`]).
    pub async fn record_of(&self, decision_id: &str) -> Record {
        let mut found = Vec::new();
        wait_until(
            &format!("the record of decision {decision_id}"),
            SEALED,
            || {
                found = self
                    .records()
                    .into_iter()
                    .filter(|r| r.kind == Kind::Call)
                    .filter(|r| r.decision_id.as_deref() == Some(decision_id))
                    .collect();
                !found.is_empty()
            },
        )
        .await;
        assert_eq!(
            found.len(),
            1,
            "one record per decision id {decision_id}: {found:#?}"
        );
        found.remove(0)
    }

    /// Assert that `r` is a refusal with `status` and machine-readable `code`, and that the
    /// call's own record (found by the decision id the response carries) is sealed with that
    /// code and the outcome and action the refusal implies. Returns the record.
    pub async fn assert_refused(&self, r: &Resp, status: u16, code: &str) -> Record {
        self.assert_refused_for("", r, status, code).await
    }

    /// [`Env::assert_refused`], naming `what` was sent when it fails.
    pub async fn assert_refused_for(
        &self,
        what: impl std::fmt::Display,
        r: &Resp,
        status: u16,
        code: &str,
    ) -> Record {
        let what = what.to_string();
        let what = if what.is_empty() {
            what
        } else {
            format!("{what}: ")
        };
        let decision = refusal_problem(r.status, &|h| r.header(h), &r.body, status, code)
            .unwrap_or_else(|e| panic!("{what}{e}"));
        let rec = self.record_of(&decision).await;
        if let Err(e) = record_problem(&rec, code, &|h| r.header(h)) {
            panic!("{what}{e}: {rec:#?}");
        }
        // The spool's chain still verifies with the record in it.
        warden::evidence::verify(&self.dir.join("evidence")).unwrap();
        rec
    }

    /// Decide a call record again, on the request, usage and mode it holds, by the snapshot it
    /// names (what `warden evidence replay` does): the decision as it was taken, with what the
    /// record does not keep (`downgraded_from`).
    pub fn decide_again(&self, rec: &Record) -> warden::decide::Decision {
        let store = warden::policy::store::SnapshotStore::new(self.dir.join("cache"));
        let snap = store
            .load(
                rec.snapshot
                    .as_deref()
                    .expect("the record names its snapshot"),
            )
            .unwrap();
        warden::decide::decide(
            &snap,
            rec.request.as_ref().expect("the record holds its request"),
            &rec.usage.clone().unwrap_or_default(),
            rec.mode,
            rec.at_ms,
            rec.decision_id.as_deref().unwrap_or(""),
        )
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

/// Read a streamed response event by event (`data:` payloads) to its end.
pub async fn stream_events(resp: hyper::Response<hyper::body::Incoming>) -> Vec<String> {
    read_events(resp, Arc::default()).await
}

async fn read_events(
    resp: hyper::Response<hyper::body::Incoming>,
    seen: Arc<AtomicUsize>,
) -> Vec<String> {
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
                    seen.fetch_add(1, Ordering::SeqCst);
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

/// How long a test waits for a call's record to be sealed.
pub const SEALED: Duration = Duration::from_secs(5);

/// Poll `cond` (every 5 ms) until it holds; panic naming `what` if it does not within
/// `within`. For synchronisation on a condition, never a fixed sleep.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`wait_until`] for a condition that needs to await (a request, say).
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t = Instant::now();
    while !cond().await {
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What is wrong with a response that should be a refusal with `status` and `code`: the
/// status, the error body (`type: warden_error`, the code) and the decision id, which the
/// header and the body must both carry and agree on. `Ok` is that decision id.
pub fn refusal_problem(
    got: u16,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    status: u16,
    code: &str,
) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    if got != status {
        return Err(format!("status {got} (want {status} {code}): {text}"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body not JSON ({e}): {text}"))?;
    let err = &v["error"];
    if err["type"] != "warden_error" || err["code"] != code {
        return Err(format!("error {err} (want code {code})"));
    }
    let decision = header("x-warden-decision-id").ok_or("no x-warden-decision-id header")?;
    if err["decision_id"] != decision.as_str() {
        return Err(format!(
            "header decision id {decision} is not the body's {}",
            err["decision_id"]
        ));
    }
    Ok(decision)
}

/// What is wrong with the record of a refusal of `code`: its code, its outcome (cut when the
/// record says where it was cut, errored for upstream and internal failures, else refused),
/// its action as its basis implies (a refusing decision blocks; a refusal before any decision
/// has none; an ending after an allowing decision keeps that decision's), and its ids, which
/// must be the response's.
pub fn record_problem(
    rec: &Record,
    code: &str,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if rec.code.map(|c| c.as_str()) != Some(code) {
        return Err(format!("record code {:?} (want {code})", rec.code));
    }
    // The test's own table, not the sidecar's `Outcome::of_refusal`.
    let outcome = if rec.cut.is_some() {
        Outcome::Cut
    } else if ["internal_error", "upstream_error", "upstream_timeout"].contains(&code) {
        Outcome::Errored
    } else {
        Outcome::Refused
    };
    if rec.outcome != Some(outcome) {
        return Err(format!(
            "record outcome {:?} (want {outcome:?})",
            rec.outcome
        ));
    }
    let action_fits = match rec.basis {
        Some(Basis::Decision) => rec.action.is_some_and(|a| a.blocks()),
        Some(Basis::BeforeDecision) => rec.action.is_none(),
        Some(Basis::AfterDecision) => rec.action.is_some(),
        Some(Basis::Local) | None => false,
    };
    if !action_fits {
        return Err(format!(
            "record action {:?} does not fit its basis {:?}",
            rec.action, rec.basis
        ));
    }
    for (name, id) in [
        ("x-warden-evidence-id", Some(&rec.evidence_id)),
        ("x-warden-run-id", rec.run_id.as_ref()),
    ] {
        if header(name).as_ref() != id {
            return Err(format!(
                "{name} {:?} is not the record's {id:?}",
                header(name)
            ));
        }
    }
    Ok(())
}

/// A streamed response read on a task of its own, counting its events as they arrive, so a
/// test can act mid-stream once the agent has received some.
pub struct Reader {
    pub seen: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<Vec<String>>,
}

impl Reader {
    pub fn spawn(resp: hyper::Response<hyper::body::Incoming>) -> Reader {
        let seen = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(read_events(resp, seen.clone()));
        Reader { seen, task }
    }

    /// Wait until the agent has received at least `n` events.
    pub async fn received(&self, n: usize) {
        let seen = self.seen.clone();
        wait_until(
            &format!("{n} streamed events"),
            Duration::from_secs(10),
            || seen.load(Ordering::SeqCst) >= n,
        )
        .await;
    }
}
