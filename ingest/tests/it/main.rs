//! ingest's integration tests: the HTTP API through `app().oneshot()`, and the real `shardlog`
//! binary on a loopback port — killed with SIGKILL under load, stopped with SIGTERM, overloaded.

mod access;
mod api;
mod atomic;
mod deleted_log;
mod edges;
mod h2c;
mod history;
mod observability;
mod pages;
mod process;
mod prometheus;
mod startup;
mod streams;
mod tail;
mod tail_deleted;
mod tail_recovery;
mod timeline;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ingest::api::{AppState, app};
use ingest::config::Config;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

/// A service over a temporary data directory, driven in-process.
#[derive(Debug)]
pub struct TestApp {
    pub state: Arc<AppState>,
    pub dir: tempfile::TempDir,
    ticker: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub fn new(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: dir.path().to_owned(),
            writers: 2,
            default_shards: 4,
            segment_bytes: 4 << 20,
            ..Config::default()
        };
        tweak(&mut c);
        let state = ingest::server::state(c.resolve().unwrap()).unwrap();
        tokio::task::block_in_place(|| ingest::server::recover(&state)).unwrap();
        let ticker = ingest::server::spawn_ticker(Arc::clone(&state));
        TestApp { state, dir, ticker }
    }

    /// Sends a request; returns status, headers and body (JSON when it parses).
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let resp = app(Arc::clone(&self.state)).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, v)
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let (s, _, v) = self.send(b.body(body.into()).unwrap()).await;
        (s, v)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.ticker.abort();
        tokio::task::block_in_place(|| ingest::server::stop(&self.state));
    }
}

/// The error code of an error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}
