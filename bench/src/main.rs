//! `shardlog-bench`: the project's end-to-end measuring tool.
//!
//! - `load`: drives a running shardlog over HTTP (connections, batch and commit size, format,
//!   durability, logs, keys, duration or count, an open-loop target rate) and reports commits/s,
//!   MB/s, batch latency percentiles (HdrHistogram) and errors by status.
//! - `read`: timeline pages, an NDJSON range stream, or a tail against a running shardlog.
//! - `compare`: the same workloads against shardlog and Redis Streams, NATS JetStream and
//!   PostgreSQL, each started here on loopback with temporary data.
//!
//! What it is not: a criterion benchmark (those live in the library crates).

mod chart;
mod compare;
mod lag;
mod peers;
mod run;
mod shardlog;

use clap::{Parser, Subcommand};
use run::Pace;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "shardlog-bench", about = "End-to-end load generation and comparisons")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write load against a running shardlog.
    Load(LoadArgs),
    /// Read load against a running shardlog.
    Read(ReadArgs),
    /// shardlog against Redis Streams, NATS JetStream and PostgreSQL, started here.
    Compare(CompareArgs),
    /// Watermark lag and strong-read cost under concurrent cross-shard writes.
    Lag(LagArgs),
}

#[derive(clap::Args)]
struct LagArgs {
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    /// The log written and probed (created with `--shards` shards).
    #[arg(long, default_value = "lag")]
    log: String,
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Background connections posting cross-shard requests.
    #[arg(long, default_value_t = 6)]
    writers: usize,
    /// Keyed commits per background request.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
    durability: String,
    /// Probes (half measure the watermark lag, half a strong and an eventual read).
    #[arg(long, default_value_t = 2000)]
    probes: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// shardlog's address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    /// Concurrent connections (one request in flight each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Commits per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Bytes per commit (the NDJSON line or the JSON payload).
    #[arg(long, default_value_t = 100)]
    commit_bytes: usize,
    #[arg(long, value_enum, default_value = "ndjson")]
    format: shardlog::Format,
    /// sync or async.
    #[arg(long, default_value = "async", value_parser = ["sync", "async"])]
    durability: String,
    /// Logs written (connection i writes log bench-{i % logs}).
    #[arg(long, default_value_t = 1)]
    logs: usize,
    /// Give every commit a key (spread over 64 keys, so requests span shards).
    #[arg(long)]
    keyed: bool,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many commits.
    #[arg(long)]
    count: Option<u64>,
    /// Requests per second over all connections (open loop); omitted: as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReadArgs {
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    /// The log to read.
    #[arg(long, default_value = "bench-0")]
    log: String,
    /// pages (JSON, following `next`), ndjson (the same as NDJSON), or tail.
    #[arg(long, default_value = "ndjson", value_parser = ["pages", "ndjson", "tail"])]
    mode: String,
    /// Commits per page.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// Seconds to read or tail.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop a tail once this many commits arrived.
    #[arg(long)]
    count: Option<u64>,
    /// Concurrent tails (the report sums what they received).
    #[arg(long, default_value_t = 1)]
    tails: usize,
    /// Tail from the watermark (`after=now`) rather than from the start.
    #[arg(long)]
    from_now: bool,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Short runs (3 s each) for a first look; the full runs take 10 s each.
    #[arg(long)]
    quick: bool,
    /// Seconds per run (overrides --quick).
    #[arg(long)]
    seconds: Option<f64>,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Where results.json and chart.svg go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Leave out peers that are not installed.
    #[arg(long)]
    skip_missing: bool,
}

/// `--tails` concurrent tails; one report summing what they received.
async fn tails(a: &ReadArgs) -> anyhow::Result<run::Report> {
    anyhow::ensure!(a.tails > 0, "tails must be positive");
    let d = Duration::from_secs_f64(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.tails {
        let (addr, log, count, now) = (a.addr.clone(), a.log.clone(), a.count, a.from_now);
        tasks.push(tokio::spawn(async move {
            shardlog::tail(&addr, &log, d, count.unwrap_or(u64::MAX), now).await
        }));
    }
    let mut total: Option<run::Report> = None;
    for t in tasks {
        let r = t.await??;
        total = Some(match total {
            None => r,
            Some(mut sum) => {
                sum.commits += r.commits;
                sum.commits_per_s += r.commits_per_s;
                sum.mb_per_s += r.mb_per_s;
                sum.seconds = sum.seconds.max(r.seconds);
                sum
            }
        });
    }
    let mut r = total.expect("at least one tail");
    if a.tails > 1 {
        r.workload = format!("{} × {}", a.tails, r.workload);
    }
    Ok(r)
}

fn save(path: Option<&PathBuf>, r: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_vec_pretty(r)?)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match Cli::parse().command {
        Command::Load(a) => {
            anyhow::ensure!(
                a.connections > 0 && a.batch > 0 && a.logs > 0,
                "connections, batch and logs must be positive"
            );
            let spec = shardlog::WriteSpec {
                addr: a.addr.clone(),
                log_prefix: "bench-".into(),
                logs: a.logs,
                batch: a.batch,
                commit_bytes: a.commit_bytes,
                format: a.format,
                durability: a.durability.clone(),
                keyed: a.keyed,
            };
            let mut conns = Vec::new();
            for i in 0..a.connections {
                conns.push(shardlog::Writer::new(&spec, i).await?);
            }
            let pace = Pace {
                duration: Duration::from_secs_f64(a.seconds),
                commits_max: a.count,
                rate: a.rate,
                progress,
            };
            let workload = format!(
                "{} B × {}, {:?}, {}{}",
                a.commit_bytes,
                a.batch,
                a.format,
                a.durability,
                if a.keyed { ", keyed" } else { "" }
            );
            let r = run::run("shardlog", &workload, conns, a.commit_bytes, &pace).await;
            println!("{r}");
            save(a.json.as_ref(), &r)?;
        }
        Command::Read(a) => {
            let r = match a.mode.as_str() {
                "tail" => tails(&a).await?,
                m => {
                    let d = Duration::from_secs_f64(a.seconds);
                    shardlog::read_timeline(&a.addr, &a.log, a.limit, m == "ndjson", d).await?
                }
            };
            println!("{r}");
            save(a.json.as_ref(), &r)?;
        }
        Command::Lag(a) => {
            let spec = lag::LagSpec {
                addr: a.addr,
                log: a.log,
                writers: a.writers,
                batch: a.batch,
                durability: a.durability,
                probes: a.probes,
                shards: a.shards,
            };
            let r = lag::run(&spec).await?;
            println!("{r}");
            save(a.json.as_ref(), &r)?;
        }
        Command::Compare(a) => {
            let opts = compare::Options {
                seconds: a.seconds.unwrap_or(if a.quick { 3.0 } else { 10.0 }),
                connections: a.connections,
                out: a.out,
                progress,
                skip_missing: a.skip_missing,
            };
            let reports = compare::compare(&opts).await?;
            println!("{}", compare::table(&reports));
            println!(
                "wrote {} and {}",
                opts.out.join("results.json").display(),
                opts.out.join("chart.svg").display()
            );
        }
    }
    Ok(())
}
