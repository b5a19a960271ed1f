//! `GET /v1/logs/{log}/timeline`: the merged, ULID-ordered timeline across shards, one page at a
//! time, with strong or eventual consistency under a deadline.
//!
//! A page holds only commits at or below the merged watermark (`storage::merge`), so it never
//! changes once served and `next` continues exactly after it. `strong` first waits until the
//! log's watermark (`storage::watermark`, the bound of the page itself) has passed the highest
//! shard mark at arrival, which covers every acknowledged commit (nudging idle writers so that
//! takes about a millisecond, not a tick); past `timeout` it
//! answers `504`, or with `fallback=eventual` the eventual page, marked as such. `eventual`
//! never waits.
//!
//! A page is merged first (by place, `storage::Picks`), so its head goes out before its body,
//! which is rendered a chunk at a time as the connection takes it.

use super::read::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, render_into};
use super::{AppState, existing_log};
use crate::error::ApiError;
use crate::lock;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use idgen::Ulid;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{Merger, Picks, Start};

/// How often a waiting strong read asks idle writers again to raise their marks.
const NUDGE_EVERY: Duration = Duration::from_millis(1);

/// Most commits one timeline request reads (matters with `key=`, which may skip most).
pub const TIMELINE_SCAN_MAX: usize = 100_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineQuery {
    after: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    key: Option<String>,
    consistency: Option<String>,
    timeout: Option<String>,
    fallback: Option<String>,
}

fn bound(name: &str, text: &str) -> Result<Ulid, ApiError> {
    idgen::parse_ulid_or_time(text)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("{name}: {e}")))
}

pub(super) async fn timeline(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
    query: Result<Query<TimelineQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = existing_log(&st, &log)?;
    let q = super::query(query)?;
    let start = match (q.after.as_deref(), q.from.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_query", "give after or from, not both"));
        }
        (Some(a), None) => Start::After(bound("after", a)?),
        (None, Some(f)) => Start::From(bound("from", f)?),
        (None, None) => Start::Beginning,
    };
    let to = q.to.as_deref().map(|t| bound("to", t)).transpose()?;
    if q.after.is_some() {
        super::check_not_expired(&entry, start)?;
    }
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be in 1..={PAGE_LIMIT_MAX}"),
        ));
    }
    let strong = match q.consistency.as_deref() {
        None | Some("strong") => true,
        Some("eventual") => false,
        Some(o) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("consistency {o:?} is not strong or eventual"),
            ));
        }
    };
    let fallback = match q.fallback.as_deref() {
        None => false,
        Some("eventual") => true,
        Some(o) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("fallback {o:?} is not eventual"),
            ));
        }
    };
    let timeout_ms = super::timeout_ms(q.timeout.as_deref(), st.config.read_timeout_ms)?;
    let key = q.key.map(String::into_bytes);

    // What "acknowledged before the request arrived" covers: every acknowledged commit is at
    // or below its shard's mark (raised after the publish, before the answer), so below the
    // highest mark now.
    let target = entry.log.shards().iter().map(|s| s.high_water()).max().unwrap_or(Ulid(0));
    let mut consistency: &'static str = "strong";
    if strong {
        let began = tokio::time::Instant::now();
        let deadline = began + Duration::from_millis(timeout_ms);
        let m = &st.metrics.strong;
        let mut waited = false;
        let mut next_nudge = began;
        loop {
            // Registered before the check, so a burst ending after it still wakes us.
            let burst = st.writers.bursts().notified();
            tokio::pin!(burst);
            burst.as_mut().enable();
            // Exactly what bounds the page: the watermark (`storage::watermark`).
            if entry.log.watermark() >= target {
                if waited {
                    m.waited.inc();
                    m.wait_seconds.observe(began.elapsed().as_secs_f64());
                } else {
                    m.immediate.inc();
                }
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                m.wait_seconds.observe(began.elapsed().as_secs_f64());
                if !fallback {
                    m.deadline.inc();
                    return Err(ApiError::Deadline { timeout_ms });
                }
                m.fallback.inc();
                consistency = "eventual";
                break;
            }
            waited = true;
            // One nudge per `NUDGE_EVERY` at most: every burst end wakes this loop, and a
            // nudge per wake-up keeps the writers spinning on nudges while the wait is for
            // a transaction's parts.
            if next_nudge <= tokio::time::Instant::now() {
                st.writers.nudge_to(&entry.log, target);
                next_nudge = tokio::time::Instant::now() + NUDGE_EVERY;
            }
            // Until a writer ends a burst (the nudged one raises its marks in it), or the
            // deadline. (Yielding in a loop was measured slower: on 2 cores it takes CPU from
            // the writers that must answer the nudge.)
            let _ = tokio::time::timeout_at(deadline, burst).await;
        }
    } else {
        consistency = "eventual";
    }

    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    let page_bytes_max = st.config.read_page_bytes_max;
    // The merge chooses the page (its commits by place, its `next`, its watermark) on the
    // blocking pool, and the head goes out as soon as it is chosen. The body is rendered as
    // the connection takes it, a chunk of `BODY_CHUNK_BYTES` at a time. So a client that asks
    // for the next page on seeing this one's head has it merged while this one is rendered,
    // and a page holds one chunk of rendered memory however large it is.
    let (picks, last, watermark) = super::blocking(move || {
        Ok(choose(&entry.log, start, to, limit, key.as_deref(), page_bytes_max)?)
    })
    .await?;
    let next = last.map(|id| id.to_string());
    let close = if ndjson {
        String::new()
    } else {
        let next = serde_json::to_string(&next).expect("serialises");
        format!(
            "],\"next\":{next},\"watermark\":\"{watermark}\",\"consistency\":\"{consistency}\"}}"
        )
    };
    let page = PageBody { picks, done: 0, ndjson, close: Some(close) };
    let stall = Duration::from_millis(st.config.send_stall_ms);
    let counters =
        (st.metrics.pages_slow_disconnects.clone(), st.metrics.page_chunks_from_disk.clone());
    let body = guarded_body(page, stall, counters);
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    if ndjson {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        if let Some(n) = &next {
            h.insert("x-shardlog-next", HeaderValue::from_str(n).expect("ULIDs are ASCII"));
        }
        h.insert(
            "x-shardlog-watermark",
            HeaderValue::from_str(&watermark.to_string()).expect("ULIDs are ASCII"),
        );
        h.insert("x-shardlog-consistency", HeaderValue::from_static(consistency));
    } else {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(resp)
}

