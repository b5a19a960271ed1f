//! Recovery: a torn tail is cut back to the last whole batch at every byte offset of the last
//! record; corruption before the tail is refused with its location; a recovered shard takes
//! new writes and recovers cleanly again.

use super::*;
use std::path::{Path, PathBuf};
use storage::StorageError;
use storage::format::{self, HEADER_LEN};

/// Segment files of shard 0, in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("shards/00000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (offset, unpadded length) of every frame in a segment file.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let tag = format::decode_header(bytes).unwrap().tag();
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while let Ok((f, padded)) = format::decode_frame(&bytes[pos..], tag) {
        let len = format::FRAME_HEADER_LEN + f.key.len() + f.payload.len() + f.inverse.len();
        out.push((pos, len));
        pos += padded;
    }
    out
}

/// Writes `batches` (sizes) into a fresh one-shard log and returns the commits. The log's
/// checkpoint is left as it was before the last batch: the state a crash right after that batch
/// leaves, where the last batch is not yet known to be on disk.
fn write_log(dir: &Path, batches: &[u64]) -> Vec<(Ulid, Vec<u8>)> {
    let (head, last) = batches.split_at(batches.len() - 1);
    {
        let (_log, mut w) = Log::open(dir, opts(1)).unwrap();
        for (b, &n) in head.iter().enumerate() {
            append_batch(&mut w[0], b as u64, n);
        }
    }
    let checkpoint = std::fs::read(dir.join("checkpoint")).unwrap();
    let (log, mut w) = Log::open(dir, opts(1)).unwrap();
    append_batch(&mut w[0], head.len() as u64, last[0]);
    w[0].sync().unwrap();
    let all = read_all(&log, 0);
    drop((log, w));
    std::fs::write(dir.join("checkpoint"), checkpoint).unwrap();
    assert_eq!(segment_files(dir).len(), 1, "test data must stay in one segment");
    all
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.ends_with("LOCK") {
            out.push(p);
        }
    }
    out
}

