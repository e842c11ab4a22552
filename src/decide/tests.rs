//! Decision semantics on concrete cases (the laws over random inputs are in tests/decide_laws.rs).

use super::*;
use crate::policy::compile_str;
use crate::policy::model::BindAt;

const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");

fn snap(extra: &str) -> Snapshot {
    let text = if extra.is_empty() {
        CONTRACT.to_string()
    } else {
        format!("{CONTRACT}---\n{extra}")
    };
    compile_str("b.yaml", &text).unwrap()
}

fn req(channel: Channel) -> Request {
    Request {
        tenant: "acme".into(),
        project: "support".into(),
        agent: "support-bot".into(),
        api_key: None,
        actor: None,
        channel,
        connector: None,
        model: None,
        tool: None,
        template: None,
        new_run: false,
        facts: Facts::default(),
        delta: Delta::default(),
    }
}

fn llm() -> Request {
    let mut r = req(Channel::Llm);
    r.connector = Some("openai".into());
    r.model = Some("gpt-4o-mini".into());
    r.facts.pii = Some(PiiFact::Found(vec![]));
    r
}

fn sql() -> Request {
    let mut r = req(Channel::Sql);
    r.connector = Some("crm-db".into());
    r.template = Some("customer_by_id".into());
    r
}

fn run(s: &Snapshot, r: &Request) -> Decision {
    decide(s, r, &(), Mode::Enforcing, 7, "d-1")
}

fn with_usage(s: &Snapshot, r: &Request, policy: &str, used: Vec<f64>) -> Decision {
    let mut u = Usage::default();
    u.0.insert(policy.into(), used);
    decide(s, r, &u, Mode::Enforcing, 7, "d-1")
}

fn policy(id: &str, body: &str) -> String {
    format!("apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: {id}, tenant: acme }}\nspec:\n  status: active\n{body}")
}

#[test]
fn allowed_call_carries_clamp_ids_and_meters() {
    let s = snap("");
    let d = run(&s, &llm());
    assert_eq!(d.action, Action::Continue);
    assert_eq!(d.code, None);
    assert_eq!(d.policy.as_deref(), Some("p100-llm"));
    assert_eq!(d.max_tokens, Some(1024));
    assert_eq!((d.decision_id.as_str(), d.at_ms), ("d-1", 7));
    assert_eq!(&*d.snapshot, &**s.hash());
    assert_eq!(d.meters.len(), 1);
    assert_eq!(d.headroom_for(Metric::OutputTokens), Some(2000.0));
    assert_eq!(d.inspection, Inspection::default());
    assert!(!d.refused());
}

#[test]
fn deny_by_default() {
    let s = snap("");
    let mut r = llm();
    r.agent = "intruder".into();
    let d = run(&s, &r);
    assert_eq!(
        (d.action, d.code, d.policy.clone()),
        (Action::Stop, Some(Code::NoAllowPolicy), None)
    );
    let mut r = llm();
    r.model = Some("gpt-4o".into());
    assert_eq!(run(&s, &r).code, Some(Code::NoAllowPolicy));
    // A tenant with no policies at all.
    let mut r = llm();
    r.tenant = "globex".into();
    assert_eq!(run(&s, &r).code, Some(Code::NoAllowPolicy));
}

#[test]
fn limits_near_then_breach() {
    let s = snap("");
    let mut r = llm();
    r.delta.output_tokens = 10.0;
    let d = with_usage(&s, &r, "p100-llm", vec![1600.0]);
    assert_eq!(d.action, Action::Continue, "NEAR only alerts");
    assert_eq!(d.near.len(), 1);
    assert_eq!(d.near[0].tier, 0.8);
    assert_eq!(d.headroom_for(Metric::OutputTokens), Some(390.0));
    let d = with_usage(&s, &r, "p100-llm", vec![1990.0]);
    assert_eq!(d.action, Action::Continue, "exactly at max is still within");
    let d = with_usage(&s, &r, "p100-llm", vec![1991.0]);
    assert_eq!(
        (d.action, d.code),
        (Action::Stop, Some(Code::BudgetExceeded))
    );
    assert_eq!(d.policy.as_deref(), Some("p100-llm"));
    assert!(
        d.reasons[0]
            .detail
            .contains("output_tokens 2001 > 2000 per run"),
        "{:?}",
        d.reasons
    );
    assert!(d.ends_run());
}

