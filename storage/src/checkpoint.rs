//! The log's checkpoint file: how much of each shard is known to be on disk.
//!
//! Two slots of `format::checkpoint_slot_len` bytes; each write goes to the older slot and is
//! followed by `fdatasync`, so one valid slot survives any torn write, and the valid slot with
//! the higher generation is current. A checkpoint is taken only after flushing what it claims:
//! for each shard, every segment older than the recorded one entirely, and the recorded one up
//! to `durable_len`. Recovery uses it to tell corruption (bad bytes that were on disk) from a
//! torn tail (bytes that never were), see `recovery::Known`.
//!
//! What it is not: a write-ahead log. Commits never wait for it; it lags by up to
//! `checkpoint_interval_ms`.

use crate::error::{Result, StorageError};
use crate::format::{self, Checkpoint, CheckpointEntry};
use crate::recovery::Known;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The open checkpoint file of a log.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    path: PathBuf,
    file: File,
    shards: usize,
    generation: u64,
    last: Vec<CheckpointEntry>,
}

impl CheckpointFile {
    /// Opens (creating if needed) `dir/checkpoint`; returns it with the current checkpoint.
    pub(crate) fn open(dir: &Path, shards: usize) -> Result<(CheckpointFile, Option<Checkpoint>)> {
        let path = dir.join("checkpoint");
        let slot = format::checkpoint_slot_len(shards);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io("open checkpoint", &path, e))?;
        let current = read_slots(&file, &path, shards)?;
        if !existed {
            file.set_len(2 * slot as u64)
                .map_err(|e| StorageError::io("size checkpoint", &path, e))?;
            crate::fio::run(crate::fio::Op::Sync, &path, || file.sync_all())
                .map_err(|e| StorageError::io("fsync checkpoint", &path, e))?;
            crate::segment::sync_dir(dir)?;
        }
        let generation = current.as_ref().map_or(0, |c| c.generation);
        let last = current.as_ref().map_or_else(Vec::new, |c| c.shards.clone());
        Ok((CheckpointFile { path, file, shards, generation, last }, current))
    }

    /// Writes `entries` (one per shard) as the next checkpoint unless nothing changed. The
    /// caller has flushed everything they claim.
    pub(crate) fn write(&mut self, entries: Vec<CheckpointEntry>) -> Result<()> {
        assert_eq!(entries.len(), self.shards);
        if entries == self.last {
            return Ok(());
        }
        let generation = self.generation + 1;
        let bytes = format::encode_checkpoint(&Checkpoint { generation, shards: entries.clone() });
        let at = (generation % 2) * bytes.len() as u64;
        let (file, path) = (&self.file, &self.path);
        crate::fio::write(path, &bytes, |b| file.write_all_at(b, at))
            .map_err(|e| StorageError::io("write checkpoint", path, e))?;
        crate::fio::run(crate::fio::Op::Sync, path, || file.sync_data())
            .map_err(|e| StorageError::io("fdatasync checkpoint", path, e))?;
        self.generation = generation;
        self.last = entries;
        Ok(())
    }
}

/// The current checkpoint in `dir` without changing anything (`Log::open_read_only`): `None`
/// when there is no file or no valid slot.
pub(crate) fn read_only(dir: &Path, shards: usize) -> Result<Option<Checkpoint>> {
    let path = dir.join("checkpoint");
    match File::open(&path) {
        Ok(file) => read_slots(&file, &path, shards),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("open checkpoint", &path, e)),
    }
}

/// Decodes both slots of an open checkpoint file (missing bytes read as zero); the valid slot
/// with the higher generation is current.
fn read_slots(file: &File, path: &Path, shards: usize) -> Result<Option<Checkpoint>> {
    let slot = format::checkpoint_slot_len(shards);
    let mut bytes = vec![0u8; 2 * slot];
    let len =
        file.metadata().map_err(|e| StorageError::io("stat checkpoint", path, e))?.len() as usize;
    let readable = len.min(bytes.len());
    file.read_exact_at(&mut bytes[..readable], 0)
        .map_err(|e| StorageError::io("read checkpoint", path, e))?;
    // An invalid slot is a torn write or a never-written slot; the other one stands.
    Ok(bytes
        .chunks(slot)
        .filter_map(|b| format::decode_checkpoint(b, shards).ok())
        .max_by_key(|c| c.generation))
}

/// What `checkpoint` says is on disk of segment `seq` of a shard.
pub(crate) fn known(entry: Option<&CheckpointEntry>, seq: u64) -> Known {
    match entry {
        Some(e) if e.seq > seq => Known::Whole,
        Some(e) if e.seq == seq => Known::Prefix(e.durable_len as usize),
        _ => Known::Nothing,
    }
}
