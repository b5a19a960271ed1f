//! Request bodies of the ingest endpoints: decompression (`gzip`, `zstd`) under a size limit,
//! then the three formats — NDJSON (each non-empty line a payload, byte for byte), JSON
//! `{"commits": [{"key", "payload", "inverse"}]}` (payloads kept as their JSON text) and
//! length-framed binary (`u32` LE length, bytes).
//!
//! Parsing never copies payloads: a [`Batch`] holds the body and byte ranges into it. Each bad
//! commit is reported with its index. What it is not: routing or writing.

use crate::error::ApiError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Read;
use std::ops::Range;

/// Content type of NDJSON bodies.
pub const NDJSON: &str = "application/x-ndjson";
/// Content type of JSON bodies.
pub const JSON: &str = "application/json";
/// Content type of length-framed bodies.
pub const FRAMES: &str = "application/vnd.shardlog.frames";

/// Limits that apply to one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Body after decompression.
    pub body_bytes_max: usize,
    /// One payload.
    pub commit_bytes_max: usize,
    /// Commits in the request.
    pub batch_commits_max: usize,
    /// One key.
    pub key_bytes_max: usize,
}

/// One commit of a request: ranges into [`Batch::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The key, if any (JSON keys may be unescaped, so they are owned).
    pub key: Option<Box<[u8]>>,
    /// The payload's bytes.
    pub payload: Range<usize>,
    /// The inverse payload's bytes (empty range: none).
    pub inverse: Range<usize>,
}

/// A parsed request body.
#[derive(Debug, Default)]
pub struct Batch {
    /// The (decompressed) body.
    pub body: Bytes,
    /// The commits, in request order.
    pub commits: Vec<Commit>,
    /// Commits refused (only with `partial`): (index, reason).
    pub rejected: Vec<(usize, String)>,
}

impl Batch {
    /// A commit's payload.
    pub fn payload(&self, c: &Commit) -> &[u8] {
        &self.body[c.payload.clone()]
    }
    /// A commit's inverse payload.
    pub fn inverse(&self, c: &Commit) -> &[u8] {
        &self.body[c.inverse.clone()]
    }
}

/// Decompresses `body` according to `Content-Encoding`, refusing more than `limit` bytes.
pub fn decode(body: Bytes, encoding: Option<&str>, limit: usize) -> Result<Bytes, ApiError> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    let too_large =
        || ApiError::TooLarge { what: "the decompressed body".into(), limit_bytes: limit };
    let out = match enc.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > limit {
                return Err(ApiError::TooLarge { what: "the body".into(), limit_bytes: limit });
            }
            return Ok(body);
        }
        Some("gzip") | Some("x-gzip") => {
            read_limited(flate2::read::MultiGzDecoder::new(&body[..]), limit)
        }
        Some("zstd") => match zstd::stream::read::Decoder::new(&body[..]) {
            Ok(d) => read_limited(d, limit),
            Err(e) => Err(Some(e)),
        },
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!("content-encoding {other:?} is not supported (gzip, zstd)"),
            });
        }
    };
    match out {
        Ok(v) => Ok(Bytes::from(v)),
        Err(None) => Err(too_large()),
        Err(Some(e)) => {
            Err(ApiError::bad_request("bad_encoding", format!("cannot decompress the body: {e}")))
        }
    }
}

/// Reads at most `limit` bytes; `Err(None)` when there is more.
fn read_limited(r: impl Read, limit: usize) -> Result<Vec<u8>, Option<std::io::Error>> {
    let mut out = Vec::new();
    let n = r.take(limit as u64 + 1).read_to_end(&mut out).map_err(Some)?;
    if n > limit {
        return Err(None);
    }
    Ok(out)
}

/// Parses a decoded body of `content_type`. With `partial`, bad commits are collected in
/// [`Batch::rejected`] instead of failing the request (an unreadable envelope still fails).
pub fn parse(
    body: Bytes,
    content_type: Option<&str>,
    limits: Limits,
    partial: bool,
) -> Result<Batch, ApiError> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let mut batch = Batch { body, ..Batch::default() };
    match ct.as_deref() {
        Some(NDJSON) => parse_ndjson(&mut batch, limits, partial)?,
        Some(JSON) => parse_json(&mut batch, limits, partial)?,
        Some(FRAMES) => parse_frames(&mut batch, limits, partial)?,
        other => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "content-type {:?} is not accepted ({NDJSON}, {JSON}, {FRAMES})",
                    other.unwrap_or("")
                ),
            });
        }
    }
    let n = batch.commits.len() + batch.rejected.len();
    if n > limits.batch_commits_max {
        return Err(ApiError::TooManyCommits { commits: n, limit: limits.batch_commits_max });
    }
    if batch.commits.is_empty() && batch.rejected.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "the request holds no commit"));
    }
    Ok(batch)
}

