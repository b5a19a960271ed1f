//! Recovery policy for a segment that was not sealed: find where its data really ends.
//!
//! The log's checkpoint (written by the maintenance thread after it flushed) says how much of
//! each shard was on disk: all of every segment older than the checkpointed one, and a prefix
//! of the checkpointed one. That decides what a bad frame means ([`Known`]):
//! 1. Frames are read from the header on. A batch counts only when its `BATCH_END` frame is
//!    whole; frames of an unfinished batch at the end are cut (a batch is all or nothing, also
//!    across a crash).
//! 2. A bad frame (zero length, bad length, foreign tag, checksum) inside the checkpointed
//!    prefix is **corruption**: opening fails, naming segment and offset. In a segment known
//!    whole, a bad frame followed by any valid frame of the segment is corruption; one with
//!    nothing valid after it is indistinguishable from a clean end and is cut.
//! 3. Past what is known, the first bad frame is the **torn tail**: it and everything after it
//!    is cut. After a machine crash, pages written back out of order can leave valid frames
//!    after a hole; they were never acknowledged as durable, so cutting them is right.
//! 4. The caller zeroes the cut range (orphan frames and the bad frame's claimed length) and the
//!    first words of every valid frame found beyond the cut, so no remnant can look like data
//!    after the next crash.
//!
//! What it is not: the check of sealed segments (their footer is trusted after its checksum;
//! frames are verified when read, and `Log::verify` scans everything). Pure `&[u8]` code, so the
//! fuzz target can run it.

use crate::error::FormatError;
use crate::format::{self, FRAME_HEADER_LEN, Footer, HEADER_LEN, flags};

/// What a scan of an open segment found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// End of the last whole batch: the published length to resume from.
    pub end: usize,
    /// Commits in whole batches.
    pub count: u64,
    /// ULID of the first commit.
    pub first_id: Option<u128>,
    /// ULID of the last commit.
    pub last_id: Option<u128>,
    /// Sparse index entries of the kept frames.
    pub index: Vec<(u128, u64)>,
    /// The seal footer, when the segment was sealed but its header was not updated.
    pub seal: Option<Footer>,
    /// Bytes from `end` up to here may hold remnants and must be zeroed.
    pub dirty_end: usize,
    /// Frames of this segment found beyond a cut (pages written back out of order before a
    /// machine crash): their length, checksum and tag words must be zeroed, or a later scan of
    /// the segment as `Known::Whole` would take them for data after corruption.
    pub stale_frames: Vec<usize>,
    /// Where the tail was cut and why (none when the segment ended cleanly).
    pub torn_at: Option<(usize, FormatError)>,
}

/// What the checkpoint says is on disk of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// All of it (older than the checkpointed segment).
    Whole,
    /// Its first this many bytes (the checkpointed segment).
    Prefix(usize),
    /// Nothing (newer than the checkpoint, or no checkpoint yet).
    Nothing,
}

