//! `GET /v1/logs/{log}/commits/{id}` and `GET /v1/logs/{log}/shards/{n}/commits`: reads of
//! stored commits, on the blocking pool.
//!
//! A commit of a stream carries its `revision`. A payload is rendered as its JSON value when it is JSON, as a string when it is UTF-8, else
//! as `payload_base64`.

use super::{AppState, blocking, existing_log};
use crate::error::ApiError;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use storage::format::NO_REVISION;
use storage::format::flags::CONFLICT;
use storage::{Record, Start};

/// Most commits one page returns.
pub const PAGE_LIMIT_MAX: usize = 10_000;
/// Commits a page returns without `limit`.
pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// A stored commit as JSON.
pub fn render(r: &Record<'_>) -> Value {
    let f = &r.frame;
    let mut o = serde_json::Map::new();
    o.insert("id".into(), json!(f.id.to_string()));
    o.insert(
        "key".into(),
        if f.key.is_empty() { Value::Null } else { json!(String::from_utf8_lossy(f.key)) },
    );
    o.insert("shard".into(), json!(r.shard));
    if f.revision != NO_REVISION {
        o.insert("revision".into(), json!(f.revision));
    }
    if f.flags & CONFLICT != 0 {
        o.insert("conflict".into(), crate::streams::conflict_json(f.aux, f.revision));
    }
    match payload_value(f.payload) {
        Some(v) => o.insert("payload".into(), v),
        None => o.insert(
            "payload_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(f.payload)),
        ),
    };
    Value::Object(o)
}

/// Appends a stored commit as one line of JSON (no newline), the same value as [`render`]
/// without building it: JSON payloads on one line are copied as they are (validated, not
/// parsed into a tree), others are escaped or base64-encoded.
pub fn render_into(out: &mut Vec<u8>, r: &Record<'_>) {
    let f = &r.frame;
    out.reserve(f.payload.len() + f.key.len() + 64);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(&idgen::encode(f.id));
    out.extend_from_slice(b"\",\"key\":");
    if f.key.is_empty() {
        out.extend_from_slice(b"null");
    } else if f.key.iter().all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\') {
        // Printable ASCII without a quote or backslash: the JSON string is the key, quoted.
        out.push(b'"');
        out.extend_from_slice(f.key);
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(f.key));
    }
    out.extend_from_slice(b",\"shard\":");
    push_decimal(out, u64::from(r.shard));
    if f.revision != NO_REVISION {
        out.extend_from_slice(b",\"revision\":");
        push_decimal(out, f.revision);
    }
    if f.flags & CONFLICT != 0 {
        out.extend_from_slice(b",\"conflict\":");
        let c = crate::streams::conflict_json(f.aux, f.revision);
        serde_json::to_writer(&mut *out, &c).expect("writing to a Vec cannot fail");
    }
    let trimmed = f.payload.trim_ascii();
    // Cheapest test first: a payload with a line break is never copied as it is.
    let copy_as_is = !trimmed.is_empty()
        && memchr::memchr2(b'\n', b'\r', trimmed).is_none()
        && crate::json::is_json(trimmed);
    if copy_as_is {
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(trimmed);
    } else {
        match std::str::from_utf8(f.payload) {
            // The same choice as `payload_value`, without copying text into a `Value` first.
            Ok(text) => {
                out.extend_from_slice(b",\"payload\":");
                match json_value(text) {
                    Some(v) => serde_json::to_writer(&mut *out, &v),
                    None => serde_json::to_writer(&mut *out, text),
                }
                .expect("writing to a Vec cannot fail");
            }
            Err(_) => {
                out.extend_from_slice(b",\"payload_base64\":\"");
                out.extend_from_slice(
                    base64::engine::general_purpose::STANDARD.encode(f.payload).as_bytes(),
                );
                out.push(b'"');
            }
        }
    }
    out.push(b'}');
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn payload_value(p: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(p).ok()?;
    Some(json_value(s).unwrap_or_else(|| Value::String(s.to_owned())))
}

/// `text` as a JSON value this server can hold (not, say, `1e400`), if it is one. Text that
/// cannot start a JSON value (most log lines) skips the parse attempt and the error it would
/// allocate.
fn json_value(text: &str) -> Option<Value> {
    if !crate::json::may_start_value(text.as_bytes()) {
        return None;
    }
    serde_json::from_str(text).ok()
}

fn parse_id(text: &str) -> Result<idgen::Ulid, ApiError> {
    idgen::parse(text)
        .ok_or_else(|| ApiError::bad_request("invalid_ulid", format!("{text:?} is not a ULID")))
}

