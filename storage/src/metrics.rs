//! Storage's Prometheus families: the durability timings measured where the syscalls happen.
//!
//! A [`StorageMetrics`] is a set of cheap, cloneable handles (each an `Arc` inside), given to a
//! log through `LogOptions::metrics` and shared by every log of a process; the embedding binary
//! registers it once in its own `prometheus::Registry`. Unregistered handles work the same and
//! are simply never scraped, which is what library users and tests get by default.
//!
//! What it is not: sizes and counters that can be read at scrape time (segments, bytes, rolls)
//! are in [`crate::LogStats`] and the embedding binary exports them from there.

use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};

/// fdatasync timings are this fine: 50 µs (a fast NVMe) up to 2.5 s (a stalled disk).
const FSYNC_BUCKETS_S: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    2.5,
];

/// Handles to storage's metric families.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    fsync: HistogramVec,
    /// `fdatasync` by a writer for `sync` durability (on the hot path: a request waits).
    pub(crate) fsync_writer: Histogram,
    /// `fdatasync` by the maintenance thread (the `async` background flush).
    pub(crate) fsync_background: Histogram,
    /// Sealing a full segment: writing its footer and two `fdatasync`s (data, then header).
    pub(crate) fsync_seal: Histogram,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StorageMetrics {
    /// Fresh, unregistered handles.
    pub fn new() -> Self {
        let fsync = HistogramVec::new(
            HistogramOpts::new(
                "shardlog_fsync_duration_seconds",
                "Time of each fdatasync of a segment, by who asked for it (writer: a sync \
                 request waits for it; background: the async flush; seal: sealing a full segment, two fdatasyncs)",
            )
            .buckets(FSYNC_BUCKETS_S.to_vec()),
            &["cause"],
        )
        .expect("a valid static histogram definition");
        StorageMetrics {
            fsync_writer: fsync.with_label_values(&["writer"]),
            fsync_background: fsync.with_label_values(&["background"]),
            fsync_seal: fsync.with_label_values(&["seal"]),
            fsync,
        }
    }

    /// Registers every family in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.fsync.clone()))
    }
}