/// Scans `bytes` (a whole segment, header included) whose frames carry `tag`. `Err` is
/// corruption: (offset, reason).
pub fn scan_open_segment(
    bytes: &[u8],
    tag: u32,
    index_interval_bytes: usize,
    known: Known,
) -> Result<Scan, (usize, FormatError)> {
    let mut scan = Scan { end: HEADER_LEN.min(bytes.len()), ..Scan::default() };
    let interval = index_interval_bytes.max(format::ALIGN);
    let mut pos = scan.end;
    // The batch being read; committed into `scan` at its BATCH_END.
    let mut pending = Scan::default();
    let mut previous: Option<u128> = None;
    loop {
        let err = match format::decode_frame(&bytes[pos..], tag) {
            Ok((frame, padded)) => {
                if frame.flags & flags::SEAL != 0 {
                    if pending.count != 0 {
                        return Err((
                            pos,
                            FormatError::BadField {
                                field: "seal inside a batch",
                                value: pending.count,
                            },
                        ));
                    }
                    let footer = format::decode_footer(frame.payload).map_err(|e| (pos, e))?;
                    if footer.data_end != pos as u64 {
                        let value = footer.data_end;
                        return Err((
                            pos,
                            FormatError::BadField { field: "footer data_end", value },
                        ));
                    }
                    if footer.count != scan.count {
                        let value = footer.count;
                        return Err((pos, FormatError::BadField { field: "footer count", value }));
                    }
                    scan.seal = Some(footer);
                    scan.dirty_end = scan.end;
                    return Ok(scan);
                }
                let id = frame.id.0;
                if let Some(prev) = previous
                    && id <= prev
                {
                    return Err((pos, FormatError::IdNotIncreasing { id, previous: prev }));
                }
                previous = Some(id);
                let last_indexed = pending.index.last().or(scan.index.last()).map(|e| e.1 as usize);
                if last_indexed.is_none_or(|l| pos / interval > l / interval) {
                    pending.index.push((id, pos as u64));
                }
                pending.count += 1;
                pending.first_id.get_or_insert(id);
                pending.last_id = Some(id);
                pos += padded;
                if frame.flags & flags::BATCH_END != 0 {
                    scan.count += pending.count;
                    scan.first_id = scan.first_id.or(pending.first_id);
                    scan.last_id = pending.last_id;
                    scan.index.append(&mut pending.index);
                    scan.end = pos;
                    pending = Scan::default();
                }
                if pos >= bytes.len() {
                    FormatError::Empty
                } else {
                    continue;
                }
            }
            Err(e) => e,
        };
        let corrupt = match known {
            Known::Whole => valid_frame_after(bytes, pos, tag).is_some(),
            Known::Prefix(n) => pos < n,
            Known::Nothing => false,
        };
        if corrupt {
            return Err((pos, err));
        }
        // Zero the bad frame's header, and its whole claimed length when that fits: a torn
        // frame's length word is written before its body.
        let claimed = bytes
            .get(pos..pos + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let reach = if claimed <= bytes.len() - pos {
            claimed.max(FRAME_HEADER_LEN)
        } else {
            FRAME_HEADER_LEN
        };
        scan.dirty_end = (pos + reach).min(bytes.len());
        let mut q = scan.dirty_end;
        while let Some(at) = valid_frame_after(bytes, q.max(pos), tag) {
            scan.stale_frames.push(at);
            q = at;
        }
        // The writer zeroes the length word after every batch it appends, so a clean end meets
        // a zero length right after the last batch; anything else was cut.
        let clean = pos == scan.end && err == FormatError::Empty;
        if !clean {
            scan.torn_at = Some((pos, err));
        }
        return Ok(scan);
    }
}

/// The first aligned position after `pos` holding a valid frame with `tag`, if any.
fn valid_frame_after(bytes: &[u8], pos: usize, tag: u32) -> Option<usize> {
    let mut q = pos + format::ALIGN;
    while q + FRAME_HEADER_LEN <= bytes.len() {
        if format::peek_tag(bytes, q) == Some(tag) && format::decode_frame(&bytes[q..], tag).is_ok()
        {
            return Some(q);
        }
        q += format::ALIGN;
    }
    None
}

/// Recovery's rule across the segments of one shard, given for each (in sequence order) whether
/// its seal is durable and what the checkpoint knows of it: the index from which segments must
/// be dropped, if any.
///
/// A writer writes a segment's seal frame as it rolls away from it, before anything goes into
/// the next one, and every flush (the writer's `sync`, the background flush, the seal itself)
/// syncs a shard's unsealed segments in order. So a segment with data behind one whose seal is
/// not durable was never synced: after a machine crash it can hold pages written back out of
/// order, behind a hole in the one before. Its commits were never acknowledged as durable, and
/// keeping them would leave a gap in the shard's history.
///
/// The one exception is a later segment the checkpoint vouches for (a flush covered it): a
/// build that wrote seal frames only when sealing could leave that behind; it is kept.
pub fn cut_behind(segments: &[(bool, Known)]) -> Option<usize> {
    let last = segments.len().checked_sub(1)?;
    let k = segments[..last].iter().position(|&(seal_durable, _)| !seal_durable)?;
    let vouched = segments[k + 1..].iter().any(|&(_, known)| match known {
        Known::Whole => true,
        Known::Prefix(n) => n > HEADER_LEN,
        Known::Nothing => false,
    });
    (!vouched).then_some(k + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_behind_one_whose_seal_is_lost_are_cut_unless_vouched_for() {
        let n = Known::Nothing;
        assert_eq!(cut_behind(&[]), None);
        assert_eq!(cut_behind(&[(false, n)]), None, "the active segment needs no seal");
        assert_eq!(cut_behind(&[(true, n), (false, n)]), None);
        assert_eq!(cut_behind(&[(false, n), (false, n)]), Some(1));
        assert_eq!(cut_behind(&[(true, n), (false, n), (true, n), (false, n)]), Some(2));
        let header = Known::Prefix(HEADER_LEN);
        assert_eq!(cut_behind(&[(false, Known::Whole), (false, header)]), Some(1));
        assert_eq!(cut_behind(&[(false, Known::Whole), (false, Known::Prefix(4096))]), None);
    }
}
