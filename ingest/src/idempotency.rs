//! Idempotency keys: the first response to a request with `Idempotency-Key` is kept for
//! `idempotency_ttl_ms` (10 minutes), durably, and a repeat gets it back with
//! `"duplicate": true` without writing anything.
//!
//! A keyed request is a transaction (`storage::txn`) whose participants are its shard parts
//! and its record here: the id has `txn::EXTERNAL` set. The record (key, response, transaction
//! id) is appended to `{data_dir}/idempotency.log` after the parts are appended and before the
//! transaction is committed (made visible) and answered — fdatasync'd for `sync` writes, one
//! fdatasync for every record appended meanwhile (group commit). Recovery commits the
//! transaction only if its record is on disk ([`Idempotency::holder`]), and a record whose
//! transaction recovery aborted is dropped ([`Idempotency::forget_aborted`]): so after any
//! crash either the commits and their record both exist (a retry is answered `"duplicate"`)
//! or neither does (a retry writes them).
//!
//! In memory a key is `InFlight` while its first request runs — a concurrent duplicate waits
//! for it rather than writing twice — then `Done`. The file is read back at start (a torn last
//! record is cut) and rewritten without expired entries when it grows past
//! `IDEMPOTENCY_FILE_BYTES_MAX`.
//!
//! Limits: keys by count (`idempotency_keys_max`) and bytes (`idempotency_bytes_max`); past
//! them the oldest finished keys are evicted early (counted).

use bytes::Bytes;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The file is compacted when it grows past this.
pub const IDEMPOTENCY_FILE_BYTES_MAX: u64 = 64 << 20;
/// Longest key accepted.
pub const KEY_BYTES_MAX: usize = 256;

type Id = (String, String); // (log, key)

#[derive(Debug)]
enum Slot {
    /// The first request runs; once its record is appended (not yet answered) it is `record`,
    /// which a compaction keeps.
    InFlight {
        rx: watch::Receiver<()>,
        record: Option<Record>,
    },
    Done(Record),
}

/// What the file holds for a key.
#[derive(Debug, Clone)]
struct Record {
    at_ms: u64,
    response: Bytes,
    /// The transaction the first request's commits were written in (none: it wrote nothing).
    txn: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<Id, Slot>,
    /// Finished keys, oldest first (may hold stale entries for replaced keys).
    order: VecDeque<(u64, Id)>,
    bytes: usize,
}

/// The idempotency store.
#[derive(Debug)]
pub struct Idempotency {
    state: Mutex<State>,
    file: Mutex<Appender>,
    /// (generation, length) of the file known to be on disk: one fdatasync covers every
    /// record appended before it started.
    synced: Mutex<(u64, u64)>,
    /// Transactions whose record was in the file at open, per log (what recovery asks).
    recorded: Mutex<HashMap<String, HashSet<u64>>>,
    path: PathBuf,
    ttl_ms: u64,
    keys_max: usize,
    bytes_max: usize,
    /// Keys evicted before their time because of the limits.
    pub evictions: AtomicU64,
    /// Repeats answered from the store.
    pub replays: AtomicU64,
}

/// The open file: appended to under its lock, synced outside it.
#[derive(Debug)]
struct Appender {
    file: Arc<File>,
    len: u64,
    /// Bumped by every compaction (which writes a new file, synced whole).
    generation: u64,
}

/// The idempotency records of one log as a participant of its transactions.
#[derive(Debug)]
pub struct Holder {
    store: Arc<Idempotency>,
    log: String,
}

impl storage::External for Holder {
    fn holds(&self, id: u64) -> bool {
        crate::lock(&self.store.recorded).get(&self.log).is_some_and(|s| s.contains(&id))
    }

    /// Makes every record appended so far durable (`async` writes never sync their own), so a
    /// checkpoint that settles their transactions never leaves commits without their record.
    fn flush(&self) -> std::io::Result<()> {
        self.store.sync_through(None)
    }
}

