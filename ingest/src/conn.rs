//! HTTP connections: the accept loop, and how long and how much each connection may hold.
//!
//! Every connection is watched (`Activity`, updated by its socket wrapper and its service):
//! - a request head must arrive within `header_read_timeout_ms` of its first byte;
//! - a keep-alive connection with no request is closed after `keepalive_idle_ms`;
//! - a request body that sends nothing for `body_read_timeout_ms` while it is read fails
//!   ([`BodyReadTimeout`], which the ingest handler answers `408`);
//! - an answer the client takes nothing of for twice `send_stall_ms` (at least 10 s) is cut off (a backstop:
//!   tails and pages stop their own stalled streams at `send_stall_ms`, and count it);
//! - beyond `connections_max` connections a new one is answered `503` and closed.
//!
//! Answers hyper writes on its own, for a request it could not parse (a bad `Content-Length`,
//! an over-long URI or header block), are rewritten to the contract's JSON error shape here:
//! they are the only answers written while no request is active that have no content type.
//!
//! What it is not: routing or the handlers (`crate::api`).

use crate::metrics::ConnMetrics;
use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A connection's read buffer grows to at most this. It is memory outside the body budget
/// (hyper's default, about 400 KiB, made 64 connections hold 26 MiB of it) and bounds a
/// request's header block (beyond it: `431`).
pub const READ_BUF_BYTES_MAX: usize = 64 * 1024;

/// What a connection may hold (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A begun request head must be complete within this.
    pub header_read_timeout_ms: u64,
    /// A connection without a request is closed after this.
    pub keepalive_idle_ms: u64,
    /// A body being read that sends nothing for this long fails.
    pub body_read_timeout_ms: u64,
    /// An answer the client takes nothing of for twice this long is cut off.
    pub send_stall_ms: u64,
    /// Connections held at once.
    pub connections_max: usize,
}

/// The connection-level stall cut-off is never shorter than this: tails and pages stop their
/// own stalled streams at `send_stall_ms` (and count it), which must come first.
pub const STALL_CUTOFF_MIN_MS: u64 = 10_000;

impl ConnLimits {
    /// How long a write may wait for the client before the connection is cut: twice
    /// `send_stall_ms`, at least [`STALL_CUTOFF_MIN_MS`].
    pub fn stall_cutoff_ms(&self) -> u64 {
        (2 * self.send_stall_ms).max(STALL_CUTOFF_MIN_MS)
    }

    /// The limits of `config`.
    pub fn of(config: &crate::config::Config) -> ConnLimits {
        ConnLimits {
            header_read_timeout_ms: config.header_read_timeout_ms,
            keepalive_idle_ms: config.keepalive_idle_ms,
            body_read_timeout_ms: config.body_read_timeout_ms,
            send_stall_ms: config.send_stall_ms,
            connections_max: config.connections_max,
        }
    }
}

/// Why the watch closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A request head took longer than `header_read_timeout_ms`.
    HeaderTimeout,
    /// No request for `keepalive_idle_ms`.
    Idle,
    /// The client took nothing of an answer for twice `send_stall_ms`.
    SendStall,
}

impl Closed {
    /// The `reason` label of `shardlog_http_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle",
            Closed::SendStall => "send_stall",
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// connection finish its requests (hyper's graceful shutdown) and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: ConnMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection holds a sender; `recv` gives `None` once the last one is dropped.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let open = Arc::new(AtomicUsize::new(0));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, mostly: wait for connections to close.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.connections_max {
            metrics.refused.inc();
            // A fresh socket's send buffer takes this whole; if not, the client sees a close.
            let _ = tcp.try_write(FULL_ANSWER);
            continue;
        }
        if let Err(e) = tcp.set_nodelay(true) {
            // No Nagle delay: a streamed body's last small chunk must not wait for the
            // client's delayed acknowledgement of the previous one (40 ms on Linux).
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        open.fetch_add(1, Ordering::Relaxed);
        metrics.open.inc();
        let held =
            Held { open: Arc::clone(&open), metrics: metrics.clone(), _done: done_tx.clone() };
        let (router, stop) = (router.clone(), stop_rx.clone());
        tokio::spawn(connection(tcp, router, limits, held, stop));
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// The answer to a connection beyond `connections_max`.
const FULL_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 96\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"the server holds connections_max connections\"}}\n";

/// What a live connection holds of the server's counts; released when it ends.
struct Held {
    open: Arc<AtomicUsize>,
    metrics: ConnMetrics,
    _done: tokio::sync::mpsc::Sender<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.open.dec();
    }
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    limits: ConnLimits,
    held: Held,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let Some(h2) = crate::h2c::preface(&tcp, header_timeout).await else {
        held.metrics.closed.with_label_values(&[Closed::HeaderTimeout.label()]).inc();
        return;
    };
    let io = hyper_util::rt::TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
        h1: !h2,
        inject: None,
    });
    let service = Service {
        router,
        activity: Arc::clone(&activity),
        body_read_timeout: Duration::from_millis(limits.body_read_timeout_ms),
        metrics: held.metrics.clone(),
    };
    if h2 {
        held.metrics.h2_connections.inc();
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .max_concurrent_streams(crate::h2c::H2_STREAMS_MAX)
            .max_header_list_size(READ_BUF_BYTES_MAX as u32)
            .max_send_buf_size(READ_BUF_BYTES_MAX)
            .serve_connection(io, service);
        let conn = std::pin::pin!(conn);
        drive(conn, |c| c.graceful_shutdown(), &activity, &limits, &held, stop).await;
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .max_buf_size(READ_BUF_BYTES_MAX)
            .serve_connection(io, service);
        let conn = std::pin::pin!(conn);
        drive(conn, |c| c.graceful_shutdown(), &activity, &limits, &held, stop).await;
    }
}