#[test]
fn request_limits_over_durations_are_rate_limits() {
    let s = snap("");
    let d = with_usage(&s, &sql(), "p200-crm-read", vec![59.0]);
    assert_eq!(d.action, Action::Continue);
    let d = with_usage(&s, &sql(), "p200-crm-read", vec![60.0]);
    assert_eq!(d.code, Some(Code::RateLimited));
}

#[test]
fn pii_blocks_by_default_and_missing_facts_follow_failure_mode() {
    let s = snap("");
    let mut r = llm();
    r.facts.pii = Some(PiiFact::Found(vec![PiiKind::Email]));
    let d = run(&s, &r);
    assert_eq!((d.action, d.code), (Action::Stop, Some(Code::PiiDetected)));
    assert_eq!(d.reasons[0].detail, "email");
    r.facts.pii = Some(PiiFact::Unavailable);
    let d = run(&s, &r);
    assert_eq!(
        (d.action, d.code),
        (Action::Stop, Some(Code::FactUnavailable))
    );
    assert_eq!(d.reasons[0].code.as_str(), "fact_unavailable:pii");
    r.facts.pii = None;
    assert_eq!(
        run(&s, &r).action,
        Action::Continue,
        "not yet established: nothing to say"
    );

    let open = CONTRACT.replace(
        "detectors: { pii: { on_match: stop } }\n  limits:",
        "detectors: { pii: { on_match: stop } }\n  failure_mode: fail_open\n  limits:",
    );
    let s = compile_str("b.yaml", &open).unwrap();
    r.facts.pii = Some(PiiFact::Unavailable);
    let d = run(&s, &r);
    assert_eq!(d.action, Action::Warn);
    assert_eq!(d.code, Some(Code::FactUnavailable));
}

#[test]
fn grounding_never_blocks_unless_opted_in() {
    let body = |on_low: &str| {
        policy(
            "p050-grounded",
            &format!("  scope: {{ all_runs: true }}\n  match: {{ channel: llm }}\n  effect: allow\n  detectors: {{ grounding: {{ min_score: 0.7{on_low} }} }}\n"),
        )
    };
    let s = snap(&body(""));
    let mut r = llm();
    r.facts.grounding = Some(GroundingFact::Score(0.2));
    let d = run(&s, &r);
    assert_eq!((d.action, d.code), (Action::Warn, Some(Code::GroundingLow)));
    r.facts.grounding = Some(GroundingFact::Unavailable);
    assert_eq!(
        run(&s, &r).action,
        Action::Warn,
        "fail_closed keeps a non-blocking detector non-blocking"
    );
    let s = snap(&body(", on_low: stop"));
    r.facts.grounding = Some(GroundingFact::Score(0.2));
    assert_eq!(run(&s, &r).code, Some(Code::GroundingLow));
    assert_eq!(run(&s, &r).action, Action::Stop);
    r.facts.grounding = Some(GroundingFact::Score(0.9));
    assert_eq!(run(&s, &r).action, Action::Continue);
}

#[test]
fn most_restrictive_wins_then_lowest_id() {
    let extra = [
        policy("p010-pause", "  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: deny\n  action: pause\n"),
        policy("p020-stop", "  scope: { agents: [support-bot] }\n  match: { channel: llm }\n  effect: deny\n"),
        policy("p005-stop", "  scope: { projects: [support] }\n  match: { channel: llm, models: [gpt-4o-mini] }\n  effect: deny\n  action: stop\n"),
    ]
    .join("---\n");
    let s = snap(&extra);
    let d = run(&s, &llm());
    assert_eq!((d.action, d.code), (Action::Stop, Some(Code::PolicyDenied)));
    assert_eq!(d.policy.as_deref(), Some("p005-stop"));
    let order: Vec<(&str, Action)> = d
        .reasons
        .iter()
        .map(|r| (r.policy.as_deref().unwrap(), r.action))
        .collect();
    assert_eq!(
        order,
        vec![
            ("p005-stop", Action::Stop),
            ("p020-stop", Action::Stop),
            ("p010-pause", Action::Pause),
            ("p100-llm", Action::Continue)
        ]
    );
}