/// What a request with a key should do.
#[derive(Debug)]
pub enum Claim {
    /// First of its key: run, then [`Idempotency::complete`] or [`Idempotency::abandon`].
    New(watch::Sender<()>),
    /// A repeat: this is the first response.
    Replay(Value),
    /// The first is still running: wait on this, then claim again.
    Wait(watch::Receiver<()>),
}

/// Why a key is refused.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key must be 1..={KEY_BYTES_MAX} visible ASCII characters"
        ));
    }
    Ok(())
}

impl Idempotency {
    /// Opens (creating) the store in `dir`, loading keys younger than `ttl_ms` as of `now_ms`.
    pub fn open(
        dir: &Path,
        ttl_ms: u64,
        keys_max: usize,
        bytes_max: usize,
        now_ms: u64,
    ) -> std::io::Result<Idempotency> {
        let path = dir.join("idempotency.log");
        let mut records = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            let mut at = 0;
            while let Some((rec, len)) = decode(&buf[at..]) {
                records.push(rec);
                at += len;
            }
        }
        let mut recorded: HashMap<String, HashSet<u64>> = HashMap::new();
        for (_, (log, _), r) in &records {
            if let Some(txn) = r.txn {
                recorded.entry(log.clone()).or_default().insert(txn);
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        let store = Idempotency {
            state: Mutex::new(State::default()),
            file: Mutex::new(Appender { file: Arc::new(file), len, generation: 0 }),
            synced: Mutex::new((0, len)),
            recorded: Mutex::new(recorded),
            path,
            ttl_ms,
            keys_max,
            bytes_max,
            evictions: AtomicU64::new(0),
            replays: AtomicU64::new(0),
        };
        {
            let mut st = crate::lock(&store.state);
            for (at_ms, id, record) in records {
                if at_ms.saturating_add(ttl_ms) > now_ms {
                    store.insert_done(&mut st, id, record);
                }
            }
        }
        // Rewrite what is live: drops expired records and any torn tail.
        store.compact()?;
        Ok(store)
    }

    /// Claims `key` of `log` at `now_ms`.
    pub fn claim(&self, log: &str, key: &str, now_ms: u64) -> Claim {
        let id = (log.to_owned(), key.to_owned());
        let mut st = crate::lock(&self.state);
        match st.slots.get(&id) {
            Some(Slot::Done(r)) if r.at_ms.saturating_add(self.ttl_ms) > now_ms => {
                self.replays.fetch_add(1, Ordering::Relaxed);
                let mut v: Value = serde_json::from_slice(&r.response).unwrap_or(Value::Null);
                v["duplicate"] = Value::Bool(true);
                Claim::Replay(v)
            }
            Some(Slot::InFlight { rx, .. }) => Claim::Wait(rx.clone()),
            _ => {
                let (tx, rx) = watch::channel(());
                let fresh = Slot::InFlight { rx, record: None };
                if let Some(Slot::Done(r)) = st.slots.insert(id, fresh) {
                    st.bytes -= r.response.len();
                }
                Claim::New(tx)
            }
        }
    }

    /// Records the first response of `key`, whose commits are transaction `txn` (none if it
    /// wrote nothing): appends the record, makes it durable when `sync` (sharing the
    /// fdatasync with every record appended meanwhile), then runs `publish` (which commits the
    /// transaction) and only then lets repeats replay it. On an error nothing is published
    /// and the key is free again; the caller aborts the transaction. Blocking (file I/O).
    #[allow(clippy::too_many_arguments)] // each is one fact of the record or its release
    pub fn complete(
        &self,
        log: &str,
        key: &str,
        response: &Value,
        txn: Option<u64>,
        sync: bool,
        now_ms: u64,
        done: watch::Sender<()>,
        publish: impl FnOnce(),
    ) -> std::io::Result<()> {
        let id = (log.to_owned(), key.to_owned());
        let bytes = Bytes::from(serde_json::to_vec(response).expect("a JSON value serialises"));
        let record = Record { at_ms: now_ms, response: bytes, txn };
        let written = self.append(&id, &record).and_then(|at| {
            if sync {
                self.sync_through(Some(at))?;
            }
            Ok(at)
        });
        let mut st = crate::lock(&self.state);
        match &written {
            Ok(_) => {
                publish();
                self.insert_done(&mut st, id, record);
            }
            Err(_) => {
                st.slots.remove(&id);
            }
        }
        drop(st);
        drop(done);
        // The record is written (and maybe published): a failed compaction only leaves the
        // file longer, and is no failure of this request.
        if matches!(written, Ok((_, len)) if len > IDEMPOTENCY_FILE_BYTES_MAX)
            && let Err(e) = self.compact()
        {
            tracing::warn!(error = %e, "compacting idempotency.log failed");
        }
        written.map(|_| ())
    }

    /// Appends `record` of key `id`, still in flight; answers the (generation, length) that
    /// holds it. File and memory change under the file lock together, so a compaction (which
    /// holds it too) never rewrites the file without a record that was just appended.
    fn append(&self, id: &Id, record: &Record) -> std::io::Result<(u64, u64)> {
        let mut f = crate::lock(&self.file);
        let bytes = encode(id, record);
        if let Err(e) = (&*f.file).write_all(&bytes) {
            // Cut a partial record off, or every later record would be unreadable after it.
            let _ = f.file.set_len(f.len);
            return Err(e);
        }
        f.len += bytes.len() as u64;
        if let Some(Slot::InFlight { record: r, .. }) = crate::lock(&self.state).slots.get_mut(id) {
            *r = Some(record.clone());
        }
        Ok((f.generation, f.len))
    }

    /// Makes the file durable at least through `at` (generation, length), or through
    /// everything appended so far when `None`: waits for a sync in progress, and syncs only if
    /// that one did not cover it.
    fn sync_through(&self, at: Option<(u64, u64)>) -> std::io::Result<()> {
        let mut synced = crate::lock(&self.synced);
        if at.is_some_and(|at| *synced >= at) {
            return Ok(());
        }
        let (file, now) = {
            let f = crate::lock(&self.file);
            (Arc::clone(&f.file), (f.generation, f.len))
        };
        if *synced >= now {
            return Ok(());
        }
        // A compaction since `at` wrote a new file synced whole: syncing it covers `at` too.
        file.sync_data()?;
        *synced = (*synced).max(now);
        Ok(())
    }

    /// Drops the records of `log` whose transaction recovery aborted (their commits were
    /// never made visible), so a retry writes them. Call once the log is recovered.
    pub fn forget_aborted(&self, log: &str, aborted: impl Fn(u64) -> bool) {
        let mut st = crate::lock(&self.state);
        let gone: Vec<Id> = st
            .slots
            .iter()
            .filter(|((l, _), s)| {
                l == log && matches!(s, Slot::Done(r) if r.txn.is_some_and(&aborted))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(Slot::Done(r)) = st.slots.remove(&id) {
                st.bytes -= r.response.len();
            }
        }
        crate::lock(&self.recorded).remove(log);
    }

    /// The participant that recovery of `log` asks about its keyed transactions.
    pub fn holder(self: &Arc<Self>, log: &str) -> Arc<dyn storage::External> {
        Arc::new(Holder { store: Arc::clone(self), log: log.to_owned() })
    }

    /// Forgets an in-flight key whose request failed (nothing was written): a retry runs anew.
    pub fn abandon(&self, log: &str, key: &str, done: watch::Sender<()>) {
        let id = (log.to_owned(), key.to_owned());
        let mut st = crate::lock(&self.state);
        if matches!(st.slots.get(&id), Some(Slot::InFlight { .. })) {
            st.slots.remove(&id);
        }
        drop(st);
        drop(done);
    }

    /// Finished keys held.
    pub fn len(&self) -> usize {
        crate::lock(&self.state).order.len()
    }

    /// Whether no finished key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_done(&self, st: &mut State, id: Id, record: Record) {
        let at_ms = record.at_ms;
        st.bytes += record.response.len();
        st.order.push_back((at_ms, id.clone()));
        if let Some(Slot::Done(old)) = st.slots.insert(id, Slot::Done(record)) {
            st.bytes -= old.response.len();
        }
        // Expired first, then (over the limits) the oldest.
        while let Some((at, oldest)) = st.order.front().cloned() {
            let expired = at.saturating_add(self.ttl_ms) <= at_ms;
            let over = st.order.len() > self.keys_max || st.bytes > self.bytes_max;
            if !expired && !over {
                break;
            }
            st.order.pop_front();
            if let Some(Slot::Done(r)) = st.slots.get(&oldest)
                && r.at_ms == at
            {
                st.bytes -= r.response.len();
                st.slots.remove(&oldest);
                if !expired {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Rewrites the file with the live keys (finished, and in flight with their record
    /// appended): temporary file, fsync, rename, dir fsync.
    fn compact(&self) -> std::io::Result<()> {
        let mut f = crate::lock(&self.file);
        let records: Vec<Vec<u8>> = {
            let st = crate::lock(&self.state);
            // Oldest first, so that a reload evicts in the same order.
            let mut live: Vec<(&Id, &Record)> = st
                .slots
                .iter()
                .filter_map(|(id, s)| match s {
                    Slot::Done(r) | Slot::InFlight { record: Some(r), .. } => Some((id, r)),
                    Slot::InFlight { record: None, .. } => None,
                })
                .collect();
            live.sort_by_key(|(_, r)| r.at_ms);
            live.into_iter().map(|(id, r)| encode(id, r)).collect()
        };
        let tmp = self.path.with_extension("log.tmp");
        let mut out = File::create(&tmp)?;
        let mut len = 0;
        for r in &records {
            out.write_all(r)?;
            len += r.len() as u64;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(&self.path)?;
        *f = Appender { file: Arc::new(file), len, generation: f.generation + 1 };
        Ok(())
    }
}

/// Set in the `at_ms` word of a record followed by a transaction id.
const HAS_TXN: u64 = 1 << 63;

/// Record: `u32` length of what follows the CRC, `u32` CRC32C of it, `u64` at_ms (its top bit
/// [`HAS_TXN`] set when a `u64` transaction id follows), `u16` log length, log, `u16` key
/// length, key, response JSON. Little-endian.
fn encode(id: &Id, r: &Record) -> Vec<u8> {
    let mut body = Vec::with_capacity(20 + id.0.len() + id.1.len() + r.response.len());
    let word = r.at_ms | if r.txn.is_some() { HAS_TXN } else { 0 };
    body.extend_from_slice(&word.to_le_bytes());
    if let Some(txn) = r.txn {
        body.extend_from_slice(&txn.to_le_bytes());
    }
    for part in [id.0.as_bytes(), id.1.as_bytes()] {
        body.extend_from_slice(&(part.len() as u16).to_le_bytes());
        body.extend_from_slice(part);
    }
    body.extend_from_slice(&r.response);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(b: &[u8]) -> Option<((u64, Id, Record), usize)> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let body = b.get(8..8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let word = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let at_ms = word & !HAS_TXN;
    let mut at = 8;
    let txn = if word & HAS_TXN != 0 {
        at += 8;
        Some(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?))
    } else {
        None
    };
    let mut parts = Vec::new();
    for _ in 0..2 {
        let n = u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize;
        parts.push(String::from_utf8(body.get(at + 2..at + 2 + n)?.to_vec()).ok()?);
        at += 2 + n;
    }
    let key = parts.pop()?;
    let log = parts.pop()?;
    let record = Record { at_ms, response: Bytes::copy_from_slice(body.get(at..)?), txn };
    Some(((at_ms, (log, key), record), 8 + len))
}

#[cfg(test)]
mod tests {
    //! The store on its own: replay, expiry, limits, durability across reopen, torn tails.
    use super::*;

    fn done(store: &Idempotency, key: &str, n: u64, now: u64) {
        let Claim::New(tx) = store.claim("log", key, now) else { panic!("{key} should be new") };
        store
            .complete(
                "log",
                key,
                &serde_json::json!({"count": n, "duplicate": false}),
                Some(n),
                true,
                now,
                tx,
                || (),
            )
            .unwrap();
    }

    #[test]
    fn a_ttl_or_timestamp_at_the_top_of_the_range_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let store = Idempotency::open(dir.path(), u64::MAX, 100, 1 << 20, 0).unwrap();
        done(&store, "a", 1, (1 << 62) + 5);
        assert!(matches!(store.claim("log", "a", 1 << 62), Claim::Replay(_)));
        drop(store);
        let store = Idempotency::open(dir.path(), u64::MAX, 100, 1 << 20, 1 << 62).unwrap();
        assert!(matches!(store.claim("log", "a", 1 << 62), Claim::Replay(_)), "kept");
    }

    #[test]
    fn recovery_asks_the_records_on_disk_and_aborted_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 0).unwrap();
        done(&store, "a", 7, 0);
        done(&store, "b", 8, 0);
        drop(store);
        let store = Arc::new(Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 0).unwrap());
        let holder = store.holder("log");
        assert!(holder.holds(7) && holder.holds(8) && !holder.holds(9));
        assert!(!store.holder("other").holds(7), "transactions are per log");
        store.forget_aborted("log", |txn| txn == 8);
        assert!(matches!(store.claim("log", "a", 1), Claim::Replay(_)));
        assert!(matches!(store.claim("log", "b", 1), Claim::New(_)), "its commits never showed");
    }

    #[test]
    fn a_failed_publish_path_never_replays_and_concurrent_syncs_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Idempotency::open(dir.path(), 600_000, 10_000, 1 << 24, 0).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        done(&store, &format!("{t}-{i}"), t * 100 + i, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Until `publish` ran, a repeat waits: it never replays an unpublished answer.
        let Claim::New(tx) = store.claim("log", "late", 0) else { panic!() };
        assert!(matches!(store.claim("log", "late", 0), Claim::Wait(_)));
        store.abandon("log", "late", tx);
        drop(store);
        let store = Idempotency::open(dir.path(), 600_000, 10_000, 1 << 24, 0).unwrap();
        assert_eq!(store.len(), 400);
    }

    #[test]
    fn replays_until_expiry_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 1_000).unwrap();
        done(&store, "a", 3, 1_000);
        let Claim::Replay(v) = store.claim("log", "a", 2_000) else { panic!("replay expected") };
        assert_eq!(v, serde_json::json!({"count": 3, "duplicate": true}));
        assert!(matches!(store.claim("other-log", "a", 2_000), Claim::New(_)), "keys are per log");
        drop(store);
        let store = Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 5_000).unwrap();
        assert!(matches!(store.claim("log", "a", 5_000), Claim::Replay(_)));
        assert!(matches!(store.claim("log", "a", 601_001), Claim::New(_)), "expired after the TTL");
    }