/// Runs a connection until it ends, breaks one of `limits`, or the server stops (then
/// gracefully, with `shutdown`).
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    shutdown: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limits: &ConnLimits,
    held: &Held,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut stopping = *stop.borrow();
    if stopping {
        shutdown(conn.as_mut());
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            why = watch(activity, limits) => {
                held.metrics.closed.with_label_values(&[why.label()]).inc();
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                shutdown(conn.as_mut());
            }
        }
    }
}

/// Resolves once `activity` breaks one of `limits` (see the module docs).
async fn watch(activity: &Activity, limits: &ConnLimits) -> Closed {
    loop {
        let now = activity.now_ms();
        let (at, why) = activity.next_deadline(limits, now);
        if at <= now
            && let Some(why) = why
        {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now).max(1))).await;
    }
}

/// "Not set" in the millisecond fields of [`Activity`].
const UNSET: u64 = u64::MAX;

/// What a connection is doing, in milliseconds since it opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Requests whose answer is not finished.
    active: AtomicU32,
    /// When `active` last fell to 0 (or the connection opened).
    idle_since_ms: AtomicU64,
    /// When the first byte of a request head arrived while none was active.
    head_since_ms: AtomicU64,
    /// When a write began to wait for the client to take bytes.
    write_blocked_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            active: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(UNSET),
            write_blocked_ms: AtomicU64::new(UNSET),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn begin(&self) {
        self.head_since_ms.store(UNSET, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The next instant a limit may be broken, and which (`None`: only look again then).
    fn next_deadline(&self, l: &ConnLimits, now: u64) -> (u64, Option<Closed>) {
        let recheck = now + l.header_read_timeout_ms.min(l.keepalive_idle_ms).min(l.send_stall_ms);
        if self.active.load(Ordering::Relaxed) == 0 {
            let head = self.head_since_ms.load(Ordering::Relaxed);
            if head != UNSET {
                return (head + l.header_read_timeout_ms, Some(Closed::HeaderTimeout));
            }
            let idle = self.idle_since_ms.load(Ordering::Relaxed);
            return (idle + l.keepalive_idle_ms, Some(Closed::Idle));
        }
        match self.write_blocked_ms.load(Ordering::Relaxed) {
            UNSET => (recheck, None),
            blocked => (blocked + l.stall_cutoff_ms(), Some(Closed::SendStall)),
        }
    }
}

/// The socket, watched: reads start the head clock, writes the stall clock, and an answer
/// hyper writes on its own is replaced by a JSON one.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// HTTP/1.1: reads start the head clock and hyper's own answers are rewritten. An HTTP/2
    /// connection's bytes are frames (pings, settings, many streams): neither applies.
    h1: bool,
    /// A replacement being written: its bytes, how many are written, and how many of the
    /// original bytes it stands for.
    inject: Option<(Vec<u8>, usize, usize)>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        let a = &this.activity;
        if this.h1
            && buf.filled().len() > before
            && a.active.load(Ordering::Relaxed) == 0
            && a.head_since_ms.load(Ordering::Relaxed) == UNSET
        {
            a.head_since_ms.store(a.now_ms(), Ordering::Relaxed);
        }
        Poll::Ready(r)
    }
}

impl Watched {
    /// Writes the pending replacement; `Ready(n)` with the original length once it is out.
    fn poll_inject(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some((bytes, at, stands_for)) = &mut self.inject else {
            return Poll::Ready(Ok(0));
        };
        while *at < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        let n = *stands_for;
        self.inject = None;
        Poll::Ready(Ok(n))
    }

    /// Starts replacing `head` (of `total` bytes) if it is an answer hyper wrote on its own.
    fn intercept(&mut self, head: &[u8], total: usize) -> bool {
        if !self.h1 || self.activity.active.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let Some(status) = automatic_status(head) else { return false };
        self.inject = Some((json_answer(status), 0, total));
        true
    }

