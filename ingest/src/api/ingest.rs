//! `POST /v1/logs/{log}/commits`: parse, route, hand to the writers, answer with the IDs.
//!
//! A request is queued whole or not at all: it reserves a slot in every writer queue it needs
//! before sending anything (`503` + `Retry-After` when one is full). Commits of one shard are
//! appended as one batch, so they become visible together and survive a crash together.

use super::{AppState, blocking, check_name};
use crate::body::{self, Batch, Limits};
use crate::budget::Charge;
use crate::config::Durability;
use crate::error::ApiError;
use crate::idempotency::{Claim, check_key};
use crate::logs::{LogEntry, LogSettings};
use crate::writers::{Append, Job};
use axum::Json;
use axum::body::{Body, Bytes};
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
use storage::format::NO_REVISION;

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
    on_conflict: Option<String>,
}

pub(super) async fn post_commits(
    State(st): State<Arc<AppState>>,
    Path(log): Path<String>,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    ingest(st, log, query, headers, body, None).await.map(Json)
}

/// The write of the streams endpoint: every commit gets `key`, and the first expects `expect`.
pub(super) struct StreamWrite {
    pub key: Box<[u8]>,
    pub expect: crate::streams::Expect,
}

/// Receives, parses and writes one ingest request (of the streams endpoint with `stream`).
pub(super) async fn ingest(
    st: Arc<AppState>,
    log: String,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: HeaderMap,
    mut body: Body,
    stream: Option<StreamWrite>,
) -> Result<Value, ApiError> {
    let started = tokio::time::Instant::now();
    let ask = match prepare(&st, &log, query, &headers) {
        Ok(ask) => ask,
        Err(e) => {
            let deadline = started + Duration::from_millis(st.config.write_timeout_ms);
            return Err(refuse(&st, &headers, body, false, deadline, e).await);
        }
    };
    let Ask { durability, timeout_ms, partial, ids, key, record_conflicts } = ask;
    let deadline = started + Duration::from_millis(timeout_ms);
    // The body is charged to the in-flight budget as it arrives; the deadline covers it too.
    let mut charge = st.body_budget.charge();
    let received =
        tokio::time::timeout_at(deadline, receive(&st, &headers, &mut body, &mut charge)).await;
    let raw = match received {
        Err(_) => return Err(ApiError::Deadline { timeout_ms }),
        Ok(Err((e, polled))) => {
            if matches!(e, ApiError::Overloaded { .. }) {
                st.metrics.body_budget_full.inc();
                drop(charge);
                return Err(refuse(&st, &headers, body, polled, deadline, e).await);
            }
            return Err(e);
        }
        Ok(Ok(raw)) => raw,
    };
    let parsed = tokio::time::timeout_at(deadline, parse(&st, &headers, raw, partial, charge));
    let (mut batch, mut charge) = parsed.await.map_err(|_| ApiError::Deadline { timeout_ms })??;
    if let Some(s) = stream {
        crate::streams::bind(&mut batch, s.key, s.expect)?;
    }
    crate::streams::check_expectations_have_streams(&batch)?;
    batch.record_conflicts = record_conflicts;
    // The answer lists every id (about 30 bytes of text and 60 of JSON value each).
    if ids || partial {
        charge.add(batch.commits.len() * ANSWER_ID_BYTES).map_err(|_| {
            st.metrics.body_budget_full.inc();
            ApiError::Overloaded { retry_after_s: st.config.retry_after_s }
        })?;
    }
    let _charge = charge;
    let entry = log_for_write(&st, &log).await?;
    // A stream's answer always numbers its commits.
    let revisions = ids || batch.stream.is_some();
    let run = Run {
        st: Arc::clone(&st),
        entry,
        batch: Arc::new(batch),
        durability,
        partial,
        ids,
        revisions,
    };
    let deadline_hit = |_| ApiError::Deadline { timeout_ms };
    // Out of time before anything was handed to a writer: fail without writing.
    if tokio::time::Instant::now() >= deadline {
        return Err(ApiError::Deadline { timeout_ms });
    }
    let Some(key) = key else {
        return tokio::time::timeout_at(deadline, run.perform(None, deadline, timeout_ms))
            .await
            .map_err(deadline_hit)?;
    };
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Deadline { timeout_ms });
        }
        match st.idempotency.claim(&log, &key, now_ms()) {
            Claim::Replay(v) => return Ok(v),
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
                .map_err(deadline_hit)?;
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
    /// The answer carries `revisions`.
    revisions: bool,
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
        if txn.is_some() && self.batch.record_conflicts {
            if let Some(k) = keyed {
                self.st.idempotency.abandon(&self.entry.name, &k.key, k.done);
            }
            // A transaction's frames hold its id where a recorded conflict keeps what it
            // expected (format version 1): refused before anything is written.
            return Err(ApiError::bad_request(
                "unsupported",
                "on_conflict=record is not available for a request written as a transaction \
                 (one with an Idempotency-Key, or whose commits span several shards)",
            ));
        }
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
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                if let Some(k) = keyed {
                    st.idempotency.abandon(&entry.name, &k.key, k.done);
                }
                return Err(e);
            }
        };
        let response = self.response(&written);
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
                        abort(st, entry, id).await?;
                    }
                    return Err(e);
                }
                st.writers.recheck_parked();
            }
            (None, Some(id)) => {
                entry.log.txns().commit(id);
                st.writers.recheck_parked();
            }
            (None, None) => {}
        }
        Ok(response)
    }

    /// The response of a write that got `written`, counted in the metrics.
    fn response(&self, written: &Written) -> Value {
        let ids = &written.ids;
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
        if self.partial || self.revisions {
            out.insert("revisions".into(), revisions_json(&written.revisions, ids.len()));
        }
        out.insert("first_id".into(), ids.first().map_or(Value::Null, text));
        out.insert("last_id".into(), ids.last().map_or(Value::Null, text));
        out.insert("durability".into(), json!(self.durability.as_str()));
        out.insert("duplicate".into(), json!(false));
        Value::Object(out)
    }
}

