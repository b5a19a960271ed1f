//! Criterion bench of the k-way merge: commits/s of a full merged scan by fan-in 2, 4, 8, 16
//! and 32 shards (200 000 commits of 100 bytes in all, written in batches of 100 round-robin).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use storage::{Log, LogOptions, Merger, NewRecord, Start};

const COMMITS: usize = 200_000;
const BATCH: usize = 100;

fn merge(c: &mut Criterion) {
    let payload = vec![b'p'; 100];
    let batch: Vec<NewRecord<'_>> = (0..BATCH).map(|_| NewRecord::payload(&payload)).collect();
    let mut group = c.benchmark_group("merge_full_scan");
    group.throughput(Throughput::Elements(COMMITS as u64));
    group.sample_size(10);
    for shards in [2u32, 4, 8, 16, 32] {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            shards,
            segment_bytes: 8 << 20,
            background: false,
            ..LogOptions::default()
        };
        let (log, mut w) = Log::open(dir.path(), opts).unwrap();
        for i in 0..COMMITS / BATCH {
            w[i % shards as usize].append(&batch).unwrap();
        }
        let now = w.iter().map(|x| x.last_id().timestamp_ms()).max().unwrap() + 2;
        for x in w.iter_mut() {
            x.advance_high_water(now);
        }
        group.bench_with_input(BenchmarkId::from_parameter(shards), &shards, |b, _| {
            b.iter(|| {
                let mut m = Merger::new(log.shards(), Start::Beginning);
                let mut n = 0usize;
                while m.next().unwrap().is_some() {
                    n += 1;
                }
                assert_eq!(n, COMMITS);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