#[test]
fn pause_asks_for_approval_and_does_not_end_the_run() {
    let s = snap(&policy(
        "p010-pause",
        "  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: deny\n  action: pause\n",
    ));
    let d = run(&s, &llm());
    assert_eq!(
        (d.action, d.code),
        (Action::Pause, Some(Code::ApprovalRequired))
    );
    assert!(d.refused() && !d.ends_run());
}

#[test]
fn shadow_policies_report_but_never_decide() {
    let s = snap(&policy("p001-shadow", "  shadow: true\n  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: deny\n  action: kill\n"));
    let d = run(&s, &llm());
    assert_eq!(d.action, Action::Continue);
    assert_eq!(d.shadow.len(), 1);
    assert_eq!(d.shadow[0].action, Action::Kill);
    // A shadow allow does not allow either.
    let s = snap(&policy("p001-shadow", "  shadow: true\n  scope: { all_runs: true }\n  match: { channel: http }\n  effect: allow\n"));
    let mut r = req(Channel::Http);
    r.connector = Some("nope".into());
    r.agent = "other".into();
    let d = run(&s, &r);
    assert_eq!(d.code, Some(Code::NoAllowPolicy));
    assert_eq!(d.shadow[0].code, ReasonCode::Allowed);
}

#[test]
fn default_deny_planes_need_an_explicit_allow() {
    // A channel-wide SQL allow does not reach the confidential `crm` plane …
    let wide = policy(
        "p050-all-sql",
        "  scope: { all_runs: true }\n  match: { channel: sql }\n  effect: allow\n",
    );
    let tpl = "apiVersion: warden/v1\nkind: SqlTemplate\nmetadata: { id: tiers, tenant: acme }\nspec:\n  connector: crm-db\n  statement: SELECT DISTINCT tier FROM customers\n";
    let s = snap(&format!("{wide}---\n{tpl}"));
    let mut r = sql();
    r.template = Some("tiers".into());
    assert_eq!(run(&s, &r).code, Some(Code::NoAllowPolicy));
    // … one naming the plane does.
    let named = policy(
        "p050-crm",
        "  scope: { all_runs: true }\n  match: { channel: sql, planes: [crm] }\n  effect: allow\n",
    );
    let s = snap(&format!("{named}---\n{tpl}"));
    assert_eq!(run(&s, &r).action, Action::Continue);
    // A public (undeclared, default-allow) plane is reached by a channel-wide allow.
    let s = snap(&policy(
        "p050-all-http",
        "  scope: { agents: [x] }\n  match: { channel: http }\n  effect: allow\n",
    ));
    let mut r = req(Channel::Http);
    r.agent = "x".into();
    r.connector = Some("weather".into());
    assert_eq!(run(&s, &r).action, Action::Continue);
}

#[test]
fn scopes_by_api_key_and_actor() {
    let s = snap(&policy("p050-key", "  scope: { api_keys: [k1], actors: [alice] }\n  match: { channel: http }\n  effect: deny\n"));
    let mut r = req(Channel::Http);
    r.connector = Some("weather".into());
    assert_eq!(
        run(&s, &r).action,
        Action::Continue,
        "no key, no actor: out of scope"
    );
    r.api_key = Some("k1".into());
    assert_eq!(
        run(&s, &r).action,
        Action::Continue,
        "both lists must match"
    );
    r.actor = Some("alice".into());
    assert_eq!(run(&s, &r).code, Some(Code::PolicyDenied));
}

#[test]
fn platform_policies_apply_to_every_tenant_they_scope() {
    let s = snap("apiVersion: warden/v1\nkind: Policy\nmetadata: { id: p000-platform, tenant: \"*\" }\nspec:\n  status: active\n  scope: { tenants: [acme] }\n  match: { channel: llm, models: [] }\n  effect: deny\n  action: kill\n");
    let d = run(&s, &llm());
    assert_eq!(
        (d.action, d.policy.as_deref()),
        (Action::Kill, Some("p000-platform"))
    );
}

