//! The Host allow-list and CORS against the real binary: a foreign Host is `421` and writes
//! nothing (DNS rebinding), `--allowed-host` adds a name, and `--cors-origin` answers
//! preflights and marks answers for that origin only.

use super::process::{Server, request_raw};

fn raw(addr: &str, method: &str, path: &str, host: &str, extra: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn a_foreign_host_is_misdirected_and_an_allowed_one_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--allowed-host", "logs.internal"]);
    let (s, _, body) = raw(&server.addr, "DELETE", "/v1/logs/x", "evil.example.com", "");
    assert_eq!(s, 421, "{body}");
    assert!(body.contains("\"misdirected_request\""), "{body}");
    let (s, _, body) = raw(&server.addr, "PUT", "/v1/logs/x", "evil.example.com:7070", "");
    assert_eq!(s, 421, "{body}");
    assert!(!dir.path().join("logs/x").exists(), "nothing was created");
    let (s, _, _) = raw(&server.addr, "GET", "/v1/logs", "logs.internal:7070", "");
    assert_eq!(s, 200);
    let (s, _, _) = raw(&server.addr, "GET", "/v1/logs", "localhost", "");
    assert_eq!(s, 200);
}

#[test]
fn cors_answers_preflights_and_marks_answers_for_its_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--cors-origin", "https://app.example"]);
    let pre = "origin: https://app.example\r\naccess-control-request-method: POST\r\n\
               access-control-request-headers: content-type, idempotency-key\r\n";
    let (s, head, _) = raw(&server.addr, "OPTIONS", "/v1/logs/x/commits", "localhost", pre);
    assert_eq!(s, 204);
    assert!(head.contains("access-control-allow-origin: https://app.example"), "{head}");
    assert!(head.contains("access-control-allow-methods:"), "{head}");
    assert!(head.contains("access-control-allow-headers: content-type, idempotency-key"), "{head}");
    let (s, head, _) =
        raw(&server.addr, "GET", "/v1/logs", "localhost", "origin: https://app.example\r\n");
    assert_eq!(s, 200);
    assert!(head.contains("access-control-allow-origin: https://app.example"), "{head}");
    assert!(head.contains("x-shardlog-watermark") && head.contains("etag"), "{head}");
    let (_, head, _) =
        raw(&server.addr, "GET", "/v1/logs", "localhost", "origin: https://other.example\r\n");
    assert!(!head.contains("access-control-"), "no CORS for another origin: {head}");
    // Without --cors-origin: no CORS header, and OPTIONS is no route.
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let (s, head, _) = raw(&server.addr, "OPTIONS", "/v1/logs/x/commits", "localhost", pre);
    assert_ne!(s, 204);
    assert!(!head.contains("access-control-"), "{head}");
    let (s, _, _) = request_raw(&server.addr, "GET", "/v1/logs", None, "", b"").unwrap();
    assert_eq!(s, 200);
}
