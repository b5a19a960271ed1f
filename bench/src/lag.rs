//! `shardlog-bench lag`: how long an acknowledged commit waits to be final, and what a strong
//! read costs, while other clients keep cross-shard requests in flight.
//!
//! `writers` connections loop posting JSON requests of `batch` keyed commits (keys
//! `k{w}-{n % 13}`, so every request spans shards) into one log. A probe connection then, one
//! probe at a time, posts one NDJSON commit, and once it is acknowledged (even probes, then odd
//! ones, so that neither measure waits on the other):
//! - polls `GET /v1/logs/{log}` until the reported watermark is at or past the commit: the
//!   **watermark lag** (acknowledged → final);
//! - reads `timeline?from=<id>&limit=1` with `consistency=strong` (its latency, and whether it
//!   held the commit: a strong read that misses an acknowledged commit is a bug) and with
//!   `consistency=eventual` (its latency: the baseline the strong read's overhead is over).
//!
//! What it is not: a throughput benchmark (`load` is), or a correctness test (the history
//! checker in `ingest/tests/it/history` is); the misses are reported, not asserted.

use crate::shardlog::Http;
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Microseconds between two polls of the watermark.
const POLL_US: u64 = 500;

/// What to run.
#[derive(Debug, Clone)]
pub struct LagSpec {
    pub addr: String,
    pub log: String,
    pub writers: usize,
    pub batch: usize,
    pub durability: String,
    pub probes: usize,
    pub shards: u32,
}

/// Percentiles in microseconds.
#[derive(Debug, serde::Serialize)]
pub struct Quantiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The figures of one run.
#[derive(Debug, serde::Serialize)]
pub struct LagReport {
    pub probes: usize,
    pub watermark_lag: Quantiles,
    pub strong_read: Quantiles,
    pub eventual_read: Quantiles,
    pub strong_misses: usize,
    pub background_commits_per_s: f64,
}

impl std::fmt::Display for LagReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = |q: &Quantiles| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
                q.p50_us as f64 / 1e3,
                q.p99_us as f64 / 1e3,
                q.p999_us as f64 / 1e3,
                q.max_us as f64 / 1e3
            )
        };
        writeln!(f, "probes: {}", self.probes)?;
        writeln!(f, "watermark lag: {}", q(&self.watermark_lag))?;
        writeln!(f, "strong read:   {}", q(&self.strong_read))?;
        writeln!(f, "eventual read: {}", q(&self.eventual_read))?;
        writeln!(f, "strong reads missing their acknowledged commit: {}", self.strong_misses)?;
        write!(f, "background load: {:.0} commits/s", self.background_commits_per_s)
    }
}

fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
    Quantiles { p50_us: q(0.5), p99_us: q(0.99), p999_us: q(0.999), max_us: h.max() }
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")
}

/// Runs the background writers and the probes; stops both once the probes are done.
pub async fn run(spec: &LagSpec) -> anyhow::Result<LagReport> {
    let mut admin = Http::connect(&spec.addr).await?;
    let settings = Bytes::from(format!("{{\"shards\":{}}}", spec.shards));
    let (status, body) = admin
        .call(
            "PUT",
            &format!("/v1/logs/{}", spec.log),
            &[("content-type", "application/json")],
            settings,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(status == 200 || status == 201, "creating the log: {status} {body:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..spec.writers {
        let (spec, stop, written) = (spec.clone(), Arc::clone(&stop), Arc::clone(&written));
        writers.push(tokio::spawn(async move {
            let mut http = Http::connect(&spec.addr).await?;
            let path = format!("/v1/logs/{}/commits?durability={}", spec.log, spec.durability);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let commits: Vec<String> = (0..spec.batch as u64)
                    .map(|i| {
                        let key = format!("k{w}-{}", (n + i) % 13);
                        format!(r#"{{"key":"{key}","payload":{{"w":{w},"n":{n},"i":{i}}}}}"#)
                    })
                    .collect();
                let body = Bytes::from(format!(r#"{{"commits":[{}]}}"#, commits.join(",")));
                let h = [("content-type", "application/json")];
                let (status, _) =
                    http.call("POST", &path, &h, body).await.map_err(anyhow::Error::msg)?;
                anyhow::ensure!(status == 200, "background write answered {status}");
                written.fetch_add(spec.batch as u64, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    let began = Instant::now();
    let probed = probe(spec).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = began.elapsed().as_secs_f64();
    for w in writers {
        w.await??;
    }
    let (lag, strong, eventual, misses) = probed?;
    Ok(LagReport {
        probes: spec.probes,
        watermark_lag: quantiles(&lag),
        strong_read: quantiles(&strong),
        eventual_read: quantiles(&eventual),
        strong_misses: misses,
        background_commits_per_s: written.load(Ordering::Relaxed) as f64 / seconds,
    })
}

type Probed = (Histogram<u64>, Histogram<u64>, Histogram<u64>, usize);

async fn probe(spec: &LagSpec) -> anyhow::Result<Probed> {
    let mut http = Http::connect(&spec.addr).await?;
    let (mut lag, mut strong, mut eventual) = (histogram(), histogram(), histogram());
    let mut misses = 0;
    let write = format!("/v1/logs/{}/commits?durability={}", spec.log, spec.durability);
    let info = format!("/v1/logs/{}", spec.log);
    let id_of = |body: &Bytes, field: &str| -> anyhow::Result<String> {
        let v: serde_json::Value = serde_json::from_slice(body)?;
        v[field].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no {field} in {v}"))
    };
    for p in 0..spec.probes {
        let h = [("content-type", "application/x-ndjson")];
        let line = Bytes::from(format!("{{\"probe\":{p}}}\n"));
        let (status, body) =
            http.call("POST", &write, &h, line).await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(status == 200, "probe write answered {status}");
        let acked = Instant::now();
        let id = id_of(&body, "first_id")?;
        if p % 2 == 0 {
            // ULIDs in Crockford base32 sort as text: compare them so.
            loop {
                let (status, body) =
                    http.call("GET", &info, &[], Bytes::new()).await.map_err(anyhow::Error::msg)?;
                anyhow::ensure!(status == 200, "log info answered {status}");
                if id_of(&body, "watermark")? >= id {
                    break;
                }
                anyhow::ensure!(
                    acked.elapsed() < Duration::from_secs(30),
                    "watermark stuck below {id}"
                );
                // A poll every POLL_US: resolution enough, and the polls do not take the CPU
                // the writers need (on two cores, a tight loop of them measures itself).
                tokio::time::sleep(Duration::from_micros(POLL_US)).await;
            }
            lag.record(acked.elapsed().as_micros().max(1) as u64)?;
            continue;
        }
        for (consistency, hist) in [("strong", &mut strong), ("eventual", &mut eventual)] {
            let path = format!(
                "/v1/logs/{}/timeline?from={id}&limit=1&consistency={consistency}&timeout=10s",
                spec.log
            );
            let t = Instant::now();
            let (status, body) =
                http.call("GET", &path, &[], Bytes::new()).await.map_err(anyhow::Error::msg)?;
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
            anyhow::ensure!(status == 200, "{consistency} read answered {status}");
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            if consistency == "strong" && v["commits"][0]["id"].as_str() != Some(id.as_str()) {
                misses += 1;
            }
        }
    }
    Ok((lag, strong, eventual, misses))
}
