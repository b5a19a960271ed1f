//! Transactions: readers stop at a pending part and skip an aborted one; recovery commits a
//! transaction exactly when all its parts (and its outside participant) are there, reads only
//! from the journal's cut, and reads what earlier builds journaled.

use super::*;
use storage::format::{self, TxnRecord};
use storage::txn;

fn payloads(log: &Log, shard: usize) -> Vec<Vec<u8>> {
    read_all(log, shard).into_iter().map(|r| r.1).collect()
}

/// An outside participant holding exactly `ids`.
#[derive(Debug)]
struct Holds(Vec<u64>);

impl storage::External for Holds {
    fn holds(&self, id: u64) -> bool {
        self.0.contains(&id)
    }
}

fn opts_holding(shards: u32, ids: Vec<u64>) -> LogOptions {
    LogOptions { external: Arc::new(Holds(ids)), ..opts(shards) }
}

#[test]
fn readers_wait_at_a_pending_part_and_see_it_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
    w[0].append(&[NewRecord::payload(b"before")]).unwrap();
    let id = txn::new_id(2, false);
    log.begin_txn(id, &[0, 1]);
    w[0].append(&[part(id, b"a1"), part(id, b"a2")]).unwrap();
    w[0].append(&[NewRecord::payload(b"after")]).unwrap();
    let mut follower = log.shard(0).cursor(Start::Beginning);
    assert_eq!(follower.next().unwrap().unwrap().frame.payload, b"before");
    assert!(follower.next().unwrap().is_none(), "stops at the pending part");
    assert_eq!(payloads(&log, 0), [b"before".to_vec()]);
    // A lookup passes over the pending part to the visible commit behind it.
    let mut lookup = log.shard(0).lookup_cursor(Start::After(read_all(&log, 0)[0].0));
    assert_eq!(lookup.next().unwrap().unwrap().frame.payload, b"after");
    w[1].append(&[part(id, b"b1")]).unwrap();
    assert!(payloads(&log, 1).is_empty());
    assert_eq!(log.txns().pending_count(), 1);
    log.txns().commit(id);
    let rest: Vec<Vec<u8>> =
        std::iter::from_fn(|| follower.next().unwrap().map(|r| r.frame.payload.to_vec())).collect();
    assert_eq!(rest, [b"a1".to_vec(), b"a2".to_vec(), b"after".to_vec()]);
    assert_eq!(payloads(&log, 1), [b"b1".to_vec()]);
    drop((log, w));
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert!(report.aborted_txns.is_empty());
    assert_eq!(payloads(&log, 0).len(), 4);
}

#[test]
fn an_aborted_transaction_stays_invisible_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = txn::new_id(2, false);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        log.begin_txn(id, &[0, 1]);
        let x = w[0].append(&[part(id, b"x")]).unwrap();
        w[1].append(&[part(id, b"x1")]).unwrap();
        w[0].append(&[NewRecord::payload(b"y")]).unwrap();
        // Both parts are written (say the sync failed): only the journaled abort hides them.
        log.txns().abort(id, x.first.0.max(log.shard(1).high_water().0)).unwrap();
        assert_eq!(payloads(&log, 0), [b"y".to_vec()]);
    }
    let (log, _w) = Log::open(dir.path(), opts(2)).unwrap();
    assert_eq!(payloads(&log, 0), [b"y".to_vec()]);
    assert!(payloads(&log, 1).is_empty());
    assert_eq!(log.txns().visibility(id), storage::Visibility::Aborted);
}

