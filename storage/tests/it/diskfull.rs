//! A full disk is a clean error when a segment is preallocated, never a SIGBUS in a write:
//! a real, size-limited tmpfs (the tests run as root, as CI does).

use super::*;
use std::process::Command;
use storage::StorageError;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_is_an_error_at_roll_time_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
    let _mount = Mount(dir.path().to_owned());
    let logdir = dir.path().join("log");
    let (log, mut w) = Log::open(&logdir, opts(1)).unwrap();
    let mut written = 0u64;
    let err = loop {
        let payloads: Vec<Vec<u8>> = (0..10).map(|i| payload(written, i, 10)).collect();
        let recs: Vec<NewRecord<'_>> = payloads.iter().map(|p| NewRecord::payload(p)).collect();
        match w[0].append(&recs) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100_000, "the disk never filled");
    };
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err:?}");
    assert_eq!(log.stats().commits, written * 10);
    // Still refusing cleanly, and everything written is readable after reopen.
    let big = vec![b'y'; 30_000];
    let again = w[0].append(&[NewRecord::payload(&big), NewRecord::payload(&big)]);
    assert!(matches!(again, Err(StorageError::DiskFull { .. })), "{again:?}");
    w[0].sync().unwrap();
    drop((log, w));
    let (log, _w) = Log::open(&logdir, opts(1)).unwrap();
    assert_eq!(read_all(&log, 0).len() as u64, written * 10);
}

#[test]
fn a_creation_that_fills_the_disk_leaves_nothing_and_existing_logs_open_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320k", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
    let _mount = Mount(dir.path().to_owned());
    let old = dir.path().join("old");
    let (log, mut w) = Log::open(&old, opts(2)).unwrap();
    let ids = append_batch(&mut w[0], 0, 20);
    w[0].sync().unwrap();
    drop((log, w));
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(dir.path().join("filler")).unwrap();
    let chunk = vec![1u8; 4096];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    while std::io::Write::write_all(&mut filler, &[1]).is_ok() {}
    let before: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    let created = Log::open(dir.path().join("stub"), opts(2));
    assert!(created.is_err(), "a new log on a full disk");
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before, after, "a failed creation leaves nothing behind");
    // The existing log opens on the full disk and serves its commits.
    let (log, _w) = Log::open(&old, opts(2)).unwrap();
    let read: Vec<Ulid> = read_all(&log, 0).into_iter().map(|(id, _)| id).collect();
    assert_eq!(read, ids);
    drop((log, _w));
    // Space back: the creation works.
    drop(filler);
    std::fs::remove_file(dir.path().join("filler")).unwrap();
    let (log, mut w) = Log::open(dir.path().join("stub"), opts(2)).unwrap();
    append_batch(&mut w[1], 1, 3);
    assert_eq!(read_all(&log, 1).len(), 3);
}
