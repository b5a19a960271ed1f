//! One merger per log feeding every live tail of it: the **hub**.
//!
//! A hub merges the log's shards from the watermark at its start, renders each final commit
//! once as an NDJSON line (and, for the first SSE tail that takes a chunk, once as an event),
//! and broadcasts chunks of them over a bounded channel
//! (`HUB_CHUNKS_MAX` chunks). Its `tip` is the last ULID it has broadcast: every commit above
//! it comes in a later chunk. A tail reads on its own merger while it catches up; once caught
//! up it joins (subscribes and learns the tip under one lock, reads on its own up to the tip,
//! then takes chunks, skipping what it already sent). A tail that falls more than the channel's
//! capacity behind is told so by the channel (`Lagged`) and goes back to its own merger from
//! its exact cursor: nothing is lost or repeated, and no tail is buffered without bound. So a
//! thousand live tails cost one merge and one rendering per commit.
//!
//! The hub starts with its first subscriber and stops when it has none left (checked under the
//! lock of [`Hubs`], the lock subscribers take, so a subscriber never joins a stopping hub), or
//! when its log is deleted (its tails end on their own, with an error event).
//!
//! What it is not: HTTP (`api::tail` sends a chunk's commits above its cursor, of its key) or
//! catch-up reading (each tail's own merger).

use super::AppState;
use crate::lock;
use crate::logs::LogEntry;
use axum::body::Bytes;
use idgen::Ulid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
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
/// Pause between polls of a follower (a hub, or a tail catching up) when nothing new is final.
pub const POLL_MS: u64 = 2;

/// Parts laid back to back in one buffer: part `i` is `bytes[ends[i]..ends[i + 1]]`.
#[derive(Debug)]
struct Parts {
    bytes: Bytes,
    /// Starts with 0.
    ends: Vec<u32>,
}

impl Parts {
    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.ends[i] as usize..self.ends[i + 1] as usize]
    }

    /// Parts `first..` as one buffer (shared, not copied).
    fn from(&self, first: usize) -> Bytes {
        self.bytes.slice(self.ends[first] as usize..)
    }
}

/// Builds [`Parts`] part by part.
#[derive(Debug)]
struct PartsBuilder {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Default for PartsBuilder {
    fn default() -> Self {
        PartsBuilder { bytes: Vec::new(), ends: vec![0] }
    }
}

impl PartsBuilder {
    /// Ends the part written to `bytes` since the last call.
    fn end_part(&mut self) {
        self.ends.push(self.bytes.len() as u32);
    }

    fn finish(self) -> Parts {
        Parts { bytes: Bytes::from(self.bytes), ends: self.ends }
    }
}

/// Final commits, in timeline order, rendered once: as NDJSON lines, and (built by the first
/// SSE tail that takes the chunk, then shared) as server-sent events.
#[derive(Debug)]
pub struct Chunk {
    /// Their ULIDs, ascending.
    pub ids: Vec<Ulid>,
    /// Their NDJSON lines, each ending in `\n`.
    lines: Parts,
    /// Their events (`id:`, `data:` the line), each ending in a blank line: plain `message`
    /// events, with no `event:` field, so a browser's `EventSource.onmessage` receives them.
    events: OnceLock<Parts>,
    /// Their keys (empty: none).
    keys: Parts,
}

impl Chunk {
    /// The last commit's ULID.
    pub fn last(&self) -> Ulid {
        *self.ids.last().expect("a chunk is never empty")
    }

    /// The index of the first commit above `after`.
    pub fn first_after(&self, after: Ulid) -> usize {
        self.ids.partition_point(|&id| id <= after)
    }

    /// Commit `i`'s key (empty: none).
    pub fn key(&self, i: usize) -> &[u8] {
        self.keys.get(i)
    }

    /// Commit `i` as an NDJSON line or (`sse`) an event.
    pub fn framed(&self, i: usize, sse: bool) -> &[u8] {
        self.form(sse).get(i)
    }

    /// Commits `first..` as NDJSON lines or (`sse`) events, as one buffer (shared, not copied).
    pub fn framed_from(&self, first: usize, sse: bool) -> Bytes {
        self.form(sse).from(first)
    }

