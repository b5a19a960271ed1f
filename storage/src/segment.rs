//! One segment file: creation (preallocated), opening with recovery, sealing.
//!
//! A segment is a fixed-size file named `{seq:020}.seg` in its shard's directory: a header,
//! then 8-byte-aligned frames, then, once sealed, a seal frame (the footer) holding the count,
//! the ULID range and the sparse index. Files are created under a temporary name, preallocated
//! with `fallocate`, given their header, fsynced, then renamed into place and the directory
//! fsynced — so a file with a final name always has a durable header, and a full disk is an
//! error here, never a SIGBUS in a write.
//!
//! What it is not: the append path (`writer`) or the cursor (`reader`).

use crate::error::{FormatError, Result, StorageError};
use crate::format::{
    self, FRAME_HEADER_LEN, FrameLayout, FrameRef, HEADER_LEN, SegmentHeader, SegmentState, flags,
};
use crate::index::SparseIndex;
use crate::mmap::{MapWriter, MappedFile, map_read_only, map_segment};
use crate::recovery;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// A segment as readers and the maintenance thread see it.
#[derive(Debug)]
pub struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) seq: u64,
    pub(crate) tag: u32,
    pub(crate) map: Arc<MappedFile>,
    pub(crate) index: SparseIndex,
    /// Set once, before the first frame is published.
    pub(crate) first_id: OnceLock<u128>,
    /// Set once, when sealed: (last ULID, commit count).
    pub(crate) sealed: OnceLock<(u128, u64)>,
    /// Commits published (for statistics; exact once sealed).
    pub(crate) count: AtomicU64,
    /// ULID of the last commit published, as two halves: written by the writer before it
    /// publishes, read by the sealer after the writer handed the segment over.
    last_hi: AtomicU64,
    last_lo: AtomicU64,
    /// Bytes known to be on disk.
    pub(crate) flushed: AtomicUsize,
    /// Its pages were dropped from the page cache (see `LogOptions::sealed_cached_segments`).
    pub(crate) cache_dropped: std::sync::atomic::AtomicBool,
    /// An fdatasync of it failed. The kernel may have dropped the failed pages' dirty state,
    /// so a later fdatasync could succeed over lost bytes: every later sync of it fails, and its
    /// writer refuses appends, until the log is reopened (recovery then reads what is on disk).
    pub(crate) sync_failed: std::sync::atomic::AtomicBool,
    /// End of the seal frame once the writer wrote it at the roll (0 before): the flushes that
    /// follow cover it, so the seal is durable before any later segment's data can be synced.
    pub(crate) seal_frame_end: AtomicUsize,
}

/// A segment opened or created together with its writing handle.
#[derive(Debug)]
pub struct Opened {
    /// The shared side.
    pub segment: Arc<Segment>,
    /// The writing handle (`None` for a sealed segment).
    pub writer: Option<MapWriter>,
    /// Last ULID stored (for the shard's generator).
    pub last_id: Option<u128>,
    /// Where recovery cut a torn tail, if it did.
    pub torn_at: Option<(usize, FormatError)>,
    /// Its seal is on disk: the header says sealed, or the seal frame was found. A segment
    /// behind one without it holds nothing that was ever synced (`recovery::cut_behind`).
    pub seal_durable: bool,
}

/// File name of segment `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// Parses a segment file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg").filter(|s| s.len() == 20).and_then(|s| s.parse().ok())
}

/// Bytes a segment must keep free for its seal frame.
pub fn footer_reserve(segment_bytes: usize, interval_bytes: usize) -> usize {
    let entries = SparseIndex::capacity_for(segment_bytes, interval_bytes);
    format::frame_len_padded(0, format::FOOTER_FIXED_LEN + entries * format::INDEX_ENTRY_LEN, 0)
}