    #[test]
    fn concurrent_duplicate_waits_and_abandon_frees_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 0).unwrap();
        let Claim::New(tx) = store.claim("l", "k", 0) else { panic!() };
        let Claim::Wait(rx) = store.claim("l", "k", 0) else { panic!("second claim waits") };
        store.abandon("l", "k", tx);
        assert!(rx.has_changed().is_err(), "the waiter is released");
        assert!(matches!(store.claim("l", "k", 0), Claim::New(_)));
    }

    #[test]
    fn limits_evict_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Idempotency::open(dir.path(), 600_000, 3, 1 << 20, 0).unwrap();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            done(&store, k, i as u64, i as u64);
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.evictions.load(Ordering::Relaxed), 1);
        assert!(matches!(store.claim("log", "a", 10), Claim::New(_)));
        assert!(matches!(store.claim("log", "d", 10), Claim::Replay(_)));
    }

    #[test]
    fn a_torn_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 0).unwrap();
        done(&store, "a", 1, 0);
        done(&store, "b", 2, 0);
        drop(store);
        let path = dir.path().join("idempotency.log");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let store = Idempotency::open(dir.path(), 600_000, 100, 1 << 20, 0).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("retry-7f3a").is_ok());
        for bad in ["", "has space", &"k".repeat(257), "tab\t"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
