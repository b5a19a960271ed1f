//! A log: N shards in one directory, opened with recovery, kept by a maintenance thread.
//!
//! Layout of a log directory:
//! ```text
//! LOCK                      held (flock) while the log is open: one process at a time
//! log.meta                  shard count, creation time, retention (format::LogMeta)
//! checkpoint                how much of each shard is on disk (two slots, see `checkpoint`)
//! shards/00000/…0001.seg    segment files of shard 0, by sequence number
//! recycle/                  retired segment files waiting to be reused
//! ```
//! [`Log::open`] recovers every shard (see `recovery`) and returns one [`ShardWriter`] per
//! shard: exactly one writer each, by construction.
//!
//! What it is not: a registry of logs (the service keeps that) or a merger across shards.

use crate::checkpoint::{self, CheckpointFile};
use crate::error::{Result, StorageError};
use crate::format::{self, HEADER_LEN, LogMeta};
use crate::maintenance::{self, Msg};
use crate::segment::{self, Segment};
use crate::shard::{Shard, ShardStats};
use crate::txn::Txns;
use crate::writer::{ShardWriter, WriterConfig};
use crossbeam_channel::Sender;
use idgen::{Clock, SystemClock};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: usize = 64 * 1024;
/// Most shards a log may have.
pub const SHARDS_MAX: u32 = 4096;

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Shard count of a new log; an existing log must match.
    pub shards: u32,
    /// Size of each segment file (preallocated).
    pub segment_bytes: usize,
    /// One sparse-index entry per this many bytes of a segment.
    pub index_interval_bytes: usize,
    /// Background flush period for `async` durability.
    pub flush_interval_ms: u64,
    /// How often the checkpoint (what is on disk, for recovery) is written.
    pub checkpoint_interval_ms: u64,
    /// How often retention runs.
    pub retention_interval_ms: u64,
    /// Retired segment files kept for reuse (beyond that they are deleted, off the hot path).
    pub recycle_files_max: usize,
    /// Retention.
    pub retention: Retention,
    /// The clock for IDs and retention.
    pub clock: Arc<dyn Clock>,
    /// Sealed segments per shard whose pages stay in the page cache after sealing; older ones
    /// pages are dropped (readers fault them back from disk). `usize::MAX` keeps everything.
    pub sealed_cached_segments: usize,
    /// Run the maintenance thread (tests turn it off to drive flush and retention by hand).
    pub background: bool,
    /// Where fsync timings go (unregistered handles by default).
    pub metrics: crate::metrics::StorageMetrics,
}

/// What a log keeps. Whole sealed segments beyond either limit are retired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep commits younger than this.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many data bytes.
    pub max_bytes: Option<u64>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            shards: 1,
            segment_bytes: 64 << 20,
            index_interval_bytes: 16 << 10,
            flush_interval_ms: 50,
            retention_interval_ms: 1_000,
            checkpoint_interval_ms: 1_000,
            sealed_cached_segments: 2,
            recycle_files_max: 4,
            retention: Retention::default(),
            clock: Arc::new(SystemClock),
            background: true,
            metrics: crate::metrics::StorageMetrics::default(),
        }
    }
}

impl LogOptions {
    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(StorageError::InvalidOption { name, reason });
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return bad("shards", format!("{} is not in 1..={SHARDS_MAX}", self.shards));
        }
        if self.segment_bytes < SEGMENT_BYTES_MIN
            || !self.segment_bytes.is_multiple_of(format::ALIGN)
        {
            return bad(
                "segment_bytes",
                format!("{} is below {SEGMENT_BYTES_MIN} or unaligned", self.segment_bytes),
            );
        }
        if self.index_interval_bytes < 512 || self.index_interval_bytes > self.segment_bytes {
            return bad(
                "index_interval_bytes",
                format!("{} is not in 512..=segment_bytes", self.index_interval_bytes),
            );
        }
        Ok(())
    }
}

