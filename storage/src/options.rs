//! How a log is opened and what it keeps: [`LogOptions`] (checked by `validate` before any
//! file is touched) and [`Retention`], with the limits every log shares.
//!
//! What it is not: the log itself (`log`) or its on-disk settings (`format::LogMeta`).

use crate::error::{Result, StorageError};
use crate::format;
use idgen::{Clock, SystemClock};
use std::sync::Arc;

/// Smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: usize = 64 * 1024;
/// Most shards a log may have.
pub const SHARDS_MAX: u32 = 4096;

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Shard count of a new log; an existing log must match.
    pub shards: u32,
    /// Size of each segment file (preallocated).
    pub segment_bytes: usize,
    /// One sparse-index entry per this many bytes of a segment.
    pub index_interval_bytes: usize,
    /// Background flush period for `async` durability.
    pub flush_interval_ms: u64,
    /// How often the checkpoint (what is on disk, for recovery) is written.
    pub checkpoint_interval_ms: u64,
    /// How often retention runs.
    pub retention_interval_ms: u64,
    /// Retired segment files kept for reuse (beyond that they are deleted, off the hot path).
    pub recycle_files_max: usize,
    /// Retention.
    pub retention: Retention,
    /// The clock for IDs and retention.
    pub clock: Arc<dyn Clock>,
    /// Sealed segments per shard whose pages stay in the page cache after sealing; older ones
    /// pages are dropped (readers fault them back from disk). `usize::MAX` keeps everything.
    pub sealed_cached_segments: usize,
    /// Run the maintenance thread (tests turn it off to drive flush and retention by hand).
    pub background: bool,
    /// Where fsync timings go (unregistered handles by default).
    pub metrics: crate::metrics::StorageMetrics,
    /// The participant outside the shards that transactions flagged `txn::EXTERNAL` have
    /// (the service's idempotency records), asked at recovery.
    pub external: Arc<dyn crate::txn::External>,
}

/// What a log keeps. Whole sealed segments beyond either limit are retired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep commits younger than this.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many data bytes.
    pub max_bytes: Option<u64>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            shards: 1,
            segment_bytes: 64 << 20,
            index_interval_bytes: 16 << 10,
            flush_interval_ms: 50,
            retention_interval_ms: 1_000,
            checkpoint_interval_ms: 1_000,
            sealed_cached_segments: 2,
            recycle_files_max: 4,
            retention: Retention::default(),
            clock: Arc::new(SystemClock),
            background: true,
            metrics: crate::metrics::StorageMetrics::default(),
            external: Arc::new(crate::txn::NoExternal),
        }
    }
}

impl LogOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(StorageError::InvalidOption { name, reason });
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return bad("shards", format!("{} is not in 1..={SHARDS_MAX}", self.shards));
        }
        if self.segment_bytes < SEGMENT_BYTES_MIN
            || !self.segment_bytes.is_multiple_of(format::ALIGN)
        {
            return bad(
                "segment_bytes",
                format!("{} is below {SEGMENT_BYTES_MIN} or unaligned", self.segment_bytes),
            );
        }
        if self.index_interval_bytes < 512 || self.index_interval_bytes > self.segment_bytes {
            return bad(
                "index_interval_bytes",
                format!("{} is not in 512..=segment_bytes", self.index_interval_bytes),
            );
        }
        Ok(())
    }
}
