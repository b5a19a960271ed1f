//! Revision indexes against a model: random histories of numbered appends, transactions that
//! commit, abort or are left undecided, segment rolls (so snapshots) and reopens. After every
//! reopen each stream's next revision is what the model counted, the stored revisions of every
//! stream are 0, 1, 2, … without a gap, and a reopen after rolls starts from a snapshot.
//!
//! What it is not: a test of the service's rules for waiting on held streams; it numbers the
//! way the service's writers do (never a stream an undecided transaction holds).

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use storage::format::{NO_REVISION, flags};
use storage::{key_hash, txn};

const SHARDS: u32 = 2;
const KEYS: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    /// `n` commits of stream `key`, outside any transaction.
    Append {
        key: u8,
        n: u64,
    },
    /// A transaction over `keys` (one part per shard touched); `missing` (when left undecided)
    /// declares one part more than it writes, so recovery must abort it.
    Txn {
        keys: Vec<u8>,
        missing: bool,
        decide: Decide,
    },
    /// Unkeyed bulk, to roll segments (and so write snapshots).
    Pad {
        kib: usize,
    },
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum Decide {
    Commit,
    Abort,
    Leave,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, 1..4u64).prop_map(|(key, n)| Op::Append { key, n }),
        3 => (
            proptest::collection::btree_set(0..KEYS, 1..4),
            any::<bool>(),
            prop_oneof![Just(Decide::Commit), Just(Decide::Abort), Just(Decide::Leave)]
        )
            .prop_map(|(keys, missing, decide)| Op::Txn {
                keys: keys.into_iter().collect(),
                missing,
                decide
            }),
        1 => (8..48usize).prop_map(|kib| Op::Pad { kib }),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key{k}").into_bytes()
}

fn shard_of(k: u8) -> usize {
    (k as u32 % SHARDS) as usize
}

/// Appends `n` commits of stream `k` to `w` numbered as the service does, in transaction
/// `txn` if given.
fn numbered(w: &mut ShardWriter, k: u8, n: u64, txn: Option<u64>) {
    let kb = key(k);
    let h = key_hash(&kb);
    let first = w.revisions().next(h);
    let payload = b"p".to_vec();
    let recs: Vec<NewRecord<'_>> = (0..n)
        .map(|i| NewRecord {
            key: &kb,
            payload: &payload,
            revision: first + i,
            flags: if txn.is_some() { flags::TXN_PART } else { 0 },
            aux: txn.unwrap_or(0),
            ..NewRecord::payload(b"")
        })
        .collect();
    w.append(&recs).unwrap();
    w.revisions_mut().0.assign(h, n, txn);
}

fn settle(w: &mut [ShardWriter]) {
    for w in w {
        let (r, t) = w.revisions_mut();
        r.settle(t);
    }
}

/// Every stream's stored revisions, in shard order.
fn stored(log: &Log) -> BTreeMap<Vec<u8>, Vec<u64>> {
    let mut out: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for s in 0..log.shards().len() {
        let mut c = log.shard(s).cursor(Start::Beginning);
        while let Some(r) = c.next().unwrap() {
            if r.frame.key.is_empty() {
                assert_eq!(r.frame.revision, NO_REVISION);
            } else {
                out.entry(r.frame.key.to_vec()).or_default().push(r.frame.revision);
            }
        }
    }
    out
}

/// A transaction left undecided: its id, its commits and whether all its parts are written.
type Undecided = (u64, Vec<(u8, u64)>, bool);

