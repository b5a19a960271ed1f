//! The merged timeline against its model, "every commit of every shard, sorted by ULID": with
//! random writes to random shards, clocks stepping back, idle shards advancing their marks and
//! reads interleaved, the merger returns each commit once, in order, never one that a later
//! write could precede.

use super::*;
use idgen::Clock;
use proptest::prelude::*;
use storage::{Merger, Picks, Retention};

#[derive(Debug, Clone)]
enum Op {
    Append { shard: usize, n: u64, clock_step: i64 },
    Read { max: usize },
    Idle { shard: usize },
}

fn op(shards: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..shards, 1..20u64, -5..30i64).prop_map(|(shard, n, clock_step)| Op::Append { shard, n, clock_step }),
        3 => (1..50usize).prop_map(|max| Op::Read { max }),
        1 => (0..shards).prop_map(|shard| Op::Idle { shard }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn merged_timeline_is_all_commits_sorted_with_nothing_behind_the_cursor(
        shards in 1..6usize,
        ops in prop::collection::vec(op(6), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let (log, mut w) = Log::open(dir.path(), opts_with_clock(shards as u32, &clock)).unwrap();
        let mut merger = Merger::new(log.shards(), Start::Beginning);
        let mut written: Vec<Ulid> = Vec::new();
        let mut seen: Vec<Ulid> = Vec::new();
        for op in ops {
            match op {
                Op::Append { shard, n, clock_step } => {
                    let now = clock.now_ms() as i64 + clock_step;
                    clock.set_ms(now.max(0) as u64);
                    written.extend(append_batch(&mut w[shard % shards], written.len() as u64, n));
                }
                Op::Read { max } => {
                    // Half the reads keep their commits by place, read back after the merge.
                    let mut picks = (max % 2 == 0).then(Picks::default);
                    let mut picked = Vec::new();
                    for _ in 0..max {
                        let Some(p) = merger.next_placed().unwrap() else { break };
                        let id = p.id();
                        prop_assert_eq!(p.record().frame.id, id);
                        if let Some(picks) = &mut picks {
                            picks.push(&p);
                            picked.push((id, p.record().frame.payload.to_vec()));
                        }
                        if let Some(&last) = seen.last() {
                            prop_assert!(id > last, "{id} after {last}");
                        }
                        seen.push(id);
                    }
                    if let Some(picks) = picks {
                        let back: Vec<_> =
                            picks.records().map(|r| (r.frame.id, r.frame.payload.to_vec())).collect();
                        prop_assert_eq!(back, picked);
                    }
                    // Nothing unseen may lie at or below what was returned.
                    if let Some(&last) = seen.last() {
                        prop_assert!(written.iter().filter(|&&x| x <= last).count() == seen.len());
                    }
                }
                Op::Idle { shard } => {
                    w[shard % shards].advance_high_water(clock.now_ms());
                }
            }
        }
        // Every writer promises to stay above everything written so far.
        let newest = written.iter().map(|id| id.timestamp_ms()).max().unwrap_or(0);
        clock.set_ms(clock.now_ms().max(newest) + 2);
        for writer in w.iter_mut() {
            writer.advance_high_water(clock.now_ms());
        }
        while let Some(r) = merger.next().unwrap() {
            seen.push(r.frame.id);
        }
        written.sort();
        prop_assert_eq!(seen, written);
    }
}

#[test]
fn a_quiet_shard_holds_the_watermark_until_it_advances() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(2, &clock)).unwrap();
    append_batch(&mut w[0], 0, 3);
    let mut merger = Merger::new(log.shards(), Start::Beginning);
    assert!(merger.next().unwrap().is_none(), "shard 1 could still write below shard 0's commits");
    clock.advance_ms(5);
    w[1].advance_high_water(clock.now_ms());
    let n = std::iter::from_fn(|| merger.next().unwrap().map(|_| ())).count();
    assert_eq!(n, 3);
    // Shard 0 is quiet now too: the watermark stays at its last commit until it advances.
    let last = merger.watermark().unwrap();
    assert_eq!(last.timestamp_ms(), 5_000);
    w[0].advance_high_water(clock.now_ms());
    assert_eq!(merger.watermark().unwrap(), idgen::max_for_ms(5_004));
}

#[test]
fn a_pending_transaction_part_holds_the_merge_until_decided() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(7_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(2, &clock)).unwrap();
    let id = log.txns().new_id(2, false);
    log.begin_txn(id, &[0, 1]);
    let a = w[0].append(&[part(id, b"part")]).unwrap();
    clock.advance_ms(1);
    let later = append_batch(&mut w[1], 0, 1)[0];
    w[0].advance_high_water(clock.now_ms() + 1);
    w[1].advance_high_water(clock.now_ms() + 1);
    let mut merger = Merger::new(log.shards(), Start::Beginning);
    assert!(merger.next().unwrap().is_none(), "the later commit must wait behind the pending part");
    assert!(merger.watermark().unwrap() < a.first);
    let b = w[1].append(&[part(id, b"part b")]).unwrap();
    log.txns().commit(id);
    w[0].advance_high_water(clock.now_ms() + 3);
    w[1].advance_high_water(clock.now_ms() + 3);
    let order: Vec<Ulid> =
        std::iter::from_fn(|| merger.next().unwrap().map(|r| r.frame.id)).collect();
    assert_eq!(order, [a.first, later, b.first]);
}

