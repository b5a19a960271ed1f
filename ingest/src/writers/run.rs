//! A writer thread's loop: bursts of jobs, stream numbering, jobs held back for undecided
//! transactions, group commit, answers.
//!
//! What it is not: the queues or their API (`writers`), or what an expectation means
//! (`streams`).

use super::{Append, Appended, Job};
use crate::error::ApiError;
use crate::streams::{self, Numbered};
use idgen::IdRange;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use storage::{NewRecord, ShardWriter};
use tokio::sync::mpsc;

/// What a writer thread shares with [`super::Writers`].
pub(super) struct Shared {
    /// Every writer's queue (weak: a writer's own thread must not keep queues open), for the
    /// `Recheck` after a writer commits a transaction.
    pub queues: Arc<Vec<mpsc::WeakSender<Job>>>,
    pub nudge_pending: Arc<Vec<AtomicBool>>,
    pub nudge_target: Arc<Mutex<u128>>,
    pub bursts: Arc<tokio::sync::Notify>,
    /// Per writer: how many jobs it holds back.
    pub parked: Arc<Vec<AtomicUsize>>,
    pub metrics: crate::metrics::WriterMetrics,
    /// Jobs one writer may hold back; beyond, a job that would wait is refused (`503`).
    pub parked_jobs_max: usize,
}

/// (log, shard, stream hash).
type StreamAt = (u64, u32, u128);

/// A job held back: a stream it numbers is held by an undecided transaction, or by a job held
/// back before it (jobs of one stream run in the order they came).
struct Parked {
    job: Append,
    streams: Vec<StreamAt>,
    /// A held stream's key (for a `stream_busy` answer).
    key: String,
    /// A transaction's job gives up then (`stream_busy`): it may hold streams on other
    /// writers, so its wait holds others back too.
    until: Option<std::time::Instant>,
}

/// How long a transaction's job waits for a stream held by another undecided transaction.
const TXN_WAIT_MS_MAX: u64 = 1000;

/// One writer's state.
struct State {
    shards: HashMap<(u64, u32), ShardWriter>,
    parked: VecDeque<Parked>,
    /// Every stream of a parked job.
    parked_streams: HashSet<StreamAt>,
    answers: Vec<(Append, Vec<Result<Appended, ApiError>>)>,
    to_sync: HashSet<(u64, u32)>,
}

