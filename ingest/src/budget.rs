//! The in-flight body budget (`inflight_body_bytes_max`): memory that ingest requests hold,
//! charged as it is taken — received bytes as they arrive, decompressed bytes as they are
//! produced, the parsed commits' index as it grows, the answer's ids — and released when the
//! request ends. A request whose next charge does not fit is refused (`503`), so what the
//! requests in flight hold stays within the budget whatever the clients do, and an upload that
//! sends nothing holds nothing.
//!
//! A request refused before its body was read drains the rest of it (so the client reads the
//! answer, not a broken pipe), and a drain holds a connection's read buffer while it reads:
//! drains take a slot of one read buffer each from a share of the budget kept for them
//! (`DRAIN_SHARE_DIVISOR`), and wait for one when all are taken. Bodies get the rest, so
//! bodies and drains together stay within the budget under any overload.
//!
//! Charged in KiB (rounded up) on semaphores. What it is not: an allocator; memory a request
//! does not charge (the read buffer of a connection receiving a body, a few KiB of
//! bookkeeping) is outside.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget shared by every request.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    kib: usize,
    drains: Arc<Semaphore>,
    drain_kib: usize,
}

/// One part in this many of the budget is kept for drains of refused bodies, in whole read
/// buffers, as long as the rest still holds one body of `body_bytes_max`.
pub const DRAIN_SHARE_DIVISOR: usize = 8;

/// What one drain holds: a connection's read buffer (`conn::READ_BUF_BYTES_MAX`).
const DRAIN_SLOT_KIB: usize = crate::conn::READ_BUF_BYTES_MAX / 1024;

/// A drain's slot of the budget; released when dropped.
#[derive(Debug)]
pub struct DrainSlot {
    _permit: OwnedSemaphorePermit,
}

/// The charge did not fit in the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the in-flight body budget is spent")]
pub struct Spent;

impl Budget {
    /// A budget of `bytes` (whole KiB) whose bodies' part holds at least one body of
    /// `body_bytes_max`. When that leaves no whole read buffer for drains, they have no share
    /// of their own and take their slots from the bodies' part.
    pub fn new(bytes: usize, body_bytes_max: usize) -> Budget {
        let total_kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        let spare_kib = total_kib.saturating_sub(body_bytes_max.div_ceil(1024));
        let drain_kib =
            (total_kib / DRAIN_SHARE_DIVISOR).min(spare_kib) / DRAIN_SLOT_KIB * DRAIN_SLOT_KIB;
        let kib = total_kib - drain_kib;
        let sem = Arc::new(Semaphore::new(kib));
        let drains =
            if drain_kib > 0 { Arc::new(Semaphore::new(drain_kib)) } else { Arc::clone(&sem) };
        Budget { sem, kib, drains, drain_kib }
    }

    /// A slot for one drain, once one is free.
    pub async fn drain_slot(&self) -> DrainSlot {
        let want = DRAIN_SLOT_KIB.min(self.kib + self.drain_kib) as u32;
        let permit = Arc::clone(&self.drains).acquire_many_owned(want).await;
        DrainSlot { _permit: permit.expect("the budget's semaphores are never closed") }
    }

    /// Bytes kept for drains, out of the whole budget (0: they share the bodies' part).
    pub fn drain_bytes(&self) -> usize {
        self.drain_kib * 1024
    }

    /// A request's charge, empty.
    pub fn charge(&self) -> Charge {
        Charge { sem: Arc::clone(&self.sem), permit: None, kib: 0 }
    }

    /// Whether `bytes` more would fit now (nothing is charged).
    pub fn has_room(&self, bytes: usize) -> bool {
        self.sem.available_permits() >= bytes.div_ceil(1024)
    }

    /// Bytes charged now, over all requests and drains.
    pub fn used_bytes(&self) -> usize {
        let drains = if self.drain_kib > 0 {
            self.drain_kib - self.drains.available_permits()
        } else {
            0 // counted in the bodies' part
        };
        (self.kib - self.sem.available_permits() + drains) * 1024
    }
}

