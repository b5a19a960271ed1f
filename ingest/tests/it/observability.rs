//! `/metrics` in process: families present and counting what happened, label values bounded
//! (route templates, the log-label cap with its `other` bucket), every metric that the shipped
//! dashboards and alert rules name is exported, and a scrape of 64 shards × 100 logs stays
//! small.

use crate::TestApp;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::path::{Path, PathBuf};

/// The repository's `dashboards/` folder.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Every dashboard JSON under `dashboards/grafana`.
pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = dashboards_dir().join("grafana");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no dashboard in {}", dir.display());
    v
}

/// The shipped alert rule file.
pub fn rules_file() -> PathBuf {
    dashboards_dir().join("prometheus/shardlog-alerts.yml")
}

/// Every PromQL expression of the dashboards: (where, expr). Template variables' queries
/// (`label_values(metric, label)`) give their metric.
pub fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, file: &str, out: &mut Vec<(String, String)>) {
        if let Some(panels) = v["panels"].as_array() {
            for p in panels {
                let title = p["title"].as_str().unwrap_or("?");
                for t in p["targets"].as_array().into_iter().flatten() {
                    if let Some(e) = t["expr"].as_str() {
                        out.push((format!("{file}: {title}"), e.to_owned()));
                    }
                }
                walk(p, file, out);
            }
        }
    }
    let mut out = Vec::new();
    for f in dashboard_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        walk(&v, &name, &mut out);
        for var in v["templating"]["list"].as_array().into_iter().flatten() {
            let q = match &var["query"] {
                serde_json::Value::String(s) => s.clone(),
                o => o["query"].as_str().unwrap_or("").to_owned(),
            };
            if let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
                let metric = inner.rsplit_once(',').map_or(inner, |(m, _)| m).trim();
                out.push((format!("{name}: variable {}", var["name"]), metric.to_owned()));
            }
        }
    }
    out
}

/// Every `expr:` of the alert rules: (alert name, expr).
pub fn rule_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(rules_file()).unwrap();
    let mut out = Vec::new();
    let mut alert = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(a) = l.strip_prefix("- alert:") {
            alert = a.trim().to_owned();
        } else if let Some(e) = l.strip_prefix("expr:") {
            out.push((alert.clone(), e.trim().to_owned()));
        }
    }
    assert!(!out.is_empty());
    out
}

/// The `shardlog_` metric names in `expr`, histogram suffixes removed.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("shardlog_") {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        out.push(name.to_owned());
        rest = &tail[end..];
    }
    out
}

async fn scrape(app: &TestApp) -> String {
    let (s, headers, v) = app.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    v.as_str().expect("text").to_owned()
}