/// Runs `ops`; answers how many snapshots the reopens used.
fn run(ops: &[Op]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut w) = Log::open(dir.path(), opts(SHARDS)).unwrap();
    let mut model: HashMap<u8, u64> = HashMap::new();
    let mut undecided: Vec<Undecided> = Vec::new();
    let mut snapshots_used = 0;
    let check = |log: &Log, w: &[ShardWriter], model: &HashMap<u8, u64>| {
        for k in 0..KEYS {
            let want = model.get(&k).copied().unwrap_or(0);
            let next = w[shard_of(k)].revisions().next(key_hash(&key(k)));
            assert_eq!(next, want, "stream key{k}'s next revision");
        }
        for (k, revs) in stored(log) {
            let want: Vec<u64> = (0..revs.len() as u64).collect();
            assert_eq!(revs, want, "stream {:?} stored", String::from_utf8_lossy(&k));
        }
    };
    for op in ops {
        settle(&mut w);
        let held =
            |w: &[ShardWriter], k: u8| w[shard_of(k)].revisions().undecided_on(key_hash(&key(k)));
        match op {
            Op::Append { key: k, n } => {
                if held(&w, *k).is_some() {
                    continue;
                }
                numbered(&mut w[shard_of(*k)], *k, *n, None);
                *model.entry(*k).or_default() += n;
            }
            Op::Txn { keys, missing, decide } => {
                if keys.iter().any(|&k| held(&w, k).is_some()) {
                    continue;
                }
                let mut shards: Vec<u32> = keys.iter().map(|&k| shard_of(k) as u32).collect();
                shards.sort();
                shards.dedup();
                // Only a transaction left undecided may lack a part: the service commits one
                // once all its parts are written, and recovery judges the others.
                let missing = *missing && matches!(decide, Decide::Leave);
                let parts = shards.len() as u16 + u16::from(missing);
                let id = txn::new_id(parts, false);
                log.begin_txn(id, &shards);
                for &k in keys {
                    numbered(&mut w[shard_of(k)], k, 1, Some(id));
                }
                let commits: Vec<(u8, u64)> = keys.iter().map(|&k| (k, 1)).collect();
                match decide {
                    Decide::Commit => {
                        log.txns().commit(id);
                        for (k, n) in commits {
                            *model.entry(k).or_default() += n;
                        }
                    }
                    Decide::Abort => {
                        let last = log.shards().iter().map(|s| s.high_water().0).max().unwrap();
                        log.txns().abort(id, last).unwrap();
                    }
                    Decide::Leave => undecided.push((id, commits, !missing)),
                }
            }
            Op::Pad { kib } => {
                let pad = vec![b'x'; 1024];
                let recs: Vec<NewRecord<'_>> =
                    (0..*kib).map(|_| NewRecord::payload(&pad)).collect();
                for s in w.iter_mut() {
                    s.append(&recs).unwrap();
                }
            }
            Op::Reopen => {
                drop((log, w));
                let snapshots = (0..SHARDS)
                    .filter(|s| {
                        let shard = dir.path().join(format!("shards/{s:05}"));
                        shard.join(storage::revisions::SNAPSHOT_FILE).exists()
                    })
                    .count() as u64;
                // Recovery decides what was left: whole transactions commit, others abort.
                for (_, commits, whole) in undecided.drain(..) {
                    if whole {
                        for (k, n) in commits {
                            *model.entry(k).or_default() += n;
                        }
                    }
                }
                let report;
                (log, w, report) = Log::open_with_report(dir.path(), opts(SHARDS)).unwrap();
                // A clean reopen uses every snapshot a roll wrote (none covers more than its
                // shard holds), and reads only what comes after it.
                assert_eq!(report.revision_snapshots, snapshots, "{report:?}");
                snapshots_used += snapshots;
                check(&log, &w, &model);
            }
        }
    }
    snapshots_used
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn revision_indexes_follow_the_model_across_rolls_aborts_and_reopens(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut ops = ops;
        ops.push(Op::Reopen);
        run(&ops);
    }
}

#[test]
fn reopens_after_rolls_start_from_snapshots() {
    use Op::*;
    let txn = |keys: Vec<u8>, decide| Txn { keys, missing: true, decide };
    let ops = [
        Append { key: 0, n: 3 },
        txn(vec![1, 2], Decide::Abort),
        Pad { kib: 40 },
        Pad { kib: 40 },
        txn(vec![0, 3], Decide::Leave),
        Pad { kib: 40 },
        Pad { kib: 40 },
        Reopen,
        Append { key: 1, n: 2 },
        txn(vec![1, 4], Decide::Leave),
        Pad { kib: 40 },
        Pad { kib: 40 },
        Reopen,
    ];
    assert!(run(&ops) >= 2, "both shards rolled with streams, twice");
}

#[test]
fn a_snapshot_covering_more_than_the_shard_holds_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
        numbered(&mut w[0], 0, 3, None);
        let pad = vec![b'x'; 1024];
        let recs: Vec<NewRecord<'_>> = (0..40).map(|_| NewRecord::payload(&pad)).collect();
        w[0].append(&recs).unwrap();
        w[0].append(&recs).unwrap();
        numbered(&mut w[0], 0, 2, None);
    }
    let snap = dir.path().join("shards/00000").join(storage::revisions::SNAPSHOT_FILE);
    assert!(snap.exists(), "the roll wrote a snapshot");
    // A snapshot from a future the shard never reached (as after a lost tail): counted again.
    let mut bytes = std::fs::read(&snap).unwrap();
    let mut decoded = storage::format::decode_revisions(&bytes).unwrap();
    decoded.covers_to = Ulid(u128::MAX);
    decoded.streams = vec![(key_hash(&key(0)), 99)];
    bytes = storage::format::encode_revisions(&decoded);
    std::fs::write(&snap, bytes).unwrap();
    let (log, w, report) = Log::open_with_report(dir.path(), opts(1)).unwrap();
    assert_eq!(report.revision_snapshots, 0);
    assert_eq!(w[0].revisions().next(key_hash(&key(0))), 5);
    assert!(!snap.exists(), "the unusable snapshot is removed");
    assert_eq!(stored(&log)[&key(0)], [0, 1, 2, 3, 4]);
}

#[test]
fn a_corrupt_frame_met_while_counting_breaks_the_index_not_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = Log::open(dir.path(), opts(1)).unwrap();
        numbered(&mut w[0], 0, 3, None);
        let pad = vec![b'x'; 1024];
        let recs: Vec<NewRecord<'_>> = (0..40).map(|_| NewRecord::payload(&pad)).collect();
        for _ in 0..3 {
            w[0].append(&recs).unwrap();
        }
        w[0].sync().unwrap();
    }
    let shard = dir.path().join("shards/00000");
    // No snapshot (as a log of an older build): the whole shard is counted, and the first
    // frame of the sealed first segment is damaged.
    std::fs::remove_file(shard.join(storage::revisions::SNAPSHOT_FILE)).unwrap();
    let first = shard.join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[64 + storage::format::FRAME_HEADER_LEN] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let (_log, w) = Log::open(dir.path(), opts(1)).unwrap();
    let why = w[0].revisions().broken().expect("the index is broken");
    assert!(why.contains("checksum"), "{why}");
}