/// Bytes after which a chunk of a page's body is handed to the connection: small enough that
/// rendering one (about 50 µs) does not hold a runtime thread long.
const BODY_CHUNK_BYTES: usize = 64 << 10;

/// Merges a page: at most `limit` commits (of `key`, if given) after `start` and below `to`,
/// read until `TIMELINE_SCAN_MAX` commits were passed over or the kept ones hold
/// `page_bytes_max` bytes of keys and payloads. Answers them, the last commit passed over (the
/// page's `next`), and the watermark once read. Blocking.
fn choose(
    log: &storage::Log,
    start: Start,
    to: Option<Ulid>,
    limit: usize,
    key: Option<&[u8]>,
    page_bytes_max: usize,
) -> storage::Result<(Picks, Option<Ulid>, Ulid)> {
    let mut merger = Merger::new(log.shards(), start);
    let mut picks = Picks::default();
    let mut last = None;
    let mut scanned = 0;
    while picks.len() < limit && scanned < TIMELINE_SCAN_MAX && picks.data_bytes() < page_bytes_max
    {
        let Some(p) = merger.next_placed()? else { break };
        scanned += 1;
        let id = p.id();
        if to.is_some_and(|t| id >= t) {
            break;
        }
        last = Some(id);
        if key.is_none_or(|k| p.record().frame.key == k) {
            picks.push(&p);
        }
    }
    // The bound the page was cut at, not a fresh one: a fresh watermark could pass commits
    // published since the last step, which this page does not hold.
    let watermark = merger.watermark_as_read()?;
    Ok((picks, last, watermark))
}

/// Where a page's body is, between the stream and its watchdog.
enum PageState {
    /// Waiting for the connection to ask for its next chunk.
    Idle(PageBody),
    /// A chunk is being rendered on the blocking pool (the page is with it).
    Rendering,
    /// The watchdog cut the page off.
    CutOff,
}

