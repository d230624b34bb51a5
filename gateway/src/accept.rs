//! The accept loop and what bounds a plain HTTP connection before it is a
//! request: a global slot count, a per-source-address count, and one
//! watchdog per connection that closes it when it stays silent too long.
//!
//! hyper has a single timer for "waiting for a request head", which on a
//! keep-alive connection also runs while the connection sits idle between
//! requests, so one value had to serve as the head timeout, the time to a
//! first request and the keep-alive idle timeout (hyper issue #3828). Like
//! Go's `net/http` and Envoy we keep them apart:
//!
//! - **first request**: a new connection must send its first byte within
//!   `--http-first-request-timeout-ms` (short: silent connections must not
//!   hold the slots others need);
//! - **head**: from its first byte a request head must be complete within
//!   `--handshake-timeout-ms` (slowloris);
//! - **request**: from its complete head a request must be answered within
//!   `--http-request-timeout-ms` (a trickled body);
//! - **keep-alive idle**: between requests a connection may stay silent for
//!   `--http-keepalive-idle-timeout-ms` (long: checkout pools reuse them).
//!
//! The watch learns of bytes from a thin wrapper around the socket
//! ([`WatchedIo`]) and of requests from a middleware ([`track_requests`]).
//! It never touches an upgraded websocket: those have their own idle and
//! ping timers (`ws::session`), and the HTTP connection's task, with its
//! watchdog, ends at the upgrade.

use crate::config::Limits;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use dashmap::DashMap;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::counter;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First back-off after a failed `accept` (out of file descriptors, say).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest back-off between failed `accept`s: the loop retries at least
/// this often once the cause goes away.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// hyper's own bound on a request head, twice ours: heads between ours and
/// this get our JSON 431 ([`header_bytes`]); hyper answers larger ones with
/// a bare 431 and closes, so memory per connection stays bounded either way.
pub const HYPER_HEAD_BYTES_FACTOR: usize = 2;

/// "Never" for a timestamp field of [`ConnWatch`].
const NONE: u64 = u64::MAX;

/// What the watchdog knows about one HTTP connection. Times are ms since the
/// connection was accepted. Written by the connection's own request path
/// and read by its watchdog, both on the connection's task or its request's
/// task: every access is `Relaxed` because each field is a self-contained
/// value (no field publishes another), and a watchdog that reads a value one
/// update late only re-checks a little later.
#[derive(Debug)]
pub struct ConnWatch {
    started: Instant,
    /// Requests being served right now (0 or 1 on HTTP/1.1).
    busy: AtomicU32,
    /// Requests served so far (0: still waiting for the first).
    served: AtomicU64,
    /// When the current request's head was complete (`NONE` when idle).
    busy_since_ms: AtomicU64,
    /// When the connection last became idle (accept, or a response).
    idle_since_ms: AtomicU64,
    /// First byte of the next request head, while idle (`NONE`: no byte yet).
    head_started_ms: AtomicU64,
    /// Rung when the state changes (a head starts, a request starts or
    /// ends), so the watchdog re-arms for the new deadline: a few times per
    /// request, never per byte.
    changed: Notify,
}

/// Why the watchdog closed a connection (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    FirstRequest,
    Head,
    Request,
    KeepAliveIdle,
}

impl Silence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstRequest => "first_request_timeout",
            Self::Head => "head_timeout",
            Self::Request => "request_timeout",
            Self::KeepAliveIdle => "keepalive_idle_timeout",
        }
    }
}

