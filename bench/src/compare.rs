//! `shardlog-bench compare`: the same workloads against shardlog and the peers it starts
//! itself, then a Markdown table (with each figure's ratio to shardlog's in the same workload),
//! `results.json` and `chart.svg`.
//!
//! Equal terms: same commit size and count per batch (a request, a pipeline, a COPY, a run of
//! async publishes), same client concurrency, equal durability (async ⇔ Redis `appendfsync
//! everysec` ⇔ NATS default ⇔ PostgreSQL `synchronous_commit=off`; sync ⇔ Redis `always` ⇔
//! PostgreSQL `synchronous_commit=on`). Everything, load generator included, shares the
//! machine's cores.

use crate::peers::{self, nats, postgres, redis};
use crate::run::{self, Conn, Pace, Report};
use crate::shardlog::{self, Format, WriteSpec};
use std::path::Path;
use std::time::Duration;

/// Options of a comparison.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: f64,
    pub connections: usize,
    pub out: std::path::PathBuf,
    pub progress: bool,
    /// Skip peers that are not installed instead of failing.
    pub skip_missing: bool,
}

/// One write workload.
struct Workload {
    name: String,
    commit_bytes: usize,
    batch: usize,
    durability: &'static str,
    /// Client connections, when not `Options::connections`: the many-producers rows, where
    /// nginx's `return 200` (the HTTP ceiling) and `redis-benchmark` run beside the clients.
    clients: Option<usize>,
}

/// One commit per request from many clients, both durabilities.
fn many_producers() -> impl Iterator<Item = Workload> {
    [64, 256].into_iter().flat_map(|n| {
        ["async", "sync"].into_iter().map(move |durability| Workload {
            name: format!("1 commit per request, {durability}, {n} clients"),
            commit_bytes: 100,
            batch: 1,
            durability,
            clients: Some(n),
        })
    })
}

/// Requests `redis-benchmark` sends in a run meant to last about `seconds` (it takes a count,
/// not a duration; 30 k/s is about its rate here).
fn redis_benchmark_requests(seconds: f64) -> u64 {
    ((seconds * 30_000.0) as u64).max(10_000)
}

async fn open<C: Conn, F: std::future::Future<Output = anyhow::Result<C>>>(
    n: usize,
    mut make: impl FnMut(usize) -> F,
) -> anyhow::Result<Vec<C>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        v.push(make(i).await?);
    }
    Ok(v)
}

