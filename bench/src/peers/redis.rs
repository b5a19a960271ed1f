//! Redis Streams: `XADD stream * p <payload>`, a batch as one pipeline; AOF with
//! `appendfsync everysec` (async) or `always` (sync).

use super::{Process, free_port, spawn};
use crate::run::{Conn, Latency, Report};
use std::process::{Command, Stdio};

/// Starts `redis-server` with an append-only file and this `appendfsync`.
pub async fn start(parent: &std::path::Path, appendfsync: &str) -> anyhow::Result<Process> {
    let dir = tempfile::tempdir_in(parent)?;
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"]).arg(dir.path()).args([
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--save",
        "",
    ]);
    spawn(cmd, port, dir, "redis-server").await
}

/// One client connection sending batches of XADD.
pub struct Xadd {
    conn: redis::aio::MultiplexedConnection,
    payload: Vec<u8>,
    batch: usize,
}

impl Xadd {
    pub async fn new(port: u16, batch: usize, commit_bytes: usize) -> anyhow::Result<Xadd> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Xadd { conn, payload: vec![b'x'; commit_bytes], batch })
    }
}

impl Conn for Xadd {
    async fn batch(&mut self) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        for _ in 0..self.batch {
            pipe.cmd("XADD").arg("bench").arg("*").arg("p").arg(&self.payload[..]).ignore();
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| format!("redis: {:?}", e.kind()))?;
        Ok(self.batch as u64)
    }
}

/// Runs Redis's own load generator: `clients` connections, `requests` one-XADD requests of
/// `commit_bytes`, no pipelining. Its CSV gives requests/s and latency quantiles (p95 stands
/// in for p90; it reports no p99.9, so that is its max).
pub fn benchmark(
    port: u16,
    clients: usize,
    requests: u64,
    commit_bytes: usize,
    workload: &str,
    system: &str,
) -> anyhow::Result<Report> {
    let payload = "x".repeat(commit_bytes);
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &clients.to_string()])
        .args(["-n", &requests.to_string(), "--csv", "XADD", "bench", "*", "p", &payload])
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(out.status.success(), "redis-benchmark failed: {}", out.status);
    let csv = String::from_utf8_lossy(&out.stdout);
    parse_benchmark_csv(&csv, requests, commit_bytes, workload, system)
}

/// The report of `redis-benchmark --csv` output: a header line, then one line per test:
/// `"name","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
/// "p99_latency_ms","max_latency_ms"`.
pub fn parse_benchmark_csv(
    csv: &str,
    requests: u64,
    commit_bytes: usize,
    workload: &str,
    system: &str,
) -> anyhow::Result<Report> {
    let line = csv
        .lines()
        .find(|l| !l.starts_with("\"test\""))
        .ok_or_else(|| anyhow::anyhow!("redis-benchmark printed no result: {csv:?}"))?;
    // The test's name may hold commas (it is the command); the figures are the last seven.
    let fields: Vec<f64> = line
        .rsplitn(8, ',')
        .take(7)
        .map(|f| f.trim().trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("redis-benchmark line {line:?}: {e}"))?;
    // rsplitn gives them last first: max, p99, p95, p50, min, avg, rps.
    let [max, p99, p95, p50, _min, _avg, rps] = fields[..] else {
        anyhow::bail!("redis-benchmark line {line:?}: not seven figures");
    };
    let us = |ms: f64| (ms * 1e3) as u64;
    Ok(Report {
        system: system.to_owned(),
        workload: workload.to_owned(),
        commits: requests,
        batches: requests,
        seconds: requests as f64 / rps.max(f64::MIN_POSITIVE),
        commits_per_s: rps,
        mb_per_s: rps * commit_bytes as f64 / 1e6,
        latency: Latency {
            p50_us: us(p50),
            p90_us: us(p95),
            p99_us: us(p99),
            p999_us: us(max),
            max_us: us(max),
        },
        errors: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_benchmark_csv_becomes_a_report() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"XADD bench * p xx,y\",\"46728.97\",\"1.300\",\"0.200\",\"1.247\",\"1.991\",\"2.687\",\"9.151\"\n";
        let r = super::parse_benchmark_csv(csv, 100_000, 100, "w", "s").unwrap();
        assert!((r.commits_per_s - 46_728.97).abs() < 1e-6);
        assert_eq!((r.latency.p50_us, r.latency.p99_us, r.latency.max_us), (1247, 2687, 9151));
        assert!((r.mb_per_s - 4.672_897).abs() < 1e-6);
        assert!(super::parse_benchmark_csv("\"test\",\"rps\"\n", 1, 1, "w", "s").is_err());
    }
}
