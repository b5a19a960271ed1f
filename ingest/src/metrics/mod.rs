//! The service's Prometheus metrics: every family `shardlog_`-prefixed, declared here (but for
//! the storage crate's fsync histogram, declared in `storage::metrics` and registered here),
//! served by `GET /metrics` in the text format.
//!
//! Two kinds of family:
//! - **live** ones, updated where the event happens (a request ends, a writer drains a burst,
//!   a strong read waits): handles are resolved once (per writer, per log) so the hot path
//!   does an atomic add, never a label lookup;
//! - **scrape-time** ones ([`scrape`]), read from the state when `/metrics` is asked: queue
//!   depths, sizes, watermark and consumer lag. Nothing is kept up to date that nobody reads.
//!
//! Label values are bounded: writer and shard indexes, route templates (never raw paths), a
//! closed set of methods and statuses, and at most `metrics_logs_max` log names — later logs
//! share the label `log="other"`, so a client creating a million logs cannot blow up a scrape.
//!
//! What it is not: a tracing or logging facility.

pub mod scrape;

use prometheus::core::Collector;
use prometheus::{
    Counter, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};
use std::collections::HashMap;
use std::sync::Mutex;
use storage::metrics::StorageMetrics;

/// The label every log beyond `metrics_logs_max` shares.
pub const OTHER_LOG: &str = "other";

/// Request durations: 100 µs to 10 s.
const LATENCY_BUCKETS_S: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
    5.0, 10.0,
];
/// Queue waits and strong-read waits: 10 µs to 5 s.
const WAIT_BUCKETS_S: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.5, 1.0, 5.0,
];
/// Body sizes: 256 B to 64 MiB, by powers of four.
const BODY_BUCKETS_BYTES: [f64; 10] = [
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];
/// Counts (commits per request, jobs per burst): 1 to 100 000.
const COUNT_BUCKETS: [f64; 11] =
    [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 100000.0];

/// Handles one writer thread updates.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Time a job waited in the queue before its writer took it.
    pub queue_wait: Histogram,
    /// Jobs drained at once (the group-commit factor).
    pub burst_jobs: Histogram,
    /// Time spent working (appending, syncing, answering), not waiting for jobs.
    pub busy_seconds: Counter,
    /// Requests refused because this writer's queue was full.
    pub queue_full: IntCounter,
    /// Jobs handed over from a request running on the core this writer serves.
    pub handoffs_local: IntCounter,
    /// Jobs handed over from a request running on another core.
    pub handoffs_crossed: IntCounter,
}

/// Handles of one log's label.
#[derive(Debug, Clone)]
pub struct LogMetrics {
    /// The label value: the log's name, or [`OTHER_LOG`].
    pub label: String,
    /// Commits acknowledged.
    pub commits: IntCounter,
    /// Payload bytes acknowledged.
    pub bytes: IntCounter,
}

/// Outcomes of a strong read.
#[derive(Debug, Clone)]
pub struct StrongReads {
    /// The watermark had already passed the arrival instant.
    pub immediate: IntCounter,
    /// It waited and the watermark passed in time.
    pub waited: IntCounter,
    /// The deadline passed: `504`.
    pub deadline: IntCounter,
    /// The deadline passed and the eventual answer was given (`fallback=eventual`).
    pub fallback: IntCounter,
    /// How long reads waited (those that waited at all).
    pub wait_seconds: Histogram,
}

/// Handles of the HTTP connections (`crate::conn`).
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections answered `503` and closed at `connections_max`.
    pub refused: IntCounter,
    /// Connections closed by a limit, by reason (`header_timeout`, `idle`, `send_stall`).
    pub closed: IntCounterVec,
    /// Request bodies that failed at `body_read_timeout_ms`.
    pub body_timeouts: IntCounter,
    /// Connections that opened with the HTTP/2 preface (h2c, prior knowledge).
    pub h2_connections: IntCounter,
}

