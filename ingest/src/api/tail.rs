//! Tails and consumers: `GET /v1/logs/{log}/tail` streams the merged timeline live as
//! server-sent events (`id:` = the commit's ULID, so `Last-Event-ID` resumes exactly) or NDJSON,
//! and `PUT/GET /v1/logs/{log}/consumers/{name}` store and read durable cursors.
//!
//! Each tail owns a merger and reads only what is final (at or below the watermark), so a
//! reconnect with the last ID seen misses nothing and repeats nothing. A tail sends through a
//! bounded channel of `TAIL_CHUNKS_MAX` chunks; a client that does not drain it for
//! `TAIL_STALL_MS` is disconnected, never buffered without limit. What it is not (yet): one
//! shared merger feeding many tails.

use super::read::render_into;
use super::{AppState, blocking, check_name, existing_log};
use crate::api::error::ApiError;
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
use std::time::Duration;
use storage::{Merger, Start};

/// Chunks a tail may have queued for a slow client.
pub const TAIL_CHUNKS_MAX: usize = 16;
/// Commits read into one chunk at most.
pub const TAIL_CHUNK_COMMITS_MAX: usize = 500;
/// A client that takes no chunk for this long is disconnected.
pub const TAIL_STALL_MS: u64 = 30_000;
/// Pause between polls when nothing new is final.
pub const TAIL_POLL_MS: u64 = 2;
/// A comment line is sent when idle this long, to keep proxies from closing the stream.
pub const TAIL_KEEPALIVE_MS: u64 = 15_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TailQuery {
    after: Option<String>,
    key: Option<String>,
    consumer: Option<String>,
}

pub(super) async fn tail(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
    query: Result<Query<TailQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = existing_log(&st, &log)?;
    let q = super::query(query)?;
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A reconnecting client's Last-Event-ID wins over the URL it reconnects to.
    let start = match (last_event.as_deref(), q.after.as_deref(), q.consumer.as_deref()) {
        (Some(id), _, _) => Start::After(parse(id, "Last-Event-ID")?),
        (None, Some("now"), _) => {
            // The watermark: everything after it is still to come. (Starting after the highest
            // shard mark instead could skip a commit a lagging shard appends below it.)
            let end = entry.log.shards().iter().map(|s| s.high_water()).min().unwrap_or(Ulid(0));
            Start::After(end)
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
    let merger = Merger::new(entry.log.shards(), start);
    tokio::spawn(feed(Arc::clone(&st), entry, merger, key, sse, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let mut resp = Body::from_stream(stream).into_response();
    let ct = if sse { "text/event-stream" } else { "application/x-ndjson" };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
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

/// Reads final commits and sends them until the client goes away or stalls.
async fn feed(
    st: Arc<AppState>,
    entry: Arc<crate::logs::LogEntry>,
    mut merger: Merger,
    key: Option<Vec<u8>>,
    sse: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let key = Arc::new(key);
    let mut idle_ms = 0;
    st.metrics.tails_active.inc();
    // Counts the tail down however it ends.
    let _active = TailGuard(st.metrics.tails_active.clone());
    // The shards' marks when the last read found nothing: while they stand still nothing new
    // can be final, so an idle tail skips the read (and its trip to the blocking pool).
    let mut idle_marks: Option<Vec<Ulid>> = None;
    loop {
        let marks: Vec<Ulid> = entry.log.shards().iter().map(|s| s.high_water()).collect();
        if idle_marks.as_ref() == Some(&marks) && merger.waiting().is_none() {
            if !wait_idle(&tx, sse, &mut idle_ms).await {
                return;
            }
            continue;
        }
        let k = Arc::clone(&key);
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut n = 0;
            while n < TAIL_CHUNK_COMMITS_MAX {
                let Some(r) = merger.next()? else { break };
                n += 1;
                if k.as_deref().is_some_and(|k| r.frame.key != k) {
                    continue;
                }
                if sse {
                    out.extend_from_slice(b"id: ");
                    out.extend_from_slice(&idgen::encode(r.frame.id));
                    out.extend_from_slice(b"\nevent: commit\ndata: ");
                    render_into(&mut out, &r);
                    out.extend_from_slice(b"\n\n");
                } else {
                    render_into(&mut out, &r);
                    out.push(b'\n');
                }
            }
            Ok::<_, storage::StorageError>((merger, n, out))
        })
        .await;
        let Ok(Ok((m, n, out))) = read else { return };
        merger = m;
        idle_marks = (n == 0).then_some(marks);
        if !out.is_empty() {
            idle_ms = 0;
            let sent = tokio::time::timeout(
                Duration::from_millis(TAIL_STALL_MS),
                tx.send(Bytes::from(out)),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return, // gone
                Err(_) => {
                    // Too slow: disconnect rather than buffer.
                    st.metrics.tails_slow_disconnects.inc();
                    return;
                }
            }
        }
        if n < TAIL_CHUNK_COMMITS_MAX {
            if tx.is_closed() {
                return;
            }
            // A commit is published but not yet final: ask idle writers to pass it now rather
            // than at their next tick.
            if let Some(waiting) = merger.waiting() {
                st.writers.nudge_to(waiting);
            }
            if !wait_idle(&tx, sse, &mut idle_ms).await {
                return;
            }
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

/// Sleeps one poll period, sending a keepalive comment when idle long enough; `false` once the
/// client is gone.
async fn wait_idle(tx: &tokio::sync::mpsc::Sender<Bytes>, sse: bool, idle_ms: &mut u64) -> bool {
    tokio::time::sleep(Duration::from_millis(TAIL_POLL_MS)).await;
    *idle_ms += TAIL_POLL_MS;
    if sse && *idle_ms >= TAIL_KEEPALIVE_MS {
        *idle_ms = 0;
        if tx.try_send(Bytes::from_static(b": keepalive\n\n")).is_err() && tx.is_closed() {
            return false;
        }
    }
    !tx.is_closed()
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
