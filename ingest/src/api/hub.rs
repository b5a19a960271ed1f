//! One merger per log feeding every live tail of it: the **hub**.
//!
//! A hub merges the log's shards from the watermark at its start, renders each final commit
//! once as an NDJSON line, and broadcasts chunks of them over a bounded channel
//! (`HUB_CHUNKS_MAX` chunks). Its `tip` is the last ULID it has broadcast: every commit above
//! it comes in a later chunk. A tail reads on its own merger while it catches up; once caught
//! up it joins (subscribes and learns the tip under one lock, reads on its own up to the tip,
//! then takes chunks, skipping what it already sent). A tail that falls more than the channel's
//! capacity behind is told so by the channel (`Lagged`) and goes back to its own merger from
//! its exact cursor: nothing is lost or repeated, and no tail is buffered without bound. So a
//! thousand live tails cost one merge and one rendering per commit.
//!
//! The hub starts with its first subscriber and stops when it has none left (checked under the
//! lock of [`Hubs`], the lock subscribers take, so a subscriber never joins a stopping hub).
//!
//! What it is not: HTTP (`api::tail` frames chunks as SSE or NDJSON for its client) or
//! catch-up reading (each tail's own merger).

use super::AppState;
use crate::lock;
use crate::logs::LogEntry;
use axum::body::Bytes;
use idgen::Ulid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{Merger, Start};
use tokio::sync::broadcast;

/// Chunks a hub's channel holds; a tail further behind reads on its own.
pub const HUB_CHUNKS_MAX: usize = 64;
/// Commits in one chunk at most (a hub's, or a tail's own read).
pub const CHUNK_COMMITS_MAX: usize = 500;
/// Rendered bytes after which a chunk ends (it holds at least one commit), so that the chunks
/// a hub keeps and a tail queues stay small whatever the commits' sizes.
pub const CHUNK_BYTES_MAX: usize = 256 << 10;
/// Pause between a hub's polls when nothing new is final.
pub const HUB_POLL_MS: u64 = 2;

/// Final commits, in timeline order, rendered once.
#[derive(Debug)]
pub struct Chunk {
    /// Their ULIDs, ascending.
    pub ids: Vec<Ulid>,
    /// Their NDJSON lines, each ending in `\n`, back to back.
    pub lines: Bytes,
    /// Where each line ends in `lines` (past its `\n`).
    line_ends: Vec<u32>,
    /// Their keys (empty: none), back to back.
    keys: Vec<u8>,
    /// Where each key ends in `keys`.
    key_ends: Vec<u32>,
}

impl Chunk {
    /// The last commit's ULID.
    pub fn last(&self) -> Ulid {
        *self.ids.last().expect("a chunk is never empty")
    }

    /// Commit `i`'s NDJSON line, with its `\n`.
    pub fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.line_ends[i - 1] as usize };
        &self.lines[start..self.line_ends[i] as usize]
    }

    /// Commit `i`'s key (empty: none).
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] as usize };
        &self.keys[start..self.key_ends[i] as usize]
    }

    /// The lines of the commits above `after`, as one buffer (shared, not copied, when that is
    /// all of them).
    pub fn lines_after(&self, after: Ulid) -> Bytes {
        let first = self.ids.partition_point(|&id| id <= after);
        let start = if first == 0 { 0 } else { self.line_ends[first - 1] as usize };
        self.lines.slice(start..)
    }
}

/// Builds a [`Chunk`] commit by commit.
#[derive(Debug, Default)]
struct ChunkBuilder {
    ids: Vec<Ulid>,
    lines: Vec<u8>,
    line_ends: Vec<u32>,
    keys: Vec<u8>,
    key_ends: Vec<u32>,
}

impl ChunkBuilder {
    fn push(&mut self, r: &storage::Record<'_>) {
        self.ids.push(r.frame.id);
        super::read::render_into(&mut self.lines, r);
        self.lines.push(b'\n');
        self.line_ends.push(self.lines.len() as u32);
        self.keys.extend_from_slice(r.frame.key);
        self.key_ends.push(self.keys.len() as u32);
    }