impl ConnWatch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            busy: AtomicU32::new(0),
            served: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(NONE),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NONE),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// Bytes arrived: while idle, they start the next request's head.
    fn on_bytes(&self) {
        if self.busy.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == NONE
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn on_request(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.busy_since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.head_started_ms.store(NONE, Ordering::Relaxed);
        self.changed.notify_one();
    }

    fn on_response(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.busy_since_ms.store(NONE, Ordering::Relaxed);
            self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// The next instant at which the connection must have moved on, and
    /// what it is waiting for then.
    fn deadline(&self, limits: &Limits) -> (Instant, Silence) {
        if self.busy.load(Ordering::Relaxed) > 0 {
            let since = self.busy_since_ms.load(Ordering::Relaxed);
            let since = if since == NONE { self.now_ms() } else { since };
            return (self.at(since) + limits.request_timeout(), Silence::Request);
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        if head != NONE {
            return (self.at(head) + limits.handshake_timeout(), Silence::Head);
        }
        let idle = self.at(self.idle_since_ms.load(Ordering::Relaxed));
        if self.served.load(Ordering::Relaxed) == 0 {
            (idle + limits.first_request_timeout(), Silence::FirstRequest)
        } else {
            (
                idle + limits.keepalive_idle_timeout(),
                Silence::KeepAliveIdle,
            )
        }
    }
}

/// The socket, telling its [`ConnWatch`] when bytes arrive. After a
/// websocket upgrade it keeps doing so for nobody (one relaxed load per
/// read), which is cheaper than unwrapping it.
#[derive(Debug)]
pub struct WatchedIo {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_bytes();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Middleware: tells the connection's watch when a request starts and
/// when its response is ready. Requests without a watch (tests calling the
/// router directly) pass untouched.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let watch = request.extensions().get::<Arc<ConnWatch>>().cloned();
    if let Some(w) = &watch {
        w.on_request();
    }
    let response = next.run(request).await;
    if let Some(w) = &watch {
        w.on_response();
    }
    response
}

/// Connections per source address, for the per-address limit.
#[derive(Debug, Default)]
pub struct PerSource {
    counts: DashMap<IpAddr, u32>,
}

/// One counted connection; uncounted on drop.
#[derive(Debug)]
pub struct SourceSlot {
    sources: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    /// Counts a connection from `ip`, or refuses past `max` (0: no limit).
    pub fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut count = self.counts.entry(ip).or_insert(0);
        if max > 0 && *count as usize >= max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }

    pub fn count(&self, ip: IpAddr) -> u32 {
        self.counts.get(&ip).map_or(0, |c| *c)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        // Remove the entry with the last connection, so the map holds only
        // addresses with open connections (bounded by the slot count).
        self.sources.counts.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// Refused connections that may linger at once (reading what their client
/// sent, so the refusal is not lost to a reset); beyond it they close at
/// once. Each lingers at most [`REFUSED_LINGER`].
const REFUSED_LINGERING_MAX: usize = 256;
const REFUSED_LINGER: Duration = Duration::from_millis(250);
/// Most bytes read from a refused connection before it is closed anyway.
const REFUSED_DRAIN_BYTES_MAX: usize = 64 * 1024;

/// Sends FIN after the refusal, then reads and drops the client's input
/// until it closes, for a moment, or up to a bound.
async fn linger_then_close(mut stream: TcpStream, _slot: tokio::sync::OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < REFUSED_DRAIN_BYTES_MAX {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSED_LINGER, drain).await;
}

/// The answer to a connection over its source address's limit, written
/// before anything is read: a complete HTTP response, so a client sees a
/// clear, retryable error instead of a reset.
fn over_source_limit_response(max: usize) -> Vec<u8> {
    let body = format!(
        r#"{{"error":"too_many_connections","message":"at most {max} connections from one address"}}"#
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Accepts connections until `shutdown`, serving each with `router` under
/// the limits above.
pub async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    limits: &Limits,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let http_slots = Arc::new(Semaphore::new(limits.http_connections_max));
    let sources = Arc::new(PerSource::default());
    let refused_lingering = Arc::new(Semaphore::new(REFUSED_LINGERING_MAX));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our watchdog times heads, idle connections and requests; hyper's one
    // timer would also cut keep-alive connections at the head timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(HYPER_HEAD_BYTES_FACTOR * limits.header_bytes_max.max(8 * 1024));
    let limits = Arc::new(limits.clone());
    loop {
        // Take a connection slot before accepting, so a flood waits in the
        // kernel's backlog instead of in our memory.
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = http_slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    x
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off (capped)
                    // rather than spin.
                    tracing::warn!(error = %e, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let Some(source) = sources.enter(peer.ip(), limits.http_connections_per_source_max) else {
            counter!("holdfast_http_connections_refused_total", "reason" => "per_source")
                .increment(1);
            // A fresh socket's send buffer takes this short answer whole:
            // try_write never waits. Then the request the client already
            // sent is read and dropped for a moment before closing: closing
            // with unread input sends a reset, which can destroy the answer
            // before the client reads it.
            let _ = stream.try_write(&over_source_limit_response(
                limits.http_connections_per_source_max,
            ));
            if let Ok(lingering) = refused_lingering.clone().try_acquire_owned() {
                tokio::spawn(linger_then_close(stream, lingering));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        if limits.socket_send_buffer_bytes > 0 {
            holdfast_sys::set_send_buffer(&stream, limits.socket_send_buffer_bytes);
        }
        let watch = ConnWatch::new();
        let io = WatchedIo {
            inner: stream,
            watch: watch.clone(),
        };
        let service = hyper_util::service::TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
                .layer(axum::Extension(watch.clone())),
        );
        let conn = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        tracker.spawn(async move {
            // Both released when the HTTP connection ends (or upgrades).
            let _permit = permit;
            let _source = source;
            tokio::pin!(conn);
            serve(conn, &watch, &limits, &shutdown, peer).await;
        });
    }
}

/// Drives one connection, closing it when its watch says it went silent.
async fn serve<C>(
    mut conn: Pin<&mut C>,
    watch: &ConnWatch,
    limits: &Limits,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) where
    C: std::future::Future<Output = hyper::Result<()>> + GracefulConn,
{
    let (deadline, _) = watch.deadline(limits);
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "http connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled() => {
                conn.as_mut().shutdown_gracefully();
                let _ = tokio::time::timeout(limits.request_timeout(), conn.as_mut()).await;
                return;
            }
            () = watch.changed.notified() => {
                timer.as_mut().reset(watch.deadline(limits).0);
            }
            () = &mut timer => {
                // The state may have moved since the timer was armed: only
                // a deadline that is still in force and past closes.
                let (deadline, silence) = watch.deadline(limits);
                if deadline <= Instant::now() {
                    counter!("holdfast_http_connections_closed_total", "reason" => silence.as_str())
                        .increment(1);
                    tracing::debug!(%peer, reason = silence.as_str(), "closing a silent http connection");
                    return; // dropping the connection closes the socket
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// hyper's `graceful_shutdown`, behind a trait so [`serve`] stays generic
/// over the upgradeable connection type.
pub trait GracefulConn {
    fn shutdown_gracefully(self: Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_counts_enter_refuse_and_forget() {
        let s = Arc::new(PerSource::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = s.enter(ip, 2).unwrap();
        let b = s.enter(ip, 2).unwrap();
        assert!(s.enter(ip, 2).is_none(), "the third is over the limit");
        assert!(s.enter("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(s.count(ip), 1);
        let _c = s.enter(ip, 2).unwrap();
        drop(b);
        drop(_c);
        assert!(s.counts.get(&ip).is_none(), "no entry once all are closed");
        let _unlimited: Vec<_> = (0..10).map(|_| s.enter(ip, 0).unwrap()).collect();
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_state() {
        let mut limits = crate::config::ServeArgs::for_tests().limits;
        limits.http_first_request_timeout_ms = 1_000;
        limits.handshake_timeout_ms = 2_000;
        limits.http_request_timeout_ms = 3_000;
        limits.http_keepalive_idle_timeout_ms = 4_000;
        let w = ConnWatch::new();
        let t0 = w.started;
        assert_eq!(
            w.deadline(&limits),
            (t0 + Duration::from_secs(1), Silence::FirstRequest)
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        w.on_bytes();
        assert_eq!(
            w.deadline(&limits),
            (t0 + Duration::from_millis(2_500), Silence::Head)
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        w.on_request();
        assert_eq!(
            w.deadline(&limits),
            (t0 + Duration::from_millis(4_000), Silence::Request)
        );
        w.on_bytes(); // body bytes while busy do not start a head
        tokio::time::advance(Duration::from_millis(1_000)).await;
        w.on_response();
        assert_eq!(
            w.deadline(&limits),
            (t0 + Duration::from_millis(6_000), Silence::KeepAliveIdle)
        );
    }
}
