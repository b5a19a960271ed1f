//! Retention: whole sealed segments beyond max_age or max_bytes are retired; the active
//! segment never is; retired files are recycled for new segments.

use super::*;
use idgen::Clock;
use storage::Retention;

#[test]
fn max_bytes_retires_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        retention: Retention { max_age_ms: None, max_bytes: Some(150 * 1024) },
        ..opts(1)
    };
    let (log, mut w) = Log::open(dir.path(), o).unwrap();
    for b in 0..1000 {
        append_batch(&mut w[0], b, 4);
    }
    let before = log.stats();
    assert!(before.bytes > 150 * 1024);
    assert_eq!(log.shard(0).retained_from(), None, "nothing removed yet");
    let retired = log.apply_retention(0).unwrap();
    assert!(retired > 0);
    let after = log.stats();
    assert!(after.bytes <= 150 * 1024, "{after:?}");
    assert_eq!(after.segments, before.segments - retired as u64);
    // What is left is the newest suffix, still readable in order.
    let left = read_all(&log, 0);
    assert_eq!(left.len() as u64, after.commits);
    assert_eq!(left.last().unwrap().1, payload(999, 3, 4));
    assert_eq!(after.shards[0].first_id, Some(left[0].0));
    assert_eq!(log.shard(0).retained_from(), Some(left[0].0), "commits before it are gone");
    // Retired files went to the recycle pool and the next roll reuses them.
    let recycled = std::fs::read_dir(dir.path().join("recycle")).unwrap().count();
    assert!(recycled > 0);
    for b in 1000..1200 {
        append_batch(&mut w[0], b, 4);
    }
    let left_in_pool = std::fs::read_dir(dir.path().join("recycle")).unwrap().count();
    assert!(
        left_in_pool < recycled,
        "rolls reused recycled files: {left_in_pool} of {recycled} left"
    );
    drop((log, w));
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(1)).unwrap();
    assert_eq!(read_all(&log, 0).last().unwrap().1, payload(1199, 3, 4));
    assert!(report.torn_tails.is_empty(), "recycled segments end cleanly: {report:?}");
}

#[test]
fn max_age_retires_segments_whose_last_commit_is_older() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let o = LogOptions {
        retention: Retention { max_age_ms: Some(60_000), max_bytes: None },
        ..opts_with_clock(1, &clock)
    };
    let (log, mut w) = Log::open(dir.path(), o).unwrap();
    for b in 0..300 {
        append_batch(&mut w[0], b, 4);
    }
    clock.advance_ms(120_000);
    let fresh: Vec<Ulid> = (300..320).flat_map(|b| append_batch(&mut w[0], b, 4)).collect();
    let segments = log.stats().segments;
    let retired = log.apply_retention(clock.now_ms()).unwrap() as u64;
    // Every segment sealed before the clock jump goes; the one that took both old and fresh
    // commits (and the active one) stay.
    assert!(retired >= segments - 2 && retired < segments, "{retired} of {segments}");
    let left: Vec<Ulid> = read_all(&log, 0).into_iter().map(|r| r.0).collect();
    assert!(left.ends_with(&fresh));
    let old = left.iter().filter(|id| id.timestamp_ms() < 1_100_000).count();
    assert!(old < 700, "at most one segment of old commits is left, found {old}");
    // Nothing more goes while the clock stands still.
    assert_eq!(log.apply_retention(clock.now_ms()).unwrap(), 0);
}

#[test]
fn readers_keep_a_retired_segment_alive_until_they_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        retention: Retention { max_age_ms: None, max_bytes: Some(1) },
        recycle_files_max: 0,
        ..opts(1)
    };
    let (log, mut w) = Log::open(dir.path(), o).unwrap();
    for b in 0..400 {
        append_batch(&mut w[0], b, 4);
    }
    let mut cursor = log.shard(0).cursor(Start::Beginning);
    let first = cursor.next().unwrap().unwrap().frame.payload.to_vec();
    assert_eq!(first, payload(0, 0, 4));
    let files_before = std::fs::read_dir(dir.path().join("shards/00000")).unwrap().count();
    assert!(log.apply_retention(0).unwrap() > 0);
    // The cursor still reads its (retired) segment intact.
    let second = cursor.next().unwrap().unwrap().frame.payload.to_vec();
    assert_eq!(second, payload(0, 1, 4));
    let files_held = std::fs::read_dir(dir.path().join("shards/00000")).unwrap().count();
    assert_eq!(files_held, files_before, "files of held segments stay until released");
    drop(cursor);
    log.apply_retention(0).unwrap();
    let files_after = std::fs::read_dir(dir.path().join("shards/00000")).unwrap().count();
    assert!(files_after < files_before, "{files_after} < {files_before}");
}