#[test]
fn recovery_commits_exactly_the_transactions_whose_parts_are_all_there() {
    let dir = tempfile::tempdir().unwrap();
    let whole = txn::new_id(2, false);
    let missing = txn::new_id(2, false);
    let held = txn::new_id(1, true);
    let unheld = txn::new_id(1, true);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        // Undecided at the "crash" (the log is dropped with them pending, as a kill leaves
        // them): both parts written.
        log.begin_txn(whole, &[0, 1]);
        w[0].append(&[part(whole, b"w0")]).unwrap();
        w[1].append(&[part(whole, b"w1")]).unwrap();
        // One part of two written.
        log.begin_txn(missing, &[0, 1]);
        w[0].append(&[part(missing, b"m0")]).unwrap();
        // One shard part each, and an outside participant that holds only `held`.
        log.begin_txn(held, &[1]);
        w[1].append(&[part(held, b"h1")]).unwrap();
        log.begin_txn(unheld, &[0]);
        w[0].append(&[part(unheld, b"u0")]).unwrap();
        w[0].append(&[NewRecord::payload(b"plain")]).unwrap();
        assert_eq!(log.txns().pending_count(), 4);
        // Checkpoints while they are undecided must not let the cut pass their parts.
        log.checkpoint().unwrap();
    }
    let (log, w, report) = Log::open_with_report(dir.path(), opts_holding(2, vec![held])).unwrap();
    let mut aborted = report.aborted_txns.clone();
    aborted.sort();
    let mut expected = vec![missing, unheld];
    expected.sort();
    assert_eq!(aborted, expected);
    assert_eq!(payloads(&log, 0), [b"w0".to_vec(), b"plain".to_vec()]);
    assert_eq!(payloads(&log, 1), [b"w1".to_vec(), b"h1".to_vec()]);
    drop((log, w));
    // Decisions are durable: a second recovery finds nothing to decide and reads nothing.
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert!(report.aborted_txns.is_empty(), "{report:?}");
    assert_eq!(report.txn_scan_commits, 0, "the cut moved past everything decided");
    assert_eq!(payloads(&log, 0), [b"w0".to_vec(), b"plain".to_vec()]);
    assert_eq!(payloads(&log, 1), [b"w1".to_vec(), b"h1".to_vec()]);
}

#[test]
fn recovery_reads_only_from_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let open = txn::new_id(2, false);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        for i in 0..50u32 {
            let id = log.txns().new_id(2, false);
            log.begin_txn(id, &[0, 1]);
            let p = i.to_le_bytes();
            w[0].append(&[part(id, &p)]).unwrap();
            w[1].append(&[part(id, &p)]).unwrap();
            log.txns().commit(id);
        }
        // A checkpoint settles the fifty; the cut moves past them.
        log.checkpoint().unwrap();
        drop(w);
        drop(log);
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        w[0].append(&[NewRecord::payload(b"plain")]).unwrap();
        log.begin_txn(open, &[0, 1]);
        w[1].append(&[part(open, b"o1")]).unwrap();
    }
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert_eq!(report.aborted_txns, [open]);
    assert_eq!(report.txn_scan_commits, 2, "read from the cut: the plain commit and the part");
    assert_eq!(payloads(&log, 0).len(), 51);
    assert_eq!(payloads(&log, 1).len(), 50);
}

#[test]
fn an_earlier_builds_journal_is_decided_as_it_would_have_been() {
    let dir = tempfile::tempdir().unwrap();
    let (undecided, whole) = (txn::new_id(2, false), txn::new_id(2, false));
    let mut records = Vec::new();
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        log.begin_txn(undecided, &[0, 1]);
        w[0].append(&[part(undecided, b"u0")]).unwrap();
        w[1].append(&[part(undecided, b"u1")]).unwrap();
        log.begin_txn(whole, &[0, 1]);
        let a = w[0].append(&[part(whole, b"w0")]).unwrap();
        let b = w[1].append(&[part(whole, b"w1")]).unwrap();
        records.push(TxnRecord::Begin { id: undecided, parts: 2 });
        records.push(TxnRecord::Begin { id: whole, parts: 2 });
        records.push(TxnRecord::Commit {
            id: whole,
            parts: vec![(0, a.first.0, 1), (1, b.first.0, 1)],
        });
    }
    // What an earlier build left: a version 1 journal of begin and commit records, no cut.
    let mut bytes = format::encode_txn_journal_header().to_vec();
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    for r in &records {
        bytes.extend_from_slice(&format::encode_txn_record(r));
    }
    std::fs::write(dir.path().join("txn.journal"), bytes).unwrap();
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert_eq!(report.aborted_txns, [undecided], "a begin without a commit never was acknowledged");
    assert_eq!(payloads(&log, 0), [b"w0".to_vec()]);
    assert_eq!(payloads(&log, 1), [b"w1".to_vec()]);
    // Rewritten as version 2, which an earlier build refuses rather than misread.
    let now = std::fs::read(dir.path().join("txn.journal")).unwrap();
    assert_eq!(now[8..10], format::TXN_JOURNAL_VERSION.to_le_bytes());
    let mut future = now.clone();
    future[8..10].copy_from_slice(&3u16.to_le_bytes());
    assert!(format::decode_txn_journal_header(&future).is_err());
}

