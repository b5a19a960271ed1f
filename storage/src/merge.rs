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
//! What it is not: a materialised index, or async. It merges lazily from the sparse indexes of
//! the shards; the service drives it from its blocking pool.

use crate::error::Result;
use crate::shard::{Cursor, Peek, Record, Shard, Start};
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
    heap: BinaryHeap<Reverse<Key>>,
    queued: Vec<bool>,
}

impl Merger {
    /// A merger over `shards` (their index in the slice is their shard number) from `start`.
    pub fn new(shards: &[Arc<Shard>], start: Start) -> Merger {
        let cursors: Vec<Cursor> = shards.iter().map(|s| s.cursor(start)).collect();
        let queued = vec![false; cursors.len()];
        Merger { cursors, heap: BinaryHeap::new(), queued }
    }

    /// The watermark now: no commit at or below it can still be added to any shard or become
    /// visible (each shard's high-water mark bounds it, so does a pending transaction part a
    /// cursor has stopped at, and so does the floor of every undecided transaction, whose
    /// parts may lie behind a commit already queued here). Commits at or below it that this
    /// merger has not returned yet are readable.
    pub fn watermark(&mut self) -> Result<Ulid> {
        let bound = self.refill()?;
        let marks =
            self.cursors.iter().map(|c| c.shard().high_water()).min().unwrap_or(Ulid(u128::MAX));
        let pending = self
            .cursors
            .first()
            .and_then(|c| c.shard().txns.pending_floor())
            .unwrap_or(Ulid(u128::MAX));
        Ok(bound.min(marks).min(pending))
    }

    /// Queues the next commit of every shard that has one and returns the bound the others
    /// set: nothing at or below it can still appear in a shard without a queued commit.
    fn refill(&mut self) -> Result<Ulid> {
        let mut bound = Ulid(u128::MAX);
        for (i, c) in self.cursors.iter_mut().enumerate() {
            if self.queued[i] {
                continue;
            }
            // The mark first: everything it covers was published before it was raised.
            let mark = c.shard().high_water();
            match c.peek()? {
                Peek::Next(id) => {
                    self.heap.push(Reverse(Key(id, i as u32)));
                    self.queued[i] = true;
                }
                Peek::CaughtUp => bound = bound.min(mark),
                Peek::Blocked(id) => bound = bound.min(Ulid(id.0.saturating_sub(1))),
            }
        }
        Ok(bound)
    }

    /// The lowest commit waiting for the watermark, if any: what a reader that wants it sooner
    /// asks idle writers to pass.
    pub fn waiting(&self) -> Option<Ulid> {
        self.heap.peek().map(|Reverse(k)| k.0)
    }

    /// The next commit of the merged timeline if it is final (at or below the watermark), else
    /// `None` (caught up with what is final; call again later).
    #[allow(clippy::should_implement_trait)] // lending: the record borrows the merger
    pub fn next(&mut self) -> Result<Option<Record<'_>>> {
        let bound = self.refill()?;
        let Some(&Reverse(Key(id, shard))) = self.heap.peek() else {
            return Ok(None);
        };
        if id > bound {
            return Ok(None);
        }
        self.heap.pop();
        self.queued[shard as usize] = false;
        let record = self.cursors[shard as usize].next()?;
        debug_assert_eq!(record.map(|r| r.frame.id), Some(id));
        Ok(record)
    }
}
