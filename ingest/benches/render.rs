//! What rendering a stored commit as a line of JSON costs, the step that bounds timeline pages
//! and tails: per commit, for the kinds of payload a log holds (a one-line JSON object copied
//! as it is after validation, pretty-printed JSON re-serialised, plain text escaped).
//!
//! `cargo bench -p ingest --bench render`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idgen::Ulid;
use ingest::api::render_into;
use std::hint::black_box;
use storage::Record;
use storage::format::FrameRef;

/// 1000 payloads of about 100 bytes made by `make`.
fn payloads(make: impl Fn(usize) -> String) -> Vec<Vec<u8>> {
    (0..1000).map(|i| make(i).into_bytes()).collect()
}

/// 1000 one-line JSON objects of about 100 bytes, like the load generator's.
fn json_lines() -> Vec<Vec<u8>> {
    payloads(|i| format!("{{\"c\":3,\"i\":{i},\"p\":\"{}\"}}", "x".repeat(76)))
}

fn render(c: &mut Criterion) {
    let kinds = [
        ("json_line", json_lines()),
        (
            "json_pretty",
            payloads(|i| format!("{{\n  \"i\": {i},\n  \"p\": \"{}\"\n}}", "x".repeat(70))),
        ),
        ("text", payloads(|i| format!("line {i}: {}", "plain text ".repeat(8)))),
    ];
    let mut g = c.benchmark_group("render_1000_commits");
    g.throughput(Throughput::Elements(1000));
    for (name, payloads) in &kinds {
        let key = b"user-42";
        g.bench_function(*name, |b| {
            let mut out = Vec::with_capacity(256 * 1024);
            b.iter(|| {
                out.clear();
                for (i, p) in payloads.iter().enumerate() {
                    let r = Record {
                        frame: FrameRef {
                            id: Ulid(0x0190_0000_0000_0000_0000_0000_0000_0000 + i as u128),
                            flags: 0,
                            revision: u64::MAX,
                            aux: 0,
                            key,
                            payload: p,
                            inverse: b"",
                        },
                        shard: (i % 16) as u32,
                    };
                    render_into(&mut out, &r);
                    out.push(b'\n');
                }
                black_box(out.len())
            });
        });
    }
    g.finish();
}

/// The JSON check alone, on the same one-line objects.
fn validate(c: &mut Criterion) {
    let lines = json_lines();
    let mut g = c.benchmark_group("is_json_1000_commits");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("json_line", |b| {
        b.iter(|| lines.iter().filter(|p| ingest::json::is_json(black_box(p))).count())
    });
    g.finish();
}

criterion_group!(benches, render, validate);
criterion_main!(benches);