#[test]
fn the_watermark_stays_below_an_undecided_part_queued_behind_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(9_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(2, &clock)).unwrap();
    let plain = append_batch(&mut w[0], 0, 1)[0];
    w[1].advance_high_water(clock.now_ms());
    let mut merger = Merger::new(log.shards(), Start::Beginning);
    // Shard 0's commit is queued in the merger: it will not peek past it.
    merger.watermark().unwrap();
    clock.advance_ms(1);
    let id = log.txns().new_id(1, false);
    log.begin_txn(id, &[0]);
    let part = w[0].append(&[part(id, b"part")]).unwrap();
    clock.advance_ms(1);
    w[0].advance_high_water(clock.now_ms());
    w[1].advance_high_water(clock.now_ms());
    // Every shard's mark is past the part, but the part is undecided: the watermark must not
    // claim it final.
    let wm = merger.watermark().unwrap();
    assert!(wm < part.first, "watermark {wm} passes the undecided part {}", part.first);
    assert_eq!(merger.next().unwrap().map(|r| r.frame.id), Some(plain));
    assert!(merger.next().unwrap().is_none(), "the merge stops before the part");
    log.txns().commit(id);
    assert!(merger.watermark().unwrap() >= part.first);
    assert_eq!(merger.next().unwrap().map(|r| r.frame.id), Some(part.first));
}

#[test]
fn picks_stay_readable_after_retention_retires_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions { retention: Retention { max_age_ms: None, max_bytes: Some(1) }, ..opts(2) };
    let (log, mut w) = Log::open(dir.path(), o).unwrap();
    let mut written = Vec::new();
    for b in 0..600 {
        written.extend(append_batch(&mut w[(b % 2) as usize], b, 4));
    }
    for x in w.iter_mut() {
        x.advance_high_water(u64::MAX / 2);
    }
    let mut merger = Merger::new(log.shards(), Start::Beginning);
    let mut picks = Picks::default();
    let mut payloads = Vec::new();
    while let Some(p) = merger.next_placed().unwrap() {
        payloads.push(p.record().frame.payload.to_vec());
        picks.push(&p);
    }
    drop(merger);
    assert_eq!(picks.len(), written.len());
    assert_eq!(picks.data_bytes(), payloads.iter().map(Vec::len).sum::<usize>());
    // Every sealed segment goes; the picks still hold theirs.
    assert!(log.apply_retention(0).unwrap() > 0);
    let back: Vec<_> = picks.records().map(|r| r.frame.payload.to_vec()).collect();
    assert_eq!(back, payloads);
    written.sort();
    assert_eq!(picks.records().map(|r| r.frame.id).collect::<Vec<_>>(), written);
}

#[test]
fn writers_advanced_to_the_same_ulid_still_hand_out_different_ones() {
    // A strong read nudges every idle writer to the ULID it waits for; their next commits, in
    // the same millisecond, must not share an ID (a page ending on one would skip the other).
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(3, &clock)).unwrap();
    let target = append_batch(&mut w[0], 0, 1)[0];
    for x in &mut w[1..] {
        assert_eq!(x.advance_high_water_to(target), target);
    }
    let mut ids = vec![target];
    for (i, x) in w.iter_mut().enumerate() {
        ids.extend(append_batch(x, 1 + i as u64, 2));
    }
    for x in w.iter_mut() {
        x.advance_high_water(5_010);
    }
    let mut merger = Merger::new(log.shards(), Start::After(target));
    let mut after = Vec::new();
    while let Some(r) = merger.next().unwrap() {
        after.push(r.frame.id);
    }
    ids.sort();
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "one ULID twice: {ids:?}");
    assert_eq!(after, ids[1..], "after= the target skips nothing else");
}

#[test]
fn the_watermark_as_read_never_passes_a_commit_published_after_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(3_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(2, &clock)).unwrap();
    let first = append_batch(&mut w[0], 0, 1)[0];
    w[1].advance_high_water(clock.now_ms() + 1);
    let mut merger = Merger::new(log.shards(), Start::Beginning);
    assert_eq!(merger.next().unwrap().map(|r| r.frame.id), Some(first));
    assert!(merger.next().unwrap().is_none());
    let as_read = merger.watermark_as_read().unwrap();
    assert!(as_read >= first);
    // Published after the read: a fresh watermark passes it, the one the read reports not.
    clock.advance_ms(2);
    let later = append_batch(&mut w[0], 1, 1)[0];
    w[1].advance_high_water(clock.now_ms() + 1);
    assert!(merger.watermark().unwrap() >= later);
    assert!(merger.watermark_as_read().unwrap() < later);
    assert_eq!(merger.next().unwrap().map(|r| r.frame.id), Some(later));
    assert!(merger.watermark_as_read().unwrap() >= later);
}

#[test]
fn the_watermark_as_read_is_at_or_above_every_commit_returned_under_an_undecided_floor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(4_000);
    let (log, mut w) = Log::open(dir.path(), opts_with_clock(2, &clock)).unwrap();
    w[1].advance_high_water(clock.now_ms());
    // Undecided, with its floor at shard 1's mark now, and no part written yet.
    let id = log.txns().new_id(2, false);
    log.begin_txn(id, &[0, 1]);
    clock.advance_ms(2);
    let c = append_batch(&mut w[0], 0, 1)[0];
    w[1].advance_high_water(clock.now_ms() + 1);
    assert!(log.watermark() < c, "the floor holds the log's watermark below the commit");
    let mut merger = Merger::new(log.shards(), Start::Beginning);
    assert_eq!(merger.next().unwrap().map(|r| r.frame.id), Some(c));
    assert!(merger.next().unwrap().is_none());
    assert!(merger.watermark_as_read().unwrap() >= c, "a page never reports below its commits");
    log.txns().commit(id);
}
