//! The append path: the one writer of a shard.
//!
//! `append` encodes a batch into a reused buffer, writes it with one `pwrite` beyond the
//! published length of the mapped segment and publishes it with one store, so readers see the
//! whole batch or none of it; its last frame carries `BATCH_END` so recovery keeps it whole or
//! cuts it whole. `sync` makes everything appended so far durable with one `fdatasync` per
//! touched segment: callers group many batches into one `sync` (group commit). IDs come from
//! the writer's own monotonic generator, one clock read per batch.
//!
//! Rolling takes the segment the maintenance thread prepared (preallocated, header written,
//! directory synced; asked for once the active segment is half full) and hands the old one back
//! to it for sealing, so neither file creation nor the flush of a full segment happens on the
//! hot path unless no prepared segment is ready (counted in `inline_prepares`).
//!
//! What it is not: thread-safe (one writer per shard, owned by one thread) or a queue.

use crate::error::{Result, StorageError};
use crate::format::{self, HEADER_LEN, NewRecord, flags};
use crate::maintenance::Msg;
use crate::mmap::MapWriter;
use crate::revisions::Revisions;
use crate::segment::{self, Segment};
use crate::shard::Shard;
use crossbeam_channel::Sender;
use idgen::{Clock, Generator, IdRange, Ulid};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The unique writer of one shard.
#[derive(Debug)]
pub struct ShardWriter {
    shard: Arc<Shard>,
    seg: Arc<Segment>,
    map: MapWriter,
    /// End of the data written and published in `seg`.
    pos: usize,
    /// Data may not pass this offset in `seg` (room kept for the seal frame).
    limit: usize,
    ids: Generator<Arc<dyn Clock>>,
    regressions_reported: u64,
    /// Segments rolled away from since the last `sync`.
    unsynced: Vec<Arc<Segment>>,
    maintenance: Sender<Msg>,
    /// The next segment was asked for (the active one passed half full).
    next_asked: bool,
    cfg: WriterConfig,
    poisoned: bool,
    index_scratch: Vec<(u128, u64)>,
    /// Encoding buffer, reused across batches (at most `ENCODE_BUF_BYTES` is kept).
    buf: Vec<u8>,
    /// Every stream's next revision (filled by recovery once transactions are decided).
    revisions: Revisions,
}

#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub segment_bytes: usize,
    pub index_interval_bytes: usize,
    /// Retired files to reuse when preparing a segment on the hot path.
    pub recycle: Arc<Mutex<Vec<PathBuf>>>,
}