#[test]
fn modes() {
    let s = snap("");
    let mut r = llm();
    let d = decide(&s, &r, &(), Mode::Halted, 0, "d");
    assert_eq!(
        (d.action, d.code),
        (Action::Stop, Some(Code::GovernanceHalted))
    );
    assert!(
        !d.ends_run(),
        "the kill switch refuses; releasing it lets runs go on"
    );
    r.new_run = true;
    let d = decide(&s, &r, &(), Mode::Degraded, 0, "d");
    assert_eq!(d.code, Some(Code::GovernanceDegraded));
    r.new_run = false;
    r.agent = "intruder".into();
    let d = decide(&s, &r, &(), Mode::Degraded, 0, "d");
    assert_eq!(
        (d.action, d.downgraded_from),
        (Action::Warn, Some(Action::Stop))
    );
    assert_eq!(
        d.code,
        Some(Code::NoAllowPolicy),
        "the original reason stays on record"
    );
    let d = decide(&s, &r, &(), Mode::Bypass, 0, "d");
    assert_eq!(
        (d.action, d.downgraded_from),
        (Action::Continue, Some(Action::Stop))
    );
    let d = decide(&s, &llm(), &(), Mode::Bypass, 0, "d");
    assert_eq!(d.downgraded_from, None, "nothing to downgrade");
}

#[test]
fn effective_mode() {
    use Mode::*;
    assert_eq!(Mode::effective(Enforcing, None), Enforcing);
    assert_eq!(Mode::effective(Halted, Some(Bypass)), Halted);
    assert_eq!(Mode::effective(Enforcing, Some(Halted)), Halted);
    assert_eq!(Mode::effective(Degraded, Some(Enforcing)), Enforcing);
    assert_eq!(Mode::effective(Enforcing, Some(Bypass)), Bypass);
    assert_eq!(Mode::effective(Bypass, None), Bypass);
}

#[test]
fn inspection_is_what_every_firing_allow_permits() {
    let s = snap(&policy("p050-inspect", "  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  inspection: { prompts: true, responses: true }\n"));
    assert_eq!(
        run(&s, &llm()).inspection,
        Inspection::default(),
        "p100 allows none"
    );
    let mut r = llm();
    r.agent = "other".into();
    let i = run(&s, &r).inspection;
    assert!(i.prompts && i.responses && !i.pii && !i.secrets);
}

#[test]
fn bind_at_is_the_strictest_in_scope() {
    let s = snap(&policy("p050-fresh", "  scope: { agents: [support-bot] }\n  match: { channel: http }\n  effect: allow\n  bind_at: each_step\n"));
    assert_eq!(bind::run_bind_at(&s, &llm()), BindAt::EachStep);
    let mut r = llm();
    r.agent = "other".into();
    assert_eq!(bind::run_bind_at(&s, &r), BindAt::RunStart);
}

#[test]
fn decisions_round_trip_through_json() {
    let s = snap("");
    let mut r = llm();
    r.facts.pii = Some(PiiFact::Unavailable);
    let d = run(&s, &r);
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("\"fact_unavailable:pii\""), "{json}");
    let back: Decision = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
    let req_json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Request>(&req_json).unwrap(), r);
}

#[test]
fn partial_pii_facts_judge_both_the_found_kinds_and_the_unread_rest() {
    // fail_closed: the unread rest refuses even when the kinds found are none (or not the
    // policy's); fail_open: kinds found still refuse, the unread rest only warns.
    let s = snap("");
    let mut r = llm();
    r.facts.pii = Some(PiiFact::Partial(vec![]));
    let d = run(&s, &r);
    assert_eq!(
        (d.action, d.code),
        (Action::Stop, Some(Code::FactUnavailable))
    );
    let open = CONTRACT.replace(
        "detectors: { pii: { on_match: stop } }\n  limits:",
        "detectors: { pii: { on_match: stop } }\n  failure_mode: fail_open\n  limits:",
    );
    let s = compile_str("b.yaml", &open).unwrap();
    let d = run(&s, &r);
    assert_eq!(
        (d.action, d.code),
        (Action::Warn, Some(Code::FactUnavailable))
    );
    r.facts.pii = Some(PiiFact::Partial(vec![PiiKind::Email]));
    let d = run(&s, &r);
    assert_eq!(
        (d.action, d.code),
        (Action::Stop, Some(Code::PiiDetected)),
        "a kind found in the part read is not excused by fail_open"
    );
    assert!(d
        .reasons
        .iter()
        .any(|x| x.code.as_str() == "fact_unavailable:pii"));
}