/// Per commit, its revision (`null` when it has no key); `revisions` is empty when none has.
pub(super) fn revisions_json(revisions: &[u64], n: usize) -> Value {
    let one = |i: usize| match revisions.get(i) {
        Some(&r) if r != NO_REVISION => json!(r),
        _ => Value::Null,
    };
    Value::Array((0..n).map(one).collect())
}

/// Aborts transaction `id` after a failed part or record: its parts are hidden at once, and
/// for good once the abort is journaled. If it cannot be journaled, recovery decides from what
/// is on disk, so the client is told the outcome is not known rather than that it failed.
async fn abort(st: &AppState, entry: &Arc<LogEntry>, id: u64) -> Result<(), ApiError> {
    let e = Arc::clone(entry);
    let aborted = blocking(move || {
        // Every part written is at or below its shard's mark (raised after each publish).
        let last = e.log.shards().iter().map(|s| s.high_water().0).max().unwrap_or(u128::MAX);
        e.log.txns().abort(id, last).map_err(|err| {
            tracing::error!(txn = id, error = %err, "journaling an abort failed");
            ApiError::OutcomeUnknown { reason: "the abort could not be recorded".into() }
        })
    })
    .await;
    // Decided (or hidden, if the journal failed): the streams it held are free again.
    st.writers.recheck_parked();
    aborted
}

/// A write request's parameters, checked before its body is read.
struct Ask {
    durability: Durability,
    timeout_ms: u64,
    partial: bool,
    ids: bool,
    key: Option<String>,
    record_conflicts: bool,
}

/// Checks everything but the body.
fn prepare(
    st: &AppState,
    log: &str,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Ask, ApiError> {
    check_name(log)?;
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
    let record_conflicts = match q.on_conflict.as_deref() {
        None | Some("reject") => false,
        Some("record") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("on_conflict {other:?} is not reject or record"),
            ));
        }
    };
    Ok(Ask {
        durability,
        timeout_ms,
        partial: q.partial.unwrap_or(false),
        ids: q.ids.unwrap_or(true),
        key,
        record_conflicts,
    })
}

/// Budget charged per id of an answer that lists them.
const ANSWER_ID_BYTES: usize = 96;
/// Budget a request must find free before its body is asked for (with `Expect:
/// 100-continue`, before the client sends it). It is not held: an upload that sends nothing
/// holds nothing.
const FIRST_ROOM_BYTES: usize = 64 * 1024;

/// The declared `Content-Length`, if any.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
}

