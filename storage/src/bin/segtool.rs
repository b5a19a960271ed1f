//! `segtool`: inspect and exercise a shardlog log directory from the command line.
//!
//! - `segtool verify DIR`: open the log read-only, verify every frame's checksum, print counts
//!   and the torn tails recovery would cut (readers stop before them).
//! - `segtool dump DIR SHARD [LIMIT]`: print a shard's commits (ULID, key, payload) in order.
//! - `segtool crash-writer DIR SHARDS sync|async ROUND`: append batches forever (bounded by
//!   `CRASH_WRITER_BATCHES_MAX`) and print one line per batch once it is appended (and synced,
//!   with `sync`): `ROUND BATCH SHARD FIRST_ULID COUNT`. The crash tests kill it with SIGKILL.
//!
//! `verify` and `dump` open the log with `Log::open_read_only`: no byte, file or directory
//! changes (not `log.meta`, not a torn tail, not the checkpoint), and they can run beside other
//! inspectors but not beside a server holding the log (its lock). A transaction whose shard
//! parts are all there and which names an outside participant (a keyed request of the service)
//! is shown as committed: segtool cannot read the service's `idempotency.log` that decides it.
//!
//! What it is not: a repair tool. Only `crash-writer` writes (it opens the log read-write).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use storage::{External, Log, LogOptions, NewRecord, Start};

/// Upper bound on the batches one crash-writer run appends.
const CRASH_WRITER_BATCHES_MAX: u64 = 5_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["verify", dir] => verify(Path::new(dir)),
        ["dump", dir, shard] => dump(Path::new(dir), shard, "100"),
        ["dump", dir, shard, limit] => dump(Path::new(dir), shard, limit),
        ["crash-writer", dir, shards, durability, round] => crash_writer(Path::new(dir), shards, durability, round),
        _ => Err("usage: segtool verify DIR | dump DIR SHARD [LIMIT] | crash-writer DIR SHARDS sync|async ROUND".into()),
    };
    if let Err(e) = result {
        eprintln!("segtool: {e}");
        std::process::exit(1);
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// The outside participant as segtool sees it: every whole transaction is taken as held.
#[derive(Debug)]
struct AssumeHeld;

impl External for AssumeHeld {
    fn holds(&self, _id: u64) -> bool {
        true
    }
}

fn open_existing(dir: &Path) -> Result<(Log, storage::RecoveryReport), Box<dyn std::error::Error>> {
    Ok(Log::open_read_only(dir, Arc::new(AssumeHeld))?)
}

fn verify(dir: &Path) -> Res {
    let (log, report) = open_existing(dir)?;
    for (segment, offset, reason) in &report.torn_tails {
        println!("torn tail: {} at offset {offset}: {reason} (not cut)", segment.display());
    }
    if !report.aborted_txns.is_empty() {
        println!("{} undecided transactions would be aborted", report.aborted_txns.len());
    }
    let n = log.verify()?;
    let s = log.stats();
    println!(
        "ok: {n} commits verified, {} bytes in {} segments over {} shards",
        s.bytes,
        s.segments,
        s.shards.len()
    );
    Ok(())
}

fn dump(dir: &Path, shard: &str, limit: &str) -> Res {
    let (log, _) = open_existing(dir)?;
    let shard: usize = shard.parse()?;
    let limit: usize = limit.parse()?;
    if shard >= log.shards().len() {
        return Err(format!("shard {shard} does not exist").into());
    }
    let mut c = log.shard(shard).cursor(Start::Beginning);
    let mut out = std::io::stdout().lock();
    for _ in 0..limit {
        let Some(r) = c.next()? else { break };
        let f = r.frame;
        writeln!(
            out,
            "{} {} {}",
            f.id,
            String::from_utf8_lossy(f.key),
            String::from_utf8_lossy(f.payload)
        )?;
    }
    Ok(())
}

fn crash_writer(dir: &Path, shards: &str, durability: &str, round: &str) -> Res {
    let shards: u32 = shards.parse()?;
    let sync = match durability {
        "sync" => true,
        "async" => false,
        other => return Err(format!("durability must be sync or async, not {other}").into()),
    };
    let opts = LogOptions {
        shards,
        segment_bytes: 256 * 1024,
        flush_interval_ms: 5,
        ..LogOptions::default()
    };
    let (_log, mut writers) = Log::open(dir, opts)?;
    let mut out = std::io::stdout().lock();
    for b in 0..CRASH_WRITER_BATCHES_MAX {
        let shard = (b % shards as u64) as usize;
        let n = 1 + b % 17;
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                format!("r={round} b={b} i={i} n={n};{}", "x".repeat((i % 40) as usize))
                    .into_bytes()
            })
            .collect();
        let recs: Vec<NewRecord<'_>> = payloads.iter().map(|p| NewRecord::payload(p)).collect();
        let ids = writers[shard].append(&recs)?;
        if sync {
            writers[shard].sync()?;
        }
        writeln!(out, "{round} {b} {shard} {} {n}", ids.first)?;
        out.flush()?;
    }
    Ok(())
}
