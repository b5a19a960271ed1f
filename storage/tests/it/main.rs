//! storage's integration tests, at its public boundary: real files, real mmap, real fsync, and a
//! child process killed with SIGKILL.

mod concurrency;
mod crash;
mod diskfull;
mod faults;
mod machine_crash;
mod merge;
mod readonly;
mod recovery;
mod retention;
mod revisions;
mod roundtrip;
mod txn;

use idgen::{ManualClock, Ulid};
use std::sync::Arc;
use storage::{Log, LogOptions, NewRecord, ShardWriter, Start};

/// Small segments so tests roll often; no background thread unless asked.
pub fn opts(shards: u32) -> LogOptions {
    LogOptions {
        shards,
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        background: false,
        ..LogOptions::default()
    }
}

pub fn opts_with_clock(shards: u32, clock: &ManualClock) -> LogOptions {
    LogOptions { clock: Arc::new(clock.clone()), ..opts(shards) }
}

/// A part of cross-shard transaction `id`.
pub fn part(id: u64, payload: &[u8]) -> NewRecord<'_> {
    NewRecord { flags: storage::format::flags::TXN_PART, aux: id, ..NewRecord::payload(payload) }
}

/// Payload of record `i` of batch `b`: readable, self-describing, varying in length.
pub fn payload(b: u64, i: u64, n: u64) -> Vec<u8> {
    let mut p = format!("batch={b} i={i} n={n};").into_bytes();
    p.resize(p.len() + ((b * 7 + i) % 23) as usize, b'x');
    p
}

/// Appends batch `b` of `n` records to `w`.
pub fn append_batch(w: &mut ShardWriter, b: u64, n: u64) -> Vec<Ulid> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(b, i, n)).collect();
    let recs: Vec<NewRecord<'_>> = payloads.iter().map(|p| NewRecord::payload(p)).collect();
    w.append(&recs).unwrap().iter().collect()
}

/// Every commit of shard `i` as (id, payload).
pub fn read_all(log: &Log, i: usize) -> Vec<(Ulid, Vec<u8>)> {
    read_from(log, i, Start::Beginning)
}

pub fn read_from(log: &Log, i: usize, start: Start) -> Vec<(Ulid, Vec<u8>)> {
    let mut c = log.shard(i).cursor(start);
    let mut out = Vec::new();
    while let Some(r) = c.next().unwrap() {
        out.push((r.frame.id, r.frame.payload.to_vec()));
    }
    out
}

/// Rounds and first seed of a randomized fault test: `SHARDLOG_FAULT_ROUNDS` (default 40) and
/// `SHARDLOG_FAULT_SEED` (default random; each round adds one).
pub fn fault_rounds_and_seed() -> (u64, u64) {
    let env = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (
        env("SHARDLOG_FAULT_ROUNDS").unwrap_or(40),
        env("SHARDLOG_FAULT_SEED").unwrap_or_else(|| fastrand::u64(..)),
    )
}
