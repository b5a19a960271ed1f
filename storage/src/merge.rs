//! The k-way merge of a log's shards into one timeline ordered by ULID, and the watermark
//! below which that order is final.
//!
//! One ordering function, [`order`]: by ULID, then by shard index (ULIDs from different
//! writers are unique in practice; the shard breaks a tie deterministically). A [`Merger`] holds
//! one cursor per shard and a heap of their next ULIDs. It returns a commit only when it is at
//! or below the **watermark**: the lowest bound over shards of what each can still add —
//! a shard with a commit waiting in the heap adds nothing below it; a caught-up shard nothing at
//! or below its high-water mark (read *before* peeking, so the mark covers what was seen); a
//! shard stopped at a pending transaction part nothing before that part becomes readable. So a
//! sequence of `next` calls, interleaved with any writes, returns every commit exactly once in
//! ULID order: nothing can ever appear behind it.
//!
//! A [`Picks`] keeps what a merger returned by place, so a page can be chosen (its end, its
//! `next` cursor, known) before it is rendered, and rendered elsewhere.
//!
//! What it is not: a materialised index, or async. It merges lazily from the sparse indexes of
//! the shards; the service drives it from its blocking pool.

use crate::error::Result;
use crate::format::FrameLayout;
use crate::segment::Segment;
use crate::shard::{Cursor, Peek, Placed, Record, Shard, Start};
use idgen::Ulid;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

