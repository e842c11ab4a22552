//! Loopback load harness for the data plane (`cargo bench --bench load`; figures in
//! `BENCHMARKS.md`, "Data plane (loopback load)").
//!
//! Every figure is taken against baselines measured in the same run, because the machines are
//! shared and noisy: the same requests go straight to the mock LLM ("direct"), through nginx as
//! a plain reverse proxy (when nginx is installed: the floor any proxy hop costs here), and
//! through a sidecar with `evidence.durability: sync` and with `os`. Measures:
//!
//! 1. open-loop latency at a fixed rate (3,000 rps, 32 keep-alive HTTP/1.1 connections, ~1 KB
//!    non-streamed chat completions), timed from each request's *scheduled* send time so a
//!    stall counts against every request it delays (no coordinated omission);
//! 2. closed-loop maximum throughput with 32 connections;
//! 3. time to first token of a streamed answer, sequential requests;
//! 4. resident memory of the sidecar process, idle after start-up and after the load.
//!
//! The sidecar runs as a child process (`target/release/warden sidecar`, build it first with
//! `cargo build --release`); when the binary is missing it runs in-process on its own runtime
//! and the memory figure is skipped. The mock runs in this process on its own one-thread
//! runtime; the generator runs on a current-thread runtime (plus one timer thread for the
//! open-loop schedule), so that all three share the machine's cores as little as they can.
//!
//! `WARDEN_LOAD_PERF=DIR` also records `perf record -g` of each sidecar process during its
//! closed-loop phase into `DIR/perf-<durability>.data` (perf perturbs the figures of that run).
//! `WARDEN_LOAD_QUICK=closed` (or `=open`, `=ttft`) runs one phase only, a quick look while
//! tuning; `=memory` measures only the resident memory of each sidecar after 100,000 one-shot
//! calls (no run id); `=instructions` runs each sidecar under valgrind's callgrind and counts
//! the instructions one call costs (the difference of two runs, `INSTR_WARM` calls and
//! `INSTR_WARM + INSTR_CALLS`) — a figure the shared machine's noise does not move, for an
//! A/B of two builds.
//! `WARDEN_LOAD_BIN=PATH` runs that `warden` binary as the sidecar (to compare builds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CONNS: usize = 32;
const RATE: u64 = 3_000;
const OPEN: Duration = Duration::from_secs(10);
const CLOSED: Duration = Duration::from_secs(8);
const WARM: Duration = Duration::from_secs(2);
const TTFT_N: usize = 300;
const TTFT_WARM: usize = 30;
const PATH: &str = "/v1/chat/completions";
/// Calls counted, and calls of warm-up before, by `WARDEN_LOAD_QUICK=instructions`.
const INSTR_CALLS: usize = 2_000;
const INSTR_WARM: usize = 300;
/// One-shot calls of the memory measure (`WARDEN_LOAD_QUICK=memory`).
const ONE_SHOT: usize = 100_000;
const KEY_ENV: &str = "WARDEN_LOAD_OPENAI_KEY";
const WEATHER_ENV: &str = "WARDEN_LOAD_WEATHER_AUTH";

// === request bodies ===

/// A non-streamed chat completion padded to about 1 KB, answered with 16 words.
fn plain_body() -> Bytes {
    let filler = "the quick brown fox jumps over the lazy dog while the support agent reads \
                  the ticket history and drafts a short polite answer for the customer ";
    let mut content = String::from("Summarise the conversation below in one line. ");
    while content.len() < 900 {
        content.push_str(filler);
    }
    content.truncate(900);
    content.push_str(" [[reply:16]]");
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            { "role": "system", "content": "You are a helpful support agent." },
            { "role": "user", "content": content },
        ],
        "max_tokens": 16,
        "stream": false,
    })
    .to_string();
    Bytes::from(body)
}

fn streamed_body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{ "role": "user", "content": "Say something [[reply:16]]" }],
            "stream": true,
        })
        .to_string(),
    )
}

