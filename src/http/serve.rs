//! The accept loop of both listeners, with the limits a server facing untrusted
//! clients needs and `axum::serve` does not arm: a header-read timeout, a keep-alive
//! idle timeout, a cap on open connections, and logged, counted accept errors.
//!
//! Why a loop of our own: `axum::serve` sets no timer, so hyper's header timeout never
//! runs and a client that trickles or never sends its headers holds a socket for ever.
//! hyper's own header timer also starts while a keep-alive connection sits idle, so it
//! cannot give InfluxDB 2.x's pair of limits (10 s to read a request's headers, 3 min
//! idle between requests). Each connection therefore has a small watchdog that reads
//! two clocks kept by the connection's I/O and its service:
//! - *head started*: set by the first byte that arrives while no request is in flight
//!   (and at accept), cleared when hyper hands a parsed request head to the service;
//! - *last activity*: any byte read or written, and the end of each response.
//!
//! A head that does not complete within `header_read_timeout` closes the connection,
//! as Go's `ReadHeaderTimeout` does (no answer). A connection with no request in
//! flight and no activity for `idle_timeout` is shut down gracefully. HTTP/2
//! connections only get the idle rule: their frames (pings, window updates) are not
//! request heads. Body reads are timed where bodies are read (`write::body`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

use super::tls::ReloadingAcceptor;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time from a request's first byte (or the accept) to its complete headers.
    pub header_read_timeout: Duration,
    /// How long a connection may sit with no request in flight.
    pub idle_timeout: Duration,
    /// Open connections at most; past it a new connection is accepted and closed at once.
    pub max_connections: usize,
    /// Request header fields at most (HTTP/1.1), and header bytes at most (both versions).
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// After shutdown is asked, how long open connections may take to finish.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            // InfluxDB 2.x's `http-read-header-timeout` and `http-idle-timeout`.
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
            max_connections: 10_000,
            // Go's net/http counts no header fields, only bytes (1 MiB by default).
            max_headers: 1_000,
            max_header_bytes: 1 << 20,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Connection metrics of one listener, labelled by its name (`client`, `admin`).
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    /// `accepted`, `refused_limit` (over `max_connections`), `accept_error`.
    events: IntCounterVec,
    /// Why connections ended early: `header_timeout`, `idle_timeout`.
    closed: IntCounterVec,
}

impl ConnectionMetrics {
    /// Registers the metrics of the listener `name`; a second listener reuses them.
    pub fn new(registry: &Registry, name: &str) -> ConnectionMetrics {
        let open = IntGauge::with_opts(
            Opts::new("influx_tee_connections_open", "Open connections")
                .const_label("listener", name),
        )
        .expect("static metric definition");
        let events = IntCounterVec::new(
            Opts::new(
                "influx_tee_connections_total",
                "Connections by outcome of the accept: accepted, refused_limit, accept_error",
            )
            .const_label("listener", name),
            &["outcome"],
        )
        .expect("static metric definition");
        let closed = IntCounterVec::new(
            Opts::new(
                "influx_tee_connections_closed_total",
                "Connections the proxy closed: header_timeout, idle_timeout, tls_handshake",
            )
            .const_label("listener", name),
            &["reason"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(closed.clone()),
        ] {
            // Registering twice (tests that build two proxies on one registry) is harmless.
            let _ = registry.register(collector);
        }
        ConnectionMetrics {
            open,
            events,
            closed,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections
/// finish for up to `limits.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    tls: Option<Arc<ReloadingAcceptor>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(tokio::sync::Notify::new());
    let mut accept_errors = RateLimitedLog::new(Duration::from_secs(1));
    let mut refusals = RateLimitedLog::new(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    metrics.events.with_label_values(&["accept_error"]).inc();
                    if let Some(suppressed) = accept_errors.should_log() {
                        tracing::warn!(%error, suppressed, "accept failed");
                    }
                    // Out of file descriptors (EMFILE) comes back at once: wait for some to free.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            metrics.events.with_label_values(&["refused_limit"]).inc();
            if let Some(suppressed) = refusals.should_log() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        }
        metrics.events.with_label_values(&["accepted"]).inc();
        open.fetch_add(1, Ordering::Relaxed);
        metrics.open.inc();
        let guard = OpenGuard {
            open: open.clone(),
            drained: drained.clone(),
            gauge: metrics.open.clone(),
        };
        let (router, limits, metrics, stop) = (
            router.clone(),
            limits.clone(),
            metrics.clone(),
            stop_rx.clone(),
        );
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match acceptor {
                None => serve_connection(stream, peer, router, limits, metrics, stop).await,
                Some(acceptor) => {
                    // The handshake is part of the head: a silent TLS client is a slow one.
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, limits, metrics, stop).await
                        }
                        Ok(Err(error)) => {
                            metrics.closed.with_label_values(&["tls_handshake"]).inc();
                            tracing::debug!(%peer, %error, "tls handshake failed");
                        }
                        Err(_) => {
                            metrics.closed.with_label_values(&["header_timeout"]).inc();
                        }
                    }
                }
            }
            drop(guard);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + limits.drain_timeout;
    while open.load(Ordering::Relaxed) > 0 {
        let notified = drained.notified();
        if open.load(Ordering::Relaxed) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            tracing::warn!(
                open = open.load(Ordering::Relaxed),
                "shutdown: connections still open after the drain timeout"
            );
            break;
        }
    }
    Ok(())
}

