//! The policy service over loopback (`cargo bench --bench control_plane`; figures in
//! `BENCHMARKS.md`, "Policy service").
//!
//! - **Kill switch, 100 watch streams in one process**: 100 snapshot-watch streams, each on its
//!   own connection (as 100 sidecars hold them), on a service in this process (SQLite store);
//!   `Ops/SetMode` is called and each stream's receipt of the new modes is timed from just
//!   before the call. Rounds alternate halted and enforcing.
//! - **Kill switch, 10 sidecar processes**: 10 `warden sidecar` processes (release binary)
//!   following the service; after `SetMode(halted)` each is probed on its agent port (a weather
//!   call, fresh run id each time, one every millisecond or so) until it refuses with
//!   `governance_halted`; the time is from just before the call to the first refusal.
//! - **A 10,000-policy snapshot to 100 watchers**: the contract bundle plus 10,000 policies,
//!   applied; from the `Apply` call to each watcher's receipt of the snapshot; and how long a
//!   sidecar takes to verify (compile) it.
//! - **Evidence ingest**: chains of compact records in batches of 1,024 over one
//!   `EvidenceIngest/Ingest` stream per sidecar (4 sidecars at once), into SQLite and into a
//!   throwaway PostgreSQL cluster (`tests/common/pg.rs`): records stored per second.
//! - **Per-call cost of shipping**: a weather call through a sidecar process that follows the
//!   service, with evidence shipping on and off (`evidence.ship: false`), and direct to the
//!   mock, in the same run: sequential p50 and 16-connection closed-loop rps.
//!
//! - **gRPC vs HTTP on the agent port**: the same chat completion (one token, a fresh run each
//!   call) to one sidecar process as `POST /v1/chat/completions` over HTTP/1.1 and as
//!   `warden.v1.Mediation/ChatCompletion` over h2c, and straight to the mock: sequential p50 and
//!   16-connection closed-loop rps.
//!
//! `WARDEN_LOAD_QUICK=1` shortens every part;
//! - **ext_authz `Check`** at 1,000 and 3,000 rps, open loop (16 callers on 4 connections), to
//!   one sidecar process: p50/p99 of each check from its actual send.
//!
//! `WARDEN_LOAD_ONLY=watch|sidecars|big|ingest|ship|grpc|authz` runs one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;
use warden::proto as pb;

const TOKEN: &str = "bench-admin-token";

fn quick() -> bool {
    std::env::var_os("WARDEN_LOAD_QUICK").is_some()
}

