//! The HTTP API in-process: every endpoint of the service issue and every error status it
//! can produce without a real socket.

use super::*;
use axum::http::StatusCode as S;
use std::io::Write;

const ND: Option<&str> = Some("application/x-ndjson");
const JS: Option<&str> = Some("application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_created_checked_listed_and_deleted() {
    let t = TestApp::new(|_| {});
    let (s, v) = t
        .call(
            "PUT",
            "/v1/logs/orders",
            JS,
            r#"{"shards": 3, "retention": {"max_age": "7d", "max_bytes": 1000000}}"#,
        )
        .await;
    assert_eq!(s, S::CREATED, "{v}");
    assert_eq!(v["shards"], 3);
    assert_eq!(v["retention"]["max_bytes"], 1_000_000);
    let (s, _) = t.call("PUT", "/v1/logs/orders", JS, r#"{"shards": 3}"#).await;
    assert_eq!(s, S::OK);
    let (s, v) = t.call("PUT", "/v1/logs/orders", JS, r#"{"shards": 5}"#).await;
    assert_eq!((s, code(&v)), (S::CONFLICT, "log_exists"));
    let (s, v) = t.call("PUT", "/v1/logs/Bad!", JS, "{}").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_log_name"));
    let (s, v) = t.call("PUT", "/v1/logs/x", JS, r#"{"shards": 2, "colour": "red"}"#).await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_json"));
    let (s, v) = t.call("PUT", "/v1/logs/x", JS, r#"{"retention": {"max_age": "soon"}}"#).await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_retention"));
    let (_, v) = t.call("GET", "/v1/logs", None, "").await;
    assert_eq!(v["logs"].as_array().unwrap().len(), 1);
    let (s, v) = t.call("GET", "/v1/logs/orders", None, "").await;
    assert_eq!((s, v["commits"].as_u64()), (S::OK, Some(0)));
    let (s, _) = t.call("DELETE", "/v1/logs/orders", None, "").await;
    assert_eq!(s, S::NO_CONTENT);
    let (s, v) = t.call("GET", "/v1/logs/orders", None, "").await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "log_not_found"));
    let (s, _) = t.call("DELETE", "/v1/logs/orders", None, "").await;
    assert_eq!(s, S::NOT_FOUND);
    assert!(!t.dir.path().join("logs/orders").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_json_and_frames_round_trip_through_reads() {
    let t = TestApp::new(|_| {});
    let (s, v) = t.call("POST", "/v1/logs/ev/commits", ND, "{\"n\": 1}\n\nplain \u{e9}\n").await;
    assert_eq!(s, S::OK, "{v}");
    assert_eq!(
        (v["count"].as_u64(), v["durability"].as_str(), v["duplicate"].as_bool()),
        (Some(2), Some("sync"), Some(false))
    );
    let ids: Vec<String> =
        v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    assert_eq!(v["first_id"], ids[0].as_str());
    assert_eq!(v["last_id"], ids[1].as_str());
    let (s, c) = t.call("GET", &format!("/v1/logs/ev/commits/{}", ids[0]), None, "").await;
    assert_eq!(s, S::OK);
    assert_eq!(c["payload"], serde_json::json!({"n": 1}));
    let (_, c) = t.call("GET", &format!("/v1/logs/ev/commits/{}", ids[1]), None, "").await;
    assert_eq!(c["payload"], "plain \u{e9}");

    let (s, v) = t.call("POST", "/v1/logs/ev/commits?durability=async", JS, r#"{"commits": [{"key": "u1", "payload": {"a": [1, 2]}}, {"key": "u2", "payload": 7}]}"#).await;
    assert_eq!((s, v["durability"].as_str()), (S::OK, Some("async")));
    let id = v["ids"][0].as_str().unwrap().to_owned();
    let (_, c) = t.call("GET", &format!("/v1/logs/ev/commits/{id}"), None, "").await;
    assert_eq!(
        (c["key"].as_str(), c["payload"].clone()),
        (Some("u1"), serde_json::json!({"a": [1, 2]}))
    );
    assert_eq!(c["shard"].as_u64(), Some(ingest::logs::shard_of_key(b"u1", 4) as u64));

    let mut frames = Vec::new();
    for p in [&[0xffu8, 0x00, 0x01][..], b"text"] {
        frames.extend_from_slice(&(p.len() as u32).to_le_bytes());
        frames.extend_from_slice(p);
    }
    let (s, v) = t
        .call(
            "POST",
            "/v1/logs/ev/commits?ids=false",
            Some("application/vnd.shardlog.frames"),
            frames,
        )
        .await;
    assert_eq!(s, S::OK);
    assert!(v.get("ids").is_none(), "ids=false leaves them out: {v}");
    let (_, c) = t
        .call("GET", &format!("/v1/logs/ev/commits/{}", v["first_id"].as_str().unwrap()), None, "")
        .await;
    assert_eq!(c["payload_base64"], "/wAB");
    let (_, info) = t.call("GET", "/v1/logs/ev", None, "").await;
    assert_eq!(info["commits"].as_u64(), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_accepted() {
    let t = TestApp::new(|_| {});
    let plain = "a\nb\nc\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain.as_bytes()).unwrap();
    for (enc, body) in
        [("gzip", gz.finish().unwrap()), ("zstd", zstd::encode_all(plain.as_bytes(), 1).unwrap())]
    {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/logs/z/commits")
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", enc)
            .body(Body::from(body))
            .unwrap();
        let (s, _, v) = t.send(req).await;
        assert_eq!((s, v["count"].as_u64()), (S::OK, Some(3)), "{enc}: {v}");
    }
    let req = Request::builder()
        .method("POST")
        .uri("/v1/logs/z/commits")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "br")
        .body(Body::from("x"))
        .unwrap();
    let (s, _, v) = t.send(req).await;
    assert_eq!((s, code(&v)), (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_commit_fails_the_request_and_writes_nothing() {
    let t = TestApp::new(|c| c.commit_bytes_max = 16);
    let (s, v) = t
        .call(
            "POST",
            "/v1/logs/e/commits",
            JS,
            r#"{"commits": [{"key": "k1", "payload": 1}, {"key": "k2"}]}"#,
        )
        .await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_commit"));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("commit 1:"), "{v}");
    let (s, v) = t
        .call("POST", "/v1/logs/e/commits", ND, "ok\nthis line is longer than sixteen bytes\n")
        .await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_commit"));
    let (s, v) = t.call("POST", "/v1/logs/e/commits", JS, "{not json").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_json"));
    let (s, v) = t.call("POST", "/v1/logs/e/commits", Some("text/plain"), "x").await;
    assert_eq!((s, code(&v)), (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    let (s, v) = t.call("POST", "/v1/logs/e/commits?durability=maybe", ND, "x\n").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_query"));
    let (s, v) = t.call("POST", "/v1/logs/e/commits?colour=red", ND, "x\n").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_query"));
    // Nothing of the failed requests is anywhere.
    if let Some(e) = t.state.registry.get("e") {
        assert_eq!(e.log.stats().commits, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_writes_the_good_ones() {
    let t = TestApp::new(|_| {});
    let (s, v) = t
        .call(
            "POST",
            "/v1/logs/p/commits?partial=true",
            JS,
            r#"{"commits": [{"payload": 1}, {"pay": 2}, {"payload": 3}]}"#,
        )
        .await;
    assert_eq!(s, S::OK, "{v}");
    assert_eq!(v["accepted"].as_array().unwrap().len(), 2);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert_eq!(t.state.registry.get("p").unwrap().log.stats().commits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_give_413() {
    let t = TestApp::new(|c| {
        c.body_bytes_max = 1000;
        c.batch_commits_max = 5;
    });
    let (s, v) = t.call("POST", "/v1/logs/l/commits", ND, "x".repeat(1001)).await;
    assert_eq!((s, code(&v)), (S::PAYLOAD_TOO_LARGE, "too_large"));
    let (s, v) = t.call("POST", "/v1/logs/l/commits", ND, "a\n".repeat(6)).await;
    assert_eq!((s, code(&v)), (S::PAYLOAD_TOO_LARGE, "too_large"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'a'; 100_000]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1000);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/logs/l/commits")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(Body::from(bomb))
        .unwrap();
    let (s, _, v) = t.send(req).await;
    assert_eq!(
        (s, code(&v)),
        (S::PAYLOAD_TOO_LARGE, "too_large"),
        "a decompression bomb stops at the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auto_create_answers_404_and_reads_404() {
    let t = TestApp::new(|c| c.auto_create = false);
    let (s, v) = t.call("POST", "/v1/logs/nope/commits", ND, "x\n").await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "log_not_found"));
    t.call("PUT", "/v1/logs/yes", JS, "").await;
    let (s, v) = t.call("GET", "/v1/logs/yes/commits/01ARZ3NDEKTSV4RRFFQ69G5FAV", None, "").await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "commit_not_found"));
    let (s, v) = t.call("GET", "/v1/logs/yes/commits/not-a-ulid", None, "").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_ulid"));
    let (s, v) = t.call("GET", "/v1/logs/yes/shards/99/commits", None, "").await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "not_found"));
    let (s, v) = t.call("GET", "/v2/whatever", None, "").await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_pages_follow_after() {
    let t = TestApp::new(|c| c.default_shards = 1);
    let body: String = (0..25).map(|i| format!("{{\"i\": {i}}}\n")).collect();
    t.call("POST", "/v1/logs/s/commits", ND, body).await;
    let mut after = String::new();
    let mut seen = Vec::new();
    loop {
        let (s, v) = t
            .call("GET", &format!("/v1/logs/s/shards/0/commits?limit=10&after={after}"), None, "")
            .await;
        assert_eq!(s, S::OK);
        let page = v["commits"].as_array().unwrap();
        if page.is_empty() {
            assert!(v["next"].is_null());
            break;
        }
        seen.extend(page.iter().map(|c| c["payload"]["i"].as_u64().unwrap()));
        after = v["next"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, (0..25).collect::<Vec<u64>>());
    let (s, v) = t.call("GET", "/v1/logs/s/shards/0/commits?limit=0", None, "").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_query"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let t = TestApp::new(|_| {});
    let (s, _) = t.call("GET", "/healthz", None, "").await;
    assert_eq!(s, S::OK);
    let (s, _) = t.call("GET", "/readyz", None, "").await;
    assert_eq!(s, S::OK);
    t.state.ready.store(false, std::sync::atomic::Ordering::Release);
    let req = Request::builder().uri("/readyz").body(Body::empty()).unwrap();
    let (s, h, v) = t.send(req).await;
    assert_eq!((s, code(&v)), (S::SERVICE_UNAVAILABLE, "unavailable"));
    assert_eq!(h["retry-after"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_commits_keep_their_shard_and_order() {
    let t = TestApp::new(|_| {});
    for round in 0..5 {
        let commits: Vec<String> =
            (0..20).map(|k| format!(r#"{{"key": "user-{k}", "payload": {round}}}"#)).collect();
        let (s, _) = t
            .call(
                "POST",
                "/v1/logs/k/commits",
                JS,
                format!(r#"{{"commits": [{}]}}"#, commits.join(",")),
            )
            .await;
        assert_eq!(s, S::OK);
    }
    for shard in 0..4 {
        let (_, v) =
            t.call("GET", &format!("/v1/logs/k/shards/{shard}/commits?limit=1000"), None, "").await;
        let mut last_round: std::collections::HashMap<String, u64> = Default::default();
        for c in v["commits"].as_array().unwrap() {
            let key = c["key"].as_str().unwrap().to_owned();
            assert_eq!(ingest::logs::shard_of_key(key.as_bytes(), 4), shard);
            let round = c["payload"].as_u64().unwrap();
            if let Some(prev) = last_round.insert(key, round) {
                assert!(round > prev, "a key's commits stay in order");
            }
        }
    }
}

async fn post_with_key(t: &TestApp, uri: &str, key: &str, body: &str) -> (S, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", key)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let (s, _, v) = t.send(req).await;
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_repeat_returns_the_first_response_and_writes_nothing() {
    let t = TestApp::new(|_| {});
    let (s, first) = post_with_key(&t, "/v1/logs/i/commits", "req-1", "a\nb\n").await;
    assert_eq!((s, first["duplicate"].as_bool()), (S::OK, Some(false)));
    let (s, again) = post_with_key(&t, "/v1/logs/i/commits", "req-1", "a\nb\n").await;
    assert_eq!(s, S::OK);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["ids"], first["ids"]);
    assert_eq!(t.state.registry.get("i").unwrap().log.stats().commits, 2);
    let (s, v) = post_with_key(&t, "/v1/logs/i/commits", "bad key", "a\n").await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_idempotency_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_write_once() {
    let t = std::sync::Arc::new(TestApp::new(|_| {}));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let t = std::sync::Arc::clone(&t);
            tokio::spawn(async move {
                post_with_key(&t, "/v1/logs/c/commits", "same", "x\ny\nz\n").await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut firsts = 0;
    for task in tasks {
        let (s, v) = task.await.unwrap();
        assert_eq!(s, S::OK, "{v}");
        firsts += usize::from(v["duplicate"] == false);
        ids.push(v["ids"].clone());
    }
    assert_eq!(firsts, 1, "exactly one request wrote");
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "everyone got the same IDs");
    assert_eq!(t.state.registry.get("c").unwrap().log.stats().commits, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_write_retried_with_its_key_never_duplicates() {
    let t = TestApp::new(|_| {});
    let (s, v) = post_with_key(&t, "/v1/logs/d/commits?timeout=0ms", "slow", "p\nq\n").await;
    assert_eq!((s, code(&v)), (S::GATEWAY_TIMEOUT, "deadline_exceeded"));
    let mut retried = None;
    for _ in 0..100 {
        let (s, v) = post_with_key(&t, "/v1/logs/d/commits", "slow", "p\nq\n").await;
        assert_eq!(s, S::OK, "{v}");
        retried = Some(v);
        if retried.as_ref().unwrap()["duplicate"] == true {
            break;
        }
    }
    let v = retried.unwrap();
    assert_eq!(v["count"], 2);
    assert_eq!(t.state.registry.get("d").unwrap().log.stats().commits, 2, "written once: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_without_shards_accepts_an_existing_log_and_wrong_methods_are_405() {
    let t = TestApp::new(|_| {});
    let (s, _) = t.call("PUT", "/v1/logs/m", JS, r#"{"shards": 7}"#).await;
    assert_eq!(s, S::CREATED);
    let (s, v) = t.call("PUT", "/v1/logs/m", None, "").await;
    assert_eq!((s, v["shards"].as_u64()), (S::OK, Some(7)));
    let (s, v) = t.call("PATCH", "/v1/logs/m", None, "").await;
    assert_eq!((s, code(&v)), (S::METHOD_NOT_ALLOWED, "method_not_allowed"));
    // A payload of JSON null is a payload.
    let (s, v) =
        t.call("POST", "/v1/logs/m/commits", JS, r#"{"commits": [{"payload": null}]}"#).await;
    assert_eq!(s, S::OK, "{v}");
    let (_, c) = t
        .call("GET", &format!("/v1/logs/m/commits/{}", v["first_id"].as_str().unwrap()), None, "")
        .await;
    assert!(c["payload"].is_null() && c.get("payload").is_some(), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_before_recovery_finished() {
    let t = TestApp::new(|_| {});
    t.call("PUT", "/v1/logs/r", JS, "").await;
    t.state.ready.store(false, std::sync::atomic::Ordering::Release);
    for (method, uri) in [
        ("GET", "/v1/logs"),
        ("GET", "/v1/logs/r"),
        ("GET", "/v1/logs/r/shards/0/commits"),
        ("POST", "/v1/logs/r/commits"),
        ("DELETE", "/v1/logs/r"),
    ] {
        let (s, v) = t.call(method, uri, ND, "x\n").await;
        assert_eq!((s, code(&v)), (S::SERVICE_UNAVAILABLE, "unavailable"), "{method} {uri}");
    }
    t.state.ready.store(true, std::sync::atomic::Ordering::Release);
}
