//! Readers running beside the writer, without locks, never see part of a batch.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn concurrent_readers_never_see_a_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions { background: true, flush_interval_ms: 2, ..opts(1) };
    let (log, mut w) = Log::open(dir.path(), o).unwrap();
    let log = Arc::new(log);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (log, done) = (Arc::clone(&log), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut checks = 0u64;
                let mut cursor = log.shard(0).cursor(Start::Beginning);
                let mut expected_batch = 0u64;
                let mut in_batch = 0u64;
                let mut batch_len = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    while let Some(r) = cursor.next().unwrap() {
                        let text = std::str::from_utf8(r.frame.payload).unwrap();
                        let fields: Vec<u64> = text
                            .split(';')
                            .next()
                            .unwrap()
                            .split(' ')
                            .map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap())
                            .collect();
                        let (b, i, n) = (fields[0], fields[1], fields[2]);
                        assert_eq!((b, i), (expected_batch, in_batch), "records in order");
                        batch_len = n;
                        in_batch += 1;
                        if in_batch == n {
                            expected_batch += 1;
                            in_batch = 0;
                        }
                    }
                    // Caught up: we must be at a batch boundary.
                    assert_eq!(
                        in_batch, 0,
                        "saw {in_batch} of {batch_len} records of batch {expected_batch}"
                    );
                    checks += 1;
                    if finished {
                        return (expected_batch, checks);
                    }
                }
            })
        })
        .collect();
    for b in 0..3000u64 {
        append_batch(&mut w[0], b, 1 + b % 13);
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let (batches, checks) = r.join().unwrap();
        assert_eq!(batches, 3000);
        assert!(checks > 1, "the reader caught up with the writer at least once mid-way");
    }
}
