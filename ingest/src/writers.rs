//! Per-core writer threads: the only code that appends to shards.
//!
//! One thread per writer, pinned to a core when possible, owning shard `s` of every log with
//! `s % writers == w`. HTTP handlers hand work over through a bounded queue (`tokio::mpsc`:
//! lock-free, and its permits let a request reserve room in every queue it needs before sending
//! anything, so a request is either fully queued or answered `503`). A writer takes a burst of
//! up to `writer_burst_max` jobs, appends each, then syncs each shard that a `sync` job touched
//! once for the whole burst (group commit), and only then answers.
//!
//! What it is not: a parser or a router; jobs arrive ready to append.

use crate::body::Batch;
use crate::error::ApiError;
use idgen::IdRange;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use storage::{NewRecord, ShardWriter};
use tokio::sync::{mpsc, oneshot};

/// Work for a writer.
#[derive(Debug)]
pub enum Job {
    /// Append some commits of a request to shards this writer owns.
    Append(Append),
    /// Take ownership of a shard's writer.
    Adopt {
        /// Log id.
        log: u64,
        /// Shard.
        shard: u32,
        /// Its writer.
        writer: ShardWriter,
    },
    /// Sync and drop every shard of a log (it is being deleted).
    Release {
        /// Log id.
        log: u64,
        /// Answered when done.
        done: std::sync::mpsc::Sender<()>,
    },
    /// Advance the high-water mark of every shard this writer owns to the clock: an idle
    /// shard must not hold back the merged timeline's watermark.
    Nudge,
    /// Finish the queued work, sync every shard and stop.
    Stop,
}

/// Commits of one request for the shards of one writer: one job per writer a request needs,
/// whatever the number of its shards there.
#[derive(Debug)]
pub struct Append {
    /// Log id.
    pub log: u64,
    /// The parsed request (shared by its jobs).
    pub batch: Arc<Batch>,
    /// Per shard, which of its commits, in order: each is appended as one batch.
    pub parts: Vec<(u32, Vec<u32>)>,
    /// Answer only once on disk.
    pub sync: bool,
    /// The transaction these parts belong to.
    pub txn: Option<u64>,
    /// Per part, in order, the IDs assigned or why not.
    pub reply: oneshot::Sender<Vec<Result<IdRange, ApiError>>>,
    /// When it was queued (the writer measures how long it waited).
    pub queued_at: std::time::Instant,
}

/// The writer threads and their queues.
#[derive(Debug)]
pub struct Writers {
    queues: Vec<mpsc::Sender<Job>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// While set, `nudge` does nothing (tests stall the watermark with it).
    nudges_held: std::sync::atomic::AtomicBool,
    /// Per writer: a nudge is queued and not yet handled (so waiting reads never flood a
    /// queue with nudges).
    nudge_pending: Arc<Vec<std::sync::atomic::AtomicBool>>,
    /// The highest ULID a waiting strong read asked the marks to reach.
    nudge_target: Arc<Mutex<u128>>,
    /// Woken by every writer at the end of each burst (marks may have risen).
    bursts: Arc<tokio::sync::Notify>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Writers {
    /// Starts `n` writers with queues of `depth` jobs, draining up to `burst_max` at once;
    /// `metrics` has a writer family child for each.
    pub fn start(
        n: usize,
        depth: usize,
        burst_max: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Writers> {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let mut queues = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let nudge_pending: Arc<Vec<std::sync::atomic::AtomicBool>> =
            Arc::new((0..n).map(|_| Default::default()).collect());
        let nudge_target = Arc::new(Mutex::new(0u128));
        let bursts = Arc::new(tokio::sync::Notify::new());
        for w in 0..n {
            let (tx, rx) = mpsc::channel(depth);
            queues.push(tx);
            let core = (n <= cores).then_some(w);
            let pending = Arc::clone(&nudge_pending);
            let target = Arc::clone(&nudge_target);
            let m = metrics.writers[w].clone();
            let b = Arc::clone(&bursts);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("shardlog-writer-{w}"))
                    .spawn(move || run(rx, burst_max, core, &pending[w], &target, &m, &b))?,
            );
        }
        Ok(Writers {
            queues,
            threads: Mutex::new(threads),
            nudges_held: Default::default(),
            nudge_pending,
            nudge_target,
            bursts,
            metrics,
        })
    }

