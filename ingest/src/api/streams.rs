//! `/v1/logs/{log}/streams/{key}`: conditional appends to one stream (`If-Match: "<revision>"`,
//! `If-None-Match: *`, answered with the stream's `ETag`) and reads of a stream in revision
//! order (`GET`, `HEAD`, `If-None-Match` → `304`).
//!
//! A stream lives on the shard its key maps to; its revision is asked of that shard's writer
//! (the only one that numbers it), its commits read from the shard.
//!
//! What it is not: numbering or checking (`crate::streams`, the writers).

use super::ingest::{IngestQuery, StreamWrite, ingest};
use super::read::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, render};
use super::{AppState, blocking, existing_log};
use crate::error::ApiError;
use crate::streams::{Expect, current_from};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use storage::Start;

/// `POST /v1/logs/{log}/streams/{key}/commits`.
pub(super) async fn post_stream(
    State(st): State<Arc<AppState>>,
    Path((log, key)): Path<(String, String)>,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_key(&st, &key)?;
    let expect = expectation(&headers)?;
    let write = StreamWrite { key: key.into_bytes().into_boxed_slice(), expect };
    let answer = ingest(st, log, query, headers, body, Some(write)).await;
    let v = answer.map_err(|e| match e {
        ApiError::RevisionMismatch { conflicts, .. } => {
            let actual = conflicts.first().map(current_from);
            ApiError::RevisionMismatch { conflicts, actual }
        }
        e => e,
    })?;
    let last = v["revisions"].as_array().and_then(|r| r.last()).and_then(Value::as_u64);
    let mut resp = axum::Json(v).into_response();
    if let Some(r) = last {
        resp.headers_mut().insert(header::ETAG, etag(r));
    }
    Ok(resp)
}

/// The expectation of `If-Match` / `If-None-Match`.
fn expectation(headers: &HeaderMap) -> Result<Expect, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_precondition", m);
    let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|v| v.to_str().map(|t| t.trim().to_owned()))
            .transpose()
            .map_err(|_| bad(format!("{name} is not visible ASCII")))
    };
    match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
        (None, None) => Ok(Expect::Any),
        (Some(_), Some(_)) => Err(bad("If-Match and If-None-Match together".into())),
        (None, Some(t)) if t == "*" => Ok(Expect::NoStream),
        (None, Some(t)) => Err(bad(format!(
            "If-None-Match {t:?} on an append: only * (the stream must be new) is meaningful"
        ))),
        (Some(t), None) if t == "*" => Ok(Expect::StreamExists),
        (Some(t), None) => parse_etag(&t)
            .map(Expect::Exactly)
            .ok_or_else(|| bad(format!("If-Match {t:?} is not a revision in quotes, like \"41\""))),
    }
}

/// A strong ETag's revision: `"41"`.
fn parse_etag(t: &str) -> Option<u64> {
    let inner = t.strip_prefix('"')?.strip_suffix('"')?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

/// The ETag of a stream at revision `r`.
fn etag(r: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{r}\"")).expect("digits and quotes")
}

fn check_key(st: &AppState, key: &str) -> Result<(), ApiError> {
    let max = st.config.key_bytes_max;
    if key.is_empty() || key.len() > max {
        return Err(ApiError::bad_request(
            "invalid_key",
            format!("a stream key of {} bytes is not in 1..={max}", key.len()),
        ));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    from_revision: Option<u64>,
    limit: Option<usize>,
}

/// `GET` / `HEAD /v1/logs/{log}/streams/{key}`.
pub(super) async fn get_stream(
    State(st): State<Arc<AppState>>,
    Path((log, key)): Path<(String, String)>,
    method: Method,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_key(&st, &key)?;
    let q = super::query(query)?;
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be in 1..={PAGE_LIMIT_MAX}"),
        ));
    }
    let entry = existing_log(&st, &log)?;
    let shard = crate::logs::shard_of_key(key.as_bytes(), entry.log.shards().len() as u32);
    let next = st.writers.stream_next(entry.id, shard, storage::key_hash(key.as_bytes())).await?;
    let Some(last) = next.checked_sub(1) else {
        return Err(ApiError::StreamNotFound { log, key });
    };
    let tag = etag(last);
    let matches =
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == tag)
        });
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    if method == Method::HEAD {
        return Ok((StatusCode::OK, [(header::ETAG, tag)]).into_response());
    }
    let from = q.from_revision.unwrap_or(0);
    let page_bytes_max = st.config.read_page_bytes_max;
    let k = key.clone();
    let (commits, next_revision) = blocking(move || {
        let mut commits = Vec::new();
        let mut next_revision = None;
        if from > last {
            return Ok((commits, next_revision));
        }
        // Commits of a stream are in its shard in revision order.
        let mut c = entry.log.shard(shard as usize).cursor(Start::Beginning);
        let mut bytes = 0;
        while let Some(r) = c.next()? {
            let f = &r.frame;
            if f.key != k.as_bytes() || f.revision < from || f.revision > last {
                continue;
            }
            if commits.len() == limit || bytes >= page_bytes_max {
                next_revision = Some(f.revision);
                break;
            }
            bytes += f.payload.len() + f.key.len();
            commits.push(render(&r));
            if f.revision == last {
                break;
            }
        }
        Ok::<_, ApiError>((commits, next_revision))
    })
    .await?;
    let body = json!({
        "key": key,
        "revision": last,
        "commits": commits,
        "next_revision": next_revision,
    });
    Ok((StatusCode::OK, [(header::ETAG, tag)], axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_decimals() {
        assert_eq!(parse_etag("\"41\""), Some(41));
        assert_eq!(parse_etag("\"0\""), Some(0));
        for bad in ["41", "\"\"", "W/\"4\"", "\"4a\"", "\"-1\"", "\"99999999999999999999\""] {
            assert_eq!(parse_etag(bad), None, "{bad}");
        }
        assert_eq!(etag(7), HeaderValue::from_static("\"7\""));
    }
}