/// Every live family, and the registry they are in.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Names of the registered families.
    names: Vec<String>,
    logs_max: usize,
    log_labels: Mutex<HashMap<String, LogMetrics>>,
    ingest_commits: IntCounterVec,
    ingest_bytes: IntCounterVec,
    /// Request durations by route template, method and status.
    pub http_duration: HistogramVec,
    /// Request body sizes (declared `Content-Length`) by route template.
    pub http_body: HistogramVec,
    /// `504` answers by route template.
    pub deadline_misses: IntCounterVec,
    /// Commits per ingest request.
    pub batch_commits: Histogram,
    /// Per writer.
    pub writers: Vec<WriterMetrics>,
    /// Ingest requests refused because the in-flight body budget was spent.
    pub body_budget_full: IntCounter,
    /// Bytes of the in-flight body budget held now (set when `/metrics` is read).
    pub body_budget_used: IntGauge,
    /// HTTP connections.
    pub conn: ConnMetrics,
    /// Watermark nudges sent to writers by the idle tick.
    pub nudges_tick: IntCounter,
    /// Watermark nudges sent to writers for a waiting read or tail.
    pub nudges_read: IntCounter,
    /// Strong reads.
    pub strong: StrongReads,
    /// Tails streaming now.
    pub tails_active: IntGauge,
    /// Tails disconnected because their client stopped reading.
    pub tails_slow_disconnects: IntCounter,
    /// Timeline pages cut off because their client stopped reading.
    pub pages_slow_disconnects: IntCounter,
    /// Timeline body chunks rendered on the blocking pool: their frames were not all in memory.
    pub page_chunks_from_disk: IntCounter,
    /// Hubs (one merger feeding a log's live tails) running now.
    pub tail_hubs: IntGauge,
    /// Live tails that fell behind their hub's buffer and went back to reading on their own.
    pub tail_catchups: IntCounter,
    /// Appends refused for a stale expected revision (streams; zero until they exist).
    pub revision_conflicts: IntCounter,
    /// Storage's own families (fsync timings), shared by every log.
    pub storage: StorageMetrics,
}

impl Metrics {
    /// Every family, registered, for `writers` writer threads and at most `logs_max` log labels.
    pub fn new(writers: usize, logs_max: usize) -> Metrics {
        let hist = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .expect("valid histogram")
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid counter")
        };

