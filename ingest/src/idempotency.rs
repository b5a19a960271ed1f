//! Idempotency keys: the first response to a request with `Idempotency-Key` is kept for
//! `idempotency_ttl_ms` (10 minutes), durably, and a repeat gets it back with
//! `"duplicate": true` without writing anything.
//!
//! In memory a key is `InFlight` while its first request runs — a concurrent duplicate waits
//! for it rather than writing twice — then `Done`. On disk, `{data_dir}/idempotency.log` is an
//! append-only file of CRC32C-checked records written after the commits and before the answer
//! (fdatasync'd for `sync` writes); it is read back at start (a torn last record is cut) and
//! rewritten without expired entries when it grows past `IDEMPOTENCY_FILE_BYTES_MAX`.
//!
//! Limits: keys by count (`idempotency_keys_max`) and bytes (`idempotency_bytes_max`); past
//! them the oldest finished keys are evicted early (counted). What it is not exact about: a crash
//! after the commits were written but before their record was, followed by a retry, writes the
//! commits again (the record is not part of the commits' own atomic append).

use bytes::Bytes;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// The file is compacted when it grows past this.
pub const IDEMPOTENCY_FILE_BYTES_MAX: u64 = 64 << 20;
/// Longest key accepted.
pub const KEY_BYTES_MAX: usize = 256;

type Id = (String, String); // (log, key)