    /// Notified whenever a writer ends a burst (appends published, nudges handled): a reader
    /// waiting for the marks to rise registers (`notified().enable()`) before it checks them,
    /// then waits on it, and wakes within microseconds instead of on a timer tick.
    pub fn bursts(&self) -> &tokio::sync::Notify {
        &self.bursts
    }

    /// Number of writers.
    pub fn count(&self) -> usize {
        self.queues.len()
    }

    /// The writer owning `shard` (of any log).
    pub fn owner(&self, shard: u32) -> usize {
        shard as usize % self.queues.len()
    }

    /// Reserves one slot in the queue of each writer in `owners` (with repeats), or none:
    /// `None` when any queue is full or closed (counted against the first full one).
    pub fn try_reserve(&self, owners: &[usize]) -> Option<Vec<mpsc::Permit<'_, Job>>> {
        owners
            .iter()
            .map(|&w| {
                let permit = self.queues[w].try_reserve().ok();
                if permit.is_none() {
                    self.metrics.writers[w].queue_full.inc();
                }
                permit
            })
            .collect()
    }

    /// Each writer's (queued jobs, queue capacity).
    pub fn queue_depths(&self) -> Vec<(usize, usize)> {
        self.queues.iter().map(|q| (q.max_capacity() - q.capacity(), q.max_capacity())).collect()
    }

    pub(crate) fn send_blocking(&self, w: usize, job: Job) {
        // A closed queue means the writer stopped (shutdown): nothing left to hand over to.
        let _ = self.queues[w].blocking_send(job);
    }

    /// Asks every writer to advance its shards' high-water marks now (skipping a writer whose
    /// queue is full: it is busy, and its marks rise with its appends).
    pub fn nudge(&self) {
        self.send_nudges(idgen::Ulid(0), &self.metrics.nudges_tick);
    }

    /// As [`Writers::nudge`], asking the marks of `log`'s shards to reach at least `target`
    /// (the ULID a strong read or a tail waits for; capped at the clock, so a far-future target
    /// cannot be requested). Nothing is sent when every mark is there already: then the wait
    /// is for an undecided transaction, which no nudge hastens (and a nudge per burst would
    /// keep a writer spinning for nothing).
    pub fn nudge_to(&self, log: &storage::Log, target: idgen::Ulid) {
        if log.shards().iter().all(|s| s.high_water() >= target) {
            return;
        }
        self.send_nudges(target, &self.metrics.nudges_read);
    }

    fn send_nudges(&self, target: idgen::Ulid, sent: &prometheus::IntCounter) {
        if self.nudges_held.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let now = idgen::Clock::now_ms(&idgen::SystemClock);
        let capped = target.0.min(idgen::max_for_ms(now).0);
        {
            let mut t = crate::lock(&self.nudge_target);
            *t = (*t).max(capped);
        }
        for (q, pending) in self.queues.iter().zip(self.nudge_pending.iter()) {
            if !pending.swap(true, std::sync::atomic::Ordering::AcqRel) {
                if q.try_send(Job::Nudge).is_ok() {
                    sent.inc();
                } else {
                    pending.store(false, std::sync::atomic::Ordering::Release);
                }
            }
        }
    }

    /// Holds (or releases) nudges: idle shards' marks stop advancing, so the merged watermark
    /// stalls. For tests of the read deadline; an operator has no use for it.
    pub fn hold_nudges(&self, held: bool) {
        self.nudges_held.store(held, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hands shard `shard` of log `log` to the writer that owns it. Blocking until queued.
    pub fn adopt(&self, log: u64, shard: u32, writer: ShardWriter) {
        self.send_blocking(self.owner(shard), Job::Adopt { log, shard, writer });
    }

    /// Syncs and drops every shard of `log`, waiting until done. Blocking.
    pub fn release(&self, log: u64) {
        let mut waits = Vec::new();
        for w in 0..self.queues.len() {
            let (done, wait) = std::sync::mpsc::channel();
            self.send_blocking(w, Job::Release { log, done });
            waits.push(wait);
        }
        for wait in waits {
            let _ = wait.recv();
        }
    }

    /// Stops every writer after the work queued before this call, syncing all shards; later
    /// requests find the queues closed. Blocking.
    pub fn shutdown(&self) {
        for w in 0..self.queues.len() {
            self.send_blocking(w, Job::Stop);
        }
        let threads = std::mem::take(&mut *crate::lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A writer thread's loop; ends when every sender of its queue is gone.
fn run(
    mut rx: mpsc::Receiver<Job>,
    burst_max: usize,
    core: Option<usize>,
    nudge_pending: &std::sync::atomic::AtomicBool,
    nudge_target: &Mutex<u128>,
    metrics: &crate::metrics::WriterMetrics,
    bursts: &tokio::sync::Notify,
) {
    if let Some(c) = core {
        let mut set = rustix::thread::CpuSet::new();
        set.set(c);
        // Best effort: a container may forbid it; the writer works the same unpinned.
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
    let mut shards: HashMap<(u64, u32), ShardWriter> = HashMap::new();
    let mut jobs = Vec::with_capacity(burst_max);
    let mut answers: Vec<(Append, Vec<Result<IdRange, ApiError>>)> = Vec::with_capacity(burst_max);
    let mut to_sync: HashSet<(u64, u32)> = HashSet::new();
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
            if nudge_pending.swap(false, std::sync::atomic::Ordering::AcqRel) {
                advance_all(&mut shards, nudge_target);
            }
            match job {
                Job::Append(a) => {
                    metrics
                        .queue_wait
                        .observe(started.saturating_duration_since(a.queued_at).as_secs_f64());
                    let results: Vec<_> = a
                        .parts
                        .iter()
                        .map(|(shard, commits)| {
                            let r = append(&mut shards, &a, *shard, commits);
                            if r.is_ok() && a.sync {
                                to_sync.insert((a.log, *shard));
                            }
                            r
                        })
                        .collect();
                    answers.push((a, results));
                }
                Job::Adopt { log, shard, writer } => {
                    shards.insert((log, shard), writer);
                }
                Job::Release { log, done } => {
                    let keys: Vec<_> = shards.keys().filter(|k| k.0 == log).copied().collect();
                    for k in keys {
                        if let Some(mut w) = shards.remove(&k) {
                            let _ = w.sync();
                        }
                    }
                    let _ = done.send(());
                }
                Job::Nudge => {
                    nudge_pending.store(false, std::sync::atomic::Ordering::Release);
                    advance_all(&mut shards, nudge_target);
                }
                Job::Stop => stop = true,
            }
        }
        // Group commit: one sync per shard for every sync job of the burst.
        let mut failed: HashMap<(u64, u32), String> = HashMap::new();
        for key in to_sync.drain() {
            if let Some(w) = shards.get_mut(&key)
                && let Err(e) = w.sync()
            {
                tracing::error!(log = key.0, shard = key.1, error = %e, "sync failed");
                failed.insert(key, e.to_string());
            }
        }
        for (a, results) in answers.drain(..) {
            let results = results
                .into_iter()
                .zip(&a.parts)
                .map(|(result, (shard, _))| match (result, failed.get(&(a.log, *shard))) {
                    (Ok(_), Some(e)) if a.sync => {
                        Err(ApiError::Internal(format!("sync failed: {e}")))
                    }
                    (r, _) => r,
                })
                .collect();
            let _ = a.reply.send(results);
        }
        metrics.busy_seconds.inc_by(started.elapsed().as_secs_f64());
        bursts.notify_waiters();
    }
    rx.close();
    for (key, mut w) in shards {
        if let Err(e) = w.sync() {
            tracing::error!(log = key.0, shard = key.1, error = %e, "final sync failed");
        }
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

/// Appends `commits` of `a`'s request to `shard` as one batch.
fn append(
    shards: &mut HashMap<(u64, u32), ShardWriter>,
    a: &Append,
    shard: u32,
    commits: &[u32],
) -> Result<IdRange, ApiError> {
    let w = shards.get_mut(&(a.log, shard)).ok_or_else(|| {
        ApiError::Internal(format!("shard {shard} of log {} has no writer", a.log))
    })?;
    let b = &a.batch;
    let records: Vec<NewRecord<'_>> = commits
        .iter()
        .map(|&i| {
            let c = &b.commits[i as usize];
            NewRecord {
                key: b.key(c).unwrap_or(&[]),
                payload: b.payload(c),
                inverse: b.inverse(c),
                flags: if a.txn.is_some() { storage::format::flags::TXN_PART } else { 0 },
                aux: a.txn.unwrap_or(0),
                ..NewRecord::payload(&[])
            }
        })
        .collect();
    Ok(w.append(&records)?)
}
