//! `GET /v1/logs/{log}/commits/{id}` and `GET /v1/logs/{log}/shards/{n}/commits`: reads of
//! stored commits, on the blocking pool.
//!
//! A payload is rendered as its JSON value when it is JSON, as a string when it is UTF-8, else
//! as `payload_base64`.

use super::{AppState, blocking, check_name};
use crate::api::error::ApiError;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use storage::{Record, Start};

/// Most commits one page returns.
pub const PAGE_LIMIT_MAX: usize = 10_000;
/// Commits a page returns without `limit`.
pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// A stored commit as JSON.
pub fn render(r: &Record<'_>) -> Value {
    let f = &r.frame;
    let mut o = serde_json::Map::new();
    o.insert("id".into(), json!(f.id.to_string()));
    o.insert(
        "key".into(),
        if f.key.is_empty() { Value::Null } else { json!(String::from_utf8_lossy(f.key)) },
    );
    o.insert("shard".into(), json!(r.shard));
    match payload_value(f.payload) {
        Some(v) => o.insert("payload".into(), v),
        None => o.insert(
            "payload_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(f.payload)),
        ),
    };
    Value::Object(o)
}

fn payload_value(p: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(p).ok()?;
    // JSON when it is a JSON value this server can hold (not, say, `1e400`), else the text.
    Some(serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_owned())))
}

fn parse_id(text: &str) -> Result<idgen::Ulid, ApiError> {
    idgen::parse(text)
        .ok_or_else(|| ApiError::bad_request("invalid_ulid", format!("{text:?} is not a ULID")))
}

pub(super) async fn commit_by_id(
    State(st): State<Arc<AppState>>,
    Path((log, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_name(&log)?;
    st.check_ready()?;
    let ulid = parse_id(&id)?;
    let entry = st.registry.get(&log).ok_or_else(|| ApiError::LogNotFound { log: log.clone() })?;
    blocking(move || {
        for shard in entry.log.shards() {
            let mut c = shard.cursor(Start::From(ulid));
            if let Some(r) = c.next()?
                && r.frame.id == ulid
            {
                return Ok(Json(render(&r)));
            }
        }
        Err(ApiError::CommitNotFound { log, id })
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn shard_commits(
    State(st): State<Arc<AppState>>,
    Path((log, shard)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    check_name(&log)?;
    st.check_ready()?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let entry = st.registry.get(&log).ok_or_else(|| ApiError::LogNotFound { log: log.clone() })?;
    let n: usize = shard
        .parse()
        .ok()
        .filter(|&n| n < entry.log.shards().len())
        .ok_or_else(|| ApiError::NotFound { what: format!("shard {shard} of log {log:?}") })?;
    let start = match q.after.as_deref() {
        None | Some("") => Start::Beginning,
        Some(t) => Start::After(parse_id(t)?),
    };
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be in 1..={PAGE_LIMIT_MAX}"),
        ));
    }
    blocking(move || {
        let mut c = entry.log.shard(n).cursor(start);
        let mut commits = Vec::new();
        let mut last = None;
        while commits.len() < limit {
            let Some(r) = c.next()? else { break };
            last = Some(r.frame.id);
            commits.push(render(&r));
        }
        Ok(Json(json!({ "commits": commits, "next": last.map(|id| id.to_string()) })))
    })
    .await
}
