//! A shard: an append-only sequence of segments with one writer and any number of readers.
//!
//! Readers take a snapshot of the segment list (an `ArcSwap`, no lock) and read each segment
//! below its published length. The list changes only when the writer rolls to a new segment or
//! retention retires old ones; both hold `list_lock`, which readers never take.
//!
//! What it is not: the append path (`writer`) or cross-shard ordering (the merger's job).

use crate::error::{Result, StorageError};
use crate::format::{self, FrameLayout, FrameRef, HEADER_LEN, flags};
use crate::segment::{Opened, Segment};
use crate::txn::Visibility;
use arc_swap::ArcSwap;
use idgen::Ulid;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One shard of a log.
#[derive(Debug)]
pub struct Shard {
    pub(crate) id: u32,
    pub(crate) dir: PathBuf,
    pub(crate) segments: ArcSwap<Vec<Arc<Segment>>>,
    pub(crate) list_lock: Mutex<()>,
    /// The next segment, preallocated by the maintenance thread.
    pub(crate) prepared: Mutex<Option<Opened>>,
    pub(crate) counters: ShardCounters,
    /// fsync timings.
    pub(crate) metrics: crate::metrics::StorageMetrics,
    /// The log's transactions: frames of pending ones stop readers, aborted ones are skipped.
    pub(crate) txns: Arc<crate::txn::Txns>,
    /// The shard's high-water mark: its writer will never append a ULID at or below it. Set
    /// only after the bytes it covers are published.
    high_water: Mutex<u128>,
}

/// Counters the writer and the maintenance thread keep; read them with [`Shard::stats`].
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Syncs (fdatasync) performed by `sync` or the background flush.
    pub flushes: AtomicU64,
    /// Total time spent in those syncs, in nanoseconds.
    pub flush_nanos: AtomicU64,
    /// Segment rolls.
    pub rolls: AtomicU64,
    /// Rolls that found no prepared segment and had to create one on the hot path.
    pub inline_prepares: AtomicU64,
    /// Times the writer's clock was behind its last ULID.
    pub clock_regressions: AtomicU64,
}

/// A snapshot of a shard's size and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Commits stored.
    pub commits: u64,
    /// Data bytes stored (frames, headers excluded).
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Syncs performed.
    pub flushes: u64,
    /// Time spent syncing, in nanoseconds.
    pub flush_nanos: u64,
    /// Segment rolls.
    pub rolls: u64,
    /// Rolls without a prepared segment.
    pub inline_prepares: u64,
    /// Clock regressions seen by the writer.
    pub clock_regressions: u64,
    /// First retained ULID, if any commit is retained.
    pub first_id: Option<Ulid>,
}

/// Where a cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first retained commit.
    Beginning,
    /// The first commit with a ULID strictly greater.
    After(Ulid),
    /// The first commit with a ULID greater or equal.
    From(Ulid),
}

impl Shard {
    pub(crate) fn new(
        id: u32,
        dir: PathBuf,
        segments: Vec<Arc<Segment>>,
        txns: Arc<crate::txn::Txns>,
        metrics: crate::metrics::StorageMetrics,
    ) -> Self {
        Shard {
            id,
            dir,
            segments: ArcSwap::from_pointee(segments),
            list_lock: Mutex::new(()),
            prepared: Mutex::new(None),
            counters: ShardCounters::default(),
            metrics,
            txns,
            high_water: Mutex::new(0),
        }
    }

    /// The shard's index within its log.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A cursor over this shard's commits in their stored (ULID) order, starting at `start`.
    /// It follows the writer: once caught up, `next` answers `None`, and later calls see
    /// commits published since.
    pub fn cursor(self: &Arc<Self>, start: Start) -> Cursor {
        let segs = self.segments.load_full();
        let target = match start {
            Start::Beginning => None,
            Start::After(id) => Some((id.0, false)),
            Start::From(id) => Some((id.0, true)),
        };
        let (seg_i, pos) = match target {
            None => (0, HEADER_LEN),
            Some((id, _)) => {
                // Last segment whose first ULID is ≤ id; segments without commits sort last.
                let i = segs.partition_point(|s| s.first_id.get().is_some_and(|&f| f <= id));
                let i = i.saturating_sub(1);
                let pos =
                    segs.get(i).and_then(|s| s.index.seek(id)).map_or(HEADER_LEN, |o| o as usize);
                (i, pos)
            }
        };
        Cursor {
            shard: Arc::clone(self),
            segs,
            seg_i,
            pos,
            skip_to: target,
            peeked: None,
            pass_pending: false,
        }
    }

