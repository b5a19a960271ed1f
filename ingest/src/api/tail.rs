//! Tails and consumers: `GET /v1/logs/{log}/tail` streams the merged timeline live as
//! server-sent events (`id:` = the commit's ULID, so `Last-Event-ID` resumes exactly) or NDJSON,
//! and `PUT/GET /v1/logs/{log}/consumers/{name}` store and read durable cursors.
//!
//! A tail sends only what is final (at or below the watermark), so a reconnect with the last ID
//! seen misses nothing and repeats nothing. While behind, it reads on its own merger; once
//! caught up it joins its log's hub (`hub`: one merger feeding every live tail) and goes back
//! to its own merger, from its exact cursor, if it falls behind the hub's buffer. It sends
//! through a bounded channel of `TAIL_CHUNKS_MAX` chunks; a client that does not drain it for
//! `send_stall_ms` (config) is disconnected, never buffered without limit. A tail that arrives
//! while recovery runs waits for it, up to its `timeout`, rather than answering `503`. A tail
//! of a log that is deleted ends with a `log_deleted` error event (`error_frame`).

use super::hub::{self, Chunk, Follower, Read};
use super::{AppState, blocking, check_name, existing_log};
use crate::error::ApiError;
use crate::logs::LogEntry;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use idgen::Ulid;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use storage::Start;
use tokio::sync::broadcast::error::RecvError;

/// Chunks a tail may have queued for a slow client.
pub const TAIL_CHUNKS_MAX: usize = 16;
/// Chunks a tail reads on its own, at most, when it joins its hub (past that it is not caught
/// up: it tries again later).
pub const TAIL_JOIN_CHUNKS_MAX: usize = 8;
/// How often a tail waiting for recovery looks whether it has finished.
pub const READY_POLL_MS: u64 = 20;
/// A comment line is sent when idle this long, to keep proxies from closing the stream.
pub const TAIL_KEEPALIVE_MS: u64 = 15_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TailQuery {
    after: Option<String>,
    key: Option<String>,
    consumer: Option<String>,
    /// How long to wait for recovery, if it is running (default `read_timeout_ms`).
    timeout: Option<String>,
}

pub(super) async fn tail(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
    query: Result<Query<TailQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&log)?;
    let q = super::query(query)?;
    let wait_ms = super::timeout_ms(q.timeout.as_deref(), st.config.read_timeout_ms)?;
    wait_for_recovery(&st, Duration::from_millis(wait_ms)).await;
    let entry = existing_log(&st, &log)?;
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A reconnecting client's Last-Event-ID wins over the URL it reconnects to.
    let start = match (last_event.as_deref(), q.after.as_deref(), q.consumer.as_deref()) {
        (Some(id), _, _) => Start::After(parse(id, "Last-Event-ID")?),
        (None, Some("now"), _) => {
            // The watermark: everything after it is still to come. (Starting after the highest
            // shard mark instead could skip a commit a lagging shard appends below it; after
            // the lowest mark, a part of an undecided transaction that commits later.)
            Start::After(entry.log.watermark())
        }
        (None, Some(a), _) => Start::After(parse(a, "after")?),
        (None, None, Some(name)) => {
            check_consumer(name)?;
            let (st2, log2, name2) = (Arc::clone(&st), log.clone(), name.to_owned());
            let cursor = blocking(move || {
                st2.consumers.get(&log2, &name2).map_err(|e| ApiError::Internal(e.to_string()))
            })
            .await?;
            cursor.map_or(Start::Beginning, Start::After)
        }
        (None, None, None) => Start::Beginning,
    };
    if !matches!(q.after.as_deref(), Some("now")) || last_event.is_some() {
        super::check_not_expired(&entry, start)?;
    }
    let sse = !headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    let key = q.key.map(String::into_bytes);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(TAIL_CHUNKS_MAX);
    tokio::spawn(feed(Arc::clone(&st), entry, start, key, sse, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let mut resp = Body::from_stream(stream).into_response();
    let ct = if sse { "text/event-stream" } else { "application/x-ndjson" };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Waits until recovery has finished, at most `wait` (or until the server stops): a browser's
/// EventSource gives up for good on any answer but `200`, so a tail that reconnects while the
/// server restarts waits rather than failing. (Past `wait`, `existing_log` answers `503`.)
async fn wait_for_recovery(st: &AppState, wait: Duration) {
    let deadline = Instant::now() + wait;
    while !st.ready.load(Ordering::Acquire) && !*st.stopping.borrow() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_millis(READY_POLL_MS))).await;
    }
}

/// Consumer names follow the log-name rule.
fn check_consumer(name: &str) -> Result<(), ApiError> {
    if crate::logs::valid_name(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "invalid_consumer_name",
        format!("consumer name {name:?} must match [a-z0-9][a-z0-9._-]{{0,127}}"),
    ))
}

