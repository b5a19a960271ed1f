//! The watermark: the one definition of "final" in shardlog. No commit at or below it can
//! still be appended to any shard of a log or become visible there.
//!
//! It is the lowest of two kinds of bound:
//! - each shard's high-water mark (its writer never appends at or below it, and raises it only
//!   after publishing what it covers);
//! - the floor of each undecided transaction: the lowest mark of the shards it writes, read
//!   when it began. Its parts are appended above their shards' marks, so above the floor, and
//!   stay invisible until it is decided. A floor never contains another transaction's floor,
//!   so floors do not chain: the watermark lags by at most the longest undecided transaction.
//!
//! Marks are read before floors. A transaction's floor is taken under the lock that reading
//! the floors takes, after its reader-visible state is set, and its parts are appended after
//! that, so a reader that saw a mark covering a part also sees the part's floor. And a floor
//! is read from marks at least as high as any a reader that took the lock before it saw, so
//! the watermark never moves back.
//!
//! Every place that reports, waits for or starts from what is final calls [`watermark`]:
//! [`crate::Log::watermark`] (strong reads, `GET /v1/logs/{log}`, tail starts, `after=now`)
//! and [`crate::Merger::watermark`] (pages and hubs), which also bounds it by what the
//! merger's own cursors have not read yet.
//!
//! What it is not: the merge (`merge`), or the high-water marks themselves (`shard`).

use crate::shard::Shard;
use idgen::Ulid;
use std::sync::Arc;

/// The watermark of a log's `shards` (`None` without shards): everything they can still add
/// or make visible is above it.
pub(crate) fn watermark<'a>(shards: impl IntoIterator<Item = &'a Arc<Shard>>) -> Option<Ulid> {
    let mut shards = shards.into_iter().peekable();
    let txns = Arc::clone(&shards.peek()?.txns);
    let marks = shards.map(|s| s.high_water()).min()?;
    Some(txns.pending_floor().map_or(marks, |f| marks.min(f)))
}

/// The floor of a transaction that writes `shards`: the lowest of their marks now.
pub(crate) fn floor<'a>(shards: impl IntoIterator<Item = &'a Arc<Shard>>) -> Ulid {
    shards.into_iter().map(|s| s.high_water()).min().unwrap_or(Ulid(0))
}
