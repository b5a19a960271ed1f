//! `POST /v1/logs/{log}/commits`: parse, route, hand to the writers, answer with the IDs.
//!
//! A request is queued whole or not at all: it reserves a slot in every writer queue it needs
//! before sending anything (`503` + `Retry-After` when one is full). Commits of one shard are
//! appended as one batch, so they become visible together and survive a crash together.

use super::{AppState, blocking, check_name};
use crate::body::{self, Batch, Limits};
use crate::config::Durability;
use crate::error::ApiError;
use crate::idempotency::{Claim, check_key};
use crate::logs::{LogEntry, LogSettings};
use crate::writers::{Append, Job};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use idgen::Ulid;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use storage::Retention;

/// Bodies at least this large (or compressed) are parsed on the blocking pool; below, parsing
/// takes well under the 0.5 ms an async task may run without yielding.
const INLINE_PARSE_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IngestQuery {
    ids: Option<bool>,
    partial: Option<bool>,
    durability: Option<String>,
    timeout: Option<String>,
}

pub(super) async fn post_commits(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_name(&log)?;
    st.check_ready()?;
    let q = super::query(query)?;
    let durability = match q.durability.as_deref() {
        None => st.config.durability,
        Some("sync") => Durability::Sync,
        Some("async") => Durability::Async,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("durability {other:?} is not sync or async"),
            ));
        }
    };
    let timeout_ms = super::timeout_ms(q.timeout.as_deref(), st.config.write_timeout_ms)?;
    let partial = q.partial.unwrap_or(false);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);

    // Hold budget for the whole body before reading it (the declared length, else the limit).
    // A compressed body may decompress up to the limit: hold the limit for it.
    let compressed = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .filter(|_| !compressed)
        .unwrap_or(st.config.body_bytes_max)
        .min(st.config.body_bytes_max);
    let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let _budget = st.body_budget.try_acquire_many(kib).map_err(|_| {
        st.metrics.body_budget_full.inc();
        ApiError::Overloaded { retry_after_s: st.config.retry_after_s }
    })?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_idempotency_key", "not visible ASCII")
            })?;
            check_key(k).map_err(|m| ApiError::bad_request("invalid_idempotency_key", m))?;
            Some(k.to_owned())
        }
    };
    let batch = read_and_parse(&st, &headers, body, partial).await?;
    let entry = log_for_write(&st, &log).await?;
    let run = Run {
        st: Arc::clone(&st),
        entry,
        batch: Arc::new(batch),
        durability,
        partial,
        ids: q.ids.unwrap_or(true),
    };
    let deadline_hit = |_| ApiError::Deadline { timeout_ms };
    // Out of time before anything was handed to a writer: fail without writing.
    if tokio::time::Instant::now() >= deadline {
        return Err(ApiError::Deadline { timeout_ms });
    }
    let Some(key) = key else {
        return tokio::time::timeout_at(deadline, run.execute())
            .await
            .map_err(deadline_hit)?
            .map(Json);
    };
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Deadline { timeout_ms });
        }
        match st.idempotency.claim(&log, &key, now_ms()) {
            Claim::Replay(v) => return Ok(Json(v)),
            Claim::Wait(mut rx) => {
                // Released when the first request finishes or fails; then claim again.
                let _ =
                    tokio::time::timeout_at(deadline, rx.changed()).await.map_err(deadline_hit)?;
            }
            Claim::New(done) => {
                // The write runs to its end even if this request times out, and records its
                // answer, so a retry with the same key gets it instead of writing again.
                let task = tokio::spawn(async move {
                    let (log, key) = (run.entry.name.clone(), key);
                    let st = Arc::clone(&run.st);
                    let sync = run.durability == Durability::Sync;
                    match run.execute().await {
                        Ok(v) => {
                            let v2 = v.clone();
                            blocking(move || {
                                st.idempotency
                                    .complete(&log, &key, &v2, sync, now_ms(), done)
                                    .map_err(|e| {
                                        ApiError::Internal(format!(
                                            "recording the idempotency key: {e}"
                                        ))
                                    })
                            })
                            .await?;
                            Ok(v)
                        }
                        Err(e) => {
                            st.idempotency.abandon(&log, &key, done);
                            Err(e)
                        }
                    }
                });
                let joined = tokio::time::timeout_at(deadline, task).await.map_err(deadline_hit)?;
                return joined
                    .map_err(|e| ApiError::Internal(format!("write task failed: {e}")))?
                    .map(Json);
            }
        }
    }
}