    fn finish(self) -> Option<Chunk> {
        (!self.ids.is_empty()).then(|| Chunk {
            ids: self.ids,
            lines: Bytes::from(self.lines),
            line_ends: self.line_ends,
            keys: self.keys,
            key_ends: self.key_ends,
        })
    }
}

/// Reads final commits from `merger` into a chunk (`None`: none is final), up to
/// `CHUNK_COMMITS_MAX` commits or `CHUNK_BYTES_MAX` bytes, and whether it stopped because
/// nothing more is final (caught up). Blocking.
fn read_chunk(merger: &mut Merger) -> storage::Result<(Option<Chunk>, bool)> {
    let mut b = ChunkBuilder::default();
    let mut caught_up = false;
    while b.ids.len() < CHUNK_COMMITS_MAX && b.lines.len() < CHUNK_BYTES_MAX {
        let Some(r) = merger.next()? else {
            caught_up = true;
            break;
        };
        b.push(&r);
    }
    Ok((b.finish(), caught_up))
}

/// Reads on `merger` through `tip`, at most `chunks_max` chunks: the chunks read, and whether
/// every commit at or below `tip` is now among them or behind the merger (so a subscriber
/// whose chunks begin after `tip` misses nothing). Blocking.
fn read_through(
    merger: &mut Merger,
    tip: Ulid,
    chunks_max: usize,
) -> storage::Result<(Vec<Chunk>, bool)> {
    // Every commit at or below this that the merger has not returned is readable now, so
    // reading until the merger has nothing final returns all of them.
    let final_now = merger.watermark()?;
    let mut chunks = Vec::new();
    while chunks.len() < chunks_max {
        let Some(c) = read_chunk(merger)?.0 else {
            return Ok((chunks, final_now >= tip));
        };
        let past = c.last() >= tip;
        chunks.push(c);
        if past {
            return Ok((chunks, true));
        }
    }
    Ok((chunks, false))
}

/// What one step of a [`Follower`] found.
#[derive(Debug)]
pub enum Read {
    /// No shard's mark moved since a read found nothing: nothing new can be final.
    Idle,
    /// A chunk (none if nothing was final) and whether the merger caught up with what is
    /// final.
    Chunk(Option<Chunk>, bool),
}

/// A merger followed from the async side, for a hub and for a tail catching up: reads run on
/// the blocking pool, and a read is skipped while no shard's mark has moved since one found
/// nothing (so an idle follower costs no trip to the blocking pool).
#[derive(Debug)]
pub struct Follower {
    /// `None` only while a read has it on the blocking pool, or after that read failed.
    merger: Option<Merger>,
    /// The shards' marks when the last read found nothing.
    idle_marks: Option<Vec<Ulid>>,
}

impl Follower {
    /// Follows `entry`'s shards from `start`.
    pub fn new(entry: &LogEntry, start: Start) -> Follower {
        Follower { merger: Some(Merger::new(entry.log.shards(), start)), idle_marks: None }
    }

    /// The next step; `Err` once the storage (or the blocking pool) failed.
    pub async fn read(&mut self, entry: &LogEntry) -> Result<Read, ()> {
        let marks: Vec<Ulid> = entry.log.shards().iter().map(|s| s.high_water()).collect();
        if self.idle_marks.as_ref() == Some(&marks) && self.waiting().is_none() {
            return Ok(Read::Idle);
        }
        let (chunk, caught_up) = self.blocking(read_chunk).await?;
        self.idle_marks = chunk.is_none().then_some(marks);
        Ok(Read::Chunk(chunk, caught_up))
    }

    /// [`read_through`] `tip`, at most `chunks_max` chunks.
    pub async fn read_through(
        &mut self,
        tip: Ulid,
        chunks_max: usize,
    ) -> Result<(Vec<Chunk>, bool), ()> {
        self.blocking(move |m| read_through(m, tip, chunks_max)).await
    }