/// Runs every workload against every system; returns the reports in table order.
pub async fn compare(opts: &Options) -> anyhow::Result<Vec<Report>> {
    std::fs::create_dir_all(&opts.out)?;
    let scratch = tempfile::tempdir_in(scratch_parent())?;
    let pace = Pace {
        duration: Duration::from_secs_f64(opts.seconds),
        commits_max: None,
        rate: None,
        progress: opts.progress,
    };
    let c = opts.connections;
    let have = |p: &str| {
        let ok = peers::installed(p);
        if !ok && !opts.skip_missing {
            anyhow::bail!(
                "{p} is not installed: run bench/install-peers.sh (or pass --skip-missing)"
            );
        }
        Ok(ok)
    };
    let (have_redis, have_nats, have_pg) = (
        have("redis-server")?,
        have("nats-server")?,
        have("pg_ctlcluster")? || Path::new("/usr/lib/postgresql").exists(),
    );
    let fixed = [
        Workload {
            name: "100 B × 1000, async".into(),
            commit_bytes: 100,
            batch: 1000,
            durability: "async",
            clients: None,
        },
        Workload {
            name: "100 B × 1000, sync".into(),
            commit_bytes: 100,
            batch: 1000,
            durability: "sync",
            clients: None,
        },
        Workload {
            name: "4 KiB × 100, async".into(),
            commit_bytes: 4096,
            batch: 100,
            durability: "async",
            clients: None,
        },
        Workload {
            name: "1 commit per request, sync".into(),
            commit_bytes: 100,
            batch: 1,
            durability: "sync",
            clients: None,
        },
    ];
    let workloads: Vec<Workload> = fixed.into_iter().chain(many_producers()).collect();
    let have_nginx = have("nginx")?;
    let mut reports = Vec::new();
    let server = shardlog::start(scratch.path(), peers::free_port()).await?;
    for (n, w) in workloads.iter().enumerate() {
        let c = w.clients.unwrap_or(c);
        let many = w.clients.is_some();
        let spec = WriteSpec {
            addr: server.addr.clone(),
            log_prefix: format!("w{n}-"),
            logs: 1,
            batch: w.batch,
            commit_bytes: w.commit_bytes,
            format: Format::Ndjson,
            durability: w.durability.into(),
            keyed: false,
        };
        let conns = open(c, |i| shardlog::Writer::new(&spec, i)).await?;
        done(
            &mut reports,
            run::run("shardlog (NDJSON)", &w.name, conns, w.commit_bytes, &pace).await,
        );

        if have_redis {
            let fsync = if w.durability == "sync" { "always" } else { "everysec" };
            let p = redis::start(scratch.path(), fsync).await?;
            let conns = open(c, |_| redis::Xadd::new(p.port, w.batch, w.commit_bytes)).await?;
            let sys = format!("Redis XADD ({fsync})");
            done(&mut reports, run::run(&sys, &w.name, conns, w.commit_bytes, &pace).await);
            if many {
                let (port, bytes, name) = (p.port, w.commit_bytes, w.name.clone());
                let sys = format!("Redis XADD ({fsync}), redis-benchmark");
                let requests = redis_benchmark_requests(opts.seconds);
                let r = tokio::task::spawn_blocking(move || {
                    redis::benchmark(port, c, requests, bytes, &name, &sys)
                })
                .await??;
                done(&mut reports, r);
            }
        }
        if have_nginx && many && w.durability == "async" {
            let p = peers::nginx::start(scratch.path()).await?;
            let spec = WriteSpec { addr: format!("127.0.0.1:{}", p.port), ..spec.clone() };
            let conns = open(c, |i| shardlog::Writer::new(&spec, i)).await?;
            let sys = "nginx return 200 (HTTP ceiling)";
            done(&mut reports, run::run(sys, &w.name, conns, w.commit_bytes, &pace).await);
        }
        if have_nats && w.durability == "async" && !many {
            let p = nats::start(scratch.path()).await?;
            nats::create_stream(p.port).await?;
            let conns = open(c, |_| nats::Publish::new(p.port, w.batch, w.commit_bytes)).await?;
            done(
                &mut reports,
                run::run("NATS JetStream", &w.name, conns, w.commit_bytes, &pace).await,
            );
        }
        if have_pg && !many {
            // A cluster per workload, stopped after it: a running one keeps checkpointing and
            // writing back what it loaded, which would tax the next system's disk.
            let cl = postgres::start(scratch.path()).await?;
            postgres::create_tables(cl.port).await?;
            if w.batch == 1 {
                let conns =
                    open(c, |_| postgres::Revision::new(cl.port, w.durability, w.commit_bytes))
                        .await?;
                let sys = "PostgreSQL revision counter".to_owned();
                done(&mut reports, run::run(&sys, &w.name, conns, w.commit_bytes, &pace).await);
                let conns =
                    open(1, |_| postgres::Revision::new(cl.port, w.durability, w.commit_bytes))
                        .await?;
                let sys = "PostgreSQL revision counter, 1 client".to_owned();
                done(&mut reports, run::run(&sys, &w.name, conns, w.commit_bytes, &pace).await);
            } else {
                let conns = open(c, |_| {
                    postgres::Copy::new(cl.port, w.durability, w.batch, w.commit_bytes)
                })
                .await?;
                let sys = format!(
                    "PostgreSQL COPY (synchronous_commit={})",
                    if w.durability == "sync" { "on" } else { "off" }
                );
                done(&mut reports, run::run(&sys, &w.name, conns, w.commit_bytes, &pace).await);
            }
        }
    }
    // Reads of what the first workload (100 B commits) wrote: the merged timeline as NDJSON
    // pages, and a tail from the beginning.
    let (addr, d) = (&server.addr, pace.duration);
    done(&mut reports, shardlog::read_timeline(addr, "w0-0", 10_000, true, d).await?);
    done(&mut reports, shardlog::tail(addr, "w0-0", d, u64::MAX, false).await?);
    drop(server);

    std::fs::write(opts.out.join("results.json"), serde_json::to_vec_pretty(&reports)?)?;
    let title = format!(
        "shardlog vs peers — commits/s, {} connections, {} s per run, 2-core machine",
        c, opts.seconds
    );
    std::fs::write(opts.out.join("chart.svg"), crate::chart::svg(&title, &reports))?;
    Ok(reports)
}

