//! `GET /metrics` (Prometheus text format) and the middleware that times every request.
//!
//! The middleware labels a request by its route template (`/v1/logs/{log}/commits`, never the
//! raw path), a closed set of methods and its status; it counts `504`s as deadline misses.
//! The scrape-time families (`crate::metrics::scrape`) are filled here, from the state. What
//! it is not: the metric definitions (`crate::metrics`).

use super::{AppState, blocking};
use crate::error::ApiError;
use crate::metrics::scrape::{CONSUMER_LABELS_MAX, Families, LAG_COMMITS_COUNTED_MAX, TIER_HOT};
use crate::metrics::{method_label, route_label};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::Encoder;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Times a request until its response head and records its declared body size.
pub(super) async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let route = route_label(route.as_deref()).to_owned();
    let method = method_label(req.method());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let began = std::time::Instant::now();
    let resp = next.run(req).await;
    let m = &st.metrics;
    if let Some(n) = declared {
        m.http_body.with_label_values(&[&route]).observe(n as f64);
    }
    let status = resp.status();
    m.http_duration
        .with_label_values(&[&route, method, status.as_str()])
        .observe(began.elapsed().as_secs_f64());
    if status == StatusCode::GATEWAY_TIMEOUT {
        m.deadline_misses.with_label_values(&[&route]).inc();
    }
    resp
}

/// Every family, live and scrape-time, in the text format.
pub(super) async fn metrics(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    st.metrics.body_budget_used.set(st.body_budget.used_bytes() as i64);
    let body = blocking(move || {
        let mut families = st.metrics.gather();
        families.extend(scrape(&st));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(64 * 1024);
        prometheus::TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    })
    .await?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// The scrape-time families of `st`, now. Blocking: reads consumer files and mapped pages.
fn scrape(st: &AppState) -> Vec<prometheus::proto::MetricFamily> {
    let mut fams = Families::new();
    let now_ms = idgen::Clock::now_ms(&idgen::SystemClock);

    fams.f("shardlog_build_info").add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    fams.f("shardlog_ready").add(&[], if st.ready.load(Ordering::Acquire) { 1.0 } else { 0.0 });
    for (w, (depth, capacity)) in st.writers.queue_depths().into_iter().enumerate() {
        let w = w.to_string();
        fams.f("shardlog_writer_queue_depth").add(&[("writer", &w)], depth as f64);
        fams.f("shardlog_writer_queue_capacity").add(&[("writer", &w)], capacity as f64);
    }

    let logs = st.registry.list();
    fams.f("shardlog_logs").add(&[], logs.len() as f64);
    let mut consumer_labels = 0;
    for e in &logs {
        let label = e.metrics.label.as_str();
        let l = [("log", label)];
        let lt = [("log", label), ("tier", TIER_HOT)];
        let stats = e.log.stats();
        fams.f("shardlog_storage_commits").add(&l, stats.commits as f64);
        fams.f("shardlog_storage_bytes").add(&lt, stats.bytes as f64);
        fams.f("shardlog_storage_segments").add(&lt, stats.segments as f64);
        fams.f("shardlog_background_errors_total").add(&l, stats.background_errors as f64);
        for (i, s) in stats.shards.iter().enumerate() {
            let shard = i.to_string();
            let st_ = [("shard", shard.as_str()), ("tier", TIER_HOT)];
            fams.f("shardlog_shard_commits").add(&[("shard", &shard)], s.commits as f64);
            fams.f("shardlog_shard_bytes").add(&st_, s.bytes as f64);
            fams.f("shardlog_shard_segments").add(&st_, s.segments as f64);
            fams.f("shardlog_segment_rolls_total").add(&l, s.rolls as f64);
            fams.f("shardlog_segment_inline_prepares_total").add(&l, s.inline_prepares as f64);
            fams.f("shardlog_clock_regressions_total").add(&l, s.clock_regressions as f64);
        }
        let watermark = e.log.watermark();
        // A mark of zero means no mark yet (a log opened a moment ago): no lag to report.
        if watermark.0 == 0 {
            continue;
        }
        let lag_ms = now_ms.saturating_sub(watermark.timestamp_ms());
        fams.f("shardlog_watermark_lag_seconds").max(&l, lag_ms as f64 / 1000.0);
        let above = e.log.count_after(watermark, LAG_COMMITS_COUNTED_MAX).unwrap_or(0);
        fams.f("shardlog_watermark_lag_commits").add(&l, above as f64);
        let consumers = st.consumers.list(&e.name).unwrap_or_default();
        fams.f("shardlog_consumers").add(&l, consumers.len() as f64);
        for (name, cursor) in consumers {
            let own = consumer_labels < CONSUMER_LABELS_MAX && label != crate::metrics::OTHER_LOG;
            consumer_labels += usize::from(own);
            let consumer = if own { name.as_str() } else { "other" };
            let lag_ms = watermark.timestamp_ms().saturating_sub(cursor.timestamp_ms());
            fams.f("shardlog_consumer_lag_seconds")
                .max(&[("log", label), ("consumer", consumer)], lag_ms as f64 / 1000.0);
        }
    }

    let idem = &st.idempotency;
    fams.f("shardlog_idempotent_replays_total")
        .add(&[], idem.replays.load(Ordering::Relaxed) as f64);
    fams.f("shardlog_idempotency_evictions_total")
        .add(&[], idem.evictions.load(Ordering::Relaxed) as f64);
    fams.f("shardlog_idempotency_keys").add(&[], idem.len() as f64);
    if let Ok(v) = rustix::fs::statvfs(&st.config.data_dir) {
        fams.f("shardlog_disk_free_bytes").add(&[], (v.f_bavail * v.f_frsize) as f64);
        fams.f("shardlog_disk_capacity_bytes").add(&[], (v.f_blocks * v.f_frsize) as f64);
    }
    fams.finish()
}