#[test]
fn a_torn_journal_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let id = txn::new_id(2, false);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        log.begin_txn(id, &[0, 1]);
        w[0].append(&[part(id, b"t")]).unwrap();
    }
    let journal = dir.path().join("txn.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[7, 0, 0, 0, 1, 2]); // half a record
    std::fs::write(&journal, bytes).unwrap();
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert_eq!(report.aborted_txns, [id]);
    assert!(payloads(&log, 0).is_empty());
}

#[test]
fn committing_writes_nothing_and_settled_transactions_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        let before = std::fs::read(dir.path().join("txn.journal")).unwrap();
        let id = log.txns().new_id(2, false);
        log.begin_txn(id, &[0, 1]);
        w[0].append(&[part(id, b"a")]).unwrap();
        w[1].append(&[part(id, b"b")]).unwrap();
        log.txns().commit(id);
        assert_eq!(std::fs::read(dir.path().join("txn.journal")).unwrap(), before);
        // Closing checkpoints: the parts are on disk, the transaction is settled.
    }
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert_eq!(report.txn_scan_commits, 0);
    assert_eq!(log.txns().aborted_count(), 0);
    assert_eq!((payloads(&log, 0), payloads(&log, 1)), (vec![b"a".to_vec()], vec![b"b".to_vec()]));
}

#[test]
fn an_abort_is_forgotten_once_retention_removed_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
    let id = log.txns().new_id(1, false);
    log.begin_txn(id, &[0]);
    let p = w[0].append(&[part(id, &[7u8; 1000])]).unwrap();
    log.txns().abort(id, p.first.0).unwrap();
    assert_eq!(log.txns().aborted_count(), 1);
    // Fill past a few 64 KiB segments, then keep only the newest bytes.
    for _ in 0..300 {
        w[0].append(&[NewRecord::payload(&[1u8; 1000])]).unwrap();
    }
    log.checkpoint().unwrap();
    log.set_retention(storage::Retention { max_age_ms: None, max_bytes: Some(100_000) }).unwrap();
    assert!(log.apply_retention(u64::MAX / 2).unwrap() > 0);
    log.checkpoint().unwrap();
    assert_eq!(log.txns().aborted_count(), 0, "its parts are gone, so is its record");
    assert_eq!(log.txns().visibility(id), storage::Visibility::Visible);
}

#[test]
fn a_settled_transaction_with_parts_on_both_sides_of_a_checkpoint_stays_committed() {
    let dir = tempfile::tempdir().unwrap();
    let straddling = txn::new_id(2, false);
    let later = txn::new_id(2, false);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        log.begin_txn(straddling, &[0, 1]);
        w[0].append(&[part(straddling, b"s0")]).unwrap();
        // A checkpoint opens an epoch between its two parts...
        log.checkpoint().unwrap();
        log.begin_txn(later, &[0, 1]);
        w[1].append(&[part(straddling, b"s1")]).unwrap();
        log.txns().commit(straddling);
        // ...and the next one settles it while a transaction of the new epoch is undecided,
        // so the cut cannot pass the epoch it began in.
        log.checkpoint().unwrap();
        w[0].append(&[part(later, b"l0")]).unwrap();
    }
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert_eq!(report.aborted_txns, [later], "only the undecided one is aborted");
    assert_eq!(payloads(&log, 0), [b"s0".to_vec()]);
    assert_eq!(payloads(&log, 1), [b"s1".to_vec()]);
}

#[test]
fn the_cut_keeps_up_while_transactions_always_overlap_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let open = txn::new_id(2, false);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        // Every checkpoint finds one transaction in flight, begun in the epoch before.
        let mut prev = None;
        for i in 0..40u32 {
            let id = log.txns().new_id(2, false);
            log.begin_txn(id, &[0, 1]);
            w[0].append(&[part(id, &i.to_le_bytes())]).unwrap();
            if let Some(p) = prev.take() {
                w[1].append(&[part(p, b"late")]).unwrap();
                log.txns().commit(p);
            }
            log.checkpoint().unwrap();
            prev = Some(id);
        }
        let p = prev.unwrap();
        w[1].append(&[part(p, b"late")]).unwrap();
        log.txns().commit(p);
        log.checkpoint().unwrap();
        log.begin_txn(open, &[0, 1]);
        w[0].append(&[part(open, b"o")]).unwrap();
    }
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert_eq!(report.aborted_txns, [open]);
    assert!(
        report.txn_scan_commits <= 3,
        "read {} commits: the cut fell behind",
        report.txn_scan_commits
    );
    assert_eq!(payloads(&log, 0).len(), 40);
    assert_eq!(payloads(&log, 1).len(), 40);
}
