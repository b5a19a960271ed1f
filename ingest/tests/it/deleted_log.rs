//! A log deleted while readers hold it (a live tail, and a reader holding its entry, as an
//! in-flight request does), then created again under the same name and written: every
//! acknowledged commit of the new log stays readable, also after a restart, and its segment
//! files stay where they are. The old log's maintenance thread and retention address files by
//! path, so they must stop before its directory goes. In-process, so that the test holds the
//! old log exactly as long as it means to.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ingest::api::AppState;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A recovered service over `dir`: one shard a log, 64 KiB segments.
async fn start(dir: &std::path::Path) -> (Arc<AppState>, tokio::task::JoinHandle<()>) {
    let c = ingest::config::Config {
        data_dir: dir.to_owned(),
        writers: 1,
        default_shards: 1,
        segment_bytes: 64 << 10,
        commit_bytes_max: 16 << 10,
        ..ingest::config::Config::default()
    };
    let state = ingest::server::state(c.resolve().unwrap()).unwrap();
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || ingest::server::recover(&st)).await.unwrap().unwrap();
    let ticker = ingest::server::spawn_ticker(Arc::clone(&state));
    (state, ticker)
}

async fn stop(state: Arc<AppState>, ticker: tokio::task::JoinHandle<()>) {
    ticker.abort();
    let _ = ticker.await;
    tokio::task::spawn_blocking(move || ingest::server::stop(&state)).await.unwrap();
}

async fn call(state: &Arc<AppState>, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = ingest::api::app(Arc::clone(state)).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Writes 50 commits of about 200 bytes to log `re`; their IDs.
async fn write(state: &Arc<AppState>) -> Vec<String> {
    let body: String =
        (0..50).map(|i| format!("{{\"i\":{i},\"p\":\"{}\"}}\n", "x".repeat(200))).collect();
    let (s, v) = call(state, "POST", "/v1/logs/re/commits", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

/// Every commit ID of log `re`, read shard page by shard page.
async fn stored(state: &Arc<AppState>) -> Vec<String> {
    let (mut ids, mut after) = (Vec::new(), String::new());
    loop {
        let uri = format!("/v1/logs/re/shards/0/commits?limit=10000&after={after}");
        let (s, v) = call(state, "GET", &uri, "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let page = v["commits"].as_array().unwrap();
        if page.is_empty() {
            return ids;
        }
        ids.extend(page.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        after = v["next"].as_str().unwrap().to_owned();
    }
}

/// The segment files of shard 0 of log `re`.
fn segments(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("logs/re/shards/00000"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_deleted_while_held_and_created_again_keeps_its_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let (state, ticker) = start(dir.path()).await;
    // The old log: several sealed segments, held by a live tail and by a reader.
    for _ in 0..40 {
        write(&state).await;
    }
    assert!(segments(dir.path()).len() >= 5, "{:?}", segments(dir.path()));
    let req = Request::get("/v1/logs/re/tail?after=now")
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap();
    let tail = ingest::api::app(Arc::clone(&state)).oneshot(req).await.unwrap();
    assert_eq!(tail.status(), StatusCode::OK);
    let held = state.registry.get("re").unwrap();
    // Retention that retires every sealed segment at its next pass (at most a second away),
    // and the delete before that pass.
    let (s, v) = call(&state, "PUT", "/v1/logs/re", r#"{"retention": {"max_bytes": 1}}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(&state, "DELETE", "/v1/logs/re", "").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // The new log of the same name (created by its first write): segment files of the old
    // one's names.
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.extend(write(&state).await);
    }
    let files = segments(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // Two retention passes of the old log, were it still maintained; then its holders go.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(tail);
    tokio::task::block_in_place(|| drop(held));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = segments(dir.path());
    assert!(
        files.iter().all(|f| now.contains(f)),
        "the new log's files moved: {files:?} -> {now:?}"
    );
    acked.sort();
    assert_eq!(stored(&state).await, acked, "the new log's commits, and only those");
    stop(state, ticker).await;
    // And after a restart, which reads the files again.
    let (state, ticker) = start(dir.path()).await;
    assert_eq!(stored(&state).await, acked, "after a restart");
    stop(state, ticker).await;
}