/// A writer thread's loop; ends when every sender of its queue is gone or on `Stop`.
pub(super) fn run(
    mut rx: mpsc::Receiver<Job>,
    burst_max: usize,
    core: Option<usize>,
    w: usize,
    sh: &Shared,
) {
    if let Some(c) = core {
        let mut set = rustix::thread::CpuSet::new();
        set.set(c);
        // Best effort: a container may forbid it; the writer works the same unpinned.
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    let nudge_pending = &sh.nudge_pending[w];
    let metrics = &sh.metrics;
    let mut st = State {
        shards: HashMap::new(),
        parked: VecDeque::new(),
        parked_streams: HashSet::new(),
        answers: Vec::with_capacity(burst_max),
        to_sync: HashSet::new(),
    };
    let mut jobs = Vec::with_capacity(burst_max);
    let mut stop = false;
    while !stop {
        match rx.blocking_recv() {
            Some(job) => jobs.push(job),
            None => break,
        }
        let started = std::time::Instant::now();
        while jobs.len() < burst_max {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics.burst_jobs.observe(jobs.len() as f64);
        for job in jobs.drain(..) {
            // A strong read is waiting: raise the marks now, not after the rest of the queue.
            if nudge_pending.swap(false, Ordering::AcqRel) {
                advance_all(&mut st.shards, &sh.nudge_target);
            }
            match job {
                Job::Append(a) => {
                    metrics
                        .queue_wait
                        .observe(started.saturating_duration_since(a.queued_at).as_secs_f64());
                    st.admit(a, sh.parked_jobs_max);
                }
                Job::Adopt { log, shard, writer } => {
                    st.shards.insert((log, shard), *writer);
                }
                Job::Release { log, done } => {
                    st.refuse_parked(Some(log), "the log is being deleted");
                    let keys: Vec<_> = st.shards.keys().filter(|k| k.0 == log).copied().collect();
                    for k in keys {
                        if let Some(mut w) = st.shards.remove(&k) {
                            let _ = w.sync();
                        }
                    }
                    let _ = done.send(());
                }
                Job::Nudge => {
                    nudge_pending.store(false, Ordering::Release);
                    advance_all(&mut st.shards, &sh.nudge_target);
                }
                Job::Revision { log, shard, hash, reply } => {
                    let next = st.shards.get_mut(&(log, shard)).map(|w| {
                        let (r, txns) = w.revisions_mut();
                        r.settle(txns);
                        r.decided_next(hash)
                    });
                    let _ = reply.send(next);
                }
                Job::Recheck => {}
                Job::Stop => stop = true,
            }
        }
        if !st.parked.is_empty() {
            // Published before the transactions are looked at, so that whoever decides one
            // after this look sees the count and sends a `Recheck` (`Writers::recheck_parked`).
            sh.parked[w].store(st.parked.len(), Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            st.run_parked();
        }
        sh.parked[w].store(st.parked.len(), Ordering::SeqCst);
        if st.commit_and_answer() {
            recheck(sh);
        }
        metrics.busy_seconds.inc_by(started.elapsed().as_secs_f64());
        sh.bursts.notify_waiters();
    }
    rx.close();
    st.refuse_parked(None, "the server is stopping");
    let _ = st.commit_and_answer();
    for (key, mut w) in st.shards {
        if let Err(e) = w.sync() {
            tracing::error!(log = key.0, shard = key.1, error = %e, "final sync failed");
        }
    }
}

impl State {
    /// Runs `a` now, or holds it back while a stream it numbers is held.
    fn admit(&mut self, a: Append, parked_max: usize) {
        let Some((streams, key)) = self.must_wait(&a) else {
            self.run_append(a);
            return;
        };
        if self.parked.len() >= parked_max {
            self.refuse(a, ApiError::Overloaded { retry_after_s: 1 });
            return;
        }
        // The writer looks at its parked jobs at the end of every burst, and the ticker's
        // nudges make one every `idle_advance_ms` at least, so the limit is kept.
        let until = a
            .txn
            .map(|_| std::time::Instant::now() + std::time::Duration::from_millis(TXN_WAIT_MS_MAX));
        self.parked_streams.extend(streams.iter().copied());
        self.parked.push_back(Parked { job: a, streams, key, until });
    }

    /// Answers every part of `a` with `e`.
    fn refuse(&mut self, a: Append, e: ApiError) {
        let mut results: Vec<_> = (1..a.parts.len()).map(|_| Err(busy_copy(&e))).collect();
        results.insert(0, Err(e));
        self.answers.push((a, results));
    }

    /// Settles the transactions of `a`'s shards, then: `None` if `a` may run now, else every
    /// stream it numbers and the key of one that is held (by another transaction that is not
    /// decided, or by a job held back before it).
    fn must_wait(&mut self, a: &Append) -> Option<(Vec<StreamAt>, String)> {
        let mut any_held = !self.parked_streams.is_empty();
        for (shard, _) in &a.parts {
            if let Some(w) = self.shards.get_mut(&(a.log, *shard)) {
                let (r, txns) = w.revisions_mut();
                r.settle(txns);
                any_held |= r.has_undecided();
            }
        }
        if !any_held {
            return None;
        }
        let mut streams = Vec::new();
        let mut held_key = None;
        for (shard, commits) in &a.parts {
            let Some(w) = self.shards.get(&(a.log, *shard)) else { continue };
            for &i in commits {
                let Some(key) = a.batch.key(&a.batch.commits[i as usize]) else { continue };
                let at = (a.log, *shard, storage::key_hash(key));
                let by_other = w.revisions().undecided_on(at.2).is_some_and(|t| Some(t) != a.txn);
                if held_key.is_none() && (by_other || self.parked_streams.contains(&at)) {
                    held_key = Some(String::from_utf8_lossy(key).into_owned());
                }
                streams.push(at);
            }
        }
        held_key.map(|k| (streams, k))
    }

    /// Runs the parked jobs whose streams are free now, in the order they came.
    fn run_parked(&mut self) {
        for w in self.shards.values_mut() {
            let (r, txns) = w.revisions_mut();
            r.settle(txns);
        }
        self.parked_streams.clear();
        let now = std::time::Instant::now();
        for p in std::mem::take(&mut self.parked) {
            let own = p.job.txn;
            let held = p.streams.iter().any(|at| {
                self.parked_streams.contains(at)
                    || self.shards.get(&(at.0, at.1)).is_some_and(|w| {
                        w.revisions().undecided_on(at.2).is_some_and(|t| Some(t) != own)
                    })
            });
            if !held {
                self.run_append(p.job);
            } else if p.until.is_some_and(|u| now >= u) {
                self.refuse(p.job, ApiError::StreamBusy { key: p.key, retry_after_s: 1 });
            } else {
                self.parked_streams.extend(p.streams.iter().copied());
                self.parked.push_back(p);
            }
        }
    }

    /// Answers every parked job (of `log`, or all) with `reason`.
    fn refuse_parked(&mut self, log: Option<u64>, reason: &'static str) {
        for p in std::mem::take(&mut self.parked) {
            if log.is_some_and(|l| l != p.job.log) {
                self.parked.push_back(p);
                continue;
            }
            let results =
                p.job.parts.iter().map(|_| Err(ApiError::Unavailable { reason, retry_after_s: 1 }));
            let results = results.collect();
            self.answers.push((p.job, results));
        }
        self.parked_streams = self.parked.iter().flat_map(|p| p.streams.clone()).collect();
    }

    /// Numbers and appends every part of `a`, or none if an expectation fails.
    fn run_append(&mut self, a: Append) {
        let mut numbered = Vec::with_capacity(a.parts.len());
        let mut conflicts = Vec::new();
        let mut broken = None;
        for (shard, commits) in &a.parts {
            let n = match self.shards.get(&(a.log, *shard)) {
                // `append` answers that the shard has no writer.
                None => Numbered::default(),
                Some(w) if w.revisions().broken().is_some() && part_keyed(&a, commits) => {
                    let why = w.revisions().broken().unwrap_or_default().to_owned();
                    broken.get_or_insert(why);
                    Numbered::default()
                }
                Some(w) => match streams::number(&a.batch, commits, w.revisions()) {
                    Ok(n) => n,
                    Err(c) => {
                        conflicts.extend(c);
                        Numbered::default()
                    }
                },
            };
            numbered.push(n);
        }
        if let Some(why) = broken {
            let e = || {
                ApiError::Internal(format!(
                    "the shard's revisions could not be recovered ({why}): no stream is numbered"
                ))
            };
            let results = a.parts.iter().map(|_| Err(e())).collect();
            self.answers.push((a, results));
            return;
        }
        if !conflicts.is_empty() {
            // Every conflict goes with the first part; the request merges its parts' lists.
            let mut results = Vec::with_capacity(a.parts.len());
            results.push(Err(ApiError::RevisionMismatch { conflicts, actual: None }));
            for _ in 1..a.parts.len() {
                results.push(Err(ApiError::RevisionMismatch { conflicts: vec![], actual: None }));
            }
            self.answers.push((a, results));
            return;
        }
        let mut results = Vec::with_capacity(a.parts.len());
        for ((shard, commits), n) in a.parts.iter().zip(numbered) {
            let r = append(&mut self.shards, &a, *shard, commits, &n);
            if r.is_ok()
                && let Some(w) = self.shards.get_mut(&(a.log, *shard))
            {
                let (revisions, _) = w.revisions_mut();
                for &(h, _, count) in &n.streams {
                    revisions.assign(h, count, a.txn);
                }
                if a.sync {
                    self.to_sync.insert((a.log, *shard));
                }
            }
            results.push(r.map(|ids| Appended { ids, revisions: n.revisions }));
        }
        self.answers.push((a, results));
    }

    /// Group commit (one sync per shard for every sync job of the burst), then the answers;
    /// commits the transactions whose last job this was. Answers whether it committed any.
    fn commit_and_answer(&mut self) -> bool {
        let mut committed = false;
        let mut failed: HashMap<(u64, u32), String> = HashMap::new();
        for key in self.to_sync.drain() {
            if let Some(w) = self.shards.get_mut(&key)
                && let Err(e) = w.sync()
            {
                tracing::error!(log = key.0, shard = key.1, error = %e, "sync failed");
                failed.insert(key, e.to_string());
            }
        }
        for (a, results) in self.answers.drain(..) {
            let results = results
                .into_iter()
                .zip(&a.parts)
                .map(|(result, (shard, _))| match (result, failed.get(&(a.log, *shard))) {
                    (Ok(_), Some(e)) if a.sync => {
                        Err(ApiError::Internal(format!("sync failed: {e}")))
                    }
                    (r, _) => r,
                })
                .collect::<Vec<_>>();
            if let (Some(left), Some(id)) = (&a.unfinished, a.txn)
                && results.iter().all(Result::is_ok)
                && left.fetch_sub(1, Ordering::AcqRel) == 1
                && let Some(w) = a.parts.first().and_then(|(s, _)| self.shards.get(&(a.log, *s)))
            {
                // Every part is written (and synced, each by its own writer, before it
                // counted): decided here. The request's task commits again, to no effect.
                w.txns().commit(id);
                committed = true;
            }
            let _ = a.reply.send(results);
        }
        committed
    }
}

/// Whether any of `commits` of `a` has a key.
fn part_keyed(a: &Append, commits: &[u32]) -> bool {
    commits.iter().any(|&i| a.batch.key(&a.batch.commits[i as usize]).is_some())
}

/// Sends `Recheck` to every writer holding jobs back (its own included).
fn recheck(sh: &Shared) {
    std::sync::atomic::fence(Ordering::SeqCst);
    for (q, parked) in sh.queues.iter().zip(sh.parked.iter()) {
        if parked.load(Ordering::SeqCst) > 0
            && let Some(q) = q.upgrade()
        {
            let _ = q.try_send(Job::Recheck);
        }
    }
}

/// The same refusal again, for the other parts of a job.
fn busy_copy(e: &ApiError) -> ApiError {
    match e {
        ApiError::StreamBusy { key, retry_after_s } => {
            ApiError::StreamBusy { key: key.clone(), retry_after_s: *retry_after_s }
        }
        _ => ApiError::Overloaded { retry_after_s: 1 },
    }
}

/// Raises the high-water mark of every shard in `shards` to the clock, or to the target a
/// strong read asked for if that is higher.
fn advance_all(shards: &mut HashMap<(u64, u32), ShardWriter>, target: &Mutex<u128>) {
    let now = idgen::Clock::now_ms(&idgen::SystemClock);
    let floor = idgen::max_for_ms(now.saturating_sub(1)).0;
    let floor = floor.max(*crate::lock(target));
    for w in shards.values_mut() {
        w.advance_high_water_to(idgen::Ulid(floor));
    }
}

/// Appends `commits` of `a`'s request to `shard` as one batch, numbered by `n`.
fn append(
    shards: &mut HashMap<(u64, u32), ShardWriter>,
    a: &Append,
    shard: u32,
    commits: &[u32],
    n: &Numbered,
) -> Result<IdRange, ApiError> {
    let w = shards.get_mut(&(a.log, shard)).ok_or_else(|| {
        ApiError::Internal(format!("shard {shard} of log {} has no writer", a.log))
    })?;
    let b = &a.batch;
    let records: Vec<NewRecord<'_>> = commits
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let c = &b.commits[i as usize];
            let (mut flags, mut aux) = match a.txn {
                Some(id) => (storage::format::flags::TXN_PART, id),
                None => (0, 0),
            };
            // The request refuses `on_conflict=record` in a transaction: `aux` is the id there.
            if let (Some(e), None) = (n.mark(k), a.txn) {
                flags |= storage::format::flags::CONFLICT;
                aux = streams::encode_expected(e);
            }
            NewRecord {
                key: b.key(c).unwrap_or(&[]),
                payload: b.payload(c),
                inverse: b.inverse(c),
                revision: n.of(k),
                flags,
                aux,
            }
        })
        .collect();
    Ok(w.append(&records)?)
}