/// Keeps a finished run and prints its line, so a long comparison shows where it is.
fn done(reports: &mut Vec<Report>, r: Report) {
    eprintln!("{r}");
    reports.push(r);
}

/// Where temporary data goes: the working disk, not a tmpfs (fsync must mean something).
fn scratch_parent() -> std::path::PathBuf {
    std::env::var_os("SHARDLOG_BENCH_DIR")
        .map_or_else(|| std::env::current_dir().unwrap_or_else(|_| ".".into()), Into::into)
}

/// The comparison as a Markdown table, each figure with its ratio to shardlog's in the same
/// workload.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::from(
        "| system | workload | commits/s | MB/s | p50 | p99 | p99.9 | errors | shardlog is |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let ours = reports
            .iter()
            .find(|o| o.workload == r.workload && o.system.starts_with("shardlog"))
            .map_or(0.0, |o| o.commits_per_s);
        let ratio = if r.system.starts_with("shardlog") || r.commits_per_s == 0.0 {
            "—".to_owned()
        } else {
            format!("{:.1}×", ours / r.commits_per_s)
        };
        let ms = |us: u64| {
            if us == 0 { "—".to_owned() } else { format!("{:.2} ms", us as f64 / 1000.0) }
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |\n",
            r.system,
            r.workload,
            run::fmt_rate(r.commits_per_s),
            r.mb_per_s,
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            r.error_count(),
            ratio
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Latency;

    fn report(system: &str, workload: &str, per_s: f64) -> Report {
        Report {
            system: system.into(),
            workload: workload.into(),
            commits: per_s as u64,
            batches: 1,
            seconds: 1.0,
            commits_per_s: per_s,
            mb_per_s: per_s * 100.0 / 1e6,
            latency: Latency { p50_us: 1500, p90_us: 0, p99_us: 0, p999_us: 0, max_us: 0 },
            errors: [("http 503".to_owned(), 2)].into(),
        }
    }

    #[test]
    fn the_table_gives_each_peer_its_ratio_to_shardlog_in_the_same_workload() {
        let t = table(&[
            report("shardlog (NDJSON)", "small", 4e6),
            report("Redis", "small", 2.5e5),
            report("shardlog (NDJSON)", "one", 1e4),
            report("Redis", "one", 2e4),
        ]);
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].ends_with("| 4.00 M | 400.0 | 1.50 ms | — | — | 2 | — |"), "{}", rows[0]);
        assert!(rows[1].ends_with("| 16.0× |"), "{}", rows[1]);
        assert!(rows[3].ends_with("| 0.5× |"), "{}", rows[3]);
        assert_eq!(run::fmt_rate(3_100.0), "3.1 k");
        assert_eq!(run::fmt_rate(590_000.0), "590 k");
        assert_eq!(run::fmt_rate(42.0), "42");
    }

    #[test]
    fn the_chart_has_a_bar_per_report() {
        let svg = crate::chart::svg("t", &[report("a", "w", 10.0), report("b", "w", 1e6)]);
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..40]);
        assert_eq!(svg.matches("<rect").count() - svg.matches("<rect width=\"100%\"").count(), 2);
    }
}
