//! The one module with `unsafe`: a segment file mapped into memory, shared by one writer and
//! many readers.
//!
//! # Contract
//!
//! 1. **One writer per mapping.** [`map_segment`] returns the only [`MapWriter`] that will ever
//!    exist for the mapping; it is not `Clone`. All writes go through `&mut MapWriter`.
//! 2. **Readers read only published bytes, never the header.** [`MappedFile::read`] hands out
//!    slices of `[HEADER_LEN, published)` only, where `published` is loaded with `Acquire`
//!    ([`PublishedLen`]). The writer writes only at or beyond the published length
//!    ([`MapWriter::tail_mut`] asserts it) or into the header (`[0, HEADER_LEN)`), which readers
//!    never see through the map. So a shared slice and a mutable slice never overlap.
//! 3. **Published bytes never change.** The published length only grows; sealed segments never
//!    change at all. Recovery, which rewrites bytes beyond the true end, runs before any reader
//!    exists.
//! 4. **No truncation while mapped.** Files are preallocated to the mapped size before mapping
//!    (`fallocate`) and never truncated or shrunk while any `MappedFile` lives; a segment is
//!    recycled only once no reader holds it. This rules out SIGBUS from a shorter file.
//! 5. **No other process writes the files.** A lock file in the log directory keeps other
//!    shardlog processes out; editing segment files by hand while the server runs breaks this
//!    contract (as it would for any database).
//!
//! What it is not: a general-purpose mmap wrapper. It knows the segment header size and nothing
//! else about the format.
#![allow(unsafe_code)]

use crate::format::HEADER_LEN;
use crate::publish::PublishedLen;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::sync::Arc;

/// A mapped segment file: readers' side.
#[derive(Debug)]
pub struct MappedFile {
    raw: MmapRaw,
    len: usize,
    published: PublishedLen,
}

/// The unique writing handle of a [`MappedFile`].
#[derive(Debug)]
pub struct MapWriter {
    map: Arc<MappedFile>,
}

/// Maps `len` bytes of `file` (which must already be at least that long) read-write and shared;
/// with `populate`, pages are faulted in now rather than on first touch. The published length
/// starts at `published` (≥ `HEADER_LEN`).
pub fn map_segment(
    file: &File,
    len: usize,
    published: usize,
    populate: bool,
) -> std::io::Result<(Arc<MappedFile>, MapWriter)> {
    assert!(len >= HEADER_LEN && (HEADER_LEN..=len).contains(&published));
    let actual = file.metadata()?.len();
    if actual < len as u64 {
        return Err(std::io::Error::other(format!(
            "file is {actual} bytes, shorter than the {len} bytes to map"
        )));
    }
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    let raw = opts.map_raw(file)?;
    let map = Arc::new(MappedFile { raw, len, published: PublishedLen::new(published) });
    Ok((Arc::clone(&map), MapWriter { map }))
}

impl MappedFile {
    /// Mapped size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The published length (`Acquire`).
    #[inline]
    pub fn published(&self) -> usize {
        self.published.load()
    }

    /// The published bytes in `[start, end)`, clamped to the published length; panics if
    /// `start < HEADER_LEN`.
    #[inline]
    pub fn read(&self, start: usize, end: usize) -> &[u8] {
        let end = end.min(self.published());
        assert!(start >= HEADER_LEN, "readers never read the header");
        let start = start.min(end);
        // SAFETY: `[start, end)` lies within `[HEADER_LEN, published)` (clamped and asserted
        // above) and within the mapping (`published <= len`). By contract points 2 and 3 no
        // `&mut` to these bytes exists or will exist while the mapping lives, and the mapping
        // outlives the returned borrow because it borrows `self`.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), end - start) }
    }

    /// Schedules (`sync == false`) or performs (`sync == true`) write-back of `[start, end)`.
    pub fn flush(&self, start: usize, end: usize, sync: bool) -> std::io::Result<()> {
        let end = end.min(self.len);
        if start >= end {
            return Ok(());
        }
        if sync {
            self.raw.flush_range(start, end - start)
        } else {
            self.raw.flush_async_range(start, end - start)
        }
    }
}

impl MapWriter {
    /// The shared, readers' side.
    pub fn map(&self) -> &Arc<MappedFile> {
        &self.map
    }

    /// Mutable bytes `[start, start + len)`, which must lie at or beyond the published length.
    #[inline]
    pub fn tail_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        assert!(start >= self.map.published(), "writes go beyond the published length");
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.map.len),
            "write past the map"
        );
        // SAFETY: the range is in the mapping (asserted) and at or beyond the published length,
        // which only this writer moves; readers never read there (contract 2). `&mut self`
        // makes this the only live mutable slice of the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.map.raw.as_mut_ptr().add(start), len) }
    }

    /// The header bytes, for writing. Readers never read the header through the map.
    pub fn header_mut(&mut self) -> &mut [u8] {
        // SAFETY: `[0, HEADER_LEN)` is in the mapping (map_segment asserts `len >= HEADER_LEN`)
        // and no reader slice covers it (contract 2); `&mut self` makes this slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.map.raw.as_mut_ptr(), HEADER_LEN) }
    }

    /// Any bytes of the mapping, for the writer's own reading (recovery, header checks).
    pub fn bytes(&self, start: usize, end: usize) -> &[u8] {
        assert!(start <= end && end <= self.map.len);
        // SAFETY: in bounds (asserted). Shared access is fine alongside readers' shared slices;
        // no mutable slice exists while `&self` is borrowed, as mutation requires `&mut self`.
        unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr().add(start), end - start) }
    }

    /// Publishes bytes below `len` to readers.
    #[inline]
    pub fn publish(&mut self, len: usize) {
        assert!(len <= self.map.len);
        self.map.published.publish(len);
    }
}
