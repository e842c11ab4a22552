//! Listeners: HTTP/1.1 and h2c on one port, each connection served on its own task, within
//! bounds: a cap on connections held at once, a header-read timeout, an idle timeout, HTTP/2
//! keep-alive pings, and an accept loop that neither spins nor stalls when the process runs
//! out of file descriptors.
//!
//! The agent listener and the admin listener are served by the same code with their own
//! [`Bounds`]; the admin one runs on its own thread and runtime (see `sidecar::start`), so
//! agent traffic cannot starve the kill switch.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::config::LimitsConfig;
use crate::spine::Reply;

/// How long a connection told to close (idle) may take to finish before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Descriptors kept back from the agent listener for everything else the process opens:
/// stdio, the runtime, the evidence spool and snapshot files, listeners, alert webhooks.
const RESERVED_FDS: u64 = 48;

/// What one listener allows.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Connections held at once; past it a new connection is closed as soon as it is
    /// accepted — or, with `evict_oldest`, the oldest held connection is closed to make room.
    pub max_connections: usize,
    /// The admin listener's policy: whoever fills it (the agent shares the pod's loopback)
    /// holds its connections only until newer ones arrive, so an operator always gets in.
    pub evict_oldest: bool,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_keepalive: Duration,
    /// A request (handler and body read included) that takes longer is answered 408; for the
    /// admin listener, whose handlers read their bodies themselves. `None`: no deadline.
    pub request_deadline: Option<Duration>,
}