    /// The lowest commit waiting for the watermark, if any ([`Merger::waiting`]).
    pub fn waiting(&self) -> Option<Ulid> {
        self.merger.as_ref().and_then(Merger::waiting)
    }

    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Merger) -> storage::Result<T> + Send + 'static,
    ) -> Result<T, ()> {
        let mut merger = self.merger.take().ok_or(())?;
        let r = tokio::task::spawn_blocking(move || f(&mut merger).map(|t| (merger, t))).await;
        let (merger, t) = r.map_err(|_| ())?.map_err(|_| ())?;
        self.merger = Some(merger);
        Ok(t)
    }
}

/// A running hub.
#[derive(Debug)]
struct Hub {
    tx: broadcast::Sender<Arc<Chunk>>,
    /// The last ULID broadcast (at first: the watermark the hub started from). Updated with
    /// each send, under this lock, so a subscriber learns exactly where its chunks begin.
    tip: Mutex<Ulid>,
}

/// A tail's place on a hub: every chunk sent after `tip` arrives on `rx`.
#[derive(Debug)]
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<Chunk>>,
    pub tip: Ulid,
}

/// The running hubs, by log (`LogEntry::id`, so a log deleted and created again gets a new one).
#[derive(Debug, Default)]
pub struct Hubs(Mutex<HashMap<u64, Arc<Hub>>>);

/// Subscribes to `entry`'s hub, starting one if none runs.
pub fn subscribe(st: &Arc<AppState>, entry: &Arc<LogEntry>) -> Subscription {
    let mut hubs = lock(&st.hubs.0);
    let hub = match hubs.get(&entry.id) {
        Some(hub) => Arc::clone(hub),
        None => {
            let start = entry.log.watermark();
            let (tx, _) = broadcast::channel(HUB_CHUNKS_MAX);
            let hub = Arc::new(Hub { tx, tip: Mutex::new(start) });
            hubs.insert(entry.id, Arc::clone(&hub));
            tokio::spawn(run(Arc::clone(st), Arc::clone(entry), Arc::clone(&hub), start));
            hub
        }
    };
    let tip = lock(&hub.tip);
    Subscription { rx: hub.tx.subscribe(), tip: *tip }
}

/// Merges and broadcasts until no subscriber is left or the storage fails.
async fn run(st: Arc<AppState>, entry: Arc<LogEntry>, hub: Arc<Hub>, start: Ulid) {
    st.metrics.tail_hubs.inc();
    let mut follower = Follower::new(&entry, Start::After(start));
    // (Subscribers take the lock to subscribe: it is needed only to decide that none is left.)
    while hub.tx.receiver_count() > 0 || !remove_if_unused(&st, &entry, &hub) {
        // Registered before the marks are read, so a burst ending after that still wakes us.
        let burst = st.writers.bursts().notified();
        tokio::pin!(burst);
        burst.as_mut().enable();
        let caught_up = match follower.read(&entry).await {
            Ok(Read::Idle) => true,
            Ok(Read::Chunk(chunk, caught_up)) => {
                if let Some(chunk) = chunk {
                    let mut tip = lock(&hub.tip);
                    *tip = chunk.last();
                    // No receiver: the check at the top of the loop stops the hub.
                    let _ = hub.tx.send(Arc::new(chunk));
                }
                caught_up
            }
            Err(()) => {
                // The storage failed: subscribers fall back to their own mergers (which
                // report it).
                lock(&st.hubs.0).remove(&entry.id);
                break;
            }
        };
        if caught_up {
            // A commit is published but not yet final: ask idle writers to pass it now.
            if let Some(waiting) = follower.waiting() {
                st.writers.nudge_to(waiting);
            }
            // Until a writer ends a burst (new commits, or the nudged marks), at most a poll
            // period (a cross-shard decision is not a burst).
            let _ = tokio::time::timeout(Duration::from_millis(HUB_POLL_MS), burst).await;
        }
    }
    st.metrics.tail_hubs.dec();
}

/// Removes `hub` from the running hubs if it has no subscriber (checked under the lock
/// subscribers take); whether it did.
fn remove_if_unused(st: &AppState, entry: &LogEntry, hub: &Hub) -> bool {
    let mut hubs = lock(&st.hubs.0);
    if hub.tx.receiver_count() > 0 {
        return false;
    }
    hubs.remove(&entry.id);
    true
}