fn parse(text: &str, what: &str) -> Result<Ulid, ApiError> {
    idgen::parse(text).ok_or_else(|| {
        ApiError::bad_request("invalid_query", format!("{what} {text:?} is not a ULID"))
    })
}

/// Sends final commits until the client goes away or stalls: on its own merger while behind,
/// from the hub once caught up.
async fn feed(
    st: Arc<AppState>,
    entry: Arc<LogEntry>,
    start: Start,
    key: Option<Vec<u8>>,
    sse: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    st.metrics.tails_active.inc();
    // Counts the tail down however it ends.
    let _active = TailGuard(st.metrics.tails_active.clone());
    let stop = st.stopping.subscribe();
    let deleted = entry.deleted();
    let out = Out { st: Arc::clone(&st), key, sse, tx, last_sent: Instant::now(), stop, deleted };
    // The last commit sent (or passed over by the key filter): where the tail resumes.
    let cursor = match start {
        Start::After(id) => id,
        Start::Beginning | Start::From(_) => Ulid(0),
    };
    let mut t = Tail { out, cursor };
    let mut own = Follower::new(&entry, start);
    // On its own merger until caught up, then on the hub until it falls behind, and again.
    while let Some(sub) = t.catch_up(&entry, own).await
        && t.live(sub).await
    {
        st.metrics.tail_catchups.inc();
        own = Follower::new(&entry, Start::After(t.cursor));
    }
    if entry.is_deleted() && !*t.out.stop.borrow() {
        let message = format!("log {:?} was deleted", entry.name);
        // The deleted log's handle goes now, not once a slow client has taken the event.
        drop(entry);
        t.out.last(error_frame(sse, "log_deleted", &message)).await;
    }
}

/// An error that ends a stream, in the contract's JSON shape: an `error` event (SSE), or a last
/// line (NDJSON).
fn error_frame(sse: bool, code: &str, message: &str) -> Bytes {
    let error = json!({ "error": { "code": code, "message": message } });
    Bytes::from(if sse { format!("event: error\ndata: {error}\n\n") } else { format!("{error}\n") })
}

/// One tail's client side.
struct Out {
    st: Arc<AppState>,
    key: Option<Vec<u8>>,
    sse: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    last_sent: Instant,
    /// The server is stopping: the stream ends (a client resumes elsewhere with its cursor).
    stop: tokio::sync::watch::Receiver<bool>,
    /// The log was deleted: the stream ends with an error event.
    deleted: tokio::sync::watch::Receiver<bool>,
}

impl Out {
    /// The commits of `chunk` above `after` (of the key asked for), framed for the client.
    fn frame(&self, chunk: &Chunk, after: Ulid) -> Bytes {
        let first = chunk.first_after(after);
        let Some(key) = self.key.as_deref() else {
            return chunk.framed_from(first, self.sse);
        };
        let mut out = Vec::new();
        for i in (first..chunk.ids.len()).filter(|&i| chunk.key(i) == key) {
            out.extend_from_slice(chunk.framed(i, self.sse));
        }
        Bytes::from(out)
    }

    /// Whether the stream is to end: the server is stopping or the log was deleted.
    fn ending(&self) -> bool {
        *self.stop.borrow() || *self.deleted.borrow()
    }

    /// Sends `bytes` (if any); `false` once the client is gone or too slow, the server stops
    /// or the log is deleted.
    async fn send(&mut self, bytes: Bytes) -> bool {
        if bytes.is_empty() {
            return !self.tx.is_closed() && !self.ending();
        }
        self.last_sent = Instant::now();
        let stall = Duration::from_millis(self.st.config.send_stall_ms);
        let sent = tokio::select! {
            sent = tokio::time::timeout(stall, self.tx.send(bytes)) => sent,
            () = set(&mut self.stop) => return false,
            () = set(&mut self.deleted) => return false,
        };
        match sent {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false, // gone
            Err(_) => {
                // Too slow: disconnect rather than buffer.
                self.st.metrics.tails_slow_disconnects.inc();
                false
            }
        }
    }

    /// Sends a keepalive comment when nothing was sent for `TAIL_KEEPALIVE_MS` (SSE);
    /// `false` once the client is gone.
    fn keepalive(&mut self) -> bool {
        if self.last_sent.elapsed() >= Duration::from_millis(TAIL_KEEPALIVE_MS) {
            self.last_sent = Instant::now();
            if self.sse
                && self.tx.try_send(Bytes::from_static(b": keepalive\n\n")).is_err()
                && self.tx.is_closed()
            {
                return false;
            }
        }
        !self.tx.is_closed() && !self.ending()
    }

    /// Sends the stream's last chunk, waiting at most `send_stall_ms` for the client to take it.
    async fn last(&mut self, bytes: Bytes) {
        let stall = Duration::from_millis(self.st.config.send_stall_ms);
        let _ = tokio::time::timeout(stall, self.tx.send(bytes)).await;
    }
}

