//! The merged timeline through the API: ULID order across shards, cursor walks that see every
//! commit once while writes interleave, read-your-writes under `strong`, `eventual` never
//! waiting, and the deadline with and without `fallback=eventual` when the watermark stalls.

use super::*;
use axum::http::StatusCode as S;

const JS: Option<&str> = Some("application/json");

async fn write_keys(t: &TestApp, log: &str, round: usize, n: usize) -> Vec<String> {
    let commits: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"key": "k{i}", "payload": {{"r": {round}, "i": {i}}}}}"#))
        .collect();
    let (s, v) = t
        .call(
            "POST",
            &format!("/v1/logs/{log}/commits"),
            JS,
            format!(r#"{{"commits": [{}]}}"#, commits.join(",")),
        )
        .await;
    assert_eq!(s, S::OK, "{v}");
    v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

/// Follows `next` from the start until a page comes back empty.
async fn walk(t: &TestApp, log: &str, limit: usize) -> Vec<String> {
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let q = if after.is_empty() { String::new() } else { format!("&after={after}") };
        let (s, v) =
            t.call("GET", &format!("/v1/logs/{log}/timeline?limit={limit}{q}"), None, "").await;
        assert_eq!(s, S::OK, "{v}");
        let page = v["commits"].as_array().unwrap();
        if page.is_empty() {
            assert!(v["next"].is_null());
            return seen;
        }
        seen.extend(page.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        after = v["next"].as_str().unwrap().to_owned();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_is_every_commit_once_in_ulid_order() {
    let t = TestApp::new(|c| c.default_shards = 8);
    let mut all = Vec::new();
    for round in 0..10 {
        all.extend(write_keys(&t, "tl", round, 20).await);
    }
    let seen = walk(&t, "tl", 7).await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    let (_, v) = t.call("GET", "/v1/logs/tl/timeline?limit=3&key=k5", None, "").await;
    let keys: Vec<&str> =
        v["commits"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["k5", "k5", "k5"]);
    assert_eq!(v["consistency"], "strong");
    assert!(v["watermark"].as_str().unwrap() >= sorted.last().unwrap().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_walking_next_while_others_write_sees_each_commit_once_in_order() {
    let t = std::sync::Arc::new(TestApp::new(|c| c.default_shards = 8));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let t = std::sync::Arc::clone(&t);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for round in 0..15 {
                    ids.extend(write_keys(&t, "live", w * 100 + round, 8).await);
                }
                ids
            })
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut after = String::new();
    let mut acked = Vec::new();
    let mut writers = writers;
    loop {
        let q = if after.is_empty() { String::new() } else { format!("&after={after}") };
        let (s, v) = t
            .call(
                "GET",
                &format!("/v1/logs/live/timeline?limit=50&consistency=eventual{q}"),
                None,
                "",
            )
            .await;
        if s == S::NOT_FOUND {
            tokio::task::yield_now().await;
            continue; // not created yet
        }
        for c in v["commits"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap().to_owned();
            if let Some(last) = seen.last() {
                assert!(&id > last, "{id} after {last}");
            }
            seen.push(id);
        }
        if let Some(n) = v["next"].as_str() {
            after = n.to_owned();
        }
        if writers.iter().all(|w| w.is_finished()) {
            for w in writers.drain(..) {
                acked.extend(w.await.unwrap());
            }
        }
        if writers.is_empty() && seen.len() >= acked.len() && !acked.is_empty() {
            // One strong page more must add nothing.
            let (_, v) = t
                .call("GET", &format!("/v1/logs/live/timeline?limit=50&after={after}"), None, "")
                .await;
            assert!(v["commits"].as_array().unwrap().is_empty());
            break;
        }
    }
    acked.sort();
    assert_eq!(seen, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_see_every_acknowledged_write() {
    let t = TestApp::new(|c| c.default_shards = 4);
    for round in 0..20 {
        let ids = write_keys(&t, "ryw", round, 3).await;
        let (s, v) = t.call("GET", "/v1/logs/ryw/timeline?limit=10000", None, "").await;
        assert_eq!((s, v["consistency"].as_str()), (S::OK, Some("strong")));
        let page: Vec<&str> =
            v["commits"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        for id in &ids {
            assert!(page.contains(&id.as_str()), "round {round}: {id} missing from a strong read");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watermark_gives_504_or_the_eventual_answer() {
    let t = TestApp::new(|c| c.default_shards = 4);
    write_keys(&t, "st", 0, 1).await; // one key: one shard moves, the others stay behind
    t.state.writers.hold_nudges(true);
    write_keys(&t, "st", 1, 1).await;
    let (s, v) = t.call("GET", "/v1/logs/st/timeline?timeout=30ms", None, "").await;
    assert_eq!((s, code(&v)), (S::GATEWAY_TIMEOUT, "deadline_exceeded"));
    let (s, v) =
        t.call("GET", "/v1/logs/st/timeline?timeout=30ms&fallback=eventual", None, "").await;
    assert_eq!((s, v["consistency"].as_str()), (S::OK, Some("eventual")));
    let started = std::time::Instant::now();
    let (s, v) = t.call("GET", "/v1/logs/st/timeline?consistency=eventual", None, "").await;
    assert_eq!((s, v["consistency"].as_str()), (S::OK, Some("eventual")));
    assert!(v["watermark"].is_string());
    // Eventual never waits for the stalled shards: it answers (this is not a timing assertion
    // on speed, only that it does not take the strong path's deadline).
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    t.state.writers.hold_nudges(false);
    let (s, v) = t.call("GET", "/v1/logs/st/timeline", None, "").await;
    assert_eq!((s, v["commits"].as_array().unwrap().len()), (S::OK, 2), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_parameters_are_checked_and_ndjson_is_served() {
    let t = TestApp::new(|c| c.default_shards = 2);
    let ids = write_keys(&t, "p", 0, 6).await;
    let mut sorted = ids.clone();
    sorted.sort();
    let (_, v) = t
        .call("GET", &format!("/v1/logs/p/timeline?from={}&to={}", sorted[1], sorted[4]), None, "")
        .await;
    let got: Vec<&str> =
        v["commits"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(got, sorted[1..4].iter().map(String::as_str).collect::<Vec<_>>());
    let (_, v) = t
        .call(
            "GET",
            "/v1/logs/p/timeline?from=1970-01-01T00:00:00Z&to=2999-01-01T00:00:00Z",
            None,
            "",
        )
        .await;
    assert_eq!(v["commits"].as_array().unwrap().len(), 6);
    let req = Request::builder()
        .uri("/v1/logs/p/timeline?limit=4")
        .header("accept", "application/x-ndjson")
        .body(Body::empty())
        .unwrap();
    let (s, h, body) = t.send(req).await;
    assert_eq!(s, S::OK);
    assert_eq!(h["content-type"], "application/x-ndjson");
    assert_eq!(body.as_str().unwrap().lines().count(), 4);
    for bad in [
        "limit=0",
        "limit=10001",
        "after=nope",
        "consistency=maybe",
        "fallback=strong",
        "after=01ARZ3NDEKTSV4RRFFQ69G5FAV&from=01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "colour=red",
    ] {
        let (s, v) = t.call("GET", &format!("/v1/logs/p/timeline?{bad}"), None, "").await;
        assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_query"), "{bad}");
    }
    let (s, v) = t.call("GET", "/v1/logs/none/timeline", None, "").await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "log_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_retention_gets_410_with_the_range_gone() {
    let t = TestApp::new(|c| {
        c.segment_bytes = 64 * 1024;
        c.commit_bytes_max = 16 * 1024;
    });
    let (s, _) = t
        .call("PUT", "/v1/logs/r", JS, r#"{"shards": 1, "retention": {"max_bytes": 100000}}"#)
        .await;
    assert_eq!(s, S::CREATED);
    let mut ids = Vec::new();
    for round in 0..30 {
        ids.extend(write_keys(&t, "r", round, 50).await);
    }
    let entry = t.state.registry.get("r").unwrap();
    let retired = tokio::task::block_in_place(|| entry.log.apply_retention(u64::MAX / 2)).unwrap();
    assert!(retired > 0);
    let kept = entry.log.shard(0).retained_from().unwrap().to_string();
    let (s, v) = t.call("GET", &format!("/v1/logs/r/timeline?after={}", ids[0]), None, "").await;
    assert_eq!((s, code(&v)), (S::GONE, "cursor_expired"), "{v}");
    assert_eq!(v["error"]["gone"]["before"], kept.as_str());
    let req = Request::builder()
        .uri(format!("/v1/logs/r/tail?after={}", ids[0]))
        .body(Body::empty())
        .unwrap();
    let (s, _, v) = t.send(req).await;
    assert_eq!((s, code(&v)), (S::GONE, "cursor_expired"));
    // From the start, or from a cursor inside what is kept, reading works.
    let (s, v) = t.call("GET", "/v1/logs/r/timeline?limit=1", None, "").await;
    assert_eq!((s, v["commits"][0]["id"].as_str()), (S::OK, Some(kept.as_str())));
    let (s, _) = t
        .call("GET", &format!("/v1/logs/r/timeline?after={}", ids.last().unwrap()), None, "")
        .await;
    assert_eq!(s, S::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_large_commits_end_at_the_page_byte_bound_and_lose_nothing() {
    // 12 commits of 30 000 bytes; a page ends once it holds 100 000 bytes: 4 commits a page.
    let t = TestApp::new(|c| c.read_page_bytes_max = 100_000);
    let pad = "x".repeat(30_000);
    let commits: Vec<String> =
        (0..12).map(|i| format!(r#"{{"key": "k{i}", "payload": "{i}{pad}"}}"#)).collect();
    let body = format!(r#"{{"commits": [{}]}}"#, commits.join(","));
    let (s, v) = t.call("POST", "/v1/logs/big/commits", JS, body).await;
    assert_eq!(s, S::OK, "{v}");
    let mut ids: Vec<String> =
        v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    ids.sort();

    let (s, v) = t.call("GET", "/v1/logs/big/timeline?limit=100", None, "").await;
    assert_eq!(s, S::OK, "{v}");
    let page = v["commits"].as_array().unwrap();
    assert_eq!(page.len(), 4, "three commits are under the bound, the fourth passes it");
    assert_eq!(v["next"].as_str(), Some(ids[3].as_str()));
    // Following `next` still gives every commit once (JSON pages here; NDJSON pages walk in
    // pages.rs); an NDJSON page ends at the same bound.
    assert_eq!(walk(&t, "big", 100).await, ids);
    let req = Request::builder()
        .uri(format!("/v1/logs/big/timeline?limit=100&after={}", ids[3]))
        .header("accept", "application/x-ndjson")
        .body(Body::empty())
        .unwrap();
    let (s, h, v) = t.send(req).await;
    assert_eq!(s, S::OK);
    assert_eq!(v.as_str().unwrap().lines().count(), 4);
    assert_eq!(h["x-shardlog-next"], ids[7].as_str());

    // Shard pages too: each ends at the bound, with a cursor to the rest.
    let mut in_shards = Vec::new();
    for shard in 0..4 {
        let mut after = String::new();
        loop {
            let uri = format!("/v1/logs/big/shards/{shard}/commits?limit=100&after={after}");
            let (s, v) = t.call("GET", &uri, None, "").await;
            assert_eq!(s, S::OK, "{v}");
            let page = v["commits"].as_array().unwrap();
            if page.is_empty() {
                assert!(v["next"].is_null(), "{v}");
                break;
            }
            assert!(page.len() <= 4, "{}", page.len());
            in_shards.extend(page.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
            after = v["next"].as_str().unwrap().to_owned();
        }
    }
    in_shards.sort();
    assert_eq!(in_shards, ids);
}
