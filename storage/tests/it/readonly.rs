//! A log opened read-only changes nothing in its directory: `segtool verify` and `segtool dump`
//! (and `Log::open_read_only`) on a log with retention settings, several shards and segments,
//! rolled-away segments left unsealed and a torn tail leave every file, byte and directory as it
//! was, and report the torn tail instead of cutting it.

use super::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use storage::format::{self, HEADER_LEN};
use storage::{Retention, StorageError};

/// Every entry under `dir`: directories as `None`, files with their length and bytes.
type Snapshot = BTreeMap<PathBuf, Option<(u64, Vec<u8>)>>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.insert(p.clone(), None);
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(p, Some((bytes.len() as u64, bytes)));
            }
        }
    }
    out
}

const RETENTION: Retention =
    Retention { max_age_ms: Some(7 * 24 * 3_600_000), max_bytes: Some(50 << 20) };

/// A three-shard log with retention, sealed and unsealed rolled-away segments, and a torn tail
/// at the end of shard 0's newest segment. Returns the commits of each shard.
fn build(dir: &Path) -> Vec<usize> {
    let with = |background| LogOptions { retention: RETENTION, background, ..opts(3) };
    {
        // The maintenance thread seals rolled-away segments and prepares successors.
        let (_log, mut w) = Log::open(dir, with(true)).unwrap();
        for b in 0..600 {
            append_batch(&mut w[(b % 3) as usize], b, 5);
        }
        w.iter_mut().for_each(|w| w.sync().unwrap());
    }
    {
        // Without it, segments rolled away from stay unsealed: an opening would seal them.
        let (log, mut w) = Log::open(dir, with(false)).unwrap();
        for b in 600..1500 {
            append_batch(&mut w[(b % 3) as usize], b, 5);
        }
        w.iter_mut().for_each(|w| w.sync().unwrap());
        assert!(log.stats().segments >= 9, "{:?}", log.stats());
    }
    let (log, _w) = Log::open(dir, with(false)).unwrap();
    let counts = (0..3).map(|i| read_all(&log, i).len()).collect();
    drop((log, _w));
    // A torn frame after shard 0's last whole batch: a length word and junk, past what the
    // checkpoint knows.
    let newest = newest_with_data(&dir.join("shards/00000"));
    let mut bytes = std::fs::read(&newest).unwrap();
    let end = data_end(&bytes);
    bytes[end..end + 24].copy_from_slice(&[
        0xc8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ]);
    std::fs::write(&newest, &bytes).unwrap();
    counts
}

/// The segment of `shard_dir` with the highest seq that holds a frame.
fn newest_with_data(shard_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.into_iter().rev().find(|p| data_end(&std::fs::read(p).unwrap()) > HEADER_LEN).unwrap()
}

/// Where the frames of an open segment end.
fn data_end(bytes: &[u8]) -> usize {
    let tag = format::decode_header(bytes).unwrap().tag();
    let mut pos = HEADER_LEN;
    while let Ok((_, padded)) = format::decode_frame(&bytes[pos..], tag) {
        pos += padded;
    }
    pos
}

fn segtool(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_segtool")).args(args).output().unwrap();
    assert!(out.status.success(), "segtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn segtool_verify_and_dump_change_no_byte_file_or_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let counts = build(&dir);
    let before = snapshot(&dir);
    let d = dir.to_str().unwrap();
    let verified = segtool(&["verify", d]);
    assert!(verified.contains("torn tail") && verified.contains("(not cut)"), "{verified}");
    let total: usize = counts.iter().sum();
    assert!(verified.contains(&format!("ok: {total} commits verified")), "{verified}");
    assert!(verified.contains("over 3 shards"), "{verified}");
    let dumped = segtool(&["dump", d, "1", "1000000"]);
    assert_eq!(dumped.lines().count(), counts[1]);
    segtool(&["dump", d, "0", "10"]);
    let after = snapshot(&dir);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (path, entry) in &before {
        assert!(after[path] == *entry, "{} changed", path.display());
    }
    let meta = Log::stored_meta(&dir).unwrap().unwrap();
    assert_eq!((meta.max_age_ms, meta.max_bytes), (7 * 24 * 3_600_000, 50 << 20));
    assert_eq!(meta.shards, 3);
}

#[test]
fn a_read_only_log_reports_its_torn_tail_reads_whole_batches_and_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let counts = build(&dir);
    let before = snapshot(&dir);
    {
        let (log, report) = Log::open_read_only(&dir, Arc::new(storage::NoExternal)).unwrap();
        assert!(log.is_read_only());
        assert_eq!(report.torn_tails.len(), 1, "{:?}", report.torn_tails);
        assert!(report.torn_tails[0].0.starts_with(dir.join("shards/00000")));
        for (i, &n) in counts.iter().enumerate() {
            assert_eq!(read_all(&log, i).len(), n, "shard {i}");
        }
        assert_eq!(log.verify().unwrap() as usize, counts.iter().sum::<usize>());
        assert_eq!(log.retention(), RETENTION);
        let refused = log.set_retention(Retention::default());
        assert!(matches!(refused, Err(StorageError::ReadOnly { .. })), "{refused:?}");
        let refused = log.apply_retention(u64::MAX);
        assert!(matches!(refused, Err(StorageError::ReadOnly { .. })), "{refused:?}");
        let refused = log.checkpoint();
        assert!(matches!(refused, Err(StorageError::ReadOnly { .. })), "{refused:?}");
        // Inspectors share the lock; a writer waits for them and gives up.
        let (_second, _) = Log::open_read_only(&dir, Arc::new(storage::NoExternal)).unwrap();
        let writer = Log::open(&dir, LogOptions { retention: RETENTION, ..opts(3) });
        assert!(matches!(writer, Err(StorageError::Locked { .. })), "{writer:?}");
    }
    assert!(snapshot(&dir) == before, "a read-only open changed the directory");
    let missing = Log::open_read_only(tmp.path().join("nothing"), Arc::new(storage::NoExternal));
    assert!(matches!(missing, Err(StorageError::NotALog { .. })), "{missing:?}");
    assert!(!tmp.path().join("nothing").exists());
    // A read-write open then cuts the tail, as recovery does.
    let (_log, _w, report) =
        Log::open_with_report(&dir, LogOptions { retention: RETENTION, ..opts(3) }).unwrap();
    assert_eq!(report.torn_tails.len(), 1);
}