/// Counts a connection as open for as long as its task runs.
struct OpenGuard {
    open: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
    gauge: IntGauge,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
        self.drained.notify_waiters();
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnectionLimits>,
    metrics: ConnectionMetrics,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = ConnectionService {
        router,
        peer,
        activity: activity.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog below times request heads; hyper's timer would also cut idle keep-alives.
        .header_read_timeout(None)
        // A client may close its side once its request is sent (or hang up): the
        // request it sent is still read to its end and served, as Go's server does.
        // Without this hyper drops the request at the EOF, body still unread.
        .half_close(true)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let connection =
        builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let deadline = activity.next_deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()), if !shutting_down => {
                match activity.expired(&limits) {
                    Some(Expired::Header) => {
                        metrics.closed.with_label_values(&["header_timeout"]).inc();
                        tracing::debug!(%peer, "request headers not received in time; closing");
                        return;
                    }
                    Some(Expired::Idle) => {
                        metrics.closed.with_label_values(&["idle_timeout"]).inc();
                        connection.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                    None => {}
                }
            }
            () = activity.changed.notified(), if !shutting_down => {}
            _ = stop.wait_for(|stop| *stop), if !shutting_down => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

enum Expired {
    Header,
    Idle,
}

/// The clocks the watchdog reads, in milliseconds since the connection began (+1, so 0 means unset).
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    head_started_ms: AtomicU64,
    last_active_ms: AtomicU64,
    first_read_done: AtomicBool,
    http2: AtomicBool,
    /// Wakes the watchdog when a deadline moves earlier (a new head, a request done).
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // Go's ReadHeaderTimeout runs from the accept: a silent socket is a slow head.
            head_started_ms: AtomicU64::new(1),
            last_active_ms: AtomicU64::new(1),
            first_read_done: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn on_read(&self, bytes: &[u8]) {
        let now = self.now_ms();
        self.last_active_ms.store(now, Ordering::Relaxed);
        if !self.first_read_done.swap(true, Ordering::Relaxed) && bytes.starts_with(b"PRI ") {
            self.http2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_started_ms
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn on_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn on_response_done(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// When the watchdog should look again.
    fn next_deadline(&self, limits: &ConnectionLimits) -> Instant {
        let at = |ms: u64, after: Duration| self.started + Duration::from_millis(ms - 1) + after;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Instant::now() + limits.idle_timeout;
        }
        let idle = at(
            self.last_active_ms.load(Ordering::Relaxed),
            limits.idle_timeout,
        );
        match self.head_started_ms.load(Ordering::Relaxed) {
            0 => idle,
            _ if self.http2.load(Ordering::Relaxed) => idle,
            head => idle.min(at(head, limits.header_read_timeout)),
        }
    }

    fn expired(&self, limits: &ConnectionLimits) -> Option<Expired> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.now_ms();
        let head = self.head_started_ms.load(Ordering::Relaxed);
        if head != 0
            && !self.http2.load(Ordering::Relaxed)
            && now.saturating_sub(head) >= limits.header_read_timeout.as_millis() as u64
        {
            return Some(Expired::Header);
        }
        let last = self.last_active_ms.load(Ordering::Relaxed);
        (now.saturating_sub(last) >= limits.idle_timeout.as_millis() as u64)
            .then_some(Expired::Idle)
    }
}

/// The socket, noting each byte's arrival for the watchdog.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            let now = self.activity.now_ms();
            self.activity.last_active_ms.store(now, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            let now = self.activity.now_ms();
            self.activity.last_active_ms.store(now, Ordering::Relaxed);
        }
        result
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

/// The router, plus the client's address for `X-Forwarded-For` and the in-flight count.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        self.activity.on_request();
        let done = InFlight(self.activity.clone());
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        // Router is always ready; a clone per request is how axum::serve calls it too.
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| Tracked { body, _done: done }))
        })
    }
}

/// Marks the request finished when its response body has been sent or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_response_done();
    }
}

/// A response body that ends its request's in-flight mark when dropped.
pub struct Tracked {
    body: Body,
    _done: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Logs at most once per interval, telling how many it kept quiet.
struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn should_log(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Raises the soft limit of open files to the hard limit, so a burst of idle sockets
/// does not starve writers under the common soft limit of 1,024. Returns (before, after).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_counts_what_it_suppressed() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.should_log(), Some(0));
        assert_eq!(log.should_log(), None);
        assert_eq!(log.should_log(), None);
        log.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.should_log(), Some(2));
    }

    #[test]
    fn a_silent_connection_expires_as_a_slow_head_and_an_idle_one_as_idle() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(0),
            idle_timeout: Duration::from_secs(3600),
            ..ConnectionLimits::default()
        };
        let activity = Activity::new();
        assert!(matches!(activity.expired(&limits), Some(Expired::Header)));
        activity.on_request();
        assert!(
            activity.expired(&limits).is_none(),
            "a request is in flight"
        );
        activity.on_response_done();
        assert!(
            activity.expired(&limits).is_none(),
            "idle, within the idle timeout"
        );
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_millis(0),
            ..limits
        };
        assert!(matches!(activity.expired(&limits), Some(Expired::Idle)));
        activity.on_read(b"P");
        assert!(matches!(activity.expired(&limits), Some(Expired::Header)));
    }

    #[test]
    fn http2_frames_are_not_request_heads() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(0),
            ..ConnectionLimits::default()
        };
        let activity = Activity::new();
        activity.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(activity.expired(&limits).is_none());
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert!(after >= before);
    }
}
