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
        return tokio::time::timeout_at(deadline, run.perform(None, deadline, timeout_ms))
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
                // answer inside its own transaction, so a retry with the same key gets it
                // instead of writing again.
                let keyed = Keyed { key, done };
                return tokio::time::timeout_at(
                    deadline,
                    run.perform(Some(keyed), deadline, timeout_ms),
                )
                .await
                .map_err(deadline_hit)?
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

/// How a write goes: its parts by shard, its transaction (if any), the core it was planned
/// on, its key, and its deadline.
struct Write {
    plan: std::collections::BTreeMap<u32, Vec<u32>>,
    txn: Option<u64>,
    cpu: usize,
    keyed: Option<Keyed>,
    deadline: tokio::time::Instant,
    timeout_ms: u64,
}

/// The Idempotency-Key of a write and the claim it holds.
struct Keyed {
    key: String,
    done: tokio::sync::watch::Sender<()>,
}

impl Run {
    /// Runs the write: in a task of its own when it is a transaction or carries a key, so that
    /// it always reaches its decision (and a keyed write its record) even if the request times
    /// out or its client leaves; inline otherwise (a plain batch is appended whole or not, and a
    /// task per request costs a cross-thread wake-up).
    async fn perform(
        self,
        keyed: Option<Keyed>,
        deadline: tokio::time::Instant,
        timeout_ms: u64,
    ) -> Result<Value, ApiError> {
        let cpu = rustix::thread::sched_getcpu();
        let plan = if self.batch.commits.is_empty() {
            Default::default()
        } else {
            self.entry.plan(&self.batch, self.st.writers.count(), cpu)
        };
        let txn = (plan.len() > 1 || (keyed.is_some() && !plan.is_empty()))
            .then(|| self.entry.log.txns().new_id(plan.len() as u16, keyed.is_some()));
        let write = Write { plan, txn, cpu, keyed, deadline, timeout_ms };
        if write.txn.is_none() && write.keyed.is_none() {
            return self.execute(write).await;
        }
        tokio::spawn(self.execute(write))
            .await
            .map_err(|e| ApiError::Internal(format!("write task failed: {e}")))?
    }

    /// Writes and builds the response body.
    ///
    /// One shard's part of an unkeyed request is a plain batch. Parts on several shards, and
    /// any keyed request, are one transaction (`storage::txn`): begun once every writer queue
    /// it needs has a slot reserved (so a `503` leaves nothing behind), its parts appended as
    /// pending, then — for a keyed request — its idempotency record appended (the outside
    /// participant), then committed in memory. No file is written for the transaction itself.
    async fn execute(self, write: Write) -> Result<Value, ApiError> {
        let Write { plan, txn, cpu, keyed, deadline, timeout_ms } = write;
        let (st, entry) = (&self.st, &self.entry);
        let written = if tokio::time::Instant::now() >= deadline {
            // Queued behind other work past the deadline: nothing was handed to a writer.
            Err(ApiError::Deadline { timeout_ms })
        } else {
            write_parts(st, entry, &self.batch, self.durability, plan, txn, cpu).await
        };
        let ids = match written {
            Ok(ids) => ids,
            Err(e) => {
                if let Some(k) = keyed {
                    st.idempotency.abandon(&entry.name, &k.key, k.done);
                }
                return Err(e);
            }
        };
        let response = self.response(&ids);
        match (keyed, txn) {
            (Some(k), txn) => {
                let (st2, entry2, v) = (Arc::clone(st), Arc::clone(entry), response.clone());
                let sync = self.durability == Durability::Sync;
                let recorded = blocking(move || {
                    let publish = || {
                        if let Some(id) = txn {
                            entry2.log.txns().commit(id);
                        }
                    };
                    st2.idempotency
                        .complete(&entry2.name, &k.key, &v, txn, sync, now_ms(), k.done, publish)
                        .map_err(|e| {
                            ApiError::Internal(format!("recording the idempotency key: {e}"))
                        })
                })
                .await;
                if let Err(e) = recorded {
                    if let Some(id) = txn {
                        abort(entry, id).await?;
                    }
                    return Err(e);
                }
            }
            (None, Some(id)) => entry.log.txns().commit(id),
            (None, None) => {}
        }
        Ok(response)
    }

