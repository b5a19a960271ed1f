//! `GET /metrics` (Prometheus text format) and the middleware that times every request.
//!
//! The middleware labels a request by its route template (`/v1/logs/{log}/commits`, never the
//! raw path), a closed set of methods and its status; it counts `504`s as deadline misses.
//! What it is not: the metric definitions (`crate::metrics`).

use super::{AppState, blocking};
use crate::api::error::ApiError;
use crate::metrics::{method_label, route_label, scrape};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::Encoder;
use std::sync::Arc;

/// Times a request until its response head and records its declared body size.
pub(super) async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let route = route_label(route.as_deref()).to_owned();
    let method = method_label(req.method());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let began = std::time::Instant::now();
    let resp = next.run(req).await;
    let m = &st.metrics;
    if let Some(n) = declared {
        m.http_body.with_label_values(&[&route]).observe(n as f64);
    }
    let status = resp.status();
    m.http_duration
        .with_label_values(&[&route, method, status.as_str()])
        .observe(began.elapsed().as_secs_f64());
    if status == StatusCode::GATEWAY_TIMEOUT {
        m.deadline_misses.with_label_values(&[&route]).inc();
    }
    resp
}

/// Every family, live and scrape-time, in the text format.
pub(super) async fn metrics(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let body = blocking(move || {
        let mut families = st.metrics.gather();
        families.extend(scrape::collect(&st));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(64 * 1024);
        prometheus::TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    })
    .await?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
