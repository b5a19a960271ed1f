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
//! shard: exactly one writer each, by construction. A new log is created whole or not at all:
//! its files and directories are built in a sibling directory ([`Log::creating_path`]), renamed
//! into place (the parent directory fsynced) and opened, which makes the first segments; a
//! failure removes what it made. [`Log::open_read_only`] opens a
//! log to inspect it: it changes no file (no cut, no seal, no checkpoint, no journal) and has
//! no writers.
//!
//! What it is not: a registry of logs (the service keeps that) or a merger across shards.

use crate::checkpoint::{self, CheckpointFile};
use crate::error::{Result, StorageError};
use crate::format::{self, HEADER_LEN, LogMeta};
use crate::inner::LogInner;
use crate::logdir::{load_or_create_meta, lock_dir, lock_dir_shared, write_meta};
use crate::maintenance::{self, Msg};
use crate::options::{LogOptions, Retention};
use crate::segment::{self, Segment};
use crate::shard::{Shard, ShardStats};
use crate::txn::Txns;
use crate::writer::{ShardWriter, WriterConfig};
use crossbeam_channel::Sender;
use idgen::Clock;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An open log. Dropping it (or [`Log::close`], earlier) stops the maintenance thread after a
/// final flush.
#[derive(Debug)]
pub struct Log {
    inner: Arc<LogInner>,
    tx: Sender<Msg>,
    /// Taken by whichever of `close` and `drop` stops it first.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// Transactions aborted because a crash left them undecided with a part missing.
    pub aborted_txns: Vec<u64>,
    /// Commits the transaction recovery read (from the journal's cut to each shard's end).
    pub txn_scan_commits: u64,
    /// Commits read to rebuild the revision index (after each shard's snapshot, or all).
    pub revision_scan_commits: u64,
    /// Shards whose revision index started from a snapshot.
    pub revision_snapshots: u64,
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
        let meta_path = dir.join("log.meta");
        let created = match std::fs::metadata(&meta_path) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::create::create(&dir, &opts)?;
                true
            }
            Err(e) => return Err(StorageError::io("read log metadata", &meta_path, e)),
        };
        let opened = open_dir(dir.clone(), opts);
        if created && opened.is_err() {
            // Its first segments could not be made (a full disk): it never held anything.
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = crate::fsync_dir(parent);
            }
        }
        opened
    }

    /// Where a new log for `dir` is built before it is renamed to `dir`: `.{name}.creating`
    /// next to it (a name no log has: log names start with a letter or digit). One is left
    /// behind only by a crash during a creation; the next creation of that log replaces it,
    /// and anything listing logs must skip (or remove) it. `None` if `dir` has no file name.
    pub fn creating_path(dir: impl AsRef<Path>) -> Option<PathBuf> {
        crate::create::creating_path(dir.as_ref())
    }

    /// Opens the log in `dir` to inspect it, changing nothing in the directory: the stored
    /// settings are taken as they are, segments are opened and mapped read-only at their own
    /// length, torn tails are reported in the [`RecoveryReport`] (readers stop before them)
    /// instead of cut, rolled-away segments are not sealed, `.tmp` files stay, and no
    /// checkpoint, metadata or journal is written. Transactions a crash left undecided are
    /// decided in memory only, asking `external` about those with an outside participant. The
    /// log's lock is taken shared, so writers (who take it exclusive) are kept out while the
    /// handle lives and other inspectors are not. The handle has no writers; `set_retention`,
    /// `apply_retention` and `checkpoint` answer [`StorageError::ReadOnly`].
    pub fn open_read_only(
        dir: impl AsRef<Path>,
        external: Arc<dyn crate::txn::External>,
    ) -> Result<(Log, RecoveryReport)> {
        let dir = dir.as_ref().to_owned();
        let meta =
            Log::stored_meta(&dir)?.ok_or_else(|| StorageError::NotALog { dir: dir.clone() })?;
        let lock = lock_dir_shared(&dir)?;
        let shards = meta.shards as usize;
        let current = checkpoint::read_only(&dir, shards)?;
        let txns = Arc::new(Txns::load(&dir, shards, true)?);
        let opts = LogOptions {
            shards: meta.shards,
            retention: Retention {
                max_age_ms: (meta.max_age_ms > 0).then_some(meta.max_age_ms),
                max_bytes: (meta.max_bytes > 0).then_some(meta.max_bytes),
            },
            background: false,
            external,
            ..LogOptions::default()
        };
        let mut report = RecoveryReport::default();
        let mut list = Vec::with_capacity(shards);
        for i in 0..meta.shards {
            let entry = current.as_ref().and_then(|c| c.shards.get(i as usize));
            let shard_dir = dir.join("shards").join(format!("{i:05}"));
            let mut segments = Vec::new();
            // A shard whose directory is missing has no segments.
            let files = if shard_dir.is_dir() { list_files(&shard_dir)? } else { Vec::new() };
            for (path, name) in files {
                let Some(seq) = segment::parse_file_name(&name) else { continue };
                let o = segment::open_read_only(
                    &path,
                    i,
                    seq,
                    opts.index_interval_bytes,
                    checkpoint::known(entry, seq),
                )?;
                if let Some((off, reason)) = &o.torn_at {
                    report.torn_tails.push((path.clone(), *off as u64, reason.to_string()));
                }
                segments.push(o);
            }
            segments.sort_by_key(|o| o.segment.seq);
            let mut opened = segments;
            let _ = cut_behind_lost_seal(&mut opened, entry, &mut report);
            let segments: Vec<Arc<Segment>> = opened.into_iter().map(|o| o.segment).collect();
            list.push(Arc::new(Shard::new(
                i,
                shard_dir,
                segments,
                Arc::clone(&txns),
                opts.metrics.clone(),
            )));
        }
        let inner = Arc::new(LogInner {
            dir,
            meta: Mutex::new(meta),
            opts,
            shards: list,
            retired: Mutex::new(Vec::new()),
            recycle_seq: AtomicU64::new(0),
            recycle: Arc::new(Mutex::new(Vec::new())),
            background_errors: AtomicU64::new(0),
            last_background_error: Mutex::new(None),
            checkpoint: Mutex::new(None),
            txns,
            _lock: lock,
        });
        (report.aborted_txns, report.txn_scan_commits) = inner.recover_txns()?;
        // No maintenance thread: nobody reads this channel, and nothing is sent on it.
        let (tx, _) = crossbeam_channel::bounded(1);
        Ok((Log { inner, tx, thread: Mutex::new(None) }, report))
    }

    /// Whether no file of the log is written any more: it was opened with
    /// [`Log::open_read_only`], or closed with [`Log::close`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only()
    }

    /// Closes the log for good while readers may still hold the handle (the service deletes a
    /// log this way before it removes the directory): stops the maintenance thread after its
    /// final flush and checkpoint, as dropping the handle would, and then writes nothing more.
    /// The handle turns read-only: no checkpoint, retention or settings change, and dropping it
    /// touches no file. So no later seal, retention pass or recycling, all of which address
    /// files by path, can reach a log created afterwards in the same directory. Readers keep
    /// reading what is mapped. Call it once the writers are gone. Blocking.
    pub fn close(&self) {
        self.stop_maintenance();
        *self.inner.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Stops the maintenance thread after its final flush and checkpoint (without one, writes
    /// the checkpoint), unless that already happened or the log is read-only.
    fn stop_maintenance(&self) {
        let _ = self.tx.send(Msg::Shutdown);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match thread {
            Some(t) => {
                let _ = t.join();
            }
            None if self.inner.read_only() => {}
            None => {
                if let Err(e) = self.inner.checkpoint() {
                    self.inner.background_error(e);
                }
            }
        }
    }
}

/// Opens the log directory `dir` read-write (creating what is missing), recovering it.
fn open_dir(dir: PathBuf, opts: LogOptions) -> Result<(Log, Vec<ShardWriter>, RecoveryReport)> {
    crate::create_dir_durable(&dir)
        .map_err(|e| StorageError::io("create log directory", &dir, e))?;
    let lock = lock_dir(&dir)?;
    let meta = load_or_create_meta(&dir, &opts)?;
    let (checkpoint, current) = CheckpointFile::open(&dir, meta.shards as usize)?;
    let txns = Arc::new(Txns::load(&dir, meta.shards as usize, false)?);
    let recycle_dir = dir.join("recycle");
    crate::create_dir_durable(&recycle_dir)
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
        .filter_map(|p| p.file_name().and_then(|n| segment::parse_file_name(&n.to_string_lossy())))
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
        checkpoint: Mutex::new(Some(checkpoint)),
        txns,
        _lock: lock,
    });
    // With every shard recovered, decide what a crash left undecided (durably), then take
    // what recovery kept as the new baseline: flush it and say so (the checkpoint moves
    // the transactions' cut past what was just decided).
    (report.aborted_txns, report.txn_scan_commits) = inner.recover_txns()?;
    // Streams are counted once it is known which transactions' parts count.
    for (shard, w) in inner.shards.iter().zip(writers.iter_mut()) {
        let (revisions, read) =
            crate::revisions::recover(shard, &shard.dir, w.last_id(), &inner.txns)?;
        report.revision_scan_commits += read.commits_read;
        report.revision_snapshots += u64::from(read.from_snapshot);
        w.set_revisions(revisions);
    }
    inner.checkpoint()?;
    let thread = if inner.opts.background {
        // No segment is prepared here: a writer asks for its next one when its active
        // segment passes half full (`ShardWriter::append`).
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
    Ok((Log { inner, tx, thread: Mutex::new(thread) }, writers, report))
}

