//! Cross-shard transactions: readers stop at a pending part, skip an aborted one, and recovery
//! aborts what a crash left undecided or incomplete.

use super::*;
use storage::txn;

fn payloads(log: &Log, shard: usize) -> Vec<Vec<u8>> {
    read_all(log, shard).into_iter().map(|r| r.1).collect()
}

#[test]
fn readers_wait_at_a_pending_part_and_see_it_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
    w[0].append(&[NewRecord::payload(b"before")]).unwrap();
    let id = txn::new_id(2);
    log.begin_txn(id).unwrap();
    let a = w[0].append(&[part(id, b"a1"), part(id, b"a2")]).unwrap();
    w[0].append(&[NewRecord::payload(b"after")]).unwrap();
    let mut follower = log.shard(0).cursor(Start::Beginning);
    assert_eq!(follower.next().unwrap().unwrap().frame.payload, b"before");
    assert!(follower.next().unwrap().is_none(), "stops at the pending part");
    assert_eq!(payloads(&log, 0), [b"before".to_vec()]);
    let b = w[1].append(&[part(id, b"b1")]).unwrap();
    assert!(payloads(&log, 1).is_empty());
    log.txns().commit(id, vec![(0, a.first.0, 2), (1, b.first.0, 1)], true).unwrap();
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
    let id = txn::new_id(2);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        log.begin_txn(id).unwrap();
        w[0].append(&[part(id, b"x")]).unwrap();
        w[0].append(&[NewRecord::payload(b"y")]).unwrap();
        log.txns().abort(id).unwrap();
        assert_eq!(payloads(&log, 0), [b"y".to_vec()]);
    }
    let (log, _w) = Log::open(dir.path(), opts(2)).unwrap();
    assert_eq!(payloads(&log, 0), [b"y".to_vec()]);
    assert_eq!(log.txns().visibility(id), storage::Visibility::Aborted);
}

#[test]
fn recovery_aborts_undecided_and_incomplete_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (undecided, incomplete, whole) = (txn::new_id(2), txn::new_id(2), txn::new_id(2));
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        // Crashed before deciding.
        log.begin_txn(undecided).unwrap();
        w[0].append(&[part(undecided, b"u0")]).unwrap();
        // Committed, but the part on shard 1 is gone (a machine crash lost it): simulated by
        // naming a part that was never written.
        log.begin_txn(incomplete).unwrap();
        let a = w[0].append(&[part(incomplete, b"i0")]).unwrap();
        log.txns()
            .commit(incomplete, vec![(0, a.first.0, 1), (1, a.first.0 + 1_000, 1)], true)
            .unwrap();
        // Committed and whole.
        log.begin_txn(whole).unwrap();
        let a = w[0].append(&[part(whole, b"w0")]).unwrap();
        let b = w[1].append(&[part(whole, b"w1")]).unwrap();
        log.txns().commit(whole, vec![(0, a.first.0, 1), (1, b.first.0, 1)], true).unwrap();
        w[0].sync().unwrap();
        w[1].sync().unwrap();
        // A crash now: the journal as it is, not as the close (which settles) would leave it.
        let journal = std::fs::read(dir.path().join("txn.journal")).unwrap();
        drop((log, w));
        std::fs::write(dir.path().join("txn.journal"), journal).unwrap();
    }
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    let mut aborted = report.aborted_txns.clone();
    aborted.sort();
    let mut expected = vec![undecided, incomplete];
    expected.sort();
    assert_eq!(aborted, expected);
    assert_eq!(payloads(&log, 0), [b"w0".to_vec()]);
    assert_eq!(payloads(&log, 1), [b"w1".to_vec()]);
    drop((log, _w));
    // Decisions are durable: a second recovery finds nothing new to decide.
    let (log, _w, report) = Log::open_with_report(dir.path(), opts(2)).unwrap();
    assert!(report.aborted_txns.is_empty(), "{report:?}");
    assert_eq!(payloads(&log, 0), [b"w0".to_vec()]);
}

#[test]
fn a_torn_journal_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let id = txn::new_id(2);
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        log.begin_txn(id).unwrap();
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
fn settled_transactions_leave_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        let id = log.txns().new_id(2);
        log.begin_txn(id).unwrap();
        let a = w[0].append(&[part(id, b"a")]).unwrap();
        let b = w[1].append(&[part(id, b"b")]).unwrap();
        log.txns().commit(id, vec![(0, a.first.0, 1), (1, b.first.0, 1)], false).unwrap();
        // Closing checkpoints: the parts are on disk, the transaction is settled.
    }
    let journal = std::fs::read(dir.path().join("txn.journal")).unwrap();
    assert_eq!(journal.len(), storage::format::TXN_JOURNAL_HEADER_LEN, "nothing left to decide");
    let (log, _w) = Log::open(dir.path(), opts(2)).unwrap();
    assert_eq!((payloads(&log, 0), payloads(&log, 1)), (vec![b"a".to_vec()], vec![b"b".to_vec()]));
}
