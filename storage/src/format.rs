//! The on-disk format, version 1: the only module that encodes or decodes bytes.
//!
//! Byte tables live in `docs/FORMAT.md`; this module is their executable form. All integers
//! are fixed-width little-endian, frames are 8-byte aligned, every frame and header carries a
//! CRC32C. Decoders are pure functions over `&[u8]` so fuzzers and Miri can run them; they never
//! panic on any input.
//!
//! Here: the constants, flags and shared helpers; `frame` (commits as stored), `segment`
//! (segment header and seal footer), `files` (meta, checkpoint, transaction journal),
//! `revisions` (a shard's revision snapshot).
//!
//! What it is not: I/O. Callers hand it slices of mapped segments or files.

use crate::error::FormatError;
use idgen::Ulid;

/// Format version written by this build and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHLGSEG\0";
/// Magic bytes opening a log's metadata file.
pub const META_MAGIC: [u8; 8] = *b"SHLGMETA";
/// Size of the segment header; frames start here.
pub const HEADER_LEN: usize = 64;
/// Size of a frame's fixed header; key, payload and inverse follow.
pub const FRAME_HEADER_LEN: usize = 56;
/// Frames start at multiples of this.
pub const ALIGN: usize = 8;
/// `revision` value meaning "no stream revision".
pub const NO_REVISION: u64 = u64::MAX;
/// Fixed part of the seal footer's payload.
pub const FOOTER_FIXED_LEN: usize = 56;
/// Size of one sparse-index entry in the footer.
pub const INDEX_ENTRY_LEN: usize = 24;
/// Size of the log metadata file.
pub const META_LEN: usize = 48;

const _: () = assert!(HEADER_LEN.is_multiple_of(ALIGN));
const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(ALIGN));

/// Frame flag bits.
pub mod flags {
    /// Last frame of an append batch: recovery keeps a batch only if this frame is whole.
    pub const BATCH_END: u16 = 1 << 0;
    /// The seal footer frame (not a commit).
    pub const SEAL: u16 = 1 << 1;
    /// A transactional write that did not match: `aux` holds the expected revision.
    pub const CONFLICT: u16 = 1 << 2;
    /// Part of a cross-shard transaction: `aux` holds its id; visible only once the
    /// transaction committed (see `txn`).
    pub const TXN_PART: u16 = 1 << 3;
    /// Reserved (version 1 never writes it).
    pub const TXN_COMMIT: u16 = 1 << 4;
    /// Reverts the commit whose ULID is in the payload (reserved for the service).
    pub const REVERTS: u16 = 1 << 5;
    /// Bits this version knows; any other bit makes a frame unreadable.
    pub const KNOWN: u16 = BATCH_END | SEAL | CONFLICT | TXN_PART | TXN_COMMIT | REVERTS;
}

mod files;
mod frame;
mod revisions;
mod segment;

pub use files::*;
pub use frame::*;
pub use revisions::*;
pub use segment::*;

fn check_magic_version(b: &[u8], magic: [u8; 8]) -> Result<(), FormatError> {
    let got: [u8; 8] = b[0..8].try_into().expect("8 bytes");
    if got != magic {
        return Err(FormatError::BadMagic { got });
    }
    let version = get_u16(b, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { got: version, supported: FORMAT_VERSION });
    }
    Ok(())
}

fn check_crc(bytes: &[u8], expected: u32) -> Result<(), FormatError> {
    let got = crc32c::crc32c(bytes);
    if got != expected {
        return Err(FormatError::ChecksumMismatch { expected, got });
    }
    Ok(())
}

/// Reads the frame tag of a frame starting at `at` without decoding it (the look-ahead
/// scan uses it as a cheap filter before a full check).
pub fn peek_tag(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at + 8..at + 12).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn get_u128(b: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}
fn put_u128(b: &mut [u8], at: usize, v: u128) {
    b[at..at + 16].copy_from_slice(&v.to_le_bytes());
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests;
