//! `PUT/GET/DELETE /v1/logs/{log}` and `GET /v1/logs`.

use super::{AppState, blocking, check_name, parse_duration_ms};
use crate::error::ApiError;
use crate::logs::{Created, LogEntry, LogSettings};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use storage::Retention;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    shards: Option<u32>,
    retention: Option<RetentionBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    max_age: Option<String>,
    max_bytes: Option<u64>,
}

fn describe(e: &LogEntry) -> Value {
    let stats = e.log.stats();
    let r = e.log.retention();
    json!({
        "name": e.name,
        "shards": e.shards(),
        "retention": {
            "max_age": r.max_age_ms.map(|ms| format!("{ms}ms")),
            "max_bytes": r.max_bytes,
        },
        "commits": stats.commits,
        "bytes": stats.bytes,
        "segments": stats.segments,
        "watermark": watermark(e),
    })
}

/// The log's watermark: no commit at or below it can still be added or become visible.
fn watermark(e: &LogEntry) -> Value {
    Value::String(e.log.watermark().to_string())
}

pub(super) async fn list(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    st.check_ready()?;
    let logs: Vec<Value> = st.registry.list().iter().map(|e| describe(e)).collect();
    Ok(Json(json!({ "logs": logs })))
}

pub(super) async fn show(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = super::existing_log(&st, &log)?;
    Ok(Json(describe(&e)))
}

pub(super) async fn put(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name(&log)?;
    st.check_ready()?;
    let b: PutBody = if body.iter().all(|c| c.is_ascii_whitespace()) {
        PutBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let shards = b.shards.unwrap_or(st.config.default_shards);
    if shards == 0 || shards > storage::SHARDS_MAX {
        return Err(ApiError::bad_request(
            "invalid_shards",
            format!("shards must be in 1..={}", storage::SHARDS_MAX),
        ));
    }
    let update_retention = b.retention.is_some();
    let check_shards = b.shards.is_some();
    let r = b.retention.unwrap_or_default();
    let max_age_ms = match r.max_age.as_deref() {
        None => None,
        Some(t) => Some(parse_duration_ms(t).filter(|&ms| ms > 0).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_retention",
                format!("max_age {t:?} is not a duration like 7d, 12h, 30m"),
            )
        })?),
    };
    if r.max_bytes == Some(0) {
        return Err(ApiError::bad_request("invalid_retention", "max_bytes must be positive"));
    }
    let settings =
        LogSettings { shards, retention: Retention { max_age_ms, max_bytes: r.max_bytes } };
    let st2 = Arc::clone(&st);
    let name = log.clone();
    let (entry, created) = blocking(move || {
        st2.registry
            .create(&name, settings, check_shards, update_retention, &st2.writers)
            .map_err(|e| e.into_api(&name, settings.shards))
    })
    .await?;
    let status = if created == Created::New { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(describe(&entry))))
}

pub(super) async fn delete(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_name(&log)?;
    st.check_ready()?;
    let st2 = Arc::clone(&st);
    let name = log.clone();
    let existed = blocking(move || {
        st2.consumers.delete_log(&name).map_err(|e| ApiError::Internal(e.to_string()))?;
        st2.registry.delete(&name, &st2.writers).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    if existed { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::LogNotFound { log }) }
}