    /// A cursor at byte `offset` of segment `seq` (an end this shard had: a batch boundary), or
    /// at the first segment after it if retention removed that one. Recovery reads from here.
    pub(crate) fn cursor_at(self: &Arc<Self>, seq: u64, offset: usize) -> Cursor {
        let segs = self.segments.load_full();
        let seg_i = segs.partition_point(|s| s.seq < seq);
        let pos = match segs.get(seg_i) {
            Some(s) if s.seq == seq => offset.max(HEADER_LEN),
            _ => HEADER_LEN,
        };
        Cursor {
            shard: Arc::clone(self),
            segs,
            seg_i,
            pos,
            skip_to: None,
            peeked: None,
            pass_pending: false,
        }
    }

    /// A cursor for looking a commit up rather than following the shard: it passes over parts
    /// of pending transactions (they are not visible yet) instead of stopping at them, so a
    /// visible commit behind an unrelated pending part is found.
    pub fn lookup_cursor(self: &Arc<Self>, start: Start) -> Cursor {
        Cursor { pass_pending: true, ..self.cursor(start) }
    }

    /// Where the shard ends now: (newest segment's sequence number, its published length).
    pub(crate) fn end_position(&self) -> (u64, u64) {
        let segs = self.segments.load();
        segs.last().map_or((0, 0), |s| (s.seq, s.map.published() as u64))
    }

    /// The high-water mark: no commit at or below this ULID will ever be appended to this
    /// shard. Read it before reading the shard to know what a read covers for good.
    pub fn high_water(&self) -> Ulid {
        Ulid(*self.high_water.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The first ULID still stored if retention has removed older segments of this shard
    /// (their sequence numbers no longer start at 1), else `None`: commits below it are gone.
    pub fn retained_from(&self) -> Option<Ulid> {
        let segs = self.segments.load();
        if segs.first().is_none_or(|s| s.seq <= 1) {
            return None;
        }
        let first = segs.iter().find_map(|s| s.first_id.get().copied());
        Some(first.map_or_else(|| self.high_water(), Ulid))
    }

    pub(crate) fn raise_high_water(&self, id: u128) {
        let mut hw = self.high_water.lock().unwrap_or_else(|p| p.into_inner());
        *hw = (*hw).max(id);
    }

    /// Size and counters.
    pub fn stats(&self) -> ShardStats {
        let segs = self.segments.load();
        let c = &self.counters;
        ShardStats {
            commits: segs.iter().map(|s| s.count.load(Ordering::Relaxed)).sum(),
            bytes: segs.iter().map(|s| s.data_bytes()).sum(),
            segments: segs.len() as u64,
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_nanos: c.flush_nanos.load(Ordering::Relaxed),
            rolls: c.rolls.load(Ordering::Relaxed),
            inline_prepares: c.inline_prepares.load(Ordering::Relaxed),
            clock_regressions: c.clock_regressions.load(Ordering::Relaxed),
            first_id: segs.iter().find_map(|s| s.first_id.get().copied()).map(Ulid),
        }
    }

    /// Makes every published byte of every segment durable.
    pub fn flush(&self) -> Result<()> {
        self.flush_segments(&self.segments.load_full())
    }

    /// Makes every published byte of `segs` (a snapshot of this shard's list) durable.
    pub(crate) fn flush_segments(&self, segs: &[Arc<Segment>]) -> Result<()> {
        for s in segs.iter().filter(|s| !s.is_sealed()) {
            let t = std::time::Instant::now();
            let did = s
                .flush_published()
                .map_err(|e| StorageError::io("fdatasync segment", &s.path, e))?;
            if did {
                let took = t.elapsed();
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                self.counters.flush_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
                self.metrics.fsync_background.observe(took.as_secs_f64());
            }
        }
        Ok(())
    }
}

/// A commit read from a shard, borrowing the segment's mapped bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The decoded frame.
    pub frame: FrameRef<'a>,
    /// The shard it came from.
    pub shard: u32,
}

/// A commit by place: the segment, offset and checked layout of its frame (what a
/// [`crate::Picks`] keeps).
#[derive(Debug)]
pub struct Placed<'a> {
    pub(crate) segment: &'a Arc<Segment>,
    pub(crate) at: usize,
    pub(crate) layout: FrameLayout,
    pub(crate) shard: u32,
}

impl<'a> Placed<'a> {
    /// The commit.
    pub fn record(&self) -> Record<'a> {
        Record { frame: self.segment.frame(self.at, &self.layout), shard: self.shard }
    }

    /// Its ULID.
    pub fn id(&self) -> Ulid {
        self.layout.id
    }
}

/// A reading position in one shard. Cheap to create; holds the segments it reads alive.
#[derive(Debug)]
pub struct Cursor {
    shard: Arc<Shard>,
    segs: Arc<Vec<Arc<Segment>>>,
    seg_i: usize,
    pos: usize,
    /// Frames below this (inclusive flag) are skipped; cleared at the first frame kept.
    skip_to: Option<(u128, bool)>,
    /// A frame `peek` verified and `next` will return.
    peeked: Option<(usize, FrameLayout)>,
    /// Pass over parts of pending transactions instead of stopping ([`Shard::lookup_cursor`]).
    pass_pending: bool,
}