#[test]
fn secrets_block_by_default_and_missing_facts_follow_failure_mode() {
    let on = |extra: &str| {
        compile_str(
            "b.yaml",
            &CONTRACT.replacen(
                "detectors: { pii: { on_match: stop } }\n  limits:",
                &format!(
                    "detectors: {{ pii: {{ on_match: stop }}, secrets: {{ {extra} }} }}\n  limits:"
                ),
                1,
            ),
        )
        .unwrap()
    };
    let s = on("");
    let mut r = llm();
    assert!(!run(&s, &r).refused(), "no fact yet: nothing to say");
    r.facts.secrets = Some(SecretFact::Found(vec![]));
    assert!(!run(&s, &r).refused());
    r.facts.secrets = Some(SecretFact::Found(vec![
        SecretKind::OpenaiKey,
        SecretKind::Jwt,
    ]));
    let d = run(&s, &r);
    assert_eq!(
        (d.action, d.code),
        (Action::Stop, Some(Code::SecretDetected))
    );
    assert_eq!(d.reasons[0].code.as_str(), "secret_detected");
    assert_eq!(d.reasons[0].detail, "openai_key,jwt");
    r.facts.secrets = Some(SecretFact::Unavailable);
    let d = run(&s, &r);
    assert_eq!(d.code, Some(Code::FactUnavailable));
    assert_eq!(d.reasons[0].code.as_str(), "fact_unavailable:secrets");
    r.facts.secrets = Some(SecretFact::Partial(vec![SecretKind::Jwt]));
    let d = run(&s, &r);
    assert!(d
        .reasons
        .iter()
        .any(|x| x.code == ReasonCode::SecretDetected));
    assert!(d
        .reasons
        .iter()
        .any(|x| x.code.as_str() == "fact_unavailable:secrets"));
    // fail_open: at most a warning for the missing fact.
    let open = compile_str(
        "b.yaml",
        &CONTRACT.replacen(
            "detectors: { pii: { on_match: stop } }\n  limits:",
            "detectors: { secrets: {} }\n  failure_mode: fail_open\n  limits:",
            1,
        ),
    )
    .unwrap();
    r.facts.secrets = Some(SecretFact::Unavailable);
    assert_eq!(run(&open, &r).action, Action::Warn);
    // kinds narrow what counts; warn only alerts.
    let jwt_only = on("kinds: [jwt]");
    r.facts.secrets = Some(SecretFact::Found(vec![SecretKind::OpenaiKey]));
    assert!(!run(&jwt_only, &r).refused());
    r.facts.secrets = Some(SecretFact::Found(vec![SecretKind::Jwt]));
    assert!(run(&jwt_only, &r).refused());
    let warn = on("on_match: warn");
    let d = run(&warn, &r);
    assert_eq!(d.action, Action::Warn);
    assert!(!d.refused());
    // Without the detector the fact changes nothing.
    assert!(!run(&snap(""), &r).refused());
    // The reason codes round-trip.
    for c in [
        ReasonCode::SecretDetected,
        ReasonCode::FactUnavailable(Fact::Secrets),
    ] {
        assert_eq!(ReasonCode::parse(c.as_str()), Some(c));
    }
}

#[test]
fn names_on_the_wire_are_the_serde_names() {
    for m in [Mode::Enforcing, Mode::Degraded, Mode::Bypass, Mode::Halted] {
        assert_eq!(serde_json::to_value(m).unwrap(), m.as_str(), "{m:?}");
    }
    let all = ReasonCode::ALL;
    let names: std::collections::BTreeSet<&str> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), all.len(), "reason names are distinct");
    for c in all {
        assert_eq!(ReasonCode::parse(c.as_str()), Some(c));
        let back: ReasonCode = serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
        assert_eq!(back, c);
        // A refusal's wire code is the reason's own name, but for the three missing facts.
        match c.refusal() {
            None => assert_eq!(c, ReasonCode::Allowed),
            Some(code) if matches!(c, ReasonCode::FactUnavailable(_)) => {
                assert_eq!(code.as_str(), "fact_unavailable")
            }
            Some(code) => assert_eq!(code.as_str(), c.as_str()),
        }
    }
    assert_eq!(ReasonCode::parse("nope"), None);
    assert!(serde_json::from_value::<ReasonCode>(serde_json::json!("nope")).is_err());
}

