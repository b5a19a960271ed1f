//! The state a log's handle (`Log`), its maintenance thread and retention share: settings,
//! shards, retired and recyclable segments, the checkpoint and the transactions, with the
//! operations more than one of them needs (flush, checkpoint, preparing a shard's next
//! segment, background-error accounting).
//!
//! What it is not: the public handle (`log`) or the thread (`maintenance`).

use crate::checkpoint::CheckpointFile;
use crate::error::{Result, StorageError};
use crate::format::{self, LogMeta};
use crate::options::{LogOptions, Retention};
use crate::segment::{self, Segment};
use crate::shard::Shard;
use crate::txn::{FoundParts, Txns};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a log's handle, its maintenance thread and retention share.
#[derive(Debug)]
pub(crate) struct LogInner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: LogOptions,
    /// Current settings; retention can change while open ([`crate::Log::set_retention`]).
    pub(crate) meta: Mutex<LogMeta>,
    pub(crate) shards: Vec<Arc<Shard>>,
    pub(crate) retired: Mutex<Vec<Arc<Segment>>>,
    pub(crate) recycle: Arc<Mutex<Vec<PathBuf>>>,
    pub(crate) recycle_seq: AtomicU64,
    pub(crate) background_errors: AtomicU64,
    pub(crate) last_background_error: Mutex<Option<String>>,
    /// `None` when the log is open read-only (`Log::open_read_only`): nothing is written.
    pub(crate) checkpoint: Mutex<Option<CheckpointFile>>,
    pub(crate) txns: Arc<Txns>,
    /// Held (flock) while the log is open.
    pub(crate) _lock: File,
}

impl LogInner {
    pub(crate) fn retention(&self) -> Retention {
        let m = *self.meta.lock().unwrap_or_else(|p| p.into_inner());
        Retention {
            max_age_ms: (m.max_age_ms > 0).then_some(m.max_age_ms),
            max_bytes: (m.max_bytes > 0).then_some(m.max_bytes),
        }
    }

    /// Whether the log was opened read-only: no file of it is ever written.
    pub(crate) fn read_only(&self) -> bool {
        self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    pub(crate) fn flush(&self) -> Result<()> {
        if self.read_only() {
            // Nothing was written, so nothing is to be made durable.
            return Ok(());
        }
        self.shards.iter().try_for_each(|s| s.flush())
    }

    /// Flushes every shard and records what is now on disk: per shard, its newest segment and
    /// that segment's durable length (all older segments were flushed whole, as they are final).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        if self.read_only() {
            return Err(StorageError::ReadOnly { op: "write a checkpoint" });
        }
        // Transactions committed before the flush below have their parts on disk after it; a
        // transaction begun from now on writes beyond the shards' ends now.
        let snap = self.txns.open_epoch(|| self.shards.iter().map(|s| s.end_position()).collect());
        let flushed = (|| {
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
            match self.checkpoint.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                Some(file) => file.write(entries)?,
                None => return Err(StorageError::ReadOnly { op: "write a checkpoint" }),
            }
            // The outside participant's records of what was just flushed must be durable
            // too before the cut passes those transactions.
            self.opts
                .external
                .flush()
                .map_err(|e| StorageError::io("flush outside participant", &self.dir, e))
        })();
        if let Err(e) = flushed {
            self.txns.unsettle(snap);
            return Err(e);
        }
        // An aborted transaction's record can go once no shard holds a commit up to its last.
        // (The shards' first commits are looked up only if there is an abort to judge.)
        let firsts = std::cell::OnceCell::new();
        let firsts = || {
            firsts.get_or_init(|| {
                self.shards
                    .iter()
                    .map(|s| s.segments.load().iter().find_map(|g| g.first_id.get().copied()))
                    .collect::<Vec<Option<u128>>>()
            })
        };
        self.txns.settle(snap, |last| firsts().iter().any(|f| f.is_some_and(|f| f <= last)))
    }

    /// Every transaction part from `cut` (per shard: segment sequence, offset) to each shard's
    /// end, by transaction: what recovery judges them by. Also how many commits it read.
    pub(crate) fn txn_parts_from(&self, cut: &[(u64, u64)]) -> Result<(FoundParts, u64)> {
        let mut found = FoundParts::new();
        let mut read = 0;
        for (shard, &(seq, off)) in self.shards.iter().zip(cut) {
            let mut c = shard.cursor_at(seq, off as usize);
            while let Some(r) = c.next()? {
                read += 1;
                if r.frame.flags & format::flags::TXN_PART != 0 {
                    let e = found.entry(r.frame.aux).or_default();
                    e.0.insert(r.shard);
                    e.1 = e.1.max(r.frame.id.0);
                }
            }
        }
        Ok((found, read))
    }

    /// Decides what a crash left undecided (`Txns::recover`), judged by the parts found in the
    /// shards from the journal's cut and by the outside participant: the ids aborted, and
    /// how many commits the scan read.
    pub(crate) fn recover_txns(&self) -> Result<(Vec<u64>, u64)> {
        self.txns.recover(
            |cut| self.txn_parts_from(cut),
            self.opts.external.as_ref(),
            |shard, first, n| self.part_present(shard, first, n),
        )
    }

    /// Whether the `n` commits from ULID `first` are all in shard `shard` (they were one batch,
    /// so the first and the last being there means all are).
    pub(crate) fn part_present(&self, shard: u32, first: u128, n: u32) -> Result<bool> {
        let Some(s) = self.shards.get(shard as usize) else { return Ok(false) };
        // From a journal record: a first ULID at the top of the range is damage, not a batch.
        let Some(last) = first.checked_add(n.max(1) as u128 - 1) else { return Ok(false) };
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
