//! Timeline pages from the real binary over TCP: the head (with `x-shardlog-next`) comes before
//! a chunked body; clients that leave in the middle of a body cost nothing; walking `next`
//! through NDJSON and JSON pages returns every commit once, in ULID order.

use super::process::{Server, request};
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
    for b in 0..COMMITS / 2000 {
        let body: String = (0..2000)
            .map(|i| format!("{{\"b\":{b},\"i\":{i},\"pad\":\"{}\"}}\n", "y".repeat(150)))
            .collect();
        let (status, _, v) = request(
            addr,
            "POST",
            "/v1/logs/s/commits",
            Some("application/x-ndjson"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(status, 200, "{v}");
    }

    // A page of 10 000 commits (about 2 MB): the head names `next` and the body is chunked.
    // These clients read the head and a little of the body, then leave.
    let path = "/v1/logs/s/timeline?limit=10000";
    for _ in 0..30 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: application/x-ndjson\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let (head, _) = read_head(&mut s);
        assert!(head.starts_with("http/1.1 200"), "{head}");
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
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let accept = if ndjson { "application/x-ndjson" } else { "application/json" };
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let (head, mut rest) = read_head(&mut s);
    s.read_to_end(&mut rest).unwrap();
    (head, super::process::dechunk(&String::from_utf8(rest).unwrap()))
}
