//! `ApiError`: every way a request can fail, mapped to one HTTP status and a stable
//! `snake_case` code, rendered as the contract's `{"error": {"code", "message"}}`.
//!
//! Client errors say what was wrong; internal errors say little to the client and are logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failed request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed input that is not about one commit (query, headers, body envelope).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// One commit of the batch is malformed; nothing was written.
    #[error("commit {index}: {reason}")]
    InvalidCommit {
        /// Its position in the request.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// No such log.
    #[error("log {log:?} does not exist")]
    LogNotFound {
        /// The name asked for.
        log: String,
    },
    /// No such commit.
    #[error("commit {id} does not exist in log {log:?}")]
    CommitNotFound {
        /// The log.
        log: String,
        /// The ID asked for.
        id: String,
    },
    /// No such route or resource.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: String,
    },
    /// The route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The log exists with another shard count.
    #[error("log {log:?} exists with {shards} shards, {requested} requested")]
    LogExists {
        /// The log.
        log: String,
        /// Its shard count.
        shards: u32,
        /// The count asked for.
        requested: u32,
    },
    /// Something exceeds a configured limit.
    #[error("{what} exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The limit.
        limit_bytes: usize,
    },
    /// A request holds more commits than `batch_commits_max`.
    #[error("a request of {commits} commits exceeds the limit of {limit} commits")]
    TooManyCommits {
        /// Commits in the request.
        commits: usize,
        /// The limit.
        limit: usize,
    },
    /// Unknown content type or encoding.
    #[error("{message}")]
    UnsupportedMediaType {
        /// What was sent and what is accepted.
        message: String,
    },
    /// Writers are saturated; try again after `retry_after_s`.
    #[error("writers are saturated, retry after {retry_after_s}s")]
    Overloaded {
        /// Seconds.
        retry_after_s: u64,
    },
    /// The server is starting (recovery running) or stopping.
    #[error("not ready: {reason}")]
    Unavailable {
        /// Why.
        reason: &'static str,
        /// Seconds.
        retry_after_s: u64,
    },
    /// The cursor is older than what retention kept: the commits before `retained_from` are
    /// gone.
    #[error(
        "cursor {cursor} is older than what retention kept: commits before {retained_from} are gone"
    )]
    CursorExpired {
        /// The cursor asked for.
        cursor: String,
        /// The first commit still kept (in the shard that lost most).
        retained_from: String,
    },
    /// The client sent nothing of the request body for `body_read_timeout_ms`.
    #[error("the client sent nothing of the body for {timeout_ms} ms (body_read_timeout_ms)")]
    BodyReadTimeout {
        /// The limit.
        timeout_ms: u64,
    },
    /// The deadline passed before the request could be answered.
    #[error("deadline of {timeout_ms} ms exceeded")]
    Deadline {
        /// The deadline.
        timeout_ms: u64,
    },
    /// The write may or may not have happened and the server cannot tell yet (the contract's
    /// meaning of a `504` on writes): a retry with the same Idempotency-Key returns its outcome.
    #[error("the outcome of the write is not known: {reason}")]
    OutcomeUnknown {
        /// Why.
        reason: String,
    },
    /// The `Host` header names no name this server answers to (`--allowed-host`).
    #[error("host {host:?} is not served here (loopback names and --allowed-host only)")]
    MisdirectedHost {
        /// The `Host` header sent.
        host: String,
    },
    /// The disk is full.
    #[error("disk full: {detail}")]
    DiskFull {
        /// Which file could not be preallocated.
        detail: String,
    },
    /// Expected revisions did not match; nothing was written.
    #[error("{}", mismatch_message(.conflicts))]
    RevisionMismatch {
        /// Every failed expectation of the request, by commit index.
        conflicts: Vec<crate::streams::Conflict>,
        /// The stream's last revision (`Some(None)`: no such stream), for the streams
        /// endpoint, which names one stream.
        actual: Option<Option<u64>>,
    },
    /// A stream a transactional part would number is still held by another transaction that
    /// is not decided yet; retry.
    #[error("stream {key:?} is being written by another transaction; retry")]
    StreamBusy {
        /// The stream's key.
        key: String,
        /// Seconds.
        retry_after_s: u64,
    },
    /// No such stream.
    #[error("stream {key:?} of log {log:?} has no commit")]
    StreamNotFound {
        /// The log.
        log: String,
        /// The key.
        key: String,
    },
    /// A server-side failure (logged; the client gets a generic message).
    #[error("internal error: {0}")]
    Internal(String),
}

