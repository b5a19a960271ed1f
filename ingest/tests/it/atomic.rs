//! The real binary under concurrent cross-shard and idempotent writes: strong reads see every
//! commit acknowledged before them, and idempotent retries after SIGKILL never store a commit
//! twice. (The history checker, `history`, checks these and more on random histories; these
//! are the issue's two reproductions, kept as regression tests.)

use super::process::{Server, all_commits, request, request_with_headers};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[test]
fn strong_reads_see_every_acknowledged_commit_under_cross_shard_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--default-shards", "8"]);
    let addr = server.addr.clone();
    let (s, _, _) = request(&addr, "PUT", "/v1/logs/x", Some("application/json"), b"{}").unwrap();
    assert!(s == 200 || s == 201);
    let stop = Arc::new(AtomicBool::new(false));
    // Six clients keep requests spanning shards in flight the whole time.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (addr, stop) = (addr.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 200_000 {
                    let commits: Vec<String> = (0..20)
                        .map(|i| {
                            let key = format!("k{w}-{}", (n + i) % 13);
                            format!(r#"{{"key":"{key}","payload":{{"w":{w},"n":{n},"i":{i}}}}}"#)
                        })
                        .collect();
                    let body = format!(r#"{{"commits":[{}]}}"#, commits.join(","));
                    let r = request(
                        &addr,
                        "POST",
                        "/v1/logs/x/commits",
                        Some("application/json"),
                        body.as_bytes(),
                    );
                    assert_eq!(r.map(|r| r.0), Some(200));
                    n += 1;
                }
            })
        })
        .collect();
    let mut missed = Vec::new();
    for t in 0..300 {
        let line = format!("{{\"probe\":{t}}}\n");
        let (s, _, v) = request(
            &addr,
            "POST",
            "/v1/logs/x/commits",
            Some("application/x-ndjson"),
            line.as_bytes(),
        )
        .unwrap();
        assert_eq!(s, 200, "{v}");
        let id = v["first_id"].as_str().unwrap().to_owned();
        let path = format!("/v1/logs/x/timeline?from={id}&limit=1&consistency=strong&timeout=10s");
        let (s, _, page) = request(&addr, "GET", &path, None, b"").unwrap();
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["consistency"], "strong");
        let got = page["commits"].as_array().unwrap();
        if got.first().and_then(|c| c["id"].as_str()) != Some(id.as_str()) {
            missed.push((id, page));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        missed.is_empty(),
        "{} of 300 strong reads missed their own acknowledged commit, first: {:?}",
        missed.len(),
        missed.first()
    );
}

/// One writer's request: its Idempotency-Key and body.
struct Pending {
    key: String,
    body: String,
    json: bool,
}

fn post(addr: &str, p: &Pending) -> Option<(u16, Value)> {
    let ct = if p.json { "application/json" } else { "application/x-ndjson" };
    let extra = format!("idempotency-key: {}\r\n", p.key);
    let path = "/v1/logs/idem/commits?durability=sync";
    request_with_headers(addr, "POST", path, Some(ct), &extra, p.body.as_bytes())
        .map(|r| (r.0, r.2))
}

#[test]
fn idempotent_retries_after_sigkill_never_store_a_commit_twice() {
    let dir = tempfile::tempdir().unwrap();
    // Per writer, the request whose answer a kill cut off: retried first after the restart.
    let mut pending: Vec<Option<Pending>> = (0..4).map(|_| None).collect();
    let mut acked: HashMap<String, Value> = HashMap::new();
    let mut duplicates = 0;
    let mut next = [0u64; 4];
    for round in 0..10 {
        let server = Server::start(dir.path(), &["--default-shards", "4"]);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = pending
            .drain(..)
            .enumerate()
            .map(|(w, mut retry)| {
                let (addr, stop, mut r) = (server.addr.clone(), Arc::clone(&stop), next[w]);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut dups = 0;
                    loop {
                        let p = match retry.take() {
                            Some(p) => p,
                            None if stop.load(Ordering::Relaxed) => break,
                            None => {
                                r += 1;
                                let json = r % 2 == 0;
                                let body = if json {
                                    let c: Vec<String> = (0..6)
                                        .map(|i| format!(r#"{{"key":"k{i}","payload":{{"w":{w},"r":{r},"i":{i}}}}}"#))
                                        .collect();
                                    format!(r#"{{"commits":[{}]}}"#, c.join(","))
                                } else {
                                    (0..3).map(|i| format!("{{\"w\":{w},\"r\":{r},\"i\":{i}}}\n")).collect()
                                };
                                Pending { key: format!("key-{w}-{r}"), body, json }
                            }
                        };
                        match post(&addr, &p) {
                            Some((200, v)) => {
                                dups += usize::from(v["duplicate"] == true);
                                acked.push((p.key, v));
                            }
                            Some((s, v)) => panic!("{}: {s} {v}", p.key),
                            // The server was killed: the outcome is unknown, retry later.
                            None => return (acked, dups, Some(p), r),
                        }
                    }
                    (acked, dups, None, r)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 150 * (round % 4)));
        server.signal("-KILL");
        stop.store(true, Ordering::Relaxed);
        for (w, c) in clients.into_iter().enumerate() {
            let (a, d, p, r) = c.join().unwrap();
            for (key, v) in a {
                if let Some(first) = acked.get(&key) {
                    assert_eq!(first["ids"], v["ids"], "{key}: a repeat returned other ids");
                }
                acked.insert(key, v);
            }
            duplicates += d;
            pending.push(p);
            next[w] = r;
        }
        drop(server);
    }
    let server = Server::start(dir.path(), &[]);
    // What was still in doubt is retried once more, so every request has an answer.
    for p in pending.iter().flatten() {
        let (s, v) = post(&server.addr, p).unwrap();
        assert_eq!(s, 200, "{v}");
        acked.insert(p.key.clone(), v);
    }
    let stored = all_commits(&server.addr, "idem", 4);
    let mut copies: HashMap<String, usize> = HashMap::new();
    for payload in stored.values() {
        *copies.entry(payload.to_string()).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    for (key, v) in &acked {
        for id in v["ids"].as_array().unwrap() {
            assert!(stored.contains_key(id.as_str().unwrap()), "{key}: acknowledged {id} lost");
        }
    }
    assert!(acked.len() > 40, "too few requests: {}", acked.len());
    eprintln!("{} requests, {} answered as duplicates after a kill", acked.len(), duplicates);
}
