//! Creating a log whole or not at all: its files and directories (`LOCK`, `log.meta`,
//! `checkpoint`, `txn.journal` with its header, `shards/NNNNN/`, `recycle/`) are built in a
//! sibling directory ([`creating_path`]), every directory fsynced in its parent, then
//! renamed into place and the parent fsynced. `Log::open` then opens it, which makes the first
//! segments, and removes it if that fails.
//!
//! What it is not: opening (`log`); the first segments are made there, as for any shard without
//! segments, so a new log is never scanned by recovery.

use crate::checkpoint::CheckpointFile;
use crate::error::{Result, StorageError};
use crate::logdir::{load_or_create_meta, lock_dir};
use crate::options::LogOptions;
use crate::segment;
use crate::txn::Txns;
use std::path::Path;

/// Creates the log of `dir` whole (see the module docs): builds its files and directories at
/// [`creating_path`] (`LOCK`, `log.meta`, `checkpoint`, `txn.journal` with its header,
/// `shards/NNNNN/`, `recycle/`; the first segments are made by the open that follows, as at
/// any open of a shard without segments), renames it to `dir` (replacing an empty directory
/// there) and fsyncs the parent. On failure it removes the directory it was building.
pub(crate) fn create(dir: &Path, opts: &LogOptions) -> Result<()> {
    let tmp = creating_path(dir).ok_or_else(|| StorageError::InvalidOption {
        name: "dir",
        reason: format!("{} names no directory", dir.display()),
    })?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::create_dir_durable(parent)
        .map_err(|e| StorageError::io("create log parent directory", parent, e))?;
    match std::fs::remove_dir_all(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("remove unfinished log", &tmp, e)),
    }
    let built = (|| {
        build(&tmp, opts)?;
        std::fs::rename(&tmp, dir)
            .map_err(|e| StorageError::io("rename new log into place", dir, e))
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    segment::sync_dir(parent)
}

/// Writes a new log's files and directories into `dir` (see [`create`]).
fn build(dir: &Path, opts: &LogOptions) -> Result<()> {
    crate::create_dir_durable(dir).map_err(|e| StorageError::io("create log directory", dir, e))?;
    let _lock = lock_dir(dir)?;
    let meta = load_or_create_meta(dir, opts)?;
    let shards = meta.shards as usize;
    drop(CheckpointFile::open(dir, shards)?);
    // Recovery of an empty journal writes its header.
    let txns = Txns::load(dir, shards, false)?;
    txns.recover(|_| Ok(Default::default()), &crate::txn::NoExternal, |_, _, _| Ok(false))?;
    for i in 0..meta.shards {
        let shard_dir = dir.join("shards").join(format!("{i:05}"));
        crate::create_dir_durable(&shard_dir)
            .map_err(|e| StorageError::io("create shard directory", &shard_dir, e))?;
    }
    let recycle_dir = dir.join("recycle");
    crate::create_dir_durable(&recycle_dir)
        .map_err(|e| StorageError::io("create directory", &recycle_dir, e))
}

/// Where a new log for `dir` is built before it is renamed to `dir`: `.{name}.creating` next
/// to it (a name no log has: log names start with a letter or digit). `None` if `dir` has no
/// file name.
pub(crate) fn creating_path(dir: &Path) -> Option<std::path::PathBuf> {
    let name = dir.file_name()?.to_string_lossy();
    Some(dir.with_file_name(format!(".{name}.creating")))
}