fn now_ms() -> u64 {
    idgen::Clock::now_ms(&idgen::SystemClock)
}

/// One validated write, ready to run.
struct Run {
    st: Arc<AppState>,
    entry: Arc<LogEntry>,
    batch: Arc<Batch>,
    durability: Durability,
    partial: bool,
    ids: bool,
}

impl Run {
    /// Writes and builds the response body.
    async fn execute(self) -> Result<Value, ApiError> {
        let ids = write(&self.st, &self.entry, &self.batch, self.durability).await?;
        let m = &self.entry.metrics;
        m.commits.inc_by(ids.len() as u64);
        let b = &self.batch;
        m.bytes.inc_by(b.commits.iter().map(|c| c.payload.len() as u64).sum());
        self.st.metrics.batch_commits.observe(ids.len() as f64);
        let mut out = serde_json::Map::new();
        let text = |id: &Ulid| Value::String(id.to_string());
        let all = || Value::Array(ids.iter().map(text).collect());
        out.insert("count".into(), json!(ids.len()));
        if self.partial {
            out.insert("accepted".into(), all());
            let rejected: Vec<Value> =
                self.batch.rejected.iter().map(|(i, e)| json!({"index": i, "error": e})).collect();
            out.insert("rejected".into(), Value::Array(rejected));
        } else if self.ids {
            out.insert("ids".into(), all());
        }
        out.insert("first_id".into(), ids.first().map_or(Value::Null, text));
        out.insert("last_id".into(), ids.last().map_or(Value::Null, text));
        out.insert("durability".into(), json!(self.durability.as_str()));
        out.insert("duplicate".into(), json!(false));
        Ok(Value::Object(out))
    }
}

async fn read_and_parse(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    partial: bool,
) -> Result<Batch, ApiError> {
    let cfg = &st.config;
    let raw =
        http_body_util::Limited::new(body, cfg.body_bytes_max).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::TooLarge {
                    what: "the request body".into(),
                    limit_bytes: cfg.body_bytes_max,
                }
            } else {
                ApiError::bad_request("bad_body", format!("cannot read the body: {e}"))
            }
        })?;
    let raw = raw.to_bytes();
    let text = |h| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (ct, enc) = (text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING));
    let limits = Limits {
        body_bytes_max: cfg.body_bytes_max,
        commit_bytes_max: cfg.commit_bytes_max,
        batch_commits_max: cfg.batch_commits_max,
        key_bytes_max: cfg.key_bytes_max,
    };
    let work = move || {
        let decoded = body::decode(raw, enc.as_deref(), limits.body_bytes_max)?;
        body::parse(decoded, ct.as_deref(), limits, partial)
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n < INLINE_PARSE_BYTES_MAX)
        && headers.get(header::CONTENT_ENCODING).is_none()
    {
        work()
    } else {
        blocking(work).await
    }
}

/// The log to write to, created with defaults unless auto-creation is off.
async fn log_for_write(st: &Arc<AppState>, log: &str) -> Result<Arc<LogEntry>, ApiError> {
    if let Some(e) = st.registry.get(log) {
        return Ok(e);
    }
    if !st.config.auto_create {
        return Err(ApiError::LogNotFound { log: log.to_owned() });
    }
    let st2 = Arc::clone(st);
    let name = log.to_owned();
    let settings =
        LogSettings { shards: st.config.default_shards, retention: Retention::default() };
    blocking(move || {
        let created = st2.registry.create(&name, settings, false, false, &st2.writers);
        created.map(|(e, _)| e).map_err(|e| e.into_api(&name, settings.shards))
    })
    .await
}