/// The value of the series `line_prefix` (the name and labels exactly as exported).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_with_bounded_labels() {
    let app = TestApp::new(|c| c.metrics_logs_max = 2);
    let body = "{\"payload\":\"aaaa\"}\n{\"key\":\"k\",\"payload\":\"bbbbbb\"}\n";
    for log in ["l1", "l2", "l3", "l4"] {
        for _ in 0..3 {
            let (s, v) = app
                .call(
                    "POST",
                    &format!("/v1/logs/{log}/commits"),
                    Some("application/x-ndjson"),
                    body,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    }
    let (s, _) = app.call("GET", "/v1/logs/l1/timeline?consistency=strong", None, "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.call("GET", "/no/such/route/l1", None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let text = scrape(&app).await;

    // Two logs have their own label; the other two add up under "other".
    assert_eq!(value(&text, "shardlog_ingest_commits_total{log=\"l1\"}"), Some(6.0));
    assert_eq!(value(&text, "shardlog_ingest_commits_total{log=\"l2\"}"), Some(6.0));
    assert_eq!(value(&text, "shardlog_ingest_commits_total{log=\"other\"}"), Some(12.0));
    // An NDJSON line is a commit's payload: 6 requests of two lines.
    let line_bytes = (body.len() - 2) as f64;
    assert_eq!(value(&text, "shardlog_ingest_bytes_total{log=\"other\"}"), Some(6.0 * line_bytes));
    assert_eq!(value(&text, "shardlog_storage_commits{log=\"other\"}"), Some(12.0));
    assert!(!text.contains("log=\"l3\"") && !text.contains("log=\"l4\""), "{text}");
    // Routes are templates: no log name or raw path appears in a route label.
    assert!(text.contains("route=\"/v1/logs/{log}/commits\""));
    assert!(text.contains("route=\"unmatched\""));
    assert!(!text.contains("route=\"/v1/logs/l1"));
    assert!(!text.contains("/no/such/route"));
    assert_eq!(
        value(
            &text,
            "shardlog_http_request_duration_seconds_count{code=\"200\",method=\"POST\",route=\"/v1/logs/{log}/commits\"}"
        ),
        Some(12.0)
    );
    assert_eq!(value(&text, "shardlog_ingest_batch_commits_count"), Some(12.0));
    // Each request handed its parts to writers: at least one handoff per request.
    let handoffs: f64 = text
        .lines()
        .filter(|l| l.starts_with("shardlog_writer_handoffs_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert!(handoffs >= 12.0, "{handoffs}");
    // Default durability is sync: every request waited for a writer's fdatasync.
    assert!(
        value(&text, "shardlog_fsync_duration_seconds_count{cause=\"writer\"}").unwrap() >= 1.0
    );
    let strong: f64 = ["immediate", "waited"]
        .iter()
        .filter_map(|o| value(&text, &format!("shardlog_strong_reads_total{{outcome=\"{o}\"}}")))
        .sum();
    assert_eq!(strong, 1.0);
    assert_eq!(value(&text, "shardlog_writer_queue_capacity{writer=\"0\"}"), Some(1024.0));
    assert_eq!(value(&text, "shardlog_logs"), Some(4.0));
    assert_eq!(value(&text, "shardlog_ready"), Some(1.0));
    assert!(value(&text, "shardlog_disk_capacity_bytes").unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_read_deadline_is_counted() {
    let app = TestApp::new(|_| {});
    let (s, _) =
        app.call("POST", "/v1/logs/x/commits", Some("application/x-ndjson"), "{\"a\":1}\n").await;
    assert_eq!(s, StatusCode::OK);
    app.state.writers.hold_nudges(true);
    // A commit above every other shard's mark: the watermark cannot pass it while nudges are
    // held, so the strong read misses its deadline.
    let (s, _) =
        app.call("POST", "/v1/logs/x/commits", Some("application/x-ndjson"), "{\"a\":2}\n").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.call("GET", "/v1/logs/x/timeline?timeout=30ms", None, "").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    let (s, _) =
        app.call("GET", "/v1/logs/x/timeline?timeout=30ms&fallback=eventual", None, "").await;
    assert_eq!(s, StatusCode::OK);
    app.state.writers.hold_nudges(false);
    let text = scrape(&app).await;
    assert_eq!(value(&text, "shardlog_strong_reads_total{outcome=\"deadline\"}"), Some(1.0));
    assert_eq!(value(&text, "shardlog_strong_reads_total{outcome=\"fallback\"}"), Some(1.0));
    assert_eq!(
        value(&text, "shardlog_deadline_misses_total{route=\"/v1/logs/{log}/timeline\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, "shardlog_strong_read_wait_seconds_count"), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_dashboards_and_rules_is_exported() {
    let app = TestApp::new(|_| {});
    let names = app.state.metrics.family_names();
    let mut used: Vec<(String, String)> = Vec::new();
    for (at, expr) in dashboard_queries().into_iter().chain(rule_queries()) {
        for m in metric_names(&expr) {
            used.push((at.clone(), m));
        }
    }
    assert!(used.len() > 30, "too few metrics named: {used:?}");
    let missing: Vec<_> = used.iter().filter(|(_, m)| !names.contains(m)).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
    // And every declared family really appears in a scrape once something happened: a write
    // with a declared length, a stored consumer, the first watermark.
    let body = "{\"a\":1}\n";
    let req = Request::post("/v1/logs/x/commits")
        .header("content-type", "application/x-ndjson")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap();
    let (s, _, v) = app.send(req).await;
    assert_eq!(s, StatusCode::OK);
    let cursor = format!("{{\"cursor\":\"{}\"}}", v["ids"][0].as_str().unwrap());
    let (s, _) = app.call("PUT", "/v1/logs/x/consumers/c", Some("application/json"), cursor).await;
    assert_eq!(s, StatusCode::OK);
    let t = std::time::Instant::now();
    while app.state.registry.get("x").unwrap().log.shards().iter().any(|s| s.high_water().0 == 0) {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "marks never advanced");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let text = scrape(&app).await;
    let declared_but_silent: Vec<_> =
        names.iter().filter(|n| !text.contains(&format!("# TYPE {n} "))).collect();
    // Families whose every series has labels only known once an event happened.
    let event_only = ["shardlog_deadline_misses_total", "shardlog_http_connections_closed_total"];
    assert!(
        declared_but_silent.iter().all(|n| event_only.contains(&n.as_str())),
        "{declared_but_silent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_of_64_shards_and_100_logs_stays_small() {
    let app = TestApp::new(|c| {
        c.segment_bytes = storage::SEGMENT_BYTES_MIN;
        c.commit_bytes_max = 1024;
        c.body_bytes_max = 16 * 1024;
        c.inflight_body_bytes_max = 1 << 20;
    });
    for i in 0..100 {
        let (s, v) = app
            .call(
                "PUT",
                &format!("/v1/logs/log-{i:03}"),
                Some("application/json"),
                "{\"shards\":64}",
            )
            .await;
        assert!(s.is_success(), "{v}");
        let (s, v) = app
            .call(
                "POST",
                &format!("/v1/logs/log-{i:03}/commits"),
                Some("application/x-ndjson"),
                "{\"a\":1}\n",
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let t = std::time::Instant::now();
    let text = scrape(&app).await;
    let took = t.elapsed();
    eprintln!("scrape of 64 shards x 100 logs: {} bytes in {took:?} (debug build)", text.len());
    assert!(text.len() < 256 * 1024, "{} bytes", text.len());
    assert!(text.contains("shardlog_shard_bytes{shard=\"63\",tier=\"hot\"}"));
    assert_eq!(value(&text, "shardlog_logs"), Some(100.0));
}
