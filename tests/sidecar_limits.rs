//! Connection limits: slow and idle clients are closed after their timeouts, the agent
//! listener holds a bounded number of connections, and the admin port (the kill switch)
//! answers however the agent port is flooded — tried on the real binary under `ulimit -n`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: &str =
    "limits: { header_read_timeout_ms: 1000, idle_timeout_ms: 1500, body_read_timeout_ms: 1000 }\n";

/// Read until the peer closes (EOF or reset); the time it took, or `None` if still open at
/// `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(t.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Everything the peer sends until it closes (or `within` passes).
async fn read_all(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A response as [`Resp`].
async fn resp_of(r: hyper::Response<hyper::body::Incoming>) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

// === in-process: each timeout and the cap ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_refused_with_request_timeout_and_recorded() {
    let env = start_with("slow-body", |b| b, |c| format!("{c}{SHORT}")).await;
    let mut s = TcpStream::connect(env.sidecar.agent_addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 200\r\nx-warden-run-id: run-slow-body\r\n\r\n{\"model\": \"gpt-4o-mini\"",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let reply = read_all(&mut s, Duration::from_secs(5)).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let r = Resp::parse(&reply);
    let rec = env.assert_refused(&r, 408, "request_timeout").await;
    assert_eq!(rec.run_id.as_deref(), Some("run-slow-body"));
    assert_eq!(env.llm.request_count(), 0, "never reached the upstream");

    // The neighbour: a body that arrives slowly but within the timeout passes.
    let body = chat_body("gpt-4o-mini", "hello", false, None);
    let mut s = TcpStream::connect(env.sidecar.agent_addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (a, b) = body.split_at(body.len() / 2);
    s.write_all(a.as_bytes()).await.unwrap();
    // The pause is the thing under test: slow, but within the body-read timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.write_all(b.as_bytes()).await.unwrap();
    let reply = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_closed_after_their_timeouts() {
    let env = start_with("idle", |b| b, |c| format!("{c}{SHORT}")).await;
    let addr = env.sidecar.agent_addr;
    // Headers never finished: closed by the header-read timeout (1 s).
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-")
        .await
        .unwrap();
    // Nothing sent at all: closed by the idle timeout (1.5 s).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let half_took = closed_within(&mut half, Duration::from_secs(5)).await;
    let half_took = half_took.expect("a half-sent request is closed");
    assert!(half_took >= Duration::from_millis(800), "{half_took:?}");
    let silent_took = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(silent_took.is_some(), "a silent connection is closed");
    assert!(
        t.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        t.elapsed()
    );

    // HTTP/1 keep-alive: after a response, the connection waiting for its next request is
    // closed too.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let r = tx
        .send_request(
            http::Request::get("/v1/models")
                .header("host", "x")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle HTTP/1 keep-alive connection is closed")
        .unwrap()
        .ok();
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );

    // HTTP/2 (h2c, same port): no stream in flight for the idle timeout closes it.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let r = tx
        .send_request(
            http::Request::get(format!("http://{addr}/v1/models"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    assert!(
        t.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        t.elapsed()
    );

    // The neighbour: a call in flight longer than the idle timeout is not cut by it.
    let resp = env
        .chat(
            Some("run-slow-upstream"),
            chat_body("gpt-4o-mini", "hi [[slow:2500]]", false, None),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let env = start_with(
        "cap",
        |b| b,
        |c| format!("{c}limits: {{ max_connections: 4 }}\n"),
    )
    .await;
    let addr = env.sidecar.agent_addr;
    let models = || {
        http::Request::get("/v1/models")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // Four connections, each served once: the sidecar holds all four.
    let mut held = Vec::new();
    for _ in 0..4 {
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let r = tx.send_request(models()).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        held.push((tx, conn));
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(2)).await;
    assert!(took.is_some(), "the fifth connection is closed at once");
    // The held ones still serve.
    let tx = &mut held[3].0;
    tx.ready().await.expect("a held connection stays open");
    let r = tx.send_request(models()).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    // Closing connections frees their places.
    for (tx, conn) in held {
        drop(tx);
        tokio::time::timeout(Duration::from_secs(2), conn)
            .await
            .expect("the client side closes")
            .unwrap()
            .unwrap();
    }
    wait_until_async("the places to be free", Duration::from_secs(5), || async {
        let req = http::Request::get(format!("http://{addr}/v1/models"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        client().request(req).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let resp = env
        .chat(None, chat_body("gpt-4o-mini", "hello", false, None))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// One prior-knowledge HTTP/2 (h2c) connection to `addr`, for sending many calls on it.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (tx, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_capped_like_connections_on_http2() {
    // One HTTP/2 connection carries many calls, each of which may hold an upstream
    // connection: the cap counts calls too, and refuses the one too many with a record.
    let env = start_with(
        "h2-cap",
        |b| b,
        |c| format!("{c}limits: {{ max_connections: 2 }}\n"),
    )
    .await;
    let addr = env.sidecar.agent_addr;
    let tx = h2_client(addr).await;
    let call = |run: &'static str| {
        let mut tx = tx.clone();
        async move {
            let body = chat_body("gpt-4o-mini", "hi [[slow:1500]]", false, None);
            let r = tx
                .send_request(
                    http::Request::post(format!("http://{addr}/v1/chat/completions"))
                        .header("content-type", "application/json")
                        .header("x-warden-run-id", run)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
                .await
                .unwrap();
            resp_of(r).await
        }
    };
    let a = tokio::spawn(call("run-h2-a"));
    let b = tokio::spawn(call("run-h2-b"));
    wait_until("both calls at the upstream", Duration::from_secs(5), || {
        env.llm.request_count() == 2
    })
    .await;
    let c = call("run-h2-c").await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(b.status, 200, "{}", b.text());
    let rec = env.assert_refused(&c, 503, "overloaded").await;
    assert_eq!(rec.run_id.as_deref(), Some("run-h2-c"));
    assert_eq!(
        env.llm.request_count(),
        2,
        "the refused call never reached the upstream"
    );
    // Once the calls are done their places are free again.
    let d = call("run-h2-d").await;
    assert_eq!(d.status, 200, "{}", d.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_the_agent_hung_up_on_keep_their_place_until_they_end() {
    // A call the agent hangs up on goes on (to its record) and may still hold an upstream
    // connection: it keeps its place under the cap until then, so hanging up and calling
    // again cannot run more upstream calls than the cap.
    let env = start_with(
        "hangup-cap",
        |b| b,
        |c| format!("{c}limits: {{ max_connections: 4 }}\n"),
    )
    .await;
    let addr = env.sidecar.agent_addr;
    let tx = h2_client(addr).await;
    let send = |run: &'static str, content: &'static str| {
        let mut tx = tx.clone();
        async move {
            let body = chat_body("gpt-4o-mini", content, false, None);
            tx.send_request(
                http::Request::post(format!("http://{addr}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .header("x-warden-run-id", run)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await
        }
    };
    // Four slow calls, each abandoned by the agent after 300 ms.
    for run in ["run-hu-a", "run-hu-b", "run-hu-c", "run-hu-d"] {
        let _ =
            tokio::time::timeout(Duration::from_millis(300), send(run, "hi [[slow:2500]]")).await;
    }
    wait_until(
        "the abandoned calls at the upstream",
        Duration::from_secs(5),
        || env.llm.request_count() == 4,
    )
    .await;
    let r = resp_of(send("run-hu-e", "hi").await.unwrap()).await;
    env.assert_refused(&r, 503, "overloaded").await;
    assert_eq!(
        env.llm.request_count(),
        4,
        "the fifth never reached the upstream"
    );
    // Once the abandoned calls end (with their records), their places are free again.
    wait_until(
        "the abandoned calls' records",
        Duration::from_secs(10),
        || {
            let runs: Vec<_> = env.records().into_iter().filter_map(|r| r.run_id).collect();
            ["run-hu-a", "run-hu-b", "run-hu-c", "run-hu-d"]
                .iter()
                .all(|run| runs.iter().any(|r| r == run))
        },
    )
    .await;
    wait_until_async("a place to be free", Duration::from_secs(5), || async {
        send("run-hu-f", "hi")
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_admin_port_makes_room_for_the_operator() {
    // The agent shares the pod's loopback, so it can reach the admin port too: filling the
    // admin budget must not lock the operator out.
    let env = start_with(
        "admin-full",
        |b| b,
        |c| format!("{c}limits: {{ admin_max_connections: 4 }}\n"),
    )
    .await;
    let admin = env.sidecar.admin_addr;
    let mut squatters = Vec::new();
    for i in 0..12 {
        let mut s = TcpStream::connect(admin).await.unwrap();
        if i % 2 == 0 {
            // Headers sent, body stalled: a request in flight.
            s.write_all(
                b"POST /ops/mode HTTP/1.1\r\nhost: x\r\nauthorization: Bearer test-admin-token\r\n\
                  content-length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        }
        squatters.push(s);
    }
    let t = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(2), env.admin_get("/healthz"))
        .await
        .expect("/healthz answers with the admin budget full");
    assert_eq!(health.status, 200);
    let halt = tokio::time::timeout(Duration::from_secs(2), env.set_mode("halted"))
        .await
        .expect("the kill switch answers with the admin budget full");
    assert_eq!(halt.status, 200, "{}", halt.text());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The oldest squatters were the ones closed.
    let first = closed_within(&mut squatters[0], Duration::from_millis(500)).await;
    assert!(first.is_some(), "the oldest admin connection was closed");
    let resp = env
        .chat(None, chat_body("gpt-4o-mini", "hello", false, None))
        .await;
    env.assert_refused(&resp, 503, "governance_halted").await;
}

// === the real binary under a low open-file limit ===

struct Sidecar {
    child: Child,
    agent: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `warden sidecar` under `ulimit -n <nofile>`, configured with `extra`, against mocks.
fn spawn_sidecar(dir: &std::path::Path, extra: &str, nofile: u32) -> Sidecar {
    let cfg = format!(
        "identity: {{ tenant: acme, project: support, agent: support-bot }}\n\
         listen: {{ agent: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\n\
         policy: {{ source: file, files: [bundle.yaml], cache_dir: cache }}\n\
         evidence: {{ spool_dir: evidence, durability: sync }}\n\
         admin: {{ token: \"file:admin-token\" }}\n{extra}"
    );
    std::fs::write(dir.join("sidecar.yaml"), cfg).unwrap();
    std::fs::write(dir.join("admin-token"), "test-admin-token\n").unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {nofile} && exec \"$0\" sidecar --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_warden"))
        .arg(dir.join("sidecar.yaml"))
        .env("WARDEN_IT_OPENAI_KEY", UPSTREAM_KEY)
        .env("WARDEN_IT_WEATHER_AUTH", "Bearer weather-token")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        if let Some(rest) = line.strip_prefix("warden sidecar: agent http://") {
            let (agent, admin) = rest.split_once(" admin http://").unwrap();
            return Sidecar {
                child,
                agent: agent.trim().parse().unwrap(),
                admin: admin.trim().parse().unwrap(),
            };
        }
        if !line.is_empty() {
            seen.push(line);
        }
        assert!(
            Instant::now() < deadline,
            "sidecar did not start: {seen:#?}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sidecar exited ({status}): {seen:#?}");
        }
    }
}

async fn timed<F: std::future::Future>(what: &str, within: Duration, f: F) -> F::Output {
    let t = Instant::now();
    let out = tokio::time::timeout(within, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {within:?}"));
    eprintln!("{what}: {:?}", t.elapsed());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_answers_while_idle_connections_flood_the_agent_port() {
    let dir = tmpdir("flood");
    let llm = warden::dev::mocks::spawn_llm("127.0.0.1:0").await.unwrap();
    let weather = warden::dev::mocks::spawn_weather("127.0.0.1:0")
        .await
        .unwrap();
    std::fs::write(dir.join("bundle.yaml"), bundle(&llm, &weather, |b| b)).unwrap();
    let sc = spawn_sidecar(&dir, SHORT, 128);
    // The sidecar's descriptors, sampled all through the flood (no moment to wait for): the
    // most it ever holds.
    let fds = {
        let pid = sc.child.id();
        move || {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        }
    };
    let before = fds();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(fds());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let admin = |p: &str| format!("http://{}{p}", sc.admin);

    // Half-sent requests first (they fit under the cap), then several hundred idle
    // connections: far more than 128 descriptors.
    let mut half = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(sc.agent).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        half.push(s);
    }
    let mut connecting = Vec::new();
    for _ in 0..400 {
        let agent = sc.agent;
        connecting.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(agent)).await
        }));
    }
    let mut idle = Vec::new();
    for c in connecting {
        if let Ok(Ok(s)) = c.await.unwrap() {
            idle.push(s);
        }
    }
    eprintln!("{} idle connections open", idle.len());
    // The agent can reach the admin port too: it squats there as well.
    for _ in 0..40 {
        if let Ok(s) = TcpStream::connect(sc.admin).await {
            idle.push(s);
        }
    }
    let flooded = Instant::now();

    let health = timed(
        "/healthz",
        Duration::from_secs(2),
        send(
            http::Request::get(admin("/healthz"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(health.status, 200);
    let halt = timed(
        "POST /ops/mode",
        Duration::from_secs(2),
        send(
            http::Request::post(admin("/ops/mode"))
                .header("authorization", "Bearer test-admin-token")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    r#"{"mode":"halted","reason":"flood test"}"#,
                )))
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(halt.status, 200, "{}", halt.text());

    // Every connection is closed by the sidecar: over the cap at once, the held ones after
    // the header-read (1 s) and idle (1.5 s) timeouts.
    let opened = idle.len();
    let mut handles = Vec::new();
    for mut s in half.into_iter().chain(idle) {
        handles.push(tokio::spawn(async move {
            closed_within(&mut s, Duration::from_secs(8)).await
        }));
    }
    let mut still_open = 0;
    for h in handles {
        if h.await.unwrap().is_none() {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "connections the sidecar never closed");
    // The agent's share of descriptors is capped: the process keeps some free.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    eprintln!("sidecar held at most {peak} descriptors of 128 ({before} before the flood)");
    assert!(peak < 110, "{peak} descriptors in use");
    // (The agent's share under `ulimit -n 128` is (128 - 48 - 32) / 2 = 24 connections.)
    assert!(
        peak >= before + 24,
        "the samples missed the flood: {peak} at most, {before} before"
    );
    assert_eq!(
        opened, 440,
        "every connection was accepted (the backlog drains)"
    );
    assert!(
        flooded.elapsed() >= Duration::from_millis(900),
        "held connections waited for their timeouts"
    );

    // The kill switch took effect: with the flood gone, an agent call is refused.
    let resp = timed(
        "agent call",
        Duration::from_secs(5),
        send(
            http::Request::post(format!("http://{}/v1/chat/completions", sc.agent))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(chat_body(
                    "gpt-4o-mini",
                    "hello",
                    false,
                    None,
                ))))
                .unwrap(),
        ),
    )
    .await;
    // (A sidecar of its own process: its spool is read directly.)
    let decision = refusal_problem(
        resp.status,
        &|h| resp.header(h),
        &resp.body,
        503,
        "governance_halted",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    drop(sc);
    let rec = warden::evidence::read_all(&dir.join("evidence"))
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .find(|r| r.decision_id.as_deref() == Some(decision.as_str()))
        .expect("the refusal has its record");
    if let Err(e) = record_problem(&rec, "governance_halted", &|h| resp.header(h)) {
        panic!("{e}: {rec:#?}");
    }
    assert_eq!(llm.request_count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
