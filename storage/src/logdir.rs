//! A log directory's own files: its `LOCK` (taken exclusive by a writing open, shared by a
//! read-only one) and its `log.meta` (read, checked against the options, written atomically).
//!
//! What it is not: the shards, the checkpoint or the journal (`log`, `create`, `checkpoint`,
//! `txn`); creating a log whole (`create`).

use crate::error::{Result, StorageError};
use crate::format::{self, LogMeta};
use crate::options::LogOptions;
use crate::segment;
use std::fs::{File, OpenOptions};

use std::path::Path;

/// How long opening waits for a log's lock before answering `Locked`: a lock can be held for
/// an instant after its log closed, by a child process forked meanwhile (anywhere in this
/// process) that has not reached `exec`, which closes its copy of the descriptor.
const LOCK_WAIT_MS: u64 = 1_000;

pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open lock file", &path, e))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(StorageError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::io("lock", &path, e)),
        }
    }
}

/// Takes the log's lock shared (for [`Log::open_read_only`]): other inspectors may hold it
/// too, a writing open (exclusive) may not. The lock file must exist: it is not created.
pub(crate) fn lock_dir_shared(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let f = File::open(&path).map_err(|e| StorageError::io("open lock file", &path, e))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS);
    loop {
        match f.try_lock_shared() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(StorageError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::io("lock", &path, e)),
        }
    }
}

pub(crate) fn load_or_create_meta(dir: &Path, opts: &LogOptions) -> Result<LogMeta> {
    let path = dir.join("log.meta");
    let wanted = LogMeta {
        shards: opts.shards,
        created_ms: opts.clock.now_ms(),
        max_age_ms: opts.retention.max_age_ms.unwrap_or(0),
        max_bytes: opts.retention.max_bytes.unwrap_or(0),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored = format::decode_meta(&bytes).map_err(|reason| StorageError::Corrupt {
                segment: path.clone(),
                offset: 0,
                reason,
            })?;
            if stored.shards != opts.shards {
                return Err(StorageError::ShardCountMismatch {
                    stored: stored.shards,
                    requested: opts.shards,
                });
            }
            let current = LogMeta { created_ms: stored.created_ms, ..wanted };
            if current != stored {
                write_meta(dir, &path, &current)?;
            }
            Ok(current)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_meta(dir, &path, &wanted)?;
            Ok(wanted)
        }
        Err(e) => Err(StorageError::io("read log metadata", &path, e)),
    }
}

/// Writes the metadata file atomically: temporary file, fsync, rename, fsync directory.
pub(crate) fn write_meta(dir: &Path, path: &Path, meta: &LogMeta) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join("log.meta.tmp");
    let mut f = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    crate::fio::write(&tmp, &format::encode_meta(meta), |b| f.write_all(b))
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    crate::fio::run(crate::fio::Op::Sync, &tmp, || f.sync_all())
        .map_err(|e| StorageError::io("fsync", &tmp, e))?;
    crate::fio::rename(&tmp, path).map_err(|e| StorageError::io("rename", &tmp, e))?;
    segment::sync_dir(dir)
}