        let http_duration = hist(
            "shardlog_http_request_duration_seconds",
            "HTTP request duration until the response head, by route template, method, status",
            &LATENCY_BUCKETS_S,
            &["route", "method", "code"],
        );
        let http_body = hist(
            "shardlog_http_request_body_bytes",
            "Declared request body size (Content-Length), by route template",
            &BODY_BUCKETS_BYTES,
            &["route"],
        );
        let deadline_misses = counter_vec(
            "shardlog_deadline_misses_total",
            "Requests answered 504 because their deadline passed, by route template",
            &["route"],
        );
        let ingest_commits =
            counter_vec("shardlog_ingest_commits_total", "Commits acknowledged, by log", &["log"]);
        let ingest_bytes = counter_vec(
            "shardlog_ingest_bytes_total",
            "Payload bytes of acknowledged commits, by log",
            &["log"],
        );
        let plain = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram")
        };
        let batch_commits =
            plain("shardlog_ingest_batch_commits", "Commits per ingest request", &COUNT_BUCKETS);
        let queue_wait = hist(
            "shardlog_writer_queue_wait_seconds",
            "Time a job waited in its writer's queue before the writer took it",
            &WAIT_BUCKETS_S,
            &["writer"],
        );
        let burst_jobs = hist(
            "shardlog_writer_burst_jobs",
            "Jobs a writer drained at once; one group commit covers them",
            &COUNT_BUCKETS,
            &["writer"],
        );
        let busy = prometheus::CounterVec::new(
            Opts::new(
                "shardlog_writer_busy_seconds_total",
                "Time a writer spent working rather than waiting for jobs",
            ),
            &["writer"],
        )
        .expect("valid counter");
        let queue_full = counter_vec(
            "shardlog_writer_queue_full_total",
            "Requests answered 503 because this writer's queue was full",
            &["writer"],
        );
        let handoffs = counter_vec(
            "shardlog_writer_handoffs_total",
            "Jobs handed to a writer, by whether the request ran on another core (crossed)",
            &["writer", "crossed"],
        );
        let writers = (0..writers)
            .map(|w| {
                let w = w.to_string();
                WriterMetrics {
                    queue_wait: queue_wait.with_label_values(&[&w]),
                    burst_jobs: burst_jobs.with_label_values(&[&w]),
                    busy_seconds: busy.with_label_values(&[&w]),
                    queue_full: queue_full.with_label_values(&[&w]),
                    handoffs_local: handoffs.with_label_values(&[&w, "false"]),
                    handoffs_crossed: handoffs.with_label_values(&[&w, "true"]),
                }
            })
            .collect();
        let nudges = counter_vec(
            "shardlog_watermark_nudges_total",
            "Nudges sent to writers to advance idle shards' marks, by reason",
            &["reason"],
        );
        let strong_reads = counter_vec(
            "shardlog_strong_reads_total",
            "Strong timeline reads by outcome: immediate, waited, deadline (504), fallback",
            &["outcome"],
        );
        let strong_wait = plain(
            "shardlog_strong_read_wait_seconds",
            "How long a strong read waited for the watermark (reads that waited)",
            &WAIT_BUCKETS_S,
        );
        let strong = StrongReads {
            immediate: strong_reads.with_label_values(&["immediate"]),
            waited: strong_reads.with_label_values(&["waited"]),
            deadline: strong_reads.with_label_values(&["deadline"]),
            fallback: strong_reads.with_label_values(&["fallback"]),
            wait_seconds: strong_wait.clone(),
        };
        let body_budget_full = counter(
            "shardlog_body_budget_full_total",
            "Ingest requests answered 503 because the in-flight body budget was spent",
        );
        let body_budget_used = IntGauge::new(
            "shardlog_body_budget_used_bytes",
            "Bytes of the in-flight body budget held now (received, decompressed, parsed)",
        )
        .expect("valid gauge");
        let conn = ConnMetrics {
            open: IntGauge::new("shardlog_http_connections", "HTTP connections open now")
                .expect("valid gauge"),
            refused: counter(
                "shardlog_http_connections_refused_total",
                "Connections answered 503 and closed because connections_max were open",
            ),
            closed: counter_vec(
                "shardlog_http_connections_closed_total",
                "Connections closed by a limit: header_timeout, idle (keep-alive), send_stall",
                &["reason"],
            ),
            body_timeouts: counter(
                "shardlog_http_body_read_timeouts_total",
                "Request bodies that sent nothing for body_read_timeout_ms while read (408)",
            ),
            h2_connections: counter(
                "shardlog_http2_connections_total",
                "Connections that opened with the HTTP/2 preface (cleartext, prior knowledge)",
            ),
        };
        let tails_active =
            IntGauge::new("shardlog_tails_active", "Tails streaming now").expect("valid gauge");
        let tails_slow_disconnects = counter(
            "shardlog_tail_slow_disconnects_total",
            "Tails disconnected because their client stopped reading",
        );
        let pages_slow_disconnects = counter(
            "shardlog_page_slow_disconnects_total",
            "Timeline pages cut off because their client stopped reading",
        );
        let page_chunks_from_disk = counter(
            "shardlog_page_chunks_from_disk_total",
            "Timeline body chunks rendered on the blocking pool because their frames were not all in memory",
        );
        let tail_hubs = IntGauge::new(
            "shardlog_tail_hubs",
            "Mergers feeding live tails now (at most one per log)",
        )
        .expect("valid gauge");
        let tail_catchups = counter(
            "shardlog_tail_catchups_total",
            "Live tails that fell behind their hub's buffer and went back to their own merger",
        );
        let revision_conflicts = counter(
            "shardlog_stream_revision_conflicts_total",
            "Stream appends refused for a stale expected revision (zero until streams exist)",
        );
        let collectors: [Box<dyn Collector>; 28] = [
            Box::new(body_budget_used.clone()),
            Box::new(conn.open.clone()),
            Box::new(conn.refused.clone()),
            Box::new(conn.closed.clone()),
            Box::new(conn.body_timeouts.clone()),
            Box::new(conn.h2_connections.clone()),
            Box::new(http_duration.clone()),
            Box::new(http_body.clone()),
            Box::new(deadline_misses.clone()),
            Box::new(ingest_commits.clone()),
            Box::new(ingest_bytes.clone()),
            Box::new(batch_commits.clone()),
            Box::new(queue_wait.clone()),
            Box::new(burst_jobs.clone()),
            Box::new(busy.clone()),
            Box::new(queue_full.clone()),
            Box::new(handoffs.clone()),
            Box::new(nudges.clone()),
            Box::new(strong_reads.clone()),
            Box::new(strong_wait.clone()),
            Box::new(body_budget_full.clone()),
            Box::new(tails_active.clone()),
            Box::new(tails_slow_disconnects.clone()),
            Box::new(pages_slow_disconnects.clone()),
            Box::new(page_chunks_from_disk.clone()),
            Box::new(tail_hubs.clone()),
            Box::new(tail_catchups.clone()),
            Box::new(revision_conflicts.clone()),
        ];
        let registry = Registry::new();
        let mut names = Vec::new();
        for c in collectors {
            names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(c).expect("family names are unique");
        }
        let storage = StorageMetrics::new();
        storage.register(&registry).expect("storage family names are unique");
        names.push("shardlog_fsync_duration_seconds".to_owned());
        Metrics {
            batch_commits: batch_commits.clone(),
            nudges_tick: nudges.with_label_values(&["tick"]),
            nudges_read: nudges.with_label_values(&["read"]),
            strong,
            writers,
            body_budget_full: body_budget_full.clone(),
            body_budget_used,
            conn,
            tails_active: tails_active.clone(),
            tails_slow_disconnects: tails_slow_disconnects.clone(),
            pages_slow_disconnects: pages_slow_disconnects.clone(),
            page_chunks_from_disk: page_chunks_from_disk.clone(),
            tail_hubs: tail_hubs.clone(),
            tail_catchups: tail_catchups.clone(),
            revision_conflicts: revision_conflicts.clone(),
            http_duration: http_duration.clone(),
            http_body: http_body.clone(),
            deadline_misses: deadline_misses.clone(),
            ingest_commits: ingest_commits.clone(),
            ingest_bytes: ingest_bytes.clone(),
            storage: storage.clone(),
            logs_max,
            log_labels: Mutex::new(HashMap::new()),
            registry,
            names,
        }
    }

    /// The handles of log `name`'s label: its own while fewer than `metrics_logs_max` logs have
    /// one, else [`OTHER_LOG`]'s. A name keeps its label for the life of the process.
    pub fn log(&self, name: &str) -> LogMetrics {
        let mut labels = crate::lock(&self.log_labels);
        if let Some(m) = labels.get(name) {
            return m.clone();
        }
        let label = if labels.len() < self.logs_max { name } else { OTHER_LOG };
        let m = LogMetrics {
            label: label.to_owned(),
            commits: self.ingest_commits.with_label_values(&[label]),
            bytes: self.ingest_bytes.with_label_values(&[label]),
        };
        if label != OTHER_LOG {
            labels.insert(name.to_owned(), m.clone());
        }
        m
    }

    /// The label log `name` is reported under at scrape time (the same rule as [`Self::log`],
    /// without taking a label).
    pub fn log_label(&self, name: &str) -> String {
        let labels = crate::lock(&self.log_labels);
        labels.get(name).map_or_else(|| OTHER_LOG.to_owned(), |m| m.label.clone())
    }

    /// Names of every family the service exports (live and scrape-time).
    pub fn family_names(&self) -> Vec<String> {
        let mut v = self.names.clone();
        v.extend(scrape::FAMILIES.iter().map(|f| f.0.to_owned()));
        v.sort();
        v
    }

    /// The live families' current values.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

/// A route label: the matched template, or `unmatched` (never a raw path).
pub fn route_label(matched: Option<&str>) -> &str {
    matched.unwrap_or("unmatched")
}

/// A method label from a closed set (an extension method becomes `other`).
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
