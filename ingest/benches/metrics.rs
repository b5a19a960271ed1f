//! What the metrics cost one ingest request on the hot path: every update a 1000-commit
//! request makes (request duration and body size by route, commits and bytes of its log, batch
//! size, handoff, queue wait, the writer's burst and busy time), against parsing the same
//! request's NDJSON body — the cheapest other thing the request must do.
//!
//! `cargo bench -p ingest --bench metrics`

use criterion::{Criterion, criterion_group, criterion_main};
use ingest::metrics::Metrics;
use std::hint::black_box;
use std::time::Instant;

fn per_request(c: &mut Criterion) {
    let m = Metrics::new(2, 100);
    let log = m.log("bench");
    let w = m.writers[1].clone();
    let mut g = c.benchmark_group("per_request");
    g.bench_function("metric_updates", |b| {
        b.iter(|| {
            let began = Instant::now();
            log.commits.inc_by(black_box(1000));
            log.bytes.inc_by(black_box(100_000));
            m.batch_commits.observe(1000.0);
            w.handoffs_local.inc();
            let taken = Instant::now();
            w.queue_wait.observe(taken.saturating_duration_since(began).as_secs_f64());
            w.burst_jobs.observe(1.0);
            w.busy_seconds.inc_by(taken.elapsed().as_secs_f64());
            m.http_body.with_label_values(&["/v1/logs/{log}/commits"]).observe(110_000.0);
            m.http_duration
                .with_label_values(&["/v1/logs/{log}/commits", "POST", "200"])
                .observe(began.elapsed().as_secs_f64());
        })
    });
    let body: bytes::Bytes = (0..1000)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(80)))
        .collect::<String>()
        .into();
    let limits = ingest::body::Limits {
        body_bytes_max: 64 << 20,
        commit_bytes_max: 1 << 20,
        batch_commits_max: 100_000,
        key_bytes_max: 1024,
        retry_after_s: 1,
    };
    let budget = ingest::budget::Budget::new(1 << 30, 64 << 20);
    g.bench_function("parse_1000_commit_ndjson_body", |b| {
        b.iter(|| {
            ingest::body::parse(
                black_box(body.clone()),
                Some("application/x-ndjson"),
                limits,
                false,
                &mut budget.charge(),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, per_request);
criterion_main!(benches);
