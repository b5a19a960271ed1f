//! A real Prometheus scraping a real `shardlog` under load: the target is up, `promtool check
//! metrics` accepts a live scrape, the shipped rules pass `promtool check rules` and `promtool
//! test rules`, and every query of the dashboards and alert rules evaluates without error and
//! returns data (the few that may legitimately be empty are listed with the reason).
//!
//! Prometheus comes from Debian's `prometheus` package (it brings `promtool`); the test installs
//! it with apt-get when it is missing.

use crate::observability::{dashboard_queries, dashboards_dir, rule_queries, rules_file};
use crate::process::{Server, request};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Queries that may return nothing on a healthy server under this load, and why.
const MAY_BE_EMPTY: &[(&str, &str)] = &[(
    "shardlog_deadline_misses_total",
    "only exists once a request missed its deadline; the load below avoids 504s",
)];

fn ensure_installed() {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return;
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prometheus is not installed and apt-get could not install it");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query as Grafana would send it: its variables replaced by what matches everything.
fn instantiate(expr: &str) -> String {
    expr.replace("$__rate_interval", "20s")
        .replace("${log:regex}", ".*")
        .replace("${log}", ".*")
        .replace("$log", ".*")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
}

/// The series an alert condition is about: the condition with its thresholds cut off (a
/// healthy server fires no alert, but the series must exist).
fn without_thresholds(expr: &str) -> Vec<String> {
    expr.split(" and ")
        .flat_map(|p| p.split(" or "))
        .map(|part| {
            let cut = [" > ", " < "].iter().filter_map(|op| part.rfind(op)).max();
            match cut {
                Some(i) if part[i + 3..].trim().parse::<f64>().is_ok() => part[..i].to_owned(),
                _ => part.to_owned(),
            }
        })
        .collect()
}

fn query(prom: &str, expr: &str) -> serde_json::Value {
    let (s, _, v) =
        request(prom, "GET", &format!("/api/v1/query?query={}", encode(expr)), None, b"")
            .expect("prometheus answers");
    assert_eq!(s, 200, "{expr}: {v}");
    v
}

/// Drives writes (sync, async, keyed across shards, idempotent), strong and eventual reads,
/// a consumer cursor and an open tail for `secs` seconds.
fn load(addr: &str, secs: u64) -> std::net::TcpStream {
    let mut tail = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tail,
        "GET /v1/logs/orders/tail HTTP/1.1\r\nhost: localhost\r\naccept: application/x-ndjson\r\n\r\n"
    )
    .unwrap();
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_secs(secs) {
        let body: String = (0..200)
            .map(|j| format!("{{\"key\":\"k{}\",\"payload\":\"p{i}-{j}\"}}\n", j % 7))
            .collect();
        let durability = if i.is_multiple_of(2) { "sync" } else { "async" };
        let path = format!("/v1/logs/orders/commits?durability={durability}&ids=false");
        let (s, _, v) =
            request(addr, "POST", &path, Some("application/x-ndjson"), body.as_bytes()).unwrap();
        assert_eq!(s, 200, "{v}");
        let (s, _, v) =
            request(addr, "POST", "/v1/logs/audit/commits", Some("application/x-ndjson"), b"{}\n")
                .unwrap();
        assert_eq!(s, 200, "{v}");
        let key = format!("idempotency-key: key-{}\r\n", i / 2);
        let (s, _, _) = crate::process::request_with_headers(
            addr,
            "POST",
            "/v1/logs/audit/commits",
            Some("application/x-ndjson"),
            &key,
            b"{}\n",
        )
        .unwrap();
        assert_eq!(s, 200);
        let (s, _, v) =
            request(addr, "GET", "/v1/logs/orders/timeline?limit=10", None, b"").unwrap();
        assert_eq!(s, 200, "{v}");
        let (s, _, _) = request(
            addr,
            "GET",
            "/v1/logs/orders/timeline?consistency=eventual&limit=10",
            None,
            b"",
        )
        .unwrap();
        assert_eq!(s, 200);
        if i == 0 {
            let first = v["commits"][0]["id"].as_str().unwrap().to_owned();
            let cursor = format!("{{\"cursor\":\"{first}\"}}");
            let (s, _, v) = request(
                addr,
                "PUT",
                "/v1/logs/orders/consumers/billing",
                Some("application/json"),
                cursor.as_bytes(),
            )
            .unwrap();
            assert_eq!(s, 200, "{v}");
        }
        let mut sink = [0u8; 65536];
        tail.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let _ = tail.read(&mut sink);
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    tail
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn real_prometheus_scrapes_and_evaluates_every_query() {
    ensure_installed();
    let rules = rules_file();
    run(Command::new("promtool").arg("check").arg("rules").arg(&rules));
    run(Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(dashboards_dir().join("prometheus/shardlog-alerts.test.yml")));

    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--writers", "2", "--default-shards", "4"]);

    // A live scrape passes promtool's own checks.
    let (s, _, _) = request(&server.addr, "GET", "/metrics", None, b"").unwrap();
    assert_eq!(s, 200);
    let scrape = {
        let mut c = std::net::TcpStream::connect(&server.addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&rules, dir.path().join("shardlog-alerts.yml")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - shardlog-alerts.yml\nscrape_configs:\n  - job_name: shardlog\n    static_configs:\n      - targets: [\"{}\"]\n",
        server.addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let prom = Prometheus {
        child: Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr: prom_addr,
    };

    let _tail = load(&server.addr, 25);

    // The target is up.
    let t = Instant::now();
    loop {
        let v = query(&prom.addr, "up{job=\"shardlog\"}");
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "target never up: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let mut checked = 0;
    let mut empty = Vec::new();
    let dashboard = dashboard_queries().into_iter().map(|(at, e)| (at, instantiate(&e)));
    let rules = rule_queries()
        .into_iter()
        .flat_map(|(at, e)| {
            let mut v = vec![(format!("rule {at}"), e.clone())];
            v.extend(
                without_thresholds(&e).into_iter().map(|p| (format!("rule {at} (series)"), p)),
            );
            v
        })
        .collect::<Vec<_>>();
    for (at, expr) in dashboard.chain(rules.iter().cloned()) {
        let v = query(&prom.addr, &expr);
        assert_eq!(v["status"], "success", "{at}: {expr}: {v}");
        checked += 1;
        let is_condition = at.starts_with("rule ") && !at.ends_with("(series)");
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let scalar = v["data"]["resultType"] == "scalar";
        if result.is_empty() && !scalar && !is_condition {
            let allowed = MAY_BE_EMPTY.iter().any(|(m, _)| expr.contains(m));
            if !allowed {
                empty.push(format!("{at}: {expr}"));
            }
        }
    }
    assert!(checked > 40, "only {checked} queries");
    assert!(empty.is_empty(), "queries without data:\n{}", empty.join("\n"));
    // The rule groups are loaded and evaluated by Prometheus itself.
    let (s, _, v) = request(&prom.addr, "GET", "/api/v1/rules", None, b"").unwrap();
    assert_eq!(s, 200);
    let loaded = v["data"]["groups"][0]["rules"].as_array().map_or(0, Vec::len);
    assert_eq!(loaded, rule_queries().len(), "{v}");
    for r in v["data"]["groups"][0]["rules"].as_array().unwrap() {
        assert_eq!(r["health"], "ok", "{r}");
    }
}
