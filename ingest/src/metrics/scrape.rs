//! Scrape-time families: declared here ([`FAMILIES`]) and filled from the service's state by
//! `api::metrics` when `/metrics` is asked, never kept up to date in between (queue depths,
//! sizes, marks, lags, disk space).
//!
//! Storage counters (rolls, clock regressions) live in each log's `LogStats` and are exported
//! here as counters: they only grow while a log is open. Per-log values are summed (or, for
//! lags, the worst taken) under the log's label, so logs beyond `metrics_logs_max` add up in
//! `log="other"`. Per-shard values are summed over logs by shard index.
//!
//! What it is not: the live families (`super`), the reading of the state (`api::metrics`), or
//! anything that writes.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::BTreeMap;

/// Tier label of segments on local disk (the cold archive does not exist yet).
pub const TIER_HOT: &str = "hot";
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

/// One scrape-time family being filled.
#[derive(Debug)]
pub struct Family {
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

    /// Adds `v` to the series of `labels`.
    pub fn add(&mut self, labels: &[(&'static str, &str)], v: f64) {
        let key = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        *self.series.entry(key).or_insert(0.0) += v;
    }

    /// Raises the series of `labels` to `v`.
    pub fn max(&mut self, labels: &[(&'static str, &str)], v: f64) {
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

/// The families of one scrape, by name: each declared family, empty until a series is added.
#[derive(Debug)]
pub struct Families(BTreeMap<&'static str, Family>);

impl Families {
    /// Every family of [`FAMILIES`], without series.
    #[allow(clippy::new_without_default)] // a scrape's fresh set, not a neutral value
    pub fn new() -> Families {
        Families(FAMILIES.iter().map(|f| (f.0, Family::new(f.0))).collect())
    }

    /// Family `name` (declared in [`FAMILIES`]).
    pub fn f(&mut self, name: &'static str) -> &mut Family {
        self.0.get_mut(name).expect("declared in FAMILIES")
    }

    /// The families that have series, in the exposition's form.
    pub fn finish(self) -> Vec<MetricFamily> {
        self.0.into_values().filter(|f| !f.series.is_empty()).map(Family::finish).collect()
    }
}