/// Records a bad commit: fails the request, or (partial) remembers it.
fn reject(batch: &mut Batch, partial: bool, index: usize, reason: String) -> Result<(), ApiError> {
    if partial {
        batch.rejected.push((index, reason));
        Ok(())
    } else {
        Err(ApiError::InvalidCommit { index, reason })
    }
}

fn check_payload(len: usize, limits: Limits) -> Result<(), String> {
    if len > limits.commit_bytes_max {
        return Err(format!(
            "payload of {len} bytes exceeds commit_bytes_max {}",
            limits.commit_bytes_max
        ));
    }
    Ok(())
}

fn parse_ndjson(batch: &mut Batch, limits: Limits, partial: bool) -> Result<(), ApiError> {
    let body = batch.body.clone();
    let mut start = 0;
    let mut index = 0;
    while start < body.len() {
        let end = memchr_newline(&body[start..]).map_or(body.len(), |i| start + i);
        if end > start {
            match check_payload(end - start, limits) {
                Ok(()) => {
                    batch.commits.push(Commit { key: None, payload: start..end, inverse: 0..0 })
                }
                Err(reason) => reject(batch, partial, index, reason)?,
            }
            index += 1;
        }
        start = end + 1;
    }
    Ok(())
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

fn parse_frames(batch: &mut Batch, limits: Limits, partial: bool) -> Result<(), ApiError> {
    let body = batch.body.clone();
    let mut at = 0;
    let mut index = 0;
    while at < body.len() {
        let Some(word) = body.get(at..at + 4) else {
            // An incomplete frame ends the body: nothing after it can be read.
            return Err(ApiError::InvalidCommit { index, reason: "truncated length word".into() });
        };
        let len = u32::from_le_bytes(word.try_into().expect("4 bytes")) as usize;
        let start = at + 4;
        if start + len > body.len() {
            return Err(ApiError::InvalidCommit {
                index,
                reason: format!("frame of {len} bytes runs past the end of the body"),
            });
        }
        match check_payload(len, limits) {
            Ok(()) => {
                batch.commits.push(Commit { key: None, payload: start..start + len, inverse: 0..0 })
            }
            Err(reason) => reject(batch, partial, index, reason)?,
        }
        at = start + len;
        index += 1;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    commits: Vec<&'a RawValue>,
}

/// One commit object's fields, each kept as raw JSON (so `"payload": null` is a payload).
type JsonCommit<'a> = std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a RawValue>;

fn parse_json(batch: &mut Batch, limits: Limits, partial: bool) -> Result<(), ApiError> {
    let body = batch.body.clone();
    let env: Envelope<'_> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("expected {{\"commits\": [...]}}: {e}"))
    })?;
    let base = body.as_ptr() as usize;
    let range_of = |raw: &RawValue| {
        let s = raw.get();
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    for (index, raw) in env.commits.into_iter().enumerate() {
        let parsed: Result<JsonCommit<'_>, _> = serde_json::from_str(raw.get());
        let c = match parsed {
            Ok(c) => c,
            Err(e) => {
                reject(batch, partial, index, format!("not a commit object: {e}"))?;
                continue;
            }
        };
        if let Some(unknown) =
            c.keys().find(|k| !matches!(k.as_ref(), "key" | "payload" | "inverse"))
        {
            reject(
                batch,
                partial,
                index,
                format!("unknown field {unknown:?} (key, payload, inverse)"),
            )?;
            continue;
        }
        let Some(&payload) = c.get("payload") else {
            reject(batch, partial, index, "missing \"payload\"".into())?;
            continue;
        };
        let key = match c.get("key").map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(k))) => Some(k.into_bytes().into_boxed_slice()),
            Some(Err(_)) => {
                reject(batch, partial, index, "\"key\" must be a string".into())?;
                continue;
            }
        };
        if let Some(k) = &key
            && (k.is_empty() || k.len() > limits.key_bytes_max)
        {
            let reason = format!("key of {} bytes is not in 1..={}", k.len(), limits.key_bytes_max);
            reject(batch, partial, index, reason)?;
            continue;
        }
        let payload = range_of(payload);
        if let Err(reason) = check_payload(payload.len(), limits) {
            reject(batch, partial, index, reason)?;
            continue;
        }
        let inverse = c.get("inverse").map_or(0..0, |&raw| range_of(raw));
        batch.commits.push(Commit { key, payload, inverse });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