impl Bounds {
    /// The agent listener's bounds: `limits.*`, the cap clamped to the descriptors there are.
    pub fn agent(l: &LimitsConfig) -> Bounds {
        let max = agent_cap(
            l.max_connections,
            l.admin_max_connections,
            nofile_soft_limit(),
        );
        Bounds {
            max_connections: max,
            evict_oldest: false,
            header_read_timeout: Duration::from_millis(l.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            http2_keepalive: Duration::from_millis(l.http2_keepalive_ms),
            request_deadline: None,
        }
    }

    /// The admin listener's bounds: its own connection budget, the same timeouts, and a
    /// deadline on each request (its handlers read their bodies without one).
    pub fn admin(l: &LimitsConfig) -> Bounds {
        Bounds {
            max_connections: l.admin_max_connections,
            evict_oldest: true,
            header_read_timeout: Duration::from_millis(l.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            http2_keepalive: Duration::from_millis(l.http2_keepalive_ms),
            request_deadline: Some(Duration::from_millis(
                l.body_read_timeout_ms.saturating_add(5_000),
            )),
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        // In this hyper the header-read timer starts whenever the connection waits for a
        // request head — on a fresh connection and between keep-alive requests alike.
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        b.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.http2_keepalive)
            .keep_alive_timeout(self.http2_keepalive);
        b
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` (Linux); `None` where
/// it cannot be read or is unlimited.
pub fn nofile_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The agent connection cap: what is configured, but below the open-file limit minus the
/// admin budget and a reserve — and halved, since an agent call may hold an upstream
/// connection too. Never below 1.
pub fn agent_cap(configured: usize, admin: usize, nofile: Option<u64>) -> usize {
    let Some(limit) = nofile else {
        return configured;
    };
    let spare = limit.saturating_sub(RESERVED_FDS + admin as u64) / 2;
    let cap = configured
        .min(usize::try_from(spare).unwrap_or(usize::MAX))
        .max(1);
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            open_file_limit = limit,
            "limits.max_connections clamped to the open-file limit (raise `ulimit -n` for more)"
        );
    }
    cap
}

/// Most waiting connections closed in one go when accept runs out of descriptors.
const DRAIN_AT_ONCE: usize = 256;

/// Too many open files, in the process or the system.
fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE and ENFILE: 24 and 23 on Linux and the BSDs alike.
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// Serve `service` on `listener` within `bounds`, until the task is dropped.
pub async fn serve<S>(listener: TcpListener, service: S, bounds: Bounds)
where
    S: tower::Service<http::Request<Incoming>, Response = Reply, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(bounds.max_connections));
    let held = Arc::new(Held::default());
    let builder = bounds.builder();
    let bounds = Arc::new(bounds);
    // One descriptor kept in hand: when accept fails for want of descriptors, it is released
    // to accept the waiting connection and close it at once, so the backlog drains and the
    // loop neither spins on the same error nor leaves clients hanging.
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accept failed");
                    last_warning = Some(Instant::now());
                }
                if out_of_descriptors(&e) {
                    // Drain the backlog through the one spare descriptor: each waiting
                    // connection is accepted and closed at once, until none is waiting (or a
                    // bound, so the loop gets back to serving). One a turn drained a flood of
                    // hundreds too slowly: clients sat in the backlog for seconds.
                    drop(spare.take());
                    for _ in 0..DRAIN_AT_ONCE {
                        match tokio::time::timeout(Duration::from_millis(2), listener.accept())
                            .await
                        {
                            Ok(Ok((s, _))) => drop(s),
                            _ => break,
                        }
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if bounds.evict_oldest && held.evict_oldest() => {
                // The evicted connection's task drops its socket, and its permit, at once.
                match tokio::time::timeout(
                    Duration::from_millis(200),
                    permits.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
            Err(_) => {
                // Over the cap: closed at once rather than queued.
                tracing::debug!(%peer, "connection cap reached; closing a new connection");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let (builder, bounds) = (builder.clone(), bounds.clone());
        let entry = held.register();
        tokio::spawn(async move {
            let evicted = entry.evict.clone();
            tokio::select! {
                _ = serve_connection(stream, permit, svc, &builder, &bounds, peer) => {}
                _ = evicted.notified() => {
                    tracing::debug!(%peer, "oldest connection closed to make room");
                }
            }
            drop(entry);
        });
    }
}

// === impl Held ===

/// The connections a listener holds, oldest first, each with the signal that closes it.
#[derive(Default)]
struct Held {
    next: AtomicU64,
    live: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<Notify>>>,
}

/// A held connection's place in [`Held`]; leaves it when dropped.
struct Entry {
    id: u64,
    evict: Arc<Notify>,
    held: Arc<Held>,
}

impl Held {
    fn register(self: &Arc<Self>) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, evict.clone());
        }
        Entry {
            id,
            evict,
            held: self.clone(),
        }
    }

    /// Tell the oldest held connection to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self.live.lock().ok().and_then(|mut l| l.pop_first());
        match oldest {
            Some((_, evict)) => {
                evict.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Ok(mut live) = self.held.live.lock() {
            live.remove(&self.id);
        }
    }
}

/// One connection: served until it ends, or closed once idle past the idle timeout.
async fn serve_connection<S>(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    service: S,
    builder: &auto::Builder<TokioExecutor>,
    bounds: &Bounds,
    peer: SocketAddr,
) where
    S: tower::Service<http::Request<Incoming>, Response = Reply, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let svc = TowerToHyperService::new(Tracked {
        inner: service,
        activity: activity.clone(),
        deadline: bounds.request_deadline,
    });
    // The permit travels with the socket: an upgraded connection (a CONNECT tunnel) keeps
    // holding it after the HTTP connection hands its socket over.
    let io = TokioIo::new(Counted {
        io: stream,
        _permit: permit,
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut closing_since: Option<tokio::time::Instant> = None;
    loop {
        let wake = match closing_since {
            Some(t) => Some(t + CLOSE_GRACE),
            None => activity.idle_deadline(bounds.idle_timeout),
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = sleep_until(wake) => {
                if activity.in_flight() > 0 {
                    continue;
                }
                if closing_since.is_some() {
                    tracing::debug!(%peer, "idle connection did not close in time; dropped");
                    return;
                }
                if activity.idle_deadline(bounds.idle_timeout)
                    .is_some_and(|d| d <= tokio::time::Instant::now())
                {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(tokio::time::Instant::now());
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

// === impl Activity ===

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    born: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request ended.
    idle_since_ms: AtomicU64,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the connection becomes idle too long; `None` while a request is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.born + since + idle)
    }

    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

/// One request in flight: until its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.changed.notify_one();
    }
}

// === impl Tracked ===

/// Counts the connection's requests in flight, response bodies included; applies the
/// listener's request deadline.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    deadline: Option<Duration>,
}

impl<S> tower::Service<http::Request<Incoming>> for Tracked<S>
where
    S: tower::Service<http::Request<Incoming>, Response = Reply, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let guard = self.activity.start();
        let fut = self.inner.call(req);
        let deadline = self.deadline;
        Box::pin(async move {
            let reply = match deadline {
                None => fut.await?,
                Some(d) => match tokio::time::timeout(d, fut).await {
                    Ok(r) => r?,
                    Err(_) => crate::connectors::json_reply(
                        http::StatusCode::REQUEST_TIMEOUT,
                        &serde_json::json!({ "error": {
                            "type": "warden_error",
                            "code": crate::codes::Code::RequestTimeout.as_str(),
                            "message": format!("the request did not complete within {} ms", d.as_millis()),
                        } }),
                    ),
                },
            };
            Ok(reply.map(|body| Holding::body(body, guard)))
        })
    }
}

/// A response body that holds `G` (a request's place in some count) until it is done.
pub struct Holding<G> {
    inner: crate::spine::Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> Holding<G> {
    pub fn body(inner: crate::spine::Body, guard: G) -> crate::spine::Body {
        BoxBody::new(Holding {
            inner,
            _guard: guard,
        })
    }
}

impl<G: Unpin> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// === impl Counted ===

/// A socket holding its place under the listener's connection cap.
struct Counted {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Bind the listener of the port called `which`, naming it and its address in the error.
pub async fn bind(
    which: &'static str,
    addr: &str,
) -> Result<(TcpListener, SocketAddr), super::SidecarError> {
    let listen = |source| super::SidecarError::Listen {
        which,
        addr: addr.to_string(),
        source,
    };
    let l = TcpListener::bind(addr).await.map_err(listen)?;
    let a = l.local_addr().map_err(listen)?;
    Ok((l, a))
}

/// Bind a listener to hand to another runtime (`TcpListener::from_std` there).
pub fn bind_std(
    which: &'static str,
    addr: &str,
) -> Result<(std::net::TcpListener, SocketAddr), super::SidecarError> {
    let listen = |source| super::SidecarError::Listen {
        which,
        addr: addr.to_string(),
        source,
    };
    let l = std::net::TcpListener::bind(addr).map_err(listen)?;
    l.set_nonblocking(true).map_err(listen)?;
    let a = l.local_addr().map_err(listen)?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_cap_leaves_descriptors_for_the_admin_port() {
        assert_eq!(agent_cap(1024, 32, None), 1024);
        assert_eq!(agent_cap(1024, 32, Some(1 << 20)), 1024);
        // 128 descriptors: 48 reserved, 32 for the admin port, half of the rest.
        assert_eq!(agent_cap(1024, 32, Some(128)), 24);
        assert_eq!(agent_cap(10, 32, Some(128)), 10);
        assert_eq!(agent_cap(1024, 32, Some(16)), 1);
    }

    #[test]
    fn the_open_file_limit_is_read() {
        if cfg!(target_os = "linux") {
            assert!(nofile_soft_limit().is_some_and(|n| n > 0));
        }
    }
}
