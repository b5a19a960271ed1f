//! HTTP/2 cleartext (h2c, prior knowledge) beside HTTP/1.1 on the same port, against the real
//! binary with curl and h2load as the clients: many concurrent writes carried by one
//! connection are all stored once, errors keep the JSON shape, a connection that only looks like the preface is
//! HTTP/1.1, and one that sends part of the preface and stops is closed at the head timeout.

use super::process::{Server, request};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

fn server(dir: &std::path::Path, settings: &str) -> Server {
    let config = dir.join("shardlog.toml");
    std::fs::write(&config, settings).unwrap();
    Server::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// Runs curl with HTTP/2 prior knowledge; returns its stdout.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge"])
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn metric(addr: &str, name: &str) -> f64 {
    // Over HTTP/1.1, so that reading it does not count as an HTTP/2 connection.
    let out = Command::new("curl").args(["-sS", &format!("http://{addr}/metrics")]).output();
    let text = String::from_utf8(out.expect("curl").stdout).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn concurrent_writes_over_one_h2c_connection_are_each_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), "durability = \"sync\"\n");
    let base = format!("http://{}", srv.addr);
    let made =
        curl(&["-XPUT", &format!("{base}/v1/logs/h2"), "-d", "{}", "-w", " %{http_version}"]);
    assert!(made.ends_with(" 2"), "answered over HTTP/2: {made}");
    // 400 writes, 100 in flight at once, multiplexed by h2load over one connection.
    let n = 400;
    let body = dir.path().join("one.ndjson");
    std::fs::write(&body, b"{\"i\":1}\n").unwrap();
    let out = Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", "1", "-m", "100", "-d"])
        .arg(&body)
        .args(["-H", "content-type: application/x-ndjson"])
        .arg(format!("{base}/v1/logs/h2/commits"))
        .output()
        .expect("h2load is installed (nghttp2-client; .ci/run installs it)");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.contains(&format!("status codes: {n} 2xx, 0 3xx, 0 4xx, 0 5xx")),
        "every write answered 2xx over HTTP/2:\n{out}"
    );
    let conns = metric(&srv.addr, "shardlog_http2_connections_total");
    assert!((1.0..=4.0).contains(&conns), "{conns} h2 connections carried {n} requests");
    // Read back over HTTP/1.1: each payload exactly once.
    let (s, _, v) =
        request(&srv.addr, "GET", "/v1/logs/h2/timeline?consistency=strong&limit=1000", None, b"")
            .unwrap();
    assert_eq!(s, 200, "{v}");
    let stored = v["commits"].as_array().unwrap();
    assert_eq!(stored.len(), n, "each write stored once");
}

#[test]
fn h2c_errors_keep_the_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), "");
    let base = format!("http://{}", srv.addr);
    let bad = curl(&[
        "-XPOST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        "{bad",
        "-w",
        "\n%{http_version} %{http_code}",
        &format!("{base}/v1/logs/e/commits"),
    ]);
    let (json, status) = bad.rsplit_once('\n').unwrap();
    assert_eq!(status, "2 400");
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    let missing = curl(&["-w", "\n%{http_code}", &format!("{base}/v1/logs/nope")]);
    let (json, status) = missing.rsplit_once('\n').unwrap();
    assert_eq!(status, "404");
    assert_eq!(serde_json::from_str::<Value>(json).unwrap()["error"]["code"], "log_not_found");
}

#[test]
fn a_connection_is_http2_only_after_the_whole_preface() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), "header_read_timeout_ms = 500\n");
    // Starts like the preface ("PRI") but is not: HTTP/1.1, which cannot parse it (JSON 400).
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PRI /x HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    // Half the preface, then nothing: closed at header_read_timeout_ms, not held.
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..10]).unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(t.elapsed() < Duration::from_secs(4), "held for {:?}", t.elapsed());
    assert!(
        metric(&srv.addr, "shardlog_http_connections_closed_total{reason=\"header_timeout\"}")
            >= 1.0
    );
}