/// Writes the batch: one shard's part as one batch; parts on several shards as one
/// cross-shard transaction (`storage::txn`), run in its own task so that it always reaches a
/// decision (commit or abort) even if the request times out. IDs come back in request order.
async fn write(
    st: &Arc<AppState>,
    entry: &Arc<LogEntry>,
    batch: &Arc<Batch>,
    durability: Durability,
) -> Result<Vec<Ulid>, ApiError> {
    if batch.commits.is_empty() {
        return Ok(Vec::new());
    }
    let cpu = rustix::thread::sched_getcpu();
    let plan = entry.plan(batch, st.writers.count(), cpu);
    if plan.len() == 1 {
        return write_parts(st, entry, batch, durability, plan, None, cpu)
            .await
            .map(|(ids, _)| ids);
    }
    let (st, entry, batch) = (Arc::clone(st), Arc::clone(entry), Arc::clone(batch));
    let task = tokio::spawn(async move {
        let id = entry.log.txns().new_id(plan.len() as u16);
        let e = Arc::clone(&entry);
        blocking(move || e.log.begin_txn(id).map_err(ApiError::from)).await?;
        let result = write_parts(&st, &entry, &batch, durability, plan, Some(id), cpu).await;
        let e = Arc::clone(&entry);
        match result {
            Ok((ids, parts)) => {
                let sync = durability == Durability::Sync;
                let committed =
                    blocking(move || e.log.txns().commit(id, parts, sync).map_err(ApiError::from))
                        .await;
                if let Err(err) = committed {
                    // The commit record may or may not be on disk; abort it (readers skip it now,
                    // and the abort record, once durable, wins at recovery).
                    let e = Arc::clone(&entry);
                    let _ = blocking(move || e.log.txns().abort(id).map_err(ApiError::from)).await;
                    return Err(err);
                }
                Ok(ids)
            }
            Err(err) => {
                blocking(move || e.log.txns().abort(id).map_err(ApiError::from)).await?;
                Err(err)
            }
        }
    });
    task.await.map_err(|e| ApiError::Internal(format!("transaction task failed: {e}")))?
}

/// Queues each shard's part on its writer — all parts or none (`503` when a queue is full) —
/// and collects the IDs in request order and each part's (shard, first ULID, count). `cpu` is
/// the core the request ran on (a handoff to another core's writer is counted as crossed).
async fn write_parts(
    st: &AppState,
    entry: &LogEntry,
    batch: &Arc<Batch>,
    durability: Durability,
    plan: std::collections::BTreeMap<u32, Vec<u32>>,
    txn: Option<u64>,
    cpu: usize,
) -> Result<(Vec<Ulid>, Vec<storage::format::TxnPart>), ApiError> {
    let owners: Vec<usize> = plan.keys().map(|&s| st.writers.owner(s)).collect();
    let permits = st
        .writers
        .try_reserve(&owners)
        .ok_or(ApiError::Overloaded { retry_after_s: st.config.retry_after_s })?;
    let mut waits = Vec::with_capacity(plan.len());
    let local = cpu % st.writers.count();
    for ((permit, (shard, commits)), &w) in permits.into_iter().zip(plan).zip(&owners) {
        let m = &st.metrics.writers[w];
        if w == local {
            m.handoffs_local.inc()
        } else {
            m.handoffs_crossed.inc()
        }
        let (reply, wait) = tokio::sync::oneshot::channel();
        let indices = commits.clone();
        permit.send(Job::Append(Append {
            log: entry.id,
            shard,
            batch: Arc::clone(batch),
            commits,
            sync: durability == Durability::Sync,
            txn,
            reply,
            queued_at: std::time::Instant::now(),
        }));
        waits.push((shard, indices, wait));
    }
    let mut ids = vec![Ulid(0); batch.commits.len()];
    let mut parts = Vec::with_capacity(waits.len());
    let mut first_error = None;
    // Every reply is awaited, also after an error: a transaction is decided only once no part
    // is still being written.
    for (shard, indices, wait) in waits {
        let reply = wait.await.unwrap_or(Err(ApiError::Unavailable {
            reason: "the server is stopping",
            retry_after_s: 1,
        }));
        match reply {
            Ok(range) => {
                parts.push((shard, range.first.0, range.len as u32));
                for (k, &i) in indices.iter().enumerate() {
                    ids[i as usize] = range.nth(k as u64);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((ids, parts)),
    }
}