/// The timeline's order: ULID, then shard.
pub fn order(a: (Ulid, u32), b: (Ulid, u32)) -> Ordering {
    a.0.cmp(&b.0).then(a.1.cmp(&b.1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key(Ulid, u32);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        order((self.0, self.1), (other.0, other.1))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A merged, ULID-ordered reading position over several shards.
#[derive(Debug)]
pub struct Merger {
    cursors: Vec<Cursor>,
    /// The next commit of every cursor that has one published.
    heap: BinaryHeap<Reverse<Key>>,
    /// Cursors with no commit in the heap (caught up or blocked): peeked again at every call.
    idle: Vec<u32>,
    /// The bound the last `next` decided by: nothing at or below it that the merger had not
    /// returned could still appear.
    last_bound: Option<Ulid>,
    /// The last commit `next` returned: nothing below it can appear any more either.
    last_returned: Option<Ulid>,
    /// The cursor whose commit the last `next` returned. Its heap entry, the top, is stale
    /// until that cursor is peeked again, at the next call: its next commit then replaces the
    /// top in place, which costs two comparisons while a shard's run of commits lasts.
    taken: Option<u32>,
}

impl Merger {
    /// A merger over `shards` (their index in the slice is their shard number) from `start`.
    pub fn new(shards: &[Arc<Shard>], start: Start) -> Merger {
        let cursors: Vec<Cursor> = shards.iter().map(|s| s.cursor(start)).collect();
        let idle = (0..cursors.len() as u32).collect();
        Merger {
            cursors,
            heap: BinaryHeap::new(),
            idle,
            last_bound: None,
            last_returned: None,
            taken: None,
        }
    }

    /// The watermark now: no commit at or below it can still be added to any shard or become
    /// visible (each shard's high-water mark bounds it, so does a pending transaction part a
    /// cursor has stopped at, and so does the floor of every undecided transaction, whose
    /// parts may lie behind a commit already queued here). Commits at or below it that this
    /// merger has not returned yet are readable.
    pub fn watermark(&mut self) -> Result<Ulid> {
        let bound = self.refill()?;
        let marks = crate::watermark::watermark(self.cursors.iter().map(Cursor::shard));
        Ok(bound.min(marks.unwrap_or(Ulid(u128::MAX))))
    }

    /// The watermark as the merger last read (what a page reports): the lowest of the bound
    /// its last `next` decided by and the log's watermark now, or the last commit it returned
    /// if that is higher (the merge returns in order, so nothing below it can still appear;
    /// the log's watermark, bounded by whole transactions' floors, may be lower). No commit at
    /// or below it that this merger has not returned can still appear, and every commit it
    /// returned is at or below it. (A fresh [`Merger::watermark`] may be higher, with commits
    /// below it that were published after the last `next` and are not returned yet.)
    pub fn watermark_as_read(&mut self) -> Result<Ulid> {
        let Some(bound) = self.last_bound else { return self.watermark() };
        let log = crate::watermark::watermark(self.cursors.iter().map(Cursor::shard));
        let read = bound.min(log.unwrap_or(Ulid(u128::MAX)));
        Ok(self.last_returned.map_or(read, |l| read.max(l)))
    }

    /// Queues the next commit of every cursor that has one and returns the bound the others
    /// set: nothing at or below it can still appear in a shard without a queued commit.
    fn refill(&mut self) -> Result<Ulid> {
        // `taken` is cleared only once its cursor was peeked: after a failed peek the stale
        // top is still marked so.
        if let Some(s) = self.taken {
            match self.cursors[s as usize].peek()? {
                Peek::Next(id) => {
                    let mut top = self.heap.peek_mut().expect("the taken commit is the top");
                    *top = Reverse(Key(id, s));
                }
                Peek::CaughtUp | Peek::Blocked(_) => {
                    self.heap.pop();
                    self.idle.push(s);
                }
            }
            self.taken = None;
        }
        let mut bound = Ulid(u128::MAX);
        let mut k = 0;
        while k < self.idle.len() {
            let s = self.idle[k];
            let c = &mut self.cursors[s as usize];
            let mut peek = c.peek()?;
            if peek == Peek::CaughtUp {
                // The mark, then a second look: everything the mark covers was published
                // before it was raised, so before this peek.
                let mark = c.shard().high_water();
                peek = c.peek()?;
                if peek == Peek::CaughtUp {
                    bound = bound.min(mark);
                }
            }
            match peek {
                Peek::Next(id) => {
                    self.heap.push(Reverse(Key(id, s)));
                    self.idle.swap_remove(k);
                    continue;
                }
                Peek::CaughtUp => {}
                Peek::Blocked(id) => bound = bound.min(Ulid(id.0.saturating_sub(1))),
            }
            k += 1;
        }
        Ok(bound)
    }

    /// The lowest commit waiting for the watermark, if any: what a reader that wants it sooner
    /// asks idle writers to pass. Exact after a `next` that answered `None`; after one that
    /// returned a commit, that commit.
    pub fn waiting(&self) -> Option<Ulid> {
        self.heap.peek().map(|Reverse(k)| k.0)
    }

    /// The next commit of the merged timeline if it is final (at or below the watermark), else
    /// `None` (caught up with what is final; call again later).
    #[allow(clippy::should_implement_trait)] // lending: the record borrows the merger
    pub fn next(&mut self) -> Result<Option<Record<'_>>> {
        Ok(self.next_placed()?.map(|p| p.record()))
    }

    /// [`Merger::next`] by place, which a [`Picks`] can keep.
    pub fn next_placed(&mut self) -> Result<Option<Placed<'_>>> {
        let bound = self.refill()?;
        self.last_bound = Some(bound);
        let Some(&Reverse(Key(id, shard))) = self.heap.peek() else {
            return Ok(None);
        };
        if id > bound {
            return Ok(None);
        }
        self.taken = Some(shard);
        self.last_returned = Some(id);
        let placed = self.cursors[shard as usize].next_placed()?;
        debug_assert_eq!(placed.as_ref().map(Placed::id), Some(id));
        Ok(placed)
    }
}

/// Commits picked from a merger, kept by place: a page between the merge that chose it and the
/// rendering that sends it, which may run later on another thread. It holds the segments it
/// points into alive (retention cannot unmap them), and about 100 bytes a commit.
#[derive(Debug, Default)]
pub struct Picks {
    segments: Vec<Arc<Segment>>,
    /// Per shard, the index in `segments` of the segment its last pick lay in.
    last_segment: Vec<Option<u32>>,
    picks: Vec<Pick>,
    /// Bytes of the picks' keys and payloads.
    data_bytes: usize,
}

#[derive(Debug)]
struct Pick {
    segment: u32,
    shard: u32,
    at: usize,
    layout: FrameLayout,
}

impl Picks {
    /// Keeps `p`.
    pub fn push(&mut self, p: &Placed<'_>) {
        let shard = p.shard as usize;
        if self.last_segment.len() <= shard {
            self.last_segment.resize(shard + 1, None);
        }
        let segment = match self.last_segment[shard] {
            Some(i) if Arc::ptr_eq(&self.segments[i as usize], p.segment) => i,
            _ => {
                self.segments.push(Arc::clone(p.segment));
                let i = (self.segments.len() - 1) as u32;
                self.last_segment[shard] = Some(i);
                i
            }
        };
        self.data_bytes += p.layout.data_len();
        self.picks.push(Pick { segment, shard: p.shard, at: p.at, layout: p.layout });
    }

    /// Commits kept.
    pub fn len(&self) -> usize {
        self.picks.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// Bytes of the keys and payloads of the commits kept.
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The commits kept, in the order they were pushed.
    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        self.records_from(0)
    }

    /// Whether the frames of the commits kept from the `first`-th on, up to `bytes` of them
    /// (at least one commit), are all in memory, so rendering them faults on no disk read.
    /// One `mincore` call per segment they lie in.
    pub fn resident_from(&self, first: usize, bytes: usize) -> bool {
        let mut spans: Vec<(u32, usize, usize)> = Vec::new();
        let mut taken = 0usize;
        for p in &self.picks[first.min(self.picks.len())..] {
            if !spans.is_empty() && taken >= bytes {
                break;
            }
            let (lo, hi) = (p.at, p.at + p.layout.padded);
            match spans.iter_mut().find(|s| s.0 == p.segment) {
                Some(s) => (s.1, s.2) = (s.1.min(lo), s.2.max(hi)),
                None => spans.push((p.segment, lo, hi)),
            }
            taken += p.layout.padded;
        }
        spans.iter().all(|&(segment, lo, hi)| self.segments[segment as usize].map.resident(lo, hi))
    }

    /// The commits kept from the `first`-th on.
    pub fn records_from(&self, first: usize) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        self.picks[first.min(self.picks.len())..].iter().map(|p| Record {
            frame: self.segments[p.segment as usize].frame(p.at, &p.layout),
            shard: p.shard,
        })
    }
}