impl ShardWriter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shard: Arc<Shard>,
        seg: Arc<Segment>,
        map: MapWriter,
        last_id: Option<u128>,
        clock: Arc<dyn Clock>,
        maintenance: Sender<Msg>,
        cfg: WriterConfig,
    ) -> Self {
        let mut ids = Generator::new(clock);
        if let Some(last) = last_id {
            ids.advance_past(Ulid(last));
        }
        let pos = map.map().published();
        let limit = limit_for(map.map().len(), cfg.index_interval_bytes);
        shard.raise_high_water(ids.last().0);
        ShardWriter {
            shard,
            seg,
            map,
            pos,
            limit,
            ids,
            regressions_reported: 0,
            unsynced: Vec::new(),
            maintenance,
            next_asked: false,
            cfg,
            poisoned: false,
            index_scratch: Vec::new(),
            buf: Vec::new(),
            revisions: Revisions::default(),
        }
    }

    /// The shard's revision index.
    pub fn revisions(&self) -> &Revisions {
        &self.revisions
    }

    /// The shard's revision index, to number commits before appending them and to settle
    /// the transactions decided since (`Revisions::settle` with this shard's transactions).
    pub fn revisions_mut(&mut self) -> (&mut Revisions, &crate::txn::Txns) {
        (&mut self.revisions, &self.shard.txns)
    }

    /// The transactions of this shard's log.
    pub fn txns(&self) -> &crate::txn::Txns {
        &self.shard.txns
    }

    pub(crate) fn set_revisions(&mut self, r: Revisions) {
        self.revisions = r;
    }

    /// The shard this writer appends to.
    pub fn shard(&self) -> &Arc<Shard> {
        &self.shard
    }

    /// The last ULID handed out (or recovered).
    pub fn last_id(&self) -> Ulid {
        self.ids.last()
    }

    /// For an idle writer: promises never to append at or below the last millisecond before
    /// `now_ms`, and raises the shard's high-water mark to it, so one quiet shard does not hold
    /// back a merged timeline. Returns the new mark.
    pub fn advance_high_water(&mut self, now_ms: u64) -> Ulid {
        self.advance_high_water_to(idgen::max_for_ms(now_ms.saturating_sub(1)))
    }

    /// Promises never to append at or below `floor` and raises the shard's mark to it (a
    /// strong read passes the ULID it waits for, so it need not wait for the next
    /// millisecond). Returns the new mark.
    pub fn advance_high_water_to(&mut self, floor: Ulid) -> Ulid {
        self.ids.advance_past(floor);
        let mark = self.ids.last();
        self.shard.raise_high_water(mark.0);
        mark
    }

    /// Largest batch (encoded bytes) one append can take.
    pub fn batch_bytes_max(&self) -> usize {
        limit_for(self.cfg.segment_bytes, self.cfg.index_interval_bytes) - HEADER_LEN
    }

    /// Appends a batch; it becomes visible to readers at once, as a whole. Returns the IDs
    /// assigned, in batch order. Not durable until [`ShardWriter::sync`] (or the background
    /// flush) runs; it survives a crash of the process as soon as this returns.
    pub fn append(&mut self, batch: &[NewRecord<'_>]) -> Result<IdRange> {
        if self.seg.sync_failed.load(Ordering::Acquire) {
            // The background flush lost pages of this segment: nothing more goes on it.
            self.poisoned = true;
        }
        if self.poisoned {
            return Err(StorageError::Poisoned { shard: self.shard.id });
        }
        if batch.is_empty() {
            return Err(StorageError::EmptyBatch);
        }
        let mut total = 0usize;
        for r in batch {
            if r.flags & !CALLER_FLAGS != 0 {
                return Err(StorageError::InvalidFlags { flags: r.flags });
            }
            check_field("key", r.key.len(), u16::MAX as usize)?;
            check_field("inverse payload", r.inverse.len(), u32::MAX as usize)?;
            let len = format::frame_len_padded(r.key.len(), r.payload.len(), r.inverse.len());
            check_field("record", len, u32::MAX as usize)?;
            total += len;
        }
        if total > self.batch_bytes_max() {
            return Err(StorageError::BatchTooLarge {
                bytes: total as u64,
                max_bytes: self.batch_bytes_max() as u64,
            });
        }
        if self.pos + total > self.limit
            && let Err(e) = self.roll()
        {
            // A full disk leaves the shard as it was (retry later); any other I/O error may
            // have left it half-rolled, so it refuses writes until reopened.
            if !matches!(e, StorageError::DiskFull { .. }) {
                self.poisoned = true;
            }
            return Err(e);
        }
        let ids = self.ids.reserve(batch.len() as u64).ok_or(StorageError::IdsExhausted)?;
        let regressions = self.ids.clock_regressions();
        if regressions != self.regressions_reported {
            let delta = regressions - self.regressions_reported;
            self.shard.counters.clock_regressions.fetch_add(delta, Ordering::Relaxed);
            self.regressions_reported = regressions;
        }
        let start = self.pos;
        let tag = self.seg.tag;
        // The batch, then zeroes over the next frame's length, CRC and tag words: a recycled
        // segment holds stale bytes there, and recovery must find a clean end. Frames are
        // encoded into a buffer of at most `ENCODE_BUF_BYTES` (or one frame), written out
        // each time it fills: a large batch is never copied whole beside its request's body,
        // and nothing is visible before the publish below. `encode_frame` writes every byte
        // of each frame, padding included, so only the end mark needs zeroing.
        let mut buf = std::mem::take(&mut self.buf);
        let (mut at, mut fill) = (0, 0);
        let last = batch.len() - 1;
        self.index_scratch.clear();
        let mut written = Ok(());
        for (i, r) in batch.iter().enumerate() {
            let len = format::frame_len_padded(r.key.len(), r.payload.len(), r.inverse.len());
            let end_mark = if i == last { END_MARK_LEN } else { 0 };
            if fill > 0 && fill + len + end_mark > buf.len().max(ENCODE_BUF_BYTES) {
                let (path, offset) = (&self.seg.path, start + at - fill);
                let map = &mut self.map;
                written = crate::fio::write(path, &buf[..fill], |b| map.write_at(offset, b));
                if written.is_err() {
                    break;
                }
                fill = 0;
            }
            if buf.len() < fill + len + end_mark {
                buf.resize(fill + len + end_mark, 0);
            }
            let fl = r.flags | if i == last { flags::BATCH_END } else { 0 };
            let id = ids.nth(i as u64);
            let n = format::encode_frame(&mut buf[fill..], tag, id, fl, r);
            debug_assert_eq!(n, len);
            self.index_scratch.push((id.0, (start + at) as u64));
            at += n;
            fill += n;
        }
        if written.is_ok() {
            debug_assert_eq!(at, total);
            buf[fill..fill + END_MARK_LEN].fill(0);
            let (path, offset) = (&self.seg.path, start + at - fill);
            let map = &mut self.map;
            let bytes = &buf[..fill + END_MARK_LEN];
            written = crate::fio::write(path, bytes, |b| map.write_at(offset, b));
        }
        // A buffer grown for one large frame is not kept.
        if buf.len() > ENCODE_BUF_BYTES + END_MARK_LEN {
            buf = Vec::new();
        }
        self.buf = buf;
        if let Err(e) = written {
            // Nothing was published: the bytes beyond the published length are in an unknown
            // state, and the next batch writes them again from the same offset, end mark
            // included (recovery cuts a batch without its end). The shard stays writable, so a
            // write that failed for want of space works again once there is room.
            return Err(StorageError::io("write segment", &self.seg.path, e));
        }
        if self.seg.first_id.get().is_none() {
            let _ = self.seg.first_id.set(ids.first.0);
        }
        self.seg.set_last_id(ids.last().0);
        self.seg.count.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.pos = start + total;
        self.map.publish(self.pos);
        // After the publish: a reader that sees the mark finds every commit it covers.
        self.shard.raise_high_water(ids.last().0);
        for &(id, off) in &self.index_scratch {
            self.seg.index.observe(id, off as usize);
        }
        // Half full: the next segment is asked for now. A busy shard finds it ready when it
        // rolls; a shard that stays small never holds a second preallocated file.
        if !self.next_asked && self.pos - HEADER_LEN >= (self.limit - HEADER_LEN) / 2 {
            self.next_asked = true;
            let _ = self.maintenance.try_send(Msg::Prepare { shard: self.shard.id as usize });
        }
        Ok(ids)
    }

    /// Makes every batch appended so far durable (fdatasync of the touched segments; one call covers
    /// any number of batches: group commit). An error poisons the writer.
    pub fn sync(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned { shard: self.shard.id });
        }
        let t = std::time::Instant::now();
        let mut did = false;
        let result = self.unsynced.iter().chain(std::iter::once(&self.seg)).try_for_each(|s| {
            did |= s
                .flush_published()
                .map_err(|e| StorageError::io("fdatasync segment", &s.path, e))?;
            Ok(())
        });
        if let Err(e) = result {
            self.poisoned = true;
            return Err(e);
        }
        self.unsynced.clear();
        if did {
            let took = t.elapsed();
            let c = &self.shard.counters;
            c.flushes.fetch_add(1, Ordering::Relaxed);
            c.flush_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            self.shard.metrics.fsync_writer.observe(took.as_secs_f64());
        }
        Ok(())
    }

    /// Switches to the next segment and hands the full one to the maintenance thread to seal.
    /// The prepared-slot lock is held until the new segment is in the list, so the maintenance
    /// thread never prepares a file under a sequence number already in use.
    fn roll(&mut self) -> Result<()> {
        let shard = Arc::clone(&self.shard);
        let mut slot = shard.prepared.lock().unwrap_or_else(|p| p.into_inner());
        let next_seq = self.seg.seq + 1;
        let opened = match slot.take() {
            Some(p) if p.segment.seq == next_seq => p,
            _ => {
                shard.counters.inline_prepares.fetch_add(1, Ordering::Relaxed);
                let now = self.ids.clock().now_ms();
                let (bytes, interval) = (self.cfg.segment_bytes, self.cfg.index_interval_bytes);
                let recycled = self.cfg.recycle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                segment::prepare(&shard.dir, shard.id, next_seq, bytes, interval, now, recycled)?
            }
        };
        // The seal frame goes on before anything is written to the next segment: a flush of
        // this one, which precedes every flush of the next, then makes it durable, and
        // recovery can tell a segment whose tail was lost from one rolled away from whole.
        if let Err(e) = segment::write_seal_frame(&self.seg, &mut self.map) {
            *slot = Some(opened);
            return Err(e);
        }
        let new_map = opened.writer.expect("prepared segments are open");
        let new_seg = opened.segment;
        {
            let _guard = shard.list_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut list = Vec::clone(&shard.segments.load());
            list.push(Arc::clone(&new_seg));
            shard.segments.store(Arc::new(list));
        }
        drop(slot);
        let old_seg = std::mem::replace(&mut self.seg, new_seg);
        let old_map = std::mem::replace(&mut self.map, new_map);
        self.pos = self.map.map().published();
        self.limit = limit_for(self.map.map().len(), self.cfg.index_interval_bytes);
        // Sealed segments are durable already; keep only the ones a `sync` must still flush.
        self.unsynced.retain(|s| !s.is_sealed());
        self.unsynced.push(Arc::clone(&old_seg));
        shard.counters.rolls.fetch_add(1, Ordering::Relaxed);
        self.next_asked = false;
        // Everything appended so far is in the old segment: recovery starts after it. Best
        // effort: without a snapshot recovery reads the older segments too, and finds the same.
        // Written when no stream exists as well (44 bytes): the next open then need not
        // read the sealed segments to find that out.
        let snap = self.revisions.snapshot(Ulid(old_seg.last_id()));
        let _ = crate::revisions::write_snapshot(&shard.dir, &snap);
        let seal = Msg::Seal { shard: shard.id as usize, segment: old_seg, writer: old_map };
        if let Err(crossbeam_channel::SendError(Msg::Seal { segment, mut writer, .. })) =
            self.maintenance.send(seal)
        {
            // No maintenance thread (disabled or shut down): seal here.
            segment::seal(&segment, &mut writer)?;
        }
        Ok(())
    }
}

/// Bytes zeroed after each batch (the next frame's length, CRC and tag words). The footer
/// reserve is always larger, so they fit.
const END_MARK_LEN: usize = 16;
/// Bytes of frames encoded before they are written out (a larger frame gets a buffer of its
/// own size for the batch).
const ENCODE_BUF_BYTES: usize = 256 << 10;
const _: () = assert!(END_MARK_LEN <= format::FRAME_HEADER_LEN);

/// Flags a caller may set; the storage sets `BATCH_END` and `SEAL` itself.
const CALLER_FLAGS: u16 = flags::KNOWN & !(flags::BATCH_END | flags::SEAL | flags::TXN_COMMIT);

fn limit_for(segment_len: usize, interval: usize) -> usize {
    segment_len - segment::footer_reserve(segment_len, interval)
}

fn check_field(field: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(StorageError::FieldTooLarge { field, len: len as u64, max_bytes: max as u64 });
    }
    Ok(())
}
