//! Appends read back byte for byte, across rolls and reopen; seeking by ULID and time; the
//! generator's behaviour under a clock stepping backwards; locking and option checks.

use super::*;
use storage::StorageError;

#[test]
fn append_then_read_back_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let (log, mut writers) = Log::open(dir.path(), opts(1)).unwrap();
        for b in 0..1000 {
            let ids = append_batch(&mut writers[0], b, 1 + b % 7);
            for (i, id) in ids.into_iter().enumerate() {
                written.push((id, payload(b, i as u64, 1 + b % 7)));
            }
        }
        writers[0].sync().unwrap();
        assert_eq!(read_all(&log, 0), written);
        let stats = log.stats();
        assert!(stats.segments > 3, "64 KiB segments must have rolled: {stats:?}");
        assert_eq!(stats.commits, written.len() as u64);
        assert!(written.windows(2).all(|w| w[0].0 < w[1].0), "IDs increase");
    }
    let (log, mut writers) = Log::open(dir.path(), opts(1)).unwrap();
    assert_eq!(read_all(&log, 0), written, "same after reopen");
    assert_eq!(log.stats().commits, written.len() as u64);
    assert_eq!(log.verify().unwrap(), written.len() as u64);
    // The writer resumes above the last stored ID.
    let next = append_batch(&mut writers[0], 999, 1)[0];
    assert!(next > written.last().unwrap().0);
}

#[test]
fn keys_revisions_flags_and_inverse_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
    let rec = NewRecord {
        key: b"account-7",
        payload: b"{\"credit\":5}",
        inverse: b"{\"debit\":5}",
        revision: 3,
        aux: 2,
        flags: storage::format::flags::CONFLICT,
    };
    let id = w[0].append(&[rec]).unwrap().first;
    let mut c = log.shard(0).cursor(Start::Beginning);
    let r = c.next().unwrap().unwrap();
    assert_eq!(
        (r.frame.id, r.frame.key, r.frame.payload, r.frame.inverse),
        (id, &b"account-7"[..], &b"{\"credit\":5}"[..], &b"{\"debit\":5}"[..])
    );
    assert_eq!((r.frame.revision, r.frame.aux), (3, 2));
    assert_eq!(r.frame.flags, storage::format::flags::CONFLICT | storage::format::flags::BATCH_END);
}

#[test]
fn seek_by_ulid_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(1, &clock)).unwrap();
    let mut all = Vec::new();
    for b in 0..1000u64 {
        clock.advance_ms(10);
        all.extend(append_batch(&mut w[0], b, 3));
    }
    assert!(log.stats().segments > 2);
    for probe in [0usize, 1, 2, 3, 500, 599, 600, 1000, all.len() - 2, all.len() - 1] {
        let id = all[probe];
        let after: Vec<Ulid> =
            read_from(&log, 0, Start::After(id)).into_iter().map(|r| r.0).collect();
        assert_eq!(after, all[probe + 1..], "after {probe}");
        let from: Vec<Ulid> =
            read_from(&log, 0, Start::From(id)).into_iter().map(|r| r.0).collect();
        assert_eq!(from, all[probe..], "from {probe}");
    }
    // Time: the batch written at 1_000_000 + 10 * (b + 1) ms.
    let t = 1_000_000 + 10 * 201;
    let from_time: Vec<Ulid> =
        read_from(&log, 0, Start::From(idgen::min_for_ms(t))).into_iter().map(|r| r.0).collect();
    assert_eq!(from_time, all[200 * 3..]);
    let before_all = read_from(&log, 0, Start::From(idgen::min_for_ms(0)));
    assert_eq!(before_all.len(), all.len());
    assert!(read_from(&log, 0, Start::After(*all.last().unwrap())).is_empty());
}

#[test]
fn clock_stepping_backwards_keeps_ids_increasing_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(50_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(1, &clock)).unwrap();
    let a = append_batch(&mut w[0], 0, 5);
    clock.set_ms(10_000);
    let b = append_batch(&mut w[0], 1, 5);
    clock.set_ms(60_000);
    let c = append_batch(&mut w[0], 2, 5);
    let ids: Vec<Ulid> = a.into_iter().chain(b.clone()).chain(c.clone()).collect();
    assert!(ids.windows(2).all(|p| p[0] < p[1]));
    assert_eq!(b[0].timestamp_ms(), 50_000, "clamped to the last millisecond");
    assert_eq!(c[0].timestamp_ms(), 60_000);
    assert_eq!(log.stats().shards[0].clock_regressions, 1);
}

#[test]
fn a_second_open_is_refused_by_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Log::open(dir.path(), opts(2)).unwrap();
    match Log::open(dir.path(), opts(2)) {
        Err(StorageError::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn shard_count_is_fixed_and_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    drop(Log::open(dir.path(), opts(4)).unwrap());
    assert!(matches!(
        Log::open(dir.path(), opts(3)),
        Err(StorageError::ShardCountMismatch { stored: 4, requested: 3 })
    ));
    let (log, _w) = Log::open(dir.path(), opts(4)).unwrap();
    assert_eq!(log.shards().len(), 4);
    drop((log, _w));
    let tiny = LogOptions { segment_bytes: 4096, ..opts(4) };
    assert!(matches!(
        Log::open(dir.path(), tiny),
        Err(StorageError::InvalidOption { name: "segment_bytes", .. })
    ));
}

#[test]
fn bad_batches_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
    assert!(matches!(w[0].append(&[]), Err(StorageError::EmptyBatch)));
    let big = vec![0u8; 70 * 1024];
    assert!(matches!(
        w[0].append(&[NewRecord::payload(&big)]),
        Err(StorageError::BatchTooLarge { .. })
    ));
    let key = vec![b'k'; 70_000];
    assert!(matches!(
        w[0].append(&[NewRecord::keyed(&key, b"x")]),
        Err(StorageError::FieldTooLarge { field: "key", .. })
    ));
    let sealed = NewRecord { flags: storage::format::flags::SEAL, ..NewRecord::payload(b"x") };
    assert!(matches!(w[0].append(&[sealed]), Err(StorageError::InvalidFlags { .. })));
    let unknown = NewRecord { flags: 1 << 14, ..NewRecord::payload(b"x") };
    assert!(matches!(w[0].append(&[unknown]), Err(StorageError::InvalidFlags { .. })));
    assert_eq!(log.stats().commits, 0);
    assert!(read_all(&log, 0).is_empty());
}

#[test]
fn background_thread_prepares_seals_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions { background: true, flush_interval_ms: 5, ..opts(2) };
    let (log, mut w) = Log::open(dir.path(), o).unwrap();
    for b in 0..1000 {
        append_batch(&mut w[(b % 2) as usize], b, 10);
        if b % 50 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let stats = log.stats();
    assert_eq!(stats.commits, 10_000);
    assert_eq!(stats.background_errors, 0, "{:?}", log.last_background_error());
    let rolls: u64 = stats.shards.iter().map(|s| s.rolls).sum();
    let inline: u64 = stats.shards.iter().map(|s| s.inline_prepares).sum();
    assert!(
        rolls > 4 && inline < rolls,
        "prepared segments were used: {rolls} rolls, {inline} inline"
    );
    assert!(stats.shards.iter().all(|s| s.flushes > 0), "background flush ran: {stats:?}");
    drop((log, w));
    let (log, _w) = Log::open(dir.path(), opts(2)).unwrap();
    assert_eq!(log.verify().unwrap(), 10_000);
}
