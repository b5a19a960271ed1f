//! Retention: retiring whole sealed segments beyond a log's `max_age` or `max_bytes`, and
//! recycling their files (or deleting them, beyond `recycle_files_max`) once no reader holds
//! them. Runs on the maintenance thread, or when asked through `Log::apply_retention`.
//!
//! What it is not: a cursor policy. A reader behind what retention kept finds the next
//! retained commit; telling the client (`410 cursor_expired`) is the service's job.

use crate::error::{Result, StorageError};
use crate::inner::LogInner;
use crate::options::Retention;
use crate::segment::{self, Segment};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl LogInner {
    /// Removes whole sealed segments beyond the limits from their shards' lists.
    pub(crate) fn apply_retention(&self, now_ms: u64) -> Result<usize> {
        let Retention { max_age_ms, max_bytes } = self.retention();
        if max_age_ms.is_none() && max_bytes.is_none() {
            return Ok(0);
        }
        // Sealed segments of all shards, oldest last commit first.
        let mut sealed: Vec<(u128, usize, Arc<Segment>)> = Vec::new();
        let mut total: u64 = 0;
        for (i, shard) in self.shards.iter().enumerate() {
            for s in shard.segments.load().iter() {
                total += s.data_bytes();
                if let Some(last) = s.sealed_last_id() {
                    sealed.push((last, i, Arc::clone(s)));
                } else if s.is_sealed() {
                    sealed.push((0, i, Arc::clone(s)));
                }
            }
        }
        sealed.sort_by_key(|(last, _, s)| (*last, s.seq));
        let cutoff_ms = max_age_ms.map(|age| now_ms.saturating_sub(age));
        let mut doomed = Vec::new();
        for (last, i, seg) in sealed {
            let too_old = cutoff_ms.is_some_and(|c| ((last >> 80) as u64) < c);
            let too_big = max_bytes.is_some_and(|m| total > m);
            if !(too_old || too_big) {
                break;
            }
            total -= seg.data_bytes();
            doomed.push((i, seg));
        }
        let n = doomed.len();
        for (i, seg) in doomed {
            let shard = &self.shards[i];
            let _guard = shard.list_lock.lock().unwrap_or_else(|p| p.into_inner());
            let list: Vec<_> =
                shard.segments.load().iter().filter(|s| !Arc::ptr_eq(s, &seg)).cloned().collect();
            shard.segments.store(Arc::new(list));
            self.retired.lock().unwrap_or_else(|p| p.into_inner()).push(seg);
        }
        Ok(n)
    }

    /// Recycles (or deletes, beyond `recycle_files_max`) retired segments no reader holds.
    pub(crate) fn recycle_retired(&self) {
        let free: Vec<Arc<Segment>> = {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            let (free, busy): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(|s| Arc::strong_count(s) == 1);
            *retired = busy;
            free
        };
        for seg in free {
            let path = seg.path.clone();
            drop(seg); // unmaps
            if let Err(e) = self.retire_file(&path) {
                self.background_error(e);
            }
        }
    }

    /// Moves a file no longer mapped by anyone into the recycle pool, or deletes it.
    fn retire_file(&self, path: &Path) -> Result<()> {
        let mut pool = self.recycle.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.opts.recycle_files_max {
            let n = self.recycle_seq.fetch_add(1, Ordering::Relaxed);
            let recycle_dir = self.dir.join("recycle");
            let to = recycle_dir.join(segment::file_name(n));
            crate::fio::rename(path, &to)
                .map_err(|e| StorageError::io("recycle segment", path, e))?;
            segment::sync_dir(&recycle_dir)?;
            pool.push(to);
        } else {
            std::fs::remove_file(path).map_err(|e| StorageError::io("delete segment", path, e))?;
        }
        if let Some(parent) = path.parent() {
            segment::sync_dir(parent)?;
        }
        Ok(())
    }
}