/// A page's body as a stream, with a watchdog: if the connection takes no chunk for `stall`,
/// the page (and the segments its picks hold alive) is dropped and the stream ends in an
/// error, so the connection closes without the final empty chunk (the client sees an
/// incomplete answer, never a short page that looks whole). A chunk whose frames are all in
/// the page cache is rendered where the connection asks for it; one that would fault on disk
/// reads is rendered on the blocking pool, so no runtime thread waits on the disk. `counters`:
/// pages cut off, chunks rendered off the runtime.
fn guarded_body(
    page: PageBody,
    stall: Duration,
    counters: (prometheus::IntCounter, prometheus::IntCounter),
) -> Body {
    struct Shared {
        page: Mutex<PageState>,
        /// When the connection last asked for a chunk.
        asked: Mutex<tokio::time::Instant>,
        /// Chunks rendered on the blocking pool.
        from_disk: prometheus::IntCounter,
    }
    let (cut_offs, from_disk) = counters;
    let shared = Arc::new(Shared {
        page: Mutex::new(PageState::Idle(page)),
        asked: Mutex::new(tokio::time::Instant::now()),
        from_disk,
    });
    // Dropped with the stream (sent whole, or the connection gone): the watchdog then ends.
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let watched = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            let due = *lock(&watched.asked) + stall;
            tokio::select! {
                _ = &mut done_rx => return,
                () = tokio::time::sleep_until(due) => {}
            }
            if lock(&watched.asked).elapsed() >= stall {
                let mut page = lock(&watched.page);
                // A chunk being rendered is the server's time, not the client's stall.
                if matches!(*page, PageState::Idle(_)) {
                    *page = PageState::CutOff;
                    cut_offs.inc();
                    return;
                }
                if matches!(*page, PageState::CutOff) {
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(Some((shared, done_tx)), |state| async move {
        let (shared, done_tx) = state?;
        *lock(&shared.asked) = tokio::time::Instant::now();
        let taken = std::mem::replace(&mut *lock(&shared.page), PageState::Rendering);
        let PageState::Idle(mut page) = taken else {
            *lock(&shared.page) = PageState::CutOff;
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "client stalled");
            return Some((Err(e), None));
        };
        let (chunk, page) = if page.next_chunk_resident() {
            (page.next_chunk(), page)
        } else {
            shared.from_disk.inc();
            match tokio::task::spawn_blocking(move || (page.next_chunk(), page)).await {
                Ok(done) => done,
                Err(e) => {
                    *lock(&shared.page) = PageState::CutOff;
                    return Some((Err(std::io::Error::other(e)), None));
                }
            }
        };
        *lock(&shared.page) = PageState::Idle(page);
        chunk.map(|chunk| (Ok(chunk), Some((shared, done_tx))))
    });
    Body::from_stream(stream)
}

/// A chosen page's body, rendered a chunk at a time: one commit a line (NDJSON), or a JSON
/// object whose `commits` are the page's and whose tail (`close`) carries `next`, `watermark`
/// and `consistency`.
struct PageBody {
    picks: Picks,
    /// Commits rendered so far.
    done: usize,
    ndjson: bool,
    /// What comes after the last; `None` once sent.
    close: Option<String>,
}

impl PageBody {
    /// Whether the frames the next chunk renders are all in memory (a cheap check: one
    /// `mincore` per segment they lie in).
    fn next_chunk_resident(&self) -> bool {
        self.close.is_none() || self.picks.resident_from(self.done, BODY_CHUNK_BYTES)
    }

    /// The next chunk of at least `BODY_CHUNK_BYTES` (or the rest), `None` at the end.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let close = self.close.as_ref()?;
        let mut chunk = Vec::with_capacity(BODY_CHUNK_BYTES + 4096);
        if self.done == 0 && !self.ndjson {
            chunk.extend_from_slice(b"{\"commits\":[");
        }
        for r in self.picks.records_from(self.done) {
            if !self.ndjson && self.done > 0 {
                chunk.push(b',');
            }
            render_into(&mut chunk, &r);
            if self.ndjson {
                chunk.push(b'\n');
            }
            self.done += 1;
            if chunk.len() >= BODY_CHUNK_BYTES {
                return Some(Bytes::from(chunk));
            }
        }
        chunk.extend_from_slice(close.as_bytes());
        self.close = None;
        (!chunk.is_empty()).then(|| Bytes::from(chunk))
    }
}
