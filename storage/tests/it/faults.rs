//! Injected I/O faults (`storage::fio`): random schedules of failed writes, torn writes, failed
//! fdatasyncs, preallocations and renames, with `EIO` and `ENOSPC`, against appends and syncs;
//! then a clean reopen must hold exactly the acknowledged commits. Also: no sync is
//! acknowledged after a failed one on the same shard, the transaction journal keeps a record
//! whose fdatasync failed, a full disk is `DiskFull` and heals, and a log opens and serves
//! reads on a disk where nothing can be written.

use super::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use storage::StorageError;
use storage::fio::{self, Fault, Op};

/// What a schedule did: faults injected, by operation.
type Injected = Arc<Mutex<HashMap<(Op, &'static str), u64>>>;

fn random_plan(seed: u64, one_in: u32, injected: Injected) -> fio::Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    Box::new(move |op, _path: &Path| {
        if rng.u32(0..one_in) != 0 {
            return None;
        }
        let fault = match rng.u8(0..3) {
            0 => Fault::Eio,
            1 => Fault::Enospc,
            _ => Fault::Tear,
        };
        let name = match fault {
            Fault::Eio => "eio",
            Fault::Enospc => "enospc",
            Fault::Tear => "tear",
        };
        *injected.lock().unwrap().entry((op, name)).or_default() += 1;
        Some(fault)
    })
}

#[test]
fn random_fault_schedules_keep_exactly_the_acknowledged_commits() {
    let (rounds, base) = fault_rounds_and_seed();
    let injected: Injected = Default::default();
    let mut checked = 0usize;
    for round in 0..rounds {
        let seed = base.wrapping_add(round);
        let dir = tempfile::tempdir().unwrap();
        // Created whole first: creation under faults is the registry's business.
        drop(Log::open(dir.path(), opts(2)).unwrap());
        let plan = fio::install(dir.path(), random_plan(seed, 12, Arc::clone(&injected)));
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        let mut acked: HashMap<Ulid, Vec<u8>> = HashMap::new();
        let opened = Log::open(dir.path(), opts(2));
        if let Ok((log, mut writers)) = opened {
            // Per shard: a sync failed (so no later sync may succeed); anything failed.
            let mut sync_failed = [false; 2];
            let mut failed = [false; 2];
            for step in 0..400u64 {
                let s = rng.usize(0..2);
                let n = rng.u64(1..20);
                let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(step, i, n)).collect();
                let recs: Vec<NewRecord<'_>> =
                    payloads.iter().map(|p| NewRecord::payload(p)).collect();
                match writers[s].append(&recs) {
                    Ok(range) => {
                        for (id, p) in range.iter().zip(payloads) {
                            acked.insert(id, p);
                        }
                    }
                    Err(StorageError::Poisoned { .. }) => {
                        assert!(failed[s], "seed {seed}: poisoned without a failure");
                    }
                    Err(StorageError::DiskFull { .. } | StorageError::Io { .. }) => {
                        failed[s] = true;
                    }
                    Err(e) => panic!("seed {seed}: unexpected {e}"),
                }
                if rng.u8(0..4) == 0 {
                    match writers[s].sync() {
                        Ok(()) => assert!(
                            !sync_failed[s],
                            "seed {seed} step {step}: a sync succeeded after one failed on \
                             shard {s}: acknowledged over lost pages"
                        ),
                        Err(_) => {
                            sync_failed[s] = true;
                            failed[s] = true;
                        }
                    }
                }
            }
            drop(writers);
            drop(log);
        }
        drop(plan);
        let (log, _w) = Log::open(dir.path(), opts(2))
            .unwrap_or_else(|e| panic!("seed {seed}: clean reopen failed: {e}"));
        let mut stored: HashMap<Ulid, Vec<u8>> = HashMap::new();
        for s in 0..2 {
            stored.extend(read_all(&log, s));
        }
        // The page cache kept every acknowledged byte (a process crash, not a machine crash):
        // all of them are there, and nothing that was refused.
        for (id, p) in &acked {
            assert_eq!(stored.get(id), Some(p), "seed {seed}: acknowledged {id} lost");
        }
        assert_eq!(stored.len(), acked.len(), "seed {seed}: a refused write became visible");
        checked += acked.len();
    }
    let injected = injected.lock().unwrap();
    eprintln!(
        "{rounds} schedules from seed {base}, {checked} commits checked, faults {injected:?}"
    );
    for op in [Op::Write, Op::Sync] {
        assert!(injected.keys().any(|(o, _)| *o == op), "no {op:?} fault was injected");
    }
}

