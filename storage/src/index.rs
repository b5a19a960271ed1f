//! The sparse index of a segment: (ULID, offset) of the first frame at or after every
//! `index_interval_bytes` boundary, so a reader seeks by ULID or time with a binary search and a
//! short scan instead of reading the segment from its start.
//!
//! The writer appends entries into a fixed-capacity array and publishes the count with
//! `Release` after publishing the bytes they point at, so an entry never points past what a
//! reader may read; readers load the count with `Acquire`. Safe atomics only: an entry is
//! written once, before it is counted. A full index drops entries (seeks scan a little more).
//! Sealed segments carry the same entries in their footer, so reopening does not rescan them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A concurrently readable, append-only sparse index with a fixed capacity.
#[derive(Debug)]
pub struct SparseIndex {
    slots: Box<[Slot]>,
    len: AtomicUsize,
    interval_bytes: usize,
}

#[derive(Debug, Default)]
struct Slot {
    id_hi: AtomicU64,
    id_lo: AtomicU64,
    offset: AtomicU64,
}

impl SparseIndex {
    /// An empty index for a segment of `segment_bytes` with one entry per `interval_bytes`.
    pub fn new(segment_bytes: usize, interval_bytes: usize) -> Self {
        Self::with_capacity(Self::capacity_for(segment_bytes, interval_bytes), interval_bytes)
    }

    /// An empty index holding at most `cap` entries (a sealed segment's footer count).
    pub fn with_capacity(cap: usize, interval_bytes: usize) -> Self {
        SparseIndex {
            slots: (0..cap).map(|_| Slot::default()).collect(),
            len: AtomicUsize::new(0),
            interval_bytes,
        }
    }

    /// Most entries a segment of this size can get (one per interval, plus the first frame).
    pub fn capacity_for(segment_bytes: usize, interval_bytes: usize) -> usize {
        segment_bytes / interval_bytes + 2
    }

    /// Called by the writer for every frame it writes (before publishing it): records an entry
    /// if the frame is the first or crosses the next interval boundary.
    pub fn observe(&self, id: u128, offset: usize) {
        let n = self.len.load(Ordering::Relaxed);
        let due = match n {
            0 => true,
            _ => {
                let last = self.slots[n - 1].offset.load(Ordering::Relaxed) as usize;
                offset / self.interval_bytes > last / self.interval_bytes
            }
        };
        if due {
            self.push(id, offset as u64);
        }
    }

    /// Appends an entry (writer only). A full index ignores it: entries only speed up seeks,
    /// a missing one makes a seek scan a little further.
    pub fn push(&self, id: u128, offset: u64) {
        let n = self.len.load(Ordering::Relaxed);
        let Some(slot) = self.slots.get(n) else {
            return;
        };
        slot.id_hi.store((id >> 64) as u64, Ordering::Relaxed);
        slot.id_lo.store(id as u64, Ordering::Relaxed);
        slot.offset.store(offset, Ordering::Relaxed);
        self.len.store(n + 1, Ordering::Release);
    }

    /// Number of visible entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Entry `i` (< `len()`).
    pub fn get(&self, i: usize) -> (u128, u64) {
        let s = &self.slots[i];
        let id = ((s.id_hi.load(Ordering::Relaxed) as u128) << 64)
            | s.id_lo.load(Ordering::Relaxed) as u128;
        (id, s.offset.load(Ordering::Relaxed))
    }

    /// The offset of the last entry whose ULID is ≤ `id`: a frame position from which a scan
    /// finds the first frame ≥ `id`. `None` when `id` precedes every entry.
    pub fn seek(&self, id: u128) -> Option<u64> {
        let n = self.len();
        // partition_point over the visible entries: first entry with ULID > id.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).0 <= id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.get(i).1)
    }

    /// All visible entries, for the seal footer.
    pub fn entries(&self) -> Vec<(u128, u64)> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}