    fn form(&self, sse: bool) -> &Parts {
        if !sse {
            return &self.lines;
        }
        self.events.get_or_init(|| {
            let mut b = PartsBuilder::default();
            for (i, id) in self.ids.iter().enumerate() {
                let line = self.lines.get(i);
                b.bytes.extend_from_slice(b"id: ");
                b.bytes.extend_from_slice(&idgen::encode(*id));
                b.bytes.extend_from_slice(b"\ndata: ");
                b.bytes.extend_from_slice(&line[..line.len() - 1]);
                b.bytes.extend_from_slice(b"\n\n");
                b.end_part();
            }
            b.finish()
        })
    }
}

/// Builds a [`Chunk`] commit by commit.
#[derive(Debug, Default)]
struct ChunkBuilder {
    ids: Vec<Ulid>,
    lines: PartsBuilder,
    keys: PartsBuilder,
}

impl ChunkBuilder {
    fn push(&mut self, r: &storage::Record<'_>) {
        self.ids.push(r.frame.id);
        super::read::render_into(&mut self.lines.bytes, r);
        self.lines.bytes.push(b'\n');
        self.lines.end_part();
        self.keys.bytes.extend_from_slice(r.frame.key);
        self.keys.end_part();
    }

    fn finish(self) -> Option<Arc<Chunk>> {
        (!self.ids.is_empty()).then(|| {
            Arc::new(Chunk {
                ids: self.ids,
                lines: self.lines.finish(),
                events: OnceLock::new(),
                keys: self.keys.finish(),
            })
        })
    }
}

/// Reads final commits from `merger` into a chunk (`None`: none is final), up to
/// `CHUNK_COMMITS_MAX` commits or `CHUNK_BYTES_MAX` bytes, and whether it stopped because
/// nothing more is final (caught up). Blocking.
fn read_chunk(merger: &mut Merger) -> storage::Result<(Option<Arc<Chunk>>, bool)> {
    let mut b = ChunkBuilder::default();
    let mut caught_up = false;
    while b.ids.len() < CHUNK_COMMITS_MAX && b.lines.bytes.len() < CHUNK_BYTES_MAX {
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
) -> storage::Result<(Vec<Arc<Chunk>>, bool)> {
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
    Chunk(Option<Arc<Chunk>>, bool),
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
    ) -> Result<(Vec<Arc<Chunk>>, bool), ()> {
        self.blocking(move |m| read_through(m, tip, chunks_max)).await
    }

    /// After a read that caught up: asks idle writers to pass the lowest commit waiting for
    /// the watermark ([`Merger::waiting`]) now rather than at their next tick.
    pub fn nudge_waiting(&self, st: &AppState, entry: &LogEntry) {
        if let Some(waiting) = self.waiting() {
            st.writers.nudge_to(&entry.log, waiting);
        }
    }

    /// The lowest commit waiting for the watermark, if any ([`Merger::waiting`]).
    fn waiting(&self) -> Option<Ulid> {
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
            tokio::spawn(run(Arc::clone(st), Arc::clone(entry), Arc::clone(&hub)));
            hub
        }
    };
    let tip = lock(&hub.tip);
    Subscription { rx: hub.tx.subscribe(), tip: *tip }
}

/// Merges and broadcasts until no subscriber is left, the log is deleted or the storage fails.
async fn run(st: Arc<AppState>, entry: Arc<LogEntry>, hub: Arc<Hub>) {
    st.metrics.tail_hubs.inc();
    let start = *lock(&hub.tip);
    let mut follower = Follower::new(&entry, Start::After(start));
    // (Subscribers take the lock to subscribe: it is needed only to decide that none is left.)
    while hub.tx.receiver_count() > 0 || !remove_if_unused(&st, &entry, &hub) {
        if entry.is_deleted() {
            // Subscribers see the channel close; the log's handle goes with this task.
            lock(&st.hubs.0).remove(&entry.id);
            break;
        }
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
                    let _ = hub.tx.send(chunk);
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
            follower.nudge_waiting(&st, &entry);
            // Until a writer ends a burst (new commits, or the nudged marks), at most a poll
            // period (a cross-shard decision is not a burst).
            let _ = tokio::time::timeout(Duration::from_millis(POLL_MS), burst).await;
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