fn mismatch_message(conflicts: &[crate::streams::Conflict]) -> String {
    match conflicts {
        [c] => format!(
            "commit {} expected stream {:?} at {}, it is at {}",
            c.index,
            c.key,
            c.expected.to_json(),
            c.actual.map_or("no revision (no stream)".to_owned(), |a| a.to_string())
        ),
        cs => format!("{} commits expected revisions their streams are not at", cs.len()),
    }
}

impl ApiError {
    /// A `400` with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    /// Status and stable code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::InvalidCommit { .. } => (StatusCode::BAD_REQUEST, "invalid_commit"),
            ApiError::LogNotFound { .. } => (StatusCode::NOT_FOUND, "log_not_found"),
            ApiError::CommitNotFound { .. } => (StatusCode::NOT_FOUND, "commit_not_found"),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::LogExists { .. } => (StatusCode::CONFLICT, "log_exists"),
            ApiError::TooLarge { .. } | ApiError::TooManyCommits { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::BodyReadTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_read_timeout"),
            ApiError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            ApiError::OutcomeUnknown { .. } => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
            ApiError::CursorExpired { .. } => (StatusCode::GONE, "cursor_expired"),
            ApiError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            ApiError::MisdirectedHost { .. } => {
                (StatusCode::MISDIRECTED_REQUEST, "misdirected_request")
            }
            ApiError::RevisionMismatch { .. } => {
                (StatusCode::PRECONDITION_FAILED, "revision_mismatch")
            }
            ApiError::StreamBusy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "stream_busy"),
            ApiError::StreamNotFound { .. } => (StatusCode::NOT_FOUND, "stream_not_found"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<storage::StorageError> for ApiError {
    fn from(e: storage::StorageError) -> Self {
        match e {
            storage::StorageError::DiskFull { path, .. } => {
                ApiError::DiskFull { detail: format!("no room for {}", path.display()) }
            }
            storage::StorageError::BatchTooLarge { bytes, max_bytes } => ApiError::TooLarge {
                what: format!("the encoded batch for one shard ({bytes} bytes)"),
                limit_bytes: max_bytes as usize,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = serde_json::json!({ "error": { "code": code, "message": message } });
        if let ApiError::CursorExpired { retained_from, .. } = &self {
            body["error"]["gone"] = serde_json::json!({ "before": retained_from });
        }
        if let ApiError::RevisionMismatch { conflicts, actual } = &self {
            let list: Vec<_> = conflicts.iter().map(|c| c.to_json()).collect();
            body["error"]["conflicts"] = serde_json::Value::Array(list);
            if let Some(a) = actual {
                body["error"]["actual"] = serde_json::json!(a);
            }
        }
        let mut resp = (status, axum::Json(body)).into_response();
        let retry = match self {
            ApiError::Overloaded { retry_after_s } => Some(retry_after_s),
            ApiError::Unavailable { retry_after_s, .. } => Some(retry_after_s),
            ApiError::StreamBusy { retry_after_s, .. } => Some(retry_after_s),
            _ => None,
        };
        if let Some(s) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Middleware: an error answer that is not the contract's JSON — one of axum's own rejections
/// (a path that is not UTF-8, a body that cannot be read) — is rewritten to it, keeping its
/// status, its headers and its text as the message.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use http_body_util::BodyExt;
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = http_body_util::Limited::new(body, ERROR_TEXT_BYTES_MAX)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        t => t.to_owned(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// Bytes of a rejection's text kept as the message of its JSON answer.
const ERROR_TEXT_BYTES_MAX: usize = 4096;