/// Reads the body, charging its bytes as they arrive. On failure, whether the body was
/// asked for at all (with `Expect: 100-continue`, whether the client was told to send it).
async fn receive(
    st: &AppState,
    headers: &HeaderMap,
    body: &mut Body,
    charge: &mut Charge,
) -> Result<Bytes, (ApiError, bool)> {
    let max = st.config.body_bytes_max;
    let declared = declared_length(headers);
    let too_large = || ApiError::TooLarge { what: "the request body".into(), limit_bytes: max };
    let overloaded = || ApiError::Overloaded { retry_after_s: st.config.retry_after_s };
    if declared.is_some_and(|n| n > max) {
        return Err((too_large(), false));
    }
    if !st.body_budget.has_room(declared.unwrap_or(FIRST_ROOM_BYTES).min(FIRST_ROOM_BYTES)) {
        return Err((overloaded(), false));
    }
    // One frame is kept as it came (no copy); a second starts a buffer for the whole body,
    // reserved at the declared length (pages are only taken as bytes are written).
    let mut only: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (body_error(e), true))?;
        let Ok(data) = frame.into_data() else { continue };
        let have = only.as_ref().map_or(buf.len(), Bytes::len);
        if have + data.len() > max {
            return Err((too_large(), true));
        }
        charge.cover(have + data.len()).map_err(|_| (overloaded(), true))?;
        match only.take() {
            None if buf.is_empty() => only = Some(data),
            None => buf.extend_from_slice(&data),
            Some(first) => {
                buf.reserve(declared.unwrap_or(0).min(max).max(first.len() + data.len()));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(only.unwrap_or_else(|| buf.freeze()))
}

/// The error of a failed body read.
fn body_error(e: axum::Error) -> ApiError {
    let inner = e.into_inner();
    match crate::conn::is_body_read_timeout(&*inner) {
        Some(timeout_ms) => ApiError::BodyReadTimeout { timeout_ms },
        None => ApiError::bad_request("bad_body", format!("cannot read the body: {inner}")),
    }
}

/// Answers `e` to a request refused before its body was read whole. Unless the client waits
/// for `100 Continue` and was not told to send it, what is left of the body (up to
/// `reject_drain_bytes_max`, before `deadline`) is read and dropped first, so that a client
/// that sends its whole body before reading the answer gets the answer, not a broken pipe.
async fn refuse(
    st: &AppState,
    headers: &HeaderMap,
    mut body: Body,
    polled: bool,
    deadline: tokio::time::Instant,
    e: ApiError,
) -> ApiError {
    let waits = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let limit = st.config.reject_drain_bytes_max;
    if (waits && !polled) || declared_length(headers).is_some_and(|n| n > limit) {
        return e;
    }
    let drain = async {
        let _slot = st.body_budget.drain_slot().await;
        let mut dropped = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            dropped += frame.data_ref().map_or(0, Bytes::len);
            if dropped > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
    e
}

/// Decompresses and parses `raw`, charging to `charge` (given back with the batch).
async fn parse(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    raw: Bytes,
    partial: bool,
    mut charge: Charge,
) -> Result<(Batch, Charge), ApiError> {
    let cfg = &st.config;
    let text = |h| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (ct, enc) = (text(header::CONTENT_TYPE), text(header::CONTENT_ENCODING));
    let limits = Limits {
        body_bytes_max: cfg.body_bytes_max,
        commit_bytes_max: cfg.commit_bytes_max,
        batch_commits_max: cfg.batch_commits_max,
        key_bytes_max: cfg.key_bytes_max,
        retry_after_s: cfg.retry_after_s,
    };
    let inline = raw.len() < INLINE_PARSE_BYTES_MAX && enc.is_none();
    let work = move || {
        let decoded = body::decode(raw, enc.as_deref(), limits, &mut charge)?;
        let batch = body::parse(decoded, ct.as_deref(), limits, partial, &mut charge)?;
        Ok((batch, charge))
    };
    let parsed = if inline { work() } else { blocking(work).await };
    if let Err(ApiError::Overloaded { .. }) = &parsed {
        st.metrics.body_budget_full.inc();
    }
    parsed
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
) -> Result<Written, ApiError> {
    if plan.is_empty() {
        return Ok(Written { ids: Vec::new(), revisions: Vec::new() });
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
    let mut ready = Vec::with_capacity(jobs.len());
    // A transaction of the shards alone is committed by the writer that finishes it last.
    let unfinished = txn
        .filter(|&id| !storage::txn::is_external(id))
        .map(|_| Arc::new(std::sync::atomic::AtomicUsize::new(jobs.len())));
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
        let job = Job::Append(Append {
            log: entry.id,
            batch: Arc::clone(batch),
            parts,
            sync: durability == Durability::Sync,
            txn,
            reply,
            queued_at: std::time::Instant::now(),
            unfinished: unfinished.clone(),
        });
        ready.push((permit, job));
        waits.push((indices, wait));
    }
    // Jobs of one request on several writers are queued in one order on all of them, so a
    // transaction only ever waits for one queued before it (`Writers::order`).
    {
        let _order = (ready.len() > 1).then(|| st.writers.order());
        for (permit, job) in ready {
            permit.send(job);
        }
    }
    let mut out = Written { ids: vec![Ulid(0); batch.commits.len()], revisions: Vec::new() };
    let mut first_error = None;
    let mut conflicts = Vec::new();
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
                Ok(part) => {
                    if !part.revisions.is_empty() && out.revisions.is_empty() {
                        out.revisions = vec![NO_REVISION; batch.commits.len()];
                    }
                    for (k, &i) in indices.iter().enumerate() {
                        out.ids[i as usize] = part.ids.nth(k as u64);
                        if let Some(&r) = part.revisions.get(k) {
                            out.revisions[i as usize] = r;
                        }
                    }
                }
                Err(ApiError::RevisionMismatch { conflicts: c, .. }) => conflicts.extend(c),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort_by_key(|c| c.index);
        st.metrics.revision_conflicts.inc_by(conflicts.len() as u64);
        first_error = Some(ApiError::RevisionMismatch { conflicts, actual: None });
    }
    match first_error {
        Some(e) => {
            if let Some(id) = txn {
                abort(st, entry, id).await?;
            }
            Err(e)
        }
        None => Ok(out),
    }
}

/// What a write got: per commit in request order, its id and its revision (`revisions` is
/// empty when no commit has a key).
pub(super) struct Written {
    pub ids: Vec<Ulid>,
    pub revisions: Vec<u64>,
}