pub(super) async fn commit_by_id(
    State(st): State<Arc<AppState>>,
    Path((log, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let entry = existing_log(&st, &log)?;
    let ulid = parse_id(&id)?;
    blocking(move || {
        for shard in entry.log.shards() {
            // Past pending parts of other transactions: they hide nothing behind them.
            let mut c = shard.lookup_cursor(Start::From(ulid));
            if let Some(r) = c.next()?
                && r.frame.id == ulid
            {
                return Ok(Json(render(&r)));
            }
        }
        Err(ApiError::CommitNotFound { log, id })
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn shard_commits(
    State(st): State<Arc<AppState>>,
    Path((log, shard)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let entry = existing_log(&st, &log)?;
    let q = super::query(query)?;
    let n: usize = shard
        .parse()
        .ok()
        .filter(|&n| n < entry.log.shards().len())
        .ok_or_else(|| ApiError::NotFound { what: format!("shard {shard} of log {log:?}") })?;
    let start = match q.after.as_deref() {
        None | Some("") => Start::Beginning,
        Some(t) => Start::After(parse_id(t)?),
    };
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be in 1..={PAGE_LIMIT_MAX}"),
        ));
    }
    let page_bytes_max = st.config.read_page_bytes_max;
    blocking(move || {
        let mut c = entry.log.shard(n).cursor(start);
        let mut commits = Vec::new();
        let mut last = None;
        let mut bytes = 0;
        while commits.len() < limit && bytes < page_bytes_max {
            let Some(r) = c.next()? else { break };
            last = Some(r.frame.id);
            bytes += r.frame.payload.len() + r.frame.key.len();
            commits.push(render(&r));
        }
        Ok(Json(json!({ "commits": commits, "next": last.map(|id| id.to_string()) })))
    })
    .await
}

#[cfg(test)]
mod tests {
    //! The fast renderer gives the same JSON value as the tree-building one, for every kind of
    //! payload and key.
    use super::*;
    use idgen::Ulid;
    use storage::format::FrameRef;

    fn check(key: &[u8], payload: &[u8]) {
        check_with(key, payload, u64::MAX, 0, 0);
        check_with(key, payload, 0, 0, 0);
        check_with(key, payload, 1 << 40, 0, 0);
        // Recorded conflicts: expected a revision, a new stream, an existing one.
        check_with(key, payload, 0, CONFLICT, u64::MAX - 1);
        check_with(key, payload, 7, CONFLICT, 2);
        check_with(key, payload, 3, CONFLICT, u64::MAX);
    }

    fn check_with(key: &[u8], payload: &[u8], revision: u64, flags: u16, aux: u64) {
        let r = Record {
            frame: FrameRef { id: Ulid(12345), flags, revision, aux, key, payload, inverse: b"" },
            shard: 3,
        };
        let mut out = Vec::new();
        render_into(&mut out, &r);
        assert!(!out.contains(&b'\n'), "one line: {}", String::from_utf8_lossy(&out));
        match serde_json::from_slice::<Value>(&out) {
            Ok(fast) => assert_eq!(fast, render(&r), "payload {payload:?}"),
            // Valid JSON that serde_json cannot hold as a value (an out-of-range number) is
            // copied as it is; the tree renderer shows it as text.
            Err(_) => {
                assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok());
                assert_eq!(
                    render(&r)["payload"],
                    Value::String(String::from_utf8_lossy(payload).into_owned())
                );
            }
        }
    }

    #[test]
    fn fast_rendering_matches() {
        for (key, payload) in [
            (&b""[..], &b"{\"a\": [1, 2.5, \"x\"]}"[..]),
            (b"k\"1", b"{\n  \"pretty\": true\n}"),
            (b"k", b"  42  "),
            (b"k", b"plain \"quoted\" text\nwith a newline"),
            (b"k", b"\xff\x00binary"),
            (b"k", b"1e400"),
            (b"\x7f", b"1"),
            (b"a\\b", b"1"),
            (b"\x1f\xc3\xa9 \xff", b"1"),
            (b" ~", b"1"),
            (b"k", b"line 7: plain text, no JSON"),
            (b"k", b"  \t{\"a\": 1}"),
            (b"k", b"\n[1,\n2]\n"),
            (b"k", b"nope"),
            (b"k", b"-x"),
            (b"k", b"\"unterminated"),
            (b"k", b""),
            (b"k", b"null"),
        ] {
            check(key, payload);
        }
        for (key, payload) in [(&b"k"[..], &b"{\"cr\":1}\r"[..]), (b"", b"[1,\r\n2]")] {
            check(key, payload);
        }
    }

    #[test]
    fn shard_numbers_in_decimal() {
        for n in [0, 7, 10, 99, 4_000_000_000, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
