//! Criterion bench: IDs per second with one clock read per batch of 1000 versus one per ID.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idgen::{Generator, SystemClock};
use std::hint::black_box;

fn ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("idgen");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("reserve_1000_then_iterate", |b| {
        let mut g = Generator::new(SystemClock);
        b.iter(|| {
            let r = g.reserve(1000).unwrap();
            for id in r.iter() {
                black_box(id);
            }
        })
    });
    group.bench_function("next_id_x1000_clock_each", |b| {
        let mut g = Generator::new(SystemClock);
        b.iter(|| {
            for _ in 0..1000 {
                black_box(g.next_id().unwrap());
            }
        })
    });
    group.bench_function("encode_x1000", |b| {
        let mut g = Generator::new(SystemClock);
        let r = g.reserve(1000).unwrap();
        b.iter(|| {
            for id in r.iter() {
                black_box(idgen::encode(id));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, ids);
criterion_main!(benches);
