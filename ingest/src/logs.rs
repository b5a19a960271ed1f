//! The registry of logs: names, settings, the open `storage::Log`s, and where each commit of a
//! request goes (its shard, and so its writer).
//!
//! Layout: `{data_dir}/logs/{name}/` is one `storage::Log`. A log's shard count is fixed at
//! creation; retention can change. Routing: a keyed commit goes to shard
//! `fnv1a64(key) % shards` (FNV-1a, 64-bit, offset basis 0xcbf29ce484222325, prime
//! 0x100000001b3 — stable forever: it decides where data lives); the unkeyed commits of a
//! request go together to one shard, chosen among the shards owned by the writer of the core the
//! request runs on (so the common path needs no cross-core handoff), moving on to the next such
//! shard every `UNKEYED_ROTATE_COMMITS` unkeyed commits: shards fill evenly by volume, and a run
//! of small `sync` requests lands on one shard, so one fdatasync acknowledges the whole burst.
//!
//! Recovery at start opens every log it finds on its own: a log that fails to open is logged,
//! left out and remembered (`Registry::failed`), and every other log opens and serves. A log is
//! created whole or not at all (`storage::Log::open` builds it in a sibling `.{name}.creating`
//! and renames it into place), so a failed creation leaves no directory a restart could take for
//! a log; a `.{name}.creating` left by a crash is removed at start.
//!
//! What it is not: the writers (`writers`) or HTTP (`api`).

use crate::body::Batch;
use crate::writers::Writers;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use storage::{Log, LogOptions, Retention};

/// Longest log name.
pub const LOG_NAME_BYTES_MAX: usize = 128;

/// Whether `name` is a valid log name: `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= LOG_NAME_BYTES_MAX
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The shard of a key: `fnv1a64(key) % shards`.
pub fn shard_of_key(key: &[u8], shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards as u64) as u32
}

/// An open log.
#[derive(Debug)]
pub struct LogEntry {
    /// Process-local id (writers key their shards by it).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The storage.
    pub log: Log,
    /// Its metric label's live counters.
    pub metrics: crate::metrics::LogMetrics,
    /// Unkeyed commits routed so far: they go to one shard for `UNKEYED_ROTATE_COMMITS`, then
    /// to the next.
    unkeyed: AtomicUsize,
    /// Set (once, for good) when the log is deleted: its tails end and its hub stops.
    deleted: tokio::sync::watch::Sender<bool>,
}

impl LogEntry {
    /// Whether the log was deleted (readers that still hold it should let it go).
    pub fn is_deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    /// Changes to `true` when the log is deleted.
    pub fn deleted(&self) -> tokio::sync::watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Shard count.
    pub fn shards(&self) -> u32 {
        self.log.shards().len() as u32
    }

    /// Splits a batch by shard: `(shard, indices of its commits in request order)`, ordered by
    /// shard. `cpu` is the core the request runs on.
    pub fn plan(&self, batch: &Batch, writers: usize, cpu: usize) -> BTreeMap<u32, Vec<u32>> {
        let shards = self.shards();
        let mut parts: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut unkeyed_shard = None;
        for (i, c) in batch.commits.iter().enumerate() {
            let shard = match batch.key(c) {
                Some(k) => shard_of_key(k, shards),
                None => *unkeyed_shard.get_or_insert_with(|| {
                    let unkeyed = batch.commits[i..].iter().filter(|c| !c.has_key()).count();
                    self.local_shard(writers, cpu, unkeyed)
                }),
            };
            parts.entry(shard).or_default().push(i as u32);
        }
        parts
    }

    /// The shard for `unkeyed` commits: among those the writer of `cpu` owns (all shards if it
    /// owns none), the next one every `UNKEYED_ROTATE_COMMITS` unkeyed commits of the log.
    fn local_shard(&self, writers: usize, cpu: usize, unkeyed: usize) -> u32 {
        let before = self.unkeyed.fetch_add(unkeyed, Ordering::Relaxed);
        rotated_shard(self.shards() as usize, writers, cpu, before)
    }
}

/// Unkeyed commits a log sends to one shard before the next (see the module docs).
pub const UNKEYED_ROTATE_COMMITS: usize = 1024;

/// The shard for unkeyed commits when `before` unkeyed commits of the log came earlier: the
/// `before / UNKEYED_ROTATE_COMMITS`-th, cyclically, of those the writer of `cpu` owns.
fn rotated_shard(shards: usize, writers: usize, cpu: usize, before: usize) -> u32 {
    let w = cpu % writers;
    let owned = if w < shards { (shards - w).div_ceil(writers) } else { 0 };
    let n = before / UNKEYED_ROTATE_COMMITS;
    if owned == 0 {
        return (n % shards) as u32;
    }
    (w + (n % owned) * writers) as u32
}

/// Settings a log is created or updated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Shard count.
    pub shards: u32,
    /// Retention.
    pub retention: Retention,
}

