//! The spine's layers without sockets: each layer is built over a small runtime state (the
//! contract bundle, a spool in a temporary directory) and a fake next service that records
//! whether it was reached and what it was handed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use tower::{Layer, ServiceExt};

use super::state::alerts::Alerts;
use super::state::metrics::Metrics;
use super::state::runs::Runs;
use super::state::{Credentials, Modes, Runtime};
use super::*;
use crate::codes::Code;
use crate::decide::{PiiFact, SecretFact};
use crate::evidence::{Durability, SpoolConfig};
use crate::policy::model::{Action, PiiKind};

const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");

struct Fixture {
    rt: Arc<Runtime>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    /// A runtime on the contract bundle (`None`: no verified snapshot yet), with an empty
    /// spool of its own.
    fn new(name: &str, snapshot: bool) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "warden-spine-{}-{name}-{}",
            std::process::id(),
            crate::ids::v4()
        ));
        let (spool, _) =
            crate::evidence::Spool::open(SpoolConfig::new(&dir, Durability::Os)).unwrap();
        let snap =
            snapshot.then(|| Arc::new(crate::policy::compile_str("b.yaml", CONTRACT).unwrap()));
        let connector = crate::sidecar::https_connector(rustls::RootCertStore::empty()).unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let rt = Arc::new(Runtime {
            snapshot: ArcSwapOption::new(snap),
            modes: Mutex::new(Modes::default()),
            mode_epoch: tokio::sync::watch::channel(0).0,
            runs: Runs::new(1000, 600),
            spool,
            metrics: Metrics::new(),
            alerts: Alerts::start(Vec::new(), 16, 1000, client.clone()),
            client,
            credentials: Credentials::new(dir.clone()),
            backlog: Default::default(),
        });
        Fixture { rt, dir }
    }

    fn call(&self, run: &str) -> Call {
        let ctx = Ctx {
            tenant: "acme".into(),
            project: "support".into(),
            agent: "support-bot".into(),
            actor: None,
            api_key: None,
            run_id: run.into(),
            run_assigned: false,
            step_id: format!("step-{}", crate::ids::v4()),
            session_id: run.into(),
            decision_id: crate::ids::v7().to_string(),
            evidence_id: crate::ids::v7().to_string(),
            started: Instant::now(),
            at_ms: Runtime::now_ms(),
        };
        let (parts, ()) = http::Request::post("/v1/chat/completions")
            .body(())
            .unwrap()
            .into_parts();
        Call::new(CallState::new(Arc::new(ctx), parts, self.rt.clone()))
    }

    /// A call the mode gate has already let through: bound to the snapshot and its run, with
    /// the facts of a chat call for `model`.
    fn chat_call(&self, run: &str, model: &str, pii: Vec<PiiKind>) -> Call {
        let mut call = self.call(run);
        call.snapshot = self.rt.snapshot();
        call.run = Some(self.rt.runs.get_or_create(run, run).0);
        call.new_run = true;
        call.request = Some(crate::decide::Request {
            tenant: "acme".into(),
            project: "support".into(),
            agent: "support-bot".into(),
            api_key: None,
            actor: None,
            channel: crate::policy::model::Channel::Llm,
            connector: Some("openai".into()),
            model: Some(model.into()),
            tool: None,
            template: None,
            new_run: true,
            facts: crate::decide::Facts {
                pii: Some(PiiFact::Found(pii)),
                grounding: None,
                secrets: Some(SecretFact::Found(Vec::new())),
                arguments: None,
            },
            delta: Default::default(),
        });
        call
    }

    fn records(&self) -> Vec<crate::evidence::Record> {
        crate::evidence::read_all(&self.dir)
            .unwrap()
            .into_iter()
            .map(|r| r.record)
            .collect()
    }
}

/// A next service that counts its calls, keeps the last call's state it saw, and answers 200
/// (or refuses with `refuse`).
#[derive(Clone, Default)]
struct Fake {
    reached: Arc<AtomicUsize>,
    seen: Arc<Mutex<Option<(bool, bool, bool)>>>,
    refuse: Option<Code>,
}

impl Fake {
    fn refusing(code: Code) -> Fake {
        Fake {
            refuse: Some(code),
            ..Fake::default()
        }
    }

    fn service(&self) -> Next {
        let me = self.clone();
        BoxCloneService::new(tower::service_fn(move |call: Call| {
            let me = me.clone();
            async move {
                me.reached.fetch_add(1, Ordering::SeqCst);
                *me.seen.lock().unwrap() = Some((
                    call.snapshot.is_some(),
                    call.run.is_some(),
                    call.guard.is_some(),
                ));
                match me.refuse {
                    Some(code) => Err(Refusal::new(code, "refused below")),
                    None => Ok(crate::connectors::json_reply(
                        http::StatusCode::OK,
                        &serde_json::json!({ "ok": true }),
                    )),
                }
            }
        }))
    }

    fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }
}

async fn run<T: Step>(step: T, fake: &Fake, call: Call) -> Result<Reply, Refusal> {
    StepLayer(step).layer(fake.service()).oneshot(call).await
}

// === mode gate ===

