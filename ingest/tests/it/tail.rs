//! Tails and durable consumers against the real binary: SSE resumes with `Last-Event-ID`
//! missing and repeating nothing, NDJSON tails, `after=now`, and consumer cursors that survive a
//! restart and resume a tail.

use super::process::{Server, connect_small, metric, request, wait_metric};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn write(addr: &str, round: usize, n: usize) -> Vec<String> {
    let commits: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"key": "k{i}", "payload": {{"r": {round}, "i": {i}}}}}"#))
        .collect();
    let body = format!(r#"{{"commits": [{}]}}"#, commits.join(","));
    let (s, _, v) =
        request(addr, "POST", "/v1/logs/tl/commits", Some("application/json"), body.as_bytes())
            .unwrap();
    assert_eq!(s, 200, "{v}");
    v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

/// Opens a tail and reads until `want` events (or lines) arrived; returns their IDs.
fn tail(addr: &str, path: &str, extra_headers: &str, want: usize) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{extra_headers}\r\n").unwrap();
    let mut raw = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65536];
    loop {
        let ids = ids_in(&raw);
        assert!(
            !raw.lines().any(|l| l.starts_with("event:")),
            "commit events are plain message events, with no event field:\n{raw}"
        );
        if ids.len() >= want {
            return ids; // dropping the socket disconnects the tail
        }
        assert!(Instant::now() < deadline, "only {} of {want} events arrived:\n{raw}", ids.len());
        match s.read(&mut buf) {
            Ok(0) => panic!("the server closed the tail"),
            Ok(n) => raw.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {} // read timeout: poll again
        }
    }
}

fn ids_in(raw: &str) -> Vec<String> {
    raw.lines()
        .filter_map(|l| {
            l.strip_prefix("id: ").map(str::to_owned).or_else(|| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["id"].as_str().map(str::to_owned)
            })
        })
        .collect()
}

#[test]
fn sse_resume_with_last_event_id_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "4"]);
    let mut all: Vec<String> = (0..3).flat_map(|r| write(&server.addr, r, 10)).collect();
    // Disconnect after 17 events (more may have arrived in the same read; they are dropped, as
    // a client that stopped reading there would).
    let mut first = tail(&server.addr, "/v1/logs/tl/tail", "", 17);
    first.truncate(17);
    let more: Vec<String> = (3..5).flat_map(|r| write(&server.addr, r, 10)).collect();
    all.extend(more);
    let last = first.last().unwrap().clone();
    let rest =
        tail(&server.addr, "/v1/logs/tl/tail", &format!("last-event-id: {last}\r\n"), 50 - 17);
    let seen: Vec<String> = first.into_iter().chain(rest).collect();
    all.sort();
    assert_eq!(seen, all);

    // NDJSON, and after=now sees only what comes next.
    let mut nd = tail(&server.addr, "/v1/logs/tl/tail", "accept: application/x-ndjson\r\n", 50);
    nd.truncate(50);
    assert_eq!(nd, all);
    let addr = server.addr.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        write(&addr, 9, 5)
    });
    let fresh = tail(&server.addr, "/v1/logs/tl/tail?after=now", "", 5);
    let mut written = writer.join().unwrap();
    written.sort();
    assert_eq!(fresh, written);
}

#[test]
fn consumer_cursors_survive_a_restart_and_resume_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = Vec::new();
    {
        let server = Server::start(dir.path(), &["--default-shards", "4"]);
        all.extend((0..3).flat_map(|r| write(&server.addr, r, 10)));
        all.sort();
        let body = format!(r#"{{"cursor": "{}"}}"#, all[24]);
        let (s, _, v) = request(
            &server.addr,
            "PUT",
            "/v1/logs/tl/consumers/billing",
            Some("application/json"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!((s, v["cursor"].as_str()), (200, Some(all[24].as_str())));
        let (s, _, v) = request(
            &server.addr,
            "PUT",
            "/v1/logs/tl/consumers/billing",
            Some("application/json"),
            br#"{"cursor": "nope"}"#,
        )
        .unwrap();
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_query")));
        let (s, _, _) =
            request(&server.addr, "GET", "/v1/logs/tl/consumers/nobody", None, b"").unwrap();
        assert_eq!(s, 404);
        server.signal("-KILL");
    }
    let server = Server::start(dir.path(), &[]);
    let (s, _, v) =
        request(&server.addr, "GET", "/v1/logs/tl/consumers/billing", None, b"").unwrap();
    assert_eq!((s, v["cursor"].as_str()), (200, Some(all[24].as_str())));
    let mut resumed = tail(&server.addr, "/v1/logs/tl/tail?consumer=billing", "", 5);
    resumed.truncate(5);
    assert_eq!(resumed, all[25..30]);
}

#[test]
fn last_event_id_wins_over_after_and_consumer_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "2"]);
    let mut all = write(&server.addr, 0, 6);
    all.sort();
    let mut resumed = tail(
        &server.addr,
        &format!("/v1/logs/tl/tail?after={}", all[0]),
        &format!("last-event-id: {}\r\n", all[3]),
        2,
    );
    resumed.truncate(2);
    assert_eq!(resumed, all[4..6]);
    let (s, _, v) = request(&server.addr, "GET", "/v1/logs/tl/consumers/Bad!", None, b"").unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_consumer_name")));
    let (s, _, v) = request(&server.addr, "GET", "/v1/logs/tl", None, b"").unwrap();
    assert_eq!(s, 200);
    assert!(v["watermark"].as_str().unwrap() >= all[5].as_str(), "{v}");
}

