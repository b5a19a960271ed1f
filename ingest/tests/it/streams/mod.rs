//! Streams through the API, at the contract's level: conditional appends (`If-Match`,
//! `If-None-Match: *`, `412 revision_mismatch` with `actual`, `ETag`), the numbering of every
//! keyed commit whichever endpoint wrote it, atomic multi-stream `expected_revision` (across
//! shards), reads by revision (pages, `HEAD`, `304`, `404`), `revision` in every read,
//! idempotent replays, racing writers and restarts (clean, and SIGKILL of the real binary).
//!
//! What it is not: tests of the revision index or the writers' numbering in isolation
//! (`storage::revisions`, `ingest::streams` unit tests), nor of the ingest bodies themselves.

use super::process::{Server, request_with_headers};
use super::*;
use axum::http::HeaderMap;
use axum::http::StatusCode as S;
use serde_json::json;

const ND: &str = "application/x-ndjson";
const JS: &str = "application/json";
const FRAMES: &str = "application/vnd.shardlog.frames";

type Answer = (S, HeaderMap, Value);

async fn req(
    t: &TestApp,
    method: &str,
    uri: &str,
    ct: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    t.send(b.body(body.into()).unwrap()).await
}

/// `POST /v1/logs/{log}/streams/{key}/commits`.
async fn append(
    t: &TestApp,
    log: &str,
    key: &str,
    headers: &[(&str, &str)],
    ct: &str,
    body: impl Into<Body>,
) -> Answer {
    req(t, "POST", &format!("/v1/logs/{log}/streams/{key}/commits"), Some(ct), headers, body).await
}

/// `POST /v1/logs/{log}/commits` with a JSON body.
async fn ingest_json(t: &TestApp, log: &str, headers: &[(&str, &str)], body: Value) -> Answer {
    req(t, "POST", &format!("/v1/logs/{log}/commits"), Some(JS), headers, body.to_string()).await
}

async fn get(t: &TestApp, uri: &str, headers: &[(&str, &str)]) -> Answer {
    req(t, "GET", uri, None, headers, Body::empty()).await
}

fn etag(h: &HeaderMap) -> Option<&str> {
    h.get("etag").map(|v| v.to_str().unwrap())
}

/// The stream's last revision (`None`: `404`), checked against its `ETag`.
async fn last_revision(t: &TestApp, log: &str, key: &str) -> Option<u64> {
    let (s, h, v) = get(t, &format!("/v1/logs/{log}/streams/{key}?limit=10000"), &[]).await;
    if s == S::NOT_FOUND {
        assert_eq!(code(&v), "stream_not_found", "{v}");
        return None;
    }
    assert_eq!(s, S::OK, "{v}");
    let r = v["revision"].as_u64().unwrap();
    assert_eq!(etag(&h), Some(format!("\"{r}\"").as_str()));
    let got: Vec<u64> =
        v["commits"].as_array().unwrap().iter().map(|c| c["revision"].as_u64().unwrap()).collect();
    assert_eq!(got, (0..=r).collect::<Vec<_>>(), "{key}: revisions with a gap");
    Some(r)
}

/// Every commit of the timeline (aborted parts never are; `GET /v1/logs/{log}` counts them).
async fn timeline(t: &TestApp, log: &str) -> Vec<Value> {
    let (s, _, v) = get(t, &format!("/v1/logs/{log}/timeline?limit=10000"), &[]).await;
    assert_eq!(s, S::OK, "{v}");
    v["commits"].as_array().unwrap().clone()
}

fn shard(key: &str) -> u32 {
    ingest::logs::shard_of_key(key.as_bytes(), 4)
}

/// `n` (≤ 4) keys starting with `prefix`, each on a shard of its own.
fn spread(prefix: &str, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let k = format!("{prefix}{i}");
        if out.iter().all(|o| shard(o) != shard(&k)) {
            out.push(k);
        }
        i += 1;
    }
    out
}

fn revisions(v: &Value) -> Value {
    v["revisions"].clone()
}

