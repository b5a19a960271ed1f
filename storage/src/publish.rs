//! The published length: how a single writer hands bytes to concurrent readers without locks.
//!
//! Protocol: the writer fills bytes at and beyond the published length, then stores the new
//! length with `Release`. A reader loads it with `Acquire` and reads only below it, so every
//! byte it reads was written before the store it observed. The length only grows. A batch of
//! records is published by one store, so readers see all of it or none of it.
//!
//! This type is built on loom's atomics under the `loom` feature so `tests/loom.rs` can
//! model-check the protocol; nothing else differs.

#[cfg(feature = "loom")]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(feature = "loom"))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// A monotonically growing byte length shared by one writer and many readers.
#[derive(Debug)]
pub struct PublishedLen(AtomicUsize);

impl PublishedLen {
    /// Starts at `len`.
    pub fn new(len: usize) -> Self {
        PublishedLen(AtomicUsize::new(len))
    }

    /// The length readers may read below (`Acquire`: pairs with [`PublishedLen::publish`]).
    #[inline]
    pub fn load(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Publishes bytes below `len` (`Release`). Only the writer calls this; lengths never
    /// shrink.
    #[inline]
    pub fn publish(&self, len: usize) {
        let old = self.0.load(Ordering::Relaxed);
        assert!(len >= old, "published length must not shrink ({old} -> {len})");
        self.0.store(len, Ordering::Release);
    }
}
