use proptest::prelude::*;

use super::*;
use crate::codes::Code;
use crate::decide::{Facts, GroundingFact, Mode, PiiFact, ReasonCode, SecretFact, Usage};
use crate::evidence::record::{Basis, Kind, Outcome};
use crate::policy::model::{Action, Channel, PiiKind, SecretKind};

/// A plain allowed chat call, as the sidecar writes it (taken from a `warden dev` spool).
const PLAIN: &str = include_str!("plain_record.json");

fn plain() -> Record {
    serde_json::from_str(PLAIN).unwrap()
}

#[test]
fn a_plain_call_fits_in_512_bytes_and_reads_back_whole() {
    let r = plain();
    let json = serde_json::to_vec(&r).unwrap();
    let body = encode(&r).unwrap();
    assert_ne!(body[0], b'{', "written compact, not as the JSON fallback");
    assert!(body.len() <= 512, "{} bytes", body.len());
    println!(
        "plain call: {} bytes compact, {} JSON",
        body.len(),
        json.len()
    );
    assert!(
        body.len() * 3 < json.len(),
        "{} vs {} JSON",
        body.len(),
        json.len()
    );
    assert_eq!(decode(&body).unwrap(), r);
}

#[test]
fn every_variant_of_every_table_is_compact() {
    let mut r = plain();
    for kind in [Kind::Call, Kind::Audit] {
        for mode in [Mode::Enforcing, Mode::Degraded, Mode::Bypass, Mode::Halted] {
            r.kind = kind;
            r.mode = mode;
            assert_ne!(encode(&r).unwrap()[0], b'{', "{kind:?} {mode:?}");
        }
    }
    for c in Channel::ALL {
        r.channel = Some(c);
        r.request.as_mut().unwrap().channel = c;
        assert_ne!(encode(&r).unwrap()[0], b'{', "{c:?}");
    }
    for a in [
        Action::Continue,
        Action::Warn,
        Action::Pause,
        Action::Stop,
        Action::Kill,
    ] {
        r.action = Some(a);
        assert_ne!(encode(&r).unwrap()[0], b'{', "{a:?}");
    }
    for o in [
        Outcome::Allowed,
        Outcome::Refused,
        Outcome::Cut,
        Outcome::Bypassed,
        Outcome::Errored,
    ] {
        r.outcome = Some(o);
        assert_ne!(encode(&r).unwrap()[0], b'{', "{o:?}");
    }
    for b in [
        Basis::Decision,
        Basis::AfterDecision,
        Basis::BeforeDecision,
        Basis::Local,
    ] {
        r.basis = Some(b);
        assert_ne!(encode(&r).unwrap()[0], b'{', "{b:?}");
    }
    for code in Code::ALL {
        r.code = Some(*code);
        let body = encode(&r).unwrap();
        assert_ne!(body[0], b'{', "{code:?}");
        assert_eq!(decode(&body).unwrap().code, Some(*code));
    }
    for rc in ReasonCode::ALL {
        r.reasons[0].code = rc;
        let body = encode(&r).unwrap();
        assert_eq!(decode(&body).unwrap().reasons[0].code, rc);
    }
}

#[test]
fn a_json_body_still_reads_and_a_damaged_one_is_an_error() {
    let r = plain();
    assert_eq!(decode(PLAIN.as_bytes()).unwrap(), r);
    let body = encode(&r).unwrap();
    assert!(decode(&body[..body.len() / 2]).is_err());
    assert!(decode(b"{\"seq\": 1}").is_err());
}

#[test]
fn what_differs_from_the_pattern_is_kept_as_it_is() {
    let mut r = plain();
    r.step_id = Some("my-own-step".into());
    r.session_id = Some("a session".into());
    r.run_id = Some("RUN-6D20884D-D0E1-4848-A073-861E325ABAB5".into()); // not canonical
    r.prev = "sha256:ABC".into();
    r.evidence_id = "e-1".into();
    let q = r.request.as_mut().unwrap();
    q.tenant = "other".into();
    q.actor = Some("alice".into());
    q.connector = None;
    q.channel = Channel::Http;
    q.api_key = Some("k1".into());
    let body = encode(&r).unwrap();
    assert_ne!(body[0], b'{');
    assert_eq!(decode(&body).unwrap(), r);
}

fn opt_str() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        "[a-z0-9-]{1,12}".prop_map(Some),
        any::<u128>().prop_map(|u| Some(uuid::Uuid::from_u128(u).to_string())),
        any::<u128>().prop_map(|u| Some(format!("run-{}", uuid::Uuid::from_u128(u)))),
    ]
}

fn hash() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|b| crate::evidence::record::content_hash(&b)),
        "sha256:[0-9a-f]{0,70}",
        ".{0,20}",
    ]
}

