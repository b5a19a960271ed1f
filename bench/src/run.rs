//! The measuring loop every system shares: `connections` tasks, each sending batches through
//! its own connection, for a duration or a commit count, closed-loop (as fast as answers come)
//! or open-loop at a target rate.
//!
//! Open-loop: batch `i` is due at `start + i / rate`; its latency is counted from when it was
//! due, not from when a connection was free to send it, so a stalled server shows up as latency
//! (no coordinated omission). What it is not: a client of any system (see `Conn`).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One connection to a system under test.
pub trait Conn: Send + 'static {
    /// Sends one batch and waits for its acknowledgement: the commits acknowledged, or an
    /// error class (`"http 503"`, `"io"`) counted in the report.
    fn batch(&mut self) -> impl Future<Output = Result<u64, String>> + Send;
}

/// When to stop and how fast to go.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many commits (whichever comes first).
    pub commits_max: Option<u64>,
    /// Batches per second over all connections (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// Draw a live progress line on a terminal.
    pub progress: bool,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub system: String,
    pub workload: String,
    pub commits: u64,
    pub batches: u64,
    pub seconds: f64,
    pub commits_per_s: f64,
    pub mb_per_s: f64,
    /// Of one batch, send to acknowledgement (open loop: from when it was due).
    pub latency: Latency,
    pub errors: BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1e3;
        write!(
            f,
            "{} / {}: {} commits in {:.2} s = {} commits/s, {:.1} MB/s; latency p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms; errors {:?}",
            self.system,
            self.workload,
            self.commits,
            self.seconds,
            fmt_rate(self.commits_per_s),
            self.mb_per_s,
            ms(self.latency.p50_us),
            ms(self.latency.p90_us),
            ms(self.latency.p99_us),
            ms(self.latency.p999_us),
            ms(self.latency.max_us),
            self.errors
        )
    }
}

impl Report {
    /// Errors of every class.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Runs `conns` under `pace`; `commit_bytes` converts commits to MB/s.
pub async fn run<C: Conn>(
    system: &str,
    workload: &str,
    conns: Vec<C>,
    commit_bytes: usize,
    pace: &Pace,
) -> Report {
    let start = Instant::now();
    let commits = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = pace.progress.then(|| spawn_progress(system, workload, &commits, &stop));
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (commits, slots, stop, pace) =
            (Arc::clone(&commits), Arc::clone(&slots), Arc::clone(&stop), pace.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut batches = 0u64;
            loop {
                if stop.load(Ordering::Relaxed)
                    || start.elapsed() >= pace.duration
                    || pace.commits_max.is_some_and(|m| commits.load(Ordering::Relaxed) >= m)
                {
                    break;
                }
                let due = match pace.rate {
                    Some(rate) => {
                        let slot = slots.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(slot as f64 / rate);
                        if due >= start + pace.duration {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                match conn.batch().await {
                    Ok(n) => {
                        commits.fetch_add(n, Ordering::Relaxed);
                        batches += 1;
                        let _ = hist.record(due.elapsed().as_micros().max(1) as u64);
                    }
                    Err(class) => *errors.entry(class).or_default() += 1,
                }
            }
            (hist, errors, batches)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut batches = 0;
    for t in tasks {
        match t.await {
            Ok((h, e, b)) => {
                let _ = hist.add(&h);
                for (k, v) in e {
                    *errors.entry(k).or_default() += v;
                }
                batches += b;
            }
            Err(e) => *errors.entry(format!("task failed: {e}")).or_default() += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = commits.load(Ordering::Relaxed);
    let q = |p: f64| if hist.is_empty() { 0 } else { hist.value_at_quantile(p) };
    Report {
        system: system.to_owned(),
        workload: workload.to_owned(),
        commits: n,
        batches,
        seconds,
        commits_per_s: n as f64 / seconds,
        mb_per_s: n as f64 * commit_bytes as f64 / seconds / 1e6,
        latency: Latency {
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if hist.is_empty() { 0 } else { hist.max() },
        },
        errors,
    }
}

/// A live line with the commit rate, redrawn every quarter second (hidden when stderr is not
/// a terminal).
fn spawn_progress(
    system: &str,
    workload: &str,
    commits: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix} {msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(format!("{system} / {workload}"));
    let (commits, stop) = (Arc::clone(commits), Arc::clone(stop));
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let n = commits.load(Ordering::Relaxed);
            let dt = last.0.elapsed().as_secs_f64();
            bar.set_message(format!(
                "{:.2} M commits/s, {n} total",
                (n - last.1) as f64 / dt / 1e6
            ));
            bar.tick();
            last = (Instant::now(), n);
        }
        bar.finish_and_clear();
    })
}

/// `5.32 M`, `590 k`, `3.1 k`, `42`.
pub fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0} k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