struct Tail {
    out: Out,
    cursor: Ulid,
}

impl Tail {
    /// Reads on its own until caught up, then joins the log's hub: its subscription, or `None`
    /// when the tail is to stop (the client went away or stalled, or the storage failed).
    async fn catch_up(
        &mut self,
        entry: &Arc<LogEntry>,
        mut own: Follower,
    ) -> Option<hub::Subscription> {
        loop {
            match own.read(entry).await {
                Ok(Read::Idle) => {}
                Ok(Read::Chunk(chunk, caught_up)) => {
                    if let Some(c) = chunk
                        && !self.send(&c).await
                    {
                        return None;
                    }
                    if !caught_up {
                        continue;
                    }
                    // Caught up with what is final: join the hub, reading on our own up to its
                    // tip.
                    let sub = hub::subscribe(&self.out.st, entry);
                    let Ok((chunks, done)) = own.read_through(sub.tip, TAIL_JOIN_CHUNKS_MAX).await
                    else {
                        return None;
                    };
                    for c in &chunks {
                        if !self.send(c).await {
                            return None;
                        }
                    }
                    if done {
                        self.cursor = self.cursor.max(sub.tip);
                        return Some(sub);
                    }
                    drop(sub);
                    // A commit is published but not yet final: ask idle writers to pass it
                    // now rather than at their next tick.
                    own.nudge_waiting(&self.out.st, entry);
                }
                Err(()) => return None,
            }
            if !self.idle().await {
                return None;
            }
        }
    }

    /// Takes the hub's chunks until the client goes (`false`) or the tail falls behind its
    /// buffer, or the hub stops (`true`: read on its own again).
    async fn live(&mut self, mut sub: hub::Subscription) -> bool {
        let (mut stop, mut deleted) = (self.out.stop.clone(), self.out.deleted.clone());
        loop {
            let keepalive = self.out.last_sent + Duration::from_millis(TAIL_KEEPALIVE_MS);
            tokio::select! {
                r = sub.rx.recv() => match r {
                    Ok(chunk) => {
                        if !self.send(&chunk).await {
                            return false;
                        }
                    }
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return true,
                },
                () = self.out.tx.closed() => return false,
                () = set(&mut stop) => return false,
                () = set(&mut deleted) => return false,
                () = tokio::time::sleep_until(keepalive.into()) => {
                    if !self.out.keepalive() {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends what `chunk` holds above the cursor and moves the cursor past it.
    async fn send(&mut self, chunk: &Chunk) -> bool {
        if chunk.last() <= self.cursor {
            return true;
        }
        let bytes = self.out.frame(chunk, self.cursor);
        self.cursor = chunk.last();
        self.out.send(bytes).await
    }

    /// Sleeps one poll period; `false` once the client is gone.
    async fn idle(&mut self) -> bool {
        tokio::time::sleep(Duration::from_millis(hub::POLL_MS)).await;
        self.out.keepalive()
    }
}

/// Resolves once `flag` is set (the server stopping, the log deleted).
async fn set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            // The state is gone: nothing will ever stop this stream from here.
            std::future::pending::<()>().await;
        }
    }
}

/// Decrements the active-tail gauge when a tail's feed ends.
struct TailGuard(prometheus::IntGauge);

impl Drop for TailGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CursorBody {
    cursor: String,
}

pub(super) async fn put_consumer(
    State(st): State<Arc<AppState>>,
    Path((log, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name(&log)?;
    check_consumer(&name)?;
    st.check_ready()?;
    st.registry.get(&log).ok_or_else(|| ApiError::LogNotFound { log: log.clone() })?;
    let b: CursorBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("expected {{\"cursor\": \"<ULID>\"}}: {e}"))
    })?;
    let cursor = parse(&b.cursor, "cursor")?;
    let (st2, log2, name2) = (Arc::clone(&st), log.clone(), name.clone());
    blocking(move || {
        st2.consumers.put(&log2, &name2, cursor).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    Ok(Json(json!({ "name": name, "cursor": cursor.to_string() })))
}

pub(super) async fn get_consumer(
    State(st): State<Arc<AppState>>,
    Path((log, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_name(&log)?;
    check_consumer(&name)?;
    st.check_ready()?;
    st.registry.get(&log).ok_or_else(|| ApiError::LogNotFound { log: log.clone() })?;
    let (st2, log2, name2) = (Arc::clone(&st), log.clone(), name.clone());
    let cursor = blocking(move || {
        st2.consumers.get(&log2, &name2).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    let cursor =
        cursor.ok_or(ApiError::NotFound { what: format!("consumer {name:?} of log {log:?}") })?;
    Ok(Json(json!({ "name": name, "cursor": cursor.to_string() })))
}
