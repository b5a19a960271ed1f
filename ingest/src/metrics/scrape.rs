//! Scrape-time families: read from the service's state when `/metrics` is asked, never kept
//! up to date in between (queue depths, sizes, marks, lags, disk space).
//!
//! Storage counters (rolls, clock regressions) live in each log's `LogStats` and are exported
//! here as counters: they only grow while a log is open. Per-log values are summed (or, for
//! lags, the worst taken) under the log's label, so logs beyond `metrics_logs_max` add up in
//! `log="other"`. Per-shard values are summed over logs by shard index.
//!
//! What it is not: the live families (`super`), or anything that writes.

use crate::api::AppState;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Tier label of segments on local disk (the cold archive does not exist yet).
const TIER_HOT: &str = "hot";
/// Most commits counted above a log's watermark per scrape (a bounded scan).
pub const LAG_COMMITS_COUNTED_MAX: u64 = 100_000;
/// Most consumers reported with their own label; the rest share `consumer="other"`.
pub const CONSUMER_LABELS_MAX: usize = 256;

/// Every scrape-time family: name, type, help.
pub const FAMILIES: &[(&str, MetricType, &str)] = &[
    ("shardlog_build_info", MetricType::GAUGE, "Always 1; the version label says which build"),
    ("shardlog_ready", MetricType::GAUGE, "1 once recovery finished and writes are accepted"),
    ("shardlog_logs", MetricType::GAUGE, "Open logs"),
    ("shardlog_writer_queue_depth", MetricType::GAUGE, "Jobs waiting in a writer's queue"),
    ("shardlog_writer_queue_capacity", MetricType::GAUGE, "Jobs a writer's queue holds"),
    ("shardlog_storage_commits", MetricType::GAUGE, "Commits stored, by log"),
    ("shardlog_storage_bytes", MetricType::GAUGE, "Frame bytes stored, by log and tier"),
    ("shardlog_storage_segments", MetricType::GAUGE, "Segment files, by log and tier"),
    ("shardlog_shard_commits", MetricType::GAUGE, "Commits stored, by shard index over all logs"),
    ("shardlog_shard_bytes", MetricType::GAUGE, "Frame bytes stored, by shard index and tier"),
    ("shardlog_shard_segments", MetricType::GAUGE, "Segment files, by shard index and tier"),
    ("shardlog_segment_rolls_total", MetricType::COUNTER, "Segments filled and rolled, by log"),
    (
        "shardlog_segment_inline_prepares_total",
        MetricType::COUNTER,
        "Rolls that found no preallocated segment and created one on the write path, by log",
    ),
    (
        "shardlog_clock_regressions_total",
        MetricType::COUNTER,
        "Times a writer's clock was behind its last ULID, by log",
    ),
    (
        "shardlog_background_errors_total",
        MetricType::COUNTER,
        "Errors of the maintenance thread (seal, prepare, flush, retention), by log",
    ),
    (
        "shardlog_watermark_lag_seconds",
        MetricType::GAUGE,
        "How far the merged watermark is behind the clock, by log (worst in the label)",
    ),
    (
        "shardlog_watermark_lag_commits",
        MetricType::GAUGE,
        "Commits published above the watermark, not yet final, by log (counted up to 100000)",
    ),
    ("shardlog_idempotent_replays_total", MetricType::COUNTER, "Idempotency-Key replays"),
    (
        "shardlog_idempotency_evictions_total",
        MetricType::COUNTER,
        "Idempotency keys evicted before their time by the limits",
    ),
    ("shardlog_idempotency_keys", MetricType::GAUGE, "Idempotency keys remembered"),
    (
        "shardlog_consumer_lag_seconds",
        MetricType::GAUGE,
        "How far a durable consumer's cursor is behind the watermark, by log and consumer",
    ),
    ("shardlog_consumers", MetricType::GAUGE, "Durable consumers, by log"),
    ("shardlog_disk_free_bytes", MetricType::GAUGE, "Free bytes of the data directory's disk"),
    ("shardlog_disk_capacity_bytes", MetricType::GAUGE, "Size of the data directory's disk"),
];

/// One family being filled.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: BTreeMap<Vec<(&'static str, String)>, f64>,
}

impl Family {
    fn new(name: &'static str) -> Family {
        let &(name, kind, help) =
            FAMILIES.iter().find(|f| f.0 == name).expect("scrape families are declared");
        Family { name, help, kind, series: BTreeMap::new() }
    }

