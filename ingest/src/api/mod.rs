//! The HTTP API (`/v1`, `/healthz`, `/readyz`): `app(state)` builds the router.
//!
//! Handlers parse and validate, then hand work to the writers or read from storage on the
//! blocking pool (a read can fault pages of a mapped file in, which must not stall the async
//! workers). What it is not: the writers or the storage.

mod access;
pub mod hub;
mod ingest;
mod logs;
mod metrics;
mod read;
pub use read::render_into;
mod streams;
mod tail;
mod timeline;

use crate::config::Config;
use crate::error::ApiError;
use crate::logs::Registry;
use crate::writers::Writers;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    /// Effective configuration.
    pub config: Config,
    /// Logs.
    pub registry: Registry,
    /// Writer threads.
    pub writers: Writers,
    /// Recovery finished and writes are accepted.
    pub ready: AtomicBool,
    /// Budget of ingest body bytes in flight (`inflight_body_bytes_max`).
    pub body_budget: crate::budget::Budget,
    /// First responses of requests with an `Idempotency-Key`.
    pub idempotency: Arc<crate::idempotency::Idempotency>,
    /// Durable consumer cursors.
    pub consumers: crate::consumers::Consumers,
    /// Prometheus families.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The mergers feeding live tails, one per log that has any.
    pub hubs: hub::Hubs,
    /// Set once the server stops: streams (tails) end, so that draining connections finishes.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// `503 unavailable` until recovery has finished.
    pub fn check_ready(&self) -> Result<(), ApiError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::Unavailable { reason: "recovery is running", retry_after_s: 1 })
        }
    }
}

/// The router over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/logs", get(logs::list))
        .route("/v1/logs/{log}", get(logs::show).put(logs::put).delete(logs::delete))
        .route("/v1/logs/{log}/commits", post(ingest::post_commits))
        .route("/v1/logs/{log}/commits/{id}", get(read::commit_by_id))
        .route("/v1/logs/{log}/shards/{shard}/commits", get(read::shard_commits))
        .route("/v1/logs/{log}/streams/{key}", get(streams::get_stream))
        .route("/v1/logs/{log}/streams/{key}/commits", post(streams::post_stream))
        .route("/v1/logs/{log}/timeline", get(timeline::timeline))
        .route("/v1/logs/{log}/tail", get(tail::tail))
        .route("/v1/logs/{log}/consumers/{name}", get(tail::get_consumer).put(tail::put_consumer))
        .fallback(|| async { ApiError::NotFound { what: "route".into() } })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(crate::error::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            use axum::response::IntoResponse;
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), access::guard))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), metrics::observe))
        .with_state(state)
}

async fn readyz(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    st.check_ready()?;
    Ok(axum::Json(serde_json::json!({"status": "ready"})))
}

/// Runs blocking work on the blocking pool; a panic there becomes an internal error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// Parses `250ms`, `2s`, `5m`, `12h`, `7d` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `410 cursor_expired` when reading from `start` would silently skip commits retention
/// removed: some shard lost commits after the cursor.
pub(crate) fn check_not_expired(
    entry: &crate::logs::LogEntry,
    start: storage::Start,
) -> Result<(), ApiError> {
    let cursor = match start {
        storage::Start::Beginning => return Ok(()),
        storage::Start::After(c) => c,
        storage::Start::From(c) => idgen::Ulid(c.0.saturating_sub(1)),
    };
    let lost = entry
        .log
        .shards()
        .iter()
        .filter_map(|s| s.retained_from())
        .filter(|&from| cursor.0.saturating_add(1) < from.0)
        .max();
    match lost {
        Some(from) => Err(ApiError::CursorExpired {
            cursor: cursor.to_string(),
            retained_from: from.to_string(),
        }),
        None => Ok(()),
    }
}

/// The query of a request, or `400 invalid_query` saying what is wrong with it.
pub(crate) fn query<Q>(
    q: Result<axum::extract::Query<Q>, axum::extract::rejection::QueryRejection>,
) -> Result<Q, ApiError> {
    q.map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// A `?timeout=` parameter in milliseconds (`default_ms` when absent), or `400 invalid_query`.
pub(crate) fn timeout_ms(text: Option<&str>, default_ms: u64) -> Result<u64, ApiError> {
    match text {
        None => Ok(default_ms),
        Some(t) => parse_duration_ms(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("timeout {t:?} is not a duration like 250ms or 2s"),
            )
        }),
    }
}

/// The open log named in the path of a read: name checked, recovery finished, log exists.
pub(crate) fn existing_log(
    st: &AppState,
    log: &str,
) -> Result<Arc<crate::logs::LogEntry>, ApiError> {
    check_name(log)?;
    st.check_ready()?;
    if let Some(e) = st.registry.get(log) {
        return Ok(e);
    }
    if st.registry.failed(log).is_some() {
        // Its data is on disk: it is not "not found".
        return Err(ApiError::Unavailable {
            reason: "this log failed to open when the server started; see the server log",
            retry_after_s: 60,
        });
    }
    Err(ApiError::LogNotFound { log: log.to_owned() })
}

/// Checks a log name from the path.
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if crate::logs::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_log_name",
            format!("log name {name:?} must match [a-z0-9][a-z0-9._-]{{0,127}}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    //! Small pure helpers of the API.
    use super::*;

    #[test]
    fn durations() {
        for (t, ms) in [
            ("250ms", Some(250)),
            ("2s", Some(2000)),
            ("7d", Some(604_800_000)),
            ("5m", Some(300_000)),
        ] {
            assert_eq!(parse_duration_ms(t), ms, "{t}");
        }
        for bad in ["", "s", "10", "1.5s", "-1s", "3w"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }
}