impl Log {
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

    /// The log's watermark (`crate::watermark`): no commit at or below it can still be added
    /// to a shard or become visible. What strong reads wait for, and what every reported
    /// watermark is.
    pub fn watermark(&self) -> idgen::Ulid {
        crate::watermark::watermark(self.shards()).unwrap_or(idgen::Ulid(0))
    }

    /// Begins transaction `id`, whose parts go to `shards` (one each): they wait for its
    /// decision, and the lowest mark of those shards bounds the watermark until then. In
    /// memory only; call it once every part is sure to be handed to its writer.
    pub fn begin_txn(&self, id: u64, shards: &[u32]) {
        let all = self.shards();
        self.inner.txns.begin(id, || {
            crate::watermark::floor(shards.iter().filter_map(|&s| all.get(s as usize)))
        });
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
        if self.is_read_only() {
            return Err(StorageError::ReadOnly { op: "change the retention" });
        }
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

    /// Flushes every shard and writes the checkpoint, settling the transactions committed
    /// before it (the maintenance thread does this every `checkpoint_interval_ms`).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Retires whole sealed segments beyond the retention limits as of `now_ms`; returns how
    /// many. Their files are recycled or deleted once no reader holds them.
    pub fn apply_retention(&self, now_ms: u64) -> Result<usize> {
        if self.is_read_only() {
            return Err(StorageError::ReadOnly { op: "apply retention" });
        }
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
        self.stop_maintenance();
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
    crate::create_dir_durable(&shard_dir)
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
    // The maintenance thread prepares a shard's next segment (named, header written) before
    // the writer needs it. An open segment holding nothing behind another open segment is that
    // prepared one, never written to: it is the prepared segment again. (Taken as the active
    // one, it made the segment before it look rolled away from: sealed early, and one more
    // file of `segment_bytes` left behind every time the log was opened.)
    let prepared = match opened.as_slice() {
        [.., before, last]
            if before.writer.is_some()
                && last.writer.is_some()
                && last.last_id.is_none()
                && last.torn_at.is_none() =>
        {
            opened.pop()
        }
        _ => None,
    };
    let prepared = match cut_behind_lost_seal(&mut opened, known, report) {
        Some(cut) => {
            // Removed before the seal below makes the segment in front look whole, and
            // with the prepared file, whose number would no longer follow.
            for path in cut.iter().chain(prepared.iter().map(|p| &p.segment.path)) {
                std::fs::remove_file(path)
                    .map_err(|e| StorageError::io("remove segment behind a lost seal", path, e))?;
            }
            segment::sync_dir(&shard_dir)?;
            None
        }
        None => prepared,
    };
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
    *shard.prepared.lock().unwrap_or_else(|p| p.into_inner()) = prepared;
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

/// Takes the segments behind one whose seal was lost out of `opened` (`recovery::cut_behind`),
/// reporting them as torn tails; returns their paths, for a writing open to remove.
fn cut_behind_lost_seal(
    opened: &mut Vec<segment::Opened>,
    known: Option<&format::CheckpointEntry>,
    report: &mut RecoveryReport,
) -> Option<Vec<PathBuf>> {
    let seals: Vec<_> =
        opened.iter().map(|o| (o.seal_durable, checkpoint::known(known, o.segment.seq))).collect();
    let from = crate::recovery::cut_behind(&seals)?;
    let cut: Vec<PathBuf> = opened.drain(from..).map(|o| o.segment.path.clone()).collect();
    for path in &cut {
        let why = "behind a segment whose seal was lost: never synced";
        report.torn_tails.push((path.clone(), HEADER_LEN as u64, why.to_owned()));
    }
    Some(cut)
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