    fn add(&mut self, labels: &[(&'static str, &str)], v: f64) {
        let key = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        *self.series.entry(key).or_insert(0.0) += v;
    }

    fn max(&mut self, labels: &[(&'static str, &str)], v: f64) {
        let key = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        let e = self.series.entry(key).or_insert(v);
        *e = e.max(v);
    }

    fn finish(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_owned());
        f.set_help(self.help.to_owned());
        f.set_field_type(self.kind);
        let metrics = self
            .series
            .into_iter()
            .map(|(labels, v)| {
                let mut m = Metric::default();
                m.set_label(
                    labels
                        .into_iter()
                        .map(|(k, v)| {
                            let mut p = LabelPair::default();
                            p.set_name(k.to_owned());
                            p.set_value(v);
                            p
                        })
                        .collect(),
                );
                if self.kind == MetricType::COUNTER {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                } else {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
                m
            })
            .collect();
        f.set_metric(metrics);
        f
    }
}

/// The scrape-time families of `st`, now. Blocking: reads consumer files and mapped pages.
pub fn collect(st: &AppState) -> Vec<MetricFamily> {
    let mut fams = Families(FAMILIES.iter().map(|f| (f.0, Family::new(f.0))).collect());
    collect_into(st, &mut fams);
    fams.0.into_values().filter(|f| !f.series.is_empty()).map(Family::finish).collect()
}

/// The families of one scrape, by name.
struct Families(BTreeMap<&'static str, Family>);

impl Families {
    fn f(&mut self, name: &'static str) -> &mut Family {
        self.0.get_mut(name).expect("declared in FAMILIES")
    }
}

fn collect_into(st: &AppState, fams: &mut Families) {
    let now_ms = idgen::Clock::now_ms(&idgen::SystemClock);

    fams.f("shardlog_build_info").add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    fams.f("shardlog_ready").add(&[], if st.ready.load(Ordering::Acquire) { 1.0 } else { 0.0 });
    for (w, (depth, capacity)) in st.writers.queue_depths().into_iter().enumerate() {
        let w = w.to_string();
        fams.f("shardlog_writer_queue_depth").add(&[("writer", &w)], depth as f64);
        fams.f("shardlog_writer_queue_capacity").add(&[("writer", &w)], capacity as f64);
    }

    let logs = st.registry.list();
    fams.f("shardlog_logs").add(&[], logs.len() as f64);
    let mut consumer_labels = 0;
    for e in &logs {
        let label = e.metrics.label.as_str();
        let l = [("log", label)];
        let lt = [("log", label), ("tier", TIER_HOT)];
        let stats = e.log.stats();
        fams.f("shardlog_storage_commits").add(&l, stats.commits as f64);
        fams.f("shardlog_storage_bytes").add(&lt, stats.bytes as f64);
        fams.f("shardlog_storage_segments").add(&lt, stats.segments as f64);
        fams.f("shardlog_background_errors_total").add(&l, stats.background_errors as f64);
        for (i, s) in stats.shards.iter().enumerate() {
            let shard = i.to_string();
            let st_ = [("shard", shard.as_str()), ("tier", TIER_HOT)];
            fams.f("shardlog_shard_commits").add(&[("shard", &shard)], s.commits as f64);
            fams.f("shardlog_shard_bytes").add(&st_, s.bytes as f64);
            fams.f("shardlog_shard_segments").add(&st_, s.segments as f64);
            fams.f("shardlog_segment_rolls_total").add(&l, s.rolls as f64);
            fams.f("shardlog_segment_inline_prepares_total").add(&l, s.inline_prepares as f64);
            fams.f("shardlog_clock_regressions_total").add(&l, s.clock_regressions as f64);
        }
        let watermark = e.log.watermark();
        // A mark of zero means no mark yet (a log opened a moment ago): no lag to report.
        if watermark.0 == 0 {
            continue;
        }
        let lag_ms = now_ms.saturating_sub(watermark.timestamp_ms());
        fams.f("shardlog_watermark_lag_seconds").max(&l, lag_ms as f64 / 1000.0);
        let above = e.log.count_after(watermark, LAG_COMMITS_COUNTED_MAX).unwrap_or(0);
        fams.f("shardlog_watermark_lag_commits").add(&l, above as f64);
        let consumers = st.consumers.list(&e.name).unwrap_or_default();
        fams.f("shardlog_consumers").add(&l, consumers.len() as f64);
        for (name, cursor) in consumers {
            let own = consumer_labels < CONSUMER_LABELS_MAX && label != super::OTHER_LOG;
            consumer_labels += usize::from(own);
            let consumer = if own { name.as_str() } else { "other" };
            let lag_ms = watermark.timestamp_ms().saturating_sub(cursor.timestamp_ms());
            fams.f("shardlog_consumer_lag_seconds")
                .max(&[("log", label), ("consumer", consumer)], lag_ms as f64 / 1000.0);
        }
    }

    let idem = &st.idempotency;
    fams.f("shardlog_idempotent_replays_total")
        .add(&[], idem.replays.load(Ordering::Relaxed) as f64);
    fams.f("shardlog_idempotency_evictions_total")
        .add(&[], idem.evictions.load(Ordering::Relaxed) as f64);
    fams.f("shardlog_idempotency_keys").add(&[], idem.len() as f64);
    if let Ok(v) = rustix::fs::statvfs(&st.config.data_dir) {
        fams.f("shardlog_disk_free_bytes").add(&[], (v.f_bavail * v.f_frsize) as f64);
        fams.f("shardlog_disk_capacity_bytes").add(&[], (v.f_blocks * v.f_frsize) as f64);
    }
}
