//! Criterion benches of the storage hot paths: append of 100-byte commits in batches of 1000 on
//! one shard (async: into the mapped segment; sync: ten batches then one msync, ≈1.5 MB per
//! flush), and a full scan with checksum verification.
//!
//! Segments are 64 MiB with retention at 512 MiB so retired files are recycled, as in service.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use storage::{Log, LogOptions, NewRecord, Retention, Start};

const BATCH: usize = 1000;
const PAYLOAD_BYTES: usize = 100;

fn options() -> LogOptions {
    LogOptions {
        shards: 1,
        retention: Retention { max_age_ms: None, max_bytes: Some(512 << 20) },
        retention_interval_ms: 100,
        ..LogOptions::default()
    }
}

fn append(c: &mut Criterion) {
    let payload = vec![b'p'; PAYLOAD_BYTES];
    let batch: Vec<NewRecord<'_>> = (0..BATCH).map(|_| NewRecord::payload(&payload)).collect();
    let mut group = c.benchmark_group("append_100B");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(BATCH as u64));
    {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut w) = Log::open(dir.path(), options()).unwrap();
        group.bench_function(BenchmarkId::new("async", "batch_1000"), |b| {
            b.iter(|| w[0].append(&batch).unwrap())
        });
    }
    {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut w) = Log::open(dir.path(), options()).unwrap();
        group.throughput(Throughput::Elements(10 * BATCH as u64));
        group.bench_function(BenchmarkId::new("sync_group_commit", "10x1000_per_flush"), |b| {
            b.iter(|| {
                for _ in 0..10 {
                    w[0].append(&batch).unwrap();
                }
                w[0].sync().unwrap();
            })
        });
    }
    group.finish();
}

fn scan(c: &mut Criterion) {
    let payload = vec![b'p'; PAYLOAD_BYTES];
    let batch: Vec<NewRecord<'_>> = (0..BATCH).map(|_| NewRecord::payload(&payload)).collect();
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) =
        Log::open(dir.path(), LogOptions { shards: 1, ..LogOptions::default() }).unwrap();
    const COMMITS: usize = 1_000_000;
    for _ in 0..COMMITS / BATCH {
        w[0].append(&batch).unwrap();
    }
    let mut group = c.benchmark_group("scan_100B");
    group.throughput(Throughput::Elements(COMMITS as u64));
    group.sample_size(10);
    group.bench_function("full_scan_verified", |b| {
        b.iter(|| {
            let mut cursor = log.shard(0).cursor(Start::Beginning);
            let mut n = 0usize;
            while let Some(r) = cursor.next().unwrap() {
                n += r.frame.payload.len();
            }
            assert_eq!(n, COMMITS * PAYLOAD_BYTES);
        })
    });
    group.finish();
}

criterion_group!(benches, append, scan);
criterion_main!(benches);
