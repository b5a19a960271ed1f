//! The log's maintenance thread: everything slow that must stay off the writers' hot path.
//!
//! It seals segments the writers rolled away from, prepares each shard's next segment
//! (recycling retired files before creating new ones: on this disk an unlink or truncate of a
//! large file stalls I/O for ~800 ms, and first-touch pages are ~4× slower than reused ones),
//! flushes published bytes every `flush_interval_ms` (`async` durability), records what is on
//! disk in the checkpoint every `checkpoint_interval_ms`, applies retention,
//! recycles or deletes retired segments once no reader holds them, and drops the page-cache
//! pages of sealed segments older than the newest `sealed_cached_segments` of their shard
//! (written-once pages would otherwise crowd the cache, and on a fresh virtual machine new
//! page-cache memory is several times slower to fill than reused memory).
//!
//! What it is not: async. It is one `std::thread` per open log, driven by a bounded channel.

use crate::inner::LogInner;
use crate::mmap::MapWriter;
use crate::segment::{self, Segment};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Work for the maintenance thread.
#[derive(Debug)]
pub enum Msg {
    /// Seal a segment the writer rolled away from.
    Seal {
        /// The shard it belongs to.
        shard: usize,
        /// The segment.
        segment: Arc<Segment>,
        /// Its writing handle, handed over by the writer.
        writer: MapWriter,
    },
    /// Prepare the next segment of a shard.
    Prepare {
        /// The shard index.
        shard: usize,
    },
    /// Flush everything and stop (sent when the `Log` is dropped).
    Shutdown,
}

/// Runs until told to shut down or every sender is gone.
pub(crate) fn run(inner: Arc<LogInner>, rx: Receiver<Msg>) {
    let flush_every = Duration::from_millis(inner.opts.flush_interval_ms.max(1));
    let retention_every = Duration::from_millis(inner.opts.retention_interval_ms.max(1));
    let checkpoint_every = Duration::from_millis(inner.opts.checkpoint_interval_ms.max(1));
    let mut next_checkpoint = Instant::now() + checkpoint_every;
    let mut next_flush = Instant::now() + flush_every;
    let mut next_retention = Instant::now() + retention_every;
    loop {
        let next = next_flush.min(next_checkpoint).min(next_retention);
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Seal { shard, segment, mut writer }) => {
                let t = Instant::now();
                match segment::seal(&segment, &mut writer) {
                    Ok(()) => {
                        inner.opts.metrics.fsync_seal.observe(t.elapsed().as_secs_f64());
                        inner.drop_old_sealed_pages(shard);
                    }
                    Err(e) => inner.background_error(e),
                }
            }
            Ok(Msg::Prepare { shard }) => {
                if let Err(e) = inner.prepare_next(shard) {
                    inner.background_error(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                // Seal what the writers already handed over, then stop.
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Seal { segment, mut writer, .. } = msg
                        && let Err(e) = segment::seal(&segment, &mut writer)
                    {
                        inner.background_error(e);
                    }
                }
                if let Err(e) = inner.checkpoint() {
                    inner.background_error(e);
                }
                inner.recycle_retired();
                return;
            }
        }
        let now = Instant::now();
        if now >= next_flush {
            if let Err(e) = inner.flush() {
                inner.background_error(e);
            }
            next_flush = now + flush_every;
        }
        if now >= next_checkpoint {
            if let Err(e) = inner.checkpoint() {
                inner.background_error(e);
            }
            next_checkpoint = now + checkpoint_every;
        }
        if now >= next_retention {
            let ms = inner.opts.clock.now_ms();
            if let Err(e) = inner.apply_retention(ms) {
                inner.background_error(e);
            }
            inner.recycle_retired();
            next_retention = now + retention_every;
        }
    }
}