    /// The response of a write that got `ids`, counted in the metrics.
    fn response(&self, ids: &[Ulid]) -> Value {
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
        Value::Object(out)
    }
}

/// Aborts transaction `id` after a failed part or record: its parts are hidden at once, and
/// for good once the abort is journaled. If it cannot be journaled, recovery decides from what
/// is on disk, so the client is told the outcome is not known rather than that it failed.
async fn abort(entry: &Arc<LogEntry>, id: u64) -> Result<(), ApiError> {
    let e = Arc::clone(entry);
    blocking(move || {
        // Every part written is at or below its shard's mark (raised after each publish).
        let last = e.log.shards().iter().map(|s| s.high_water().0).max().unwrap_or(u128::MAX);
        e.log.txns().abort(id, last).map_err(|err| {
            tracing::error!(txn = id, error = %err, "journaling an abort failed");
            ApiError::OutcomeUnknown { reason: "the abort could not be recorded".into() }
        })
    })
    .await
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

/// Queues each shard's part on its writer, one job per writer — all parts or none (`503` when
/// a queue is full) — and collects the IDs in request order. Transaction `txn` (if any) begins
/// once every slot is reserved, and is aborted here if a part fails. `cpu` is the core the
/// request ran on (a handoff to another core's writer is counted as crossed).
async fn write_parts(
    st: &AppState,
    entry: &Arc<LogEntry>,
    batch: &Arc<Batch>,
    durability: Durability,
    plan: std::collections::BTreeMap<u32, Vec<u32>>,
    txn: Option<u64>,
    cpu: usize,
) -> Result<Vec<Ulid>, ApiError> {
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    // One job per writer, holding its shards' parts.
    let mut jobs: std::collections::BTreeMap<usize, Vec<(u32, Vec<u32>)>> = Default::default();
    let shards: Vec<u32> = plan.keys().copied().collect();
    for (shard, commits) in plan {
        jobs.entry(st.writers.owner(shard)).or_default().push((shard, commits));
    }
    let owners: Vec<usize> = jobs.keys().copied().collect();
    let permits = st
        .writers
        .try_reserve(&owners)
        .ok_or(ApiError::Overloaded { retry_after_s: st.config.retry_after_s })?;
    if let Some(id) = txn {
        entry.log.begin_txn(id, &shards);
    }
    let mut waits = Vec::with_capacity(jobs.len());
    let local = cpu % st.writers.count();
    for (permit, (w, parts)) in permits.into_iter().zip(jobs) {
        let m = &st.metrics.writers[w];
        let n = parts.len() as u64;
        if w == local {
            m.handoffs_local.inc_by(n)
        } else {
            m.handoffs_crossed.inc_by(n)
        }
        let (reply, wait) = tokio::sync::oneshot::channel();
        let indices: Vec<Vec<u32>> = parts.iter().map(|(_, c)| c.clone()).collect();
        permit.send(Job::Append(Append {
            log: entry.id,
            batch: Arc::clone(batch),
            parts,
            sync: durability == Durability::Sync,
            txn,
            reply,
            queued_at: std::time::Instant::now(),
        }));
        waits.push((indices, wait));
    }
    let mut ids = vec![Ulid(0); batch.commits.len()];
    let mut first_error = None;
    // Every reply is awaited, also after an error: a transaction is decided only once no part
    // is still being written.
    for (indices, wait) in waits {
        let replies = wait.await.unwrap_or_else(|_| {
            let stopping = || {
                Err(ApiError::Unavailable { reason: "the server is stopping", retry_after_s: 1 })
            };
            indices.iter().map(|_| stopping()).collect()
        });
        for (reply, indices) in replies.into_iter().zip(&indices) {
            match reply {
                Ok(range) => {
                    for (k, &i) in indices.iter().enumerate() {
                        ids[i as usize] = range.nth(k as u64);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => {
            if let Some(id) = txn {
                abort(entry, id).await?;
            }
            Err(e)
        }
        None => Ok(ids),
    }
}