fn tool_call(tool: &str) -> Request {
    let mut r = req(Channel::Mcp);
    r.connector = Some("tickets".into());
    r.tool = Some(tool.into());
    r.facts.pii = Some(PiiFact::Found(vec![]));
    r
}

const ARG_POLICIES: &str = "apiVersion: warden/v1\nkind: Policy\nmetadata: { id: p410-args, tenant: acme }\nspec:\n  status: active\n  scope: { agents: [support-bot] }\n  match: { channel: mcp, connectors: [tickets], tools: [search_tickets] }\n  effect: allow\n  arguments:\n    query: { required: true, max_len: 50 }\n    limit: { min: 1, max: 20 }\n---\napiVersion: warden/v1\nkind: Policy\nmetadata: { id: p411-shadow-args, tenant: acme }\nspec:\n  status: active\n  shadow: true\n  scope: { agents: [support-bot] }\n  match: { channel: mcp, connectors: [tickets], tools: [search_tickets] }\n  effect: allow\n  arguments:\n    limit: { max: 5 }\n";

#[test]
fn argument_rules_refuse_what_they_do_not_allow() {
    let s = snap(ARG_POLICIES);
    let decide_on = |tool: &str, args: serde_json::Value| {
        let mut r = tool_call(tool);
        r.facts.arguments = Some(arguments_fact(&s, &r, &args));
        run(&s, &r)
    };
    // Within every rule: allowed (by both allows), the shadow rule only reports.
    let d = decide_on(
        "search_tickets",
        serde_json::json!({ "query": "refund", "limit": 10 }),
    );
    assert_eq!(d.action, Action::Continue, "{d:?}");
    assert!(d
        .shadow
        .iter()
        .any(|r| r.code == ReasonCode::PolicyDenied && r.detail.contains("limit")));
    // Past a rule: refused by the policy that holds it — though p400 alone would allow it.
    let d = decide_on(
        "search_tickets",
        serde_json::json!({ "query": "refund", "limit": 21 }),
    );
    assert_eq!((d.action, d.code), (Action::Stop, Some(Code::PolicyDenied)));
    assert_eq!(d.policy.as_deref(), Some("p410-args"));
    assert_eq!(d.reasons[0].detail, "argument `limit` 21 is above max 20");
    let d = decide_on("search_tickets", serde_json::json!({ "limit": 2 }));
    assert_eq!(d.reasons[0].detail, "argument `query` is required");
    // Another tool of the same connector: the rules are not its.
    let d = decide_on("get_ticket", serde_json::json!({ "id": 7 }));
    assert_eq!(d.action, Action::Continue, "{d:?}");
    // The arguments' fact missing: fail closed, unless the policy fails open.
    let d = run(&s, &tool_call("search_tickets"));
    assert_eq!(d.code, Some(Code::FactUnavailable));
    assert_eq!(
        d.reasons[0].code,
        ReasonCode::FactUnavailable(Fact::Arguments)
    );
    let open = snap(&ARG_POLICIES.replace(
        "  effect: allow\n  arguments:\n    query",
        "  effect: allow\n  failure_mode: fail_open\n  arguments:\n    query",
    ));
    let d = run(&open, &tool_call("search_tickets"));
    assert_eq!(d.action, Action::Warn, "{d:?}");
}

#[test]
fn the_argument_fact_replays_from_its_record() {
    let s = snap(ARG_POLICIES);
    let mut r = tool_call("search_tickets");
    r.facts.arguments = Some(arguments_fact(&s, &r, &serde_json::json!({ "query": 3 })));
    let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(run(&s, &back), run(&s, &r));
    // The fact holds what broke, never the value.
    let text = serde_json::to_string(&r.facts).unwrap();
    assert!(
        text.contains("must be a string") && !text.contains("\"query\":3"),
        "{text}"
    );
}