#[test]
fn truncation_at_every_offset_of_the_last_record_cuts_back_to_the_last_batch() {
    let original = tempfile::tempdir().unwrap();
    let all = write_log(original.path(), &[3, 1, 4, 1]);
    let seg = segment_files(original.path())[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    let fr = frames(&bytes);
    assert_eq!(fr.len(), 9);
    let (last_at, last_len) = fr[8];
    for cut in last_at..last_at + last_len {
        let work = tempfile::tempdir().unwrap();
        copy_dir(original.path(), work.path());
        let wseg = segment_files(work.path())[0].clone();
        std::fs::OpenOptions::new().write(true).open(&wseg).unwrap().set_len(cut as u64).unwrap();
        let (log, mut w, report) = Log::open_with_report(work.path(), opts(1)).unwrap();
        assert_eq!(read_all(&log, 0), all[..8], "cut at {cut}");
        assert_eq!(report.torn_tails.len(), usize::from(cut > last_at), "cut at {cut}: {report:?}");
        // The recovered shard takes writes and recovers cleanly again.
        let new = append_batch(&mut w[0], 100, 1);
        assert!(new[0] > all[7].0);
        drop((log, w));
        let (log, _w, report) = Log::open_with_report(work.path(), opts(1)).unwrap();
        assert_eq!(read_all(&log, 0).len(), 9, "cut at {cut}");
        assert!(report.torn_tails.is_empty(), "{report:?}");
    }
}

#[test]
fn garbage_in_the_last_record_is_a_torn_tail() {
    let original = tempfile::tempdir().unwrap();
    let all = write_log(original.path(), &[2, 2, 5]);
    let seg = segment_files(original.path())[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    let fr = frames(&bytes);
    let (last_at, last_len) = fr[fr.len() - 1];
    for cut in (last_at..last_at + last_len).step_by(3) {
        let work = tempfile::tempdir().unwrap();
        copy_dir(original.path(), work.path());
        let wseg = segment_files(work.path())[0].clone();
        let mut b = std::fs::read(&wseg).unwrap();
        b[cut..last_at + last_len].iter_mut().for_each(|x| *x = 0xA5);
        std::fs::write(&wseg, &b).unwrap();
        let (log, _w) = Log::open(work.path(), opts(1)).unwrap();
        // The whole last batch (5 records) goes: it never got its BATCH_END frame.
        assert_eq!(read_all(&log, 0), all[..4], "garbage from {cut}");
    }
}

#[test]
fn unfinished_batch_is_cut_whole() {
    let original = tempfile::tempdir().unwrap();
    let all = write_log(original.path(), &[2, 6]);
    let seg = segment_files(original.path())[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    let fr = frames(&bytes);
    // Crash after 4 of the 6 frames of the second batch reached the file.
    let (at, _) = fr[2 + 4];
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(at as u64).unwrap();
    let (log, _w) = Log::open(original.path(), opts(1)).unwrap();
    assert_eq!(read_all(&log, 0), all[..2]);
}

#[test]
fn a_torn_checkpointed_prefix_is_corruption_not_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
        for b in 0..5 {
            append_batch(&mut w[0], b, 2);
        }
    } // closing checkpoints all five batches
    let seg = segment_files(dir.path())[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    let (at, _) = frames(&bytes)[9];
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(at as u64 + 10).unwrap();
    match Log::open(dir.path(), opts(1)) {
        Err(StorageError::Corrupt { segment, offset, .. }) => {
            assert_eq!((segment, offset), (seg, at as u64))
        }
        other => panic!(
            "bytes the checkpoint says were on disk are gone: expected corruption, got {other:?}"
        ),
    }
}

#[test]
fn past_the_checkpoint_a_hole_cuts_the_tail_even_if_frames_follow() {
    // A machine crash can write pages back out of order: a later frame on disk after a hole.
    let original = tempfile::tempdir().unwrap();
    let all = write_log(original.path(), &[2, 3, 3]);
    let seg = segment_files(original.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let fr = frames(&bytes);
    // The hole is the middle frame of the last batch; its last frame is whole after it.
    let (hole, len) = fr[6];
    bytes[hole..hole + len].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let tag = format::decode_header(&bytes).unwrap().tag();
    assert!(format::decode_frame(&bytes[fr[7].0..], tag).is_ok());
    let (log, _w, report) = Log::open_with_report(original.path(), opts(1)).unwrap();
    assert_eq!(read_all(&log, 0), all[..5], "the batch with the hole is cut whole");
    // The whole frame found beyond the hole was defused: a later scan of this segment as
    // known-whole must not take it for data after corruption.
    let after = std::fs::read(&seg).unwrap();
    assert!(after[fr[7].0..fr[7].0 + 16].iter().all(|&b| b == 0));
    assert_eq!(report.torn_tails.len(), 1);
}

#[test]
fn corruption_before_the_tail_is_refused_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &[1, 1, 1, 1, 1]);
    let seg = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let (at, len) = frames(&bytes)[2];
    bytes[at + len - 1] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    match Log::open(dir.path(), opts(1)) {
        Err(StorageError::Corrupt { segment, offset, reason }) => {
            assert_eq!(segment, seg);
            assert_eq!(offset, at as u64);
            assert!(matches!(reason, storage::FormatError::ChecksumMismatch { .. }), "{reason:?}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn corruption_in_a_sealed_segment_is_found_by_readers_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
        for b in 0..600 {
            append_batch(&mut w[0], b, 5);
        }
        w[0].sync().unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 2);
    let sealed = files[1].clone();
    let mut bytes = std::fs::read(&sealed).unwrap();
    let (at, _) = frames(&bytes)[10];
    bytes[at + format::FRAME_HEADER_LEN] ^= 1;
    std::fs::write(&sealed, &bytes).unwrap();
    let (log, _w) = Log::open(dir.path(), opts(1)).unwrap();
    match log.verify() {
        Err(StorageError::Corrupt { segment, offset, .. }) => {
            assert_eq!(segment, sealed);
            assert_eq!(offset, at as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_rolled_segment_left_unsealed_by_a_crash_is_sealed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let all = {
        let (log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
        for b in 0..600 {
            append_batch(&mut w[0], b, 5);
        }
        w[0].sync().unwrap();
        read_all(&log, 0)
    };
    // Undo the seal of the first segment: header back to open, seal frame left in place.
    let first = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let mut h = format::decode_header(&bytes).unwrap();
    assert_eq!(h.state, format::SegmentState::Sealed);
    h.state = format::SegmentState::Open;
    h.footer_offset = 0;
    bytes[..HEADER_LEN].copy_from_slice(&format::encode_header(&h));
    std::fs::write(&first, &bytes).unwrap();
    let (log, _w) = Log::open(dir.path(), opts(1)).unwrap();
    assert_eq!(read_all(&log, 0), all);
    let h = format::decode_header(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(h.state, format::SegmentState::Sealed);
}

#[test]
fn reopening_a_log_adds_no_segment_and_writing_goes_on_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let o = || LogOptions { background: true, ..opts(1) };
    let files = || segment_files(dir.path()).len();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(100));
    let mut written = Vec::new();
    // A small log holds one segment file per shard: nothing is prepared before it is needed.
    let (log, mut w) = Log::open(dir.path(), o()).unwrap();
    written.extend(append_batch(&mut w[0], 0, 3));
    pause();
    assert_eq!(files(), 1);
    // Past half full the next segment is prepared.
    let mut b = 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files() < 2 {
        assert!(std::time::Instant::now() < deadline, "no segment was prepared");
        written.extend(append_batch(&mut w[0], b, 4));
        b += 1;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(log.stats().segments, 1, "prepared, not rolled to");
    drop(w);
    drop(log);
    // Opening again and again takes the prepared segment back as prepared: no file is added.
    for round in 0..4u64 {
        let (log, mut w) = Log::open(dir.path(), o()).unwrap();
        written.extend(append_batch(&mut w[0], 1000 + round, 3));
        pause();
        assert_eq!(files(), 2, "round {round}");
        assert_eq!(log.stats().segments, 1, "round {round}: the active segment goes on");
        assert_eq!(read_all(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(), written);
        drop(w);
        drop(log);
    }
    // Rolling still takes the prepared segment, and everything reads back in order.
    let (log, mut w) = Log::open(dir.path(), o()).unwrap();
    for b in 0..600 {
        written.extend(append_batch(&mut w[0], 2000 + b, 4));
    }
    assert!(log.stats().segments >= 3, "{:?}", log.stats());
    drop(w);
    drop(log);
    let (log, _w) = Log::open(dir.path(), o()).unwrap();
    assert_eq!(read_all(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(), written);
    assert_eq!(log.verify().unwrap(), written.len() as u64);
}