#[derive(Debug)]
enum Slot {
    InFlight(watch::Receiver<()>),
    Done { at_ms: u64, response: Bytes },
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
    file: Mutex<File>,
    path: PathBuf,
    ttl_ms: u64,
    keys_max: usize,
    bytes_max: usize,
    /// Keys evicted before their time because of the limits.
    pub evictions: AtomicU64,
    /// Repeats answered from the store.
    pub replays: AtomicU64,
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
        let store = Idempotency {
            state: Mutex::new(State::default()),
            file: Mutex::new(OpenOptions::new().create(true).append(true).open(&path)?),
            path,
            ttl_ms,
            keys_max,
            bytes_max,
            evictions: AtomicU64::new(0),
            replays: AtomicU64::new(0),
        };
        {
            let mut st = crate::lock(&store.state);
            for (at_ms, id, response) in records {
                if at_ms + ttl_ms > now_ms {
                    store.insert_done(&mut st, id, at_ms, response);
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
            Some(Slot::Done { at_ms, response }) if at_ms + self.ttl_ms > now_ms => {
                self.replays.fetch_add(1, Ordering::Relaxed);
                let mut v: Value = serde_json::from_slice(response).unwrap_or(Value::Null);
                v["duplicate"] = Value::Bool(true);
                Claim::Replay(v)
            }
            Some(Slot::InFlight(rx)) => Claim::Wait(rx.clone()),
            _ => {
                let (tx, rx) = watch::channel(());
                if let Some(Slot::Done { response, .. }) = st.slots.insert(id, Slot::InFlight(rx)) {
                    st.bytes -= response.len();
                }
                Claim::New(tx)
            }
        }
    }

    /// Records the first response of `key` (durably, synced when `sync`) and releases waiters.
    /// Blocking (file I/O).
    pub fn complete(
        &self,
        log: &str,
        key: &str,
        response: &Value,
        sync: bool,
        now_ms: u64,
        done: watch::Sender<()>,
    ) -> std::io::Result<()> {
        let id = (log.to_owned(), key.to_owned());
        let bytes = Bytes::from(serde_json::to_vec(response).expect("a JSON value serialises"));
        // File and memory change under the file lock together, so a compaction (which holds
        // it too) never rewrites the file without a record that was just appended.
        let mut f = crate::lock(&self.file);
        let written = append(&mut f, &encode(now_ms, &id, &bytes), sync);
        let mut st = crate::lock(&self.state);
        match &written {
            Ok(_) => self.insert_done(&mut st, id, now_ms, bytes),
            Err(_) => {
                st.slots.remove(&id);
            }
        }
        drop(st);
        drop(done);
        let compact = matches!(written, Ok(len) if len > IDEMPOTENCY_FILE_BYTES_MAX);
        if compact {
            self.compact_locked(&mut f)?;
        }
        written.map(|_| ())
    }

    /// Forgets an in-flight key whose request failed (nothing was written): a retry runs anew.
    pub fn abandon(&self, log: &str, key: &str, done: watch::Sender<()>) {
        let id = (log.to_owned(), key.to_owned());
        let mut st = crate::lock(&self.state);
        if matches!(st.slots.get(&id), Some(Slot::InFlight(_))) {
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

    fn insert_done(&self, st: &mut State, id: Id, at_ms: u64, response: Bytes) {
        st.bytes += response.len();
        st.order.push_back((at_ms, id.clone()));
        if let Some(Slot::Done { response: old, .. }) =
            st.slots.insert(id, Slot::Done { at_ms, response })
        {
            st.bytes -= old.len();
        }
        // Expired first, then (over the limits) the oldest.
        while let Some((at, oldest)) = st.order.front().cloned() {
            let expired = at + self.ttl_ms <= at_ms;
            let over = st.order.len() > self.keys_max || st.bytes > self.bytes_max;
            if !expired && !over {
                break;
            }
            st.order.pop_front();
            if let Some(Slot::Done { at_ms: a, response }) = st.slots.get(&oldest)
                && *a == at
            {
                st.bytes -= response.len();
                st.slots.remove(&oldest);
                if !expired {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Rewrites the file with the live finished keys: temporary file, fsync, rename.
    fn compact(&self) -> std::io::Result<()> {
        let mut f = crate::lock(&self.file);
        self.compact_locked(&mut f)
    }

    fn compact_locked(&self, f: &mut File) -> std::io::Result<()> {
        let records: Vec<Vec<u8>> = {
            let st = crate::lock(&self.state);
            // Oldest first, so that a reload evicts in the same order.
            let mut done: Vec<(u64, &Id, &Bytes)> = st
                .slots
                .iter()
                .filter_map(|(id, s)| match s {
                    Slot::Done { at_ms, response } => Some((*at_ms, id, response)),
                    Slot::InFlight(_) => None,
                })
                .collect();
            done.sort_by_key(|d| d.0);
            done.into_iter().map(|(at, id, r)| encode(at, id, r)).collect()
        };
        let tmp = self.path.with_extension("log.tmp");
        let mut out = File::create(&tmp)?;
        for r in &records {
            out.write_all(r)?;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        *f = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

/// Appends a record; returns the file's new length.
fn append(f: &mut File, record: &[u8], sync: bool) -> std::io::Result<u64> {
    f.write_all(record)?;
    if sync {
        f.sync_data()?;
    }
    Ok(f.metadata()?.len())
}

/// Record: `u32` length of what follows the CRC, `u32` CRC32C of it, `u64` at_ms, `u16` log
/// length, log, `u16` key length, key, response JSON. Little-endian.
fn encode(at_ms: u64, id: &Id, response: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + id.0.len() + id.1.len() + response.len());
    body.extend_from_slice(&at_ms.to_le_bytes());
    for part in [id.0.as_bytes(), id.1.as_bytes()] {
        body.extend_from_slice(&(part.len() as u16).to_le_bytes());
        body.extend_from_slice(part);
    }
    body.extend_from_slice(response);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(b: &[u8]) -> Option<((u64, Id, Bytes), usize)> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let body = b.get(8..8 + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let at_ms = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let mut at = 8;
    let mut parts = Vec::new();
    for _ in 0..2 {
        let n = u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize;
        parts.push(String::from_utf8(body.get(at + 2..at + 2 + n)?.to_vec()).ok()?);
        at += 2 + n;
    }
    let key = parts.pop()?;
    let log = parts.pop()?;
    Some(((at_ms, (log, key), Bytes::copy_from_slice(body.get(at..)?)), 8 + len))
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
                true,
                now,
                tx,
            )
            .unwrap();
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
