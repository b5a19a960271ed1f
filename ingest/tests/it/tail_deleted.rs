//! A tail on a log that is deleted ends with a `log_deleted` error event and its stream ends,
//! SSE and NDJSON, against the real binary; the log's hub stops with it.

use super::process::{Server, request, wait_metric};
use super::tail_recovery::write;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends a tail request on a fresh connection that the server closes after the answer.
pub fn open_tail(addr: &str, path: &str, headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{headers}\r\n")
        .unwrap();
    s
}

#[test]
fn a_tail_on_a_deleted_log_ends_with_an_error_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "2"]);
    write(&server.addr, "gone", 5, 8);
    let tails = [
        open_tail(&server.addr, "/v1/logs/gone/tail", ""),
        open_tail(&server.addr, "/v1/logs/gone/tail", "accept: application/x-ndjson\r\n"),
    ];
    wait_metric(&server.addr, "shardlog_tails_active", 2.0);
    wait_metric(&server.addr, "shardlog_tail_hubs", 1.0);
    let (s, _, _) = request(&server.addr, "DELETE", "/v1/logs/gone", None, b"").unwrap();
    assert_eq!(s, 204);
    let mut bodies = Vec::new();
    for mut t in tails {
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut raw = Vec::new();
        t.read_to_end(&mut raw).expect("the tail's stream ends after the delete");
        bodies.push(String::from_utf8_lossy(&raw).into_owned());
    }
    let (sse, nd) = (&bodies[0], &bodies[1]);
    assert!(sse.starts_with("HTTP/1.1 200"), "{sse}");
    assert!(sse.ends_with("\r\n0\r\n\r\n"), "the SSE stream ends: {sse}");
    let event = sse.split("event: error\ndata: ").nth(1).expect("an error event");
    let data: serde_json::Value = serde_json::from_str(event.lines().next().unwrap()).unwrap();
    assert_eq!(data["error"]["code"], "log_deleted", "{sse}");
    assert!(data["error"]["message"].as_str().unwrap().contains("gone"), "{sse}");
    assert!(nd.ends_with("\r\n0\r\n\r\n"), "the NDJSON stream ends: {nd}");
    let last = nd.lines().rev().find(|l| l.starts_with('{')).expect("a last line");
    let line: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(line["error"]["code"], "log_deleted", "{nd}");
    wait_metric(&server.addr, "shardlog_tails_active", 0.0);
    wait_metric(&server.addr, "shardlog_tail_hubs", 0.0);
}