#[test]
fn a_failed_background_flush_poisons_the_segment_for_later_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
    append_batch(&mut w[0], 0, 3);
    let fail_next_sync = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&fail_next_sync);
    let plan = fio::install(
        dir.path(),
        Box::new(move |op, _: &Path| {
            (op == Op::Sync && flag.swap(false, std::sync::atomic::Ordering::SeqCst))
                .then_some(Fault::Eio)
        }),
    );
    // The background flush (here called directly) fails once; the kernel would have marked
    // the pages clean, so a later fdatasync would succeed over lost bytes.
    assert!(log.shard(0).flush().is_err());
    assert!(!fail_next_sync.load(std::sync::atomic::Ordering::SeqCst));
    assert!(w[0].sync().is_err(), "a sync after a failed flush must not succeed");
    let more = [NewRecord::payload(b"after")];
    assert!(matches!(w[0].append(&more), Err(StorageError::Poisoned { .. })));
    drop(plan);
}

#[test]
fn a_journal_record_whose_fdatasync_failed_survives_a_later_failed_append() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (storage::txn::new_id(2, false), storage::txn::new_id(2, false));
    {
        let (log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        for id in [first, second] {
            log.begin_txn(id, &[0, 1]);
            w[0].append(&[part(id, b"part 0")]).unwrap();
            w[1].append(&[part(id, b"part 1")]).unwrap();
        }
        w[0].sync().unwrap();
        w[1].sync().unwrap();
        let calls = Arc::new(Mutex::new(0u32));
        let c = Arc::clone(&calls);
        let journal = dir.path().join("txn.journal");
        let plan = fio::install(
            dir.path(),
            Box::new(move |op, path: &Path| {
                if path != journal {
                    return None;
                }
                let mut n = c.lock().unwrap();
                *n += 1;
                // First abort: written, its fdatasync fails. Second: its write fails.
                match (*n, op) {
                    (2, Op::Sync) => Some(Fault::Eio),
                    (3, Op::Write) => Some(Fault::Tear),
                    _ => None,
                }
            }),
        );
        assert!(log.txns().abort(first, u128::MAX).is_err(), "its fdatasync failed");
        assert!(log.txns().abort(second, u128::MAX).is_err(), "its write failed");
        drop(plan);
    }
    // Both parts of `first` are on disk: without its abort record recovery would commit it.
    let (log, _w) = Log::open(dir.path(), opts(2)).unwrap();
    let mut visible = Vec::new();
    for s in 0..2 {
        let mut c = log.shard(s).cursor(Start::Beginning);
        while let Some(r) = c.next().unwrap() {
            visible.push(r.frame.aux);
        }
    }
    assert!(
        !visible.contains(&first),
        "the first abort's record was cut off by the second's failed append: {visible:?}"
    );
}

#[test]
fn disk_full_on_writes_is_disk_full_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
    let kept = append_batch(&mut w[0], 0, 2);
    let full = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = Arc::clone(&full);
    let plan = fio::install(
        dir.path(),
        Box::new(move |op, _: &Path| {
            (f.load(std::sync::atomic::Ordering::SeqCst) && op == Op::Write)
                .then_some(Fault::Enospc)
        }),
    );
    let recs = [NewRecord::payload(b"no room")];
    assert!(matches!(w[0].append(&recs), Err(StorageError::DiskFull { .. })));
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    let later = w[0].append(&[NewRecord::payload(b"room again")]).unwrap().first;
    w[0].sync().unwrap();
    drop(plan);
    let ids: Vec<Ulid> = read_all(&log, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(ids, [kept[0], kept[1], later], "the refused write left nothing");
}

#[test]
fn a_log_opens_and_serves_reads_on_a_disk_where_nothing_can_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let (_log, mut w) = Log::open(dir.path(), opts(2)).unwrap();
        let mut ids = append_batch(&mut w[0], 0, 5);
        ids.extend(append_batch(&mut w[1], 1, 5));
        w[0].sync().unwrap();
        w[1].sync().unwrap();
        ids
    };
    let plan = fio::install(dir.path(), Box::new(|_, _: &Path| Some(Fault::Enospc)));
    // Opening to write may need room (a seal, a checkpoint, the next segment): it says so
    // clearly, and the read-only open, which writes nothing, serves every commit.
    match Log::open(dir.path(), opts(2)) {
        Ok(_) | Err(StorageError::DiskFull { .. }) => {}
        Err(e) => panic!("not a disk-full error: {e}"),
    }
    let (log, _) = Log::open_read_only(dir.path(), Arc::new(storage::NoExternal))
        .expect("a full disk must not stop a read-only open");
    let mut stored: Vec<Ulid> = (0..2).flat_map(|s| read_all(&log, s)).map(|r| r.0).collect();
    stored.sort();
    let mut want = written;
    want.sort();
    assert_eq!(stored, want);
    drop(plan);
}
