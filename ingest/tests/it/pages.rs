//! Streamed answers from the real binary over TCP: a timeline page's head (with
//! `x-shardlog-next`) comes before its chunked body; clients that leave in the middle of a body
//! cost nothing; walking `next` through NDJSON and JSON pages returns every commit once, in ULID
//! order; a page or tail whose client stops reading is cut off after `send_stall_ms`.

use super::process::{Server, connect_small, request, request_raw, wait_metric};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const COMMITS: usize = 20_000;

/// Reads a response head from `s` (up to the blank line) and what came after it.
fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the head ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
            return (head, buf[at + 4..].to_vec());
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

#[test]
fn pages_stream_head_first_survive_abandoned_bodies_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "4", "--durability", "async"]);
    let addr = server.addr.as_str();
    for _ in 0..COMMITS / 2000 {
        write_padded(addr, "s", 2000, 150);
    }

    // A page of 10 000 commits (about 2 MB): the head names `next` and the body is chunked.
    // These clients read the head and a little of the body, then leave.
    let path = "/v1/logs/s/timeline?limit=10000";
    for _ in 0..30 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = open_ndjson(&mut s, path);
        assert_eq!(header(&head, "transfer-encoding"), Some("chunked"), "{head}");
        assert!(header(&head, "x-shardlog-next").is_some(), "{head}");
        let mut some = [0u8; 8192];
        s.read_exact(&mut some).unwrap();
    }

    // Walking `next` page by page, in both forms, returns every commit once, in ULID order.
    for ndjson in [true, false] {
        let mut after = String::new();
        let mut ids: Vec<String> = Vec::new();
        let mut pads = 0;
        loop {
            let path = format!("/v1/logs/s/timeline?limit=3000&consistency=eventual{after}");
            let (head, body) = get(addr, &path, ndjson);
            assert!(head.starts_with("http/1.1 200"), "{head}: {body}");
            assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
            let (page, next): (Vec<serde_json::Value>, Option<String>) = if ndjson {
                let page = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                (page, header(&head, "x-shardlog-next").map(str::to_uppercase))
            } else {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                (v["commits"].as_array().unwrap().clone(), v["next"].as_str().map(str::to_owned))
            };
            for c in &page {
                ids.push(c["id"].as_str().unwrap().to_owned());
                pads += usize::from(c["payload"]["pad"].as_str().is_some_and(|p| p.len() == 150));
            }
            match next {
                Some(n) if !page.is_empty() => after = format!("&after={n}"),
                _ => break,
            }
        }
        assert_eq!(ids.len(), COMMITS, "ndjson {ndjson}");
        assert_eq!(pads, COMMITS, "every payload whole, ndjson {ndjson}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in ULID order, once each");
    }
    assert!(request(addr, "GET", "/healthz", None, b"").is_some_and(|r| r.0 == 200));
}

/// A GET of `path` (NDJSON or JSON): the lower-cased head and the de-chunked body.
fn get(addr: &str, path: &str, ndjson: bool) -> (String, String) {
    let accept = if ndjson { "application/x-ndjson" } else { "application/json" };
    let extra = format!("accept: {accept}\r\n");
    let (_, head, body) = request_raw(addr, "GET", path, None, &extra, b"").unwrap();
    (head, body)
}

/// Sends a GET of `path` asking for NDJSON on `s` and reads its head, which must be a `200`;
/// the body is left unread.
fn open_ndjson(s: &mut TcpStream, path: &str) -> String {
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\naccept: application/x-ndjson\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let (head, _) = read_head(s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    head
}

/// A server whose streamed answers are cut off after `send_stall_ms` = 300.
fn impatient_server(dir: &std::path::Path) -> Server {
    let config = dir.join("shardlog.toml");
    std::fs::write(&config, "send_stall_ms = 300\ndefault_shards = 2\n").unwrap();
    Server::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// Writes `n` commits to `log`, each with a `pad` of `pad_bytes`.
fn write_padded(addr: &str, log: &str, n: usize, pad_bytes: usize) {
    let body: String =
        (0..n).map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "z".repeat(pad_bytes))).collect();
    let (status, _, v) = request(
        addr,
        "POST",
        &format!("/v1/logs/{log}/commits?durability=async"),
        Some("application/x-ndjson"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_page_whose_client_stops_reading_is_cut_off_never_ended_short() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(dir.path());
    let addr = server.addr.as_str();
    // 10 000 commits of 1 KiB: a 10 MB page, far more than the sockets between us hold.
    write_padded(addr, "c", 10_000, 1000);
    let mut s = connect_small(addr);
    open_ndjson(&mut s, "/v1/logs/c/timeline?limit=10000&consistency=eventual");
    // Take nothing for well over the stall: the server cuts the page off.
    wait_metric(addr, "shardlog_page_slow_disconnects_total", 1.0);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // ends at the close, or in a reset
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.ends_with("0\r\n\r\n"), "a cut-off page must not end like a whole one");
    assert!(text.matches("\"pad\"").count() < 10_000, "it was cut off");
    // The server goes on serving the same page whole to a client that reads.
    let (head, body) = get(addr, "/v1/logs/c/timeline?limit=10000&consistency=eventual", true);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body.lines().count(), 10_000);
}

