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

/// One part in this many of the budget is kept for drains of refused bodies (at least one
/// read buffer's worth).
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
    /// A budget of `bytes` (whole KiB).
    pub fn new(bytes: usize) -> Budget {
        let total_kib = (bytes / 1024).clamp(2, Semaphore::MAX_PERMITS);
        let drain_kib = (total_kib / DRAIN_SHARE_DIVISOR / DRAIN_SLOT_KIB * DRAIN_SLOT_KIB)
            .max(DRAIN_SLOT_KIB)
            .min(total_kib / 2);
        let kib = total_kib - drain_kib;
        Budget {
            sem: Arc::new(Semaphore::new(kib)),
            kib,
            drains: Arc::new(Semaphore::new(drain_kib)),
            drain_kib,
        }
    }

    /// A slot for one drain, once one is free. Under a budget too small for a whole read
    /// buffer, a drain takes all of the drains' share.
    pub async fn drain_slot(&self) -> DrainSlot {
        let want = DRAIN_SLOT_KIB.min(self.drain_kib) as u32;
        let permit = Arc::clone(&self.drains).acquire_many_owned(want).await;
        DrainSlot { _permit: permit.expect("the drains' semaphore is never closed") }
    }

    /// Bytes kept for drains, out of the whole budget.
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
        (self.kib - self.sem.available_permits() + self.drain_kib - self.drains.available_permits())
            * 1024
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
        // 10 KiB for bodies; the drains' share of so small a budget is the smallest: half.
        let b = Budget::new(20 * 1024);
        assert_eq!(b.drain_bytes(), 10 * 1024);
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
        let b = Budget::new(64 << 20);
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
}
