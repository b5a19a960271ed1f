//! The monotonic ULID generator a writer owns.
//!
//! Rule: every ID is strictly greater than the one before it from the same generator.
//! - A new millisecond (clock ahead of the last ID) starts from fresh random bits, with the top
//!   bit of the random part cleared so at least 2^79 IDs fit in that millisecond before a carry.
//! - The same millisecond, or a clock that stepped backwards, continues from the last ID plus
//!   one ("clamp and increment"). Each backwards step is counted ([`Generator::clock_regressions`]).
//! - After [`Generator::advance_past`] raised the last ID to a floor it did not hand out, the
//!   next step adds up to 2^64 random on top of the one: writers are advanced to the same
//!   floor (a strong read's target, the end of a millisecond), and each must then go its own
//!   way, or two shards would hand out the same ULID.
//! - If the random part overflows, the carry moves the ID into the next millisecond: still
//!   unique and increasing, never a panic, never a repeat. Only the all-ones ULID cannot be
//!   followed; the generator then answers `None` (year 10889).
//!
//! What it is not: thread-safe. A writer owns its generator; it reads the clock once per batch
//! ([`Generator::reserve`]) because a clock read costs ~35 ns and an increment ~1 ns.

use crate::clock::Clock;
use ulid::Ulid;

/// Mask of the 80 random bits.
const RANDOM_MASK: u128 = (1 << 80) - 1;
/// The top random bit, cleared on a fresh millisecond to leave room for increments.
const RANDOM_TOP_BIT: u128 = 1 << 79;

/// A monotonic ULID generator over an injected clock and a seedable random source.
#[derive(Debug)]
pub struct Generator<C> {
    clock: C,
    rng: fastrand::Rng,
    last: u128,
    /// `last` is a floor from `advance_past`, not an ID handed out.
    floored: bool,
    regressions: u64,
}

/// A contiguous, increasing range of IDs reserved by one clock read: `first`, `first + 1`, …
/// `first + len - 1` as 128-bit integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first ID of the range.
    pub first: Ulid,
    /// How many IDs the range holds (at least 1).
    pub len: u64,
}

impl IdRange {
    /// The `i`-th ID of the range; `i < len`.
    #[inline]
    pub fn nth(&self, i: u64) -> Ulid {
        debug_assert!(i < self.len);
        Ulid(self.first.0 + i as u128)
    }
    /// The last ID of the range.
    pub fn last(&self) -> Ulid {
        self.nth(self.len - 1)
    }
    /// Iterates the IDs in order.
    pub fn iter(&self) -> impl Iterator<Item = Ulid> + use<> {
        let first = self.first.0;
        (0..self.len).map(move |i| Ulid(first + i as u128))
    }
}

impl<C: Clock> Generator<C> {
    /// A generator whose randomness is seeded from the process (not reproducible).
    pub fn new(clock: C) -> Self {
        Self::with_rng(clock, fastrand::Rng::new())
    }

    /// A generator with a fixed seed, for reproducible tests.
    pub fn with_seed(clock: C, seed: u64) -> Self {
        Self::with_rng(clock, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(clock: C, rng: fastrand::Rng) -> Self {
        Generator { clock, rng, last: 0, floored: false, regressions: 0 }
    }

    /// Makes sure the next ID is above `floor` (after recovery: the last ID a shard stored;
    /// for an idle writer: what its shard's high-water mark promises). IDs never go back below
    /// what was handed out already.
    pub fn advance_past(&mut self, floor: Ulid) {
        if floor.0 > self.last {
            self.last = floor.0;
            self.floored = true;
        }
    }

    /// The next ID, reading the clock.
    pub fn next_id(&mut self) -> Option<Ulid> {
        self.reserve(1).map(|r| r.first)
    }

    /// Reserves `n` (≥ 1) consecutive IDs with a single clock read. `None` only when the ID
    /// space is exhausted (the last ID would pass the all-ones ULID).
    pub fn reserve(&mut self, n: u64) -> Option<IdRange> {
        let n = n.max(1);
        let now = self.clock.now_ms().min(crate::MAX_MS) as u128;
        let last_ms = self.last >> 80;
        let first = if now > last_ms {
            let random = (self.rng.u128(..) & RANDOM_MASK) & !RANDOM_TOP_BIT;
            (now << 80) | random
        } else {
            if now < last_ms {
                self.regressions += 1;
            }
            // Off a floor, a random step (see the module doc); near the end of the ID space,
            // the plain one.
            let step = if self.floored { 1 + u128::from(self.rng.u64(..)) } else { 1 };
            self.last.checked_add(step).or_else(|| self.last.checked_add(1))?
        };
        self.floored = false;
        let last = first.checked_add(n as u128 - 1)?;
        self.last = last;
        Some(IdRange { first: Ulid(first), len: n })
    }

    /// The last ID handed out (0 before the first).
    pub fn last(&self) -> Ulid {
        Ulid(self.last)
    }

    /// How many times the clock was seen behind the last ID's millisecond.
    pub fn clock_regressions(&self) -> u64 {
        self.regressions
    }

    /// The injected clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}