/// An open log. Dropping it stops the maintenance thread after a final flush.
#[derive(Debug)]
pub struct Log {
    inner: Arc<LogInner>,
    tx: Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
pub(crate) struct LogInner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: LogOptions,
    /// Current settings; retention can change while open ([`Log::set_retention`]).
    pub(crate) meta: Mutex<LogMeta>,
    pub(crate) shards: Vec<Arc<Shard>>,
    pub(crate) retired: Mutex<Vec<Arc<Segment>>>,
    pub(crate) recycle: Arc<Mutex<Vec<PathBuf>>>,
    pub(crate) recycle_seq: AtomicU64,
    background_errors: AtomicU64,
    last_background_error: Mutex<Option<String>>,
    checkpoint: Mutex<CheckpointFile>,
    pub(crate) txns: Arc<Txns>,
    _lock: File,
}

/// A log's size and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Commits stored.
    pub commits: u64,
    /// Data bytes stored.
    pub bytes: u64,
    /// Segment files in use.
    pub segments: u64,
    /// Errors the maintenance thread met (sealing, preparing, flushing, retention).
    pub background_errors: u64,
    /// Per shard.
    pub shards: Vec<ShardStats>,
}

/// What recovery found when opening a log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Torn tails cut: (segment, offset, reason).
    pub torn_tails: Vec<(PathBuf, u64, String)>,
    /// Cross-shard transactions aborted because a crash left them undecided or a part missing.
    pub aborted_txns: Vec<u64>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering every shard, and returns it with
    /// one writer per shard, in shard order.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<(Log, Vec<ShardWriter>)> {
        Self::open_with_report(dir, opts).map(|(l, w, _)| (l, w))
    }

    /// As [`Log::open`], also saying what recovery cut.
    pub fn open_with_report(
        dir: impl AsRef<Path>,
        opts: LogOptions,
    ) -> Result<(Log, Vec<ShardWriter>, RecoveryReport)> {
        opts.validate()?;
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io("create log directory", &dir, e))?;
        let lock = lock_dir(&dir)?;
        let meta = load_or_create_meta(&dir, &opts)?;
        let (checkpoint, current) = CheckpointFile::open(&dir, meta.shards as usize)?;
        let txns = Arc::new(Txns::load(&dir)?);
        let recycle_dir = dir.join("recycle");
        std::fs::create_dir_all(&recycle_dir)
            .map_err(|e| StorageError::io("create directory", &recycle_dir, e))?;
        // Only files named like segments join the pool; anything else is left alone.
        let recycle = list_files(&recycle_dir)?
            .into_iter()
            .filter(|(_, name)| segment::parse_file_name(name).is_some())
            .map(|(p, _)| p)
            .collect::<Vec<_>>();
        // Next free name in the pool: above every name there (names are numbers).
        let recycle_next = recycle
            .iter()
            .filter_map(|p| {
                p.file_name().and_then(|n| segment::parse_file_name(&n.to_string_lossy()))
            })
            .max()
            .map_or(0, |n| n + 1);
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let recycle = Arc::new(Mutex::new(recycle));
        let cfg = WriterConfig {
            segment_bytes: opts.segment_bytes,
            index_interval_bytes: opts.index_interval_bytes,
            recycle: Arc::clone(&recycle),
        };
        let mut report = RecoveryReport::default();
        let mut shards = Vec::new();
        let mut writers = Vec::new();
        for i in 0..meta.shards {
            let entry = current.as_ref().and_then(|c| c.shards.get(i as usize));
            let (shard, writer) = open_shard(&dir, i, &opts, &cfg, &tx, entry, &txns, &mut report)?;
            shards.push(shard);
            writers.push(writer);
        }
        let inner = Arc::new(LogInner {
            dir,
            meta: Mutex::new(meta),
            opts,
            shards,
            retired: Mutex::new(Vec::new()),
            recycle_seq: AtomicU64::new(recycle_next),
            recycle: Arc::clone(&recycle),
            background_errors: AtomicU64::new(0),
            last_background_error: Mutex::new(None),
            checkpoint: Mutex::new(checkpoint),
            txns,
            _lock: lock,
        });
        // What recovery kept is the new baseline: flush it and say so.
        inner.checkpoint()?;
        // With every shard recovered and flushed, decide what crashed transactions left open.
        report.aborted_txns =
            inner.txns.resolve(|shard, first, n| inner.part_present(shard, first, n))?;
        let thread = if inner.opts.background {
            for i in 0..inner.shards.len() {
                let _ = tx.send(Msg::Prepare { shard: i });
            }
            let inner2 = Arc::clone(&inner);
            Some(
                std::thread::Builder::new()
                    .name("shardlog-maint".into())
                    .spawn(move || maintenance::run(inner2, rx))
                    .map_err(|e| StorageError::io("spawn maintenance thread", &inner.dir, e))?,
            )
        } else {
            drop(rx);
            None
        };
        Ok((Log { inner, tx, thread }, writers, report))
    }

    /// The settings stored in `dir`, or `None` if no log was ever created there.
    pub fn stored_meta(dir: impl AsRef<Path>) -> Result<Option<LogMeta>> {
        let path = dir.as_ref().join("log.meta");
        match std::fs::read(&path) {
            Ok(bytes) => format::decode_meta(&bytes)
                .map(Some)
                .map_err(|reason| StorageError::Corrupt { segment: path, offset: 0, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read log metadata", &path, e)),
        }
    }

    /// The log's cross-shard transactions.
    pub fn txns(&self) -> &Txns {
        &self.inner.txns
    }

    /// The log's watermark: no commit at or below it can still be added to a shard or become
    /// visible. The lowest of the shards' high-water marks and of the floors of undecided
    /// transactions (their parts may still become visible above a floor, never at or below).
    pub fn watermark(&self) -> idgen::Ulid {
        let marks = self.shards().iter().map(|s| s.high_water()).min();
        let marks = marks.unwrap_or(idgen::Ulid(0));
        self.inner.txns.pending_floor().map_or(marks, |f| marks.min(f))
    }

    /// Begins cross-shard transaction `id` ([`Txns::begin`]). Its parts will be appended above
    /// their shards' marks, so above the watermark now: until it is decided, the watermark
    /// stays at or below that.
    pub fn begin_txn(&self, id: u64) -> Result<()> {
        self.inner.txns.begin(id, self.watermark())
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.inner.shards
    }

    /// Shard `i`.
    pub fn shard(&self, i: usize) -> &Arc<Shard> {
        &self.inner.shards[i]
    }

    /// Persistent settings.
    pub fn meta(&self) -> LogMeta {
        *self.inner.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The retention in force.
    pub fn retention(&self) -> Retention {
        self.inner.retention()
    }

    /// Changes the retention and persists it (`log.meta`, written atomically); the next
    /// retention pass applies it.
    pub fn set_retention(&self, retention: Retention) -> Result<()> {
        let mut meta = self.inner.meta.lock().unwrap_or_else(|p| p.into_inner());
        let new = LogMeta {
            max_age_ms: retention.max_age_ms.unwrap_or(0),
            max_bytes: retention.max_bytes.unwrap_or(0),
            ..*meta
        };
        if new != *meta {
            write_meta(&self.inner.dir, &self.inner.dir.join("log.meta"), &new)?;
            *meta = new;
        }
        Ok(())
    }

    /// Size and counters.
    pub fn stats(&self) -> LogStats {
        let shards: Vec<_> = self.inner.shards.iter().map(|s| s.stats()).collect();
        LogStats {
            commits: shards.iter().map(|s| s.commits).sum(),
            bytes: shards.iter().map(|s| s.bytes).sum(),
            segments: shards.iter().map(|s| s.segments).sum(),
            background_errors: self.inner.background_errors.load(Ordering::Relaxed),
            shards,
        }
    }

    /// Commits readable after `after` in every shard, counting at most `cap` (a bounded scan
    /// from the sparse index: the answer is `cap` when there are more). A shard's count stops
    /// at a transaction part still pending.
    pub fn count_after(&self, after: idgen::Ulid, cap: u64) -> Result<u64> {
        let mut n = 0;
        for s in &self.inner.shards {
            let mut c = s.cursor(crate::Start::After(after));
            while n < cap && c.next()?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The last error the maintenance thread met, if any.
    pub fn last_background_error(&self) -> Option<String> {
        self.inner.last_background_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes every published commit of every shard durable.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Retires whole sealed segments beyond the retention limits as of `now_ms`; returns how
    /// many. Their files are recycled or deleted once no reader holds them.
    pub fn apply_retention(&self, now_ms: u64) -> Result<usize> {
        let n = self.inner.apply_retention(now_ms)?;
        self.inner.recycle_retired();
        Ok(n)
    }

    /// Reads every frame of every segment and verifies its checksum; the first failure is an
    /// error naming segment and offset. Returns the number of commits verified.
    pub fn verify(&self) -> Result<u64> {
        let mut n = 0;
        for shard in &self.inner.shards {
            let mut c = shard.cursor(crate::shard::Start::Beginning);
            while c.next()?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        match self.thread.take() {
            Some(t) => {
                let _ = t.join();
            }
            None => {
                if let Err(e) = self.inner.checkpoint() {
                    self.inner.background_error(e);
                }
            }
        }
    }
}

impl LogInner {
    pub(crate) fn retention(&self) -> Retention {
        let m = *self.meta.lock().unwrap_or_else(|p| p.into_inner());
        Retention {
            max_age_ms: (m.max_age_ms > 0).then_some(m.max_age_ms),
            max_bytes: (m.max_bytes > 0).then_some(m.max_bytes),
        }
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.shards.iter().try_for_each(|s| s.flush())
    }

    /// Flushes every shard and records what is now on disk: per shard, its newest segment and
    /// that segment's durable length (all older segments were flushed whole, as they are final).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        // Transactions committed before the flush below have their parts on disk after it.
        let settled = self.txns.commits_so_far();
        let mut entries = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let snapshot = shard.segments.load_full();
            shard.flush_segments(&snapshot)?;
            let newest = snapshot.last();
            entries.push(format::CheckpointEntry {
                seq: newest.map_or(0, |s| s.seq),
                durable_len: newest.map_or(0, |s| s.flushed.load(Ordering::Acquire) as u64),
            });
        }
        self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()).write(entries)?;
        self.txns.settle(settled)
    }

    /// Whether the `n` commits from ULID `first` are all in shard `shard` (they were one batch,
    /// so the first and the last being there means all are).
    fn part_present(&self, shard: u32, first: u128, n: u32) -> Result<bool> {
        let Some(s) = self.shards.get(shard as usize) else { return Ok(false) };
        let last = first + (n.max(1) as u128 - 1);
        for id in [first, last] {
            let mut c = s.cursor(crate::shard::Start::From(idgen::Ulid(id)));
            match c.next()? {
                Some(r) if r.frame.id.0 == id => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// After a seal in shard `shard`: drops the cached pages of its sealed segments
    /// beyond the newest `sealed_cached_segments`.
    pub(crate) fn drop_old_sealed_pages(&self, shard: usize) {
        let keep = self.opts.sealed_cached_segments;
        if keep == usize::MAX {
            return;
        }
        let list = self.shards[shard].segments.load();
        let sealed: Vec<&Arc<Segment>> = list.iter().filter(|s| s.is_sealed()).collect();
        for s in sealed.iter().rev().skip(keep) {
            if !s.cache_dropped.swap(true, Ordering::Relaxed)
                && let Err(e) = s.map.drop_cache()
            {
                self.background_error(StorageError::io("drop cached pages", &s.path, e));
            }
        }
    }

    pub(crate) fn background_error(&self, e: StorageError) {
        self.background_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_background_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// Prepares shard `i`'s next segment unless one is ready. Holds the shard's slot lock
    /// throughout, so a writer rolling meanwhile waits for this segment instead of racing to
    /// create the same file.
    pub(crate) fn prepare_next(&self, i: usize) -> Result<()> {
        let shard = &self.shards[i];
        let mut slot = shard.prepared.lock().unwrap_or_else(|p| p.into_inner());
        let next_seq = shard.segments.load().last().map_or(1, |s| s.seq + 1);
        if slot.as_ref().is_some_and(|p| p.segment.seq == next_seq) {
            return Ok(());
        }
        let recycled = self.recycle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        *slot = Some(segment::prepare(
            &shard.dir,
            shard.id,
            next_seq,
            self.opts.segment_bytes,
            self.opts.index_interval_bytes,
            self.opts.clock.now_ms(),
            recycled,
        )?);
        Ok(())
    }
}

// Each argument is a distinct input of one shard's recovery; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn open_shard(
    dir: &Path,
    i: u32,
    opts: &LogOptions,
    cfg: &WriterConfig,
    tx: &Sender<Msg>,
    known: Option<&format::CheckpointEntry>,
    txns: &Arc<Txns>,
    report: &mut RecoveryReport,
) -> Result<(Arc<Shard>, ShardWriter)> {
    let shard_dir = dir.join("shards").join(format!("{i:05}"));
    std::fs::create_dir_all(&shard_dir)
        .map_err(|e| StorageError::io("create shard directory", &shard_dir, e))?;
    let files = list_files(&shard_dir)?;
    let mut opened = Vec::new();
    for (path, name) in files {
        match segment::parse_file_name(&name) {
            Some(seq) => opened.push(segment::open(
                &path,
                i,
                seq,
                opts.segment_bytes,
                opts.index_interval_bytes,
                checkpoint::known(known, seq),
            )?),
            None if name.ends_with(".tmp") => {
                // A segment that never got its durable header: never held data.
                std::fs::remove_file(&path)
                    .map_err(|e| StorageError::io("remove temporary segment", &path, e))?;
            }
            None => {}
        }
    }
    opened.sort_by_key(|o| o.segment.seq);
    let mut last_id = None;
    for o in &opened {
        if let Some((off, reason)) = &o.torn_at {
            report.torn_tails.push((o.segment.path.clone(), *off as u64, reason.to_string()));
        }
        last_id = o.last_id.or(last_id);
    }
    // Every open segment but the last was rolled away from before a crash: seal it now.
    let n = opened.len();
    for o in opened.iter_mut().take(n.saturating_sub(1)) {
        if let Some(mut w) = o.writer.take() {
            segment::seal(&o.segment, &mut w)?;
        }
    }
    let active = match opened.last_mut() {
        Some(o) if o.writer.is_some() => o.writer.take().map(|w| (Arc::clone(&o.segment), w)),
        _ => None,
    };
    let mut segments: Vec<Arc<Segment>> = opened.iter().map(|o| Arc::clone(&o.segment)).collect();
    let (seg, map) = match active {
        Some(a) => a,
        None => {
            let seq = segments.last().map_or(1, |s| s.seq + 1);
            let now = opts.clock.now_ms();
            let o = segment::prepare(
                &shard_dir,
                i,
                seq,
                opts.segment_bytes,
                opts.index_interval_bytes,
                now,
                None,
            )?;
            segments.push(Arc::clone(&o.segment));
            (o.segment, o.writer.expect("prepared segments are open"))
        }
    };
    debug_assert!(map.map().published() >= HEADER_LEN);
    let shard =
        Arc::new(Shard::new(i, shard_dir, segments, Arc::clone(txns), opts.metrics.clone()));
    let writer = ShardWriter::new(
        Arc::clone(&shard),
        seg,
        map,
        last_id,
        Arc::clone(&opts.clock),
        tx.clone(),
        cfg.clone(),
    );
    Ok((shard, writer))
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open lock file", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::io("lock", &path, e)),
    }
}

fn load_or_create_meta(dir: &Path, opts: &LogOptions) -> Result<LogMeta> {
    let path = dir.join("log.meta");
    let wanted = LogMeta {
        shards: opts.shards,
        created_ms: opts.clock.now_ms(),
        max_age_ms: opts.retention.max_age_ms.unwrap_or(0),
        max_bytes: opts.retention.max_bytes.unwrap_or(0),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored = format::decode_meta(&bytes).map_err(|reason| StorageError::Corrupt {
                segment: path.clone(),
                offset: 0,
                reason,
            })?;
            if stored.shards != opts.shards {
                return Err(StorageError::ShardCountMismatch {
                    stored: stored.shards,
                    requested: opts.shards,
                });
            }
            let current = LogMeta { created_ms: stored.created_ms, ..wanted };
            if current != stored {
                write_meta(dir, &path, &current)?;
            }
            Ok(current)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_meta(dir, &path, &wanted)?;
            Ok(wanted)
        }
        Err(e) => Err(StorageError::io("read log metadata", &path, e)),
    }
}

/// Writes the metadata file atomically: temporary file, fsync, rename, fsync directory.
fn write_meta(dir: &Path, path: &Path, meta: &LogMeta) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join("log.meta.tmp");
    let mut f = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all(&format::encode_meta(meta)).map_err(|e| StorageError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| StorageError::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StorageError::io("rename", &tmp, e))?;
    segment::sync_dir(dir)
}

/// Regular files of a directory as (path, name), sorted by name.
fn list_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list directory", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list directory", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push((entry.path(), entry.file_name().to_string_lossy().into_owned()));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}