/// What `create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new log.
    New,
    /// It existed with the same shard count (retention updated if given).
    Existing,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The log exists with another shard count.
    #[error("log exists with {shards} shards")]
    ShardMismatch {
        /// Its shard count.
        shards: u32,
    },
    /// The log is on disk but failed to open at start (the server log says why).
    #[error("log failed to open at start: {reason}")]
    FailedToOpen {
        /// The error it failed with.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

impl RegistryError {
    /// The API error for this failure on log `name` (`requested` shards).
    pub fn into_api(self, name: &str, requested: u32) -> crate::error::ApiError {
        match self {
            RegistryError::ShardMismatch { shards } => {
                crate::error::ApiError::LogExists { log: name.to_owned(), shards, requested }
            }
            RegistryError::FailedToOpen { .. } => crate::error::ApiError::Unavailable {
                reason: "this log failed to open when the server started; see the server log",
                retry_after_s: 60,
            },
            RegistryError::Storage(s) => s.into(),
        }
    }
}

/// All logs of a data directory.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    logs: RwLock<HashMap<String, Arc<LogEntry>>>,
    /// Logs on disk that failed to open at start, with the error: never opened or created over.
    failed: RwLock<HashMap<String, String>>,
    next_id: AtomicU64,
    opts: LogOptions,
    metrics: Arc<crate::metrics::Metrics>,
    /// The idempotency records, a participant of every log's keyed transactions.
    idempotency: Arc<crate::idempotency::Idempotency>,
    /// Serialises creation and deletion (never on the write path of existing logs).
    admin: std::sync::Mutex<()>,
}

impl Registry {
    /// A registry over `{data_dir}/logs` with these storage options (shards and retention are
    /// per log); each log gets its metric label from `metrics`.
    pub fn new(
        data_dir: &std::path::Path,
        opts: LogOptions,
        metrics: Arc<crate::metrics::Metrics>,
        idempotency: Arc<crate::idempotency::Idempotency>,
    ) -> std::io::Result<Registry> {
        let dir = data_dir.join("logs");
        storage::create_dir_durable(&dir)?;
        Ok(Registry {
            dir,
            logs: RwLock::new(HashMap::new()),
            failed: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            opts,
            metrics,
            idempotency,
            admin: std::sync::Mutex::new(()),
        })
    }

