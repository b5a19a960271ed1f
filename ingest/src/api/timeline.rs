//! `GET /v1/logs/{log}/timeline`: the merged, ULID-ordered timeline across shards, one page at a
//! time, with strong or eventual consistency under a deadline.
//!
//! A page holds only commits at or below the merged watermark (`storage::merge`), so it never
//! changes once served and `next` continues exactly after it. `strong` first waits until every
//! shard's high-water mark has passed what every shard had published when the request arrived
//! (nudging idle writers so that takes about a millisecond, not a tick); past `timeout` it
//! answers `504`, or with `fallback=eventual` the eventual page, marked as such. `eventual`
//! never waits.

use super::read::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, render_into};
use super::{AppState, blocking, existing_log};
use crate::api::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use idgen::Ulid;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use storage::{Merger, Start};

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

    // What "acknowledged before the request arrived" covers: each shard's mark now.
    let target = entry.log.shards().iter().map(|s| s.high_water()).max().unwrap_or(Ulid(0));
    let mut consistency = "strong";
    if strong {
        let began = tokio::time::Instant::now();
        let deadline = began + Duration::from_millis(timeout_ms);
        let m = &st.metrics.strong;
        let mut waited = false;
        loop {
            // Registered before the check, so a burst ending after it still wakes us.
            let burst = st.writers.bursts().notified();
            tokio::pin!(burst);
            burst.as_mut().enable();
            let settled =
                entry.log.shards().iter().map(|s| s.high_water()).min().unwrap_or(Ulid(0));
            if settled >= target {
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
            st.writers.nudge_to(target);
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
    // The page is rendered straight into its body: one commit a line (NDJSON) or the items of
    // the `commits` array.
    let page_bytes_max = st.config.read_page_bytes_max;
    let (body, last, watermark) = blocking(move || {
        let mut merger = Merger::new(entry.log.shards(), start);
        let mut body = Vec::with_capacity(limit.min(1024) * 200);
        let mut n = 0;
        let mut last = None;
        let mut scanned = 0;
        // A key filter may skip many commits: bound the work of one request; `next` still
        // points after what was scanned. Large commits: bound the page's bytes.
        while n < limit && scanned < TIMELINE_SCAN_MAX && body.len() < page_bytes_max {
            let Some(r) = merger.next()? else { break };
            scanned += 1;
            if to.is_some_and(|t| r.frame.id >= t) {
                break;
            }
            last = Some(r.frame.id);
            if key.as_deref().is_none_or(|k| r.frame.key == k) {
                if !ndjson && n > 0 {
                    body.push(b',');
                }
                render_into(&mut body, &r);
                if ndjson {
                    body.push(b'\n');
                }
                n += 1;
            }
        }
        let watermark = merger.watermark()?;
        Ok((body, last, watermark))
    })
    .await?;
    let next = last.map(|id| id.to_string());
    let consistency_header =
        HeaderValue::from_static(if consistency == "strong" { "strong" } else { "eventual" });
    if ndjson {
        let mut resp = body.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        if let Some(n) = &next {
            h.insert("x-shardlog-next", HeaderValue::from_str(n).expect("ULIDs are ASCII"));
        }
        h.insert(
            "x-shardlog-watermark",
            HeaderValue::from_str(&watermark.to_string()).expect("ULIDs are ASCII"),
        );
        h.insert("x-shardlog-consistency", consistency_header);
        return Ok(resp);
    }
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(b"{\"commits\":[");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"],\"next\":");
    out.extend_from_slice(serde_json::to_string(&next).expect("serialises").as_bytes());
    out.extend_from_slice(
        format!(",\"watermark\":\"{watermark}\",\"consistency\":\"{consistency}\"}}").as_bytes(),
    );
    let mut resp = out.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
