//! Per-core writer threads: the only code that appends to shards.
//!
//! One thread per writer, pinned to a core when possible, owning shard `s` of every log with
//! `s % writers == w`. HTTP handlers hand work over through a bounded queue (`tokio::mpsc`:
//! lock-free, and its permits let a request reserve room in every queue it needs before sending
//! anything, so a request is either fully queued or answered `503`). A writer takes a burst of
//! up to `writer_burst_max` jobs, appends each, then syncs each shard that a `sync` job touched
//! once for the whole burst (group commit), and only then answers.
//!
//! Writers number streams (`crate::streams`): a job whose stream is held by a transaction not
//! yet decided waits in its writer (parked, at most a queue's depth of jobs) until the
//! decision, so that an abort never leaves a gap. Requests with jobs on several writers queue
//! them under one lock ([`Writers::order`]), so they are in one order in every queue and a
//! transaction only ever waits for one queued before it; a transaction's job still gives up
//! after `TXN_WAIT_MS_MAX` (`stream_busy`), a bound on a long chain rather than a way out of
//! a cycle.
//!
//! What it is not: a parser or a router; jobs arrive ready to append.

use crate::body::Batch;
use crate::error::ApiError;
use idgen::IdRange;
use std::sync::{Arc, Mutex};
use storage::ShardWriter;
use tokio::sync::{mpsc, oneshot};

mod run;

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
        writer: Box<ShardWriter>,
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
    /// Answers a stream's next revision (0: it has none), leaving out what undecided
    /// transactions numbered.
    Revision {
        /// Log id.
        log: u64,
        /// The stream's shard.
        shard: u32,
        /// Its key's hash (`storage::key_hash`).
        hash: u128,
        /// The answer (`None`: the shard has no writer here).
        reply: oneshot::Sender<Option<u64>>,
    },
    /// A transaction was decided: run the jobs held back for it.
    Recheck,
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
    /// Per part, in order, what it got or why not.
    pub reply: oneshot::Sender<Vec<Result<Appended, ApiError>>>,
    /// When it was queued (the writer measures how long it waited).
    pub queued_at: std::time::Instant,
    /// For a transaction with no participant outside the shards: the jobs of its request not
    /// yet appended (and synced, for `sync`). The writer that takes it to zero commits the
    /// transaction before it answers, so that its streams are free without waiting for the
    /// request's task.
    pub unfinished: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// What one part of an [`Append`] got.
#[derive(Debug)]
pub struct Appended {
    /// Its IDs.
    pub ids: IdRange,
    /// Per commit, its stream revision (`NO_REVISION` for an unkeyed commit); empty when no
    /// commit of the part has a key.
    pub revisions: Vec<u64>,
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
    /// Per writer: jobs it holds back until a transaction on their streams is decided.
    parked: Arc<Vec<std::sync::atomic::AtomicUsize>>,
    /// Held while a request queues its jobs on several writers (`Writers::order`).
    order: Mutex<()>,
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
        let parked: Arc<Vec<std::sync::atomic::AtomicUsize>> =
            Arc::new((0..n).map(|_| Default::default()).collect());
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(depth);
            queues.push(tx);
            receivers.push(rx);
        }
        let weak: Arc<Vec<mpsc::WeakSender<Job>>> =
            Arc::new(queues.iter().map(mpsc::Sender::downgrade).collect());
        for (w, rx) in receivers.into_iter().enumerate() {
            let core = (n <= cores).then_some(w);
            let shared = run::Shared {
                queues: Arc::clone(&weak),
                nudge_pending: Arc::clone(&nudge_pending),
                nudge_target: Arc::clone(&nudge_target),
                bursts: Arc::clone(&bursts),
                parked: Arc::clone(&parked),
                metrics: metrics.writers[w].clone(),
                parked_jobs_max: depth,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("shardlog-writer-{w}"))
                    .spawn(move || run::run(rx, burst_max, core, w, &shared))?,
            );
        }
        Ok(Writers {
            queues,
            threads: Mutex::new(threads),
            nudges_held: Default::default(),
            nudge_pending,
            nudge_target,
            bursts,
            parked,
            order: Mutex::new(()),
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

    /// The next revision of stream `hash` on `shard` of log `log` (0: it has none), counting
    /// only decided commits; asked of the writer that owns it (`503` when its queue is full).
    pub async fn stream_next(&self, log: u64, shard: u32, hash: u128) -> Result<u64, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Revision { log, shard, hash, reply };
        let w = self.owner(shard);
        if self.queues[w].try_send(job).is_err() {
            self.metrics.writers[w].queue_full.inc();
            return Err(ApiError::Overloaded { retry_after_s: 1 });
        }
        match answer.await {
            Ok(Some(next)) => Ok(next),
            Ok(None) => {
                Err(ApiError::Internal(format!("shard {shard} of log {log} has no writer")))
            }
            Err(_) => {
                Err(ApiError::Unavailable { reason: "the server is stopping", retry_after_s: 1 })
            }
        }
    }

    /// Held while a request queues its jobs on several writers: such requests are then in one
    /// order in every queue, so a transaction's job that waits for a stream waits only for a
    /// transaction queued before it, everywhere, and no two transactions wait for each other.
    /// Only the sends happen under it (the queue slots are reserved before).
    pub fn order(&self) -> std::sync::MutexGuard<'_, ()> {
        crate::lock(&self.order)
    }

    /// Tells every writer holding jobs back for an undecided transaction to look again: call
    /// after deciding a transaction. A writer whose queue is full is busy and looks again at
    /// the end of its burst anyway.
    pub fn recheck_parked(&self) {
        // Pairs with the writer's fence between publishing its count and looking at the
        // transactions: either it sees the decision, or this sees its count.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        for (q, parked) in self.queues.iter().zip(self.parked.iter()) {
            if parked.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let _ = q.try_send(Job::Recheck);
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
        self.send_blocking(self.owner(shard), Job::Adopt { log, shard, writer: Box::new(writer) });
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
