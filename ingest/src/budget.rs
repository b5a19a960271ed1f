//! The in-flight body budget (`inflight_body_bytes_max`): memory that ingest requests hold,
//! charged as it is taken — received bytes as they arrive, decompressed bytes as they are
//! produced, the parsed commits' index as it grows, the answer's ids — and released when the
//! request ends. A request whose next charge does not fit is refused (`503`), so what the
//! requests in flight hold stays within the budget whatever the clients do, and an upload that
//! sends nothing holds nothing.
//!
//! Charged in KiB (rounded up) on a semaphore. What it is not: an allocator; memory a request
//! does not charge (hyper's per-connection read buffer, a few KiB of bookkeeping) is outside.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget shared by every request.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    kib: usize,
}

/// The charge did not fit in the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the in-flight body budget is spent")]
pub struct Spent;

impl Budget {
    /// A budget of `bytes` (whole KiB).
    pub fn new(bytes: usize) -> Budget {
        let kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Budget { sem: Arc::new(Semaphore::new(kib)), kib }
    }

    /// A request's charge, empty.
    pub fn charge(&self) -> Charge {
        Charge { sem: Arc::clone(&self.sem), permit: None, kib: 0 }
    }

    /// Whether `bytes` more would fit now (nothing is charged).
    pub fn has_room(&self, bytes: usize) -> bool {
        self.sem.available_permits() >= bytes.div_ceil(1024)
    }

    /// Bytes charged now, over all requests.
    pub fn used_bytes(&self) -> usize {
        (self.kib - self.sem.available_permits()) * 1024
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
        let b = Budget::new(10 * 1024);
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
}
