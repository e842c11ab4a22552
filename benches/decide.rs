//! Decision latency at 10, 1,000 and 10,000 active policies over 50 tenants and 4 channels, and
//! compile time for 10,000 policies (`BENCHMARKS.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use warden::decide::{decide, Delta, Facts, Mode, PiiFact, Request, Usage};
use warden::policy::model::Channel;
use warden::policy::{compile_docs, compile_str, parse_sources, Snapshot, Source};

const TENANTS: usize = 50;

/// A bundle with `n` active policies spread evenly over 50 tenants and the 4 channels; each
/// tenant has one connector per channel. Policies mix allows (scoped to agents, with limits and
/// a PII detector) and denies scoped to other agents, so matching does real work.
fn bundle(n: usize) -> String {
    let mut s = String::new();
    for t in 0..TENANTS {
        let _ = write!(
            s,
            "apiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: llm, tenant: t{t} }}\nspec:\n  type: llm\n  plane: public\n  llm: {{ base_url: \"http://127.0.0.1:18080/v1\", api_key: env:KEY, models: {{ m0: {{ input_usd_per_mtok: 1, output_usd_per_mtok: 2 }}, m1: {{ input_usd_per_mtok: 1, output_usd_per_mtok: 2 }} }} }}\n---\n\
             apiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: web, tenant: t{t} }}\nspec:\n  type: http\n  plane: public\n  http: {{ base_url: \"http://127.0.0.1:18081\", allow: [ {{ methods: [GET], paths: [\"/v1/*\"] }} ] }}\n---\n\
             apiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: db, tenant: t{t} }}\nspec:\n  type: sql\n  plane: public\n  sql: {{ url: env:DB }}\n---\n\
             apiVersion: warden/v1\nkind: SqlTemplate\nmetadata: {{ id: q, tenant: t{t} }}\nspec:\n  connector: db\n  statement: \"SELECT id FROM c WHERE id = :id\"\n  params: {{ id: int }}\n---\n\
             apiVersion: warden/v1\nkind: Connector\nmetadata: {{ id: tools, tenant: t{t} }}\nspec:\n  type: mcp\n  plane: public\n  mcp: {{ url: \"http://127.0.0.1:18082/mcp\" }}\n---\n"
        );
    }
    let channels = [Channel::Llm, Channel::Http, Channel::Sql, Channel::Mcp];
    for i in 0..n {
        let t = i % TENANTS;
        let ch = channels[(i / TENANTS) % 4];
        let agent = (i / (TENANTS * 4)) % 20;
        let (conn, extra) = match ch {
            Channel::Llm => ("llm", ", models: [m0]"),
            Channel::Http => ("web", ""),
            Channel::Sql => ("db", ", templates: [q]"),
            Channel::Mcp => ("tools", ""),
        };
        let limit = match ch {
            Channel::Llm => "output_tokens",
            Channel::Sql => "queries",
            _ => "requests",
        };
        if i % 5 == 4 {
            let _ = write!(
                s,
                "apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p{i:05}, tenant: t{t} }}\nspec:\n  status: active\n  scope: {{ agents: [blocked-{agent}] }}\n  match: {{ channel: {}, connectors: [{conn}]{extra} }}\n  effect: deny\n---\n",
                ch.as_str()
            );
        } else {
            let _ = write!(
                s,
                "apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p{i:05}, tenant: t{t} }}\nspec:\n  status: active\n  scope: {{ agents: [agent-{agent}, agent-x] }}\n  match: {{ channel: {}, connectors: [{conn}]{extra} }}\n  effect: allow\n  detectors: {{ pii: {{ on_match: stop }} }}\n  limits:\n    - {{ metric: {limit}, window: run, max: 100000, near: [0.5, 0.8, 0.9] }}\n    - {{ metric: requests, window: 1m, max: 600 }}\n---\n",
                ch.as_str()
            );
        }
    }
    s
}

fn request() -> Request {
    Request {
        tenant: "t7".into(),
        project: "p".into(),
        agent: "agent-0".into(),
        api_key: None,
        actor: None,
        channel: Channel::Llm,
        connector: Some("llm".into()),
        model: Some("m0".into()),
        tool: None,
        template: None,
        new_run: false,
        facts: Facts {
            pii: Some(PiiFact::Found(vec![])),
            grounding: None,
            secrets: None,
            arguments: None,
        },
        delta: Delta {
            input_tokens: 120.0,
            ..Delta::default()
        },
    }
}