fn assert_mismatch(a: &Answer, actual: Value, conflicts: Value) {
    let (s, _, v) = a;
    assert_eq!((*s, code(v)), (S::PRECONDITION_FAILED, "revision_mismatch"), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["error"]["actual"], actual, "{v}");
    assert_eq!(v["error"]["conflicts"], conflicts, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_appends_number_the_stream_and_answer_its_etag() {
    let t = TestApp::new(|_| {});
    let a = append(&t, "o", "order-1", &[("if-none-match", "*")], ND, "{\"n\":0}\nplain\n").await;
    let (s, h, v) = &a;
    assert_eq!(*s, S::OK, "{v}");
    assert_eq!((v["count"].as_u64(), v["duplicate"].as_bool()), (Some(2), Some(false)));
    assert_eq!(v["durability"], "sync");
    assert_eq!(v["ids"].as_array().unwrap().len(), 2);
    assert_eq!((&v["first_id"], &v["last_id"]), (&v["ids"][0], &v["ids"][1]));
    assert_eq!(revisions(v), json!([0, 1]));
    assert_eq!(etag(h), Some("\"1\""));

    // JSON: commits may name the stream's key or none; If-Match is the current ETag.
    let body = json!({"commits": [{"payload": 2}, {"key": "order-1", "payload": {"n": 3}}]});
    let (s, h, v) =
        append(&t, "o", "order-1", &[("if-match", "\"1\"")], JS, body.to_string()).await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([2, 3])), "{v}");
    assert_eq!(etag(&h), Some("\"3\""));

    // Frames, without a precondition: unconditional but still numbered.
    let mut frames = Vec::new();
    for p in [&b"f4"[..], b"f5"] {
        frames.extend_from_slice(&(p.len() as u32).to_le_bytes());
        frames.extend_from_slice(p);
    }
    let (s, h, v) = append(&t, "o", "order-1", &[], FRAMES, frames).await;
    assert_eq!((s, revisions(&v), etag(&h)), (S::OK, json!([4, 5]), Some("\"5\"")), "{v}");
    // `If-Match: *`: the stream must exist, and does.
    let (s, h, v) = append(&t, "o", "order-1", &[("if-match", "*")], ND, "6\n").await;
    assert_eq!((s, revisions(&v), etag(&h)), (S::OK, json!([6]), Some("\"6\"")), "{v}");

    let (s, h, v) = get(&t, "/v1/logs/o/streams/order-1", &[]).await;
    assert_eq!((s, etag(&h)), (S::OK, Some("\"6\"")), "{v}");
    assert_eq!((v["key"].as_str(), v["revision"].as_u64()), (Some("order-1"), Some(6)));
    let payloads: Vec<Value> =
        v["commits"].as_array().unwrap().iter().map(|c| c["payload"].clone()).collect();
    assert_eq!(Value::Array(payloads), json!([{"n": 0}, "plain", 2, {"n": 3}, "f4", "f5", 6]));
    assert!(v["commits"].as_array().unwrap().iter().all(|c| c["key"] == "order-1"));
    assert_eq!(v["next_revision"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_or_malformed_preconditions_write_nothing() {
    let t = TestApp::new(|_| {});
    let (s, _, v) = append(&t, "p", "s", &[], ND, "a\nb\nc\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([0, 1, 2])), "{v}");
    let before = timeline(&t, "p").await;

    let a = append(&t, "p", "s", &[("if-none-match", "*")], ND, "x\n").await;
    let c = |key, expected, actual| json!([{"index": 0, "key": key, "expected": expected, "actual": actual}]);
    assert_mismatch(&a, json!(2), c("s", json!("no_stream"), json!(2)));
    let a = append(&t, "p", "s", &[("if-match", "\"1\"")], ND, "x\ny\n").await;
    assert_mismatch(&a, json!(2), c("s", json!(1), json!(2)));
    let a = append(&t, "p", "s", &[("if-match", "\"3\"")], ND, "x\n").await;
    assert_mismatch(&a, json!(2), c("s", json!(3), json!(2)));
    // A stream that does not exist: `actual` is null.
    let a = append(&t, "p", "nobody", &[("if-match", "\"0\"")], ND, "x\n").await;
    assert_mismatch(&a, Value::Null, c("nobody", json!(0), Value::Null));
    let a = append(&t, "p", "nobody", &[("if-match", "*")], ND, "x\n").await;
    assert_mismatch(&a, Value::Null, c("nobody", json!("stream_exists"), Value::Null));

    assert_eq!(timeline(&t, "p").await, before, "a 412 wrote something");
    assert_eq!(last_revision(&t, "p", "nobody").await, None);
    assert_eq!(last_revision(&t, "p", "s").await, Some(2));
    // The refused appends took no number.
    let (s, h, v) = append(&t, "p", "s", &[("if-match", "\"2\"")], ND, "d\n").await;
    assert_eq!((s, revisions(&v), etag(&h)), (S::OK, json!([3]), Some("\"3\"")), "{v}");
    let (s, _, v) = append(&t, "p", "nobody", &[("if-none-match", "*")], ND, "x\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([0])), "{v}");

    // Malformed preconditions, a foreign key, an unkeyed expectation: 400, nothing written.
    let before = timeline(&t, "p").await;
    let both = [("if-match", "\"0\""), ("if-none-match", "*")];
    for headers in
        [&both[..], &[("if-match", "0")], &[("if-match", "\"x\"")], &[("if-none-match", "\"0\"")]]
    {
        let (s, _, v) = append(&t, "p", "s", headers, ND, "y\n").await;
        assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_precondition"), "{headers:?}: {v}");
    }
    let other = json!({"commits": [{"payload": 1}, {"key": "other", "payload": 2}]});
    let (s, _, v) = append(&t, "p", "s", &[], JS, other.to_string()).await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_commit"), "{v}");
    let unkeyed = json!({"commits": [{"payload": 1, "expected_revision": 0}]});
    let (s, _, v) = ingest_json(&t, "p", &[], unkeyed).await;
    assert_eq!((s, code(&v)), (S::BAD_REQUEST, "invalid_commit"), "{v}");
    let bad = json!({"commits": [{"key": "k", "payload": 1, "expected_revision": "latest"}]});
    let (s, _, v) = ingest_json(&t, "p", &[], bad).await;
    assert_eq!(s, S::BAD_REQUEST, "{v}");
    assert_eq!(timeline(&t, "p").await, before);
    assert_eq!(last_revision(&t, "p", "s").await, Some(3));
    assert_eq!(last_revision(&t, "p", "other").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ingest_numbers_keyed_commits_and_gives_unkeyed_ones_null() {
    let t = TestApp::new(|_| {});
    let body = json!({"commits": [
        {"key": "a", "payload": 1}, {"payload": 2}, {"key": "a", "payload": 3},
        {"key": "b", "payload": 4}, {"payload": 5}
    ]});
    let (s, _, v) = ingest_json(&t, "m", &[], body).await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([0, null, 1, 0, null])), "{v}");
    let (s, v) = t.call("POST", "/v1/logs/m/commits", Some(ND), "1\n2\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([null, null])), "{v}");
    // Both endpoints number the same stream.
    let (s, h, v) = append(&t, "m", "a", &[("if-match", "\"1\"")], ND, "6\n").await;
    assert_eq!((s, revisions(&v), etag(&h)), (S::OK, json!([2]), Some("\"2\"")), "{v}");
    let body = json!({"commits": [{"key": "a", "payload": 7}, {"key": "b", "payload": 8}]});
    let (_, _, v) = ingest_json(&t, "m", &[], body).await;
    assert_eq!(revisions(&v), json!([3, 1]), "{v}");
    assert_eq!(last_revision(&t, "m", "a").await, Some(3));
    assert_eq!(last_revision(&t, "m", "b").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_revisions_across_shards_commit_all_or_nothing() {
    let t = TestApp::new(|_| {});
    let k = spread("acct-", 4);
    // A commit's expectation counts the request's earlier commits of its stream.
    let setup = json!({"commits": [
        {"key": k[0], "payload": 0, "expected_revision": "no_stream"},
        {"key": k[1], "payload": 1, "expected_revision": "no_stream"},
        {"key": k[0], "payload": 2, "expected_revision": 0},
        {"payload": 3},
    ]});
    let (s, _, v) = ingest_json(&t, "tx", &[], setup).await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([0, 0, 1, null])), "{v}");
    let before = timeline(&t, "tx").await;
    // k0 at 1, k1 at 0, k2 and k3 new. Three of six expectations fail, on three shards.
    let body = json!({"commits": [
        {"key": k[0], "payload": "a", "expected_revision": 1},
        {"key": k[1], "payload": "b", "expected_revision": 5},
        {"key": k[2], "payload": "c", "expected_revision": "stream_exists"},
        {"key": k[3], "payload": "d", "expected_revision": "no_stream"},
        {"payload": "e"},
        {"key": k[1], "payload": "f", "expected_revision": "any"},
        {"key": k[0], "payload": "g", "expected_revision": "no_stream"},
    ]});
    for _ in 0..2 {
        let (s, _, v) = ingest_json(&t, "tx", &[], body.clone()).await;
        assert_eq!((s, code(&v)), (S::PRECONDITION_FAILED, "revision_mismatch"), "{v}");
        let conflicts = &v["error"]["conflicts"];
        let list = conflicts.as_array().unwrap();
        let index: Vec<u64> = list.iter().map(|c| c["index"].as_u64().unwrap()).collect();
        assert_eq!(index, [1, 2, 6], "{v}");
        let keys: Vec<&str> = list.iter().map(|c| c["key"].as_str().unwrap()).collect();
        assert_eq!(keys, [&k[1], &k[2], &k[0]]);
        let expected: Vec<&Value> = list.iter().map(|c| &c["expected"]).collect();
        assert_eq!(expected, [&json!(5), &json!("stream_exists"), &json!("no_stream")]);
        assert_eq!((&list[0]["actual"], &list[1]["actual"]), (&json!(0), &Value::Null), "{v}");
        // `actual`: the stream's last revision before that commit (k0's commit 0 came first).
        assert_eq!(list[2]["actual"], 2, "{v}");
    }
    assert_eq!(timeline(&t, "tx").await, before, "a refused transaction left commits");
    for shard in 0..4 {
        let (_, _, v) = get(&t, &format!("/v1/logs/tx/shards/{shard}/commits"), &[]).await;
        let n = before.iter().filter(|c| c["shard"] == shard).count();
        assert_eq!(v["commits"].as_array().unwrap().len(), n, "shard {shard}: {v}");
    }
    for (key, last) in [(&k[0], Some(1)), (&k[1], Some(0)), (&k[2], None), (&k[3], None)] {
        assert_eq!(last_revision(&t, "tx", key).await, last, "{key}");
    }
    // Each stream goes on where it was: no number was used up by the refused request.
    let (s, _, v) = append(&t, "tx", &k[0], &[("if-match", "\"1\"")], ND, "1\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([2])), "{v}");
    let (s, _, v) = append(&t, "tx", &k[1], &[("if-match", "\"0\"")], ND, "1\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([1])), "{v}");
    let again = json!({"commits": [
        {"key": k[2], "payload": 1, "expected_revision": "no_stream"},
        {"key": k[3], "payload": 1, "expected_revision": "no_stream"},
        {"key": k[1], "payload": 1, "expected_revision": "stream_exists"},
        {"key": k[0], "payload": 1, "expected_revision": 2},
    ]});
    let (s, _, v) = ingest_json(&t, "tx", &[], again).await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([0, 0, 2, 3])), "{v}");
    for (key, last) in [(&k[0], 3), (&k[1], 2), (&k[2], 0), (&k[3], 0)] {
        assert_eq!(last_revision(&t, "tx", key).await, Some(last), "{key}");
    }
    assert_eq!(timeline(&t, "tx").await.len(), before.len() + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reads_in_revision_order_by_pages() {
    let t = TestApp::new(|_| {});
    // A neighbour on the same shard, written in between, is not part of the stream.
    let next = (0..).map(|i| format!("n{i}")).find(|n| shard(n) == shard("pg")).unwrap();
    for round in 0..5 {
        let body: String = (0..5).map(|i| format!("{{\"r\":{}}}\n", round * 5 + i)).collect();
        let (s, _, v) = append(&t, "pg", "pg", &[], ND, body).await;
        assert_eq!(s, S::OK, "{v}");
        let other = json!({"commits": [{"key": next, "payload": "no"}, {"payload": "no"}]});
        ingest_json(&t, "pg", &[], other).await;
    }
    let mut from = Some(0);
    let mut pages = Vec::new();
    while let Some(r) = from {
        let (s, h, v) =
            get(&t, &format!("/v1/logs/pg/streams/pg?from_revision={r}&limit=10"), &[]).await;
        assert_eq!((s, etag(&h)), (S::OK, Some("\"24\"")), "{v}");
        assert_eq!((v["key"].as_str(), v["revision"].as_u64()), (Some("pg"), Some(24)));
        let commits = v["commits"].as_array().unwrap();
        for (i, c) in commits.iter().enumerate() {
            let want = r + i as u64;
            assert_eq!(
                (&c["key"], &c["revision"], &c["payload"]),
                (&json!("pg"), &json!(want), &json!({"r": want}))
            );
        }
        pages.push((commits.len(), v["next_revision"].clone()));
        from = v["next_revision"].as_u64();
        assert!(pages.len() <= 3, "{pages:?}");
    }
    assert_eq!(pages, [(10, json!(10)), (10, json!(20)), (5, Value::Null)]);
    let page = |v: &Value| (v["commits"].as_array().unwrap().len(), v["next_revision"].clone());
    let (_, _, v) = get(&t, "/v1/logs/pg/streams/pg?from_revision=20", &[]).await;
    assert_eq!(page(&v), (5, Value::Null), "{v}");
    let (_, _, v) = get(&t, "/v1/logs/pg/streams/pg?from_revision=25", &[]).await;
    assert_eq!(page(&v), (0, Value::Null), "{v}");
    assert_eq!(last_revision(&t, "pg", &next).await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_if_none_match_answer_the_etag_alone() {
    let t = TestApp::new(|_| {});
    append(&t, "h", "doc", &[], ND, "a\nb\n").await;
    let (s, h, v) = req(&t, "HEAD", "/v1/logs/h/streams/doc", None, &[], Body::empty()).await;
    assert_eq!((s, etag(&h), v), (S::OK, Some("\"1\""), json!("")));
    let (s, h, v) = get(&t, "/v1/logs/h/streams/doc", &[("if-none-match", "\"1\"")]).await;
    assert_eq!((s, etag(&h), v), (S::NOT_MODIFIED, Some("\"1\""), json!("")));
    let (s, h, v) = get(&t, "/v1/logs/h/streams/doc", &[("if-none-match", "\"0\"")]).await;
    assert_eq!((s, etag(&h), v["revision"].as_u64()), (S::OK, Some("\"1\""), Some(1)));
    append(&t, "h", "doc", &[("if-match", "\"1\"")], ND, "c\n").await;
    // The old ETag no longer matches: the page comes back, with the new one.
    let (s, h, v) = get(&t, "/v1/logs/h/streams/doc", &[("if-none-match", "\"1\"")]).await;
    assert_eq!(
        (s, etag(&h), v["commits"].as_array().map(Vec::len)),
        (S::OK, Some("\"2\""), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_and_logs_are_404() {
    let t = TestApp::new(|_| {});
    append(&t, "u", "k", &[], ND, "1\n").await;
    let (s, _, v) = get(&t, "/v1/logs/u/streams/never", &[]).await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "stream_not_found"), "{v}");
    let (s, _, v) = get(&t, "/v1/logs/nolog/streams/k", &[]).await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "log_not_found"), "{v}");
    for uri in ["/v1/logs/u/streams/never", "/v1/logs/nolog/streams/k"] {
        let (s, h, _) = req(&t, "HEAD", uri, None, &[], Body::empty()).await;
        assert_eq!((s, etag(&h)), (S::NOT_FOUND, None), "{uri}");
    }
    // A log deleted and written again starts its streams afresh.
    assert_eq!(t.call("DELETE", "/v1/logs/u", None, "").await.0, S::NO_CONTENT);
    let (s, _, v) = get(&t, "/v1/logs/u/streams/k", &[]).await;
    assert_eq!((s, code(&v)), (S::NOT_FOUND, "log_not_found"), "{v}");
    let (s, _, v) = append(&t, "u", "k", &[("if-none-match", "*")], ND, "2\n").await;
    assert_eq!((s, revisions(&v)), (S::OK, json!([0])), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_of_a_stream_commit_carries_its_revision() {
    let t = TestApp::new(|_| {});
    append(&t, "r", "sk", &[], ND, "0\n1\n").await;
    let body = json!({"commits": [{"payload": "loose"}, {"key": "sk", "payload": 2}]});
    let (_, _, v) = ingest_json(&t, "r", &[], body).await;
    assert_eq!(revisions(&v), json!([null, 2]));
    let want =
        |c: &Value| if c["key"] == "sk" { Some(c["payload"].as_u64().unwrap()) } else { None };
    let all = timeline(&t, "r").await;
    assert_eq!(all.len(), 4);
    for c in &all {
        assert_eq!(c["revision"].as_u64(), want(c), "timeline: {c}");
        assert_eq!(c.get("revision").is_some(), c["key"] == "sk", "timeline: {c}");
        let id = c["id"].as_str().unwrap();
        let (s, _, one) = get(&t, &format!("/v1/logs/r/commits/{id}"), &[]).await;
        assert_eq!(s, S::OK);
        assert_eq!(one.get("revision").and_then(Value::as_u64), want(c), "by id: {one}");
        let n = c["shard"].as_u64().unwrap();
        let (_, _, page) = get(&t, &format!("/v1/logs/r/shards/{n}/commits"), &[]).await;
        let found =
            page["commits"].as_array().unwrap().iter().find(|x| x["id"] == id).unwrap().clone();
        assert_eq!(found.get("revision").and_then(Value::as_u64), want(c), "shard read: {found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_repeat_returns_the_first_answer_with_its_revisions() {
    let t = TestApp::new(|_| {});
    let hdrs = [("if-none-match", "*"), ("idempotency-key", "create-1")];
    let (s, h, first) = append(&t, "i", "cart", &hdrs, ND, "a\nb\n").await;
    assert_eq!((s, revisions(&first), etag(&h)), (S::OK, json!([0, 1]), Some("\"1\"")), "{first}");
    let (s, h, again) = append(&t, "i", "cart", &hdrs, ND, "a\nb\n").await;
    assert_eq!((s, &again["duplicate"], etag(&h)), (S::OK, &json!(true), Some("\"1\"")), "{again}");
    assert_eq!((&again["ids"], revisions(&again)), (&first["ids"], json!([0, 1])));
    // The same through plain ingest, mixing streams.
    let body = json!({"commits": [{"key": "cart", "payload": 3, "expected_revision": 1}, {"key": "other", "payload": 4}, {"payload": 5}]});
    let (s, _, first) = ingest_json(&t, "i", &[("idempotency-key", "mix-1")], body.clone()).await;
    assert_eq!((s, revisions(&first)), (S::OK, json!([2, 0, null])), "{first}");
    let (s, _, again) = ingest_json(&t, "i", &[("idempotency-key", "mix-1")], body).await;
    assert_eq!((s, &again["duplicate"], &again["ids"]), (S::OK, &json!(true), &first["ids"]));
    assert_eq!(revisions(&again), json!([2, 0, null]));
    assert_eq!(timeline(&t, "i").await.len(), 5, "a repeat wrote again");
    assert_eq!(last_revision(&t, "i", "cart").await, Some(2));
    assert_eq!(last_revision(&t, "i", "other").await, Some(0));
}

mod races;