#[test]
fn a_tail_whose_client_stops_reading_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(dir.path());
    let addr = server.addr.as_str();
    write_padded(addr, "t", 1, 1000);
    let mut s = connect_small(addr);
    open_ndjson(&mut s, "/v1/logs/t/tail");
    // More than the tail's queue and the sockets hold, while the client reads nothing.
    for _ in 0..20 {
        write_padded(addr, "t", 2_000, 1000);
    }
    wait_metric(addr, "shardlog_tail_slow_disconnects_total", 1.0);
    wait_metric(addr, "shardlog_tails_active", 0.0);
}

/// A page whose frames are in the page cache is rendered where the connection asks for it;
/// frames evicted while the page streams (to a slow client) are rendered on the blocking pool
/// (`mincore` says so), and read the same. The eviction is the server's own: after a seal it
/// drops the pages of the sealed segments beyond the newest two, mapped ones included.
#[test]
fn pages_whose_frames_are_on_disk_are_rendered_off_the_runtime() {
    const FROM_DISK: &str = "shardlog_page_chunks_from_disk_total";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shardlog.toml");
    std::fs::write(&config, "segment_bytes = 4194304\ndefault_shards = 1\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let addr = server.addr.as_str();
    // 16 MB in 4 MiB segments: four of them, three sealed.
    for _ in 0..8 {
        write_padded(addr, "d", 100, LARGE_PAD);
    }
    let path = "/v1/logs/d/timeline?limit=10000&consistency=strong";
    let hot = dechunk_lines(&request_raw(addr, "GET", path, None, NDJSON, b"").unwrap().2);
    assert_eq!(hot, 800);
    assert_eq!(super::process::metric(addr, FROM_DISK), 0.0, "cached: rendered inline");

    // A slow client takes the head and a little, then 16 MB more seal four more segments:
    // the page's later frames are dropped from memory while it waits.
    let mut slow = connect_small(addr);
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{NDJSON}\r\n");
    slow.write_all(req.as_bytes()).unwrap();
    let (head, after) = read_head(&mut slow);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let mut some = [0u8; 8192];
    slow.read_exact(&mut some).unwrap();
    for _ in 0..8 {
        write_padded(addr, "d", 100, LARGE_PAD);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut body = [&after[..], &some[..]].concat();
    let mut buf = [0u8; 65536];
    while !body.ends_with(b"\r\n0\r\n\r\n") {
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "the page ended without its last chunk");
        body.extend_from_slice(&buf[..n]);
    }
    let lines = dechunk_lines(&String::from_utf8_lossy(&body));
    assert_eq!(lines, 800, "the whole page, rendered from disk where it had to be: {head}");
    let chunks = super::process::metric(addr, FROM_DISK);
    assert!(chunks >= 1.0, "evicted frames were rendered on the blocking pool: {chunks}");
}

const NDJSON: &str = "accept: application/x-ndjson\r\nconnection: close\r\n";

/// The pad of the commits the on-disk page test writes: larger than a page of memory.
const LARGE_PAD: usize = 20_000;

/// Commits (lines with a whole pad of `LARGE_PAD`) in an NDJSON body, chunked or not: a
/// chunk ends after a whole commit, so chunk framing never splits one.
fn dechunk_lines(body: &str) -> usize {
    body.matches(&format!("\"pad\":\"{}\"", "z".repeat(LARGE_PAD))).count()
}
