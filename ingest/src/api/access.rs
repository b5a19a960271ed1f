//! Who may reach the API, and from which web pages: the `Host` allow-list and CORS.
//!
//! - **Host** (a guard against DNS rebinding: a page on `evil.example` whose name resolves to
//!   127.0.0.1 would otherwise drive a loopback server with its own origin's rights): the
//!   `Host` header must name the server — a loopback name (`localhost`, `*.localhost`) or
//!   address, the address the server listens on, or a name given with `--allowed-host` — or
//!   the request is answered `421 misdirected_request`. A request without `Host` (HTTP/1.0,
//!   never a browser) passes.
//! - **CORS** for the origins given with `--cors-origin` (or `*`): preflights (`OPTIONS` with
//!   `Access-Control-Request-Method`) are answered `204` here, before routing; other answers to
//!   a listed origin carry `Access-Control-Allow-Origin` and expose `ETag`, `Retry-After` and
//!   the `x-shardlog-*` headers. Without `--cors-origin` no CORS header is ever sent.
//!
//! What it is not: authentication (bearer tokens and scopes are `--auth`'s).

use super::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// Response headers a page on an allowed origin may read.
const EXPOSED: &str =
    "etag, retry-after, x-shardlog-next, x-shardlog-watermark, x-shardlog-consistency";
/// Methods a preflight allows.
const METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
/// Request headers a preflight allows when it names none.
const HEADERS: &str = "content-type, content-encoding, idempotency-key, last-event-id, \
                       authorization, if-match, if-none-match";
/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// The middleware: the Host check, then CORS.
pub(super) async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST)
        && !host_allowed(&st.config, host.as_bytes())
    {
        let host = String::from_utf8_lossy(host.as_bytes()).into_owned();
        return ApiError::MisdirectedHost { host }.into_response();
    }
    let origin = allowed_origin(&st.config, req.headers());
    let Some(origin) = origin else { return next.run(req).await };
    if req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&origin, req.headers());
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    h.append(header::VARY, HeaderValue::from_static("origin"));
    resp
}

fn preflight(origin: &HeaderValue, req: &HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    let asked = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked.unwrap_or_else(|| HeaderValue::from_static(HEADERS)),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(PREFLIGHT_MAX_AGE_S));
    h.append(header::VARY, HeaderValue::from_static("origin"));
    resp
}

/// The `Access-Control-Allow-Origin` value for this request's `Origin`, if CORS allows it.
fn allowed_origin(cfg: &crate::config::Config, req: &HeaderMap) -> Option<HeaderValue> {
    let origin = req.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    cfg.cors_origins
        .iter()
        .find(|o| *o == "*" || o.eq_ignore_ascii_case(text))
        .map(|o| if o == "*" { HeaderValue::from_static("*") } else { origin.clone() })
}

/// Whether a `Host` header value names this server.
pub(crate) fn host_allowed(cfg: &crate::config::Config, host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let name = host_name(host.trim()).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        let listen = cfg.listen.ip();
        if ip.is_loopback() || (!listen.is_unspecified() && ip == listen) {
            return true;
        }
    }
    cfg.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&name))
}

/// The name in a `Host` value, without its port (and without the brackets of an IPv6 one).
fn host_name(host: &str) -> &str {
    if host.parse::<IpAddr>().is_ok() {
        return host; // a bare IPv6 address: its colons are no port
    }
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    //! The Host rule on its own.
    use super::*;

    #[test]
    fn loopback_names_the_listen_address_and_allowed_hosts_pass_others_do_not() {
        let mut cfg = crate::config::Config {
            allowed_hosts: vec!["logs.internal".into()],
            ..Default::default()
        };
        cfg.listen = "127.0.0.1:7070".parse().unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:7070",
            "app.localhost",
            "127.0.0.1:7070",
            "127.9.9.9",
            "[::1]:7070",
            "::1",
            "logs.internal:80",
        ] {
            assert!(host_allowed(&cfg, ok.as_bytes()), "{ok} should pass");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:7070",
            "10.0.0.1",
            "[2001:db8::1]",
            "local host",
            "localhost.evil.com",
        ] {
            assert!(!host_allowed(&cfg, bad.as_bytes()), "{bad} should be refused");
        }
        cfg.listen = "10.1.2.3:7070".parse().unwrap();
        assert!(host_allowed(&cfg, b"10.1.2.3:7070"), "the address it listens on");
    }
}