    fn track(&self, r: &Poll<std::io::Result<usize>>) {
        let blocked = &self.activity.write_blocked_ms;
        match r {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == UNSET {
                    blocked.store(self.activity.now_ms(), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => blocked.store(UNSET, Ordering::Relaxed),
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.inject.is_some() || this.intercept(buf, buf.len()) {
            return this.poll_inject(cx);
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let total = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if this.inject.is_some() || this.intercept(first, total) {
            return this.poll_inject(cx);
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_inject(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_inject(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The status of `head` if it is an answer hyper writes on its own to a request it could not
/// parse: a whole `4xx` head with `content-length: 0` and no content type (every answer of
/// the handlers has one).
fn automatic_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.1 4")?;
    let end = memchr::memmem::find(head, b"\r\n\r\n")?;
    let lower = head[..end].to_ascii_lowercase();
    let has = |needle: &[u8]| memchr::memmem::find(&lower, needle).is_some();
    if !has(b"\r\ncontent-length: 0") || has(b"\r\ncontent-type:") {
        return None;
    }
    let digits = rest.get(..2)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(400 + u16::from(digits[0] - b'0') * 10 + u16::from(digits[1] - b'0'))
}

/// The JSON answer that replaces hyper's own answer with `status`.
fn json_answer(status: u16) -> Vec<u8> {
    let (reason, code, message) = match status {
        414 => ("URI Too Long", "uri_too_long", "the request line is too long"),
        431 => (
            "Request Header Fields Too Large",
            "headers_too_large",
            "the request's header block is too large",
        ),
        _ => (
            "Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1 (its request line, a header, or its framing \
             such as Content-Length or Transfer-Encoding)",
        ),
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The router, with every request counted active until its answer is finished and every
/// request body timed.
#[derive(Clone)]
struct Service {
    router: Router,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    metrics: ConnMetrics,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt;
        self.activity.begin();
        let guard = ActiveGuard(Arc::clone(&self.activity));
        let (timeout, metrics) = (self.body_read_timeout, self.metrics.clone());
        let req = req.map(|b| axum::body::Body::new(TimedBody::new(b, timeout, metrics)));
        let router = self.router.clone();
        Box::pin(async move {
            let resp = router.oneshot(req).await?;
            Ok(resp.map(|body| Tracked { body, _guard: guard }))
        })
    }
}

/// Counts its request active until dropped (hyper drops an answer's body once it is written).
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// An answer's body, holding its request's [`ActiveGuard`].
pub struct Tracked {
    body: axum::body::Body,
    _guard: ActiveGuard,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracked")
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body read that waited longer than `body_read_timeout_ms` for the client.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of the body for {timeout_ms} ms")]
pub struct BodyReadTimeout {
    /// The limit.
    pub timeout_ms: u64,
}

/// Whether `e` (an error reading a request body) is a [`BodyReadTimeout`].
pub fn is_body_read_timeout(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<BodyReadTimeout>() {
            return Some(t.timeout_ms);
        }
        cur = e.source();
    }
    None
}

/// A request body whose reader fails once it waited `timeout` for a frame. Only time spent
/// waiting on the client counts: a handler busy elsewhere is not the client's fault.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
    metrics: ConnMetrics,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration, metrics: ConnMetrics) -> TimedBody {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        TimedBody { inner, timeout, sleep, armed: false, metrics }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    this.sleep.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                ready!(this.sleep.as_mut().poll(cx));
                this.armed = false;
                this.metrics.body_timeouts.inc();
                let timeout_ms = this.timeout.as_millis() as u64;
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout { timeout_ms }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_are_recognised_and_handlers_answers_are_not() {
        let own = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_status(own), Some(400));
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_status(own), Some(431));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                     content-length: 0\r\n\r\n";
        assert_eq!(automatic_status(ours), None);
        let with_body = b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(automatic_status(with_body), None);
        assert_eq!(automatic_status(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(automatic_status(b"HTTP/1.1 400 Bad"), None, "not a whole head");
        let answer = String::from_utf8(json_answer(414)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
    }

    #[test]
    fn the_watch_picks_the_limit_that_applies() {
        let l = ConnLimits {
            header_read_timeout_ms: 10,
            keepalive_idle_ms: 100,
            body_read_timeout_ms: 5,
            send_stall_ms: 50,
            connections_max: 1,
        };
        let a = Activity::new();
        assert_eq!(a.next_deadline(&l, 0), (100, Some(Closed::Idle)));
        a.head_since_ms.store(7, Ordering::Relaxed);
        assert_eq!(a.next_deadline(&l, 8), (17, Some(Closed::HeaderTimeout)));
        a.begin();
        assert_eq!(a.next_deadline(&l, 20), (30, None), "an active request is not idle");
        a.write_blocked_ms.store(25, Ordering::Relaxed);
        assert_eq!(a.next_deadline(&l, 30), (25 + STALL_CUTOFF_MIN_MS, Some(Closed::SendStall)));
        a.write_blocked_ms.store(UNSET, Ordering::Relaxed);
        a.end();
        let (at, why) = a.next_deadline(&l, 40);
        assert_eq!(why, Some(Closed::Idle));
        assert!(at >= 100, "the idle clock starts when the last answer ends");
    }
}