fn only(part: &str) -> bool {
    std::env::var("WARDEN_LOAD_ONLY").map_or(true, |o| o == part)
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("warden-cp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

async fn start_service(dir: &Path, store: &str) -> warden::service::Running {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.join("service.yaml"),
        format!(
            "listen: {{ grpc: \"127.0.0.1:0\", http: \"127.0.0.1:0\" }}\nstore: {{ url: \"{store}\" }}\nauth: {{ admin_token: \"file:token\" }}\n"
        ),
    )
    .unwrap();
    let cfg = warden::service::config::ServiceConfig::load(&dir.join("service.yaml")).unwrap();
    warden::service::start(cfg).await.unwrap()
}

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

async fn apply(url: &str, text: &str) -> String {
    pb::policy_admin_client::PolicyAdminClient::new(channel(url).await)
        .max_encoding_message_size(64 << 20)
        .apply(request(pb::ApplyRequest {
            name: "bundle.yaml".into(),
            text: text.into(),
            reason: "bench".into(),
            dry_run: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .snapshot
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    (q(0.5), q(0.99), v[v.len() - 1])
}

/// What each watcher has received: (modes epochs, snapshot hashes) with the time.
#[derive(Default)]
struct Seen {
    epochs: HashMap<u64, Vec<Instant>>,
    snapshots: HashMap<String, Vec<Instant>>,
}

/// Open `n` watch streams, each on its own connection; wait until each has its first modes.
async fn watchers(url: &str, n: usize, seen: Arc<Mutex<Seen>>) {
    for i in 0..n {
        let ch = channel(url).await;
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut c = pb::snapshot_watch_client::SnapshotWatchClient::new(ch)
                .max_decoding_message_size(64 << 20);
            let mut s = c
                .watch(request(pb::WatchRequest {
                    sidecar: Some(pb::SidecarIdentity {
                        sidecar_id: format!("bench-watcher-{i}"),
                        tenant: "acme".into(),
                        ..Default::default()
                    }),
                    held_snapshot: String::new(),
                }))
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(ev)) = s.message().await {
                let at = Instant::now();
                let mut g = seen.lock().unwrap();
                match ev.event {
                    Some(pb::watch_event::Event::Modes(m)) => {
                        g.epochs.entry(m.epoch).or_default().push(at)
                    }
                    Some(pb::watch_event::Event::Snapshot(s)) => {
                        g.snapshots.entry(s.hash).or_default().push(at)
                    }
                    _ => {}
                }
            }
        });
    }
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn set_mode(url: &str, mode: &str) -> u64 {
    pb::ops_client::OpsClient::new(channel(url).await)
        .set_mode(request(pb::SetModeRequest {
            mode: mode.into(),
            tenant: String::new(),
            reason: "bench".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .epoch
}

async fn kill_switch_watchers(url: &str) {
    let n = 100;
    let seen = Arc::new(Mutex::new(Seen::default()));
    watchers(url, n, seen.clone()).await;
    wait_for(
        "every watcher's first modes",
        Duration::from_secs(30),
        || {
            seen.lock()
                .unwrap()
                .epochs
                .values()
                .map(Vec::len)
                .sum::<usize>()
                >= n
        },
    )
    .await;
    let rounds = if quick() { 6 } else { 30 };
    let mut all = Vec::new();
    let mut slowest = Vec::new();
    let mut ops = pb::ops_client::OpsClient::new(channel(url).await);
    for k in 0..rounds {
        let mode = if k % 2 == 0 { "halted" } else { "enforcing" };
        let t0 = Instant::now();
        let epoch = ops
            .set_mode(request(pb::SetModeRequest {
                mode: mode.into(),
                tenant: String::new(),
                reason: "bench".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .epoch;
        wait_for(
            "all watchers on the new modes",
            Duration::from_secs(10),
            || seen.lock().unwrap().epochs.get(&epoch).map_or(0, Vec::len) >= n,
        )
        .await;
        let lat: Vec<f64> = seen.lock().unwrap().epochs[&epoch]
            .iter()
            .map(|t| (*t - t0).as_secs_f64() * 1e3)
            .collect();
        slowest.push(lat.iter().cloned().fold(0.0, f64::max));
        all.extend(lat);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p50, p99, max) = quantiles(all.clone());
    println!(
        "kill switch → 100 watch streams (one process): {} samples over {rounds} rounds: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; slowest stream per round p50 {:.2} ms",
        all.len(),
        quantiles(slowest).0
    );
}

// === sidecar processes ===

struct Proc {
    child: Child,
    agent: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sidecar(bin: &Path, dir: &Path, service: &str, ship: bool) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.join("sidecar.yaml"),
        format!(
            "identity: {{ tenant: acme, project: support, agent: support-bot }}\n\
             listen: {{ agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\n\
             policy: {{ source: service, service: \"{service}\", cache_dir: cache, token: \"file:token\" }}\n\
             evidence: {{ spool_dir: evidence, durability: os, ship: {ship} }}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args(["sidecar", "--config"])
        .arg(dir.join("sidecar.yaml"))
        .env("OPENAI_API_KEY", "unused")
        .env("WEATHER_AUTH", "Bearer bench")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = support::agent_addr(&mut child, "control plane");
    Proc { child, agent }
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// One weather call: (status, body); a connection the other side closed is opened again.
async fn weather(
    tx: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    n: u64,
) -> (u16, Bytes) {
    loop {
        let req = http::Request::get(path)
            .header("host", addr.to_string())
            .header("x-warden-run-id", format!("bench-{n}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if tx.ready().await.is_err() {
            *tx = connect(addr).await;
            continue;
        }
        match tx.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(b) => return (status, b.to_bytes()),
                    Err(_) => *tx = connect(addr).await,
                }
            }
            Err(_) => *tx = connect(addr).await,
        }
    }
}

const VIA: &str = "/http/weather/v1/forecast/oslo";

async fn kill_switch_sidecars(url: &str, bin: &Path) {
    let d = tmp("ks-sidecars");
    let procs: Vec<Proc> = (0..10)
        .map(|i| start_sidecar(bin, &d.join(format!("s{i}")), url, true))
        .collect();
    // Each ready (a call passes).
    for p in &procs {
        let mut tx = connect(p.agent).await;
        let mut n = 0;
        wait_for_async(&mut tx, p.agent, &mut n, 200).await;
    }
    let rounds = if quick() { 4 } else { 20 };
    let mut engage = Vec::new();
    let mut release = Vec::new();
    for k in 0..rounds * 2 {
        let (mode, want) = if k % 2 == 0 {
            ("halted", 503)
        } else {
            ("enforcing", 200)
        };
        let t0 = Instant::now();
        let probes: Vec<_> = procs
            .iter()
            .map(|p| {
                let addr = p.agent;
                tokio::spawn(async move {
                    let mut tx = connect(addr).await;
                    let mut n = (k as u64) << 32;
                    probe(&mut tx, addr, &mut n, want).await;
                    t0.elapsed().as_secs_f64() * 1e3
                })
            })
            .collect();
        set_mode(url, mode).await;
        for p in probes {
            let ms = p.await.unwrap();
            if want == 503 {
                engage.push(ms)
            } else {
                release.push(ms)
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p50, p99, max) = quantiles(engage.clone());
    println!(
        "kill switch → 10 sidecar processes refuse: {} samples: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        engage.len()
    );
    let (p50, p99, max) = quantiles(release);
    println!("release → 10 sidecar processes pass again: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    set_mode(url, "enforcing").await;
}

/// [`wait_for_async`] with a pause of 1 ms between calls: ten probes in a tight loop would
/// keep the two cores busy enough to delay the very sidecars they measure.
async fn probe(tx: &mut SendRequest<Full<Bytes>>, addr: SocketAddr, n: &mut u64, want: u16) {
    call_until(tx, addr, n, want, Duration::from_millis(1)).await
}

/// Call until the answer has status `want` (503 must be governance_halted), back to back.
async fn wait_for_async(
    tx: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    n: &mut u64,
    want: u16,
) {
    call_until(tx, addr, n, want, Duration::ZERO).await
}

async fn call_until(
    tx: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    n: &mut u64,
    want: u16,
    pause: Duration,
) {
    let t = Instant::now();
    loop {
        *n += 1;
        let (status, body) = weather(tx, addr, VIA, *n).await;
        if status == want && (want != 503 || body.windows(17).any(|w| w == b"governance_halted")) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "sidecar {addr} never answered {want}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

// === a big snapshot ===

fn big_bundle(contract: &str, n: usize) -> String {
    let mut s = contract.to_string();
    for i in 0..n {
        s.push_str(&format!(
            "---\napiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p9-bulk-{i:05}, tenant: acme }}\nspec:\n  status: active\n  scope: {{ agents: [bulk-agent-{i}] }}\n  match: {{ channel: http, connectors: [weather] }}\n  effect: allow\n  limits:\n    - {{ metric: requests, window: 1m, max: {}, on_breach: stop }}\n",
            100 + i
        ));
    }
    s
}

async fn big_snapshot(url: &str, contract: &str) {
    let n = if quick() { 2_000 } else { 10_000 };
    let seen = Arc::new(Mutex::new(Seen::default()));
    watchers(url, 100, seen.clone()).await;
    wait_for("watchers up", Duration::from_secs(30), || {
        seen.lock()
            .unwrap()
            .epochs
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= 100
    })
    .await;
    let text = big_bundle(contract, n);
    let t0 = Instant::now();
    let hash = apply(url, &text).await;
    let applied = t0.elapsed().as_secs_f64() * 1e3;
    wait_for("every watcher's copy", Duration::from_secs(120), || {
        seen.lock()
            .unwrap()
            .snapshots
            .get(&hash)
            .map_or(0, Vec::len)
            >= 100
    })
    .await;
    let lat: Vec<f64> = seen.lock().unwrap().snapshots[&hash]
        .iter()
        .map(|t| (*t - t0).as_secs_f64() * 1e3)
        .collect();
    let (p50, p99, max) = quantiles(lat);
    // The message each watcher got, and what a sidecar does with it.
    let mut c = pb::snapshot_watch_client::SnapshotWatchClient::new(channel(url).await)
        .max_decoding_message_size(64 << 20);
    let mut s = c
        .watch(request(pb::WatchRequest {
            sidecar: Some(pb::SidecarIdentity {
                sidecar_id: "bench-measure".into(),
                ..Default::default()
            }),
            held_snapshot: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let snap = loop {
        if let Some(pb::watch_event::Event::Snapshot(s)) = s.message().await.unwrap().unwrap().event
        {
            break s;
        }
    };
    let bytes = prost::Message::encoded_len(&snap);
    let bundle = warden::policy::overlay::Bundle {
        sources: snap
            .sources
            .iter()
            .map(|x| warden::policy::overlay::BundleSource {
                name: x.name.clone(),
                text: x.text.clone(),
            })
            .collect(),
        lifecycle: snap
            .lifecycle
            .iter()
            .map(|l| warden::policy::overlay::PolicyState {
                tenant: l.tenant.clone(),
                id: l.id.clone(),
                status: warden::service::plan::parse_status(&l.status).unwrap(),
                shadow: l.shadow,
            })
            .collect(),
    };
    let t = Instant::now();
    let compiled = bundle.compile().unwrap();
    let verify = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(compiled.hash().to_string(), hash);
    println!(
        "{n}-policy snapshot ({:.1} MiB on the wire): apply {applied:.0} ms; apply → 100 watchers hold it: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; a sidecar verifies it (compile + hash) in {verify:.0} ms",
        bytes as f64 / (1 << 20) as f64
    );
}

// === ingest ===

fn chain(sidecar: usize, n: u64) -> Vec<pb::ShippedRecord> {
    let mut prev = warden::evidence::record::genesis();
    let mut out = Vec::with_capacity(n as usize);
    for seq in 0..n {
        let mut r = warden::evidence::Record::new(
            warden::evidence::Kind::Call,
            format!("{}", uuid::Uuid::now_v7()),
            1_796_000_000_000 + seq,
        );
        r.seq = seq;
        r.prev = prev.clone();
        r.run_id = Some(format!("run-{sidecar}-{}", seq / 10));
        r.tenant = Some("acme".into());
        r.agent = Some("support-bot".into());
        r.channel = Some(warden::policy::model::Channel::Http);
        r.connector = Some("weather".into());
        r.snapshot = Some(format!("sha256:{:064x}", 7));
        let body = warden::evidence::compact::encode(&r).unwrap();
        let hash = warden::evidence::record::record_hash(&body);
        out.push(pb::ShippedRecord {
            evidence_id: r.evidence_id,
            seq,
            hash: hash.clone(),
            prev,
            body,
        });
        prev = hash;
    }
    out
}

async fn ingest(store_name: &str, store_url: &str) {
    let d = tmp(&format!("ingest-{store_name}"));
    let svc = start_service(&d, store_url).await;
    let url = format!("http://{}", svc.grpc_addr);
    let (sidecars, per) = if quick() {
        (4, 10_000u64)
    } else {
        (4, 50_000u64)
    };
    let chains: Vec<_> = (0..sidecars).map(|i| chain(i, per)).collect();
    let bytes: usize = chains.iter().flatten().map(|r| r.body.len()).sum();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in chains.into_iter().enumerate() {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client =
                pb::evidence_ingest_client::EvidenceIngestClient::new(channel(&url).await)
                    .max_encoding_message_size(64 << 20);
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let mut acks = client
                .ingest(request(tokio_stream::wrappers::ReceiverStream::new(rx)))
                .await
                .unwrap()
                .into_inner();
            let id = pb::SidecarIdentity {
                sidecar_id: format!("bench-sc-{i}"),
                ..Default::default()
            };
            for (b, batch) in c.chunks(1024).enumerate() {
                tx.send(pb::EvidenceBatch {
                    sidecar: Some(id.clone()),
                    batch: b as u64,
                    records: batch.to_vec(),
                })
                .await
                .unwrap();
                let ack = acks.message().await.unwrap().unwrap();
                assert!(ack.chain_issues.is_empty(), "{:?}", ack.chain_issues);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let total = sidecars as u64 * per;
    assert_eq!(
        svc.core.store.evidence_count(None).await.unwrap() as u64,
        total
    );
    println!(
        "evidence ingest into {store_name}: {total} records ({:.0} B each) from {sidecars} sidecars in {secs:.2} s: {:.0} records/s",
        bytes as f64 / total as f64,
        total as f64 / secs
    );
}

// === the per-call cost of shipping ===

async fn seq_p50(addr: SocketAddr, path: &str, n: usize) -> f64 {
    let mut tx = connect(addr).await;
    for i in 0..n / 10 {
        weather(&mut tx, addr, path, i as u64).await;
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (s, _) = weather(&mut tx, addr, path, 1_000_000 + i as u64).await;
        assert_eq!(s, 200);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    quantiles(lat).0
}

async fn closed_rps(addr: SocketAddr, path: &'static str, dur: Duration) -> f64 {
    let mut tasks = Vec::new();
    for k in 0..16u64 {
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(addr).await;
            let t0 = Instant::now();
            let mut n = 0u64;
            while t0.elapsed() < dur {
                let (s, _) = weather(&mut tx, addr, path, (k << 40) + n).await;
                assert_eq!(s, 200);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / dur.as_secs_f64()
}

async fn shipping_cost(url: &str, bin: &Path, weather_addr: SocketAddr) {
    let d = tmp("ship-cost");
    let on = start_sidecar(bin, &d.join("on"), url, true);
    let off = start_sidecar(bin, &d.join("off"), url, false);
    let (n, dur) = if quick() {
        (500, Duration::from_secs(2))
    } else {
        (3_000, Duration::from_secs(6))
    };
    for p in [&on, &off] {
        let mut tx = connect(p.agent).await;
        let mut k = 0;
        wait_for_async(&mut tx, p.agent, &mut k, 200).await;
    }
    let direct_path = "/v1/forecast/oslo";
    let mut rows = Vec::new();
    for round in 0..2 {
        let d50 = seq_p50(weather_addr, direct_path, n).await;
        let on50 = seq_p50(on.agent, VIA, n).await;
        let off50 = seq_p50(off.agent, VIA, n).await;
        let drps = closed_rps(weather_addr, direct_path, dur).await;
        let onrps = closed_rps(on.agent, VIA, dur).await;
        let offrps = closed_rps(off.agent, VIA, dur).await;
        rows.push((round, d50, on50, off50, drps, onrps, offrps));
    }
    for (round, d50, on50, off50, drps, onrps, offrps) in rows {
        println!(
            "shipping cost, run {round}: sequential p50 direct {d50:.3} ms, shipping off {off50:.3} ms (+{:.3}), on {on50:.3} ms (+{:.3}); closed loop rps direct {drps:.0}, off {offrps:.0} ({:.2}×), on {onrps:.0} ({:.2}×); on/off {:.3}",
            off50 - d50,
            on50 - d50,
            offrps / drps,
            onrps / drps,
            onrps / offrps
        );
    }
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi [[reply:1]]"}]}"#;

async fn http_chat(tx: &mut SendRequest<Full<Bytes>>, addr: SocketAddr, n: u64) -> bool {
    loop {
        let req = http::Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .header("x-warden-run-id", format!("grpc-bench-{n}"))
            .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
            .unwrap();
        if tx.ready().await.is_err() {
            *tx = connect(addr).await;
            continue;
        }
        return match tx.send_request(req).await {
            Ok(r) => {
                let ok = r.status() == 200;
                let _ = r.into_body().collect().await;
                ok
            }
            Err(_) => {
                *tx = connect(addr).await;
                false
            }
        };
    }
}

fn grpc_chat_request(n: u64) -> tonic::Request<pb::ChatRequest> {
    let mut r = tonic::Request::new(pb::ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![pb::ChatMessage {
            role: "user".into(),
            content: "hi [[reply:1]]".into(),
        }],
        ..Default::default()
    });
    r.metadata_mut().insert(
        "x-warden-run-id",
        format!("grpc-bench-g{n}").parse().unwrap(),
    );
    r
}

/// 16 callers for `dur`: 0 direct to the mock, 1 HTTP/1.1 to the sidecar, 2 gRPC to it.
async fn chat_rps(kind: u8, llm: SocketAddr, agent: SocketAddr, round: u64, dur: Duration) -> f64 {
    let endpoint = format!("http://{agent}");
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut done = 0u64;
            let base = (u64::from(kind) << 50) + (c << 32) + (round << 58);
            match kind {
                0 | 1 => {
                    let addr = if kind == 0 { llm } else { agent };
                    let mut tx = connect(addr).await;
                    while t0.elapsed() < dur {
                        assert!(http_chat(&mut tx, addr, base + done).await);
                        done += 1;
                    }
                }
                _ => {
                    let mut g =
                        pb::mediation_client::MediationClient::new(channel(&endpoint).await);
                    while t0.elapsed() < dur {
                        g.chat_completion(grpc_chat_request(base + done))
                            .await
                            .unwrap();
                        done += 1;
                    }
                }
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / dur.as_secs_f64()
}

async fn grpc_vs_http(url: &str, bin: &Path, llm: SocketAddr) {
    let d = tmp("grpc");
    let side = start_sidecar(bin, &d.join("s"), url, false);
    let mut tx = connect(side.agent).await;
    let mut k = 0;
    wait_for_async(&mut tx, side.agent, &mut k, 200).await;
    let (n, dur) = if quick() {
        (500u64, Duration::from_secs(2))
    } else {
        (3_000, Duration::from_secs(6))
    };
    let endpoint = format!("http://{}", side.agent);
    for round in 0..2u64 {
        let mut direct = connect(llm).await;
        let mut http = connect(side.agent).await;
        let mut grpc = pb::mediation_client::MediationClient::new(channel(&endpoint).await);
        let (mut ld, mut lh, mut lg) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let id = (round << 40) + i;
            let t = Instant::now();
            assert!(http_chat(&mut direct, llm, id).await);
            ld.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            assert!(http_chat(&mut http, side.agent, id).await);
            lh.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            grpc.chat_completion(grpc_chat_request(id)).await.unwrap();
            lg.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (d50, _, _) = quantiles(ld);
        let (h50, h99, _) = quantiles(lh);
        let (g50, g99, _) = quantiles(lg);
        let drps = chat_rps(0, llm, side.agent, round, dur).await;
        let hrps = chat_rps(1, llm, side.agent, round, dur).await;
        let grps = chat_rps(2, llm, side.agent, round, dur).await;
        println!(
            "chat, run {round}: sequential p50 direct {d50:.3} ms, HTTP/1.1 {h50:.3} ms (+{:.3}; p99 {h99:.3}), gRPC {g50:.3} ms (+{:.3}; p99 {g99:.3}), gRPC/HTTP p50 {:.2}×; closed loop rps direct {drps:.0}, HTTP {hrps:.0} ({:.2}×), gRPC {grps:.0} ({:.2}×), gRPC/HTTP {:.2}×",
            h50 - d50,
            g50 - d50,
            g50 / h50,
            hrps / drps,
            grps / drps,
            grps / hrps
        );
    }
}

fn authz_check(host: &str, n: u64) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    host: host.into(),
                    path: "/v1/forecast/oslo".into(),
                    scheme: "http".into(),
                    headers: [("x-warden-run-id".to_string(), format!("authz-{n}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// ext_authz `Check` at a fixed rate (open loop, 16 callers on 4 connections): p50/p99/max of
/// each check from its actual send.
async fn authz_rate(
    agent: SocketAddr,
    host: &str,
    rate: u64,
    dur: Duration,
) -> (f64, f64, f64, u64) {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let endpoint = format!("http://{agent}");
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(channel(&endpoint).await);
    }
    let callers = 16u64;
    let per = Duration::from_nanos(1_000_000_000 * callers / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for k in 0..callers {
        let mut c = AuthorizationClient::new(channels[(k % 4) as usize].clone());
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut denied = 0u64;
            let mut tick = tokio::time::interval_at(start + per * k as u32 / callers as u32, per);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let t0 = Instant::now();
            let mut n = k << 40;
            while t0.elapsed() < dur + Duration::from_millis(50) {
                tick.tick().await;
                n += 1;
                let s = Instant::now();
                let r = c.check(authz_check(&host, n)).await.unwrap().into_inner();
                lat.push(s.elapsed().as_secs_f64() * 1e3);
                if r.status.map_or(0, |s| s.code) != 0 {
                    denied += 1;
                }
            }
            (lat, denied)
        }));
    }
    let mut all = Vec::new();
    let mut denied = 0;
    for t in tasks {
        let (l, d) = t.await.unwrap();
        all.extend(l);
        denied += d;
    }
    let (p50, p99, max) = quantiles(all);
    (p50, p99, max, denied)
}

async fn authz(url: &str, bin: &Path, weather: SocketAddr) {
    let d = tmp("authz");
    let side = start_sidecar(bin, &d.join("s"), url, false);
    let mut tx = connect(side.agent).await;
    let mut k = 0;
    wait_for_async(&mut tx, side.agent, &mut k, 200).await;
    let dur = if quick() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(6)
    };
    let host = weather.to_string();
    // Warm up.
    authz_rate(side.agent, &host, 500, Duration::from_millis(500)).await;
    for rate in [1_000u64, 3_000] {
        let (p50, p99, max, denied) = authz_rate(side.agent, &host, rate, dur).await;
        println!(
            "ext_authz Check at {rate} rps (open loop, 16 callers): p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms; denied {denied}"
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        std::env::set_var("WEATHER_AUTH", "Bearer bench");
        std::env::set_var("OPENAI_API_KEY", "unused");
        let weather = warden::dev::mocks::spawn_weather("127.0.0.1:0")
            .await
            .unwrap();
        let llm = warden::dev::mocks::spawn_llm("127.0.0.1:0").await.unwrap();
        let contract = include_str!("../examples/contract/bundle.yaml")
            .replace("http://127.0.0.1:18081", &weather.base_url())
            .replace(
                "http://127.0.0.1:18080/v1",
                &format!("{}/v1", llm.base_url()),
            );
        let d = tmp("svc");
        let svc = start_service(&d, &format!("sqlite://{}", d.join("warden.db").display())).await;
        let url = format!("http://{}", svc.grpc_addr);
        apply(&url, &contract).await;
        if only("watch") {
            kill_switch_watchers(&url).await;
        }
        if only("sidecars") {
            kill_switch_sidecars(&url, &support::release_binary()).await;
        }
        if only("ship") {
            shipping_cost(&url, &support::release_binary(), weather.addr).await;
        }
        if only("authz") {
            authz(&url, &support::release_binary(), weather.addr).await;
        }
        if only("grpc") {
            grpc_vs_http(&url, &support::release_binary(), llm.addr).await;
        }
        if only("big") {
            big_snapshot(&url, &contract).await;
        }
        if only("ingest") {
            let d = tmp("ingest-db");
            ingest(
                "SQLite",
                &format!("sqlite://{}", d.join("ingest.db").display()),
            )
            .await;
            if let Some(pg) = pg::Pg::start() {
                ingest("PostgreSQL", &pg.url("postgres")).await;
            }
        }
    });
}