prop_compose! {
    fn record()(
        ids in (opt_str(), opt_str(), opt_str(), opt_str(), opt_str()),
        who in (opt_str(), opt_str(), opt_str(), opt_str()),
        target in (opt_str(), opt_str(), opt_str(), opt_str(), opt_str()),
        hashes in (hash(), proptest::option::of(hash()), proptest::option::of(hash()), proptest::option::of(hash())),
        nums in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), -1e9f64..1e9),
        choice in (0usize..4, 0usize..5, 0usize..5, 0usize..4, 0usize..2),
        step_of_decision in any::<bool>(),
        session_is_run in any::<bool>(),
        with_request in any::<bool>(),
        req_same in any::<u16>(),
        pii in proptest::collection::vec(0usize..5, 0..3),
        doc_ids in proptest::collection::vec("[a-z0-9]{0,8}", 0..3),
        detail in ".{0,12}",
    ) -> Record {
        let mut r = Record::new(
            if choice.4 == 0 { Kind::Call } else { Kind::Audit },
            ids.0.clone().unwrap_or_default(),
            nums.0,
        );
        r.seq = nums.1;
        r.prev = hashes.0;
        r.latency_us = nums.2;
        r.decision_id = ids.1;
        r.run_id = ids.2;
        r.step_id = match (&r.decision_id, step_of_decision) {
            (Some(d), true) => Some(format!("step-{d}")),
            _ => ids.3,
        };
        r.session_id = if session_is_run { r.run_id.clone() } else { ids.4 };
        (r.tenant, r.project, r.agent, r.actor) = who;
        r.channel = Channel::ALL.get(choice.0).copied();
        (r.plane, r.connector, r.model, r.tool, r.template) = target;
        r.query_hash = hashes.1;
        r.prompt_hash = hashes.2;
        r.snapshot = hashes.3;
        r.doc_ids = doc_ids;
        r.input_tokens = nums.3;
        r.cost_usd = nums.4;
        r.action = [Action::Continue, Action::Warn, Action::Pause, Action::Stop, Action::Kill].get(choice.1).copied();
        r.outcome = [Outcome::Allowed, Outcome::Refused, Outcome::Cut, Outcome::Bypassed, Outcome::Errored].get(choice.2).copied();
        r.basis = [Basis::Decision, Basis::AfterDecision, Basis::BeforeDecision, Basis::Local].get(choice.3).copied();
        r.code = Code::ALL.get(choice.1 * 3).copied();
        r.mode = [Mode::Enforcing, Mode::Degraded, Mode::Bypass, Mode::Halted][choice.0];
        r.reasons = vec![Reason {
            policy: r.policy.as_deref().map(Into::into),
            action: Action::Warn,
            code: ReasonCode::ALL[choice.2],
            detail: detail.clone(),
        }];
        if choice.2 == 2 {
            r.cut = Some(Cut { after_tokens: nums.3 % 1000, code: Code::BudgetExceeded, detail });
        }
        if with_request {
            let pick = |bit: u16, ours: &Option<String>, alt: &str| {
                if req_same & (1 << bit) != 0 { ours.clone() } else { Some(alt.to_string()) }
            };
            r.request = Some(Request {
                tenant: pick(0, &r.tenant, "t").unwrap_or_default(),
                project: pick(1, &r.project, "p").unwrap_or_default(),
                agent: pick(2, &r.agent, "a").unwrap_or_default(),
                actor: pick(3, &r.actor, "x"),
                channel: if req_same & 16 != 0 { r.channel.unwrap_or(Channel::Sql) } else { Channel::Mcp },
                connector: pick(5, &r.connector, "c"),
                model: pick(6, &r.model, "m"),
                tool: pick(7, &r.tool, "tl"),
                template: pick(8, &r.template, "tp"),
                api_key: pick(9, &None, "k"),
                new_run: req_same & 1024 != 0,
                facts: Facts {
                    pii: Some(PiiFact::Found(pii.iter().map(|&i| PiiKind::ALL[i]).collect())),
                    grounding: (req_same & 4096 != 0).then_some(GroundingFact::Score(nums.4)),
                    secrets: (req_same & 2048 != 0).then(|| SecretFact::Partial(vec![SecretKind::ALL[pii.len()]])),
                    // The argument fact: absent, present with none broken, or with breaks.
                    arguments: match nums.2 % 3 {
                        0 => None,
                        1 => Some(crate::decide::ArgumentsFact::default()),
                        _ => Some(crate::decide::ArgumentsFact {
                            broken: (0..pii.len().max(1))
                                .map(|i| crate::decide::ArgumentBreak {
                                    policy: format!("p{i}"),
                                    path: "filter.*.owner".into(),
                                    rule: format!("{} is above max 50", nums.4),
                                })
                                .collect(),
                        }),
                    },
                },
                delta: Delta { input_tokens: nums.4.abs(), bytes: (nums.2 % 4096) as f64, ..Delta::default() },
            });
            r.usage = Some(Usage(std::iter::once(("p1".to_string(), vec![nums.4])).collect()));
        }
        // A channel's own facts: SQL or MCP, by the channel drawn.
        match r.channel {
            Some(Channel::Sql) => {
                r.sql = Some(crate::evidence::record::SqlFacts {
                    rows: nums.2 % 1000,
                    truncated: choice.3 == 1,
                    db_us: nums.2,
                    timeout_ms: 2000,
                })
            }
            Some(Channel::Mcp) => {
                r.mcp = Some(crate::evidence::record::McpFacts {
                    revision: ["2026-07-28", "2025-11-25", ""][choice.2 % 3].into(),
                    is_error: choice.3 == 2,
                    upstream_us: nums.2,
                })
            }
            _ => {}
        }
        if choice.4 == 1 {
            r.audit = Some(serde_json::json!({ "actor": "ops", "reason": r.plane }));
        }
        r
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the record, what is stored reads back as exactly it — compact where it can be,
    /// JSON otherwise — and a compact body is never mistaken for JSON.
    #[test]
    fn every_record_reads_back_exactly(r in record()) {
        let body = encode(&r).unwrap();
        prop_assert_ne!(body[0], b'{', "every generated record is representable compactly");
        prop_assert_eq!(decode(&body).unwrap(), r.clone());
        let json = serde_json::to_vec(&r).unwrap();
        prop_assert!(body.len() <= json.len(), "{} > {} (JSON)", body.len(), json.len());
    }
}
