//! Streams under concurrency and restarts: racing conditional appends, racing transactions
//! (refused ones among them), racing idempotent appends, clean restarts and SIGKILL.
//!
//! What it is not: the single-request rules of the contract (`super`).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_appends_leave_no_gap_and_no_duplicate() {
    const TASKS: u64 = 16;
    const EACH: u64 = 5;
    let t = Arc::new(TestApp::new(|_| {}));
    let tasks: Vec<_> = (0..TASKS)
        .map(|w| {
            let t = Arc::clone(&t);
            tokio::spawn(async move {
                let mut won = Vec::new();
                for attempt in 0.. {
                    assert!(attempt < 20_000, "task {w} never got its appends in");
                    let (s, h, _) =
                        req(&t, "HEAD", "/v1/logs/race/streams/hot", None, &[], Body::empty())
                            .await;
                    let seen = match s {
                        S::OK => Some(etag(&h).unwrap().to_owned()),
                        S::NOT_FOUND => None,
                        other => panic!("HEAD: {other}"),
                    };
                    let cond = match &seen {
                        Some(tag) => ("if-match", tag.as_str()),
                        None => ("if-none-match", "*"),
                    };
                    let line = format!("{{\"w\":{w},\"n\":{}}}\n", won.len());
                    let (s, h, v) = append(&t, "race", "hot", &[cond], ND, line).await;
                    match s {
                        S::OK => {
                            let r = v["revisions"][0].as_u64().unwrap();
                            let want = seen
                                .map_or(0, |tag| tag.trim_matches('"').parse::<u64>().unwrap() + 1);
                            assert_eq!(r, want, "task {w}: {v}");
                            assert_eq!(etag(&h), Some(format!("\"{r}\"").as_str()));
                            won.push(r);
                            if won.len() as u64 == EACH {
                                return won;
                            }
                        }
                        S::PRECONDITION_FAILED => assert_eq!(code(&v), "revision_mismatch", "{v}"),
                        other => panic!("task {w}: {other} {v}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let mut all: Vec<(u64, u64, usize)> = Vec::new();
    for (w, task) in tasks.into_iter().enumerate() {
        for (n, r) in task.await.unwrap().into_iter().enumerate() {
            all.push((r, w as u64, n));
        }
    }
    all.sort();
    let n = TASKS * EACH;
    assert_eq!(all.iter().map(|a| a.0).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
    assert_eq!(last_revision(&t, "race", "hot").await, Some(n - 1));
    let (_, _, v) = get(&t, "/v1/logs/race/streams/hot?limit=1000", &[]).await;
    for (c, (r, w, k)) in v["commits"].as_array().unwrap().iter().zip(&all) {
        assert_eq!((c["revision"].as_u64(), &c["payload"]), (Some(*r), &json!({"w": w, "n": k})));
    }
    assert_eq!(timeline(&t, "race").await.len() as u64, n, "a refused append was written");
}

/// Appends a 1 KiB line `count` times to stream `key` through the in-process app, one request
/// per line: each `If-Match` the previous revision.
async fn fill(t: &TestApp, key: &str, from: u64, count: u64) {
    for r in from..from + count {
        let tag = r.checked_sub(1).map(|p| format!("\"{p}\""));
        let cond = match &tag {
            Some(tag) => ("if-match", tag.as_str()),
            None => ("if-none-match", "*"),
        };
        let line = format!("{{\"r\":{r},\"pad\":\"{}\"}}\n", "p".repeat(1000));
        let (s, _, v) = append(t, "re", key, &[cond], ND, line).await;
        assert_eq!((s, revisions(&v)), (S::OK, json!([r])), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_continues_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the streams roll (a snapshot of the index) and go on after the roll.
    let open = || {
        TestApp::new(|c| {
            c.data_dir = dir.path().to_owned();
            c.segment_bytes = 64 << 10;
            c.commit_bytes_max = 16 << 10;
        })
    };
    let k = spread("re-", 2);
    {
        let t = open();
        fill(&t, &k[0], 0, 200).await;
        fill(&t, &k[1], 0, 2).await;
        let (s, _, v) = append(&t, "re", &k[1], &[("idempotency-key", "r2")], ND, "2\n").await;
        assert_eq!((s, revisions(&v)), (S::OK, json!([2])), "{v}");
        let failed = json!({"commits": [
            {"key": k[0], "payload": 1, "expected_revision": 199},
            {"key": k[1], "payload": 2, "expected_revision": 0},
        ]});
        let (s, _, v) = ingest_json(&t, "re", &[], failed).await;
        assert_eq!((s, code(&v)), (S::PRECONDITION_FAILED, "revision_mismatch"), "{v}");
    }
    let t = open();
    let (_, _, info) = get(&t, "/v1/logs/re", &[]).await;
    assert!(info["segments"].as_u64().unwrap() > 4, "no segment rolled: {info}");
    assert_eq!(last_revision(&t, "re", &k[0]).await, Some(199));
    assert_eq!(last_revision(&t, "re", &k[1]).await, Some(2));
    // The first answer of a key outlives the restart, revisions and all.
    let (s, _, v) = append(&t, "re", &k[1], &[("idempotency-key", "r2")], ND, "2\n").await;
    assert_eq!((s, revisions(&v), &v["duplicate"]), (S::OK, json!([2]), &json!(true)), "{v}");
    fill(&t, &k[0], 200, 2).await;
    let body = json!({"commits": [{"key": k[1], "payload": 3, "expected_revision": 2}, {"key": k[0], "payload": 4}]});
    let (s, _, v) = ingest_json(&t, "re", &[], body).await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([3, 202])), "{v}");
    assert_eq!(last_revision(&t, "re", &k[0]).await, Some(202));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_continues_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shardlog.toml");
    let settings =
        "writers = 2\ndefault_shards = 4\nsegment_bytes = 65536\ncommit_bytes_max = 16384\n";
    std::fs::write(&config, settings).unwrap();
    let data = dir.path().join("data");
    let k = spread("crash-", 2);
    tokio::task::block_in_place(|| {
        let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
        let post = |path: &str, ct: &str, extra: &str, body: String| {
            request_with_headers(&server.addr, "POST", path, Some(ct), extra, body.as_bytes())
                .unwrap()
        };
        let path = format!("/v1/logs/re/streams/{}/commits", k[0]);
        for r in 0..120u64 {
            let cond = match r {
                0 => "if-none-match: *\r\n".to_owned(),
                _ => format!("if-match: \"{}\"\r\n", r - 1),
            };
            let line = format!("{{\"r\":{r},\"pad\":\"{}\"}}\n", "q".repeat(1000));
            let (s, head, v) = post(&path, ND, &cond, line);
            assert_eq!((s, revisions(&v)), (200, json!([r])), "{v}");
            assert!(head.contains(&format!("etag: \"{r}\"")), "{head}");
        }
        let ok = json!({"commits": [{"key": k[1], "payload": 0}, {"key": k[0], "payload": 1, "expected_revision": 119}]});
        let (s, _, v) = post("/v1/logs/re/commits", JS, "", ok.to_string());
        assert_eq!((s, revisions(&v)), (200, json!([0, 120])), "{v}");
        let failed = json!({"commits": [{"key": k[1], "payload": 0}, {"key": k[0], "payload": 1, "expected_revision": 3}]});
        let (s, _, v) = post("/v1/logs/re/commits", JS, "", failed.to_string());
        assert_eq!(s, 412, "{v}");
        server.signal("-KILL");
    });
    let t = TestApp::new(|c| {
        c.data_dir = data.clone();
        c.segment_bytes = 64 << 10;
        c.commit_bytes_max = 16 << 10;
    });
    assert_eq!(last_revision(&t, "re", &k[0]).await, Some(120));
    assert_eq!(last_revision(&t, "re", &k[1]).await, Some(0));
    fill(&t, &k[0], 121, 1).await;
    let (s, _, v) = append(&t, "re", &k[1], &[("if-match", "\"0\"")], ND, "1\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([1])), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_transactions_racing_appends_leave_every_stream_without_a_gap() {
    let t = Arc::new(TestApp::new(|_| {}));
    let k = Arc::new(spread("cx-", 4));
    let tasks: Vec<_> = (0..8u64)
        .map(|w| {
            let (t, k) = (Arc::clone(&t), Arc::clone(&k));
            tokio::spawn(async move {
                // (key, revision, payload) acknowledged; payloads refused.
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                for i in 0..30u64 {
                    let mut commits = Vec::new();
                    let (s, v) = if (w + i) % 3 == 0 {
                        let key = &k[((w + i) % 4) as usize];
                        commits.push((key.clone(), json!({"w": w, "i": i, "j": 0})));
                        let line = format!("{}\n", commits[0].1);
                        let (s, _, v) = append(&t, "cx", key, &[], ND, line).await;
                        (s, v)
                    } else {
                        let bad = i % 4 == 0;
                        let body: Vec<Value> = (0..3u64)
                            .map(|j| {
                                let key = k[((w + i + j) % 4) as usize].clone();
                                let payload = json!({"w": w, "i": i, "j": j});
                                commits.push((key.clone(), payload.clone()));
                                let expected = if bad && j == 2 { json!(1_000_000) } else { json!("any") };
                                json!({"key": key, "payload": payload, "expected_revision": expected})
                            })
                            .collect();
                        let (s, _, v) = ingest_json(&t, "cx", &[], json!({"commits": body})).await;
                        assert!(!bad || s != S::OK, "an expectation that cannot hold passed: {v}");
                        (s, v)
                    };
                    match s {
                        S::OK => {
                            for (n, (key, payload)) in commits.into_iter().enumerate() {
                                acked.push((key, v["revisions"][n].as_u64().unwrap(), payload));
                            }
                        }
                        S::PRECONDITION_FAILED => {
                            assert_eq!(v["error"]["conflicts"][0]["expected"], 1_000_000, "{v}");
                            refused.extend(commits.into_iter().map(|c| c.1));
                        }
                        S::SERVICE_UNAVAILABLE if code(&v) == "stream_busy" => {
                            refused.extend(commits.into_iter().map(|c| c.1));
                        }
                        other => panic!("{other}: {v}"),
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        let (a, r) = task.await.unwrap();
        acked.extend(a);
        refused.extend(r);
    }
    assert!(!refused.is_empty() && acked.len() > 100, "{} {}", acked.len(), refused.len());
    eprintln!(
        "{} commits acknowledged, {} refused (412 or stream_busy)",
        acked.len(),
        refused.len()
    );
    acked.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    for key in k.iter() {
        let mine: Vec<&(String, u64, Value)> = acked.iter().filter(|a| &a.0 == key).collect();
        let revs: Vec<u64> = mine.iter().map(|a| a.1).collect();
        assert_eq!(revs, (0..mine.len() as u64).collect::<Vec<_>>(), "{key}: answered revisions");
        assert_eq!(last_revision(&t, "cx", key).await, Some(mine.len() as u64 - 1), "{key}");
        let (_, _, v) = get(&t, &format!("/v1/logs/cx/streams/{key}?limit=10000"), &[]).await;
        let stored: Vec<&Value> =
            v["commits"].as_array().unwrap().iter().map(|c| &c["payload"]).collect();
        assert_eq!(stored, mine.iter().map(|a| &a.2).collect::<Vec<_>>(), "{key}: payloads");
    }
    let seen: Vec<Value> =
        timeline(&t, "cx").await.into_iter().map(|c| c["payload"].clone()).collect();
    assert_eq!(seen.len(), acked.len());
    assert!(refused.iter().all(|r| !seen.contains(r)), "a refused commit is visible");
}

/// Unconditional appends carrying an `Idempotency-Key`, racing on one stream. Such a write is a
/// transaction, which waits at most 50 ms for a stream another undecided one holds and is then
/// refused, `503 stream_busy` with `Retry-After` (docs/API.md, held streams): a refusal writes
/// nothing, and the retry with the same key is written once, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_idempotent_appends_are_written_once_through_busy_retries() {
    let t = Arc::new(TestApp::new(|_| {}));
    let tasks: Vec<_> = (0..16u64)
        .map(|w| {
            let t = Arc::clone(&t);
            tokio::spawn(async move {
                let (mut won, mut busy) = (Vec::new(), 0);
                for i in 0..10u64 {
                    let key = format!("append-{w}-{i}");
                    let hdrs = [("idempotency-key", key.as_str())];
                    for attempt in 0.. {
                        assert!(attempt < 1000, "{key} never written");
                        let line = format!("{{\"w\":{w},\"i\":{i}}}\n");
                        let (s, h, v) = append(&t, "ik", "hot", &hdrs, ND, line).await;
                        if s == S::OK {
                            assert_eq!(v["duplicate"], false, "{key}: {v}");
                            won.push((v["revisions"][0].as_u64().unwrap(), w, i));
                            break;
                        }
                        assert_eq!((s, code(&v)), (S::SERVICE_UNAVAILABLE, "stream_busy"), "{v}");
                        assert!(h.contains_key("retry-after"), "{key}: {v}");
                        busy += 1;
                        tokio::task::yield_now().await;
                    }
                }
                (won, busy)
            })
        })
        .collect();
    let (mut all, mut busy) = (Vec::new(), 0);
    for task in tasks {
        let (won, b) = task.await.unwrap();
        all.extend(won);
        busy += b;
    }
    eprintln!("160 idempotent appends, {busy} answers 503 stream_busy first");
    all.sort();
    assert_eq!(all.iter().map(|a| a.0).collect::<Vec<_>>(), (0..160).collect::<Vec<_>>());
    assert_eq!(last_revision(&t, "ik", "hot").await, Some(159));
    let (_, _, v) = get(&t, "/v1/logs/ik/streams/hot?limit=1000", &[]).await;
    for (c, (r, w, i)) in v["commits"].as_array().unwrap().iter().zip(&all) {
        assert_eq!((c["revision"].as_u64(), &c["payload"]), (Some(*r), &json!({"w": w, "i": i})));
    }
    assert_eq!(timeline(&t, "ik").await.len(), 160, "a refused append was written");
}