fn request(addr: SocketAddr, body: &Bytes) -> http::Request<Full<Bytes>> {
    http::Request::post(PATH)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .unwrap()
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// One request on a connection; true when it ended 200 with the whole body read.
async fn call(tx: &mut SendRequest<Full<Bytes>>, addr: SocketAddr, body: &Bytes) -> bool {
    if tx.ready().await.is_err() {
        return false;
    }
    match tx.send_request(request(addr, body)).await {
        Ok(resp) => {
            let ok = resp.status() == http::StatusCode::OK;
            resp.into_body().collect().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

// === statistics ===

#[derive(Debug, Clone, Default)]
struct Stats {
    /// Latencies in nanoseconds, sorted.
    lat: Vec<u64>,
    errors: u64,
    /// Completed requests per second over the phase.
    rps: f64,
}

impl Stats {
    fn from(mut lat: Vec<u64>, errors: u64, wall: Duration) -> Self {
        lat.sort_unstable();
        let rps = lat.len() as f64 / wall.as_secs_f64();
        Stats { lat, errors, rps }
    }

    /// Percentile `p` (0–100) in milliseconds, nearest rank.
    fn ms(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.lat.len() as f64).ceil() as usize;
        self.lat[rank.clamp(1, self.lat.len()) - 1] as f64 / 1e6
    }
}

// === load shapes ===

/// Open loop: `rate` requests per second for `dur`, spread over the connections. A timer
/// thread releases each request at its scheduled instant; whichever connection is free takes
/// it, and its latency runs from the scheduled instant, so queueing behind a stall counts.
async fn open_loop(
    conns: &mut Vec<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    body: &Bytes,
    rate: u64,
    dur: Duration,
) -> Stats {
    let n = rate * dur.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(20);
    let timer = std::thread::spawn(move || {
        for i in 0..n {
            let at = start + interval * u32::try_from(i).unwrap();
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    let mut workers = Vec::with_capacity(conns.len());
    for mut conn in conns.drain(..) {
        let (rx, body) = (rx.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::with_capacity(8192), 0u64);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(at) = next else { break };
                if call(&mut conn, addr, &body).await {
                    lat.push(at.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
            }
            (conn, lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::with_capacity(n as usize), 0);
    for w in workers {
        let (conn, l, e) = w.await.unwrap();
        conns.push(conn);
        lat.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    timer.join().unwrap();
    Stats::from(lat, errors, wall)
}

/// When a closed loop stops: after a duration, or after a number of calls in all.
#[derive(Clone, Copy)]
enum Until {
    Elapsed(Duration),
    Calls(usize),
}

/// Closed loop: every connection sends its next request as soon as the last one is answered.
async fn closed_loop(
    conns: &mut Vec<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    body: &Bytes,
    until: Until,
) -> Stats {
    let start = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(conns.len());
    for mut conn in conns.drain(..) {
        let body = body.clone();
        let sent = sent.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::with_capacity(65536), 0u64);
            loop {
                let t = Instant::now();
                let done = match until {
                    Until::Elapsed(d) => t >= start + d,
                    Until::Calls(n) => sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= n,
                };
                if done {
                    break;
                }
                if call(&mut conn, addr, &body).await {
                    lat.push(t.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
            }
            (conn, lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (conn, l, e) = w.await.unwrap();
        conns.push(conn);
        lat.extend(l);
        errors += e;
    }
    Stats::from(lat, errors, start.elapsed())
}

/// Sequential streamed requests: time until the first event arrives (the role chunk) and
/// until the first event with non-empty content arrives (the first token).
async fn ttft(addr: SocketAddr, n: usize) -> (Stats, Stats) {
    let body = streamed_body();
    let mut conn = connect(addr).await;
    let (mut byte, mut token, mut errors) = (Vec::with_capacity(n), Vec::with_capacity(n), 0);
    let start = Instant::now();
    for i in 0..n + TTFT_WARM {
        let t = Instant::now();
        match first_token(&mut conn, addr, &body).await {
            Some((b, k)) if i >= TTFT_WARM => {
                byte.push((b - t).as_nanos() as u64);
                token.push((k - t).as_nanos() as u64);
            }
            Some(_) => {}
            None => errors += 1,
        }
    }
    let wall = start.elapsed();
    (
        Stats::from(byte, errors, wall),
        Stats::from(token, errors, wall),
    )
}

/// Send one streamed request; the instants the first event and the first content token
/// arrived (the rest of the stream is read and dropped).
async fn first_token(
    conn: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    body: &Bytes,
) -> Option<(Instant, Instant)> {
    conn.ready().await.ok()?;
    let resp = conn.send_request(request(addr, body)).await.ok()?;
    if resp.status() != http::StatusCode::OK {
        return None;
    }
    let mut body = resp.into_body();
    let (mut buf, mut first_event, mut first) = (String::new(), None, None);
    while let Some(frame) = body.frame().await {
        let data = frame.ok()?.into_data().unwrap_or_default();
        if first.is_some() {
            continue;
        }
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(i) = buf.find("\n\n") {
            first_event.get_or_insert(now);
            let event: String = buf.drain(..i + 2).collect();
            let content = event
                .trim()
                .strip_prefix("data:")
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
                .and_then(|v| {
                    v.pointer("/choices/0/delta/content")
                        .and_then(|c| c.as_str())
                        .map(|c| !c.is_empty())
                });
            if content == Some(true) && first.is_none() {
                first = Some(now);
            }
        }
    }
    Some((first_event?, first?))
}

// === the sidecar under test ===

enum Sidecar {
    Process {
        child: Child,
        agent: SocketAddr,
        dir: PathBuf,
    },
    InProcess {
        rt: tokio::runtime::Runtime,
        running: Option<Box<warden::sidecar::Running>>,
        agent: SocketAddr,
        dir: PathBuf,
    },
}

impl Sidecar {
    /// The sidecar's own view of the calls that started in `[from_ms, to_ms)`: percentiles of
    /// the evidence records' `latency_us` (arrival to record, upstream included), in ms. Tells
    /// a stall inside the spine from one outside it (scheduling, the kernel, the generator).
    fn spine_latency(&self, from_ms: u64, to_ms: u64) -> Option<(f64, f64, f64)> {
        let dir = match self {
            Sidecar::Process { dir, .. } | Sidecar::InProcess { dir, .. } => dir,
        };
        let mut lat: Vec<u64> = warden::evidence::read_all(&dir.join("evidence"))
            .ok()?
            .into_iter()
            .map(|r| r.record)
            .filter(|r| (from_ms..to_ms).contains(&r.at_ms))
            .map(|r| r.latency_us)
            .collect();
        if lat.is_empty() {
            return None;
        }
        lat.sort_unstable();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        Some((p(0.5), p(0.99), p(1.0)))
    }

    fn agent(&self) -> SocketAddr {
        match self {
            Sidecar::Process { agent, .. } | Sidecar::InProcess { agent, .. } => *agent,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Sidecar::Process { child, .. } => Some(child.id()),
            Sidecar::InProcess { .. } => None,
        }
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    fn status_kib(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// User plus system CPU time of the process so far, in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        match self {
            Sidecar::Process { child, dir, .. } => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(dir);
            }
            Sidecar::InProcess {
                rt, running, dir, ..
            } => {
                let _guard = rt.enter();
                drop(running.take());
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn write_config(mock: &str, durability: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("warden-load-{}-{durability}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = include_str!("../examples/contract/bundle.yaml")
        .replace("http://127.0.0.1:18080/v1", &format!("{mock}/v1"))
        .replace("env:OPENAI_API_KEY", &format!("env:{KEY_ENV}"))
        .replace("env:WEATHER_AUTH", &format!("env:{WEATHER_ENV}"));
    std::fs::write(dir.join("bundle.yaml"), bundle).unwrap();
    let cfg = format!(
        "identity: {{ tenant: acme, project: support, agent: support-bot }}\n\
         listen: {{ agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\n\
         policy: {{ source: file, files: [bundle.yaml], cache_dir: cache }}\n\
         evidence: {{ spool_dir: evidence, durability: {durability} }}\n"
    );
    std::fs::write(dir.join("sidecar.yaml"), cfg).unwrap();
    dir
}

fn start_sidecar(bin: Option<&Path>, mock: &str, durability: &str, callgrind: bool) -> Sidecar {
    let dir = write_config(mock, durability);
    let Some(bin) = bin else {
        std::env::set_var(KEY_ENV, "upstream-key");
        std::env::set_var(WEATHER_ENV, "Bearer weather-token");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = warden::sidecar::config::SidecarConfig::load(&dir.join("sidecar.yaml")).unwrap();
        let running = rt.block_on(warden::sidecar::start(cfg)).unwrap();
        let agent = running.agent_addr;
        return Sidecar::InProcess {
            rt,
            running: Some(Box::new(running)),
            agent,
            dir,
        };
    };
    let mut cmd = if callgrind {
        // Debian's `valgrind` is a shell script that runs `valgrind.bin` as its child; run the
        // real one, so the child's pid is the one `callgrind_control` looks for.
        let real = Path::new("/usr/bin/valgrind.bin");
        let mut c = Command::new(if real.exists() {
            real.as_os_str()
        } else {
            std::ffi::OsStr::new("valgrind")
        });
        c.arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}",
                dir.join("callgrind.out").display()
            ))
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let mut child = cmd
        .args(["sidecar", "--config"])
        .arg(dir.join("sidecar.yaml"))
        .env(KEY_ENV, "upstream-key")
        .env(WEATHER_ENV, "Bearer weather-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = support::agent_addr(&mut child, durability);
    Sidecar::Process { child, agent, dir }
}

/// `target/release/warden` (or under `CARGO_TARGET_DIR`), warning when it is older than `src/`;
/// `WARDEN_LOAD_BIN=PATH` runs another build instead (an A/B of two commits in one run).
fn locate_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("WARDEN_LOAD_BIN") {
        return Some(PathBuf::from(bin));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("warden");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok()?;
    if newest(&root.join("src")).is_some_and(|src| src > built) {
        println!(
            "warning: {} is older than src/: run `cargo build --release` for current figures",
            bin.display()
        );
    }
    Some(bin)
}

fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}

/// Instructions one sidecar (`durability`) executes from start to exit after `calls` one-shot
/// calls: run under callgrind, stopped with SIGINT (it exits cleanly and callgrind writes its
/// totals).
fn instructions_of(
    bin: &Path,
    mock: &str,
    durability: &str,
    calls: usize,
    rt: &tokio::runtime::Runtime,
    body: &Bytes,
) -> u64 {
    let mut sc = start_sidecar(Some(bin), mock, durability, true);
    let addr = sc.agent();
    let s = rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(connect(addr).await);
        }
        closed_loop(&mut conns, addr, body, Until::Calls(calls)).await
    });
    assert_eq!(s.errors, 0, "{durability}: calls failed under callgrind");
    let Sidecar::Process { child, dir, .. } = &mut sc else {
        unreachable!("callgrind runs a process")
    };
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.join("callgrind.out")).expect("callgrind's output");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .expect("a totals line")
}

/// `WARDEN_LOAD_QUICK=instructions`: per durability, the instructions of `INSTR_WARM` calls and
/// of `INSTR_WARM + INSTR_CALLS` calls, start and exit included; their difference over
/// `INSTR_CALLS` is the cost of one call, whatever else the machine is doing.
fn instructions_mode(bin: &Path, mock: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = plain_body();
    for durability in ["sync", "os"] {
        let warm = instructions_of(bin, mock, durability, INSTR_WARM, &rt, &body);
        let all = instructions_of(bin, mock, durability, INSTR_WARM + INSTR_CALLS, &rt, &body);
        println!(
            "instructions sidecar {durability:<5} {INSTR_CALLS} one-shot calls: {} Ir \
             ({warm} Ir for start, {INSTR_WARM} calls and exit), {:.0} Ir a call",
            all.saturating_sub(warm),
            all.saturating_sub(warm) as f64 / INSTR_CALLS as f64
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn perf_record(pid: Option<u32>, name: &str, dur: Duration) -> Option<Child> {
    let dir = std::env::var_os("WARDEN_LOAD_PERF")?;
    let out = Path::new(&dir).join(format!("perf-{name}.data"));
    // `WARDEN_LOAD_PERF_CALLGRAPH=dwarf` for full stacks (the binary has no frame pointers).
    let graph = std::env::var("WARDEN_LOAD_PERF_CALLGRAPH").unwrap_or_else(|_| "fp".into());
    Command::new("perf")
        .args(["record", "--call-graph", &graph, "-F", "499", "-q"])
        .args(["-p", &pid?.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &dur.as_secs().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

// === main ===

struct Target {
    name: &'static str,
    addr: SocketAddr,
    sidecar: Option<usize>,
}

fn main() {
    let t0 = Instant::now();
    let bin = locate_binary();
    if bin.is_none() {
        println!(
            "target/release/warden not found: run `cargo build --release` first. The sidecar \
             runs in-process instead and the memory measure is skipped."
        );
    }
    let mock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mock")
        .enable_all()
        .build()
        .unwrap();
    let mock = mock_rt
        .block_on(warden::dev::mocks::spawn_llm("127.0.0.1:0"))
        .unwrap();
    let quick = std::env::var("WARDEN_LOAD_QUICK").unwrap_or_default();
    if quick == "instructions" {
        match bin.as_deref() {
            Some(bin) => instructions_mode(bin, &mock.base_url()),
            None => println!("WARDEN_LOAD_QUICK=instructions needs the release binary"),
        }
        return;
    }
    let sidecars = [
        start_sidecar(bin.as_deref(), &mock.base_url(), "sync", false),
        start_sidecar(bin.as_deref(), &mock.base_url(), "os", false),
    ];
    let nginx = start_nginx(mock.addr);
    let mut targets = vec![
        Target {
            name: "direct",
            addr: mock.addr,
            sidecar: None,
        },
        Target {
            name: "sidecar sync",
            addr: sidecars[0].agent(),
            sidecar: Some(0),
        },
        Target {
            name: "sidecar os",
            addr: sidecars[1].agent(),
            sidecar: Some(1),
        },
    ];
    match &nginx {
        Some(n) => targets.push(Target {
            name: "nginx",
            addr: n.addr,
            sidecar: None,
        }),
        None => println!(
            "nginx not found (WARDEN_LOAD_NGINX, or nginx on PATH or in /usr/sbin): the plain \
             reverse-proxy baseline is skipped"
        ),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = plain_body();
    let tick = clock_ticks_per_sec();

    std::thread::sleep(Duration::from_secs(1));
    let rss_idle: Vec<_> = sidecars
        .iter()
        .map(|s| (s.status_kib("VmRSS:"), s.status_kib("VmHWM:")))
        .collect();

    println!(
        "warden load: {} B request body, {CONNS} connections, open loop {RATE} rps x {}s, \
         closed loop {}s, warm-up {}s",
        body.len(),
        OPEN.as_secs(),
        CLOSED.as_secs(),
        WARM.as_secs()
    );

    let mut conns: Vec<Vec<SendRequest<Full<Bytes>>>> = rt.block_on(async {
        let mut all = Vec::new();
        for t in &targets {
            let mut v = Vec::new();
            for _ in 0..CONNS {
                v.push(connect(t.addr).await);
            }
            all.push(v);
        }
        all
    });

    // `WARDEN_LOAD_QUICK=closed` runs the closed loop only, `=open` the open loop only.
    // `=memory`: resident memory after exactly ONE_SHOT one-shot calls (no run id) per sidecar.
    if quick == "memory" {
        for (i, t) in targets.iter().enumerate() {
            let Some(sc) = t.sidecar.map(|s| &sidecars[s]) else {
                continue;
            };
            let before = sc.status_kib("VmRSS:");
            let s = rt.block_on(closed_loop(
                &mut conns[i],
                t.addr,
                &body,
                Until::Calls(ONE_SHOT),
            ));
            std::thread::sleep(Duration::from_secs(1));
            println!(
                "memory {:<13} {} one-shot calls ({} errors, {:.0} rps): VmRSS {} -> {}, VmHWM {}",
                t.name,
                s.lat.len() as u64 + s.errors,
                s.errors,
                s.rps,
                mib(before),
                mib(sc.status_kib("VmRSS:")),
                mib(sc.status_kib("VmHWM:"))
            );
        }
        return;
    }
    // 2. closed loop first: it tells which open-loop rate each target can sustain.
    let mut closed = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if quick == "open" || quick == "ttft" {
            break;
        }
        rt.block_on(closed_loop(
            &mut conns[i],
            t.addr,
            &body,
            Until::Elapsed(Duration::from_secs(1)),
        ));
        let sc = t.sidecar.map(|s| &sidecars[s]);
        let cpu0 = sc.and_then(Sidecar::cpu_ticks);
        let perf =
            sc.and_then(|s| perf_record(s.pid(), t.name.trim_start_matches("sidecar "), CLOSED));
        let s = rt.block_on(closed_loop(
            &mut conns[i],
            t.addr,
            &body,
            Until::Elapsed(CLOSED),
        ));
        let cpu = cpu_per_req(sc, cpu0, tick, &s);
        if let Some(mut p) = perf {
            let _ = p.wait();
        }
        println!(
            "closed {:<13} {:>8.0} rps  p50 {:.3} ms  p99 {:.3} ms  errors {}  sidecar cpu/req {}",
            t.name,
            s.rps,
            s.ms(50.0),
            s.ms(99.0),
            s.errors,
            fmt_us(cpu)
        );
        closed.push((s, cpu));
    }

    if quick == "closed" {
        return;
    }

    // 1. open loop at the fixed rate, then at a sustainable one if the fixed rate is not.
    let mut open = Vec::new();
    let mut rates = if quick == "ttft" { vec![] } else { vec![RATE] };
    let mut r = 0;
    while r < rates.len() {
        let rate = rates[r];
        let mut results = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            rt.block_on(open_loop(&mut conns[i], t.addr, &body, rate, WARM));
            let sc = t.sidecar.map(|s| &sidecars[s]);
            let cpu0 = sc.and_then(Sidecar::cpu_ticks);
            let from_ms = unix_ms();
            let s = rt.block_on(open_loop(&mut conns[i], t.addr, &body, rate, OPEN));
            let cpu = cpu_per_req(sc, cpu0, tick, &s);
            let sustained = s.rps >= 0.97 * rate as f64 && s.errors == 0;
            let spine = sc
                .and_then(|sc| sc.spine_latency(from_ms, unix_ms()))
                .map(|(p50, p99, max)| {
                    format!("  (spine p50 {p50:.3} p99 {p99:.3} max {max:.3} ms)")
                })
                .unwrap_or_default();
            println!(
                "open {rate} rps {:<13} done {:>7.0}/s  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3} ms  errors {}  sidecar cpu/req {}{}{spine}",
                t.name,
                s.rps,
                s.ms(50.0),
                s.ms(90.0),
                s.ms(99.0),
                s.ms(99.9),
                s.errors,
                fmt_us(cpu),
                if sustained { "" } else { "  NOT SUSTAINED" }
            );
            results.push((s, cpu, sustained));
        }
        if r == 0 && results.iter().any(|(_, _, ok)| !ok) {
            // 60 % of the slowest target's closed-loop maximum, in steps of 100 rps.
            let slowest = closed.iter().map(|(s, _)| s.rps).fold(f64::MAX, f64::min);
            let fallback = ((slowest * 0.6 / 100.0).floor() as u64 * 100).max(100);
            if fallback < RATE {
                rates.push(fallback);
            }
        }
        open.push((rate, results));
        if quick == "open" {
            return;
        }
        r += 1;
    }
    drop(conns);

    // 3. time to first token.
    let ttfts: Vec<(Stats, Stats)> = targets
        .iter()
        .map(|t| rt.block_on(ttft(t.addr, TTFT_N)))
        .collect();
    for (t, (b, s)) in targets.iter().zip(&ttfts) {
        println!(
            "ttft {:<13} first event p50 {:.3} p99 {:.3} ms  first token p50 {:.3} p99 {:.3} ms  errors {}",
            t.name,
            b.ms(50.0),
            b.ms(99.0),
            s.ms(50.0),
            s.ms(99.0),
            s.errors
        );
    }
    if quick == "ttft" {
        return;
    }

    // 4. memory after the load.
    let rss_after: Vec<_> = sidecars
        .iter()
        .map(|s| (s.status_kib("VmRSS:"), s.status_kib("VmHWM:")))
        .collect();

    report(
        &targets,
        &closed,
        &open,
        &ttfts,
        &rss_idle,
        &rss_after,
        t0,
        bin.is_some(),
    );
    drop(sidecars);
    drop(nginx);
    drop(mock);
}

/// nginx as a plain reverse proxy in front of the mock: the floor any proxy hop costs on this
/// machine. One worker (like the sidecar), keep-alive to the upstream, no buffering of
/// streamed answers, no access log.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_nginx(upstream: SocketAddr) -> Option<Nginx> {
    let bin = std::env::var_os("WARDEN_LOAD_NGINX")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("nginx"))
                    .find(|c| c.is_file())
            })
        })
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let dir = std::env::temp_dir().join(format!("warden-load-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream mock {{ server {upstream}; keepalive 64; }}\n\
         server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://mock;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).ok()?;
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let n = Nginx { child, dir, addr };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            println!("nginx did not start: the reverse-proxy baseline is skipped");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(n)
}

/// One open-loop rate: per target, the figures, the sidecar CPU per request, sustained.
type OpenRun = (u64, Vec<(Stats, Option<f64>, bool)>);

fn cpu_per_req(sc: Option<&Sidecar>, cpu0: Option<u64>, tick: f64, s: &Stats) -> Option<f64> {
    let used = sc?.cpu_ticks()? - cpu0?;
    Some(used as f64 / tick * 1e6 / s.lat.len().max(1) as f64)
}

fn fmt_us(us: Option<f64>) -> String {
    us.map(|u| format!("{u:.0} µs"))
        .unwrap_or_else(|| "-".into())
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

/// The figures as markdown tables, ready for `BENCHMARKS.md`.
#[allow(clippy::too_many_arguments)]
fn report(
    targets: &[Target],
    closed: &[(Stats, Option<f64>)],
    open: &[OpenRun],
    ttfts: &[(Stats, Stats)],
    rss_idle: &[(Option<u64>, Option<u64>)],
    rss_after: &[(Option<u64>, Option<u64>)],
    t0: Instant,
    process: bool,
) {
    println!("\n---- markdown ----\n");
    for (rate, results) in open {
        println!("Open loop, {rate} rps, {CONNS} connections, {} s (latency from the scheduled send time, ms):\n", OPEN.as_secs());
        println!("| target | done/s | p50 | p90 | p99 | p99.9 | errors | sidecar CPU/req |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (t, (s, cpu, ok)) in targets.iter().zip(results) {
            println!(
                "| {}{} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
                t.name,
                if *ok { "" } else { " (not sustained)" },
                s.rps,
                s.ms(50.0),
                s.ms(90.0),
                s.ms(99.0),
                s.ms(99.9),
                s.errors,
                fmt_us(*cpu)
            );
        }
        let d = &results[0].0;
        println!("\n| added vs direct | p50 | p99 | p50 ratio | p99 ratio |");
        println!("|---|---:|---:|---:|---:|");
        for (t, (s, _, _)) in targets.iter().zip(results).skip(1) {
            println!(
                "| {} | {:+.3} ms | {:+.3} ms | {:.2}x | {:.2}x |",
                t.name,
                s.ms(50.0) - d.ms(50.0),
                s.ms(99.0) - d.ms(99.0),
                s.ms(50.0) / d.ms(50.0),
                s.ms(99.0) / d.ms(99.0)
            );
        }
        println!();
    }
    println!(
        "Closed loop, {CONNS} connections, {} s:\n",
        CLOSED.as_secs()
    );
    // The plain reverse proxy, when it ran: the floor a proxy hop costs on this machine.
    let nginx_rps = targets
        .iter()
        .zip(closed)
        .find(|(t, _)| t.name == "nginx")
        .map(|(_, (s, _))| s.rps);
    println!("| target | rps | ratio vs direct | ratio vs nginx | p50 ms | p99 ms | errors | sidecar CPU/req |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (t, (s, cpu)) in targets.iter().zip(closed) {
        println!(
            "| {} | {:.0} | {:.2} | {} | {:.3} | {:.3} | {} | {} |",
            t.name,
            s.rps,
            s.rps / closed[0].0.rps,
            nginx_rps.map_or("-".into(), |n| format!("{:.2}", s.rps / n)),
            s.ms(50.0),
            s.ms(99.0),
            s.errors,
            fmt_us(*cpu)
        );
    }
    println!(
        "\nStreamed `[[reply:16]]`, {TTFT_N} sequential requests: time to the first event (role \
         chunk) and to the first content token (ms):\n"
    );
    println!("| target | first event p50 | p99 | first token p50 | p99 | added token p50 | added token p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let d = &ttfts[0];
    for (t, (b, s)) in targets.iter().zip(ttfts) {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:+.3} | {:+.3} |",
            t.name,
            b.ms(50.0),
            b.ms(99.0),
            s.ms(50.0),
            s.ms(99.0),
            s.ms(50.0) - d.1.ms(50.0),
            s.ms(99.0) - d.1.ms(99.0)
        );
    }
    if process {
        println!("\nSidecar process memory:\n");
        println!("| sidecar | VmRSS idle | VmRSS after load | VmHWM after load |");
        println!("|---|---:|---:|---:|");
        for (i, name) in ["sync", "os"].iter().enumerate() {
            println!(
                "| {name} | {} | {} | {} |",
                mib(rss_idle[i].0),
                mib(rss_after[i].0),
                mib(rss_after[i].1)
            );
        }
    } else {
        println!("\nSidecar process memory: skipped (no target/release/warden)");
    }
    println!("\nwhole run: {:.0} s", t0.elapsed().as_secs_f64());
}