#[test]
fn many_live_tails_share_one_merger_and_each_sees_every_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "4"]);
    let after = write(&server.addr, 0, 10).into_iter().max().unwrap();
    let (rounds, n) = (20, 25);
    let tails = 12;
    let readers: Vec<_> = (0..tails)
        .map(|t| {
            let addr = server.addr.clone();
            let (query, headers, want) = match t % 3 {
                0 => (format!("after={after}"), "", rounds * n),
                1 => (format!("after={after}"), "accept: application/x-ndjson\r\n", rounds * n),
                _ => (format!("after={after}&key=k3"), "", rounds),
            };
            std::thread::spawn(move || {
                tail(&addr, &format!("/v1/logs/tl/tail?{query}"), headers, want)
            })
        })
        .collect();
    // Every tail has caught up and joined the one hub before the writes start.
    wait_metric(&server.addr, "shardlog_tails_active", tails as f64);
    wait_metric(&server.addr, "shardlog_tail_hubs", 1.0);
    let rounds_ids: Vec<Vec<String>> = (1..=rounds).map(|r| write(&server.addr, r, n)).collect();
    let mut all: Vec<String> = rounds_ids.iter().flatten().cloned().collect();
    all.sort();
    // write() gives commit i the key k{i}: one k3 a round.
    let mut k3: Vec<String> = rounds_ids.iter().map(|ids| ids[3].clone()).collect();
    k3.sort();
    for (t, r) in readers.into_iter().enumerate() {
        // Whatever arrived, not just the first `want`: a repeat would show as one too many.
        let seen = r.join().unwrap();
        let want = if t % 3 == 2 { &k3 } else { &all };
        assert_eq!(&seen, want, "tail {t}");
    }
    // The hub stops with its last tail.
    wait_metric(&server.addr, "shardlog_tails_active", 0.0);
    wait_metric(&server.addr, "shardlog_tail_hubs", 0.0);
}

#[test]
fn a_live_tail_that_falls_behind_its_hub_reads_on_its_own_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "2"]);
    let after = write(&server.addr, 0, 1).remove(0);
    let mut s = connect_small(&server.addr);
    write!(
        s,
        "GET /v1/logs/tl/tail?after={after} HTTP/1.1\r\nhost: localhost\r\naccept: application/x-ndjson\r\n\r\n"
    )
    .unwrap();
    wait_metric(&server.addr, "shardlog_tail_hubs", 1.0);
    // The client reads nothing while far more chunks pass than the hub keeps (one request of
    // one 16 KiB commit after another: about a chunk each), beyond what the server's socket
    // buffer holds (up to 4 MiB on Linux).
    let pad = "x".repeat(16 << 10);
    let mut written = Vec::new();
    for i in 0..600 {
        let line = format!("{{\"i\":{i},\"p\":\"{pad}\"}}\n");
        let (st, _, v) = request(
            &server.addr,
            "POST",
            "/v1/logs/tl/commits",
            Some("application/x-ndjson"),
            line.as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "{v}");
        written.push(v["ids"][0].as_str().unwrap().to_owned());
    }
    written.sort();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // Each complete line parsed once (chunk-size lines of the HTTP framing are not commits).
    let (mut seen, mut pending) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < written.len() {
        assert!(Instant::now() < deadline, "the tail stopped at {} commits", seen.len());
        match s.read(&mut buf) {
            Ok(0) => panic!("the server closed the tail"),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            seen.extend(ids_in(&String::from_utf8_lossy(&line)));
        }
    }
    assert_eq!(seen, written);
    assert!(metric(&server.addr, "shardlog_tail_catchups_total") >= 1.0);
}