    /// Opens every log found on disk (recovery), handing the writers to `writers`, and
    /// returns how many opened. A log that fails to open is logged and left out (see
    /// [`Registry::failed`]); only failing to list the logs is an error. Blocking.
    pub fn open_existing(&self, writers: &Writers) -> Result<usize, RegistryError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| storage::StorageError::Io {
                op: "list logs",
                path: self.dir.clone(),
                source: e,
            })?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut n = 0;
        for name in names {
            if let Some(log) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".creating")) {
                // A creation a crash interrupted: it never became a log.
                let path = self.dir.join(&name);
                tracing::warn!(log, path = %path.display(), "removing an unfinished log creation");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::error!(log, error = %e, "cannot remove an unfinished log creation");
                }
                continue;
            }
            if !valid_name(&name) {
                continue;
            }
            match self.open_stored(&name, writers) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(log = name, error = %e, "log failed to open; left out, the other logs serve");
                    self.failed
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name, e.to_string());
                }
            }
        }
        Ok(n)
    }

    /// Opens log `name` with the settings stored on disk; `false` if it holds no log.
    fn open_stored(&self, name: &str, writers: &Writers) -> Result<bool, RegistryError> {
        let Some(meta) = Log::stored_meta(self.dir.join(name))? else { return Ok(false) };
        let retention = Retention {
            max_age_ms: (meta.max_age_ms > 0).then_some(meta.max_age_ms),
            max_bytes: (meta.max_bytes > 0).then_some(meta.max_bytes),
        };
        self.open_log(name, LogSettings { shards: meta.shards, retention }, writers)?;
        Ok(true)
    }

    /// Why log `name`, on disk, failed to open at start (`None` if it did not fail).
    pub fn failed(&self, name: &str) -> Option<String> {
        self.failed.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The log named `name`, if open.
    pub fn get(&self, name: &str) -> Option<Arc<LogEntry>> {
        self.logs.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// All open logs, by name.
    pub fn list(&self) -> Vec<Arc<LogEntry>> {
        let mut v: Vec<_> =
            self.logs.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates `name` with `settings`, or returns the existing one — refusing it when
    /// `check_shards` and its shard count differs, and updating its retention when
    /// `update_retention`. Blocking (creates files).
    pub fn create(
        &self,
        name: &str,
        settings: LogSettings,
        check_shards: bool,
        update_retention: bool,
        writers: &Writers,
    ) -> Result<(Arc<LogEntry>, Created), RegistryError> {
        let _admin = crate::lock(&self.admin);
        if let Some(reason) = self.failed(name) {
            // Opening it again with the request's settings would rewrite what is stored.
            return Err(RegistryError::FailedToOpen { reason });
        }
        if let Some(e) = self.get(name) {
            if check_shards && e.shards() != settings.shards {
                return Err(RegistryError::ShardMismatch { shards: e.shards() });
            }
            if update_retention {
                e.log.set_retention(settings.retention)?;
            }
            return Ok((e, Created::Existing));
        }
        Ok((self.open_log(name, settings, writers)?, Created::New))
    }

    fn open_log(
        &self,
        name: &str,
        settings: LogSettings,
        writers: &Writers,
    ) -> Result<Arc<LogEntry>, RegistryError> {
        let opts = LogOptions {
            shards: settings.shards,
            retention: settings.retention,
            external: self.idempotency.holder(name),
            ..self.opts.clone()
        };
        let (log, shard_writers, report) = Log::open_with_report(self.dir.join(name), opts)?;
        // A keyed request whose transaction recovery aborted never wrote: its retry must.
        self.idempotency
            .forget_aborted(name, |txn| log.txns().visibility(txn) == storage::Visibility::Aborted);
        for (segment, offset, reason) in &report.torn_tails {
            tracing::warn!(log = name, segment = %segment.display(), offset, reason, "recovery cut a torn tail");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for (i, w) in shard_writers.into_iter().enumerate() {
            writers.adopt(id, i as u32, w);
        }
        let entry = Arc::new(LogEntry {
            id,
            name: name.to_owned(),
            log,
            metrics: self.metrics.log(name),
            unkeyed: AtomicUsize::new(fastrand::usize(..)),
            deleted: tokio::sync::watch::channel(false).0,
        });
        self.logs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Arc::clone(&entry));
        Ok(entry)
    }

    /// Deletes `name`: tells its readers (tails end, its hub stops), stops its writers (after
    /// their queued work), closes it (`Log::close`, even while readers still hold it), removes
    /// its files. Blocking. `false` if it did not exist.
    pub fn delete(&self, name: &str, writers: &Writers) -> Result<bool, RegistryError> {
        let _admin = crate::lock(&self.admin);
        let Some(entry) = self.logs.write().unwrap_or_else(|p| p.into_inner()).remove(name) else {
            return Ok(false);
        };
        entry.deleted.send_replace(true);
        writers.release(entry.id);
        // Its maintenance thread and retention address files by path: they stop before the
        // directory goes, so they never reach a log created again under this name.
        entry.log.close();
        // Readers still holding the entry keep its mappings alive; the files go now (unlinking a
        // mapped file is safe: the pages stay until the last mapping goes).
        let dir = entry.log.dir().to_owned();
        drop(entry);
        std::fs::remove_dir_all(&dir).map_err(|e| storage::StorageError::Io {
            op: "delete log",
            path: dir.clone(),
            source: e,
        })?;
        Ok(true)
    }

    /// Closes every log (after the writers stopped): final flush and checkpoint.
    pub fn close_all(&self) {
        self.logs.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    //! Routing is part of the data layout: pin it.
    use super::*;

    #[test]
    fn key_routing_is_stable() {
        assert_eq!(shard_of_key(b"", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u32);
        assert_eq!(shard_of_key(b"user-1", 16), shard_of_key(b"user-1", 16));
        let spread: std::collections::HashSet<u32> =
            (0..1000).map(|i| shard_of_key(format!("k{i}").as_bytes(), 8)).collect();
        assert_eq!(spread.len(), 8);
    }

    #[test]
    fn unkeyed_commits_rotate_by_volume_over_the_local_writers_shards() {
        let r = UNKEYED_ROTATE_COMMITS;
        // 8 shards, 2 writers: writer 1 owns 1, 3, 5, 7.
        assert_eq!(rotated_shard(8, 2, 1, 0), 1);
        assert_eq!(rotated_shard(8, 2, 3, r - 1), 1, "single commits stay on one shard");
        assert_eq!(rotated_shard(8, 2, 1, r), 3);
        assert_eq!(rotated_shard(8, 2, 1, 3 * r), 7);
        assert_eq!(rotated_shard(8, 2, 1, 4 * r), 1, "and wrap around");
        assert_eq!(rotated_shard(8, 2, 0, 5 * r), 2);
        // A writer that owns none of the log's shards: all of them in turn.
        assert_eq!(rotated_shard(2, 4, 3, 0), 0);
        assert_eq!(rotated_shard(2, 4, 3, r), 1);
        // Shards fill evenly by volume.
        let mut fill = [0usize; 8];
        for i in 0..64 * r {
            fill[rotated_shard(8, 2, i % 2, i) as usize] += 1;
        }
        assert!(fill.iter().all(|&f| f == 8 * r), "{fill:?}");
    }

    #[test]
    fn names() {
        for ok in ["a", "0", "orders.v2", "a_b-c", &"x".repeat(128)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "A", "-a", ".a", "a/b", "a b", &"x".repeat(129), "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
