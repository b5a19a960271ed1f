//! Smoke test of `shardlog-bench` against a real server it does not start itself: `load` (closed
//! and open loop, NDJSON and JSON, keyed) for a second or two each, then `read` of what was
//! written — every acknowledged commit is stored, and every one is read back.
//!
//! What it is not: a measurement (no figure is asserted; `compare` is run by hand, see
//! bench/RESULTS.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `shardlog` binary of this target directory, built if absent.
fn shardlog_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_shardlog-bench"));
    let path = bench.with_file_name("shardlog");
    if !path.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "ingest", "--bin", "shardlog"]);
        if bench.parent().is_some_and(|d| d.ends_with("release")) {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo").success(), "cargo build -p ingest failed");
    }
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
    (status, body)
}

fn start(dir: &Path) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(shardlog_binary())
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shardlog");
    let server = Server(child);
    let t = Instant::now();
    while !std::net::TcpStream::connect(&addr).is_ok_and(|_| get(&addr, "/readyz").0 == 200) {
        assert!(t.elapsed() < Duration::from_secs(30), "shardlog never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

/// Runs `shardlog-bench <args> --json <file>` and returns the report.
fn bench(args: &[&str], out: &Path) -> serde_json::Value {
    let status = Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .arg("--json")
        .arg(out)
        .status()
        .expect("run shardlog-bench");
    assert!(status.success(), "shardlog-bench {args:?} failed");
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

fn commits_of(addr: &str, log: &str) -> u64 {
    let (status, body) = get(addr, &format!("/v1/logs/{log}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["commits"].as_u64().unwrap()
}

#[test]
fn load_then_read_back_everything_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, addr) = start(&tmp.path().join("data"));
    let json = tmp.path().join("report.json");
    let a = addr.as_str();

    // Closed loop, NDJSON, 2 logs.
    let args = ["--connections", "4", "--batch", "200", "--logs", "2", "--seconds", "2"];
    let r = bench(&[&["load", "--addr", a][..], &args].concat(), &json);
    let written = r["commits"].as_u64().unwrap();
    assert!(written > 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(written, r["batches"].as_u64().unwrap() * 200);
    assert!(r["latency"]["p50_us"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["latency"]["max_us"].as_u64().unwrap() >= r["latency"]["p99_us"].as_u64().unwrap(),
        "{r}"
    );
    let stored = commits_of(a, "bench-0") + commits_of(a, "bench-1");
    assert_eq!(stored, written, "every acknowledged commit is stored, no other");

    let before = commits_of(a, "bench-0");
    // Open loop at 50 batches/s, JSON bodies, keyed, sync, stopped by a count.
    let r = bench(
        &[
            "load",
            "--addr",
            a,
            "--connections",
            "2",
            "--batch",
            "10",
            "--format",
            "json",
            "--keyed",
            "--durability",
            "sync",
            "--rate",
            "50",
            "--count",
            "300",
            "--logs",
            "1",
            "--seconds",
            "20",
        ],
        &json,
    );
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    let paced = r["commits"].as_u64().unwrap();
    assert!((300..=320).contains(&paced), "stops at the count: {r}");
    // 30 batches at 50/s take about 0.6 s; a closed loop would take a few milliseconds.
    assert!(r["seconds"].as_f64().unwrap() >= 0.5, "the rate paces the batches: {r}");
    assert_eq!(commits_of(a, "bench-0"), before + paced);

    // Read back log bench-1 (only the first run wrote it) as pages and as a tail.
    let expect = commits_of(a, "bench-1");
    for mode in ["pages", "ndjson"] {
        let r = bench(
            &["read", "--addr", a, "--log", "bench-1", "--mode", mode, "--limit", "1000"],
            &json,
        );
        assert_eq!(r["commits"].as_u64().unwrap(), expect, "{mode}: {r}");
    }
    let n = expect.to_string();
    let tail = ["--mode", "tail", "--count", &n, "--seconds", "120"];
    let r = bench(&[&["read", "--addr", a, "--log", "bench-1"][..], &tail].concat(), &json);
    assert_eq!(r["commits"].as_u64().unwrap(), expect, "tail: {r}");

    // A server that is not there: a clear failure, not a hang.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(["load", "--addr", &dead, "--seconds", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect"), "{out:?}");
}