/// Fsyncs a directory so a created, renamed or removed entry survives a machine crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::fsync_dir(dir).map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Prepares segment `seq` of `shard` in `dir`: takes `recycled` (an old segment file) or
/// creates a new file, preallocates `segment_bytes`, writes an open header with a fresh nonce,
/// makes it durable, renames it into place, and maps it.
pub fn prepare(
    dir: &Path,
    shard: u32,
    seq: u64,
    segment_bytes: usize,
    index_interval_bytes: usize,
    created_ms: u64,
    recycled: Option<PathBuf>,
) -> Result<Opened> {
    let final_path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{}.tmp", file_name(seq)));
    if let Some(old) = recycled {
        crate::fio::rename(&old, &tmp)
            .map_err(|e| StorageError::io("rename recycled segment", &old, e))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(|e| StorageError::io("create segment", &tmp, e))?;
    preallocate(&file, &tmp, segment_bytes)?;
    let header = SegmentHeader {
        state: SegmentState::Open,
        nonce: fastnonce(seq, created_ms),
        shard,
        seq,
        created_ms,
        footer_offset: 0,
    };
    write_header_pwrite(&file, &tmp, &header)?;
    // A recycled file holds stale frames: clear the first frame's words so the new incarnation
    // starts with a clean end (the writer keeps it clean after every batch).
    {
        use std::os::unix::fs::FileExt;
        crate::fio::write(&tmp, &[0u8; 16], |b| file.write_all_at(b, HEADER_LEN as u64))
            .map_err(|e| StorageError::io("write segment", &tmp, e))?;
    }
    crate::fio::run(crate::fio::Op::Sync, &tmp, || file.sync_data())
        .map_err(|e| StorageError::io("fsync segment", &tmp, e))?;
    crate::fio::rename(&tmp, &final_path)
        .map_err(|e| StorageError::io("rename segment", &tmp, e))?;
    sync_dir(dir)?;
    // Not prefaulted: writes go through `pwrite`, which fills the page cache without faults,
    // and faulting fresh pages in first would only zero them to be overwritten.
    let (map, writer) = map_segment(file, segment_bytes, HEADER_LEN, false)
        .map_err(|e| StorageError::io("map segment", &final_path, e))?;
    let segment = Arc::new(Segment::new(
        final_path,
        seq,
        header.tag(),
        map,
        SparseIndex::new(segment_bytes, index_interval_bytes),
    ));
    segment.flushed.store(HEADER_LEN, Ordering::Relaxed);
    Ok(Opened { segment, writer: Some(writer), last_id: None, torn_at: None, seal_durable: false })
}

/// Opens an existing segment, running recovery if it is not sealed. A segment found open but
/// with a whole seal frame is completed (its header marked sealed).
pub fn open(
    path: &Path,
    shard: u32,
    seq: u64,
    segment_bytes: usize,
    index_interval_bytes: usize,
    known: recovery::Known,
) -> Result<Opened> {
    let corrupt = |offset: usize, reason: FormatError| StorageError::Corrupt {
        segment: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open segment", path, e))?;
    let (file_len, header) = checked_header(path, &file, shard, seq)?;
    if header.state == SegmentState::Sealed {
        return open_sealed(path, file, file_len, &header, index_interval_bytes, corrupt);
    }
    // An open segment may have been cut short (a torn file); give it back its full size so
    // the writer never maps past the end of the file.
    let len = file_len.max(segment_bytes);
    if len > file_len {
        preallocate(&file, path, len)?;
    }
    let (map, mut writer) = map_segment(file, len, HEADER_LEN, false)
        .map_err(|e| StorageError::io("map segment", path, e))?;
    let scan = recovery::scan_open_segment(
        writer.bytes(0, len),
        header.tag(),
        index_interval_bytes,
        known,
    )
    .map_err(|(off, e)| corrupt(off, e))?;
    if scan.dirty_end > scan.end || !scan.stale_frames.is_empty() {
        let (start, end) = (scan.end, scan.dirty_end.max(scan.end));
        let io = |e| StorageError::io("zero torn tail", path, e);
        let w = &mut writer;
        crate::fio::write(path, &vec![0u8; end - start], |b| w.write_at(start, b)).map_err(io)?;
        for &at in &scan.stale_frames {
            crate::fio::write(path, &[0u8; 16], |b| w.write_at(at, b)).map_err(io)?;
        }
        crate::fio::run(crate::fio::Op::Sync, path, || map.sync_data())
            .map_err(|e| StorageError::io("fdatasync segment", path, e))?;
    }
    let segment =
        Segment::recovered(path, seq, header.tag(), map, len, index_interval_bytes, &scan);
    writer.publish(scan.end);
    // What recovery kept may be in the page cache only (a killed process): not yet flushed.
    segment.flushed.store(HEADER_LEN, Ordering::Relaxed);
    let segment = Arc::new(segment);
    let mut writer = Some(writer);
    let seal_durable = scan.seal.is_some();
    if let Some(footer) = &scan.seal {
        // Crashed between writing the seal frame and updating the header: finish the job.
        let mut w = writer.take().expect("writer present");
        complete_seal(&segment, &mut w, footer.data_end as usize, footer.last_id)?;
    }
    Ok(Opened { segment, writer, last_id: scan.last_id, torn_at: scan.torn_at, seal_durable })
}

fn open_sealed(
    path: &Path,
    file: File,
    file_len: usize,
    header: &SegmentHeader,
    index_interval_bytes: usize,
    corrupt: impl Fn(usize, FormatError) -> StorageError,
) -> Result<Opened> {
    // Sealed: never written again, so mapped without a writing handle.
    let (map, writer) =
        map_read_only(file, file_len).map_err(|e| StorageError::io("map segment", path, e))?;
    let at = header.footer_offset as usize;
    if at < HEADER_LEN || at + FRAME_HEADER_LEN > file_len {
        return Err(corrupt(0, FormatError::BadField { field: "footer offset", value: at as u64 }));
    }
    let (frame, _) = format::decode_frame(writer.bytes(at, file_len), header.tag())
        .map_err(|e| corrupt(at, e))?;
    if frame.flags & flags::SEAL == 0 {
        return Err(corrupt(
            at,
            FormatError::BadField { field: "seal flag", value: frame.flags as u64 },
        ));
    }
    let footer = format::decode_footer(frame.payload).map_err(|e| corrupt(at, e))?;
    if footer.data_end != at as u64 {
        return Err(corrupt(
            at,
            FormatError::BadField { field: "footer data_end", value: footer.data_end },
        ));
    }
    let segment = Segment::new(
        path.to_owned(),
        header.seq,
        header.tag(),
        map,
        SparseIndex::with_capacity(footer.index.len(), index_interval_bytes),
    );
    for &(id, off) in &footer.index {
        segment.index.push(id, off);
    }
    if footer.count > 0 {
        let _ = segment.first_id.set(footer.first_id);
    }
    segment.count.store(footer.count, Ordering::Relaxed);
    let _ = segment.sealed.set((footer.last_id, footer.count));
    let mut writer = writer;
    writer.publish(at);
    drop(writer);
    segment.flushed.store(file_len, Ordering::Relaxed);
    let last = (footer.count > 0).then_some(footer.last_id);
    Ok(Opened {
        segment: Arc::new(segment),
        writer: None,
        last_id: last,
        torn_at: None,
        seal_durable: true,
    })
}

/// Opens an existing segment without changing its file (`Log::open_read_only`): the file is
/// opened and mapped read-only at its own length, an open segment is scanned as recovery would
/// and published up to its last whole batch, and a torn tail is reported in `torn_at`, not cut.
/// A segment found open with a whole seal frame is read as it is (its header not completed).
pub fn open_read_only(
    path: &Path,
    shard: u32,
    seq: u64,
    index_interval_bytes: usize,
    known: recovery::Known,
) -> Result<Opened> {
    let corrupt = |offset: usize, reason: FormatError| StorageError::Corrupt {
        segment: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let file = File::open(path).map_err(|e| StorageError::io("open segment", path, e))?;
    let (file_len, header) = checked_header(path, &file, shard, seq)?;
    if header.state == SegmentState::Sealed {
        return open_sealed(path, file, file_len, &header, index_interval_bytes, corrupt);
    }
    let (map, mut reader) =
        map_read_only(file, file_len).map_err(|e| StorageError::io("map segment", path, e))?;
    let scan = recovery::scan_open_segment(
        reader.bytes(0, file_len),
        header.tag(),
        index_interval_bytes,
        known,
    )
    .map_err(|(off, e)| corrupt(off, e))?;
    let segment =
        Segment::recovered(path, seq, header.tag(), map, file_len, index_interval_bytes, &scan);
    reader.publish(scan.end);
    // Nothing to flush: nothing was written.
    segment.flushed.store(scan.end, Ordering::Relaxed);
    Ok(Opened {
        segment: Arc::new(segment),
        writer: None,
        last_id: scan.last_id,
        torn_at: scan.torn_at,
        seal_durable: scan.seal.is_some(),
    })
}

/// Seals a segment whose writer has moved on: writes the seal frame after the published data
/// (unless the writer did at the roll), flushes data and footer, then marks the header sealed
/// and flushes it. Runs off the hot path.
pub fn seal(segment: &Segment, writer: &mut MapWriter) -> Result<()> {
    if segment.seal_frame_end.load(Ordering::Acquire) == 0 {
        write_seal_frame(segment, writer)?;
    }
    let data_end = writer.map().published();
    complete_seal(segment, writer, data_end, segment.last_id())
}

/// Writes the seal frame (the footer) after the published data, with no fdatasync: the
/// writer does it as it rolls away, so every later flush of the segment, which precedes any
/// flush of the next one, makes the seal durable with the data.
pub(crate) fn write_seal_frame(segment: &Segment, writer: &mut MapWriter) -> Result<()> {
    let data_end = writer.map().published();
    let last_id = segment.last_id();
    let room = writer.map().len() - data_end;
    let footer = format::Footer {
        count: segment.count.load(Ordering::Relaxed),
        first_id: segment.first_id.get().copied().unwrap_or(0),
        last_id,
        data_end: data_end as u64,
        index: thin_index(segment.index.entries(), room),
    };
    let payload = format::encode_footer(&footer);
    let rec = format::NewRecord::payload(&payload);
    let len = format::frame_len_padded(0, payload.len(), 0);
    let id = idgen::Ulid(last_id);
    let mut frame = vec![0u8; len];
    format::encode_frame(&mut frame, segment.tag, id, flags::SEAL, &rec);
    crate::fio::write(&segment.path, &frame, |b| writer.write_at(data_end, b))
        .map_err(|e| StorageError::io("write seal", &segment.path, e))?;
    segment.seal_frame_end.store(data_end + len, Ordering::Release);
    Ok(())
}

/// Keeps every k-th index entry so the seal frame fits into `room` bytes. The reserve kept by
/// the writer fits the whole index; an index rebuilt by recovery with a smaller
/// `index_interval_bytes` than the segment was written with may not.
fn thin_index(mut index: Vec<(u128, u64)>, room: usize) -> Vec<(u128, u64)> {
    let fixed = format::frame_len_padded(0, format::FOOTER_FIXED_LEN, 0);
    let fits = room.saturating_sub(fixed) / format::INDEX_ENTRY_LEN;
    if index.len() > fits {
        let step = index.len().div_ceil(fits.max(1));
        index = index.into_iter().step_by(step).take(fits).collect();
    }
    index
}

/// Marks the header sealed once the data and the seal frame at `data_end` are durable.
fn complete_seal(
    segment: &Segment,
    writer: &mut MapWriter,
    data_end: usize,
    last_id: u128,
) -> Result<()> {
    let map = Arc::clone(writer.map());
    segment.sync_data().map_err(|e| StorageError::io("fdatasync segment", &segment.path, e))?;
    let current = format::decode_header(writer.bytes(0, HEADER_LEN)).map_err(|e| {
        StorageError::Corrupt { segment: segment.path.clone(), offset: 0, reason: e }
    })?;
    let sealed =
        SegmentHeader { state: SegmentState::Sealed, footer_offset: data_end as u64, ..current };
    let io = |e| StorageError::io("write header", &segment.path, e);
    let header = format::encode_header(&sealed);
    crate::fio::write(&segment.path, &header, |b| {
        let whole: &[u8; HEADER_LEN] = b.try_into().map_err(|_| std::io::Error::other("torn"))?;
        writer.write_header(whole)
    })
    .map_err(io)?;
    segment.sync_data().map_err(|e| StorageError::io("fdatasync header", &segment.path, e))?;
    segment.flushed.store(map.len(), Ordering::Relaxed);
    let _ = segment.sealed.set((last_id, segment.count.load(Ordering::Relaxed)));
    Ok(())
}

impl Segment {
    /// A segment opened by recovery, from what its scan found.
    fn recovered(
        path: &Path,
        seq: u64,
        tag: u32,
        map: Arc<MappedFile>,
        len: usize,
        index_interval_bytes: usize,
        scan: &recovery::Scan,
    ) -> Segment {
        let segment = Segment::new(
            path.to_owned(),
            seq,
            tag,
            map,
            SparseIndex::new(len, index_interval_bytes),
        );
        for &(id, off) in &scan.index {
            segment.index.push(id, off);
        }
        if let Some(first) = scan.first_id {
            let _ = segment.first_id.set(first);
        }
        segment.set_last_id(scan.last_id.unwrap_or(0));
        segment.count.store(scan.count, Ordering::Relaxed);
        segment
    }

    fn new(path: PathBuf, seq: u64, tag: u32, map: Arc<MappedFile>, index: SparseIndex) -> Self {
        Segment {
            path,
            seq,
            tag,
            map,
            index,
            first_id: OnceLock::new(),
            sealed: OnceLock::new(),
            count: AtomicU64::new(0),
            last_hi: AtomicU64::new(0),
            last_lo: AtomicU64::new(0),
            flushed: AtomicUsize::new(HEADER_LEN),
            sync_failed: std::sync::atomic::AtomicBool::new(false),
            seal_frame_end: AtomicUsize::new(0),
            cache_dropped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The checked frame at `at` with `layout` (from `format::check_frame` on these bytes).
    pub(crate) fn frame(&self, at: usize, layout: &FrameLayout) -> FrameRef<'_> {
        layout.view(self.map.read(at, at + layout.padded))
    }

    /// Records the last commit's ULID (writer and recovery only).
    pub(crate) fn set_last_id(&self, id: u128) {
        self.last_hi.store((id >> 64) as u64, Ordering::Relaxed);
        self.last_lo.store(id as u64, Ordering::Relaxed);
    }

    /// The last commit's ULID as recorded by the writer (0 when empty). Exact once the writer
    /// has moved on; a concurrent reader could see halves of two different IDs.
    pub(crate) fn last_id(&self) -> u128 {
        ((self.last_hi.load(Ordering::Relaxed) as u128) << 64)
            | self.last_lo.load(Ordering::Relaxed) as u128
    }

    /// Published data bytes (header excluded).
    pub fn data_bytes(&self) -> u64 {
        (self.map.published() - HEADER_LEN) as u64
    }

    /// The ULID of the last commit, once sealed.
    pub fn sealed_last_id(&self) -> Option<u128> {
        self.sealed.get().filter(|s| s.1 > 0).map(|s| s.0)
    }

    /// Whether the segment is sealed (immutable and durable).
    pub fn is_sealed(&self) -> bool {
        self.sealed.get().is_some()
    }

    /// Makes every published byte durable (fdatasync); returns whether anything was flushed.
    pub fn flush_published(&self) -> std::io::Result<bool> {
        let end = self.map.published().max(self.seal_frame_end.load(Ordering::Acquire));
        let flushed = self.flushed.load(Ordering::Acquire);
        if end <= flushed {
            return Ok(false);
        }
        self.sync_data()?;
        self.flushed.fetch_max(end, Ordering::AcqRel);
        Ok(true)
    }

    /// fdatasync, failing for good once one failed (`sync_failed`).
    pub(crate) fn sync_data(&self) -> std::io::Result<()> {
        if self.sync_failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other("an earlier fdatasync of this segment failed"));
        }
        let r = crate::fio::run(crate::fio::Op::Sync, &self.path, || self.map.sync_data());
        if r.is_err() {
            self.sync_failed.store(true, Ordering::Release);
        }
        r
    }
}

/// The length of segment file `path` and its header, checked to be segment `seq` of `shard`.
fn checked_header(
    path: &Path,
    file: &File,
    shard: u32,
    seq: u64,
) -> Result<(usize, SegmentHeader)> {
    let corrupt = |offset: usize, reason: FormatError| StorageError::Corrupt {
        segment: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let file_len =
        file.metadata().map_err(|e| StorageError::io("stat segment", path, e))?.len() as usize;
    let mut header_bytes = [0u8; HEADER_LEN];
    if file_len >= HEADER_LEN {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut header_bytes, 0)
            .map_err(|e| StorageError::io("read header", path, e))?;
    }
    let header = format::decode_header(&header_bytes).map_err(|e| corrupt(0, e))?;
    if header.seq != seq || header.shard != shard {
        return Err(corrupt(
            0,
            FormatError::BadField { field: "header seq or shard", value: header.seq },
        ));
    }
    Ok((file_len, header))
}

fn preallocate(file: &File, path: &Path, bytes: usize) -> Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    let r = crate::fio::run(crate::fio::Op::Allocate, path, || {
        fallocate(file, FallocateFlags::empty(), 0, bytes as u64).map_err(Into::into)
    });
    match r {
        Ok(()) => Ok(()),
        Err(e) if crate::fio::is_disk_full(&e) => {
            Err(StorageError::DiskFull { path: path.to_owned(), bytes: bytes as u64 })
        }
        Err(e) => Err(StorageError::io("fallocate segment", path, e)),
    }
}

fn write_header_pwrite(file: &File, path: &Path, header: &SegmentHeader) -> Result<()> {
    use std::os::unix::fs::FileExt;
    crate::fio::write(path, &format::encode_header(header), |b| file.write_all_at(b, 0))
        .map_err(|e| StorageError::io("write header", path, e))
}

/// A nonce that differs between incarnations of a file with high probability: a process-seeded
/// random number mixed with the sequence number and time.
fn fastnonce(seq: u64, created_ms: u64) -> u64 {
    let r = fastrand::u64(..);
    r ^ seq.rotate_left(32) ^ created_ms
}