#[tokio::test]
async fn mode_gate_refuses_everything_before_a_verified_snapshot() {
    let f = Fixture::new("boot", false);
    let fake = Fake::default();
    let e = run(mode::ModeGate, &fake, f.call("r1")).await.unwrap_err();
    assert_eq!(e.code, Code::NotReady);
    assert_eq!(fake.reached(), 0);
}

#[tokio::test]
async fn mode_gate_raises_a_refusal_found_before_the_spine() {
    let f = Fixture::new("early", true);
    let fake = Fake::default();
    let call = f.call("r1");
    call.trace(|t| t.refusal = Some(Refusal::new(Code::Unauthorized, "bad bearer")));
    let e = run(mode::ModeGate, &fake, call).await.unwrap_err();
    assert_eq!(e.code, Code::Unauthorized);
    assert_eq!(fake.reached(), 0);
}

#[tokio::test]
async fn mode_gate_binds_the_snapshot_and_run_and_refuses_an_ended_run() {
    let f = Fixture::new("runs", true);
    let fake = Fake::default();
    run(mode::ModeGate, &fake, f.call("r1")).await.unwrap();
    assert_eq!(fake.reached(), 1);
    assert_eq!(*fake.seen.lock().unwrap(), Some((true, true, false)));

    let (r, _) = f.rt.runs.get_or_create("r2", "r2");
    r.end(Action::Stop, "d-1", Code::BudgetExceeded);
    let e = run(mode::ModeGate, &fake, f.call("r2")).await.unwrap_err();
    assert_eq!(e.code, Code::RunStopped);
    let (k, _) = f.rt.runs.get_or_create("r3", "r3");
    k.end(Action::Kill, "d-2", Code::PiiDetected);
    let e = run(mode::ModeGate, &fake, f.call("r3")).await.unwrap_err();
    assert_eq!(e.code, Code::RunKilled);
    assert_eq!(
        fake.reached(),
        1,
        "an ended run never reaches the layers below"
    );
}

// === decide ===

#[tokio::test]
async fn decide_lets_an_allowed_call_through_with_its_guard() {
    let f = Fixture::new("allow", true);
    let fake = Fake::default();
    let call = f.chat_call("r1", "gpt-4o-mini", Vec::new());
    let trace = call.trace.clone();
    run(decide::Decide, &fake, call).await.unwrap();
    assert_eq!(fake.reached(), 1);
    assert_eq!(*fake.seen.lock().unwrap(), Some((true, true, true)));
    let t = trace.lock().unwrap();
    let d = t.decision.as_ref().unwrap();
    assert_eq!(d.action, Action::Continue);
    assert!(!d.refused());
    assert_eq!(d.policy.as_deref(), Some("p100-llm"));
}

#[tokio::test]
async fn decide_refuses_what_no_policy_allows_and_stops_a_run_on_pii() {
    let f = Fixture::new("deny", true);
    let fake = Fake::default();
    let e = run(
        decide::Decide,
        &fake,
        f.chat_call("r1", "gpt-4o", Vec::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::NoAllowPolicy);

    let call = f.chat_call("r2", "gpt-4o-mini", vec![PiiKind::Email]);
    let run_state = call.run.clone().unwrap();
    let e = run(decide::Decide, &fake, call).await.unwrap_err();
    assert_eq!(e.code, Code::PiiDetected);
    assert!(
        matches!(
            run_state.status(),
            super::state::runs::RunStatus::Stopped { .. }
        ),
        "on_match: stop ends the run"
    );
    assert_eq!(
        fake.reached(),
        0,
        "a refused call never reaches its connector"
    );
}

// === evidence ===

#[tokio::test]
async fn evidence_writes_one_record_for_an_answer_and_one_for_a_refusal() {
    let f = Fixture::new("ev", true);
    let ok = Fake::default();
    let call = f.call("r1");
    let id = call.ctx.evidence_id.clone();
    run(evidence::Evidence, &ok, call).await.unwrap();
    let refusing = Fake::refusing(Code::PolicyDenied);
    let call = f.call("r2");
    let refused_id = call.ctx.evidence_id.clone();
    let e = run(evidence::Evidence, &refusing, call).await.unwrap_err();
    assert_eq!(e.code, Code::PolicyDenied);

    let recs = f.records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].evidence_id, id);
    assert_eq!(recs[0].code, None);
    assert_eq!(recs[1].evidence_id, refused_id);
    assert_eq!(recs[1].code, Some(Code::PolicyDenied));
    assert_eq!(recs[1].outcome, Some(crate::evidence::Outcome::Refused));
}

#[tokio::test]
async fn evidence_turns_a_panic_below_into_an_internal_error_with_a_record() {
    let f = Fixture::new("panic", true);
    let boom = BoxCloneService::new(tower::service_fn(|_c: Call| async move {
        if std::hint::black_box(true) {
            panic!("forced panic below the evidence layer");
        }
        Err::<Reply, _>(Refusal::internal("unreachable"))
    }));
    let e = StepLayer(evidence::Evidence)
        .layer(boom)
        .oneshot(f.call("r1"))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InternalError);
    let recs = f.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].code, Some(Code::InternalError));
    assert_eq!(recs[0].outcome, Some(crate::evidence::Outcome::Errored));
}