/// What one request holds of the budget; released when dropped.
#[derive(Debug)]
pub struct Charge {
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    kib: usize,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.kib * 1024
    }

    /// Makes the charge cover `bytes` in all (it never shrinks); [`Spent`] leaves it as it was.
    pub fn cover(&mut self, bytes: usize) -> Result<(), Spent> {
        let want = bytes.div_ceil(1024);
        if want <= self.kib {
            return Ok(());
        }
        let more = u32::try_from(want - self.kib).map_err(|_| Spent)?;
        let got = Arc::clone(&self.sem).try_acquire_many_owned(more).map_err(|_| Spent)?;
        match &mut self.permit {
            Some(p) => p.merge(got),
            None => self.permit = Some(got),
        }
        self.kib = want;
        Ok(())
    }

    /// Adds `bytes` to the charge.
    pub fn add(&mut self, bytes: usize) -> Result<(), Spent> {
        self.cover(self.bytes().saturating_add(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_to_the_budget_and_are_released_on_drop() {
        // So small a budget keeps no read buffer for drains: all of it is the bodies'.
        let b = Budget::new(10 * 1024, 1024);
        assert_eq!(b.drain_bytes(), 0);
        let mut one = b.charge();
        one.cover(4 * 1024).unwrap();
        one.cover(1024).unwrap();
        assert_eq!(one.bytes(), 4 * 1024, "a charge never shrinks");
        let mut two = b.charge();
        two.add(6 * 1024).unwrap();
        assert_eq!(b.used_bytes(), 10 * 1024);
        assert_eq!(two.add(1), Err(Spent));
        assert_eq!(two.bytes(), 6 * 1024, "a refused charge leaves it as it was");
        drop(one);
        assert_eq!(b.used_bytes(), 6 * 1024);
        two.add(1).unwrap();
        assert_eq!(two.bytes(), 7 * 1024, "rounded up to whole KiB");
    }

    #[tokio::test]
    async fn drains_take_slots_of_their_share_and_wait_when_it_is_taken() {
        let b = Budget::new(64 << 20, 8 << 20);
        assert_eq!(b.drain_bytes(), 8 << 20, "an eighth of the budget");
        let mut body = b.charge();
        body.cover((56 << 20) - 1).unwrap();
        assert_eq!(body.add(2048), Err(Spent), "bodies get the rest, not the drains' share");
        let slots = b.drain_bytes() / crate::conn::READ_BUF_BYTES_MAX;
        let mut held = Vec::new();
        for _ in 0..slots {
            held.push(b.drain_slot().await);
        }
        assert_eq!(b.used_bytes(), 64 << 20, "bodies and drains fill the budget, no more");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), b.drain_slot());
        assert!(waiting.await.is_err(), "a drain past the share waits");
        held.pop();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), b.drain_slot());
        assert!(next.await.is_ok(), "a freed slot goes to the next drain");
    }

    #[tokio::test]
    async fn a_budget_of_one_body_keeps_it_whole_and_drains_share_it() {
        // inflight_body_bytes_max = body_bytes_max (allowed): one whole body always fits.
        let b = Budget::new(1 << 20, 1 << 20);
        assert_eq!(b.drain_bytes(), 0);
        let mut body = b.charge();
        body.cover(1 << 20).unwrap();
        drop(body);
        let slot = b.drain_slot().await;
        assert_eq!(b.used_bytes(), crate::conn::READ_BUF_BYTES_MAX, "a drain from the bodies'");
        assert_eq!(b.charge().cover(1 << 20), Err(Spent), "and a body waits for it");
        drop(slot);
        assert_eq!(b.used_bytes(), 0);
        // A little more than one body: the drains get what is left, in whole read buffers.
        let b = Budget::new((1 << 20) + (256 << 10), 1 << 20);
        assert_eq!(b.drain_bytes(), 128 << 10, "an eighth, rounded down to read buffers");
    }
}
