//! A tail that arrives while the server recovers waits for recovery, then streams what was
//! written before the restart; past its `timeout` it answers `503` with `Retry-After`.
//! In-process, with recovery started by the test, so "during recovery" is certain.

use super::process::{Server, request};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Writes `n` NDJSON commits to `log`; their IDs.
pub fn write(addr: &str, log: &str, n: usize, pad: usize) -> Vec<String> {
    let body: String =
        (0..n).map(|i| format!("{{\"i\":{i},\"p\":\"{}\"}}\n", "x".repeat(pad))).collect();
    let (s, _, v) = request(
        addr,
        "POST",
        &format!("/v1/logs/{log}/commits"),
        Some("application/x-ndjson"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 200, "{v}");
    v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

/// The service state over `dir`, not recovered yet (as `server::run` has it before recovery
/// finishes).
fn unrecovered(dir: &std::path::Path) -> Arc<ingest::api::AppState> {
    let c = ingest::config::Config {
        data_dir: dir.to_owned(),
        writers: 2,
        ..ingest::config::Config::default()
    };
    ingest::server::state(c.resolve().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_during_recovery_waits_for_it_and_then_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = {
        let server = Server::start(dir.path(), &["--default-shards", "4"]);
        let ids = write(&server.addr, "rec", 40, 8);
        server.signal("-KILL");
        ids
    };
    written.sort();
    let state = unrecovered(dir.path());
    let tail = |uri: &str| {
        let req = Request::get(uri).header("host", "localhost").body(Body::empty()).unwrap();
        tokio::spawn(ingest::api::app(Arc::clone(&state)).oneshot(req))
    };
    // Past its timeout, a tail that is still waiting answers 503 with Retry-After.
    let t = Instant::now();
    let late = tail("/v1/logs/rec/tail?timeout=200ms").await.unwrap().unwrap();
    assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(late.headers().contains_key("retry-after"));
    assert!(t.elapsed() >= Duration::from_millis(200), "it did not wait: {:?}", t.elapsed());
    let bad = tail("/v1/logs/rec/tail?timeout=soon").await.unwrap().unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Within it, the tail waits for recovery, then streams what was written before the crash.
    let sse = tail("/v1/logs/rec/tail?timeout=30s");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sse.is_finished(), "the tail answered before recovery finished");
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || ingest::server::recover(&st)).await.unwrap().unwrap();
    let ticker = ingest::server::spawn_ticker(Arc::clone(&state));
    let resp = tokio::time::timeout(Duration::from_secs(10), sse).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut raw = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ids = loop {
        let ids: Vec<String> =
            raw.lines().filter_map(|l| l.strip_prefix("id: ")).map(str::to_owned).collect();
        if ids.len() >= written.len() {
            break ids;
        }
        assert!(Instant::now() < deadline, "only {} events arrived:\n{raw}", ids.len());
        let left = deadline - Instant::now();
        let frame = tokio::time::timeout(left, body.frame()).await.unwrap().unwrap().unwrap();
        raw.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    };
    assert_eq!(ids, written);
    drop(body);
    ticker.abort();
    tokio::task::spawn_blocking(move || ingest::server::stop(&state)).await.unwrap();
}