fn snapshot(n: usize) -> Snapshot {
    compile_str("bench.yaml", &bundle(n)).unwrap_or_else(|e| panic!("bench bundle invalid: {e:?}"))
}

/// The same-run baseline: parsing the request facts from JSON, which every mediated call pays
/// anyway. Decision costs are reported as a ratio to it (`BENCHMARKS.md`).
fn bench_baseline(c: &mut Criterion) {
    let json = serde_json::to_string(&request()).unwrap_or_default();
    c.bench_function("baseline/parse_request_json", |b| {
        b.iter(|| serde_json::from_str::<Request>(black_box(&json)).map(|r| r.agent.len()))
    });
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    let req = request();
    let mut usage = Usage::default();
    usage.0.insert("p00007".into(), vec![4000.0, 10.0]);
    for n in [10usize, 1_000, 10_000] {
        let snap = snapshot(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| {
                decide(
                    black_box(snap),
                    black_box(&req),
                    &usage,
                    Mode::Enforcing,
                    0,
                    "bench",
                )
            })
        });
    }
    g.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("bundle_10000_policies");
    g.sample_size(10);
    let text = bundle(10_000);
    let sources = [Source {
        name: "bench.yaml".into(),
        text: text.clone(),
    }];
    // YAML bytes → typed documents (parallel parse over the machine's cores).
    g.bench_function("parse", |b| {
        b.iter(|| parse_sources(black_box(&sources)).0.len())
    });
    // Typed documents → snapshot: validation, canonical form, hash, index.
    let (docs, _) = parse_sources(&sources);
    g.bench_function("compile", |b| {
        b.iter_batched(
            || docs.clone(),
            |docs| compile_docs(docs).map(|s| s.hash().len()),
            BatchSize::LargeInput,
        )
    });
    // Both, as `warden policy check` does.
    g.bench_function("parse_and_compile", |b| {
        b.iter(|| compile_str("bench.yaml", black_box(&text)).map(|s| s.hash().len()))
    });
    g.finish();
}

/// The PII scan of a 1 KB prompt of plain words (the load bench's request), per call.
fn bench_pii(c: &mut Criterion) {
    let filler = "the quick brown fox jumps over the lazy dog while the support agent reads \
                  the ticket history and drafts a short polite answer for the customer ";
    let mut text = String::from("Summarise the conversation below in one line. ");
    while text.len() < 1000 {
        text.push_str(filler);
    }
    text.push_str(" [[reply:16]] call +1 (415) 555-2671 or DE89 3704 0044 0532 0130 00");
    c.bench_function("pii/kinds_1k_prompt", |b| {
        b.iter(|| warden::detect::pii::kinds(std::hint::black_box(&text)))
    });
}

/// The secrets scan of the same 1 KB prompt (with the PII values, no secret): the extra pass
/// every string of a call pays.
fn bench_secrets(c: &mut Criterion) {
    let filler = "the quick brown fox jumps over the lazy dog while the support agent reads \
                  the ticket history and drafts a short polite answer for the customer ";
    let mut text = String::from("Summarise the conversation below in one line. ");
    while text.len() < 1000 {
        text.push_str(filler);
    }
    text.push_str(" [[reply:16]] call +1 (415) 555-2671 or DE89 3704 0044 0532 0130 00");
    c.bench_function("secrets/kinds_1k_prompt", |b| {
        b.iter(|| warden::detect::secrets::kinds(std::hint::black_box(&text)))
    });
}

/// One plain allowed chat call's evidence record, encoded as the spool writes it (compact, with
/// the read-back check) and as JSON (the previous format).
fn bench_evidence(c: &mut Criterion) {
    let record: warden::evidence::Record =
        serde_json::from_str(include_str!("../src/evidence/compact/plain_record.json"))
            .expect("the sample record parses");
    c.bench_function("evidence/encode_json", |b| {
        b.iter(|| serde_json::to_vec(std::hint::black_box(&record)).ok())
    });
    c.bench_function("evidence/encode_compact_checked", |b| {
        b.iter(|| warden::evidence::compact::encode(std::hint::black_box(&record)).ok())
    });
    let body = warden::evidence::compact::encode(&record).unwrap_or_default();
    c.bench_function("evidence/decode_compact", |b| {
        b.iter(|| warden::evidence::compact::decode(std::hint::black_box(&body)).ok())
    });
}

criterion_group!(
    benches,
    bench_evidence,
    bench_baseline,
    bench_decide,
    bench_compile,
    bench_pii,
    bench_secrets
);
criterion_main!(benches);