/// What comes next in a shard, without consuming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A commit with this ULID.
    Next(Ulid),
    /// Nothing more is published yet.
    CaughtUp,
    /// A part of a pending cross-shard transaction with this ULID: nothing at or after it can
    /// be read until the transaction is decided.
    Blocked(Ulid),
}

enum Step {
    Ready(usize, FrameLayout),
    CaughtUp,
    Blocked(Ulid),
}

impl Cursor {
    /// The next commit, or `None` when caught up with the writer (or stopped at a pending
    /// transaction). Corruption is an error naming segment and offset.
    #[allow(clippy::should_implement_trait)] // lending: the record borrows the cursor
    pub fn next(&mut self) -> Result<Option<Record<'_>>> {
        Ok(self.next_placed()?.map(|p| p.record()))
    }

    /// [`Cursor::next`] by place.
    pub(crate) fn next_placed(&mut self) -> Result<Option<Placed<'_>>> {
        let (at, layout) = match self.peeked.take() {
            Some(p) => p,
            None => match self.advance()? {
                Step::Ready(at, layout) => (at, layout),
                Step::CaughtUp | Step::Blocked(_) => return Ok(None),
            },
        };
        Ok(Some(Placed { segment: &self.segs[self.seg_i], at, layout, shard: self.shard.id }))
    }

    /// What `next` would return, without consuming it.
    pub fn peek(&mut self) -> Result<Peek> {
        if let Some((_, layout)) = &self.peeked {
            return Ok(Peek::Next(layout.id));
        }
        Ok(match self.advance()? {
            Step::Ready(at, layout) => {
                self.peeked = Some((at, layout));
                Peek::Next(layout.id)
            }
            Step::CaughtUp => Peek::CaughtUp,
            Step::Blocked(id) => Peek::Blocked(id),
        })
    }

    /// The shard this cursor reads.
    pub fn shard(&self) -> &Arc<Shard> {
        &self.shard
    }

    /// Moves past the next commit to return, verifying it; answers its offset and layout.
    fn advance(&mut self) -> Result<Step> {
        loop {
            let Some(seg) = self.segs.get(self.seg_i) else {
                if !self.reload() {
                    return Ok(Step::CaughtUp);
                }
                continue;
            };
            let end = seg.map.published();
            if self.pos >= end {
                // Caught up with this segment: move on if a newer one exists (then this one is
                // final), else look for one.
                if self.seg_i + 1 >= self.segs.len() && !self.reload() {
                    return Ok(Step::CaughtUp);
                }
                let seg = &self.segs[self.seg_i.min(self.segs.len() - 1)];
                if self.seg_i + 1 < self.segs.len() && self.pos >= seg.map.published() {
                    self.seg_i += 1;
                    self.pos = HEADER_LEN;
                }
                continue;
            }
            let at = self.pos;
            let layout = format::check_frame(seg.map.read(at, end), seg.tag).map_err(|reason| {
                StorageError::Corrupt { segment: seg.path.clone(), offset: at as u64, reason }
            })?;
            if layout.flags & flags::TXN_PART != 0 {
                match self.shard.txns.visibility(layout.aux) {
                    // Not all parts are written yet: wait here, neither return nor skip it.
                    Visibility::Pending if !self.pass_pending => {
                        return Ok(Step::Blocked(layout.id));
                    }
                    Visibility::Aborted | Visibility::Pending => {
                        self.pos += layout.padded;
                        continue;
                    }
                    Visibility::Visible => {}
                }
            }
            self.pos += layout.padded;
            if layout.flags & flags::SEAL != 0 {
                continue;
            }
            if let Some((target, inclusive)) = self.skip_to {
                let keep = if inclusive { layout.id.0 >= target } else { layout.id.0 > target };
                if !keep {
                    continue;
                }
                self.skip_to = None;
            }
            return Ok(Step::Ready(at, layout));
        }
    }

    /// Reloads the segment list; true if the cursor can move on (a newer segment appeared or
    /// the current one was retired).
    fn reload(&mut self) -> bool {
        let fresh = self.shard.segments.load_full();
        if Arc::ptr_eq(&fresh, &self.segs) {
            return false;
        }
        let cur_seq = self.segs.get(self.seg_i).map(|s| s.seq);
        self.segs = fresh;
        match cur_seq {
            Some(seq) => match self.segs.iter().position(|s| s.seq >= seq) {
                Some(i) if self.segs[i].seq == seq => self.seg_i = i,
                Some(i) => {
                    // Our segment was retired under us: continue at the next retained one.
                    self.seg_i = i;
                    self.pos = HEADER_LEN;
                }
                None => self.seg_i = self.segs.len(),
            },
            None => self.seg_i = self.seg_i.min(self.segs.len()),
        }
        true
    }
}
